package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/chserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// TestClickHouseOutage stops ClickHouse while events keep arriving, then
// restarts it: ingest must hold, retry, and end with every row exactly once.
func TestClickHouseOutage(t *testing.T) {
	testenv.ClickHouse(t) // gating: skip or fail like every ClickHouse test
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := chserver.Start(ctx, chserver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Stop() }()
	conn, err := chstore.Connect(ctx, chstore.Config{Addr: srv.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := chstore.Migrate(ctx, conn, "lem", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	sink, _ := chstore.New(conn, "lem")
	_, nc, js := testenv.JetStream(t)
	pub, _ := bus.NewPublisher(nc, 0)

	ictx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	m := ingest.NewMetrics(nil)
	go func() {
		done <- ingest.New(js, sink, ingest.Config{FlushInterval: 100 * time.Millisecond}, m, zerolog.Nop()).Run(ictx)
	}()
	q := "SELECT count(), sum(power_mw) FROM lem.power_samples"
	waitRows := func(n uint64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			var got uint64
			var sum int64
			if err := conn.QueryRow(ctx, q).Scan(&got, &sum); err == nil && got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("rows did not reach %d", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first := publishWorkload(t, pub, 40, 50)
	waitRows(uint64(first.powerRows))

	srv.Stop()
	second := publishWorkload(t, pub, 40, 50) // arrives while the store is down
	time.Sleep(2 * time.Second)
	srv, err = chserver.Start(ctx, chserver.Options{Dir: dir, TCPPort: srv.TCPPort})
	if err != nil {
		t.Fatal(err)
	}
	want := first.powerRows + second.powerRows
	waitRows(uint64(want))
	time.Sleep(500 * time.Millisecond) // a duplicate would land by now
	cancel()
	<-done
	var n uint64
	var sum int64
	if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	if n != uint64(want) || sum != first.powerSum+second.powerSum {
		t.Fatalf("after outage: %d rows sum %d, want %d rows sum %d", n, sum, want, first.powerSum+second.powerSum)
	}
	if errs := testutilValue(m); errs == 0 {
		t.Fatal("no insert errors counted during the outage")
	}
}
