package analytics

import (
	"context"
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
