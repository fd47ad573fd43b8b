package ingest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// Benchmarks of the whole pipeline (docs/benchmarks.md). Publisher and
// JetStream run in the benchmark's process, ClickHouse and (for the peer)
// Telegraf in their own; all share the machine. Consumers reach JetStream
// over TCP loopback, as a separate `lem ingest` would.

// BenchmarkEndToEnd is the quick, in-process form for profiling: each
// iteration publishes 1,000,000 power samples (50 per message) and 500,000
// token events as fast as the publisher goes, and ends when the last row
// is queryable.
func BenchmarkEndToEnd(b *testing.B) {
	db, conn := testenv.FreshDatabase(b)
	_, nc, js := testenv.JetStream(b)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		b.Fatal(err)
	}
	sink, _ := chstore.New(conn, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := ingest.New(js, sink, ingest.Config{}, nil, testLogger())
	go in.Run(ctx)
	const nS, nT = 1_000_000, 500_000
	b.ResetTimer()
	var want e2eTotals
	for i := 0; i < b.N; i++ {
		w := publishE2E(b, pub, nS, nT)
		want.power += w.power
		want.tokens += w.tokens
		waitRows(b, conn, db, "power_samples", "tokens", want)
	}
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(want.power)/sec, "samples/s")
	b.ReportMetric(float64(want.tokens)/sec, "tokens/s")
	msgs, bytes := pub.Published()
	b.ReportMetric(float64(bytes)/float64(msgs), "B/msg")
	b.ReportMetric(float64(bytes)/float64(want.power+want.tokens), "wireB/event")
}

// Volumes of the comparison: enough for the flush interval's tail to be
// small next to the run.
const (
	cmpSamples = 6_000_000
	cmpTokens  = 3_000_000
)

// BenchmarkVersusPeer runs, in each iteration and on the same machine,
// lem's pipeline and the peer (Telegraf v1.37.2: JetStream consumer,
// influx line protocol, SQL output through clickhouse-go into lem's own
// tables), each moving 6,000,000 power samples and 3,000,000 token events
// into a fresh database, twice: live (published as fast as possible while
// the pipeline runs) and drain (all published first; the consumer's rate
// alone). It reports both rates, CPU per million events, bytes and the
// ratios.
func BenchmarkVersusPeer(b *testing.B) {
	tg := testenv.Telegraf(b)
	testenv.ClickHouse(b)
	for i := 0; i < b.N; i++ {
		for _, mode := range []struct {
			name    string
			backlog bool
		}{{"live_", false}, {"drain_", true}} {
			lem := runLem(b, cmpSamples, cmpTokens, 0, mode.backlog)
			peer := runPeer(b, tg, cmpSamples, cmpTokens, mode.backlog)
			report(b, mode.name+"lem_", lem)
			report(b, mode.name+"peer_", peer)
			b.ReportMetric(lem.rate()/peer.rate(), mode.name+"x_peer_events/s")
			b.ReportMetric(peer.cpuPerM()/lem.cpuPerM(), mode.name+"x_peer_cpu_efficiency")
		}
	}
}

// BenchmarkSustained publishes at the target rate, 1,000,000 power samples
// and 500,000 token events a second for 20 s, and reports whether ingest
// kept up and the end-to-end latency (JetStream arrival to stored rows).
func BenchmarkSustained(b *testing.B) {
	testenv.ClickHouse(b)
	const secs = 20
	for i := 0; i < b.N; i++ {
		r := runLem(b, secs*1_000_000, secs*500_000, secs*time.Second, false)
		report(b, "", r)
		b.ReportMetric(r.wall.Seconds()-secs, "s_behind_at_end")
	}
}

type pipeRun struct {
	samples, tokens uint64
	wall            time.Duration
	cpu             float64 // seconds: this process (publisher, JetStream, lem ingest) + ClickHouse + Telegraf
	chCPU           float64
	p50, p99        float64 // end-to-end latency, seconds (lem only)
	diskSample      float64 // bytes on disk per power sample (ClickHouse)
	diskToken       float64
	wire            float64 // bytes per event on the wire
}

