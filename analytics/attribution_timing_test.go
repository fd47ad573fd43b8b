package analytics

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// BenchmarkAttribute: one device, 10 minutes at 50 Hz (30,000 slices),
// 20,000 requests about 64 in flight, ~32 chunks each.
func BenchmarkAttribute(b *testing.B) {
	const dur = int64(600e9)
	var ps []schemas.PowerSample
	var rs []Reading
	var e float64
	for ts := int64(0); ts < dur; ts += 20e6 {
		p := 300_000 + (ts/20e6%50)*1000
		ps = append(ps, schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
		if ts%1e9 == 0 {
			rs = append(rs, Reading{EnergyReading: schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(e)}, Source: "sim"})
		}
		e += float64(p) * 20e6 / 1e6
	}
	rng := rand.New(rand.NewPCG(3, 4))
	reqs := make([]schemas.Request, 20000)
	toks := map[string][]schemas.Token{}
	for i := range reqs {
		sent := int64(i) * (dur - 3e9) / int64(len(reqs))
		first := sent + 50e6
		id := "r" + strconv.Itoa(i)
		ts := first
		for k := 0; k < 32; k++ {
			toks[id] = append(toks[id], schemas.Token{Index: uint32(k), TS: ts, Tokens: 1})
			ts += 15e6 + rng.Int64N(10e6)
		}
		reqs[i] = schemas.Request{ID: id, Sent: sent, FirstToken: first, LastToken: ts, Done: ts, PromptTokens: 256, OutputTokens: 32}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		slices := Slices(rs, ps, 60e6, 0, dur)
		if _, err := Attribute(slices, 100, reqs, toks, MethodTokens); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(ps))*float64(b.N)/b.Elapsed().Seconds(), "slices/s")
}

// BenchmarkAttributeHour is issue 4's scale: one hour of 8 GPUs at 50 Hz
// (1.44 M power slices) and 1,000,000 requests with 16 chunks each
// (16 M chunk events), every device's energy attributed to every request.
// Run on one core: go test -run XXX -bench AttributeHour -benchtime 1x -cpu 1 ./analytics
// It reports the peak heap (the inputs included) beside the time.
func BenchmarkAttributeHour(b *testing.B) {
	const (
		dur     = int64(3600e9)
		devices = 8
		nReq    = 1_000_000
		chunks  = 16
	)
	ps := make([]schemas.PowerSample, 0, dur/20e6)
	var rs []Reading
	var e float64
	for ts := int64(0); ts < dur; ts += 20e6 {
		p := 300_000 + (ts/20e6%50)*1000
		ps = append(ps, schemas.PowerSample{TS: ts, Power: schemas.Power(p)})
		if ts%1e9 == 0 {
			rs = append(rs, Reading{EnergyReading: schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(e)}, Source: "sim"})
		}
		e += float64(p) * 20e6 / 1e6
	}
	rng := rand.New(rand.NewPCG(3, 4))
	reqs := make([]schemas.Request, nReq)
	toks := make(map[string][]schemas.Token, nReq)
	tokBuf := make([]schemas.Token, nReq*chunks)
	for i := range reqs {
		sent := int64(i) * (dur - 5e9) / nReq
		first := sent + 50e6 + rng.Int64N(200e6)
		id := "r" + strconv.Itoa(i)
		ts := first
		tk := tokBuf[i*chunks : (i+1)*chunks : (i+1)*chunks]
		for k := range tk {
			tk[k] = schemas.Token{Index: uint32(2 * k), TS: ts, Tokens: 2}
			ts += 15e6 + rng.Int64N(40e6)
		}
		toks[id] = tk
		reqs[i] = schemas.Request{ID: id, Sent: sent, FirstToken: first, LastToken: ts, Done: ts, PromptTokens: 512, OutputTokens: 2 * chunks}
	}
	runtime.GC()
	var peak uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	for _, method := range []string{MethodTokens, MethodPowerModel} {
		b.Run(method, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				// As AnalyzeRun does: each device sliced, the slices merged
				// on a 5 ms grid, one attribution pass.
				sets := make([][]Slice, devices)
				for d := range sets {
					sets[d] = Slices(rs, ps, 60e6, 0, dur)
				}
				if _, err := Attribute(MergeSlices(sets, 5e6, 0, dur), 100*devices, reqs, toks, method); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(devices*len(ps)), "slices/op")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
	close(stop)
	<-done
}
