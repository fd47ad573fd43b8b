package analytics

import (
	"sort"

	"github.com/llm-energy-measure/lem/schemas"
)

// QualityNoPower marks a window no counter reading and no power sample
// covers: it has no energy (NaN, never 0) and is left out of means.
const QualityNoPower = "no_power"

// MaxExtrapolation is how much of a window may lie outside every power
// datum — beyond the counter's first or last reading and outside the power
// series — before its energy is unknown (NaN, flagged) rather than
// extrapolated: five refresh periods of the counter. Within it the value
// is extended at the mean power of the nearest second of readings and
// flagged gaps (the shared H200 trace's counter stops 0.22 s before its
// last phase ends: extended, within 4% of the trace's own figure).
const MaxExtrapolation = 5 * CounterRefresh

// Coverage says how much of the window [From, To] the power data cover.
// It is computed by WindowCoverage for every energy figure lem reports —
// `lem analyze` and `lem validate-power` alike — so that both refuse the
// same windows.
type Coverage struct {
	From, To int64
	// Counter is the fraction of the window between the first and the last
	// counter reading (where the counter interpolates).
	Counter float64
	// Series is the fraction of the window covered by power samples, each
	// holding until the next one, at most hold.
	Series float64
	// Unknown is how long (ns) the window lies outside both.
	Unknown int64
}

// Known reports whether the window's energy can be stated, and if not the
// flag that says why (no_power: no data at all; gaps: more than
// MaxExtrapolation without data).
func (c Coverage) Known() (bool, string) {
	switch {
	case c.Counter == 0 && c.Series == 0:
		return false, QualityNoPower
	case c.Unknown > MaxExtrapolation:
		return false, QualityGaps
	}
	return true, QualityOK
}

// WindowCoverage measures how rs (counter readings, sorted) and ps (power
// samples, sorted; may be nil) cover [from, to].
func WindowCoverage(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) Coverage {
	c := Coverage{From: from, To: to}
	dur := to - from
	if dur <= 0 {
		return c
	}
	// Intervals covered, merged: the counter's span, then each sample's.
	var iv [][2]int64
	if pts, _ := series(rs); len(pts) >= 2 {
		lo, hi := max(pts[0].t, from), min(pts[len(pts)-1].t, to)
		if hi > lo {
			iv = append(iv, [2]int64{lo, hi})
			c.Counter = float64(hi-lo) / float64(dur)
		}
	}
	var covered int64
	holdSpans(ps, from, to, hold, func(_ int, lo, hi int64) {
		if hi > lo {
			covered += hi - lo
			iv = append(iv, [2]int64{lo, hi})
		}
	})
	c.Series = float64(covered) / float64(dur)
	sort.Slice(iv, func(a, b int) bool { return iv[a][0] < iv[b][0] })
	var union, end int64
	end = from
	for _, x := range iv {
		if x[1] <= end {
			continue
		}
		union += x[1] - max(x[0], end)
		end = x[1]
	}
	c.Unknown = dur - union
	return c
}
