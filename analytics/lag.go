package analytics

import (
	"math"

	"github.com/llm-energy-measure/lem/schemas"
)

// DelayFit is how well a counter's timing matches a power series.
type DelayFit struct {
	// Delay is the extra shift (ns) that, applied to the counter's
	// readings on top of their source's convention (CounterLag for plain
	// nvml.counter reads, none for aligned ones), best matches the
	// series: positive means the counter's energy belongs earlier than its
	// stamps say.
	Delay int64
	// RMSJ is the residual of the interval energies at Delay, RMSZeroJ at
	// no extra shift; Scale the fitted series-to-counter gain.
	RMSJ, RMSZeroJ, Scale float64
	Intervals             int
}

// FitCounterDelay measures the counter's effective timing against a power
// series: for each interval between consecutive readings (under 10 s), the
// counter's energy is compared with the series integrated over the
// interval shifted by d, scaled by the least-squares gain; d runs over
// −150…+250 ms in 5 ms steps. Intervals with a load step identify the
// delay; in steady power every d fits equally (then RMSJ ≈ RMSZeroJ).
func FitCounterDelay(rs []Reading, ps []schemas.PowerSample, hold int64) DelayFit {
	pts, _ := series(rs)
	type iv struct {
		a, b int64
		e    float64
	}
	var ivs []iv
	if len(ps) == 0 {
		return DelayFit{RMSJ: math.NaN(), RMSZeroJ: math.NaN()}
	}
	lo, hi := ps[0].TS+int64(500e6), ps[len(ps)-1].TS-int64(500e6)
	for i := 1; i < len(pts); i++ {
		a, b := pts[i-1], pts[i]
		if b.t-a.t <= 0 || b.t-a.t > 10e9 || a.t < lo || b.t > hi || b.e < a.e {
			continue
		}
		ivs = append(ivs, iv{a.t, b.t, (b.e - a.e) / 1e6})
	}
	best := DelayFit{Delay: 0, RMSJ: math.Inf(1), Intervals: len(ivs)}
	if len(ivs) < 3 {
		best.RMSJ, best.RMSZeroJ = math.NaN(), math.NaN()
		return best
	}
	for d := int64(-150e6); d <= 250e6; d += 5e6 {
		var sxy, sxx float64
		bs := make([]float64, len(ivs))
		for i, v := range ivs {
			bs[i], _ = IntegratePower(ps, v.a-d, v.b-d, hold)
			sxy += bs[i] * v.e
			sxx += bs[i] * bs[i]
		}
		k := sxy / sxx
		var ss float64
		for i, v := range ivs {
			r := v.e - k*bs[i]
			ss += r * r
		}
		rms := math.Sqrt(ss / float64(len(ivs)))
		if d == 0 {
			best.RMSZeroJ = rms
		}
		if rms < best.RMSJ {
			best.Delay, best.RMSJ, best.Scale = d, rms, k
		}
	}
	return best
}

// AlignSeries shifts a power series onto the counter's time base when the
// data determine the shift: the counter must be read aligned to its
// refresh (its stamps are then exact to a few ms), the fit must rest on at
// least 10 intervals, and shifting must cut the residual by at least 10%
// (in steady power every shift fits alike and none is applied). It returns
// the series to use, the fit, and whether the shift was applied.
func AlignSeries(rs []Reading, ps []schemas.PowerSample, hold int64) ([]schemas.PowerSample, DelayFit, bool) {
	if len(rs) == 0 || len(ps) == 0 {
		return ps, DelayFit{RMSJ: math.NaN(), RMSZeroJ: math.NaN()}, false
	}
	if sensor, _ := SplitSource(rs[0].Source); sensor != schemas.SourceNVMLCounterAligned {
		return ps, DelayFit{RMSJ: math.NaN(), RMSZeroJ: math.NaN()}, false
	}
	f := FitCounterDelay(rs, ps, hold)
	if f.Intervals < 10 || f.Delay == 0 || !(f.RMSJ < 0.9*f.RMSZeroJ) {
		return ps, f, false
	}
	out := make([]schemas.PowerSample, len(ps))
	for i, p := range ps {
		out[i] = schemas.PowerSample{TS: p.TS + f.Delay, Power: p.Power}
	}
	return out, f, true
}
