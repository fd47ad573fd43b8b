package ingest_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
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

// publishE2E publishes nSamples power samples and nTokens token events.
func publishE2E(tb testing.TB, pub *bus.Publisher, nSamples, nTokens int) e2eTotals {
	var tot e2eTotals
	round := e2eRound.Add(1) // message ids must differ between rounds
	t0 := t0 + round*1e12
	pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "e2e-host", Source: "sim"}}
	for b := 0; b*samplesPerBatch < nSamples; b++ {
		dev := uint32(b % e2eDevices)
		sec := int64(b / e2eDevices)
		pb.Device = schemas.Device{Index: dev, UUID: fmt.Sprintf("GPU-e2e-%d", dev), Name: "Sim"}
		pb.Samples = pb.Samples[:0]
		for i := 0; i < samplesPerBatch && b*samplesPerBatch+i < nSamples; i++ {
			ts := t0 + sec*1e9 + int64(i)*20e6 + int64(dev)
			p := uint64(70_000 + (uint64(ts)/7+uint64(i)*7919)%630_000)
			pb.Samples = append(pb.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
			tot.power++
			tot.powerSum += p
			tot.powerCheck += uint64(ts) * p
		}
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, "e2e-host", dev), fmt.Sprintf("e2e-p-%d-%d", round, b), pb); err != nil {
			tb.Fatal(err)
		}
	}
	tk := &schemas.TokenBatch{RunID: "e2e-run"}
	for b := 0; b*tokensPerBatch < nTokens; b++ {
		tk.RequestIDs = tk.RequestIDs[:0]
		for r := 0; r < requestsPerBatch; r++ {
			tk.RequestIDs = append(tk.RequestIDs, fmt.Sprintf("req-%d-%d", b, r))
		}
		tk.Tokens = tk.Tokens[:0]
		for i := 0; i < tokensPerBatch && b*tokensPerBatch+i < nTokens; i++ {
			ts := t0 + int64(b)*1e8 + int64(i)*1e6
			n := uint64(1 + i%4)
			per := tokensPerBatch / requestsPerBatch
			tk.Tokens = append(tk.Tokens, schemas.Token{Request: uint32(i / per), Index: uint32(i % per), TS: ts, Tokens: uint32(n)})
			tot.tokens++
			tot.tokenSum += n
			tot.tokenCheck += uint64(ts) * n
		}
		if err := pub.Publish(schemas.RunSubject(schemas.KindToken, "e2e-run"), fmt.Sprintf("e2e-t-%d-%d", round, b), tk); err != nil {
			tb.Fatal(err)
		}
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
	sink, _ := ingest.NewClickHouseSink(conn, db)
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
