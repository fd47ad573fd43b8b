package analytics

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// TestNoSilentZeros: a run whose power recording stops before its last two
// cycles. Those cycles have no energy — NaN, flagged no_power, never 0 J
// with an infinite tokens/J — and are left out of the means, which say so;
// validate-power's counter figure for the same windows is NaN with the
// same flag. With the counter only, and with the power series too.
func TestNoSilentZeros(t *testing.T) {
	start := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Devices: 1, Seed: 3}, start)
	dev := s.Devices()[0].UUID
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	var samples []schemas.PowerSample
	for sec := 1; sec <= 12; sec++ { // the recording ends at 12 s
		pb, eb := s.Advance(0, t0+int64(sec)*1e9)
		samples = append(samples, pb.Samples...)
		for _, e := range eb.Readings {
			m.energy[dev] = append(m.energy[dev], Reading{EnergyReading: e, Source: schemas.SourceSim})
		}
	}
	sec := func(k float64) int64 { return t0 + int64(k*1e9) }
	ev := func(c uint32, p schemas.RunPhase, ts int64) schemas.RunEvent {
		return schemas.RunEvent{RunID: "r", Cycle: c, Phase: p, TS: ts, Devices: []string{dev}}
	}
	m.runs = []schemas.RunEvent{ev(0, schemas.RunStart, sec(1)), ev(0, schemas.RunBaseline, sec(3))}
	for c := uint32(0); c < 4; c++ { // cycles at 3-6, 7-10, 13-16 and 17-20 s
		from := sec(3 + 4*float64(c) + float64(c/2)*2)
		m.runs = append(m.runs, ev(c, schemas.RunStart, from), ev(c, schemas.RunEnd, from+3e9))
		m.requests = append(m.requests, schemas.Request{ID: string(rune('a' + c)), Cycle: c, Sent: from, FirstToken: from + 1e8,
			LastToken: from + 2e9, Done: from + 2e9, OutputTokens: 50, Status: schemas.StatusOK})
	}
	for _, withSeries := range []bool{false, true} {
		m.power = map[string][]schemas.PowerSample{}
		if withSeries {
			m.power[dev] = samples
		}
		res, err := AnalyzeRun(context.Background(), m, "r")
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range res.Cycles {
			if i < 2 {
				if math.IsNaN(c.EnergyJ) || c.EnergyJ <= 0 {
					t.Errorf("series %v cycle %d: covered, energy %v", withSeries, i, c.EnergyJ)
				}
				continue
			}
			if !math.IsNaN(c.EnergyJ) || !math.IsNaN(c.JPerToken) || !math.IsNaN(c.TokensPerJ) || !math.IsNaN(c.DynamicJ) {
				t.Errorf("series %v cycle %d after the recording: energy %v J, J/token %v, tokens/J %v, dynamic %v; want NaN",
					withSeries, i, c.EnergyJ, c.JPerToken, c.TokensPerJ, c.DynamicJ)
			}
			if c.Quality != QualityNoPower {
				t.Errorf("series %v cycle %d: quality %s, want %s", withSeries, i, c.Quality, QualityNoPower)
			}
		}
		if st := res.Summary["energy_j"]; st.N != 2 || math.IsNaN(st.Mean) {
			t.Errorf("series %v: energy mean over %d cycles (%v), want the 2 with energy", withSeries, st.N, st.Mean)
		}
		var b strings.Builder
		PrintRun(&b, res)
		if !strings.Contains(b.String(), "left out of the means: cycles 2, 3 (no_power)") {
			t.Errorf("series %v: the exclusion is not stated:\n%s", withSeries, b.String())
		}
		for _, line := range strings.Split(b.String(), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && (f[0] == "2" || f[0] == "3" || f[0] == "energy_j" || f[0] == "j_per_token" || f[0] == "tokens_per_j") &&
				(strings.Contains(line, "NaN") || strings.Contains(line, "Inf")) {
				t.Errorf("series %v: NaN or Inf printed for a figure without energy: %q", withSeries, line)
			}
		}
	}
	// validate-power's counter figure: the same judgement.
	w := WindowEnergy(m.energy[dev], sec(13), sec(16))
	if !math.IsNaN(w.Joules) || w.Quality != QualityNoPower {
		t.Errorf("counter window after the recording: %v J, %s", w.Joules, w.Quality)
	}
	// Within MaxExtrapolation of the last reading: extended and flagged.
	w = WindowEnergy(m.energy[dev], sec(10), sec(12.3))
	if math.IsNaN(w.Joules) || w.Quality != QualityGaps {
		t.Errorf("window 0.3 s past the last reading: %v J, %s; want extended, gaps", w.Joules, w.Quality)
	}
	w = WindowEnergy(m.energy[dev], sec(10), sec(13))
	if !math.IsNaN(w.Joules) || w.Quality != QualityGaps {
		t.Errorf("window 1 s past the last reading: %v J, %s; want unknown, gaps", w.Joules, w.Quality)
	}
}

