package schemas

import (
	"strconv"
)

// Power is an electrical power in milliwatts, NVML's native unit.
type Power int64

// Energy is an amount of energy in microjoules (RAPL's unit; NVML's mJ
// counter converts exactly).
type Energy int64

// Common magnitudes.
const (
	Milliwatt  Power  = 1
	Watt       Power  = 1000
	Microjoule Energy = 1
	Millijoule Energy = 1000
	Joule      Energy = 1000 * 1000
)

// Watts returns p in watts.
func (p Power) Watts() float64 { return float64(p) / float64(Watt) }

// Joules returns e in joules.
func (e Energy) Joules() float64 { return float64(e) / float64(Joule) }

func (p Power) String() string {
	return strconv.FormatFloat(p.Watts(), 'f', 3, 64) + " W"
}

func (e Energy) String() string {
	return strconv.FormatFloat(e.Joules(), 'f', 6, 64) + " J"
}

// PowerFromWatts converts watts to Power, rounding to the nearest milliwatt.
func PowerFromWatts(w float64) Power {
	if w < 0 {
		return Power(w*1000 - 0.5)
	}
	return Power(w*1000 + 0.5)
}
