package analytics

import "github.com/llm-energy-measure/lem/schemas"

// CalibratedEnergy is the energy of [from, to] from the counter-calibrated
// power timeline: inside each interval between two counter readings, the
// power samples are scaled so that they integrate exactly to the counter's
// delta; the window's energy is the integral of the scaled samples. The
// counter fixes how much, the 20 ms samples fix when. Over a window made of
// whole counter intervals it equals the counter exactly; inside an interval
// it follows the samples' shape instead of interpolating linearly (which
// smears a load step over the whole interval).
//
// hold is the samples' period (see IntegratePower). Intervals whose samples
// integrate to zero keep the counter's linear interpolation. Parts of the
// window outside the counter's readings use the samples unscaled.
func CalibratedEnergy(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) float64 {
	pts, _ := series(rs)
	if len(pts) < 2 || len(ps) == 0 {
		return WindowEnergy(rs, from, to).Joules
	}
	var j float64
	// Before the first and after the last reading: unscaled samples.
	if from < pts[0].t {
		e, _ := IntegratePower(ps, from, min(to, pts[0].t), hold)
		j += e
	}
	if to > pts[len(pts)-1].t {
		e, _ := IntegratePower(ps, max(from, pts[len(pts)-1].t), to, hold)
		j += e
	}
	for i := 1; i < len(pts); i++ {
		a, b := pts[i-1], pts[i]
		lo, hi := max(a.t, from), min(b.t, to)
		if hi <= lo {
			continue
		}
		counterJ := (b.e - a.e) / 1e6
		sampJ, _ := IntegratePower(ps, a.t, b.t, hold)
		if sampJ <= 0 {
			j += counterJ * float64(hi-lo) / float64(b.t-a.t)
			continue
		}
		part, _ := IntegratePower(ps, lo, hi, hold)
		j += part * counterJ / sampJ
	}
	return j
}
