package analytics

import (
	"context"
	"math"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// TestServerContextPerWindow: a sweep of two configurations on one server,
// A batching 4 requests per step and B 16, cycles interleaved with
// cool-downs between. The server's counters are cumulative over both; each
// run's mean batch size and queue time must come from its own windows only
// (summing increments across the run's first and last scrape reported 5.87
// for a batch of 4).
func TestServerContextPerWindow(t *testing.T) {
	const s = int64(1e9)
	t0 := int64(1_900_000_000) * s
	batchSum, batches, queueSum, reqs := 0.0, 0.0, 0.0, 0.0
	var rows = map[string]*schemas.MetricBatch{"A": {RunID: "A"}, "B": {RunID: "B"}}
	windows := map[string][][2]int64{}
	// A, cool-down, B, cool-down, A, cool-down, B: 10 s each, scraped every
	// second; the server keeps counting between (warm-up traffic too).
	order := []string{"A", "B", "A", "B"}
	at := t0
	for _, run := range order {
		size, queue := 4.0, 0.002 // batch size, s of queue per request
		if run == "B" {
			size, queue = 16, 0.5
		}
		windows[run] = append(windows[run], [2]int64{at, at + 10*s})
		for k := int64(0); k <= 10; k++ {
			ts := at + k*s
			b := rows[run]
			for _, m := range []struct {
				n string
				v float64
			}{{"lem_ref:batch_size_sum", batchSum}, {"lem_ref:batches_total", batches},
				{"lem_ref:queue_seconds_total", queueSum}, {"lem_ref:requests_total", reqs}} {
				b.Samples = append(b.Samples, schemas.MetricSample{TS: ts, Name: m.n, Value: m.v})
			}
			// One second of work: 10 steps of the run's batch size.
			batchSum += 10 * size
			batches += 10
			queueSum += 10 * size * queue
			reqs += 10 * size
		}
		at += 10 * s
		// Cool-down and another configuration's warm-up: the server counts on.
		batchSum += 50 * 8
		batches += 50
		queueSum += 3
		reqs += 100
		at += 5 * s
	}
	mr := schemas.NewRows(schemas.KindMetric)
	for i, run := range []string{"A", "B"} {
		mr.Append(rows[run], schemas.Position{Epoch: 1, Seq: uint64(i + 1)})
	}
	st := store.Parquet(t.TempDir())
	if err := st.Write(context.Background(), mr.Table()); err != nil {
		t.Fatal(err)
	}
	for run, want := range map[string][2]float64{"A": {4, 0.002}, "B": {16, 0.5}} {
		c, err := runContext(context.Background(), st, &RunResult{RunID: run}, windows[run])
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Derived["mean_batch_size"]; math.Abs(got-want[0]) > 1e-9 {
			t.Errorf("run %s: mean batch size %.3f, want %.0f", run, got, want[0])
		}
		if got := c.Derived["mean_queue_time_s"]; math.Abs(got-want[1]) > 1e-9 {
			t.Errorf("run %s: mean queue time %.4f s, want %.3f s", run, got, want[1])
		}
	}
}
