package analytics

import (
	"fmt"
	"math"
	"sort"
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

	// MinCyclesForCI is the fewest cycles a stated interval rests on.
	MinCyclesForCI = 3
	// OutlierZ is the robust z-score (0.6745·|x − median| / MAD; Iglewicz
	// and Hoaglin) above which a cycle is an outlier.
	OutlierZ = 3.5
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

// robustZ returns each value's robust z-score; NaN values get NaN, and all
// get 0 when the MAD is 0 (no spread to judge by).
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
	mad := median(dev)
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
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// flagRun applies the run-level rules to r's cycles and summary.
func flagRun(r *RunResult) {
	for i := range r.Cycles {
		c := &r.Cycles[i]
		if c.DynamicJ < -c.DynamicUncJ {
			c.Flags = appendFlag(c.Flags, FlagNegativeDynamic)
			r.Flags = appendFlag(r.Flags, FlagNegativeDynamic)
		}
	}
	if e := r.Summary["energy_j"]; e.N < MinCyclesForCI || len(r.Cycles) < MinCyclesForCI {
		r.Flags = appendFlag(r.Flags, FlagTooFewCycles)
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