func (r pipeRun) rate() float64    { return float64(r.samples+r.tokens) / r.wall.Seconds() }
func (r pipeRun) cpuPerM() float64 { return r.cpu / (float64(r.samples+r.tokens) / 1e6) }

func report(b *testing.B, prefix string, r pipeRun) {
	b.ReportMetric(float64(r.samples)/r.wall.Seconds(), prefix+"samples/s")
	b.ReportMetric(float64(r.tokens)/r.wall.Seconds(), prefix+"tokens/s")
	b.ReportMetric(r.cpuPerM(), prefix+"cpu_s/M_events")
	b.ReportMetric(r.chCPU/(float64(r.samples+r.tokens)/1e6), prefix+"clickhouse_cpu_s/M_events")
	b.ReportMetric(r.diskSample, prefix+"disk_B/sample")
	b.ReportMetric(r.diskToken, prefix+"disk_B/token")
	b.ReportMetric(r.wire, prefix+"wire_B/event")
	if r.p99 > 0 {
		b.ReportMetric(r.p50, prefix+"p50_s")
		b.ReportMetric(r.p99, prefix+"p99_s")
	}
}

// cpuClock reads the CPU seconds of this process and of child pids.
func cpuClock(pids ...int) (self float64, others []float64) {
	for _, pid := range pids {
		others = append(others, testenv.ProcCPU(pid))
	}
	return testenv.SelfCPU(), others
}

// tcpJetStream starts an embedded server listening on loopback and
// returns it with an in-process connection for the publisher and a TCP
// connection for the consumer.
func tcpJetStream(b *testing.B) (*bus.Embedded, *nats.Conn, *nats.Conn) {
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: b.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	pc, err := e.Connect("bench-publisher")
	if err != nil {
		b.Fatal(err)
	}
	cc, err := nats.Connect(e.ClientURL(), nats.Name("bench-consumer"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cc.Close()
		pc.Close()
		e.Shutdown()
	})
	return e, pc, cc
}

