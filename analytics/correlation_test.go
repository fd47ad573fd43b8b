package analytics

import (
	"fmt"
	"math"
	"math/rand/v2"
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
