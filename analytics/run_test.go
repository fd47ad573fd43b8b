package analytics

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/schemas"
)

// memStore is an in-memory Store for data-driven tests of the arithmetic;
// the ClickHouse and Parquet stores are exercised by cmd/lem's demo test.
type memStore struct {
	power    map[string][]schemas.PowerSample
	runs     []schemas.RunEvent
	requests []schemas.Request
	tokens   map[string][]schemas.Token
	energy   map[string][]Reading
}

func (m *memStore) RunIDs(context.Context) ([]string, error) { return []string{m.runs[0].RunID}, nil }
func (m *memStore) RunEvents(context.Context, string) ([]schemas.RunEvent, error) {
	return m.runs, nil
}
func (m *memStore) Requests(context.Context, string) ([]schemas.Request, error) {
	return m.requests, nil
}
func (m *memStore) Tokens(context.Context, string) (map[string][]schemas.Token, error) {
	return m.tokens, nil
}
func (m *memStore) PowerBySource(_ context.Context, uuid string, from, to int64) (map[string][]schemas.PowerSample, error) {
	var out []schemas.PowerSample
	for _, p := range m.power[uuid] {
		if p.TS >= from && p.TS <= to {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return map[string][]schemas.PowerSample{"sim": out}, nil
}

func (m *memStore) Energy(_ context.Context, uuid string, from, to int64) ([]Reading, error) {
	var out []Reading
	for _, r := range m.energy[uuid] {
		if r.TSBefore >= from && r.TSBefore <= to {
			out = append(out, r)
		}
	}
	return out, nil
}

// TestRunAgainstSimTruth builds a run over two simulated devices whose
// exact energy is known and checks energies, baseline, J/token and latency
// figures against hand-computed values.
func TestRunAgainstSimTruth(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Devices: 2, Seed: 5, NoiseW: 0.001}, start)
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	samples := map[string][]schemas.PowerSample{}
	// Truth[i][k]: exact energy of device i after k seconds.
	truth := make([][]float64, 2)
	for i := 0; i < 2; i++ {
		truth[i] = append(truth[i], 0)
		for sec := 1; sec <= 30; sec++ {
			pb, eb := s.Advance(i, t0+int64(sec)*1e9)
			samples[s.Devices()[i].UUID] = append(samples[s.Devices()[i].UUID], pb.Samples...)
			for _, e := range eb.Readings {
				m.energy[s.Devices()[i].UUID] = append(m.energy[s.Devices()[i].UUID], Reading{EnergyReading: e, Source: "sim"})
			}
			truth[i] = append(truth[i], s.TrueEnergy(i).Joules())
		}
	}
	sec := func(k int) int64 { return t0 + int64(k)*1e9 }
	devs := []string{s.Devices()[0].UUID, s.Devices()[1].UUID}
	ev := func(c uint32, p schemas.RunPhase, ts int64) schemas.RunEvent {
		return schemas.RunEvent{RunID: "r", Backend: "synthetic", Cycle: c, Phase: p, TS: ts, Devices: devs}
	}
	// Script: idle 0-3 s (baseline 1-3 s), bursts at 3-7 s and 9-13 s.
	m.runs = []schemas.RunEvent{ev(0, schemas.RunStart, sec(1)), ev(0, schemas.RunBaseline, sec(3)),
		ev(0, schemas.RunStart, sec(3)), ev(0, schemas.RunEnd, sec(7)), ev(1, schemas.RunStart, sec(9)), ev(1, schemas.RunEnd, sec(13))}
	for c := uint32(0); c < 2; c++ {
		base := sec(3 + 6*int(c))
		m.requests = append(m.requests,
			schemas.Request{ID: "a" + string(rune('0'+c)), Cycle: c, Scheduled: base, Sent: base, FirstToken: base + 100e6, LastToken: base + 1100e6, Done: base + 1100e6, OutputTokens: 101, Status: schemas.StatusOK},
			schemas.Request{ID: "b" + string(rune('0'+c)), Cycle: c, Scheduled: base, Sent: base, Status: schemas.StatusError, Error: "x"})
		// 101 tokens: one first chunk, then 50 chunks of 2 tokens 20 ms apart.
		tk := []schemas.Token{{Index: 0, TS: base + 100e6, Tokens: 1}}
		for i := 1; i <= 50; i++ {
			tk = append(tk, schemas.Token{Index: uint32(2*i - 1), TS: base + 100e6 + int64(i)*20e6, Tokens: 2})
		}
		m.tokens["a"+string(rune('0'+c))] = tk
	}
	for _, withPower := range []bool{false, true} {
		if withPower {
			m.power = samples // the calibrated path: samples place the counter's energy
		}
		checkRunAgainstTruth(t, m, devs, truth, withPower)
	}
}

