package analytics

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// readCSV returns a CSV file's records after its header row.
func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	return recs[1:]
}

func readPhasesCSV(t *testing.T, path string) []Phase {
	t.Helper()
	var out []Phase
	for _, r := range readCSV(t, path) {
		a, _ := strconv.ParseInt(r[1], 10, 64)
		b, _ := strconv.ParseInt(r[2], 10, 64)
		out = append(out, Phase{Name: r[0], From: a, To: b})
	}
	return out
}

// On the committed H200 runs (docs/validation/h200-run7, -run8: agent A
// reads the counter at every refresh, aligned), with phase edges snapped
// to the counter's refreshes the counter is exact, and the driver buffer
// on its time base (BufferLead) meets it within ±1.2% on every phase but
// the 10 Hz on/off load, which the buffer aliases; the fitted residual
// shift is within ±10 ms; and the production agent calibrated at a 1 s
// aligned cadence (run8 C) stays within ±2% everywhere.
func TestH200RunsBufferMeetsAlignedCounter(t *testing.T) {
	for _, run := range []string{"h200-run7", "h200-run8"} {
		t.Run(run, func(t *testing.T) {
			base := filepath.Join("..", "docs", "validation", run)
			dir := testenv.Untar(t, filepath.Join(base, "stores.tgz"))
			phases := readPhasesCSV(t, filepath.Join(base, "phases.csv"))
			ctx := context.Background()
			a := store.Parquet(filepath.Join(dir, "storeA"))
			cs, err := ComparePhases(ctx, a, nil, phases)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != len(phases) {
				t.Fatalf("%d checks for %d phases", len(cs), len(phases))
			}
			for _, c := range cs {
				rel := (c.SeriesJ["nvml.buffer"] - c.CounterJ) / c.CounterJ
				t.Logf("%-16s counter %7.1f ±%4.1f J  buffer %+.2f%%", c.Phase.Name, c.CounterJ, c.EdgeUncJ, 100*rel)
				if !c.Snapped || c.EdgeUncJ > 16 {
					t.Errorf("%s: snapped %v, edge ±%.1f J", c.Phase.Name, c.Snapped, c.EdgeUncJ)
				}
				if c.Phase.Name != "onoff_10hz" && math.Abs(rel) > 0.012 {
					t.Errorf("%s: buffer %+.2f%% off the exact counter", c.Phase.Name, 100*rel)
				}
			}
			dev := cs[0].Device
			rs, _ := a.Energy(ctx, dev, 0, math.MaxInt64)
			ps, _, _ := Power(ctx, a, dev, 0, math.MaxInt64)
			fit := FitCounterDelay(rs, ps, 60e6)
			if fit.Intervals < 300 || fit.Delay < -10e6 || fit.Delay > 10e6 {
				t.Errorf("residual buffer shift %d ms over %d intervals, want within ±10 ms of BufferLead", fit.Delay/1e6, fit.Intervals)
			}
			// Three agents read the same driver buffer independently: each
			// captured every sample another one saw (stamps matched within
			// 200 µs: the driver's µs stamps differ by up to ~80 µs between
			// processes), none fell behind.
			var sets [][]int64
			lo, hi := int64(0), int64(math.MaxInt64)
			for _, st := range []string{"storeA", "storeB", "storeC"} {
				ps, _, err := Power(ctx, store.Parquet(filepath.Join(dir, st)), dev, 0, math.MaxInt64)
				if err != nil || len(ps) < 3000 {
					t.Fatalf("%s: %d samples, %v", st, len(ps), err)
				}
				var ts []int64
				for _, p := range ps {
					ts = append(ts, p.TS)
				}
				lo, hi = max(lo, ts[0]+1e9), min(hi, ts[len(ts)-1]-1e9)
				sets = append(sets, ts)
			}
			for i, s := range sets {
				for j, o := range sets {
					for _, ts := range o {
						k := sort.Search(len(s), func(k int) bool { return s[k] >= ts-200e3 })
						if i != j && ts >= lo && ts <= hi && (k == len(s) || s[k] > ts+200e3) {
							t.Fatalf("agent %d missed the sample at %d that agent %d captured", i, ts, j)
						}
					}
				}
			}
			if run != "h200-run8" {
				return
			}
			cc, err := ComparePhases(ctx, store.Parquet(filepath.Join(dir, "storeC")), a, phases)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cc {
				if rel := (c.CalibratedJ - c.CounterJ) / c.CounterJ; math.Abs(rel) > 0.02 {
					t.Errorf("%s: 1 s aligned production calibrated %+.2f%%", c.Phase.Name, 100*rel)
				}
			}
		})
	}
}

