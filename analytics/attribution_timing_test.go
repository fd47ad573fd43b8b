package analytics

import (
	"math/rand/v2"
	"strconv"
	"testing"

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