func checkRunAgainstTruth(t *testing.T, m *memStore, devs []string, truth [][]float64, withPower bool) {
	t.Helper()
	res, err := AnalyzeRun(context.Background(), m, "r")
	if err != nil {
		t.Fatal(err)
	}
	wantMethod := "counter"
	if withPower {
		wantMethod = "calibrated sim"
	}
	if res.Cycles[0].Method != wantMethod {
		t.Fatalf("method %q, want %q", res.Cycles[0].Method, wantMethod)
	}
	if len(res.Cycles) != 2 || !res.Simulated || res.Quality != QualityOK {
		t.Fatalf("%d cycles, simulated %v, quality %s", len(res.Cycles), res.Simulated, res.Quality)
	}
	for i, d := range devs {
		want := (truth[i][3] - truth[i][1]) / 2
		if math.Abs(res.BaselineW[d]-want) > 0.01 {
			t.Errorf("baseline %s: %.3f W, want %.3f W", d, res.BaselineW[d], want)
		}
	}
	for ci, c := range res.Cycles {
		from, to := 3+6*ci, 7+6*ci
		want := truth[0][to] - truth[0][from] + truth[1][to] - truth[1][from]
		if math.Abs(c.EnergyJ-want) > 1e-3 {
			t.Errorf("cycle %d: %.4f J, truth %.4f J", ci, c.EnergyJ, want)
		}
		if c.OutputTokens != 101 || c.Requests != 2 || c.Failed != 1 {
			t.Errorf("cycle %d counts: %+v", ci, c)
		}
		if math.Abs(c.JPerToken-want/101) > 1e-6 || math.Abs(c.JPerRequest-want) > 1e-3 {
			t.Errorf("cycle %d: J/token %.5f J/req %.3f", ci, c.JPerToken, c.JPerRequest)
		}
		if c.TTFTp50 != 100 || c.ITLp50 != 10 || c.TPOTp50 != 10 || c.E2Ep50 != 1100 {
			t.Errorf("cycle %d latencies: ttft %v itl %v tpot %v e2e %v", ci, c.TTFTp50, c.ITLp50, c.TPOTp50, c.E2Ep50)
		}
		static := (res.BaselineW[devs[0]] + res.BaselineW[devs[1]]) * 4
		if math.Abs(c.StaticJ-static) > 1e-6 || math.Abs(c.DynamicJ-(c.EnergyJ-static)) > 1e-6 {
			t.Errorf("cycle %d static/dynamic: %+v", ci, c)
		}
		if math.Abs(c.SystematicJ-0.05*c.EnergyJ) > 1e-9 {
			t.Errorf("systematic %v", c.SystematicJ)
		}
	}
	if withPower {
		var reqSum float64
		for _, r := range res.Requests {
			reqSum += r.TotalJ()
		}
		var unattr float64
		for ci, c := range res.Cycles {
			if d := c.PrefillJ + c.DecodeJ + c.UnattributedJ - c.EnergyJ; math.Abs(d) > 1e-6 {
				t.Errorf("cycle %d: prefill %.3f + decode %.3f + unattributed %.3f != energy %.3f", ci, c.PrefillJ, c.DecodeJ, c.UnattributedJ, c.EnergyJ)
			}
			unattr += c.UnattributedJ
		}
		if d := reqSum + unattr - (res.Cycles[0].EnergyJ + res.Cycles[1].EnergyJ); math.Abs(d) > 1e-6 {
			t.Errorf("requests %.3f + unattributed %.3f do not add up to the cycles' energy", reqSum, unattr)
		}
	} else if !math.IsNaN(res.Cycles[0].PrefillJ) {
		t.Error("attribution claimed without a power series")
	}
	e := res.Summary["energy_j"]
	if e.N != 2 || math.Abs(e.Mean-(res.Cycles[0].EnergyJ+res.Cycles[1].EnergyJ)/2) > 1e-9 {
		t.Errorf("summary %+v", e)
	}
	// The prefill/decode legend only where the table has those columns.
	var b strings.Builder
	PrintRun(&b, res)
	if got := strings.Contains(b.String(), "prefill + decode + unattr = energy"); got != withPower {
		t.Errorf("attribution legend printed %v, attribution %v:\n%s", got, withPower, b.String())
	}
	// The stored run quality is the label as printed (simulated included).
	stored := ResultTables(res, 1)[0].Column("quality").Data().([]string)
	if q := stored[0]; q != res.Label() || !strings.Contains(q, "simulated") {
		t.Errorf("stored quality %q, printed %q", q, res.Label())
	}
}

// spanStore is a memStore that records the widest span read at once.
type spanStore struct {
	*memStore
	widest int64
}

func (s *spanStore) PowerBySource(ctx context.Context, uuid string, from, to int64) (map[string][]schemas.PowerSample, error) {
	s.widest = max(s.widest, to-from)
	return s.memStore.PowerBySource(ctx, uuid, from, to)
}

