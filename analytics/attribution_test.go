package analytics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/schemas"
)

// Conservation: whatever the method and workload, the requests' shares
// plus the unattributed remainder equal the window's measured energy.
func TestAttributionConserves(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Seed: 9}, start)
	var ps []schemas.PowerSample
	var rs []Reading
	for sec := 1; sec <= 20; sec++ {
		pb, eb := s.Advance(0, t0+int64(sec)*1e9)
		ps = append(ps, pb.Samples...)
		for _, e := range eb.Readings {
			rs = append(rs, Reading{EnergyReading: e, Source: "sim"})
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var reqs []schemas.Request
	toks := map[string][]schemas.Token{}
	for i := 0; i < 60; i++ {
		sent := t0 + 2e9 + rng.Int64N(12e9)
		first := sent + 20e6 + rng.Int64N(300e6)
		id := string(rune('A'+i%26)) + string(rune('a'+i/26))
		ts := first
		var out uint32
		for k := 0; k < 1+rng.IntN(40); k++ {
			n := uint32(1 + rng.IntN(3))
			toks[id] = append(toks[id], schemas.Token{Index: out, TS: ts, Tokens: n})
			out += n
			ts += 5e6 + rng.Int64N(40e6)
		}
		reqs = append(reqs, schemas.Request{ID: id, Sent: sent, FirstToken: first, LastToken: ts, Done: ts + 1e6,
			PromptTokens: uint32(10 + rng.IntN(500)), OutputTokens: out, Status: schemas.StatusOK})
	}
	from, to := t0+1_500_000_000, t0+18_300_000_000
	want := CalibratedEnergy(rs, ps, 60e6, from, to)
	slices := Slices(rs, ps, 60e6, from, to)
	for _, m := range []string{MethodTokens, MethodEqual} {
		a, err := Attribute(slices, 83, reqs, toks, m)
		if err != nil {
			t.Fatal(err)
		}
		var sum, pd float64
		for _, r := range a.Requests {
			sum += r.TotalJ()
			pd += r.PrefillJ + r.DecodeJ
			if r.TotalJ() <= 0 {
				t.Errorf("%s: request %s got %.3f J", m, r.ID, r.TotalJ())
			}
		}
		if d := math.Abs(sum + a.UnattributedJ - want); d > 1e-6*want || math.Abs(a.TotalJ-want) > 1e-6*want {
			t.Errorf("%s: requests %.6f + unattributed %.6f = %.6f, window %.6f", m, sum, a.UnattributedJ, sum+a.UnattributedJ, want)
		}
		if math.Abs(pd-sum) > 1e-6*sum || math.Abs(a.PrefillJ+a.DecodeJ-sum) > 1e-6*sum {
			t.Errorf("%s: prefill+decode %.6f, requests %.6f", m, pd, sum)
		}
		if a.UnattributedJ <= 0 {
			t.Errorf("%s: the window's idle start holds no unattributed energy", m)
		}
	}
	if _, err := Attribute(slices, 83, reqs, toks, "guess"); err == nil {
		t.Fatal("unknown method accepted")
	}
}

// Hand-computed: constant 200 W, idle 100 W; A alone for 1 s, then A and B
// together for 1 s in which A decodes 1 token and B prefills 3 prompt
// tokens.
func TestAttributionHandComputed(t *testing.T) {
	var ps []schemas.PowerSample
	for ts := int64(0); ts < 2e9; ts += 20e6 {
		ps = append(ps, schemas.PowerSample{TS: ts + 1e12, Power: 200 * schemas.Watt})
	}
	rs := []Reading{{EnergyReading: schemas.EnergyReading{TSBefore: 1e12, TSAfter: 1e12, Energy: 0}, Source: "sim"},
		{EnergyReading: schemas.EnergyReading{TSBefore: 1e12 + 2e9, TSAfter: 1e12 + 2e9, Energy: 400 * schemas.Joule}, Source: "sim"}}
	o := int64(1e12)
	reqs := []schemas.Request{
		// A: prefill of 1 token over the first second, decode 1 token over the second.
		{ID: "A", Sent: o, FirstToken: o + 1e9, Done: o + 2e9, PromptTokens: 1, OutputTokens: 2},
		// B: prefill of 3 tokens over the second second, no output yet.
		{ID: "B", Sent: o + 1e9, FirstToken: o + 2e9, Done: o + 2e9, PromptTokens: 3, OutputTokens: 1},
	}
	toks := map[string][]schemas.Token{"A": {{TS: o + 1e9, Tokens: 1}, {TS: o + 2e9, Tokens: 1}}}
	a, err := Attribute(Slices(rs, ps, 60e6, o, o+2e9), 100, reqs, toks, MethodTokens)
	if err != nil {
		t.Fatal(err)
	}
	// Second 1: A alone: static 100 J + dynamic 100 J, all prefill.
	// Second 2: static 100 J split by time (50/50); dynamic 100 J by tokens
	// A 1 : B 3 → 25 / 75.
	wantA, wantB := 100+100+50+25.0, 50+75.0
	got := map[string]RequestEnergy{}
	for _, r := range a.Requests {
		got[r.ID] = r
	}
	if math.Abs(got["A"].TotalJ()-wantA) > 1e-6 || math.Abs(got["B"].TotalJ()-wantB) > 1e-6 {
		t.Fatalf("A %.4f J (want %.1f), B %.4f J (want %.1f)", got["A"].TotalJ(), wantA, got["B"].TotalJ(), wantB)
	}
	// A's first second is prefill (200 J), its second second decode (75 J).
	if math.Abs(got["A"].PrefillJ-200) > 1e-6 || math.Abs(got["A"].DecodeJ-75) > 1e-6 || math.Abs(got["B"].PrefillJ-125) > 1e-6 {
		t.Fatalf("split A %.3f/%.3f B %.3f/%.3f", got["A"].PrefillJ, got["A"].DecodeJ, got["B"].PrefillJ, got["B"].DecodeJ)
	}
	if math.Abs(got["A"].JPerOutputToken-wantA/2) > 1e-9 || math.Abs(got["B"].JPerInputToken-wantB/3) > 1e-9 {
		t.Fatalf("per-token figures %+v %+v", got["A"], got["B"])
	}
}

// Merging devices' slices onto a grid keeps every joule, and attribution
// is linear in the devices: one pass over the merged slices gives each
// request exactly the sum of the passes over each device's slices on the
// same grid. (Against each device's own, coarser sample boundaries the
// figures differ by a few percent: that is the resolution of the slices,
// finer on the 5 ms grid.)
func TestMergeSlicesMatchesPerDevice(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	// Each device's slices at its own jittered sample times, energy from
	// a smooth power curve (150 W ± 100 W, 1 s period).
	power := func(t int64) float64 { return 150 + 100*math.Sin(2*math.Pi*float64(t)/1e9) }
	mk := func(offset int64) []Slice {
		var edges []int64
		for ts := offset; ts < 10e9; ts += 15e6 + rng.Int64N(10e6) {
			edges = append(edges, ts)
		}
		var out []Slice
		for i := 0; i+1 < len(edges); i++ {
			a, b := edges[i], edges[i+1]
			out = append(out, Slice{From: a, To: b, Joules: power((a+b)/2) * float64(b-a) / 1e9})
		}
		return out
	}
	a, b := mk(0), mk(7e6)
	merged := MergeSlices([][]Slice{a, b}, 5e6, 0, 10e9)
	sum := func(ss []Slice) (j float64) {
		for _, s := range ss {
			j += s.Joules
		}
		return j
	}
	if d := sum(merged) - sum(a) - sum(b); math.Abs(d) > 1e-9 {
		t.Fatalf("merging lost %g J", d)
	}
	var reqs []schemas.Request
	toks := map[string][]schemas.Token{}
	for i := 0; i < 40; i++ {
		id := fmt.Sprint("q", i)
		sent := int64(i) * 2e8
		first := sent + 30e6 + rng.Int64N(50e6)
		ts := first
		for k := 0; k < 10; k++ {
			toks[id] = append(toks[id], schemas.Token{TS: ts, Tokens: 1})
			ts += 20e6 + rng.Int64N(20e6)
		}
		reqs = append(reqs, schemas.Request{ID: id, Sent: sent, FirstToken: first, LastToken: ts, Done: ts, PromptTokens: 100, OutputTokens: 10})
	}
	am, _ := Attribute(merged, 30, reqs, toks, MethodTokens)
	aa, _ := Attribute(MergeSlices([][]Slice{a}, 5e6, 0, 10e9), 12, reqs, toks, MethodTokens)
	ab, _ := Attribute(MergeSlices([][]Slice{b}, 5e6, 0, 10e9), 18, reqs, toks, MethodTokens)
	for i := range reqs {
		want := aa.Requests[i].TotalJ() + ab.Requests[i].TotalJ()
		if got := am.Requests[i].TotalJ(); math.Abs(got-want) > 1e-9*want {
			t.Errorf("request %d: merged %.6f J, per device %.6f J", i, got, want)
		}
		if pf := am.Requests[i].PrefillJ - aa.Requests[i].PrefillJ - ab.Requests[i].PrefillJ; math.Abs(pf) > 1e-9 {
			t.Errorf("request %d: prefill differs by %g J", i, pf)
		}
	}
	if d := am.TotalJ - aa.TotalJ - ab.TotalJ; math.Abs(d) > 1e-9 {
		t.Errorf("totals differ by %g J", d)
	}
}

// TestQueueIsNoPrefill: a request the server reports queued for 1 s while
// another runs takes no energy for that second — neither static nor
// prefill: it belongs to the request running then. Slices are cut at the
// end of the queue and at first tokens, so none straddles a transition.
func TestQueueIsNoPrefill(t *testing.T) {
	// 100 W flat for 3 s, 20 ms slices, no idle baseline (all dynamic).
	var slices []Slice
	for ts := int64(0); ts < 3e9; ts += 20e6 {
		slices = append(slices, Slice{From: ts, To: ts + 20e6, Joules: 2})
	}
	reqs := []schemas.Request{
		{ID: "a", Sent: 0, FirstToken: 10e6, LastToken: 2e9, Done: 2e9, PromptTokens: 10, OutputTokens: 1, Status: schemas.StatusOK},
		// Queued 1 s, then prefills 0.5 s, then decodes until 3 s.
		{ID: "b", Sent: 5e6, ServerQueue: 1e9, FirstToken: 1505e6, LastToken: 3e9, Done: 3e9, PromptTokens: 10, OutputTokens: 1, Status: schemas.StatusOK},
	}
	toks := map[string][]schemas.Token{"a": {{TS: 10e6, Tokens: 1}, {TS: 2e9, Tokens: 1}}, "b": {{TS: 1505e6, Tokens: 1}, {TS: 3e9, Tokens: 1}}}
	a, err := Attribute(slices, 0, reqs, toks, MethodTokens)
	if err != nil {
		t.Fatal(err)
	}
	b := a.Requests[1]
	// b's share starts at 1.005 s: at most (3 − 1.005) s × 100 W.
	if b.TotalJ() > 199.5+1e-6 {
		t.Errorf("queued request took %.2f J, more than its active time allows (199.5 J)", b.TotalJ())
	}
	if a.PrefillJ+a.DecodeJ+a.UnattributedJ-300 > 1e-9 || 300-(a.PrefillJ+a.DecodeJ+a.UnattributedJ) > 1e-9 {
		t.Errorf("conservation: %.6f J of 300", a.PrefillJ+a.DecodeJ+a.UnattributedJ)
	}
	// Cut slices keep their total.
	cut := CutSlices(slices, []int64{1005e6, 1505e6, 10e6, 0})
	var sum float64
	for _, s := range cut {
		sum += s.Joules
		if s.To <= s.From {
			t.Fatalf("empty slice %+v", s)
		}
	}
	if len(cut) != len(slices)+3 || math.Abs(sum-300) > 1e-9 {
		t.Errorf("%d slices summing to %.9f J", len(cut), sum)
	}
}
