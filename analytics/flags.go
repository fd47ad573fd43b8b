package analytics

import (
	"fmt"
	"math"
)

// The flag rulebook. Every flag lem attaches to a figure is decided in this
// file (window flags by their coverage, run flags over cycles), and
// docs/methodology.md ("Quality flags") states the same rules.
const (
	// LowResolutionBelow: a window shorter than this is low_resolution —
	// ten refreshes of the energy counter, whether or not a 20 ms power
	// series places the energy inside it (the counter still fixes how
	// much, once per refresh).
	LowResolutionBelow = 10 * CounterRefresh
	// TooShortBelow: a window shorter than two counter refreshes cannot be
	// resolved at all.
	TooShortBelow = 2 * CounterRefresh

	// FlagNegativeDynamic: a cycle's dynamic energy is below minus its
	// uncertainty — the baseline is wrong for this window (it drifted, or
	// the idle state differed), so its dynamic figures are not to be used.
	FlagNegativeDynamic = "negative_dynamic"
	// FlagTooFewCycles: fewer than MinCyclesForCI cycles have the figure;
	// no confidence interval is stated.
	FlagTooFewCycles = "too_few_cycles"
	// FlagOutlierCycle: a cycle's duration or energy lies more than
	// OutlierZ robust standard deviations from the median of the run's
	// cycles.
	FlagOutlierCycle = "outlier_cycle"

	// FlagTrend: a metric drifts with the cycles' order — by the rank test
	// (Mann–Kendall, exact) or by the least-squares slope's t-test, each at
	// TrendAlpha (Bonferroni over the two: 5% together). The cycles are
	// then not independent draws and the interval over them does not cover
	// the drift (warming caches, first-seen shapes, thermal state). The rank
	// test alone missed a real drift on an H200 (cycle durations 20.6,
	// 21.8, 14.8, 9.1, 11.0, 10.3 s: Mann–Kendall p 0.14, slope p 0.02).
	FlagTrend = "trend"
	// TrendAlpha is each trend test's level.
	TrendAlpha = 0.025
	// MinCyclesForCI is the fewest cycles a stated interval rests on.
	MinCyclesForCI = 3
	// OutlierZ is the robust z-score (0.6745·|x − median| / MAD; Iglewicz
	// and Hoaglin) above which a cycle is an outlier.
	OutlierZ = 3.5
	// OutlierMinSpread floors the MAD at this fraction of the median: when
	// cycles agree to a millisecond (a closed loop's durations: 5.135,
	// 5.135, 5.136 s), a 1 ms difference is no outlier, so a cycle must
	// also lie more than OutlierZ/0.6745 × 1% ≈ 5.2% from the median.
	OutlierMinSpread = 0.01
)

// lengthQuality flags a window by its length alone.
func lengthQuality(dur int64) string {
	switch {
	case dur < TooShortBelow:
		return QualityTooShort
	case dur < LowResolutionBelow:
		return QualityLowRes
	}
	return QualityOK
}

// Outlier is one cycle the outlier rule flags.
type Outlier struct {
	Cycle  uint32
	Metric string // duration_s or energy_j
	Value  float64
	Z      float64 // robust z-score
	// MeanWithout is the metric's mean over the other cycles.
	MeanWithout float64
}

// robustZ returns each value's robust z-score, the MAD floored at
// OutlierMinSpread of the median; NaN values get NaN, and all get 0 when
// there is still no spread to judge by.
func robustZ(xs []float64) []float64 {
	var ok []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			ok = append(ok, x)
		}
	}
	z := make([]float64, len(xs))
	if len(ok) < MinCyclesForCI {
		return z
	}
	med := median(ok)
	dev := make([]float64, len(ok))
	for i, x := range ok {
		dev[i] = math.Abs(x - med)
	}
	mad := math.Max(median(dev), OutlierMinSpread*math.Abs(med))
	for i, x := range xs {
		switch {
		case math.IsNaN(x):
			z[i] = math.NaN()
		case mad > 0:
			z[i] = 0.6745 * (x - med) / mad
		}
	}
	return z
}

func median(xs []float64) float64 {
	return Percentile(append([]float64(nil), xs...), 50)
}

