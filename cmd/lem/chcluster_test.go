package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/chserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// chReplica is one clickhouse-server of the 2 × 2 cluster.
type chReplica struct {
	name string
	opts chserver.Options
	srv  *chserver.Server
	conn driver.Conn
}

// TestClickHouseCluster2x2: ZooKeeper (Debian's package) and four
// clickhouse-server 18.16 processes as two shards of two replicas.
// `lem migrate -cluster` runs for real — ON CLUSTER, ReplicatedMergeTree
// local tables, Distributed tables over them — and every server ends with
// every table. Rows written through the Distributed tables reach both
// replicas of their shard and come back through any server; a replica
// SIGKILLed while rows are written catches up after its restart; so does
// everything after ZooKeeper restarts. (How ingest writes to such a
// cluster exactly once is ADR 0018.)
func TestClickHouseCluster2x2(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Getenv("LEM_CH_CLUSTER") != "1" {
		// make test runs it on its own right after the suite: beside the
		// other packages' servers, four 18.16 servers and ZooKeeper raced
		// for ports and 18.16 crashed on its first ON CLUSTER statement.
		t.Skip("runs on its own after the suite: make test sets LEM_CH_CLUSTER=1 for it")
	}
	if _, err := chserver.Binary(); err != nil {
		testenv.Miss(t, "%v", err)
	}
	zk := testenv.StartZooKeeper(t)
	ctx := context.Background()
	dir := t.TempDir()
	reps := make([]*chReplica, 4)
	for i := range reps {
		reps[i] = &chReplica{name: fmt.Sprintf("s%dr%d", i/2+1, i%2+1)}
		o := &reps[i].opts
		o.Dir = filepath.Join(dir, reps[i].name)
		o.TCPPort, o.HTTPPort, o.InterserverPort = freePort(t), freePort(t), freePort(t)
	}
	var remote strings.Builder
	remote.WriteString("<remote_servers><lem_2x2>")
	for s := 0; s < 2; s++ {
		remote.WriteString("<shard><internal_replication>true</internal_replication>")
		for r := 0; r < 2; r++ {
			fmt.Fprintf(&remote, "<replica><host>127.0.0.1</host><port>%d</port></replica>", reps[2*s+r].opts.TCPPort)
		}
		remote.WriteString("</shard>")
	}
	remote.WriteString("</lem_2x2></remote_servers>")
	t.Cleanup(func() {
		if t.Failed() { // what the servers said
			for _, r := range reps {
				b, _ := os.ReadFile(filepath.Join(r.opts.Dir, "err.log"))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("%s err.log: %s", r.name, b)
			}
		}
	})
	zkHost, zkPort, _ := strings.Cut(zk.Addr, ":")
	for i, r := range reps {
		r.opts.Cluster = remote.String() + fmt.Sprintf(
			"<zookeeper><node><host>%s</host><port>%s</port></node><session_timeout_ms>30000</session_timeout_ms><operation_timeout_ms>30000</operation_timeout_ms></zookeeper>"+
				"<distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"+
				"<macros><shard>0%d</shard><replica>r%d</replica></macros>", zkHost, zkPort, i/2+1, i%2+1)
		r.start(t)
		r.waitZooKeeper(t)
	}

	// lem migrate -cluster, for real, through one server. 18.16 can crash
	// (a segmentation fault in zkutil::ZooKeeper::createImpl) on its first
	// ON CLUSTER statement when its DDL worker's first ZooKeeper
	// connection timed out at start (seen under the full suite's load):
	// a crashed server is restarted and the migration, idempotent, run
	// again — at most twice, and said.
	const db = "lemc"
	bin := buildLem(t)
	var out []byte
	var err error
	for attempt := 1; ; attempt++ {
		out, err = exec.Command(bin, "migrate", "-clickhouse", reps[0].srv.Addr(), "-database", db, "-cluster", "lem_2x2").CombinedOutput()
		if err == nil {
			break
		}
		// A crashed server takes a moment to exit (it writes its stack).
		var crashed []*chReplica
		for deadline := time.Now().Add(20 * time.Second); len(crashed) == 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			for _, r := range reps {
				if r.srv.Exited() {
					crashed = append(crashed, r)
				}
			}
		}
		if len(crashed) == 0 || attempt == 3 {
			t.Fatalf("lem migrate -cluster (attempt %d): %v\n%s", attempt, err, out)
		}
		for _, r := range crashed {
			t.Logf("lem migrate -cluster failed (%v) and %s had crashed (18.16): restarting it", err, r.name)
			r.start(t)
			r.waitZooKeeper(t)
		}
	}
	t.Logf("lem migrate -cluster lem_2x2: %s", strings.TrimSpace(string(out)))
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	sv, err := chstore.ServerVersion(ctx, reps[0].conn)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]bool{} // every table the migrations make, once
	for _, m := range ms {
		if !sv.AtLeast(m.MinServer) {
			continue
		}
		stmts, _ := m.RenderCluster(db, "lem_2x2")
		for _, s := range stmts {
			if name, ok := strings.CutPrefix(s, "CREATE TABLE IF NOT EXISTS "+db+"."); ok && strings.Contains(s, "ENGINE = Distributed") {
				tables[strings.Fields(name)[0]] = true
			}
		}
	}
	want := len(tables)
	for _, r := range reps {
		var local, dist uint64
		if err := r.conn.QueryRow(ctx, "SELECT countIf(engine LIKE 'Replicated%'), countIf(engine = 'Distributed') FROM system.tables WHERE database = ?", db).Scan(&local, &dist); err != nil {
			t.Fatal(err)
		}
		if local != uint64(want) || dist != uint64(want) {
			t.Errorf("%s: %d replicated and %d Distributed tables; want %d of each", r.name, local, dist, want)
		}
	}

	// Power rows of eight devices through the Distributed table.
	sync := ch.Context(ctx, ch.WithSettings(ch.Settings{"insert_distributed_sync": 1}))
	var wantRows, wantSum int64
	insert := func(via *chReplica, from, to int) {
		t.Helper()
		b, err := via.conn.PrepareBatch(sync, "INSERT INTO "+db+".power_samples (host, source, device_index, device_uuid, ts_ns, power_mw, stream_epoch, stream_seq)")
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			p := int64(80_000 + i%600_000)
			if err := b.Append("h1", "sim", uint32(i%8), fmt.Sprintf("GPU-%d", i%8), int64(1.7e18)+int64(i)*20e6, p, int64(1), uint64(i/500+1)); err != nil {
				t.Fatal(err)
			}
			wantRows, wantSum = wantRows+1, wantSum+p
		}
		if err := b.Send(); err != nil {
			t.Fatalf("insert through %s: %v", via.name, err)
		}
	}
	// count checks every server: through its Distributed table, the whole
	// table; through its local table, its shard — the same on both
	// replicas, and the shards summing to the whole.
	count := func(what string) {
		t.Helper()
		var shards [2][2]int64
		waitFor(t, what, 2*time.Minute, func() bool {
			for i, r := range reps {
				var n, sum int64
				if r.conn.QueryRow(ctx, "SELECT toInt64(count()), toInt64(sum(power_mw)) FROM "+db+".power_samples").Scan(&n, &sum) != nil || n != wantRows || sum != wantSum {
					return false
				}
				if r.conn.QueryRow(ctx, "SELECT toInt64(count()) FROM "+db+".power_samples_local").Scan(&shards[i/2][i%2]) != nil {
					return false
				}
			}
			return shards[0][0] == shards[0][1] && shards[1][0] == shards[1][1] && shards[0][0]+shards[1][0] == wantRows && shards[0][0] > 0 && shards[1][0] > 0
		})
		t.Logf("%s: %d rows through every server's Distributed table; shard 1 holds %d on each replica, shard 2 %d", what, wantRows, shards[0][0], shards[1][0])
	}
	insert(reps[0], 0, 100_000)
	insert(reps[3], 100_000, 200_000)
	count("rows written through two servers")

	// A replica dies while rows are written; it catches up after restart.
	t.Logf("SIGKILL %s", reps[1].name)
	syscall.Kill(-reps[1].srv.Pid(), syscall.SIGKILL)
	reps[1].srv.Stop()
	insert(reps[0], 200_000, 300_000)
	insert(reps[2], 300_000, 400_000)
	reps[1].start(t)
	count("a killed replica caught up")

	// ZooKeeper restarts: replicated tables are read-only until the
	// servers reconnect, then writes go on.
	t.Log("restart ZooKeeper")
	zk.Stop()
	zk.Start()
	waitFor(t, "inserts after ZooKeeper's restart", 2*time.Minute, func() bool {
		b, err := reps[2].conn.PrepareBatch(sync, "INSERT INTO "+db+".power_samples (host, source, device_index, device_uuid, ts_ns, power_mw, stream_epoch, stream_seq)")
		if err != nil {
			return false
		}
		defer b.Abort()
		return b.Append("h1", "sim", uint32(0), "GPU-probe", int64(1), int64(0), int64(0), uint64(0)) == nil && b.Send() == nil
	})
	wantRows++
	insert(reps[3], 400_000, 500_000)
	count("rows after ZooKeeper's restart")

	// Ingest into the cluster (ADR 0018) while a replica dies and comes
	// back and ZooKeeper restarts: every sample once.
	const idb = "lemi"
	st, err := store.Open(ctx, store.Config{ClickHouse: chstore.Config{Addr: reps[0].srv.Addr(), Database: idb, Cluster: "lem_2x2"}},
		store.Options{Migrate: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, nc, js := testenv.JetStream(t)
	ictx, stopIngest := context.WithCancel(ctx)
	ingestDone := make(chan error, 1)
	go func() {
		ingestDone <- ingest.New(js, st, ingest.Config{FlushInterval: 200 * time.Millisecond, BatchRows: 20_000}, nil, zerolog.Nop()).Run(ictx)
	}()
	defer func() { stopIngest(); <-ingestDone }()
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	pw := newPowerEvents(pub, 500)
	stored := func(what string) {
		t.Helper()
		want := int64(pw.events * pw.perEvent)
		var n, sum, distinct int64
		waitFor(t, what, 3*time.Minute, func() bool {
			return reps[3].conn.QueryRow(ctx, "SELECT toInt64(count()), toInt64(sum(power_mw)), toInt64(uniqExact(device_uuid, ts_ns)) FROM "+idb+".power_samples").Scan(&n, &sum, &distinct) == nil && n >= want
		})
		time.Sleep(time.Second) // a duplicate would land by now
		if err := reps[3].conn.QueryRow(ctx, "SELECT toInt64(count()), toInt64(sum(power_mw)), toInt64(uniqExact(device_uuid, ts_ns)) FROM "+idb+".power_samples").Scan(&n, &sum, &distinct); err != nil {
			t.Fatal(err)
		}
		var local [4]int64
		for i, r := range reps {
			r.conn.QueryRow(ctx, "SELECT toInt64(count()) FROM "+idb+".power_samples_local").Scan(&local[i])
		}
		t.Logf("%s: %d samples published, %d stored (%d distinct), sum %d (want %d); local rows %v", what, want, n, distinct, sum, pw.sum, local)
		if n != want || distinct != n || sum != pw.sum {
			t.Fatalf("%s: %d rows, %d distinct, sum %d; want %d rows, sum %d", what, n, distinct, sum, want, pw.sum)
		}
	}
	pw.publish(t, 0, 200)
	pw.flush(t)
	stored("ingested into the cluster")
	t.Logf("SIGKILL %s while ingesting", reps[2].name)
	syscall.Kill(-reps[2].srv.Pid(), syscall.SIGKILL)
	reps[2].srv.Stop()
	pw.publish(t, 200, 400)
	pw.flush(t)
	time.Sleep(3 * time.Second) // blocks for its shard wait for the quorum
	reps[2].start(t)
	stored("after a replica died and came back")
	t.Log("restart ZooKeeper while ingesting")
	zk.Stop()
	pw.publish(t, 400, 600)
	pw.flush(t)
	zk.Start()
	stored("after ZooKeeper's restart")

	ingestKilledMidInsert(t, reps)
}

// ingestKilledMidInsert: a `lem ingest -clickhouse-cluster` process (the
// deployments' arguments) is SIGKILLed three times at the moment one of
// the replicas shows it inserting (system.processes), and started again:
// the unfinished insert is dropped, the next process resumes from the
// watermark, and every sample is stored once.
func ingestKilledMidInsert(t *testing.T, reps []*chReplica) {
	ctx := context.Background()
	const kdb = "lemk"
	st, err := store.Open(ctx, store.Config{ClickHouse: chstore.Config{Addr: reps[0].srv.Addr(), Database: kdb, Cluster: "lem_2x2"}},
		store.Options{Migrate: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := e.Connect("kill-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	bin := buildLem(t)
	args := deploy.Ingest{NATS: e.ClientURL(), StreamReplicas: "1", ClickHouse: reps[0].srv.Addr(), Database: kdb, Cluster: "lem_2x2",
		Extra: []string{"-instance", "k", "-lease-ttl", "2s", "-flush-interval", "200ms", "-batch-rows", "50000", "-log-format", "console"}}.Args()
	proc := startProc(t, bin, args...)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	pw := newPowerEvents(pub, 500)
	// Publish steadily in the background: 2,400 events (1.2 M samples).
	const events = 2400
	published := make(chan struct{})
	go func() {
		defer close(published)
		for e := 0; e < events; e += 40 {
			pw.publish(t, e, e+40)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	inserting := func() bool {
		for _, r := range reps {
			var n uint64
			if r.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO "+kdb+".power_samples_local%'").Scan(&n) == nil && n > 0 {
				return true
			}
		}
		return false
	}
	for k := 1; k <= 3; k++ {
		waitFor(t, "ingest inserting", 2*time.Minute, inserting)
		proc.cmd.Process.Signal(syscall.SIGKILL)
		proc.cmd.Wait()
		t.Logf("SIGKILL %d to lem ingest while it inserted into the cluster", k)
		// Its lease expires (2 s) and settles (2 s) before the next
		// process takes power over from the watermark.
		proc = startProc(t, bin, args...)
	}
	<-published
	pw.flush(t)
	want := int64(pw.events * pw.perEvent)
	var n, sum, distinct int64
	q := "SELECT toInt64(count()), toInt64(sum(power_mw)), toInt64(uniqExact(device_uuid, ts_ns)) FROM " + kdb + ".power_samples"
	waitFor(t, "every sample after the kills", 3*time.Minute, func() bool {
		return reps[3].conn.QueryRow(ctx, q).Scan(&n, &sum, &distinct) == nil && n >= want
	})
	time.Sleep(2 * time.Second) // a duplicate would land by now
	if err := reps[3].conn.QueryRow(ctx, q).Scan(&n, &sum, &distinct); err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest killed mid-insert 3 times: %d samples published, %d stored (%d distinct), sum %d (want %d)", want, n, distinct, sum, pw.sum)
	if n != want || distinct != n || sum != pw.sum {
		t.Log(proc.String())
		t.Fatalf("after ingest was killed mid-insert: %d rows, %d distinct, sum %d; want %d rows, sum %d", n, distinct, sum, want, pw.sum)
	}
}

func (r *chReplica) start(t *testing.T) {
	t.Helper()
	srv, err := chserver.Start(context.Background(), r.opts)
	if err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	t.Cleanup(func() { srv.Stop() })
	r.srv = srv
	if r.conn != nil {
		r.conn.Close()
	}
	if r.conn, err = chstore.Connect(context.Background(), chstore.Config{Addr: srv.Addr()}); err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
	t.Cleanup(func() { r.conn.Close() })
}

// waitZooKeeper waits until the server has a ZooKeeper session.
func (r *chReplica) waitZooKeeper(t *testing.T) {
	t.Helper()
	waitFor(t, r.name+"'s ZooKeeper session", 2*time.Minute, func() bool {
		var n uint64
		return r.conn.QueryRow(context.Background(), "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&n) == nil
	})
}
