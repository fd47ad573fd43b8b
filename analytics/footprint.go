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

// PrintFootprint writes r's energy per 1,000 requests and per million
// output tokens (mean over cycles with energy), with CO₂e and cost.
func PrintFootprint(w io.Writer, r *RunResult, f Footprint) {
	jpr, jpt := r.Summary["j_per_request"], r.Summary["j_per_token"]
	if jpr.N == 0 || math.IsNaN(jpr.Mean) {
		return
	}
	whPerK := jpr.Mean * 1000 / 3600
	kwhPerM := jpt.Mean * 1e6 / 3.6e6
	note := ""
	if r.Simulated {
		note = " (simulated power: not a measurement)"
	}
	fmt.Fprintf(w, "in other units%s: %s Wh per 1,000 requests; %s kWh per million output tokens", note, sig(whPerK, 3), sig(kwhPerM, 3))
	if f.GridGPerKWh > 0 {
		fmt.Fprintf(w, ", %s kg CO₂e at %s g/kWh (%s)", sig(kwhPerM*f.GridGPerKWh/1000, 3), sig(f.GridGPerKWh, 3), f.GridSource)
	}
	if f.PricePerKWh > 0 {
		fmt.Fprintf(w, ", %s %s at %s %s/kWh", sig(kwhPerM*f.PricePerKWh, 3), f.Currency, sig(f.PricePerKWh, 3), f.Currency)
	} else {
		fmt.Fprint(w, "; cost: give -price-per-kwh")
	}
	fmt.Fprintln(w, " (GPU energy only; means over the cycles with energy)")
}
