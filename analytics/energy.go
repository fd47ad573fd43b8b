package analytics

import (
	"math"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// Quality flags, worst last. Every energy figure carries one.
const (
	QualityOK       = "ok"
	QualityLowRes   = "low_resolution" // window under LowResolutionBelow (1 s)
	QualityGaps     = "gaps"           // counter reset or missing readings inside the window
	QualityTooShort = "too_short"      // window shorter than the counter can resolve
)

// CounterRefresh is how often NVML's energy counter changes (gpu-power-facts).
const CounterRefresh = 100e6 // ns

// CounterLag is how far, on average, an NVML counter value trails the
// moment it was read: the counter refreshes every ~100 ms and a read returns
// the last refresh, so its effective time is the read time minus half a
// refresh (uncertainty ±50 ms, uniform). Readings whose source is
// nvml.counter are shifted by it; sources stamped at the change itself
// (the shared trace, the simulator) are not.
const CounterLag = CounterRefresh / 2

// SensorGain is the systematic relative uncertainty of the on-board sensor.
const SensorGain = 0.05

// Window is the energy of one device over [From, To] from its counter.
type Window struct {
	From, To int64
	Joules   float64
	// EdgeUncJ bounds the error from the counter's refresh period at the
	// two window edges (random, combined in quadrature).
	EdgeUncJ float64
	Quality  string
	Source   string
	// Simulated is set when the readings came from the simulator: such a
	// figure exercises the pipeline and is never a measurement.
	Simulated bool
	// Apportioned is set for a MIG instance: its figure is a share of its
	// board's measured energy (by SMs), not a measurement of the instance.
	Apportioned bool
}

// SplitSource returns the sensor of a source label and whether the values
// are an apportioned share (a MIG instance's) rather than a measurement.
func SplitSource(src string) (sensor string, apportioned bool) {
	if s, ok := strings.CutSuffix(src, schemas.ApportionedSuffix); ok {
		return s, true
	}
	return src, false
}

// continuous turns counter readings into a monotone series, treating a
// reset as a restart from zero (NVML counts from driver load).
type point struct {
	t int64 // midpoint of the read
	e float64
}

func series(rs []Reading) (pts []point, resets int) {
	var offset float64
	for i, r := range rs {
		if i > 0 && (r.Reset || r.Energy < rs[i-1].Energy) {
			// Restarted counter: continue from the last continuous value.
			offset = pts[i-1].e
			resets++
		}
		t := r.TSBefore
		if r.TSAfter > r.TSBefore {
			t += (r.TSAfter - r.TSBefore) / 2
		}
		if sensor, _ := SplitSource(r.Source); sensor == schemas.SourceNVMLCounter {
			t -= CounterLag
		}
		pts = append(pts, point{t: t, e: offset + float64(r.Energy)})
	}
	return pts, resets
}

// at interpolates the series at t. Outside it, the mean power of the
// nearest second of readings extends it (one 100 ms step is too noisy);
// WindowEnergy flags windows that need more than a couple of refresh
// periods of that.
func at(pts []point, t int64) float64 {
	n := len(pts)
	if n == 1 {
		return pts[0].e
	}
	if t < pts[0].t {
		j := 1
		for j < n-1 && pts[j].t-pts[0].t < 1e9 {
			j++
		}
		return pts[0].e - slope(pts[0], pts[j])*float64(pts[0].t-t)
	}
	if t > pts[n-1].t {
		j := n - 2
		for j > 0 && pts[n-1].t-pts[j].t < 1e9 {
			j--
		}
		return pts[n-1].e + slope(pts[j], pts[n-1])*float64(t-pts[n-1].t)
	}
	i := sort.Search(n, func(i int) bool { return pts[i].t >= t })
	if i == 0 {
		return pts[0].e
	}
	a, b := pts[i-1], pts[i]
	if b.t == a.t {
		return b.e
	}
	return a.e + (b.e-a.e)*float64(t-a.t)/float64(b.t-a.t)
}

func slope(a, b point) float64 {
	if b.t == a.t {
		return 0
	}
	return (b.e - a.e) / float64(b.t-a.t)
}

// WindowEnergy integrates the counter readings rs (sorted, covering the
// window with some margin) over [from, to].
func WindowEnergy(rs []Reading, from, to int64) Window {
	w := Window{From: from, To: to, Quality: QualityOK, Joules: math.NaN()}
	if len(rs) < 2 || to <= from {
		w.Quality = QualityGaps
		return w
	}
	w.Source = rs[0].Source
	if known, q := WindowCoverage(rs, nil, 0, from, to).Known(); !known {
		w.Quality = q
		return w
	}
	pts, resets := series(rs)
	w.Joules = (at(pts, to) - at(pts, from)) / 1e6
	// Power near each edge, for the edge uncertainty: ±half a refresh.
	edge := func(t int64) float64 {
		p := (at(pts, t+CounterRefresh) - at(pts, t-CounterRefresh)) / 1e6 / (2 * CounterRefresh / 1e9)
		return p * (CounterRefresh / 2 / 1e9)
	}
	w.EdgeUncJ = math.Hypot(edge(from), edge(to))
	covered := pts[0].t <= from+2*CounterRefresh && pts[len(pts)-1].t >= to-2*CounterRefresh
	maxGap := int64(0)
	for i := 1; i < len(pts); i++ {
		if pts[i].t > from && pts[i-1].t < to {
			maxGap = max(maxGap, pts[i].t-pts[i-1].t)
		}
	}
	dur := to - from
	switch {
	case resets > 0 || !covered || maxGap > 3e9:
		w.Quality = QualityGaps
	default:
		w.Quality = lengthQuality(dur)
	}
	w.Simulated = w.Source == schemas.SourceSim
	_, w.Apportioned = SplitSource(w.Source)
	return w
}

// worse returns the worse of two quality flags.
func worse(a, b string) string {
	rank := map[string]int{QualityOK: 0, QualityLowRes: 1, QualityGaps: 2, QualityTooShort: 3, QualityNoPower: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
