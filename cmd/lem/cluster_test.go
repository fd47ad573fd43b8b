package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/spool"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

// clusterNode is one `lem serve` of a three-node JetStream cluster.
type clusterNode struct {
	name, client, route, dir string
	cmd                      []string
	proc                     *bgProc
}

// clusterRig is a three-node JetStream cluster (streams at R3) of `lem
// serve` processes, `lem ingest -shared` processes reading it into a fresh
// ClickHouse database, and a publisher that spools what it cannot publish.
// On loopback, or with hosts, each node on a host of its own (a network
// namespace) so that a node can be cut off.
type clusterRig struct {
	t       *testing.T
	ctx     context.Context
	db      string
	conn    driver.Conn
	chAddr  string
	bin     string
	nodes   []*clusterNode
	natsURL string
	js      jetstream.JetStream
	ingests map[string]*bgProc
	pub     *bus.Publisher
	sp      *spool.Spool
	pw      *powerEvents
	began   time.Time
}

func newClusterRig(t *testing.T, hosts *testenv.Hosts, perEvent int) *clusterRig {
	r := &clusterRig{t: t, ctx: context.Background(), bin: buildLem(t), ingests: map[string]*bgProc{}}
	r.db, r.conn = testenv.FreshDatabase(t)
	r.chAddr = testenv.ClickHouse(t)
	dir := t.TempDir()
	r.nodes = make([]*clusterNode, 3)
	for i := range r.nodes {
		n := &clusterNode{name: fmt.Sprintf("n%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		if hosts != nil {
			n.client, n.route = hosts.IP[i]+":4222", hosts.IP[i]+":6222"
		} else {
			n.client, n.route = fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
		}
		r.nodes[i] = n
	}
	var urls []string
	for i, n := range r.nodes {
		var routes []string
		for j, o := range r.nodes {
			if i != j {
				routes = append(routes, "nats://"+o.route)
			}
		}
		urls = append(urls, "nats://"+n.client)
		args := []string{"serve", "-ingest=false", "-listen", n.client, "-cluster-listen", n.route, "-server-name", n.name,
			"-routes", strings.Join(routes, ","), "-parquet", n.dir, "-log-format", "console"}
		n.cmd = append([]string{r.bin}, args...)
		if hosts != nil {
			n.cmd = hosts.Command(i, r.bin, args...)
		}
		r.startNode(n)
	}
	r.natsURL = strings.Join(urls, ",")
	nc, err := bus.Connect(r.natsURL, "cluster-test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	// The cluster elects its meta leader; the streams are made at R3.
	waitFor(t, "the cluster's streams at R3", 2*time.Minute, func() bool {
		return bus.EnsureStreams(r.ctx, r.js, bus.StreamConfig{Replicas: 3}) == nil
	})
	// Two ingest processes share the consumers (ADR 0017).
	r.startIngest("i1")
	r.startIngest("i2")
	waitFor(t, "ingest's consumers", time.Minute, func() bool {
		_, err := r.js.Consumer(r.ctx, bus.EventStream, "ingest-power")
		return err == nil
	})
	if r.pub, err = bus.NewPublisher(nc, 0); err != nil {
		t.Fatal(err)
	}
	if r.sp, err = spool.Open(filepath.Join(dir, "spool"), 0); err != nil {
		t.Fatal(err)
	}
	r.pub.UseSpool(r.sp)
	dctx, stopDrain := context.WithCancel(r.ctx)
	t.Cleanup(stopDrain)
	go r.pub.Drain(dctx)
	r.pw = newPowerEvents(r.pub, perEvent)
	r.began = time.Now()
	return r
}

func (r *clusterRig) startNode(n *clusterNode) { n.proc = startProc(r.t, n.cmd[0], n.cmd[1:]...) }

func (r *clusterRig) startIngest(name string) {
	// The deployments' arguments (deploy.Ingest), and a short lease.
	args := deploy.Ingest{NATS: r.natsURL, StreamReplicas: "3", ClickHouse: r.chAddr, Database: r.db,
		Extra: []string{"-instance", name, "-lease-ttl", "2s", "-flush-interval", "200ms", "-log-format", "console"}}.Args()
	r.ingests[name] = startProc(r.t, r.bin, args...)
}

func (r *clusterRig) logf(format string, a ...any) {
	r.t.Helper()
	r.t.Logf("%5.1fs "+format, append([]any{time.Since(r.began).Seconds()}, a...)...)
}

func (r *clusterRig) kill(what string, p *bgProc) {
	r.t.Helper()
	r.logf("SIGKILL %s", what)
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// leader waits for the event stream's leader.
func (r *clusterRig) leader() *clusterNode {
	r.t.Helper()
	var name string
	waitFor(r.t, "a stream leader", time.Minute, func() bool {
		s, err := r.js.Stream(r.ctx, bus.EventStream)
		if err != nil {
			return false
		}
		info, err := s.Info(r.ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		name = info.Cluster.Leader
		return true
	})
	for _, n := range r.nodes {
		if n.name == name {
			return n
		}
	}
	r.t.Fatalf("leader %q is no node of ours", name)
	return nil
}

// follower is a node other than the stream's leader.
func (r *clusterRig) follower() *clusterNode {
	r.t.Helper()
	l := r.leader()
	for _, n := range r.nodes {
		if n != l {
			return n
		}
	}
	return nil
}

// powerHolder is the ingest process holding power's lease.
func (r *clusterRig) powerHolder() string {
	r.t.Helper()
	var holder string
	waitFor(r.t, "the holder of power's lease", time.Minute, func() bool {
		kv, err := r.js.KeyValue(r.ctx, ingest.BucketLeases)
		if err != nil {
			return false
		}
		e, err := kv.Get(r.ctx, "k.ingest.power")
		holder = ""
		if err == nil {
			holder = string(e.Value())
		}
		return r.ingests[holder] != nil
	})
	return holder
}

// drain waits until every publish is acknowledged and the spool empty:
// a publish that fails while Flush waits goes to the spool, so the two
// are waited for in turn until both hold.
func (r *clusterRig) drain() {
	r.t.Helper()
	for deadline := time.Now().Add(4 * time.Minute); ; {
		waitFor(r.t, "the spool to drain", time.Until(deadline), func() bool { n, _, _ := r.sp.Stats(); return n == 0 })
		dctx, cancel := context.WithTimeout(r.ctx, time.Until(deadline))
		err := r.pub.Flush(dctx)
		cancel()
		if err != nil {
			r.t.Fatalf("flush: %v", err)
		}
		if n, _, _ := r.sp.Stats(); n == 0 {
			return
		}
	}
}

// waitStored waits until ClickHouse holds as many samples as were
// published.
func (r *clusterRig) waitStored() {
	r.t.Helper()
	q := fmt.Sprintf("SELECT count() FROM %s.power_samples", r.db)
	waitFor(r.t, "ingest to store what was published", 3*time.Minute, func() bool {
		var n uint64
		return r.conn.QueryRow(r.ctx, q).Scan(&n) == nil && n >= uint64(r.pw.events*r.pw.perEvent)
	})
}

// checkExact waits until ClickHouse holds every sample published, then
// checks each is there once (count, sum, no (device, ts) twice).
func (r *clusterRig) checkExact() {
	t, ctx, db, pw := r.t, r.ctx, r.db, r.pw
	t.Helper()
	want := uint64(pw.events * pw.perEvent)
	r.logf("all published")
	q := fmt.Sprintf("SELECT count(), sum(power_mw) FROM %s.power_samples", db)
	var n uint64
	var sum int64
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if r.conn.QueryRow(ctx, q).Scan(&n, &sum) == nil && n >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse holds %d of %d samples after 3 minutes (%s)", n, want, r.diagnose())
		}
	}
	time.Sleep(time.Second) // a duplicate would land by now
	var raw, distinct uint64
	if err := r.conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), uniqExact(device_uuid, ts_ns) FROM %s.power_samples", db)).Scan(&raw, &distinct); err != nil {
		t.Fatal(err)
	}
	if err := r.conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	resyncs := 0
	for _, p := range r.ingests {
		resyncs += strings.Count(p.String(), "resyncing from the stored watermark")
	}
	r.logf("%d events, %d samples: ClickHouse holds %d rows (%d distinct), sum %d (want %d); ingest resynced %d times", pw.events, want, raw, distinct, sum, pw.sum, resyncs)
	if n != want || sum != pw.sum || raw != distinct {
		t.Fatalf("after the faults: %d rows (%d stored, %d distinct), sum %d; want %d rows, sum %d", n, raw, distinct, sum, want, pw.sum)
	}
}

