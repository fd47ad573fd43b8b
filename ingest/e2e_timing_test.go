package ingest_test

import (
	"context"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
)

// BenchmarkEndToEnd measures the sustained rate from publisher to rows in
// ClickHouse: each iteration publishes 1,000,000 power samples (50 per
// message) and 500,000 token events while ingest runs, and ends when the
// last row is queryable.
func BenchmarkEndToEnd(b *testing.B) {
	db, conn := testenv.FreshDatabase(b)
	_, nc, js := testenv.JetStream(b)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		b.Fatal(err)
	}
	sink, _ := ingest.NewClickHouseSink(conn, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := ingest.New(js, sink, ingest.Config{}, nil, testLogger())
	go in.Run(ctx)
	const nS, nT = 1_000_000, 500_000
	b.ResetTimer()
	var samples, tokens uint64
	for i := 0; i < b.N; i++ {
		want := publishE2E(b, pub, nS, nT)
		samples += want.power
		tokens += want.tokens
		for {
			var p, t uint64
			_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+".power_samples").Scan(&p)
			_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+".tokens").Scan(&t)
			if p >= samples && t >= tokens {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(samples)/sec, "samples/s")
	b.ReportMetric(float64(tokens)/sec, "tokens/s")
	msgs, bytes := pub.Published()
	b.ReportMetric(float64(bytes)/float64(msgs), "B/msg")
	b.ReportMetric(float64(bytes)/float64(samples+tokens), "wireB/event")
}
