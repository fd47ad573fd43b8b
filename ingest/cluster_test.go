package ingest_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// The clustered schema, checked on the one server available here (18.16,
// no ZooKeeper): ON CLUSTER and the replicated engines need ZooKeeper, so
// the test strips ON CLUSTER and uses each engine's unreplicated form, and
// keeps what it can run — the local tables with their keys and the
// Distributed tables over a one-shard cluster (lem_test, defined by the
// throwaway server's config). Events written through the Distributed names
// come back through them.
func TestClusterSchemaOnDistributedTables(t *testing.T) {
	base, conn := testenv.FreshDatabase(t)
	ctx := context.Background()
	db := base + "_cluster" // FreshDatabase's is migrated to the single-server schema
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	repl := regexp.MustCompile(`Replicated(\w*MergeTree)\('/clickhouse/tables/\{shard\}/\w+/\w+', '\{replica\}'(?:, )?([^)]*)\)`)
	var distributed int
	for _, m := range ms {
		stmts, err := m.RenderCluster(db, "lem_test")
		if err != nil {
			t.Fatal(err)
		}
		if m.MinServer.AtLeast(schemas.ServerVersion{Major: 19}) {
			continue // newer servers only: not runnable here
		}
		for _, s := range stmts {
			if !strings.Contains(s, " ON CLUSTER lem_test") {
				t.Fatalf("not ON CLUSTER: %.80s", s)
			}
			if strings.Contains(s, "ENGINE = Distributed(lem_test, "+db+", ") {
				distributed++
			}
			local := strings.ReplaceAll(s, " ON CLUSTER lem_test", "")
			local = repl.ReplaceAllString(local, "$1($2)")
			if strings.Contains(local, "Replicated") && !strings.Contains(s, "ENGINE = Distributed") {
				t.Fatalf("engine not recognised: %.120s", local)
			}
			if err := conn.Exec(ctx, local); err != nil {
				t.Fatalf("%v\n%s", err, local)
			}
		}
	}
	if distributed < 12 {
		t.Fatalf("%d Distributed tables", distributed)
	}
	sink, _ := chstore.New(conn, db)
	rows := schemas.NewRows(schemas.KindPower)
	pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "s"}, Device: schemas.Device{UUID: "u"}}
	for i := 0; i < 100; i++ {
		pb.Samples = append(pb.Samples, schemas.PowerSample{TS: time.Now().UnixNano() + int64(i), Power: 1000})
	}
	rows.Append(pb, schemas.Position{Epoch: 1, Seq: 1})
	if err := sink.Write(ctx, rows.Table()); err != nil {
		t.Fatal(err)
	}
	// Distributed inserts are forwarded asynchronously.
	var n uint64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".power_samples").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 100 {
			break
		}
	}
	var local uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".power_samples_local").Scan(&local); err != nil {
		t.Fatal(err)
	}
	if n != 100 || local != 100 {
		t.Fatalf("through the Distributed table %d rows, in the local table %d; want 100", n, local)
	}
}