// runLem moves nS samples and nT tokens through lem's pipeline: published
// over dur (0: as fast as possible) while ingest runs, or, with backlog,
// all published before ingest starts (the drain rate alone).
func runLem(b *testing.B, nS, nT int, dur time.Duration, backlog bool) pipeRun {
	b.Helper()
	db, conn := testenv.FreshDatabase(b)
	_, pc, cc := tcpJetStream(b)
	pjs, _ := jetstream.New(pc)
	if err := bus.EnsureStreams(context.Background(), pjs, bus.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	pub, err := bus.NewPublisher(pc, 0)
	if err != nil {
		b.Fatal(err)
	}
	cjs, _ := jetstream.New(cc)
	sink, _ := chstore.New(conn, db)
	m := ingest.NewMetrics(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	in := ingest.New(cjs, sink, ingest.Config{}, m, testLogger())
	var want e2eTotals
	if backlog {
		want = publishPaced(b, pub, nS, nT, 0)
	}
	chPid := testenv.ClickHouseServer().Pid()
	self0, o0 := cpuClock(chPid)
	start := time.Now()
	go func() { done <- in.Run(ctx) }()
	if !backlog {
		time.Sleep(300 * time.Millisecond) // consumers created
		want = publishPaced(b, pub, nS, nT, dur)
	}
	waitRows(b, conn, db, "power_samples", "tokens", want)
	wall := time.Since(start)
	self1, o1 := cpuClock(chPid)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	msgs, bytes := pub.Published()
	_ = msgs
	r := pipeRun{samples: want.power, tokens: want.tokens, wall: wall,
		cpu: self1 - self0 + o1[0] - o0[0], chCPU: o1[0] - o0[0],
		wire: float64(bytes) / float64(want.power+want.tokens)}
	if !backlog {
		r.p50, r.p99 = latencyQuantiles(b, m, 0.5, 0.99)
	}
	verifyTotals(b, conn, db, want)
	r.diskSample = diskPerRow(b, conn, db, "power_samples")
	r.diskToken = diskPerRow(b, conn, db, "tokens")
	return r
}

// latencyQuantiles interpolates quantiles of the end-to-end histogram over
// the power and token kinds together.
func latencyQuantiles(b *testing.B, m *ingest.Metrics, qs ...float64) (float64, float64) {
	bounds := ingest.EndToEndBuckets
	counts := make([]uint64, len(bounds)+1)
	var total uint64
	for _, k := range []schemas.Kind{schemas.KindPower, schemas.KindToken} {
		var pb dto.Metric
		h, err := m.EndToEnd.GetMetricWithLabelValues(k.String())
		if err != nil {
			b.Fatal(err)
		}
		if err := h.(interface{ Write(*dto.Metric) error }).Write(&pb); err != nil {
			b.Fatal(err)
		}
		var prev uint64
		for i, bk := range pb.GetHistogram().GetBucket() {
			counts[i] += bk.GetCumulativeCount() - prev
			prev = bk.GetCumulativeCount()
		}
		counts[len(bounds)] += pb.GetHistogram().GetSampleCount() - prev
		total += pb.GetHistogram().GetSampleCount()
	}
	if total == 0 {
		b.Fatal("no end-to-end latency observed")
	}
	q := func(p float64) float64 {
		target := p * float64(total)
		var cum float64
		lo := 0.0
		for i, c := range counts {
			if cum+float64(c) >= target && c > 0 {
				hi := bounds[min(i, len(bounds)-1)]
				return lo + (hi-lo)*(target-cum)/float64(c)
			}
			cum += float64(c)
			if i < len(bounds) {
				lo = bounds[i]
			}
		}
		return bounds[len(bounds)-1]
	}
	return q(qs[0]), q(qs[1])
}

func diskPerRow(b *testing.B, conn driver.Conn, db, table string) float64 {
	var bytes, rows uint64
	if err := conn.QueryRow(context.Background(), "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE database = ? AND table = ? AND active",
		db, table).Scan(&bytes, &rows); err != nil {
		b.Fatal(err)
	}
	if rows == 0 {
		return 0
	}
	return float64(bytes) / float64(rows)
}

// verifyTotals fails unless the tables hold exactly the published events
// (counts and checksums of values and time stamps).
func verifyTotals(b *testing.B, conn driver.Conn, db string, want e2eTotals) {
	b.Helper()
	ctx := context.Background()
	var got e2eTotals
	if err := conn.QueryRow(ctx, "SELECT count(), sum(toUInt64(power_mw)), sum(toUInt64(ts_ns) * toUInt64(power_mw)) FROM "+db+".power_samples").
		Scan(&got.power, &got.powerSum, &got.powerCheck); err != nil {
		b.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(), sum(toUInt64(tokens)), sum(toUInt64(ts_ns) * toUInt64(tokens)) FROM "+db+".tokens").
		Scan(&got.tokens, &got.tokenSum, &got.tokenCheck); err != nil {
		b.Fatal(err)
	}
	if got != want {
		b.Fatalf("stored other rows than published: %+v, want %+v", got, want)
	}
}

// waitRows waits until both tables hold the wanted row counts.
func waitRows(b *testing.B, conn driver.Conn, db, power, tokens string, want e2eTotals) {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var p, t uint64
		_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+power).Scan(&p)
		_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+tokens).Scan(&t)
		if p >= want.power && t >= want.tokens {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("rows after 10 minutes: %d/%d power, %d/%d tokens", p, want.power, t, want.tokens)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The peer's stream: the same events as influx line protocol, one message
// per lem message (50 power lines, 2,000 token lines).
const peerStream, peerSubjects = "PEER", "peer.>"

// runPeer is runLem for the peer pipeline.
func runPeer(b *testing.B, telegraf string, nS, nT int, backlog bool) pipeRun {
	b.Helper()
	db, conn := testenv.FreshDatabase(b) // lem's own tables: the same shape
	e, pc, _ := tcpJetStream(b)
	js, _ := jetstream.New(pc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: peerStream, Subjects: []string{peerSubjects},
		Storage: jetstream.FileStorage, MaxMsgSize: schemas.MaxMessageSize}); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	conf := filepath.Join(dir, "telegraf.conf")
	if err := os.WriteFile(conf, []byte(peerConfig(e.ClientURL(), testenv.ClickHouse(b), db)), 0o644); err != nil {
		b.Fatal(err)
	}
	var want e2eTotals
	var wire uint64
	if backlog {
		want, wire = publishPeer(b, js, nS, nT)
	}
	chPid := testenv.ClickHouseServer().Pid()
	self0, _ := cpuClock(chPid)
	ch0 := testenv.ProcCPU(chPid)
	start := time.Now()
	cmd := exec.Command(telegraf, "--config", conf)
	logf, _ := os.Create(filepath.Join(dir, "telegraf.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	}()
	if !backlog {
		// Publish once its JetStream consumer exists.
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			s, err := js.Stream(ctx, peerStream)
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Consumers > 0 {
					break
				}
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, "telegraf.log"))
				b.Fatalf("telegraf did not subscribe: %s", log)
			}
		}
		want, wire = publishPeer(b, js, nS, nT)
	}
	waitRows(b, conn, db, "power_samples", "tokens", want)
	wall := time.Since(start)
	self1, o1 := cpuClock(chPid, cmd.Process.Pid)
	o0 := []float64{ch0, 0} // telegraf started after the first reading
	verifyTotals(b, conn, db, want)
	return pipeRun{samples: want.power, tokens: want.tokens, wall: wall,
		cpu: self1 - self0 + (o1[0] - o0[0]) + (o1[1] - o0[1]), chCPU: o1[0] - o0[0],
		diskSample: diskPerRow(b, conn, db, "power_samples"), diskToken: diskPerRow(b, conn, db, "tokens"),
		wire: float64(wire) / float64(want.power+want.tokens)}
}

