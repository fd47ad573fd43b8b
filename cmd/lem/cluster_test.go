package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

// clusterNode is one `lem serve` of a three-node JetStream cluster.
type clusterNode struct {
	name, client, route, dir string
	args                     []string
	proc                     *bgProc
}

// TestJetStreamClusterFaults: three `lem serve` processes form a JetStream
// cluster (streams at R3), two `lem ingest -shared` read it into
// ClickHouse. While a publisher (spooling what it cannot publish) streams
// power samples through the cluster: the stream's leader is SIGKILLed,
// then a follower, then the ingest process holding power (another
// joins). At the end ClickHouse holds
// every sample exactly once (count and sum), with no duplicate.
// LEM_CLUSTER_SAMPLES sets the size (default 1,000,000 samples in 2,000
// events); the 5 M passes too (ADR 0016).
func TestJetStreamClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	db, conn := testenv.FreshDatabase(t)
	chAddr := testenv.ClickHouse(t)
	bin := buildLem(t)
	dir := t.TempDir()
	samples := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LEM_CLUSTER_SAMPLES")); err == nil && v > 0 {
		samples = v
	}
	const perEvent = 500
	events := samples / perEvent

	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = &clusterNode{name: fmt.Sprintf("n%d", i+1), client: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			route: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
	}
	var urls []string
	for i, n := range nodes {
		var routes []string
		for j, o := range nodes {
			if i != j {
				routes = append(routes, "nats://"+o.route)
			}
		}
		urls = append(urls, "nats://"+n.client)
		n.args = []string{"serve", "-ingest=false", "-listen", n.client, "-cluster-listen", n.route, "-server-name", n.name,
			"-routes", strings.Join(routes, ","), "-parquet", n.dir, "-log-format", "console"}
	}
	start := func(n *clusterNode) {
		n.proc = startProc(t, bin, n.args...)
	}
	for _, n := range nodes {
		start(n)
	}
	natsURL := strings.Join(urls, ",")
	ctx := context.Background()
	nc, err := bus.Connect(natsURL, "cluster-test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The cluster elects its meta leader; the streams are made at R3.
	waitFor(t, "the cluster's streams at R3", 2*time.Minute, func() bool {
		return bus.EnsureStreams(ctx, js, bus.StreamConfig{Replicas: 3}) == nil
	})
	// Two ingest processes share the consumers (ADR 0017).
	ingests := map[string]*bgProc{}
	startIngest := func(name string) {
		ingests[name] = startProc(t, bin, "ingest", "-shared", "-instance", name, "-lease-ttl", "2s", "-nats", natsURL,
			"-clickhouse", chAddr, "-database", db, "-stream-replicas", "3", "-flush-interval", "200ms", "-metrics", "", "-log-format", "console")
	}
	startIngest("i1")
	startIngest("i2")
	waitFor(t, "ingest's consumers", time.Minute, func() bool {
		_, err := js.Consumer(ctx, bus.EventStream, "ingest-power")
		return err == nil
	})

	// The publisher spools what it cannot publish and drains it later.
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), 0)
	if err != nil {
		t.Fatal(err)
	}
	pub.UseSpool(sp)
	dctxAll, stopDrain := context.WithCancel(ctx)
	defer stopDrain()
	go pub.Drain(dctxAll)
	pw := newPowerEvents(pub, perEvent)
	publish := func(from, to int) { t.Helper(); pw.publish(t, from, to) }
	leader := func() *clusterNode {
		t.Helper()
		var name string
		waitFor(t, "a stream leader", time.Minute, func() bool {
			s, err := js.Stream(ctx, bus.EventStream)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
				return false
			}
			name = info.Cluster.Leader
			return true
		})
		for _, n := range nodes {
			if n.name == name {
				return n
			}
		}
		t.Fatalf("leader %q is no node of ours", name)
		return nil
	}
	began := time.Now()
	kill := func(what string, p *bgProc) {
		t.Logf("%5.1fs SIGKILL %s", time.Since(began).Seconds(), what)
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
	drain := func() {
		t.Helper()
		waitFor(t, "the spool to drain", 2*time.Minute, func() bool { n, _, _ := sp.Stats(); return n == 0 })
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := pub.Flush(dctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
	}

	step := events / 5
	publish(0, step)
	l := leader()
	kill("the stream leader "+l.name, l.proc)
	publish(step, 2*step) // a new leader is elected meanwhile; what fails, spools
	start(l)
	drain()
	var follower *clusterNode
	for l2 := leader(); follower == nil; {
		for _, n := range nodes {
			if n != l2 {
				follower = n
				break
			}
		}
	}
	kill("a follower "+follower.name, follower.proc)
	publish(2*step, 3*step)
	start(follower)
	drain()
	var holder string
	waitFor(t, "the holder of power's lease", time.Minute, func() bool {
		kv, err := js.KeyValue(ctx, ingest.BucketLeases)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, "k.ingest.power")
		holder = ""
		if err == nil {
			holder = string(e.Value())
		}
		return ingests[holder] != nil
	})
	kill("the ingest process holding power, "+holder, ingests[holder])
	publish(3*step, 4*step)
	startIngest("i3")
	publish(4*step, events)
	drain()

	t.Logf("%5.1fs all published", time.Since(began).Seconds())
	// Every sample once: count and sum, and no (device, ts) twice.
	q := fmt.Sprintf("SELECT count(), sum(power_mw) FROM %s.power_samples", db)
	var n uint64
	var sum int64
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if conn.QueryRow(ctx, q).Scan(&n, &sum) == nil && n >= uint64(events*perEvent) {
			break
		}
		if time.Now().After(deadline) {
			var info string
			if s, err := js.Stream(ctx, bus.EventStream); err == nil {
				if si, err := s.Info(ctx); err == nil {
					info = fmt.Sprintf("stream: %d messages, last seq %d, leader %s", si.State.Msgs, si.State.LastSeq, si.Cluster.Leader)
				}
			}
			if c, err := js.Consumer(ctx, bus.EventStream, "ingest-power"); err == nil {
				if ci, err := c.Info(ctx); err == nil {
					info += fmt.Sprintf("; ingest-power: pending %d, ack pending %d, ack floor %d, delivered %d", ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.Delivered.Stream)
				}
			}
			if s, err := js.Stream(ctx, bus.DeadLetterStream); err == nil {
				if m, err := s.GetLastMsgForSubject(ctx, ">"); err == nil {
					info += fmt.Sprintf("; dead letter: %s", m.Header.Get("Lem-Dead-Letter-Reason"))
				}
			}
			// Which stream sequences are stored, by stream incarnation.
			if rows, err := conn.Query(ctx, fmt.Sprintf("SELECT stream_epoch, uniqExact(stream_seq), min(stream_seq), max(stream_seq), count() FROM %s.power_samples GROUP BY stream_epoch", db)); err == nil {
				for rows.Next() {
					var epoch int64
					var seqs, lo, hi, c uint64
					if rows.Scan(&epoch, &seqs, &lo, &hi, &c) == nil {
						info += fmt.Sprintf("; epoch %d: %d sequences in %d..%d, %d rows", epoch, seqs, lo, hi, c)
					}
				}
				rows.Close()
			}
			t.Fatalf("ClickHouse holds %d of %d samples after 3 minutes (%s)", n, events*perEvent, info)
		}
	}
	time.Sleep(time.Second) // a duplicate would land by now
	var raw, distinct uint64
	if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(device_uuid, ts_ns) FROM %s.power_samples", db)).Scan(&raw, &distinct); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	resyncs := 0
	for _, p := range ingests {
		resyncs += strings.Count(p.String(), "resyncing from the stored watermark")
	}
	t.Logf("%5.1fs: %d events, %d samples: ClickHouse holds %d rows (%d distinct), sum %d (want %d); ingest resynced %d times", time.Since(began).Seconds(), events, events*perEvent, raw, distinct, sum, pw.sum, resyncs)
	if n != uint64(events*perEvent) || sum != pw.sum || raw != distinct {
		t.Fatalf("after the faults: %d rows (%d stored, %d distinct), sum %d; want %d rows, sum %d", n, raw, distinct, sum, events*perEvent, pw.sum)
	}
}

