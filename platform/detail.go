package platform

import (
	"math"
	"sort"

	"github.com/llm-energy-measure/lem/internal/jsonsafe"

	"github.com/llm-energy-measure/lem/analytics"
)

// Histogram is a distribution in equal bins from Min to Max.
type Histogram struct {
	Min, Max float64
	Counts   []int
	N        int
}

// runDetail is what the experiment page shows of a recomputed run: the
// result without its per-request rows (a histogram of their energies
// instead), JSON-safe (NaN and ±Inf become null: unknown, never 0).
func runDetail(r *analytics.RunResult) any {
	cp := *r
	cp.Requests = nil
	var total, prefill, decode []float64
	for _, q := range r.Requests {
		if t := q.TotalJ(); !math.IsNaN(t) {
			total = append(total, t)
			prefill = append(prefill, q.PrefillJ)
			decode = append(decode, q.DecodeJ)
		}
	}
	return jsonsafe.Of(struct {
		analytics.RunResult
		RequestEnergy  *Histogram
		RequestPrefill *Histogram
		RequestDecode  *Histogram
		Label          string
	}{cp, histogram(total, 30), histogram(prefill, 30), histogram(decode, 30), r.Label()})
}

func histogram(xs []float64, bins int) *Histogram {
	if len(xs) == 0 {
		return nil
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	h := &Histogram{Min: s[0], Max: s[len(s)-1], Counts: make([]int, bins), N: len(s)}
	w := (h.Max - h.Min) / float64(bins)
	for _, x := range s {
		i := bins - 1
		if w > 0 {
			i = min(int((x-h.Min)/w), bins-1)
		}
		h.Counts[i]++
	}
	return h
}