// peerConfig is Telegraf's configuration, tuned for throughput: output
// batches in one transaction each (batch_transactions), and the batch and
// in-flight sizes that were fastest on this machine (live, 2 M samples:
// batch 20,000 / 1,000 messages in flight 200 k samples/s; 10,000 / 500
// 182 k; 50,000 / 4,000 166 k; 5,000 / 200 154 k; 50,000 / 1,000 154 k;
// 200,000 / 20,000 50 k).
func peerConfig(natsURL, chAddr, db string) string {
	return fmt.Sprintf(`[agent]
  interval = "10s"
  flush_interval = "1s"
  metric_batch_size = 20000
  metric_buffer_limit = 2000000
  omit_hostname = true
  quiet = true

[[inputs.nats_consumer]]
  servers = [%q]
  jetstream_subjects = [%q]
  queue_group = "telegraf"
  max_undelivered_messages = 1000
  pending_message_limit = 65536
  pending_bytes_limit = 268435456
  data_format = "influx"
  tagexclude = ["subject"]

[[outputs.sql]]
  driver = "clickhouse"
  data_source_name = "clickhouse://%s/%s?dial_timeout=10s"
  timestamp_column = ""
  batch_transactions = true
  table_exists_template = "SELECT 1 FROM {TABLE} LIMIT 1"
  [outputs.sql.convert]
    integer = "Int64"
    unsigned = "UInt64"
    real = "Float64"
    text = "String"
    defaultvalue = "String"
    timestamp = "DateTime"
    bool = "UInt8"
    conversion_style = "literal"
`, natsURL, peerSubjects, chAddr, db)
}