// AlignSeries recovers a known shift of a series with load steps against
// an aligned counter, and leaves steady power alone.
func TestAlignSeriesRecoversShift(t *testing.T) {
	const t0 = int64(1_795_757_000_000_000_000)
	power := func(t int64) float64 { // 1 s on at 600 W, 1 s off at 100 W
		if ((t-t0)/1e9)%2 == 0 {
			return 600
		}
		return 100
	}
	var ps []schemas.PowerSample
	var rs []Reading
	e := 0.0
	for t := t0; t < t0+30e9; t += 20e6 {
		// The series reports each period 35 ms late.
		ps = append(ps, schemas.PowerSample{TS: t + 35e6, Power: schemas.PowerFromWatts(power(t))})
		if (t-t0)%300e6 == 0 {
			rs = append(rs, Reading{EnergyReading: schemas.EnergyReading{TSBefore: t - 1e6, TSAfter: t + 1e6, Energy: schemas.Energy(e * 1e6)},
				Source: "nvml.counter.aligned"})
		}
		e += power(t) * 0.02
	}
	out, fit, ok := AlignSeries(rs, ps, 60e6)
	if !ok || fit.Delay != -35e6 || out[0].TS != ps[0].TS-35e6 {
		t.Fatalf("fit %+v applied %v", fit, ok)
	}
	flat := make([]schemas.PowerSample, len(ps))
	for i := range ps {
		flat[i] = schemas.PowerSample{TS: ps[i].TS, Power: 300_000}
	}
	if _, fit, ok := AlignSeries(rs, flat, 60e6); ok {
		t.Fatalf("shift %d ms applied to steady power", fit.Delay/1e6)
	}
	rs[0].Source = "nvml.counter"
	if _, _, ok := AlignSeries(rs, ps, 60e6); ok {
		t.Fatal("shift applied against a plain counter, whose stamps are ±50 ms")
	}
}

// TestCalibrationOnH200Phases: the production agents of the committed
// H200 recordings (run7: B aligned, C plain; run8: B aligned, C aligned at
// a 1.5% budget; run9, recorded after CalibrationRoughness was chosen: B
// aligned, the default, C aligned at 0.3%, D plain), each calibrated on
// its own counter as analyze does, against the exact counter of agent A
// on every phase (2–6 s: idle, a matmul burst, a 10 Hz on/off load,
// prefill and decode passes). Spread in proportion to the samples, an
// interval's correction put an aliased phase's deficit onto the 2 s idle
// after it: up to 2.70% (aligned) and 3.70% (plain) off. Spread by
// roughness, the worst phase is 1.95% (aligned: the idle after the matmul
// burst of run9, where the buffer itself reads +2.1% — its falling edge
// placed late, inside one counter interval, which no calibration moves)
// and 1.13% (plain); the stated interval covers the exact counter on every
// phase. `go test ./analytics -run CalibrationOnH200Phases -v`
// prints the table of docs/methodology.md ("Calibration").
func TestCalibrationOnH200Phases(t *testing.T) {
	ctx := context.Background()
	worst := map[string]float64{}
	within := map[string][2]int{}
	for _, run := range []string{"h200-run7", "h200-run8", "h200-run9"} {
		base := filepath.Join("..", "docs", "validation", run)
		dir := testenv.Untar(t, filepath.Join(base, "stores.tgz"))
		phases := readPhasesCSV(t, filepath.Join(base, "phases.csv"))
		a := store.Parquet(filepath.Join(dir, "storeA"))
		for _, agent := range []string{"B", "C", "D"} {
			if _, err := os.Stat(filepath.Join(dir, "store"+agent)); err != nil {
				continue
			}
			prod := store.Parquet(filepath.Join(dir, "store"+agent))
			cs, err := ComparePhases(ctx, prod, a, phases)
			if err != nil || len(cs) != len(phases) {
				t.Fatalf("%s %s: %d checks, %v", run, agent, len(cs), err)
			}
			rs, err := prod.Energy(ctx, cs[0].Device, 0, math.MaxInt64)
			if err != nil || len(rs) == 0 {
				t.Fatalf("%s %s: counter %v", run, agent, err)
			}
			mode := "plain"
			if sensor, _ := SplitSource(rs[0].Source); sensor == schemas.SourceNVMLCounterAligned {
				mode = "aligned"
			}
			line := run + " " + agent + " (" + mode + "):"
			for _, c := range cs {
				rel := (c.CalibratedJ - c.CounterJ) / c.CounterJ
				line += " " + c.Phase.Name + " " + strconv.FormatFloat(100*rel, 'f', 2, 64) + "%"
				worst[mode] = max(worst[mode], math.Abs(rel))
				w := within[mode]
				w[1]++
				if math.Abs(rel) <= 0.01 {
					w[0]++
				}
				within[mode] = w
				if c.Phase.To-c.Phase.From < 19e8 {
					t.Fatalf("%s: a phase of %d ms", c.Phase.Name, (c.Phase.To-c.Phase.From)/1e6)
				}
				if !c.Covered {
					t.Errorf("%s %s %s: %.1f J ± %.1f does not cover the exact %.1f J", run, agent, c.Phase.Name, c.CalibratedJ, c.CalibratedUncJ, c.CounterJ)
				}
			}
			t.Log(line)
		}
	}
	t.Logf("worst: aligned %.2f%% (%d of %d phases within 1%%), plain %.2f%% (%d of %d)", 100*worst["aligned"], within["aligned"][0], within["aligned"][1],
		100*worst["plain"], within["plain"][0], within["plain"][1])
	if worst["aligned"] > 0.02 || worst["plain"] > 0.0125 {
		t.Errorf("calibrated energy off the exact counter by up to %.2f%% (aligned) and %.2f%% (plain): want within 2%% and 1.25%%", 100*worst["aligned"], 100*worst["plain"])
	}
}
