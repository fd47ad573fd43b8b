package analytics

import (
	"fmt"
	"io"
	"math"
)

// Footprint turns measured energy into the units readers ask for: Wh per
// 1,000 requests, kWh and CO₂-equivalent per million output tokens, and a
// cost where a price is given.
type Footprint struct {
	// GridGPerKWh is the carbon intensity of the electricity (gCO₂e/kWh)
	// and GridSource where the figure comes from.
	GridGPerKWh float64
	GridSource  string
	// PricePerKWh is the electricity price (0: no cost shown) in Currency.
	PricePerKWh float64
	Currency    string
}

// DefaultFootprint is the world-average grid (Ember: 481 gCO₂/kWh of
// electricity generated in 2023) and no price: prices differ tenfold
// between places and contracts, so lem shows a cost only when given one.
var DefaultFootprint = Footprint{GridGPerKWh: 481, GridSource: "world average of electricity generated in 2023, Ember"}

// PerMillionTokens returns the CO₂e (kg) and the cost (in f.Currency, NaN
// without a price) of a million output tokens at r's mean J/token, with
// the same relative 95% interval (NaN under three cycles).
func (f Footprint) PerMillionTokens(r *RunResult) (co2kg, cost Stat) {
	kwh := r.Summary["kwh_per_million_tokens"]
	scale := func(k float64) Stat {
		if k <= 0 || kwh.N == 0 {
			return Stat{Mean: math.NaN(), Std: math.NaN(), CI95: math.NaN(), CV: math.NaN()}
		}
		return Stat{N: kwh.N, Mean: kwh.Mean * k, Std: kwh.Std * k, CI95: kwh.CI95 * k, CV: kwh.CV}
	}
	return scale(f.GridGPerKWh / 1000), scale(f.PricePerKWh)
}

// PrintFootprint writes r's CO₂e and cost per million output tokens (the
// energy per 1,000 requests and per million tokens are in the summary
// table as wh_per_1000_requests and kwh_per_million_tokens).
func PrintFootprint(w io.Writer, r *RunResult, f Footprint) {
	co2, cost := f.PerMillionTokens(r)
	if co2.N == 0 || math.IsNaN(co2.Mean) {
		return
	}
	note := ""
	if r.Simulated {
		note = " (simulated power: not a measurement)"
	}
	fmt.Fprintf(w, "per million output tokens%s: %s kg CO₂e at %s g/kWh (%s)", note, fmtCI(co2), sig(f.GridGPerKWh, 3), f.GridSource)
	if f.PricePerKWh > 0 {
		fmt.Fprintf(w, ", %s %s at %s %s/kWh", fmtCI(cost), f.Currency, sig(f.PricePerKWh, 3), f.Currency)
	} else {
		fmt.Fprint(w, "; cost: give -price-per-kwh")
	}
	fmt.Fprintln(w, " (GPU energy only; means over the cycles with energy)")
}