// publishPeer publishes the generator's events as influx line protocol,
// as fast as JetStream takes them.
func publishPeer(b *testing.B, js jetstream.JetStream, nS, nT int) (e2eTotals, uint64) {
	var tot e2eTotals
	var wire uint64
	g := newE2EGen()
	np, nt := msgsFor(nS, samplesPerBatch), msgsFor(nT, tokensPerBatch)
	var buf []byte
	pub := func(subj string) {
		wire += uint64(len(buf))
		for {
			_, err := js.PublishAsync(subj, append([]byte(nil), buf...))
			if err == nil {
				return
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Second):
			}
		}
	}
	for p, t := 0, 0; p < np || t < nt; {
		if t < nt && (p >= np || float64(t)/float64(nt) <= float64(p)/float64(np)) {
			g.tokens(t, nT, &tot)
			buf = buf[:0]
			for _, k := range g.tk.Tokens {
				buf = append(buf, "tokens,request_id="...)
				buf = append(buf, g.tk.RequestIDs[k.Request]...)
				buf = append(buf, ",run_id="...)
				buf = append(buf, g.tk.RunID...)
				buf = append(buf, " token_index="...)
				buf = append(strconv.AppendUint(buf, uint64(k.Index), 10), "u,tokens="...)
				buf = append(strconv.AppendUint(buf, uint64(k.Tokens), 10), "u,ts_ns="...)
				buf = append(strconv.AppendInt(buf, k.TS, 10), "i "...)
				buf = append(strconv.AppendInt(buf, k.TS, 10), '\n')
			}
			pub("peer.tokens")
			t++
			continue
		}
		g.power(p, nS, &tot)
		buf = buf[:0]
		d := g.pb.Device
		// Line protocol built with appends (fmt would make the publisher,
		// which shares the machine, the peer's bottleneck).
		for _, s := range g.pb.Samples {
			buf = append(buf, "power_samples,device_uuid="...)
			buf = append(buf, d.UUID...)
			buf = append(buf, ",host="...)
			buf = append(buf, g.pb.Origin.Host...)
			buf = append(buf, ",source="...)
			buf = append(buf, g.pb.Origin.Source...)
			buf = append(buf, " device_index="...)
			buf = append(strconv.AppendUint(buf, uint64(d.Index), 10), "u,power_mw="...)
			buf = append(strconv.AppendInt(buf, int64(s.Power), 10), "i,ts_ns="...)
			buf = append(strconv.AppendInt(buf, s.TS, 10), "i "...)
			buf = append(strconv.AppendInt(buf, s.TS, 10), '\n')
		}
		pub("peer.power")
		p++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("peer stream did not acknowledge the published messages")
	}
	return tot, wire
}

// BenchmarkInsertOrder inserts the same 1,000,000 power rows (8 devices,
// messages of 50 samples interleaved as they arrive) into ClickHouse in
// arrival order and sorted by the table's key, and reports the server's
// and this process's CPU per row: the reason ingest sorts (ADR 0003).
func BenchmarkInsertOrder(b *testing.B) {
	db, conn := testenv.FreshDatabase(b)
	sink, _ := chstore.New(conn, db)
	rows := schemas.NewRows(schemas.KindPower)
	g := newE2EGen()
	var tot e2eTotals
	const n = 1_000_000
	for m := 0; m < msgsFor(n, samplesPerBatch); m++ {
		g.power(m, n, &tot)
		rows.Append(&g.pb, schemas.Position{Epoch: 1, Seq: uint64(m + 1)})
	}
	arrival := rows.Table()
	var s schemas.Sorter
	// Background merges of earlier inserts would land in the next
	// measurement.
	if err := conn.Exec(context.Background(), "SYSTEM STOP MERGES "+db+".power_samples"); err != nil {
		b.Fatal(err)
	}
	chPid := testenv.ClickHouseServer().Pid()
	for _, c := range []struct {
		name   string
		sorted bool
	}{{"arrival", false}, {"sorted", true}} {
		b.Run(c.name, func(b *testing.B) {
			var self, ch float64
			var sorted0, sorted1 uint64
			_ = conn.QueryRow(context.Background(), "SELECT value FROM system.events WHERE event = 'MergeTreeDataWriterBlocksAlreadySorted'").Scan(&sorted0)
			defer func() {
				_ = conn.QueryRow(context.Background(), "SELECT value FROM system.events WHERE event = 'MergeTreeDataWriterBlocksAlreadySorted'").Scan(&sorted1)
				b.Logf("%s: %d inserts, %d blocks found sorted by the server", c.name, b.N, sorted1-sorted0)
			}()
			for i := 0; i < b.N; i++ {
				self0, o0 := cpuClock(chPid)
				t := arrival
				if c.sorted {
					var err error
					if t, err = s.Sort(arrival); err != nil {
						b.Fatal(err)
					}
				}
				if err := sink.Write(context.Background(), t); err != nil {
					b.Fatal(err)
				}
				self1, o1 := cpuClock(chPid)
				self += self1 - self0
				ch += o1[0] - o0[0]
			}
			b.ReportMetric(ch*1e9/float64(b.N*n), "server_cpu_ns/row")
			b.ReportMetric(self*1e9/float64(b.N*n), "client_cpu_ns/row")
		})
	}
}
