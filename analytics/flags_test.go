package analytics

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
)

// counterStore is a one-device run whose counter integrates watts(t), t in
// seconds from 0, read every 100 ms for 200 s: a baseline over 1-3 s, then
// the given cycles [from, to) in seconds.
func counterStore(watts func(t float64) float64, cycles [][2]float64) *memStore {
	const dev = "GPU-x"
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	var e float64
	for k := 0; k <= 2000; k++ {
		t := float64(k) / 10
		if k > 0 {
			e += watts(t-0.05) * 0.1 * 1e6 // µJ
		}
		m.energy[dev] = append(m.energy[dev], Reading{EnergyReading: schemas.EnergyReading{TSBefore: int64(t * 1e9), TSAfter: int64(t * 1e9),
			Energy: schemas.Energy(e)}, Source: "trace.counter-change"})
	}
	ns := func(s float64) int64 { return int64(s * 1e9) }
	ev := func(c uint32, p schemas.RunPhase, s float64) schemas.RunEvent {
		return schemas.RunEvent{RunID: "r", Cycle: c, Phase: p, TS: ns(s), Devices: []string{dev}}
	}
	m.runs = []schemas.RunEvent{ev(0, schemas.RunStart, 1), ev(0, schemas.RunBaseline, 3)}
	for i, c := range cycles {
		m.runs = append(m.runs, ev(uint32(i), schemas.RunStart, c[0]), ev(uint32(i), schemas.RunEnd, c[1]))
		m.requests = append(m.requests, schemas.Request{ID: string(rune('a' + i)), Cycle: uint32(i), Sent: ns(c[0]), FirstToken: ns(c[0] + 0.1),
			LastToken: ns(c[1]), Done: ns(c[1]), OutputTokens: 100, Status: schemas.StatusOK})
	}
	return m
}

func analyze(t *testing.T, m *memStore) (*RunResult, string) {
	t.Helper()
	r, err := AnalyzeRun(context.Background(), m, "r")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	PrintRun(&b, r)
	return r, b.String()
}

// TestFlagNegativeDynamic: a cycle whose power falls below the idle
// baseline (the GPU idled lower than when the baseline was taken) gets
// negative_dynamic, with the reason printed; the others do not.
func TestFlagNegativeDynamic(t *testing.T) {
	m := counterStore(func(t float64) float64 {
		switch {
		case t >= 20 && t < 30:
			return 70 // below the 100 W baseline
		case t >= 5 && t < 15, t >= 35 && t < 45:
			return 300
		}
		return 100
	}, [][2]float64{{5, 15}, {20, 30}, {35, 45}})
	r, out := analyze(t, m)
	if !hasFlag(r.Cycles[1].Flags, FlagNegativeDynamic) || hasFlag(r.Cycles[0].Flags, FlagNegativeDynamic) || !hasFlag(r.Flags, FlagNegativeDynamic) {
		t.Fatalf("flags: cycles %v %v %v, run %v", r.Cycles[0].Flags, r.Cycles[1].Flags, r.Cycles[2].Flags, r.Flags)
	}
	if !strings.Contains(out, "negative_dynamic: cycle 1") {
		t.Errorf("not explained:\n%s", out)
	}
}

// TestFlagTooFewCycles: two cycles state no interval (a CI over two
// cycles, t = 12.7, is not a measurement error bar) and say why.
func TestFlagTooFewCycles(t *testing.T) {
	m := counterStore(func(t float64) float64 {
		if t >= 5 && t < 15 || t >= 20 && t < 30 {
			return 300 + t
		}
		return 100
	}, [][2]float64{{5, 15}, {20, 30}})
	r, out := analyze(t, m)
	if !hasFlag(r.Flags, FlagTooFewCycles) || !math.IsNaN(r.Summary["energy_j"].CI95) {
		t.Fatalf("flags %v, CI %v", r.Flags, r.Summary["energy_j"].CI95)
	}
	summary := out[strings.Index(out, "over 2 cycles"):]
	if strings.Contains(summary, "±") || !strings.Contains(out, "too_few_cycles: no confidence interval") {
		t.Errorf("an interval printed for two cycles, or no reason:\n%s", out)
	}
}