func TestWindowCoverage(t *testing.T) {
	rs := []Reading{{EnergyReading: schemas.EnergyReading{TSBefore: 1e9}}, {EnergyReading: schemas.EnergyReading{TSBefore: 3e9, Energy: 1}}}
	ps := []schemas.PowerSample{{TS: 2.5e9}, {TS: 2.52e9}, {TS: 3.5e9}}
	c := WindowCoverage(rs, ps, 60e6, 2e9, 4e9)
	// Counter 2–3 s; samples 2.5–2.52, 2.52–2.58 and 3.5–3.56 s.
	if c.Counter != 0.5 || math.Abs(c.Series-0.07) > 1e-9 || c.Unknown != 940e6 {
		t.Fatalf("%+v", c)
	}
	if known, q := c.Known(); known || q != QualityGaps {
		t.Fatalf("known %v %s", known, q)
	}
	if known, q := WindowCoverage(nil, nil, 60e6, 2e9, 4e9).Known(); known || q != QualityNoPower {
		t.Fatalf("empty: known %v %s", known, q)
	}
}

// TestValidatePowerJudgesTheBuffer: validate-power flags a phase whose
// buffer stops 114 ms before its end, as analyze does (it said ok), and
// reports no energy for a phase after the recording.
func TestValidatePowerJudgesTheBuffer(t *testing.T) {
	start := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Devices: 1, Seed: 4}, start)
	en := schemas.NewRows(schemas.KindEnergy)
	pw := schemas.NewRows(schemas.KindPower)
	for sec := 1; sec <= 10; sec++ {
		pb, eb := s.Advance(0, t0+int64(sec)*1e9)
		eb.Origin.Source, pb.Origin.Source = schemas.SourceNVMLCounter, schemas.SourceNVMLBuffer
		en.Append(eb, schemas.Position{Epoch: 1, Seq: uint64(sec)})
		// The buffer stops at 8.886 s; the counter runs on to 10 s.
		var keep []schemas.PowerSample
		for _, p := range pb.Samples {
			if p.TS < t0+8_886_000_000 {
				keep = append(keep, p)
			}
		}
		pb.Samples = keep
		if len(keep) > 0 {
			pw.Append(pb, schemas.Position{Epoch: 1, Seq: uint64(sec)})
		}
	}
	st := store.Parquet(t.TempDir())
	for _, tb := range []*schemas.Table{en.Table(), pw.Table()} {
		if err := st.Write(context.Background(), tb); err != nil {
			t.Fatal(err)
		}
	}
	phases := []Phase{{Name: "full", From: t0 + 2e9, To: t0 + 5e9}, {Name: "short", From: t0 + 6e9, To: t0 + 9e9},
		{Name: "after", From: t0 + 12e9, To: t0 + 14e9}}
	cs, err := ComparePhases(context.Background(), st, nil, phases)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]PhaseCheck{}
	for _, c := range cs {
		got[c.Phase.Name] = c
	}
	if q := got["full"].Quality; q != QualityOK {
		t.Errorf("covered phase: %s", q)
	}
	if q := got["short"].Quality; q != QualityGaps {
		t.Errorf("phase whose buffer stops 114 ms early: %s, want gaps", q)
	}
	if c := got["after"]; !math.IsNaN(c.CounterJ) || c.Quality != QualityNoPower {
		t.Errorf("phase after the recording: %v J, %s", c.CounterJ, c.Quality)
	}
}

