package analytics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
)

// gtLaw is a synthetic server's power: what a prefilling request of p
// prompt tokens draws, and what n decoding requests draw together.
type gtLaw struct {
	name    string
	prefill func(p uint32) float64
	decode  func(n int) float64
}

// gtResult is one method's errors against the truth.
type gtResult struct {
	med, p90, pmed, pp90, prefillOff, decodeOff float64
	fit                                         *PowerFit
}

// groundTruth runs the synthetic server of law over 60 s with 300
// requests (prompts of 50–2,050 tokens at 0.1 ms each, 8–128 output tokens
// 25–40 ms apart), samples its power every 20 ms as the mean over each
// sample, integrates each request's truth at 1 ms (its own draw while it
// runs — the decode draw shared equally among the requests decoding — and
// its time share of the 100 W idle while in the system), and attributes
// with each method.
func groundTruth(t *testing.T, law gtLaw) map[string]gtResult {
	const (
		idleW = 100.0
		step  = int64(20e6)
		dur   = int64(60e9)
	)
	rng := rand.New(rand.NewPCG(11, 12))
	type req struct {
		q            schemas.Request
		toks         []schemas.Token
		truthDyn     float64
		truthPrefill float64 // its prefill part plus its idle share while prefilling
	}
	var rs []req
	for i := 0; i < 300; i++ {
		sent := 1e9 + rng.Int64N(dur-12e9)
		prompt := uint32(50 + rng.IntN(2000))
		prefill := int64(prompt) * 100e3 // 0.1 ms per prompt token
		first := sent + prefill
		n := 8 + rng.IntN(120)
		ts := first
		var toks []schemas.Token
		for k := 0; k < n; k++ {
			toks = append(toks, schemas.Token{Index: uint32(k), TS: ts, Tokens: 1})
			ts += 25e6 + rng.Int64N(15e6)
		}
		rs = append(rs, req{q: schemas.Request{ID: fmt.Sprint(i), Sent: sent, FirstToken: first, LastToken: ts, Done: ts,
			PromptTokens: prompt, OutputTokens: uint32(n), Status: schemas.StatusOK}, toks: toks})
	}
	var ps []schemas.PowerSample
	var readings []Reading
	var energy float64
	truthStatic := make([]float64, len(rs))
	const sub = int64(1e6)
	for ts := int64(0); ts < dur; ts += step {
		var sampleJ float64
		for u := ts; u < ts+step; u += sub {
			tm := u + sub/2
			w := idleW
			var inSys, decoding []int
			for i := range rs {
				q := &rs[i].q
				switch {
				case tm >= q.Sent && tm < q.FirstToken:
					part := law.prefill(q.PromptTokens)
					w += part
					rs[i].truthDyn += part * float64(sub) / 1e9
					rs[i].truthPrefill += part * float64(sub) / 1e9
					inSys = append(inSys, i)
				case tm >= q.FirstToken && tm < q.Done:
					inSys = append(inSys, i)
					decoding = append(decoding, i)
				}
			}
			if n := len(decoding); n > 0 {
				dw := law.decode(n)
				w += dw
				for _, i := range decoding {
					rs[i].truthDyn += dw / float64(n) * float64(sub) / 1e9
				}
			}
			for _, i := range inSys {
				truthStatic[i] += idleW * float64(sub) / 1e9 / float64(len(inSys))
				if q := &rs[i].q; tm < q.FirstToken {
					rs[i].truthPrefill += idleW * float64(sub) / 1e9 / float64(len(inSys))
				}
			}
			sampleJ += w * float64(sub) / 1e9
		}
		if ts%100e6 == 0 {
			readings = append(readings, Reading{EnergyReading: schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(energy)}, Source: "sim"})
		}
		ps = append(ps, schemas.PowerSample{TS: ts, Power: schemas.PowerFromWatts(sampleJ / (float64(step) / 1e9))})
		energy += sampleJ * 1e6 // µJ
	}
	reqs := make([]schemas.Request, len(rs))
	toks := map[string][]schemas.Token{}
	for i, r := range rs {
		reqs[i] = r.q
		toks[r.q.ID] = r.toks
	}
	slices := Slices(readings, ps, 60e6, 0, dur-100e6)
	out := map[string]gtResult{}
	for _, m := range []string{MethodPowerModel, MethodTokens, MethodEqual} {
		a, err := Attribute(slices, idleW, reqs, toks, m)
		if err != nil {
			t.Fatal(err)
		}
		var errs, perrs []float64
		var truePrefill, trueTotal float64
		for i, r := range a.Requests {
			truth := rs[i].truthDyn + truthStatic[i]
			errs = append(errs, math.Abs(r.TotalJ()-truth)/truth)
			perrs = append(perrs, math.Abs(r.PrefillJ-rs[i].truthPrefill)/rs[i].truthPrefill)
			truePrefill += rs[i].truthPrefill
			trueTotal += truth
		}
		res := gtResult{med: Percentile(append([]float64(nil), errs...), 50), p90: Percentile(errs, 90),
			pmed: Percentile(append([]float64(nil), perrs...), 50), pp90: Percentile(perrs, 90),
			prefillOff: (a.PrefillJ - truePrefill) / truePrefill, decodeOff: (a.DecodeJ - (trueTotal - truePrefill)) / (trueTotal - truePrefill), fit: a.Fit}
		t.Logf("%s, %s: per-request energy error median %.1f%%, p90 %.1f%%; prefill error median %.1f%%, p90 %.1f%%; prefill total %+.1f%%, decode total %+.1f%% of the truth",
			law.name, m, 100*res.med, 100*res.p90, 100*res.pmed, 100*res.pp90, 100*res.prefillOff, 100*res.decodeOff)
		if f := a.Fit; f != nil {
			t.Logf("%s: fit α %.4f W per prompt token, β %.2f W per decoding request, R² %.4f over %d slices %s", law.name, f.AlphaW, f.BetaW, f.R2, f.Slices, f.Fallback)
		}
		out[m] = res
	}
	return out
}

