package analytics

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
)

// A device whose power follows the token rate 500 ms late (a 1 s moving
// average would, about) shows that lag; with no delay, ~0.
func TestCorrelationFindsSensorLag(t *testing.T) {
	for _, delay := range []int64{0, 500e6} {
		t0 := int64(1_795_757_000_000_000_000)
		rng := rand.New(rand.NewPCG(1, 2))
		// Bursts of decoding: each second, a random number of requests
		// decode for a random part of it.
		var reqs []schemas.Request
		toks := map[string][]schemas.Token{}
		rate := make([]float64, 600) // tokens/s per 100 ms bin, 60 s
		for s := 0; s < 60; s++ {
			n := rng.IntN(8)
			for k := 0; k < n; k++ {
				id := fmt.Sprintf("r%d-%d", s, k)
				a := t0 + int64(s)*1e9 + int64(rng.IntN(5))*100e6
				b := a + int64(2+rng.IntN(4))*100e6
				q := schemas.Request{ID: id, Sent: a - 50e6, FirstToken: a, LastToken: b - 10e6, Done: b, OutputTokens: 1, Status: schemas.StatusOK}
				for ts := a; ts < b; ts += 20e6 {
					toks[id] = append(toks[id], schemas.Token{TS: ts, Tokens: 1})
					rate[(ts-t0)/100e6] += 1 / 0.1
				}
				reqs = append(reqs, q)
			}
		}
		var ps []schemas.PowerSample
		for ts := t0; ts < t0+60e9; ts += 20e6 {
			src := ts - delay
			w := 100.0
			if src >= t0 {
				w += 0.5 * rate[(src-t0)/100e6]
			}
			ps = append(ps, schemas.PowerSample{TS: ts, Power: schemas.PowerFromWatts(w)})
		}
		c := correlate([][2]int64{{t0, t0 + 60e9}}, [][]schemas.PowerSample{ps}, 60e6, reqs, toks)
		if c == nil {
			t.Fatal("no correlation")
		}
		if math.Abs(c.LagMS-float64(delay)/1e6) > 100 || c.LagCorr < 0.9 {
			t.Errorf("delay %d ms: lag %.0f ms (r %.2f)", delay/1e6, c.LagMS, c.LagCorr)
		}
		if delay == 0 && (c.Pearson["tokens_per_s"] < 0.95 || c.Spearman["tokens_per_s"] < 0.8 || c.Pearson["requests_decoding"] < 0.9) {
			t.Errorf("no delay: %+v %+v", c.Pearson, c.Spearman)
		}
	}
}

func TestSpearmanTiesAndPearson(t *testing.T) {
	x := []float64{1, 2, 2, 3, 10}
	y := []float64{2, 4, 4, 6, 7}
	if r := Spearman(x, y); math.Abs(r-1) > 1e-12 {
		t.Errorf("monotone with ties: %v", r)
	}
	if r := Pearson(x, []float64{5, 5, 5, 5, 5}); !math.IsNaN(r) {
		t.Errorf("no variance: %v", r)
	}
}

// The bootstrap interval covers the true median of a known distribution
// and narrows as samples grow.
func TestBootstrapPercentile(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	width := func(n int) (PercentileCI, float64) {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = rng.ExpFloat64() * 100 // median 100·ln2
		}
		c := BootstrapPercentile(xs, 50)
		return c, c.High - c.Low
	}
	small, ws := width(100)
	large, wl := width(10000)
	truth := 100 * math.Ln2
	if large.Low > truth || large.High < truth || wl > ws/5 {
		t.Fatalf("n=100 [%g, %g], n=10000 [%g, %g], truth %g", small.Low, small.High, large.Low, large.High, truth)
	}
}

// The counting bootstrap equals the one that sorts each resample, draw for
// draw (the reference below is the former implementation).
func TestBootstrapPercentileEqualsSorting(t *testing.T) {
	ref := func(xs []float64, p float64) PercentileCI {
		out := PercentileCI{P: p, N: len(xs)}
		out.Value = Percentile(append([]float64(nil), xs...), p)
		rng := rand.New(rand.NewPCG(0xb00757, uint64(len(xs))))
		est := make([]float64, 1000)
		sample := make([]float64, len(xs))
		for b := range est {
			for i := range sample {
				sample[i] = xs[rng.IntN(len(xs))]
			}
			est[b] = Percentile(sample, p)
		}
		out.Low, out.High = Percentile(est, 2.5), Percentile(est, 97.5)
		return out
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{2, 3, 17, 200, 1001} {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = math.Round(rng.ExpFloat64()*20) / 4 // ties on purpose
		}
		for _, p := range []float64{0, 50, 90, 99, 100} {
			got, want := BootstrapPercentile(xs, p), ref(xs, p)
			if got != want {
				t.Fatalf("n=%d p=%v: %+v, sorting gives %+v", n, p, got, want)
			}
		}
	}
}

// Above BootstrapMax the order-statistic interval stands in for the
// bootstrap: its ends must sit where 1,000 resamples put theirs, within
// the resampling's own wobble.
func TestLargeSamplePercentileInterval(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	xs := make([]float64, BootstrapMax+5000)
	for i := range xs {
		xs[i] = rng.ExpFloat64() * 20
	}
	sorted := append([]float64(nil), xs...)
	sort.Float64s(sorted)
	rank := func(v float64) int { return sort.SearchFloat64s(sorted, v) }
	for _, p := range []float64{50, 90, 99} {
		got := BootstrapPercentile(xs, p)
		// The bootstrap itself, as below the threshold.
		boot := make([]float64, 1000)
		sample := make([]float64, len(xs))
		r := rand.New(rand.NewPCG(5, uint64(p)))
		for b := range boot {
			for i := range sample {
				sample[i] = xs[r.IntN(len(xs))]
			}
			boot[b] = Percentile(sample, p)
		}
		lo, hi := Percentile(boot, 2.5), Percentile(boot, 97.5)
		if !(got.Low <= got.Value && got.Value <= got.High) {
			t.Fatalf("p%v: interval [%v, %v] misses its value %v", p, got.Low, got.High, got.Value)
		}
		// The bootstrap's own quantiles of 1,000 resamples wobble by
		// about 4% of the interval's half-width (in ranks): allow 15%.
		tol := max(8, int(0.15*(float64(rank(got.High)-rank(got.Low))/2)))
		if d := rank(got.Low) - rank(lo); d < -tol || d > tol {
			t.Errorf("p%v: low at rank %d, the bootstrap's at %d", p, rank(got.Low), rank(lo))
		}
		if d := rank(got.High) - rank(hi); d < -tol || d > tol {
			t.Errorf("p%v: high at rank %d, the bootstrap's at %d", p, rank(got.High), rank(hi))
		}
	}
}
