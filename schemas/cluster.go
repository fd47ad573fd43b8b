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
			// The Distributed table carries the columns but no storage:
			// codecs stay with the local table.
			if dist := stripCodecs(ops); strings.TrimSpace(dist) != "" {
				out = append(out, fmt.Sprintf("ALTER TABLE %s.%s ON CLUSTER %s%s", db, table, cluster, dist))
			}
			continue
		}
		return nil, fmt.Errorf("migration %04d_%s: no clustered form for %.60q", m.ID, m.Name, s)
	}
	return out, nil
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

// stripCodecs removes CODEC(...) clauses (nested parentheses included).
func stripCodecs(s string) string {
	for {
		i := strings.Index(s, " CODEC(")
		if i < 0 {
			return s
		}
		depth, j := 0, i+len(" CODEC")
		for ; j < len(s); j++ {
			if s[j] == '(' {
				depth++
			} else if s[j] == ')' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		s = s[:i] + s[j+1:]
	}
}