// TestAttributionGroundTruth: a server whose power is a sum of
// per-request draws — 0.4 W per prompt token while a request prefills, 15
// W per request decoding — is attributed by the power model to within the
// issue's targets (median per-request prefill error ≤ 2%, prefill and
// decode totals within 1%), and better than token weights and equal
// shares. `go test ./analytics -run GroundTruth -v` prints the figures of
// docs/methodology.md.
func TestAttributionGroundTruth(t *testing.T) {
	res := groundTruth(t, gtLaw{"linear", func(p uint32) float64 { return 0.4 * float64(p) }, func(n int) float64 { return 15 * float64(n) }})
	pm := res[MethodPowerModel]
	if pm.fit == nil || pm.fit.Fallback != "" || math.Abs(pm.fit.AlphaW-0.4) > 0.01 || math.Abs(pm.fit.BetaW-15) > 0.3 {
		t.Errorf("fit %+v: want α 0.4 W per prompt token, β 15 W per request", pm.fit)
	}
	if pm.pmed > 0.02 || math.Abs(pm.prefillOff) > 0.01 || math.Abs(pm.decodeOff) > 0.01 {
		t.Errorf("power model: prefill median %.1f%% (≤ 2%%), totals %+.1f%% / %+.1f%% (within 1%%)", 100*pm.pmed, 100*pm.prefillOff, 100*pm.decodeOff)
	}
	for m, bound := range map[string]float64{MethodPowerModel: 0.02, MethodTokens: 0.15, MethodEqual: 0.60} {
		if res[m].med > bound {
			t.Errorf("%s: median error %.1f%% over %.0f%%", m, 100*res[m].med, 100*bound)
		}
	}
	if !(res[MethodPowerModel].med < res[MethodTokens].med && res[MethodTokens].med < res[MethodEqual].med) {
		t.Errorf("medians: power model %.1f%%, tokens %.1f%%, equal %.1f%%: want that order", 100*res[MethodPowerModel].med, 100*res[MethodTokens].med, 100*res[MethodEqual].med)
	}
}

// TestAttributionGroundTruthMisspecified: a server the power model does
// not describe — prefill draw growing as prompt^1.3 (attention), decode
// draw of n requests growing as n^0.6 (batching amortises) — is still
// attributed better by the power model than by token weights; the
// figures bound it (docs/methodology.md says how much it then misses).
func TestAttributionGroundTruthMisspecified(t *testing.T) {
	res := groundTruth(t, gtLaw{"misspecified",
		func(p uint32) float64 { return 0.05 * math.Pow(float64(p), 1.3) },
		func(n int) float64 { return 40 * math.Pow(float64(n), 0.6) }})
	pm, tw := res[MethodPowerModel], res[MethodTokens]
	if !(pm.med < tw.med && pm.pmed < tw.pmed && math.Abs(pm.prefillOff) < math.Abs(tw.prefillOff)) {
		t.Errorf("power model (median %.1f%%, prefill %.1f%%, total %+.1f%%) not better than token weights (%.1f%%, %.1f%%, %+.1f%%)",
			100*pm.med, 100*pm.pmed, 100*pm.prefillOff, 100*tw.med, 100*tw.pmed, 100*tw.prefillOff)
	}
	if pm.med > 0.1 || math.Abs(pm.prefillOff) > 0.1 {
		t.Errorf("power model off the misspecified truth: median %.1f%%, prefill total %+.1f%%", 100*pm.med, 100*pm.prefillOff)
	}
}

// A cycle whose fit is not determined (here: every request prefills
// alone, none decodes) falls back to token weights and says why, and its
// requests record the method that split them.
func TestPowerModelFallsBack(t *testing.T) {
	var slices []Slice
	for k := int64(0); k < 100; k++ {
		slices = append(slices, Slice{From: k * 20e6, To: (k + 1) * 20e6, Joules: 3})
	}
	reqs := []schemas.Request{{ID: "a", Sent: 1, FirstToken: 2e9, Done: 2e9, PromptTokens: 100, Status: schemas.StatusOK}}
	a, err := Attribute(slices, 100, reqs, nil, MethodPowerModel)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fit == nil || a.Fit.Fallback == "" || a.Method != MethodTokens {
		t.Fatalf("fit %+v, method %s: want a fallback to token weights with its reason", a.Fit, a.Method)
	}
}

// A fit that explains little of the power is printed with a warning.
func TestWeakFitSaysSo(t *testing.T) {
	r := &RunResult{RunID: "r", Summary: map[string]Stat{}, Cycles: []CycleResult{{Cycle: 0, EnergyJ: 100, PrefillJ: 10, DecodeJ: 90,
		Fit: &PowerFit{AlphaW: 0.2, BetaW: 30, R2: 0.03, Slices: 200}}}}
	var b strings.Builder
	PrintRun(&b, r)
	if !strings.Contains(b.String(), "explains little of the power") || !strings.Contains(b.String(), "R² 0.03") {
		t.Fatalf("no warning for R² 0.03:\n%s", b.String())
	}
}