// TestFlagOutlierCycle: one cycle twice as long as the others is named,
// with the mean without it.
func TestFlagOutlierCycle(t *testing.T) {
	cycles := [][2]float64{{5, 15}, {20, 30.2}, {35, 44.9}, {50, 70}, {80, 90.1}}
	m := counterStore(func(t float64) float64 {
		for _, c := range cycles {
			if t >= c[0] && t < c[1] {
				return 300
			}
		}
		return 100
	}, cycles)
	r, out := analyze(t, m)
	if len(r.Outliers) != 2 || r.Outliers[0].Cycle != 3 || !hasFlag(r.Cycles[3].Flags, FlagOutlierCycle) || hasFlag(r.Cycles[0].Flags, FlagOutlierCycle) {
		t.Fatalf("outliers %+v", r.Outliers)
	}
	if o := r.Outliers[0]; o.Metric != "duration_s" || math.Abs(o.MeanWithout-10) > 0.2 {
		t.Errorf("outlier %+v", o)
	}
	if !strings.Contains(out, "outlier_cycle: cycle 3: duration_s 20") {
		t.Errorf("not named:\n%s", out)
	}
	if hasFlag(r.Flags, FlagTooFewCycles) {
		t.Error("five cycles flagged too few")
	}
}

// Cycles that agree to a millisecond are no outliers of each other (the
// demo once flagged 5.136 s against 5.135 s as 4.6 robust SDs away).
func TestNoOutlierWithinAMillisecond(t *testing.T) {
	for _, z := range robustZ([]float64{5.135, 5.135, 5.136}) {
		if z > OutlierZ {
			t.Errorf("robust z %.1f for a 1 ms difference", z)
		}
	}
	// A real outlier still is one: 6.0 s against 5.1 s.
	if z := robustZ([]float64{5.1, 5.11, 5.09, 6.0}); !(z[3] > OutlierZ) {
		t.Errorf("6.0 s among 5.1 s: z %v", z)
	}
}

// TestLowResolutionOneThreshold: a 0.5 s window is low_resolution whether
// it is computed from the counter alone or from a calibrated power series.
func TestLowResolutionOneThreshold(t *testing.T) {
	m := counterStore(func(float64) float64 { return 200 }, [][2]float64{{5, 5.5}, {10, 10.5}, {15, 15.5}})
	r, _ := analyze(t, m)
	if q := r.Cycles[0].Quality; q != QualityLowRes {
		t.Errorf("counter only: %s", q)
	}
	for k := 0; k < 200*50; k++ {
		m.power["GPU-x"] = append(m.power["GPU-x"], schemas.PowerSample{TS: int64(k) * 20e6, Power: 200_000})
	}
	r, _ = analyze(t, m)
	if q := r.Cycles[0].Quality; q != QualityLowRes {
		t.Errorf("calibrated: %s (was ok at 0.29–0.57 s before one threshold)", q)
	}
}

func TestMannKendall(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		p    float64
		s    int
		desc string
	}{
		{[]float64{1, 2, 3, 4, 5}, 2.0 / 120, 10, "strictly increasing, n=5"},
		{[]float64{5, 4, 3, 2, 1}, 2.0 / 120, -10, "strictly decreasing, n=5"},
		{[]float64{1, 2, 3, 4}, 2.0 / 24, 6, "strictly increasing, n=4: not significant"},
		{[]float64{3, 1, 2}, 1, -1, "n=3"},
		{[]float64{1, math.NaN(), 2}, 1, 0, "NaN left out: two values"},
	} {
		p, s := MannKendall(c.xs)
		if math.Abs(p-c.p) > 1e-12 || s != c.s {
			t.Errorf("%s: p %v S %d, want p %v S %d", c.desc, p, s, c.p, c.s)
		}
	}
	// Exact and approximate agree near n = 50.
	xs := make([]float64, 60)
	for i := range xs {
		xs[i] = float64(i%7) + float64(i)/20
	}
	if p, _ := MannKendall(xs); p > 0.01 {
		t.Errorf("a clear trend over 60 values: p %v", p)
	}
}

