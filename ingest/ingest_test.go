package ingest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixNano()

// workload publishes power batches of nDev devices and token batches, and
// returns the expected totals.
type totals struct {
	powerRows, tokenRows int
	powerSum, tokenSum   int64
}

func publishWorkload(t testing.TB, pub *bus.Publisher, batches, perBatch int) totals {
	t.Helper()
	var tot totals
	round := e2eRound.Add(1) // message ids must differ between calls
	for b := 0; b < batches; b++ {
		dev := uint32(b % 4)
		pb := &schemas.PowerBatch{
			Origin: schemas.Origin{Host: "h1", Source: "sim"},
			Device: schemas.Device{Index: dev, UUID: fmt.Sprintf("GPU-%d", dev), Name: "Sim H200"},
		}
		base := t0 + int64(b/4)*int64(perBatch)*20e6
		for i := 0; i < perBatch; i++ {
			p := schemas.Power(80_000 + (b*perBatch+i)%600_000)
			pb.Samples = append(pb.Samples, schemas.PowerSample{TS: base + int64(i)*20e6, Power: p})
			tot.powerSum += int64(p)
		}
		tot.powerRows += perBatch
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, "h1", dev), fmt.Sprintf("p-%d-%d", round, b), pb); err != nil {
			t.Fatal(err)
		}
		tb := &schemas.TokenBatch{RunID: "run-1", RequestIDs: []string{fmt.Sprintf("r%d", b)}}
		for i := 0; i < 10; i++ {
			tb.Tokens = append(tb.Tokens, schemas.Token{Request: 0, Index: uint32(i), TS: base + int64(i)*1e6, Tokens: uint32(1 + i%3)})
			tot.tokenSum += int64(1 + i%3)
		}
		tot.tokenRows += 10
		if err := pub.Publish(schemas.RunSubject(schemas.KindToken, "run-1"), fmt.Sprintf("t-%d-%d", round, b), tb); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return tot
}

func count(t testing.TB, conn driver.Conn, q string) (n uint64, sum int64) {
	t.Helper()
	if err := conn.QueryRow(context.Background(), q).Scan(&n, &sum); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n, sum
}

// runIngest runs ingest until cond holds (or a minute passes), then stops it.
func runIngest(t testing.TB, js jetstream.JetStream, sink ingest.Sink, cfg ingest.Config, cond func() bool) {
	runIngestM(t, js, sink, cfg, nil, cond)
}

