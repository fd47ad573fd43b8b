package analytics

import (
	"math"

	"github.com/llm-energy-measure/lem/schemas"
)

// CalibratedEnergy is the energy of [from, to] from the counter-calibrated
// power timeline: inside each interval between two counter readings, the
// power samples are corrected so that they integrate exactly to the
// counter's delta; the window's energy is the integral of the corrected
// samples. The counter fixes how much, the 20 ms samples fix when. Over a
// window made of whole counter intervals it equals the counter exactly;
// inside an interval it follows the samples' shape instead of
// interpolating linearly (which smears a load step over the whole
// interval).
//
// How an interval's correction (counter − samples) is spread over its
// samples is the calibration's model of where the samples err: see
// CalibrationRoughness.
//
// hold is the samples' period (see IntegratePower). Intervals whose samples
// integrate to zero keep the counter's linear interpolation. Parts of the
// window outside the counter's readings use the samples unscaled.
func CalibratedEnergy(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) float64 {
	pts, _ := series(rs)
	if len(pts) < 2 || len(ps) == 0 {
		return WindowEnergy(rs, from, to).Joules
	}
	return newCalibrator(pts, ps, hold).energy(from, to)
}

// CalibrationRoughness sets where an interval's correction goes: each
// sample carries the weight CalibrationRoughness·P + |P − P_prev| +
// |P_next − P|, and the correction is spread over the interval in
// proportion to weight × time. The samples err where power changes fast —
// the buffer's 20 ms samples alias a load switching at 10 Hz (−3.65% over
// such a phase on the H200) and place steps within a sample of the truth —
// and hardly at all where it is steady (within ±0.5% on idle and steady
// load phases). A scale proportional to the samples (the weight P alone)
// moved an aliased phase's deficit onto the steady phase sharing its
// counter interval: the 2 s idle after the 10 Hz phase erred +1.6% to
// +2.7% (aligned reads) and −2.2% to −3.7% (plain). With 0.1: within
// ±0.8% (aligned) and ±1.13% (plain) on every phase of both H200
// recordings with the counter read as the agent reads it
// (docs/methodology.md, "Calibration"; `go test ./analytics -run
// CalibrationOnH200Phases -v`). The value was chosen on those two
// recordings (0.03–0.3 all beat the proportional scale there; smaller
// values help aliased phases and hurt plain reads at load steps) and
// checked on a recording made after it was chosen (docs/validation).
// Steady intervals (no roughness) reduce to the proportional scale.
const CalibrationRoughness = 0.1

// energyAndRoughness integrates the samples over [from, to] as
// IntegratePower does (J) and, in the same pass, their calibration weight
// (see CalibrationRoughness; mW·ns).
func energyAndRoughness(ps []schemas.PowerSample, from, to, hold int64) (joules, weight float64) {
	var uj float64
	holdSpans(ps, from, to, hold, func(i int, a, b int64) {
		p := float64(ps[i].Power)
		r := CalibrationRoughness * p
		if i > 0 {
			r += math.Abs(p - float64(ps[i-1].Power))
		}
		if i+1 < len(ps) {
			r += math.Abs(float64(ps[i+1].Power) - p)
		}
		uj += p * float64(b-a) / 1e6
		weight += r * float64(b-a)
	})
	return uj / 1e6, weight
}