// TestFlagTrend: cycle durations growing with run order (a warming server
// run backwards: every cycle slower) are flagged, with the reason; the
// same values shuffled are not.
func TestFlagTrend(t *testing.T) {
	mk := func(lengths []float64) *memStore {
		var cycles [][2]float64
		at := 5.0
		for _, l := range lengths {
			cycles = append(cycles, [2]float64{at, at + l})
			at += l + 5
		}
		return counterStore(func(t float64) float64 {
			for _, c := range cycles {
				if t >= c[0] && t < c[1] {
					return 300
				}
			}
			return 100
		}, cycles)
	}
	r, out := analyze(t, mk([]float64{10, 11, 12.5, 13, 14.5, 16}))
	if !hasFlag(r.Flags, FlagTrend) || len(r.Trends) == 0 || r.Trends[0].Metric != "duration_s" {
		t.Fatalf("flags %v trends %+v", r.Flags, r.Trends)
	}
	if !strings.Contains(out, "trend: duration_s moves with the cycles' order") {
		t.Errorf("not explained:\n%s", out)
	}
	r, _ = analyze(t, mk([]float64{12.5, 10, 16, 11, 14.5, 13}))
	if hasFlag(r.Flags, FlagTrend) {
		t.Errorf("shuffled durations flagged: %+v", r.Trends)
	}
}

func TestMeanCIFormatting(t *testing.T) {
	for _, c := range []struct {
		mean, ci float64
		want     string
	}{
		{544.2, 312.7, "540 ± 310"},
		{0.5314, 0.31, "0.53 ± 0.31"},
		{111.3, 1234, "100 ± 1200"},
		{34.01, 0.0204, "34.010 ± 0.020"},
		{1409, math.NaN(), "1409"},
	} {
		if got := MeanCI(c.mean, c.ci); got != c.want {
			t.Errorf("MeanCI(%v, %v) = %q, want %q", c.mean, c.ci, got, c.want)
		}
	}
	if got := fmtCI(Stat{N: 2, Mean: 1234.5678, CI95: math.NaN()}); got != "1235 (n=2)" {
		t.Errorf("no interval: %q", got)
	}
	if got := fmtCI(Stat{N: 2, Mean: 0.000123456, CI95: math.NaN()}); strings.Contains(got, "e") {
		t.Errorf("exponent notation: %q", got)
	}
}

// TestSlopeTestOnTheH200Drift: the cycle durations of lem's reference
// server with cuDNN attention on an H200 (docs/validation/h200-issue12)
// drift downwards but not monotonically: the rank test alone misses it,
// the slope test does not.
func TestSlopeTestOnTheH200Drift(t *testing.T) {
	xs := []float64{20.62, 21.78, 14.80, 9.10, 11.00, 10.25}
	pk, _ := MannKendall(xs)
	slope, ps := SlopeTest(xs)
	if pk <= TrendAlpha || ps > TrendAlpha || math.Abs(slope+2.569) > 0.01 {
		t.Fatalf("Mann–Kendall p %.3f, slope %.3f p %.4f", pk, slope, ps)
	}
	flat := []float64{6.57, 5.48, 6.04, 7.13, 6.70, 6.23} // cuDNN attention off
	if p1, _ := MannKendall(flat); p1 <= TrendAlpha {
		t.Errorf("flat durations: Mann–Kendall p %.3f", p1)
	}
	if _, p2 := SlopeTest(flat); p2 <= TrendAlpha {
		t.Errorf("flat durations: slope p %.3f", p2)
	}
}