func runIngestM(t testing.TB, js jetstream.JetStream, sink ingest.Sink, cfg ingest.Config, m *ingest.Metrics, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	in := ingest.New(js, sink, cfg, m, zerolog.Nop())
	go func() { done <- in.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatal("ingest did not reach the expected state in time")
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestClickHouseIngestExactlyOnce(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	_, nc, js := testenv.JetStream(t)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := publishWorkload(t, pub, 200, 50)
	sink, _ := chstore.New(conn, db)
	cfg := ingest.Config{FlushInterval: 200 * time.Millisecond}
	qp := "SELECT count(), sum(power_mw) FROM " + db + ".power_samples"
	qt := "SELECT count(), toInt64(sum(tokens)) FROM " + db + ".tokens"
	done := func() bool {
		n1, _ := count(t, conn, qp)
		n2, _ := count(t, conn, qt)
		return n1 == uint64(want.powerRows) && n2 == uint64(want.tokenRows)
	}
	runIngest(t, js, sink, cfg, done)

	// Replay everything: delete the durable consumers so the stream is
	// delivered again from the start, as after a lost ack or a crash.
	ctx := context.Background()
	for _, k := range schemas.Kinds {
		_ = js.DeleteConsumer(ctx, bus.EventStream, "ingest-"+k.String())
	}
	stream, _ := js.Stream(ctx, bus.EventStream)
	info, _ := stream.Info(ctx)
	lastSeq := info.State.LastSeq
	runIngest(t, js, sink, cfg, func() bool {
		c, err := js.Consumer(ctx, bus.EventStream, "ingest-power")
		if err != nil {
			return false
		}
		ci, err := c.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream >= lastSeq-1
	})
	n, sum := count(t, conn, qp)
	if n != uint64(want.powerRows) || sum != want.powerSum {
		t.Fatalf("power after replay: %d rows sum %d, want %d rows sum %d", n, sum, want.powerRows, want.powerSum)
	}
	n, sum = count(t, conn, qt)
	if n != uint64(want.tokenRows) || sum != want.tokenSum {
		t.Fatalf("tokens after replay: %d rows sum %d, want %d rows sum %d", n, sum, want.tokenRows, want.tokenSum)
	}
	var dups uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM (SELECT device_uuid, ts_ns, count() c FROM "+db+
		".power_samples GROUP BY device_uuid, ts_ns HAVING c > 1)").Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if dups != 0 {
		t.Fatalf("%d duplicated sample keys", dups)
	}
	var devices uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(device_uuid) FROM "+db+".devices").Scan(&devices); err != nil {
		t.Fatal(err)
	}
	if devices != 4 {
		t.Fatalf("devices table has %d devices, want 4", devices)
	}
}

func TestDeadLetterKeepsStreamMoving(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	_, nc, js := testenv.JetStream(t)
	pub, _ := bus.NewPublisher(nc, 0)
	ctx := context.Background()
	good := func(ts int64, p schemas.Power) *schemas.PowerBatch {
		return &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "sim"},
			Device: schemas.Device{UUID: "GPU-0"}, Samples: []schemas.PowerSample{{TS: ts, Power: p}}}
	}
	subj := schemas.DeviceSubject(schemas.KindPower, "h", 0)
	_ = pub.Publish(subj, "a", good(t0, 1000))
	_ = pub.PublishRaw(subj, "b", []byte("garbage"))
	_ = pub.Publish(subj, "c", good(t0+1, -5))                                   // negative power
	_ = pub.Publish(subj, "d", good(time.Now().Add(48*time.Hour).UnixNano(), 1)) // far future
	trunc := good(t0+2, 7).AppendWire(nil)
	_ = pub.PublishRaw(subj, "e", trunc[:len(trunc)-1])
	_ = pub.Publish(subj, "f", good(t0+3, 2000))
	wrongVersion := good(t0+4, 1).AppendWire(nil)
	wrongVersion[3] = 9
	_ = pub.PublishRaw(subj, "g", wrongVersion)
	_ = pub.Publish(subj, "h", &schemas.TokenBatch{RunID: "r", RequestIDs: []string{"q"}, // wrong type for the subject
		Tokens: []schemas.Token{{TS: t0, Tokens: 1}}})
	_ = pub.Publish(subj, "i", good(1e9, 1)) // 1970
	huge := good(t0+5, 1)
	huge.Origin.Host = strings.Repeat("h", 64<<10) // over the identity-string limit
	_ = pub.Publish(subj, "j", huge)
	unknown := good(t0+6, 1)
	unknown.Device.UUID = "" // a device without identity
	_ = pub.Publish(subj, "k", unknown)
	_ = pub.Publish(subj, "l", good(t0+7, 3000))
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sink, _ := chstore.New(conn, db)
	q := "SELECT count(), sum(power_mw) FROM " + db + ".power_samples"
	m := ingest.NewMetrics(prometheus.NewRegistry())
	runIngestM(t, js, sink, ingest.Config{Kinds: []schemas.Kind{schemas.KindPower}, FlushInterval: 100 * time.Millisecond}, m,
		func() bool { n, _ := count(t, conn, q); return n == 3 })
	if n, sum := count(t, conn, q); n != 3 || sum != 6000 {
		t.Fatalf("got %d rows sum %d, want 3 rows sum 6000", n, sum)
	}
	dlq, err := js.Stream(ctx, bus.DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := dlq.Info(ctx)
	if info.State.Msgs != 9 {
		t.Fatalf("dead-letter stream has %d messages, want 9", info.State.Msgs)
	}
	var reasons []string
	for seq := uint64(1); seq <= 9; seq++ {
		dl, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Header.Get(ingest.HeaderOriginalSubject) != subj {
			t.Fatalf("dead letter headers: %v", dl.Header)
		}
		reasons = append(reasons, dl.Header.Get(ingest.HeaderReason))
	}
	// Each rejection says why.
	all := strings.Join(reasons, "\n")
	for _, want := range []string{"magic", "mW out of range", "timestamp 1000000000 outside", "truncated", "wire version", "event kind", "length over limit", "no UUID"} {
		if !strings.Contains(all, want) {
			t.Errorf("no dead-letter reason mentions %q:\n%s", want, all)
		}
	}
	// Self-metrics account for every message.
	for name, c := range map[string]struct {
		got  float64
		want float64
	}{
		"messages in":        {testutil.ToFloat64(m.MessagesIn.WithLabelValues("power")), 12},
		"rows written":       {testutil.ToFloat64(m.RowsWritten.WithLabelValues("power_samples")), 3},
		"dead-lettered bad":  {testutil.ToFloat64(m.DeadLettered.WithLabelValues("power", "decode")), 5},
		"dead-lettered rule": {testutil.ToFloat64(m.DeadLettered.WithLabelValues("power", "invalid")), 4},
	} {
		if c.got != c.want {
			t.Errorf("metric %s = %v, want %v", name, c.got, c.want)
		}
	}
}

