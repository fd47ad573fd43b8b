package analytics

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// coverageBins are the window lengths the coverage test reports, in s.
var coverageBins = []float64{0.2, 0.5, 1, 2, 5, 10, 20}

// cadence is one production way of reading the counter.
type cadence struct {
	name      string
	period    int64   // ns between reads
	irregular float64 // each period drawn within ±this share of it
	aligned   bool    // reads just after a refresh (nvml.counter.aligned)
}

// coverageCadences: plain reads (the agent's default until 2026-11-29) on a regular 1 s
// ticker, at irregular ~2.2 s (the spacing inside `lem run` on the H200:
// p50 2.16–2.30 s, max 3.3–4.5 s) and irregular ~5 s, and aligned reads
// at 1 s.
var coverageCadences = []cadence{{"plain 1 s, regular", 1e9, 0, false}, {"plain ~2.2 s, irregular", 2.2e9, 0.3, false},
	{"plain ~5 s, irregular", 5e9, 0.3, false}, {"aligned 1 s", 1e9, 0, true}}

// production subsamples the full-resolution counter full (a reading at
// every refresh, stamped just after it) as the collector reads it at a
// cadence starting at phase: a plain read at r returns the last refresh
// before r and is stamped r (its source says so, so analytics shifts it by
// CounterLag); an aligned read is the first refresh after each grid point.
func production(full []Reading, c cadence, phase int64, rng *rand.Rand) []Reading {
	var out []Reading
	t0, t1 := full[0].TSBefore, full[len(full)-1].TSBefore
	step := func() int64 {
		return c.period + int64(float64(c.period)*c.irregular*(2*rng.Float64()-1))
	}
	for r := t0 + phase; r <= t1; r += step() {
		i := sort.Search(len(full), func(i int) bool { return full[i].TSBefore > r })
		if c.aligned {
			if i == len(full) {
				break
			}
			out = append(out, full[i])
			continue
		}
		if i == 0 {
			continue
		}
		rd := full[i-1]
		rd.TSBefore, rd.TSAfter = r, r+3e6 // a plain call takes ~3 ms
		rd.Source = schemas.SourceNVMLCounter
		out = append(out, rd)
	}
	return out
}

// coverageResult is one bin's tally.
type coverageResult struct {
	n, covered     int
	sumErr, sumUnc float64 // J
	sumRelUnc      float64
	relErr         []float64
}

// TestIntervalsCoverTheTruth: from the real H200 recordings in
// docs/validation (a counter read at every 100 ms refresh, and the 20 ms
// buffer), thousands of random windows of 0.2–20 s, the counter subsampled
// to each production cadence at many grid offsets, each window's energy ±
// its stated interval (EdgeUncJ: counter timing and sample edges; the ±5%
// sensor gain is systematic and separate) against the full-resolution
// counter: the interval covers the truth in at least 95% of the windows of
// every length bin, and is on average no more than 3× the error — the
// target of issue 12, not yet met: today ≥ 93% in every bin (≥ 95% over
// all windows) at 2.5–9.5× the mean error; the test holds that.
// `go test ./analytics -run CoverTheTruth -v` prints the table that
// docs/methodology.md shows.
func TestIntervalsCoverTheTruth(t *testing.T) {
	res, total := measureCoverage(t, []string{"h200-run7", "h200-run8"})
	reportCoverage(t, res, total)
}