// flagRun applies the run-level rules to r's cycles and summary.
func flagRun(r *RunResult) {
	for i := range r.Cycles {
		c := &r.Cycles[i]
		if c.DynamicJ < -c.DynamicUncJ {
			c.Flags = appendFlag(c.Flags, FlagNegativeDynamic)
			r.Flags = appendFlag(r.Flags, FlagNegativeDynamic)
		}
		if c.Pacing != nil && !c.Pacing.Held {
			c.Flags = appendFlag(c.Flags, FlagScheduleSlip)
			r.Flags = appendFlag(r.Flags, FlagScheduleSlip)
		}
	}
	if e := r.Summary["energy_j"]; e.N < MinCyclesForCI || len(r.Cycles) < MinCyclesForCI {
		r.Flags = appendFlag(r.Flags, FlagTooFewCycles)
	}
	for _, m := range TrendMetrics {
		xs := make([]float64, len(r.Cycles))
		for i := range r.Cycles {
			xs[i] = cycleMetric(&r.Cycles[i], m)
		}
		pk, s := MannKendall(xs)
		slope, ps := SlopeTest(xs)
		if pk <= TrendAlpha || ps <= TrendAlpha {
			r.Trends = append(r.Trends, Trend{Metric: m, S: s, P: pk, Slope: slope, SlopeP: ps})
			r.Flags = appendFlag(r.Flags, FlagTrend)
		}
	}
	for _, m := range []string{"duration_s", "energy_j"} {
		xs := make([]float64, len(r.Cycles))
		for i := range r.Cycles {
			xs[i] = cycleMetric(&r.Cycles[i], m)
		}
		for i, z := range robustZ(xs) {
			if math.Abs(z) <= OutlierZ {
				continue
			}
			others := append(append([]float64(nil), xs[:i]...), xs[i+1:]...)
			r.Outliers = append(r.Outliers, Outlier{Cycle: r.Cycles[i].Cycle, Metric: m, Value: xs[i], Z: z,
				MeanWithout: Summarise(others).Mean})
			r.Cycles[i].Flags = appendFlag(r.Cycles[i].Flags, FlagOutlierCycle)
			r.Flags = appendFlag(r.Flags, FlagOutlierCycle)
		}
	}
}

func appendFlag(fs []string, f string) []string {
	for _, x := range fs {
		if x == f {
			return fs
		}
	}
	return append(fs, f)
}

// describeOutliers says which cycles the outlier rule flagged and what the
// mean is without each.
func describeOutliers(r *RunResult) []string {
	var out []string
	for _, o := range r.Outliers {
		out = append(out, fmt.Sprintf("cycle %d: %s %.4g is %.1f robust SDs from the median (mean without it: %.4g)",
			o.Cycle, o.Metric, o.Value, o.Z, o.MeanWithout))
	}
	return out
}

// TrendMetrics are tested for a trend over the cycles' order.
var TrendMetrics = []string{"duration_s", "energy_j", "j_per_token", "ttft_p50_ms", "itl_p50_ms"}

// Trend is one metric the trend tests flag.
type Trend struct {
	Metric string
	S      int     // Mann–Kendall S: concordant minus discordant pairs
	P      float64 // its exact two-sided p-value
	Slope  float64 // least-squares change per cycle
	SlopeP float64 // two-sided p-value of the slope's t-test
}

// SlopeTest fits xs against its order by least squares and returns the
// slope (per step) and the two-sided p-value of its t-test (n − 2 degrees
// of freedom; NaNs left out, 1 for fewer than 3 values or no spread).
func SlopeTest(xs []float64) (slope, p float64) {
	var x, y []float64
	for i, v := range xs {
		if !math.IsNaN(v) {
			x, y = append(x, float64(i)), append(y, v)
		}
	}
	n := float64(len(x))
	if n < 3 {
		return math.NaN(), 1
	}
	var mx, my float64
	for i := range x {
		mx, my = mx+x[i], my+y[i]
	}
	mx, my = mx/n, my/n
	var sxx, sxy, syy float64
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		sxy += (x[i] - mx) * (y[i] - my)
		syy += (y[i] - my) * (y[i] - my)
	}
	slope = sxy / sxx
	ssr := syy - slope*sxy
	if ssr <= 0 {
		if slope == 0 {
			return 0, 1
		}
		return slope, 0 // a perfect line
	}
	se := math.Sqrt(ssr / (n - 2) / sxx)
	t := math.Abs(slope / se)
	return slope, 2 * (1 - studentTCDF(t, n-2))
}

// MannKendall returns the exact two-sided p-value of the Mann–Kendall
// test for a monotonic trend of xs over its order (NaNs left out; ties
// count 0) and the statistic S. Exact: the null distribution of S is that
// of the inversions of a random permutation (Mahonian numbers); with ties
// it is conservative. p is 1 for fewer than 3 values.
func MannKendall(xs []float64) (p float64, s int) {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	n := len(v)
	if n < 3 {
		return 1, 0
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			switch {
			case v[j] > v[i]:
				s++
			case v[j] < v[i]:
				s--
			}
		}
	}
	if n > 50 { // normal approximation, continuity-corrected
		sd := math.Sqrt(float64(n*(n-1)*(2*n+5)) / 18)
		z := (math.Abs(float64(s)) - 1) / sd
		return math.Min(1, math.Erfc(z/math.Sqrt2)), s
	}
	// counts[k]: permutations of n with k inversions; S = pairs − 2k.
	pairs := n * (n - 1) / 2
	counts := []float64{1}
	for m := 2; m <= n; m++ {
		next := make([]float64, len(counts)+m-1)
		for k, c := range counts {
			for add := 0; add < m; add++ {
				next[k+add] += c
			}
		}
		counts = next
	}
	var total, tail float64
	for k, c := range counts {
		total += c
		if sk := pairs - 2*k; sk >= abs(s) || -sk >= abs(s) {
			tail += c
		}
	}
	return math.Min(1, tail/total), s
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