// powerEvents publishes numbered power events of perEvent samples each,
// eight devices in turn, and keeps the sum of what it published.
type powerEvents struct {
	pub      *bus.Publisher
	perEvent int
	t0       int64
	sum      int64
}

func newPowerEvents(pub *bus.Publisher, perEvent int) *powerEvents {
	// An hour back: ingest dead-letters samples stamped a day ahead.
	return &powerEvents{pub: pub, perEvent: perEvent, t0: time.Now().Add(-time.Hour).UnixNano()}
}

// publish publishes events from..to-1 (each under its own message id).
func (pw *powerEvents) publish(t *testing.T, from, to int) {
	t.Helper()
	for e := from; e < to; e++ {
		dev := uint32(e % 8)
		pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h1", Source: "sim"}, Device: schemas.Device{Index: dev, UUID: fmt.Sprintf("GPU-%d", dev)}}
		base := pw.t0 + int64(e/8)*int64(pw.perEvent)*20e6
		for i := 0; i < pw.perEvent; i++ {
			p := schemas.Power(80_000 + (e*pw.perEvent+i)%600_000)
			pb.Samples = append(pb.Samples, schemas.PowerSample{TS: base + int64(i)*20e6, Power: p})
			pw.sum += int64(p)
		}
		if err := pw.pub.Publish(schemas.DeviceSubject(schemas.KindPower, "h1", dev), fmt.Sprintf("power-%d", e), pb); err != nil {
			t.Fatalf("publish %d: %v", e, err)
		}
	}
}
