package ingest_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// synthetic stream shape used by the end-to-end test and the benchmark,
// that of lem's own publishers: nDev devices at 50 Hz, one message per
// device-second (50 samples, as the NVML collector reads the driver's
// buffer), and token messages as the load generator's runner sends them
// (finished requests, their chunks together, at least 2,000 per message).
const (
	e2eDevices       = 8
	samplesPerBatch  = 50
	tokensPerBatch   = 2000
	requestsPerBatch = 10
)

var e2eRound atomic.Int64

type e2eTotals struct {
	power, tokens        uint64
	powerSum, powerCheck uint64 // sum(power), sum(ts*power) with uint64 wrap-around
	tokenSum, tokenCheck uint64
}

// e2eGen generates the stream deterministically, message by message, so
// that lem and the peer pipeline carry the same events.
type e2eGen struct {
	round, t0 int64
	pb        schemas.PowerBatch
	tk        schemas.TokenBatch
}

func newE2EGen() *e2eGen {
	round := e2eRound.Add(1) // message ids must differ between rounds
	return &e2eGen{round: round, t0: t0 + round*1e12,
		pb: schemas.PowerBatch{Origin: schemas.Origin{Host: "e2e-host", Source: "sim"}},
		tk: schemas.TokenBatch{RunID: "e2e-run"}}
}

// power fills g.pb with power message b (samples [b*50, min(b*50+50, n))).
func (g *e2eGen) power(b, n int, tot *e2eTotals) (subject, id string) {
	dev := uint32(b % e2eDevices)
	sec := int64(b / e2eDevices)
	g.pb.Device = schemas.Device{Index: dev, UUID: fmt.Sprintf("GPU-e2e-%d", dev), Name: "Sim"}
	g.pb.Samples = g.pb.Samples[:0]
	for i := 0; i < samplesPerBatch && b*samplesPerBatch+i < n; i++ {
		ts := g.t0 + sec*1e9 + int64(i)*20e6 + int64(dev)
		p := uint64(70_000 + (uint64(ts)/7+uint64(i)*7919)%630_000)
		g.pb.Samples = append(g.pb.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
		tot.power++
		tot.powerSum += p
		tot.powerCheck += uint64(ts) * p
	}
	return schemas.DeviceSubject(schemas.KindPower, "e2e-host", dev), fmt.Sprintf("e2e-p-%d-%d", g.round, b)
}

// tokens fills g.tk with token message b.
func (g *e2eGen) tokens(b, n int, tot *e2eTotals) (subject, id string) {
	g.tk.RequestIDs = g.tk.RequestIDs[:0]
	for r := 0; r < requestsPerBatch; r++ {
		g.tk.RequestIDs = append(g.tk.RequestIDs, fmt.Sprintf("req-%d-%d-%d", g.round, b, r))
	}
	g.tk.Tokens = g.tk.Tokens[:0]
	per := tokensPerBatch / requestsPerBatch
	for i := 0; i < tokensPerBatch && b*tokensPerBatch+i < n; i++ {
		ts := g.t0 + int64(b)*1e8 + int64(i)*1e6
		k := uint64(1 + i%4)
		g.tk.Tokens = append(g.tk.Tokens, schemas.Token{Request: uint32(i / per), Index: uint32(i % per), TS: ts, Tokens: uint32(k)})
		tot.tokens++
		tot.tokenSum += k
		tot.tokenCheck += uint64(ts) * k
	}
	return schemas.RunSubject(schemas.KindToken, "e2e-run"), fmt.Sprintf("e2e-t-%d-%d", g.round, b)
}

func msgsFor(n, per int) int { return (n + per - 1) / per }

// publishE2E publishes nSamples power samples and nTokens token events as
// fast as the publisher goes.
func publishE2E(tb testing.TB, pub *bus.Publisher, nSamples, nTokens int) e2eTotals {
	return publishPaced(tb, pub, nSamples, nTokens, 0)
}

// publishPaced publishes nSamples power samples and nTokens token events,
// both spread evenly over dur (0: as fast as possible), the token
// messages interleaved with the power messages.
func publishPaced(tb testing.TB, pub *bus.Publisher, nSamples, nTokens int, dur time.Duration) e2eTotals {
	var tot e2eTotals
	g := newE2EGen()
	np, nt := msgsFor(nSamples, samplesPerBatch), msgsFor(nTokens, tokensPerBatch)
	start := time.Now()
	for p, t := 0, 0; p < np || t < nt; {
		if dur > 0 {
			// Messages due by now; wait for the next one when none is.
			f := min(float64(time.Since(start))/float64(dur), 1)
			if p >= int(f*float64(np)) && t >= int(f*float64(nt)) {
				time.Sleep(500 * time.Microsecond)
				continue
			}
		}
		// Keep the two kinds in proportion.
		if t < nt && (p >= np || float64(t)/float64(nt) <= float64(p)/float64(np)) {
			subj, id := g.tokens(t, nTokens, &tot)
			if err := pub.Publish(subj, id, &g.tk); err != nil {
				tb.Fatal(err)
			}
			t++
			continue
		}
		subj, id := g.power(p, nSamples, &tot)
		if err := pub.Publish(subj, id, &g.pb); err != nil {
			tb.Fatal(err)
		}
		p++
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := pub.Flush(ctx); err != nil {
		tb.Fatal(err)
	}
	return tot
}

// TestEndToEndMillion publishes 1,000,000 power samples and 100,000 token
// events through embedded JetStream into a real ClickHouse and checks exact
// row counts and checksums of the values.
func TestEndToEndMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	db, conn := testenv.FreshDatabase(t)
	_, nc, js := testenv.JetStream(t)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := publishE2E(t, pub, 1_000_000, 100_000)
	sink, _ := chstore.New(conn, db)
	ctx := context.Background()
	qp := "SELECT count(), sum(toUInt64(power_mw)), sum(toUInt64(ts_ns) * toUInt64(power_mw)) FROM " + db + ".power_samples"
	qt := "SELECT count(), sum(toUInt64(tokens)), sum(toUInt64(ts_ns) * toUInt64(tokens)) FROM " + db + ".tokens"
	var got e2eTotals
	read := func() {
		if err := conn.QueryRow(ctx, qp).Scan(&got.power, &got.powerSum, &got.powerCheck); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, qt).Scan(&got.tokens, &got.tokenSum, &got.tokenCheck); err != nil {
			t.Fatal(err)
		}
	}
	runIngest(t, js, sink, ingest.Config{}, func() bool {
		read()
		return got.power >= want.power && got.tokens >= want.tokens
	})
	read()
	if got != want {
		t.Fatalf("ClickHouse holds %+v\nwant %+v", got, want)
	}
}