// diagnose says where the events are: the stream, the power consumer, the
// dead letters, the sequences stored by stream incarnation.
func (r *clusterRig) diagnose() string {
	ctx := r.ctx
	var info string
	if s, err := r.js.Stream(ctx, bus.EventStream); err == nil {
		if si, err := s.Info(ctx); err == nil {
			info = fmt.Sprintf("stream: %d messages, last seq %d, leader %s", si.State.Msgs, si.State.LastSeq, si.Cluster.Leader)
		}
	}
	if c, err := r.js.Consumer(ctx, bus.EventStream, "ingest-power"); err == nil {
		if ci, err := c.Info(ctx); err == nil {
			info += fmt.Sprintf("; ingest-power: pending %d, ack pending %d, ack floor %d, delivered %d", ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.Delivered.Stream)
		}
	}
	if s, err := r.js.Stream(ctx, bus.DeadLetterStream); err == nil {
		if m, err := s.GetLastMsgForSubject(ctx, ">"); err == nil {
			info += fmt.Sprintf("; dead letter: %s", m.Header.Get("Lem-Dead-Letter-Reason"))
		}
	}
	if n, _, _ := r.sp.Stats(); n > 0 {
		info += fmt.Sprintf("; %d messages still spooled", n)
	}
	if rows, err := r.conn.Query(ctx, fmt.Sprintf("SELECT stream_epoch, uniqExact(stream_seq), min(stream_seq), max(stream_seq), count() FROM %s.power_samples GROUP BY stream_epoch", r.db)); err == nil {
		for rows.Next() {
			var epoch int64
			var seqs, lo, hi, c uint64
			if rows.Scan(&epoch, &seqs, &lo, &hi, &c) == nil {
				info += fmt.Sprintf("; epoch %d: %d sequences in %d..%d, %d rows", epoch, seqs, lo, hi, c)
			}
		}
		rows.Close()
	}
	return info
}