// measureCoverage draws the windows of the coverage test over runs.
func measureCoverage(t *testing.T, runs []string) (map[string][]coverageResult, int) {
	rng := rand.New(rand.NewPCG(12, 2026))
	res := map[string][]coverageResult{}
	ctx := context.Background()
	total := 0
	for _, run := range runs {
		base := filepath.Join("..", "docs", "validation", run)
		dir := testenv.Untar(t, filepath.Join(base, "stores.tgz"))
		a := store.Parquet(filepath.Join(dir, "storeA"))
		phases := readPhasesCSV(t, filepath.Join(base, "phases.csv"))
		cs, err := ComparePhases(ctx, a, nil, phases[:1])
		if err != nil || len(cs) == 0 {
			t.Fatalf("%s: %v", run, err)
		}
		dev := cs[0].Device
		full, err := a.Energy(ctx, dev, 0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		ps, src, err := Power(ctx, a, dev, 0, math.MaxInt64)
		if err != nil || len(ps) < 1000 {
			t.Fatalf("%s: %d samples, %v", run, len(ps), err)
		}
		if src != schemas.SourceNVMLBuffer {
			t.Fatalf("%s: series %s", run, src)
		}
		lo, hi := max(full[0].TSBefore, ps[0].TS)+6e9, min(full[len(full)-1].TSBefore, ps[len(ps)-1].TS)-6e9
		for _, c := range coverageCadences {
			for trial := 0; trial < 40; trial++ {
				prod := production(full, c, rng.Int64N(c.period), rng)
				d := &deviceData{readings: prod, power: ps, source: src}
				for k := 0; k < 12; k++ {
					// Log-uniform length, start uniform, both edges on
					// full-resolution readings: the truth is exact there.
					l := int64(0.2e9 * math.Pow(100, rng.Float64()))
					if l > hi-lo {
						continue
					}
					s := lo + rng.Int64N(hi-lo-l)
					i := sort.Search(len(full), func(i int) bool { return full[i].TSBefore >= s })
					j := sort.Search(len(full), func(j int) bool { return full[j].TSBefore >= s+l })
					if j >= len(full) || j <= i {
						continue
					}
					from, to := full[i].TSBefore, full[j].TSBefore
					truth := float64(full[j].Energy-full[i].Energy) / 1e6
					w := d.window(from, to)
					if math.IsNaN(w.Joules) {
						continue
					}
					bin := sort.SearchFloat64s(coverageBins, float64(to-from)/1e9) - 1
					if bin < 0 || bin >= len(coverageBins)-1 {
						continue
					}
					if res[c.name] == nil {
						res[c.name] = make([]coverageResult, len(coverageBins)-1)
					}
					r := &res[c.name][bin]
					e := math.Abs(w.Joules - truth)
					r.n++
					total++
					if e <= w.EdgeUncJ {
						r.covered++
					}
					r.sumErr += e
					r.sumUnc += w.EdgeUncJ
					r.sumRelUnc += w.EdgeUncJ / truth
					r.relErr = append(r.relErr, e/truth)
				}
			}
		}
	}
	return res, total
}

// reportCoverage prints the coverage table and fails a bin below what
// holds today.
func reportCoverage(t *testing.T, res map[string][]coverageResult, total int) {
	if total < 1000 {
		t.Fatalf("only %d windows", total)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| cadence | window | windows | covered | mean error | mean ± stated | width ÷ error | mean rel. ± | p95 rel. error |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range coverageCadences {
		for k, r := range res[c.name] {
			if r.n == 0 {
				t.Errorf("%s: no window of %g–%g s", c.name, coverageBins[k], coverageBins[k+1])
				continue
			}
			cov := float64(r.covered) / float64(r.n)
			ratio := r.sumUnc / math.Max(r.sumErr, 1e-9)
			sort.Float64s(r.relErr)
			fmt.Fprintf(&b, "| %s | %g–%g s | %d | %.1f%% | %.2f J | %.2f J | %.1f | %.2f%% | %.2f%% |\n", c.name, coverageBins[k], coverageBins[k+1], r.n,
				100*cov, r.sumErr/float64(r.n), r.sumUnc/float64(r.n), ratio, 100*r.sumRelUnc/float64(r.n), 100*Percentile(r.relErr, 95))
			// What holds today (issue 12 asks ≥ 95% in every bin at ≤ 3×
			// the error; not met: see docs/methodology.md, "Coverage").
			if cov < 0.92 {
				t.Errorf("%s, %g–%g s: the stated interval covers the truth in %.1f%% of %d windows (want ≥ 92%%)", c.name, coverageBins[k], coverageBins[k+1], 100*cov, r.n)
			}
			if ratio > 10 {
				t.Errorf("%s, %g–%g s: the stated interval is %.1f× the mean error (want ≤ 10×)", c.name, coverageBins[k], coverageBins[k+1], ratio)
			}
		}
	}
	all, in := 0, 0
	for _, rs := range res {
		for _, r := range rs {
			all, in = all+r.n, in+r.covered
		}
	}
	if float64(in) < 0.95*float64(all) {
		t.Errorf("the stated intervals cover the truth in %.1f%% of %d windows (want ≥ 95%%)", 100*float64(in)/float64(all), all)
	}
	t.Logf("%d windows, %.1f%% covered\n%s", total, 100*float64(in)/float64(all), b.String())
}