// A run analysed a span of cycles at a time (LoadSpan) gives the same
// figures as one read whole, and never holds more than a span (plus the
// margins) of the devices' series at once.
func TestLoadSpansAgree(t *testing.T) {
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	sec := func(k int) int64 { return t0 + int64(k)*1e9 }
	s := sim.New(sim.Config{Devices: 2, Seed: 9, Load: func(d int, ts int64) float64 {
		return 0.3 + 0.3*math.Sin(float64(ts-t0)/3e9+float64(d))
	}}, start)
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	var devs []string
	for i, d := range s.Devices() {
		devs = append(devs, d.UUID)
		for k := 1; k <= 200; k++ {
			pb, eb := s.Advance(i, sec(k))
			m.power[d.UUID] = append(m.power[d.UUID], pb.Samples...)
			for _, e := range eb.Readings {
				m.energy[d.UUID] = append(m.energy[d.UUID], Reading{EnergyReading: e, Source: "sim"})
			}
		}
	}
	ev := func(c uint32, p schemas.RunPhase, ts int64) schemas.RunEvent {
		return schemas.RunEvent{RunID: "r", Backend: "synthetic", Cycle: c, Phase: p, TS: ts, Devices: devs}
	}
	m.runs = []schemas.RunEvent{ev(0, schemas.RunStart, sec(1)), ev(0, schemas.RunBaseline, sec(5))}
	for c := 0; c < 4; c++ {
		a := sec(10 + 45*c)
		m.runs = append(m.runs, ev(uint32(c), schemas.RunStart, a), ev(uint32(c), schemas.RunEnd, a+20e9))
		for r := 0; r < 5; r++ {
			q := schemas.Request{ID: fmt.Sprintf("c%d-%d", c, r), Cycle: uint32(c), Scheduled: a + int64(r)*3e9, Sent: a + int64(r)*3e9,
				FirstToken: a + int64(r)*3e9 + 2e8, LastToken: a + int64(r)*3e9 + 4e9, Done: a + int64(r)*3e9 + 4e9,
				PromptTokens: 100, OutputTokens: 50, Status: schemas.StatusOK}
			m.requests = append(m.requests, q)
		}
	}
	analyze := func(span int64) (*RunResult, int64) {
		defer func(v int64) { LoadSpan = v }(LoadSpan)
		LoadSpan = span
		st := &spanStore{memStore: m}
		r, err := AnalyzeRun(context.Background(), st, "r")
		if err != nil {
			t.Fatal(err)
		}
		return r, st.widest
	}
	whole, wideWhole := analyze(LoadSpan)
	split, wideSplit := analyze(1) // each cycle, and the baseline, alone
	if wideWhole < 180e9 {
		t.Fatalf("the whole run was read in spans of %v: the test proves nothing", time.Duration(wideWhole))
	}
	if want := int64(20e9 + 2*loadMargin); wideSplit > want {
		t.Errorf("analysed a cycle at a time, it read %v at once (want ≤ %v)", time.Duration(wideSplit), time.Duration(want))
	}
	near := func(what string, a, b float64) {
		t.Helper()
		if !(math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), 1)) && !(math.IsNaN(a) && math.IsNaN(b)) {
			t.Errorf("%s: %v whole, %v a span at a time", what, a, b)
		}
	}
	for _, d := range devs {
		near("baseline "+d, whole.BaselineW[d], split.BaselineW[d])
	}
	if len(whole.Cycles) != 4 || len(split.Cycles) != 4 {
		t.Fatalf("%d and %d cycles, want 4", len(whole.Cycles), len(split.Cycles))
	}
	for i, c := range whole.Cycles {
		o := split.Cycles[i]
		near(fmt.Sprintf("cycle %d energy", i), c.EnergyJ, o.EnergyJ)
		near(fmt.Sprintf("cycle %d dynamic", i), c.DynamicJ, o.DynamicJ)
		near(fmt.Sprintf("cycle %d prefill", i), c.PrefillJ, o.PrefillJ)
		near(fmt.Sprintf("cycle %d decode", i), c.DecodeJ, o.DecodeJ)
		near(fmt.Sprintf("cycle %d uncertainty", i), c.DynamicUncJ, o.DynamicUncJ)
		if c.Quality != o.Quality {
			t.Errorf("cycle %d: quality %s whole, %s a span at a time", i, c.Quality, o.Quality)
		}
		if math.IsNaN(c.EnergyJ) || c.Quality != QualityOK {
			t.Errorf("cycle %d: %v J, %s: the test proves nothing", i, c.EnergyJ, c.Quality)
		}
	}
	if len(whole.Requests) != len(split.Requests) || len(whole.Requests) != 20 {
		t.Fatalf("%d and %d request energies, want 20", len(whole.Requests), len(split.Requests))
	}
	for i, r := range whole.Requests {
		near("request "+r.ID, r.TotalJ(), split.Requests[i].TotalJ())
	}
	if whole.Correlation == nil || split.Correlation == nil {
		t.Fatalf("correlation %v / %v", whole.Correlation, split.Correlation)
	}
	for k, v := range whole.Correlation.Pearson {
		near("pearson "+k, v, split.Correlation.Pearson[k])
	}
	near("lag", whole.Correlation.LagMS, split.Correlation.LagMS)
}