// clusterEvents is the size of the cluster tests: LEM_CLUSTER_SAMPLES
// (default 1,000,000) in events of 500 samples.
func clusterEvents() (events, perEvent int) {
	samples := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LEM_CLUSTER_SAMPLES")); err == nil && v > 0 {
		samples = v
	}
	return samples / 500, 500
}

// TestJetStreamClusterFaults: three `lem serve` processes form a JetStream
// cluster (streams at R3), two `lem ingest -shared` read it into
// ClickHouse. While a publisher (spooling what it cannot publish) streams
// power samples through the cluster: the stream's leader is SIGKILLed,
// then a follower, then the ingest process holding power (another
// joins). At the end ClickHouse holds every sample exactly once (count
// and sum), with no duplicate. LEM_CLUSTER_SAMPLES sets the size (default
// 1,000,000 samples in 2,000 events); the 5 M passes too (ADR
// 0016).
func TestJetStreamClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	events, perEvent := clusterEvents()
	r := newClusterRig(t, nil, perEvent)
	step := events / 5
	r.pw.publish(t, 0, step)
	l := r.leader()
	r.kill("the stream leader "+l.name, l.proc)
	r.pw.publish(t, step, 2*step) // a new leader is elected meanwhile; what fails, spools
	r.startNode(l)
	r.drain()
	f := r.follower()
	r.kill("a follower "+f.name, f.proc)
	r.pw.publish(t, 2*step, 3*step)
	r.startNode(f)
	r.drain()
	holder := r.powerHolder()
	r.kill("the ingest process holding power, "+holder, r.ingests[holder])
	delete(r.ingests, holder)
	r.pw.publish(t, 3*step, 4*step)
	r.startIngest("i3")
	r.pw.publish(t, 4*step, events)
	r.drain()
	r.checkExact()
}

// TestJetStreamClusterPartition: the same cluster with each node on a host
// of its own (network namespaces on a bridge). The stream's leader is cut
// off the network mid-stream — it keeps running, its connections stay
// open, publishes to it cannot reach a quorum — then healed; later a
// follower likewise. Publishers and ingest move to the other nodes (a
// silent server is noticed by pings, bus.PingInterval), the cut-off
// leader steps down, and ClickHouse ends with every sample once.
func TestJetStreamClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	hosts := testenv.NewHosts(t, 3)
	events, perEvent := clusterEvents()
	r := newClusterRig(t, hosts, perEvent)
	step := events / 4
	r.pw.publish(t, 0, step)
	l := r.leader()
	i := slices.Index(r.nodes, l)
	r.logf("cut off the stream leader %s", l.name)
	hosts.Cut(i)
	r.pw.publish(t, step, 2*step)
	waitFor(t, "a new stream leader", 2*time.Minute, func() bool { return r.leader() != l })
	r.logf("new leader %s; healing %s", r.leader().name, l.name)
	hosts.Heal(i)
	r.drain()
	f := r.follower()
	j := slices.Index(r.nodes, f)
	r.logf("cut off a follower %s", f.name)
	hosts.Cut(j)
	r.pw.publish(t, 2*step, 3*step)
	r.drain()
	r.waitStored()
	r.logf("stored with %s cut off; healing it", f.name)
	hosts.Heal(j)
	r.pw.publish(t, 3*step, events)
	r.drain()
	r.checkExact()
}

// powerEvents publishes numbered power events of perEvent samples each,
// eight devices in turn, and keeps the sum of what it published.
type powerEvents struct {
	pub      *bus.Publisher
	perEvent int
	events   int // published so far (the highest event number + 1)
	t0       int64
	sum      int64
}

func newPowerEvents(pub *bus.Publisher, perEvent int) *powerEvents {
	// An hour back: ingest dead-letters samples stamped a day ahead.
	return &powerEvents{pub: pub, perEvent: perEvent, t0: time.Now().Add(-time.Hour).UnixNano()}
}

// publish publishes events from..to-1 (each under its own message id).
func (pw *powerEvents) publish(t testing.TB, from, to int) {
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
		pw.events = max(pw.events, e+1)
	}
}

// flush waits (up to a minute) until every publish is acknowledged.
func (pw *powerEvents) flush(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pw.pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}