// TestFootprint: Wh per 1,000 requests and kWh per million output tokens
// are summary metrics (so run_results and every export carry them, with
// their intervals); kg CO2e per million tokens and a cost only where a
// price is given are printed with the grid intensity they assume;
// simulated runs say so on the line.
func TestFootprint(t *testing.T) {
	r := &RunResult{Summary: map[string]Stat{}}
	for i, jpt := range []float64{0.35, 0.36, 0.37} {
		r.Cycles = append(r.Cycles, CycleResult{Cycle: uint32(i), JPerToken: jpt, JPerRequest: 100 * jpt})
	}
	summarise(r)
	if wh, kwh := r.Summary["wh_per_1000_requests"], r.Summary["kwh_per_million_tokens"]; math.Abs(wh.Mean-10) > 1e-9 || math.Abs(kwh.Mean-0.1) > 1e-9 ||
		!(kwh.CI95 > 0) || wh.N != 3 {
		t.Errorf("wh_per_1000_requests %+v (want mean 10), kwh_per_million_tokens %+v (want mean 0.1 with an interval)", wh, kwh)
	}
	found := map[string]bool{}
	for _, m := range SummaryMetrics {
		found[m] = true
	}
	if !found["wh_per_1000_requests"] || !found["kwh_per_million_tokens"] {
		t.Errorf("the other units are not summary metrics: %v", SummaryMetrics)
	}
	var b strings.Builder
	PrintFootprint(&b, r, DefaultFootprint)
	co2, _ := DefaultFootprint.PerMillionTokens(r)
	if math.Abs(co2.Mean-0.0481) > 1e-9 || math.Abs(co2.CI95/co2.Mean-r.Summary["kwh_per_million_tokens"].CI95/0.1) > 1e-9 {
		t.Errorf("CO2e %+v: want 0.0481 kg with kWh's relative interval", co2)
	}
	for _, want := range []string{"per million output tokens: 0.048", "kg CO₂e at 481 g/kWh (world average", "cost: give -price-per-kwh"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in %q", want, b.String())
		}
	}
	b.Reset()
	r.Simulated = true
	PrintFootprint(&b, r, Footprint{GridGPerKWh: 100, GridSource: "given", PricePerKWh: 0.2, Currency: "EUR"})
	for _, want := range []string{"(simulated power: not a measurement)", "kg CO₂e at 100 g/kWh", " EUR at 0.200 EUR/kWh"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in %q", want, b.String())
		}
	}
	t.Log(b.String())
}

// A label says "ok" only when nothing else applies: never "ok" beside a
// flag (a card once read "ok,simulated,too_few_cycles").
func TestLabelNeverOKBesideAFlag(t *testing.T) {
	for _, c := range []struct {
		q        string
		sim, app bool
		flags    []string
		want     string
	}{
		{QualityOK, false, false, nil, "ok"},
		{QualityOK, true, false, []string{FlagTooFewCycles}, "simulated,too_few_cycles"},
		{QualityOK, false, true, nil, "apportioned"},
		{"gaps", true, false, []string{FlagTrend}, "gaps,simulated,trend"},
	} {
		if got := qualityLabel(c.q, c.sim, c.app, c.flags...); got != c.want {
			t.Errorf("qualityLabel(%q, %v, %v, %v) = %q, want %q", c.q, c.sim, c.app, c.flags, got, c.want)
		}
	}
}

// The correlation line never prints NaN/NaN (a closed loop holds requests
// in the system constant) nor a lag that the correlation does not support.
func TestCorrelationLineForPeople(t *testing.T) {
	nan := math.NaN()
	r := &RunResult{RunID: "r", Summary: map[string]Stat{}, Simulated: true, Correlation: &Correlation{Bins: 153,
		Pearson:  map[string]float64{"tokens_per_s": -0.07, "requests_in_system": nan, "requests_decoding": 0.03},
		Spearman: map[string]float64{"tokens_per_s": 0, "requests_in_system": nan, "requests_decoding": 0.08},
		LagMS:    1600, LagCorr: 0.16}}
	var b strings.Builder
	PrintRun(&b, r)
	out := b.String()
	for _, want := range []string{"requests in system n/a (constant: a closed loop keeps it fixed)", "effective sensor lag not determined (best r 0.16 < 0.5)",
		"(simulated power: the simulator's load model, not a sensor) power vs load"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NaN") || strings.Contains(out, "+1600 ms") {
		t.Errorf("NaN or an unsupported lag printed:\n%s", out)
	}
}
