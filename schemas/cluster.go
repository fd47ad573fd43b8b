package schemas

import (
	"fmt"
	"regexp"
	"strings"
)

// The clustered schema (`lem migrate -cluster NAME`): every table becomes a
// ReplicatedMergeTree-family table <name>_local on every node (ON CLUSTER),
// with a Distributed table <name> over it, so that inserts and queries keep
// the names of the single-server schema. Rows of one run (or one device)
// go to one shard, so ReplacingMergeTree deduplication and per-run queries
// stay local to it.
var createRE = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \((.*)\) ENGINE = (\w+)\(([^)]*)\)(.*)$`)

var alterRE = regexp.MustCompile(`(?s)^ALTER TABLE \{db\}\.(\w+)(.*)$`)

// RenderCluster returns the statements of m for a cluster: ON CLUSTER,
// replicated local tables (ZooKeeper path /clickhouse/tables/{shard}/<db>/
// <table>, replica {replica}: the server's macros) and Distributed tables.
func (m Migration) RenderCluster(db, cluster string) ([]string, error) {
	if err := CheckIdentifier(db); err != nil {
		return nil, err
	}
	if err := CheckIdentifier(cluster); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range m.Statements {
		if c := createRE.FindStringSubmatch(s); c != nil {
			table, cols, engine, args, rest := c[1], c[2], c[3], strings.TrimSpace(c[4]), c[5]
			zk := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s_local', '{replica}'", db, table)
			if args != "" {
				zk += ", " + args
			}
			out = append(out,
				fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s_local ON CLUSTER %s (%s) ENGINE = Replicated%s(%s)%s",
					db, table, cluster, cols, engine, zk, rest),
				fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s AS %s.%s_local ENGINE = Distributed(%s, %s, %s_local, %s)",
					db, table, cluster, db, table, cluster, db, table, shardKey(cols)))
			continue
		}
		if a := alterRE.FindStringSubmatch(s); a != nil {
			table, ops := a[1], a[2]
			out = append(out, fmt.Sprintf("ALTER TABLE %s.%s_local ON CLUSTER %s%s", db, table, cluster, ops))
			// The Distributed table is made again over the altered local
			// one: ALTER … ON CLUSTER of a table that is not replicated
			// is refused on a cluster whose shards replicate (18.16: "Table
			// … isn't replicated, but shard #1 is replicated"), and it
			// holds no rows (ingest inserts synchronously).
			key, err := tableShardKey(table)
			if err != nil {
				return nil, fmt.Errorf("migration %04d_%s: %w", m.ID, m.Name, err)
			}
			out = append(out,
				fmt.Sprintf("DROP TABLE IF EXISTS %s.%s ON CLUSTER %s", db, table, cluster),
				fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s AS %s.%s_local ENGINE = Distributed(%s, %s, %s_local, %s)",
					db, table, cluster, db, table, cluster, db, table, key))
			continue
		}
		return nil, fmt.Errorf("migration %04d_%s: no clustered form for %.60q", m.ID, m.Name, s)
	}
	return out, nil
}

// tableShardKey is the shard key of table, from the migration that
// creates it.
func tableShardKey(table string) (string, error) {
	ms, err := Migrations()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		for _, s := range m.Statements {
			if c := createRE.FindStringSubmatch(s); c != nil && c[1] == table {
				return shardKey(c[2]), nil
			}
		}
	}
	return "", fmt.Errorf("no migration creates table %s", table)
}

// shardKey keeps a run's (or a device's) rows on one shard.
func shardKey(cols string) string {
	switch {
	case regexp.MustCompile(`(?m)^\s*run_id String`).MatchString(cols):
		return "cityHash64(run_id)"
	case regexp.MustCompile(`(?m)^\s*device_uuid String`).MatchString(cols):
		return "cityHash64(device_uuid)"
	}
	return "rand()"
}