// TestLatencyOnlyRun: a run measured without any power collector
// (collectors.gpu: none) has latency figures and no energy — every energy
// field NaN, flagged no_power — instead of a panic.
func TestLatencyOnlyRun(t *testing.T) {
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	for c := uint32(0); c < 3; c++ {
		from := int64(c+1) * 10e9
		m.runs = append(m.runs, schemas.RunEvent{RunID: "r", Cycle: c, Phase: schemas.RunStart, TS: from},
			schemas.RunEvent{RunID: "r", Cycle: c, Phase: schemas.RunEnd, TS: from + 5e9})
		m.requests = append(m.requests, schemas.Request{ID: string(rune('a' + c)), Cycle: c, Sent: from, FirstToken: from + 2e8,
			LastToken: from + 4e9, Done: from + 4e9, OutputTokens: 40, Status: schemas.StatusOK})
	}
	r, err := AnalyzeRun(context.Background(), m, "r")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Cycles {
		if !math.IsNaN(c.EnergyJ) || !math.IsNaN(c.DynamicJ) || !math.IsNaN(c.JPerToken) || c.Quality != QualityNoPower || c.TTFTp50 != 200 {
			t.Errorf("cycle %d: energy %v dynamic %v J/token %v quality %s TTFT %v", c.Cycle, c.EnergyJ, c.DynamicJ, c.JPerToken, c.Quality, c.TTFTp50)
		}
	}
	if r.Summary["ttft_p50_ms"].N != 3 || r.Summary["energy_j"].N != 0 {
		t.Errorf("summary: ttft n=%d, energy n=%d", r.Summary["ttft_p50_ms"].N, r.Summary["energy_j"].N)
	}
	var b strings.Builder
	PrintRun(&b, r)
}