// TestSinksAgree writes the same events through ClickHouse and the Parquet
// store and compares the rows.
func TestSinksAgree(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	_, nc, js := testenv.JetStream(t)
	pub, _ := bus.NewPublisher(nc, 0)
	want := publishWorkload(t, pub, 40, 25)
	ch, _ := chstore.New(conn, db)
	dir := t.TempDir()
	pq := pqstore.Open(dir)
	qp := "SELECT count(), sum(power_mw) FROM " + db + ".power_samples"
	runIngest(t, js, ch, ingest.Config{FlushInterval: 100 * time.Millisecond}, func() bool {
		n, _ := count(t, conn, qp)
		return n == uint64(want.powerRows)
	})
	pqRows := func() int {
		tb := schemas.NewRows(schemas.KindPower).Table()
		if err := pqstore.ReadTable(dir, tb); err != nil {
			t.Fatal(err)
		}
		return tb.Rows()
	}
	runIngest(t, js, pq, ingest.Config{ConsumerPrefix: "pq", FlushInterval: 100 * time.Millisecond},
		func() bool { return pqRows() == want.powerRows })

	rows := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := pqstore.ReadTable(dir, rows.Table()); err != nil {
		t.Fatal(err)
	}
	var pqSum int64
	pqKeys := map[string]int64{}
	for i, p := range rows.Power.V {
		pqSum += p
		pqKeys[fmt.Sprintf("%s/%d/%d", rows.Table().Columns[3].Data().([]string)[i], rows.TS.V[i], rows.Pos.Seq.V[i])] = p
	}
	if pqSum != want.powerSum {
		t.Fatalf("parquet power sum %d, want %d", pqSum, want.powerSum)
	}
	r, err := conn.Query(context.Background(), "SELECT device_uuid, ts_ns, stream_seq, power_mw FROM "+db+".power_samples")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for r.Next() {
		var uuid string
		var ts, p int64
		var seq uint64
		if err := r.Scan(&uuid, &ts, &seq, &p); err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%s/%d/%d", uuid, ts, seq)
		if pqKeys[k] != p {
			t.Fatalf("row %s: clickhouse %d, parquet %d", k, p, pqKeys[k])
		}
		n++
	}
	if n != len(pqKeys) {
		t.Fatalf("clickhouse %d rows, parquet %d distinct rows", n, len(pqKeys))
	}
	tok := schemas.NewRows(schemas.KindToken).Table()
	if err := pqstore.ReadTable(dir, tok); err != nil {
		t.Fatal(err)
	}
	if tok.Rows() != want.tokenRows {
		t.Fatalf("parquet tokens %d, want %d", tok.Rows(), want.tokenRows)
	}
}

func testLogger() zerolog.Logger { return zerolog.Nop() }

// A recreated stream restarts its sequences at 1; rows of the new
// incarnation must not be mistaken for ones already written.
func TestRecreatedStreamIsIngested(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	sink, _ := chstore.New(conn, db)
	q := "SELECT count(), sum(power_mw) FROM " + db + ".power_samples"
	var total int
	for round := 0; round < 2; round++ {
		_, nc, js := testenv.JetStream(t) // a new server and stream each round
		pub, _ := bus.NewPublisher(nc, 0)
		w := publishWorkload(t, pub, 20, 10)
		total += w.powerRows
		runIngest(t, js, sink, ingest.Config{Kinds: []schemas.Kind{schemas.KindPower}, FlushInterval: 100 * time.Millisecond},
			func() bool { n, _ := count(t, conn, q); return n == uint64(total) })
	}
}

// The Go column lists and the migrated ClickHouse tables must agree (the
// computed partition column ts aside; columns added later carry DEFAULT 0).
func TestColumnsMatchDDL(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	tables := []*schemas.Table{schemas.NewDeviceRows().Table(), schemas.NewRunResultRows().Table(),
		schemas.NewCycleResultRows().Table(), schemas.NewRequestEnergyRows().Table()}
	for _, k := range schemas.Kinds {
		tables = append(tables, schemas.NewRows(k).Table())
	}
	for _, tb := range tables {
		rows, err := conn.Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = ? AND table = ? AND name != 'ts' AND default_kind != 'ALIAS'", db, tb.Name)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for rows.Next() {
			var n, ty string
			if err := rows.Scan(&n, &ty); err != nil {
				t.Fatal(err)
			}
			got[n] = ty
		}
		rows.Close()
		if len(got) != len(tb.Columns) {
			t.Errorf("%s: ClickHouse has %d plain columns %v, Go has %d", tb.Name, len(got), got, len(tb.Columns))
		}
		for _, c := range tb.Columns {
			if got[c.Name()] != c.CHType() {
				t.Errorf("%s.%s: ClickHouse %q, Go %q", tb.Name, c.Name(), got[c.Name()], c.CHType())
			}
		}
	}
}

func testutilValue(m *ingest.Metrics) float64 {
	return testutil.ToFloat64(m.InsertErrors.WithLabelValues("power_samples")) +
		testutil.ToFloat64(m.InsertErrors.WithLabelValues("tokens"))
}