// sizeRecorder passes writes to a real sink and records the largest block.
type sizeRecorder struct {
	ingest.Sink
	mu               sync.Mutex
	maxBytes, writes int
}

func (s *sizeRecorder) Write(ctx context.Context, t *schemas.Table) error {
	s.mu.Lock()
	if t.Name == schemas.TablePower {
		s.maxBytes = max(s.maxBytes, t.Bytes())
		s.writes++
	}
	s.mu.Unlock()
	return s.Sink.Write(ctx, t)
}

// TestBatchBytesBoundsMemory: with a small BatchBytes, no block exceeds it
// by more than one message's rows, and every row still arrives once.
func TestBatchBytesBoundsMemory(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	_, nc, js := testenv.JetStream(t)
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := publishE2E(t, pub, 200_000, 0)
	ch, _ := chstore.New(conn, db)
	rec := &sizeRecorder{Sink: ch}
	const limit = 256 << 10
	qp := "SELECT count(), sum(toUInt64(power_mw)), sum(toUInt64(ts_ns) * toUInt64(power_mw)) FROM " + db + ".power_samples"
	var got e2eTotals
	runIngest(t, js, rec, ingest.Config{Kinds: []schemas.Kind{schemas.KindPower}, BatchBytes: limit, FlushInterval: 500 * time.Millisecond}, func() bool {
		if err := conn.QueryRow(context.Background(), qp).Scan(&got.power, &got.powerSum, &got.powerCheck); err != nil {
			t.Fatal(err)
		}
		return got.power >= want.power
	})
	if got.power != want.power || got.powerSum != want.powerSum || got.powerCheck != want.powerCheck {
		t.Fatalf("stored %+v, want %+v", got, want)
	}
	// One message adds 50 rows of ~90 bytes.
	if rec.maxBytes > limit+50*200 {
		t.Errorf("largest block %d bytes, limit %d", rec.maxBytes, limit)
	}
	// 200,000 rows of ~90 bytes in blocks of at most 256 KiB.
	if rec.writes < 200_000*80/limit {
		t.Errorf("%d inserts: blocks were not bounded", rec.writes)
	}
	t.Logf("%d inserts, largest %d bytes", rec.writes, rec.maxBytes)
}
