package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
)

// BenchmarkStageCosts: the CPU each stage of the pipeline spends per
// million power samples, every stage its own process — the publisher
// (this process: NVML-shaped messages of 50 samples, one per
// device-second), JetStream (`lem serve` nodes, streams at R1 on one node
// or R3 on three), `lem ingest` (the deployments' arguments) and
// ClickHouse (inserts while ingest runs, then merges and other background
// work over the 20 s after, less its idle rate) — and the bytes each
// sample takes in JetStream and on ClickHouse's disk. docs/scaling.md
// builds its capacity model on these figures.
func BenchmarkStageCosts(b *testing.B) {
	samples := 2_000_000
	if v := os.Getenv("LEM_STAGE_SAMPLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		samples = n
	}
	// Messages of 50 samples (the driver buffer's second) and of 2 (a
	// counter or device-state message): two points, so that a stage's
	// cost splits into a part per message and a part per row.
	for _, replicas := range []int{1, 3} {
		for _, perEvent := range []int{50, 2} {
			b.Run(fmt.Sprintf("R%d/rows-per-msg-%d", replicas, perEvent), func(b *testing.B) {
				n := samples
				if perEvent < 50 {
					n = samples / 5 // as many messages as 200 k rows take: enough
				}
				for i := 0; i < b.N; i++ {
					stageCosts(b, replicas, n/perEvent, perEvent)
				}
			})
		}
	}
}

func stageCosts(b *testing.B, replicas, events, perEvent int) {
	ctx := context.Background()
	bin := buildLem(b)
	db, conn := testenv.FreshDatabase(b)
	chAddr := testenv.ClickHouse(b)
	chPid := testenv.ClickHouseServer().Pid()
	dir := b.TempDir()
	type node struct{ client, route string }
	nodes := make([]node, replicas)
	for i := range nodes {
		nodes[i] = node{fmt.Sprintf("127.0.0.1:%d", freePort(b)), fmt.Sprintf("127.0.0.1:%d", freePort(b))}
	}
	var urls []string
	var natsProcs []*bgProc
	for i, n := range nodes {
		args := []string{"serve", "-ingest=false", "-listen", n.client, "-parquet", filepath.Join(dir, fmt.Sprint("n", i)), "-log-format", "console"}
		if replicas > 1 {
			var routes []string
			for j, o := range nodes {
				if i != j {
					routes = append(routes, "nats://"+o.route)
				}
			}
			args = append(args, "-cluster-listen", n.route, "-server-name", fmt.Sprint("n", i), "-routes", strings.Join(routes, ","))
		}
		natsProcs = append(natsProcs, startProc(b, bin, args...))
		urls = append(urls, "nats://"+n.client)
	}
	url := strings.Join(urls, ",")
	nc, err := bus.Connect(url, "stage-bench", zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	waitFor(b, "the streams", 2*time.Minute, func() bool {
		return bus.EnsureStreams(ctx, js, bus.StreamConfig{Replicas: replicas}) == nil
	})
	ing := startProc(b, bin, deploy.Ingest{NATS: url, StreamReplicas: strconv.Itoa(replicas), ClickHouse: chAddr, Database: db,
		Extra: []string{"-instance", "i1", "-log-format", "console"}}.Args()...)
	waitFor(b, "ingest's consumers", time.Minute, func() bool {
		_, err := js.Consumer(ctx, bus.EventStream, "ingest-power")
		return err == nil
	})
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		b.Fatal(err)
	}
	pw := newPowerEvents(pub, perEvent)
	// Idle rates first: what each process spends doing nothing.
	cpu := func() (self, natsCPU, ingest, ch float64) {
		for _, p := range natsProcs {
			natsCPU += testenv.ProcCPU(p.cmd.Process.Pid)
		}
		return testenv.SelfCPU(), natsCPU, testenv.ProcCPU(ing.cmd.Process.Pid), testenv.ProcCPU(chPid)
	}
	_, n0, i0, c0 := cpu()
	time.Sleep(10 * time.Second)
	_, n1, i1, c1 := cpu()
	idle := func(d time.Duration, x0, x1 float64) float64 { return (x1 - x0) / 10 * d.Seconds() }
	samples := float64(events * perEvent)
	start := time.Now()
	s0, n2, i2, c2 := cpu()
	pw.publish(b, 0, events)
	pw.flush(b)
	s1 := testenv.SelfCPU()
	want := uint64(events * perEvent)
	var n uint64
	waitFor(b, "every sample stored", 10*time.Minute, func() bool {
		return conn.QueryRow(ctx, "SELECT count() FROM "+db+".power_samples").Scan(&n) == nil && n >= want
	})
	took := time.Since(start)
	_, n3, i3, c3 := cpu()
	time.Sleep(20 * time.Second)
	_, _, _, c4 := cpu()
	perM := func(x float64) float64 { return x / samples * 1e6 }
	b.ReportMetric(perM(s1-s0), "publisher-cpu-s/M")
	b.ReportMetric(perM(n3-n2-idle(took, n0, n1)), "jetstream-cpu-s/M")
	b.ReportMetric(perM(i3-i2-idle(took, i0, i1)), "ingest-cpu-s/M")
	b.ReportMetric(perM(c3-c2-idle(took, c0, c1)), "clickhouse-insert-cpu-s/M")
	b.ReportMetric(perM(c4-c3-idle(20*time.Second, c0, c1)), "clickhouse-after-cpu-s/M")
	b.ReportMetric(samples/took.Seconds(), "samples/s")
	b.ReportMetric(float64(events)/took.Seconds(), "msgs/s")
	var bytes, rows uint64
	if err := conn.QueryRow(ctx, "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE active AND database = ? AND table = 'power_samples'", db).Scan(&bytes, &rows); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(bytes)/float64(rows), "clickhouse-B/sample")
	st, err := js.Stream(ctx, bus.EventStream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// Every replica stores the stream's bytes.
	b.ReportMetric(float64(info.State.Bytes)*float64(replicas)/samples, "jetstream-B/sample")
	b.Logf("R%d: %d samples in %v; idle CPU over 10 s: nats %.2f s, ingest %.2f s, clickhouse %.2f s", replicas, n, took.Round(time.Millisecond), n1-n0, i1-i0, c1-c0)
}
