package analytics

import (
	"sort"

	"github.com/llm-energy-measure/lem/schemas"
)

// IntegratePower integrates power samples (sorted by time) over [from, to]
// by sample-and-hold: each sample holds until the next one, the last for
// hold (the source's sample period). It returns joules and the number of
// samples inside the window.
func IntegratePower(ps []schemas.PowerSample, from, to int64, hold int64) (joules float64, n int) {
	var uj float64
	holdSpans(ps, from, to, hold, func(i int, a, b int64) {
		uj += float64(ps[i].Power) * float64(b-a) / 1e6
		if ps[i].TS >= from {
			n++
		}
	})
	return uj / 1e6, n
}

// holdSpans calls f for every sample of ps (sorted) that holds inside
// [from, to], with the part [a, b) of the window it covers: a sample holds
// from its stamp until the next sample, at most hold. The sample holding at
// from is included; a call may have a == b.
func holdSpans(ps []schemas.PowerSample, from, to, hold int64, f func(i int, a, b int64)) {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].TS > from })
	if i > 0 {
		i-- // the sample holding at from
	}
	for ; i < len(ps) && ps[i].TS < to; i++ {
		end := ps[i].TS + hold
		if i+1 < len(ps) && ps[i+1].TS < end {
			end = ps[i+1].TS
		}
		a, b := max(ps[i].TS, from), min(end, to)
		if b < a {
			b = a
		}
		f(i, a, b)
	}
}