// TestNodeEnergyFromRAPL: where RAPL domains of the run's host are in the
// store, each cycle gets CPU package and DRAM energy (cores are inside the
// package and not added again), printed beside the GPU's; without them the
// run says they were not collected.
func TestNodeEnergyFromRAPL(t *testing.T) {
	const s = int64(1e9)
	t0 := int64(1_900_000_000) * s
	st := store.Parquet(t.TempDir())
	ctx := context.Background()
	runs := schemas.NewRows(schemas.KindRun)
	for i, ev := range []schemas.RunEvent{
		{RunID: "r", Phase: schemas.RunStart, TS: t0 + 1*s, Host: "h1", Devices: []string{"GPU-a"}},
		{RunID: "r", Phase: schemas.RunBaseline, TS: t0 + 3*s, Host: "h1", Devices: []string{"GPU-a"}},
		{RunID: "r", Phase: schemas.RunStart, TS: t0 + 5*s, Host: "h1", Devices: []string{"GPU-a"}},
		{RunID: "r", Phase: schemas.RunEnd, TS: t0 + 15*s, Host: "h1", Devices: []string{"GPU-a"}},
		{RunID: "r2", Phase: schemas.RunStart, TS: t0 + 5*s, Host: "h2", Devices: []string{"GPU-a"}},
		{RunID: "r2", Phase: schemas.RunEnd, TS: t0 + 15*s, Host: "h2", Devices: []string{"GPU-a"}},
	} {
		runs.Append(&ev, schemas.Position{Epoch: 1, Seq: uint64(i + 1)})
	}
	en := schemas.NewRows(schemas.KindEnergy)
	devs := schemas.NewDeviceRows()
	counter := func(source, uuid, name string, watts float64, period int64, seq uint64) {
		host := strings.Split(uuid+":h1", ":")[1]
		if source != schemas.SourceRAPL {
			host = "h1"
		}
		b := &schemas.EnergyBatch{Origin: schemas.Origin{Host: host, Source: source}, Device: schemas.Device{UUID: uuid, Name: name}}
		for ts := t0; ts <= t0+20*s; ts += period {
			b.Readings = append(b.Readings, schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(watts * float64(ts-t0) / 1e3)})
		}
		en.Append(b, schemas.Position{Epoch: 1, Seq: seq})
		devs.Add(&b.Origin, &b.Device, t0)
	}
	counter(schemas.SourceNVMLCounter, "GPU-a", "H200", 300, 100e6, 1)
	counter(schemas.SourceRAPL, "rapl:h1:intel-rapl:0", "RAPL package-0", 50, s, 2)
	counter(schemas.SourceRAPL, "rapl:h1:intel-rapl:0:0", "RAPL core", 30, s, 3)
	counter(schemas.SourceRAPL, "rapl:h1:intel-rapl:0:1", "RAPL dram", 5, s, 4)
	counter(schemas.SourceRAPL, "rapl:h2:intel-rapl:0", "RAPL package-0", 999, s, 5) // another host
	for _, tb := range []*schemas.Table{runs.Table(), en.Table(), devs.Table()} {
		if err := st.Write(ctx, tb); err != nil {
			t.Fatal(err)
		}
	}
	r, err := AnalyzeRun(ctx, st, "r")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node == nil || len(r.Node.Domains) != 2 || len(r.Node.Cycles) != 1 {
		t.Fatalf("node energy %+v", r.Node)
	}
	c := r.Node.Cycles[0]
	if math.Abs(c.PackageJ-500) > 1e-6 || math.Abs(c.DRAMJ-50) > 1e-6 || c.Quality != QualityOK {
		t.Errorf("cycle: package %v J, DRAM %v J (want 500 and 50), %s", c.PackageJ, c.DRAMJ, c.Quality)
	}
	var b strings.Builder
	PrintRun(&b, r)
	if !strings.Contains(b.String(), "CPU package 500.0 J, DRAM 50.0 J") {
		t.Errorf("not printed:\n%s", b.String())
	}
	// Stored with the results (cycle_results), and read back from the
	// store: per cycle, and per output token.
	if err := st.WriteResults(ctx, "r", ResultTables(r, 1)); err != nil {
		t.Fatal(err)
	}
	cr := schemas.NewCycleResultRows()
	if err := st.ReadTable(ctx, cr.Table(), schemas.Filter{RunIDs: []string{"r"}}); err != nil || len(cr.CPUPackageJ.V) != 1 {
		t.Fatalf("cycle_results: %v, %d rows", err, len(cr.CPUPackageJ.V))
	}
	per := 550 / float64(r.Cycles[0].OutputTokens)
	if r.Cycles[0].OutputTokens == 0 {
		per = math.NaN()
	}
	if cr.CPUPackageJ.V[0] != 500 || cr.DRAMJ.V[0] != 50 || !(cr.CPUDRAMUncJ.V[0] > 0) || !sameFloat(cr.CPUDRAMJPerToken.V[0], per) {
		t.Errorf("stored node energy: package %v, DRAM %v, ±%v, per token %v (want %v)", cr.CPUPackageJ.V[0], cr.DRAMJ.V[0], cr.CPUDRAMUncJ.V[0], cr.CPUDRAMJPerToken.V[0], per)
	}
	// Without RAPL the stored figures are unknown (NULL), never 0.
	noNode := *r
	noNode.Node = nil
	if tb := ResultTables(&noNode, 1)[1]; !math.IsNaN(tb.Column("cpu_package_j").(*schemas.Col[float64]).V[0]) {
		t.Error("a run without RAPL stores a CPU package energy")
	}
	// A host without a DRAM domain: DRAM unknown, not 0 J.
	r2, err := AnalyzeRun(ctx, st, "r2")
	if err != nil {
		t.Fatal(err)
	}
	if r2.Node == nil || len(r2.Node.Cycles) != 1 {
		t.Fatalf("node energy of h2 %+v", r2.Node)
	}
	if c := r2.Node.Cycles[0]; math.Abs(c.PackageJ-9990) > 1e-6 || !math.IsNaN(c.DRAMJ) {
		t.Errorf("h2 cycle: package %v J (want 9990), DRAM %v J (want NaN: no DRAM domain)", c.PackageJ, c.DRAMJ)
	}
	b.Reset()
	PrintRun(&b, r2)
	if !strings.Contains(b.String(), "CPU package 9990.0 J, DRAM — J") {
		t.Errorf("h2 not printed as DRAM unknown:\n%s", b.String())
	}
	// Without RAPL: said, not silently left out.
	r.Node = nil
	b.Reset()
	PrintRun(&b, r)
	if !strings.Contains(b.String(), "CPU/DRAM energy: not collected") {
		t.Errorf("absence not stated:\n%s", b.String())
	}
}

// TestCounterAtItsLongestPeriod: readings 10.005 s apart (the collector's
// longest period plus a late read) still bracket a window between them:
// no false gaps.
func TestCounterAtItsLongestPeriod(t *testing.T) {
	var rs []Reading
	var ps []schemas.PowerSample
	for k := int64(0); k < 4; k++ {
		ts := k * 10_005e6
		rs = append(rs, Reading{EnergyReading: schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(ts / 1000 * 200)}, Source: "trace.counter-change"})
	}
	for ts := int64(0); ts < 31e9; ts += 20e6 {
		ps = append(ps, schemas.PowerSample{TS: ts, Power: 200_000})
	}
	if q := calibratedQuality(rs, ps, 60e6, 10_004e6+1, 20_006e6-1); q != QualityOK {
		t.Fatalf("window between readings 10.005 s apart: %s", q)
	}
}

// sameFloat: equal, or both NaN.
func sameFloat(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
