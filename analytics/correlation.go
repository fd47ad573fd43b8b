package analytics

import (
	"math"
	"math/rand/v2"
	"sort"

	"github.com/llm-energy-measure/lem/schemas"
)

// CorrelationBin is the grid power and activity are compared on.
const CorrelationBin = 100e6 // ns

// Correlation relates power to the load during a run's cycles.
type Correlation struct {
	Bins int
	// Pearson and Spearman coefficients of the devices' summed power with
	// token throughput, requests in the system, and requests decoding
	// (the batch size as the server sees it), per 100 ms bin.
	Pearson, Spearman map[string]float64
	// LagMS is the shift of power against token throughput (−2…+2 s) that
	// correlates best: the effective sensor lag (≈0 for the 20 ms buffer,
	// ≈+500 ms for a 1 s moving average). LagCorr is that correlation.
	LagMS, LagCorr float64
}

// correlate bins power (summed over devices, sample-and-hold) and activity
// over the cycles' windows.
func correlate(windows [][2]int64, power [][]schemas.PowerSample, hold int64, reqs []schemas.Request, toks map[string][]schemas.Token) *Correlation {
	pbins := make([][]float64, len(windows))
	for k, w := range windows {
		for _, ps := range power {
			pbins[k] = addBins(pbins[k], powerBins(w, ps, hold))
		}
	}
	return correlateBins(windows, pbins, reqs, toks)
}

// powerBins is one series' mean power (W) in each CorrelationBin of w;
// nil when w holds fewer than two bins.
func powerBins(w [2]int64, ps []schemas.PowerSample, hold int64) []float64 {
	n := int((w[1] - w[0]) / CorrelationBin)
	if n < 2 {
		return nil
	}
	p := make([]float64, n)
	for i := 0; i < n; i++ {
		a := w[0] + int64(i)*CorrelationBin
		j, _ := IntegratePower(ps, a, a+CorrelationBin, hold)
		p[i] = j / (CorrelationBin / 1e9)
	}
	return p
}

// addBins adds b to a bin by bin (a nil a takes b).
func addBins(a, b []float64) []float64 {
	if a == nil {
		return b
	}
	for i := range b {
		a[i] += b[i]
	}
	return a
}

// correlateBins is correlate with each window's summed power already
// binned (powerBins), so that the series need not be held together.
func correlateBins(windows [][2]int64, pbins [][]float64, reqs []schemas.Request, toks map[string][]schemas.Token) *Correlation {
	var pw, thr, inSys, decoding []float64
	for k, w := range windows {
		n := int((w[1] - w[0]) / CorrelationBin)
		if n < 2 {
			continue
		}
		p := pbins[k]
		if p == nil {
			p = make([]float64, n)
		}
		th, sy, dc := make([]float64, n), make([]float64, n+1), make([]float64, n+1)
		bin := func(t int64) int {
			if t < w[0] || t >= w[0]+int64(n)*CorrelationBin {
				return -1
			}
			return int((t - w[0]) / CorrelationBin)
		}
		// firstMid is the first bin whose midpoint is at or after t.
		firstMid := func(t int64) int {
			b := int(math.Ceil(float64(t-w[0]-CorrelationBin/2) / CorrelationBin))
			return min(max(b, 0), n)
		}
		// Occupancy by difference arrays: +1 where a request enters, −1
		// where it leaves, then a running sum (linear in requests + bins).
		span := func(d []float64, a, b int64) {
			if a == 0 || b <= a {
				return
			}
			d[firstMid(a)]++
			d[firstMid(b)]--
		}
		for _, q := range reqs {
			for _, tk := range toks[q.ID] {
				if b := bin(tk.TS); b >= 0 {
					th[b] += float64(tk.Tokens) / (CorrelationBin / 1e9)
				}
			}
			done := q.Done
			if done == 0 {
				done = w[1]
			}
			span(sy, q.Sent, done)
			span(dc, q.FirstToken, q.LastToken)
		}
		for i := 1; i < n; i++ {
			sy[i] += sy[i-1]
			dc[i] += dc[i-1]
		}
		sy, dc = sy[:n], dc[:n]
		pw, thr, inSys, decoding = append(pw, p...), append(thr, th...), append(inSys, sy...), append(decoding, dc...)
	}
	if len(pw) < 10 {
		return nil
	}
	c := &Correlation{Bins: len(pw), Pearson: map[string]float64{}, Spearman: map[string]float64{}}
	for name, x := range map[string][]float64{"tokens_per_s": thr, "requests_in_system": inSys, "requests_decoding": decoding} {
		c.Pearson[name] = Pearson(pw, x)
		c.Spearman[name] = Spearman(pw, x)
	}
	c.LagCorr = math.Inf(-1)
	for lag := -20; lag <= 20; lag++ {
		// power at bin i+lag against throughput at bin i.
		var a, b []float64
		for i := range thr {
			if j := i + lag; j >= 0 && j < len(pw) {
				a, b = append(a, pw[j]), append(b, thr[i])
			}
		}
		if r := Pearson(a, b); r > c.LagCorr {
			c.LagCorr, c.LagMS = r, float64(lag)*CorrelationBin/1e6
		}
	}
	return c
}

// Pearson is the linear correlation coefficient (NaN without variance).
func Pearson(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) != len(y) || len(x) < 3 {
		return math.NaN()
	}
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

// Spearman is the rank correlation (average ranks for ties).
func Spearman(x, y []float64) float64 { return Pearson(ranks(x), ranks(y)) }

func ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return x[idx[a]] < x[idx[b]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j)/2 + 1
		}
		i = j + 1
	}
	return r
}

// PercentileCI is a percentile with its bootstrap 95% confidence interval.
type PercentileCI struct {
	P, Value, Low, High float64
	N                   int
}

// BootstrapMax is the largest sample BootstrapPercentile resamples; above
// it the interval is the order-statistic one its bootstrap converges to.
const BootstrapMax = 20_000

// BootstrapPercentile estimates percentile p of xs with a 95% interval:
// from 1,000 resamples (percentile method, fixed seed: reproducible) up to
// BootstrapMax values; above, the distribution-free interval between the
// order statistics whose ranks bound the binomial count of values below
// the percentile (normal approximation, z = 1.96) — what the bootstrap
// approaches for large samples, in O(n log n) instead of O(1,000 n): a
// 1 h × 8 GPU run has millions of inter-token gaps.
func BootstrapPercentile(xs []float64, p float64) PercentileCI {
	out := PercentileCI{P: p, N: len(xs), Value: math.NaN(), Low: math.NaN(), High: math.NaN()}
	if len(xs) == 0 {
		return out
	}
	data := append([]float64(nil), xs...)
	out.Value = Percentile(data, p) // sorts data
	if len(xs) < 2 {
		return out
	}
	if len(xs) > BootstrapMax {
		n, q := float64(len(data)), p/100
		half := 1.96 * math.Sqrt(n*q*(1-q))
		lo := int(math.Max(0, math.Floor(q*(n-1)-half)))
		hi := int(math.Min(n-1, math.Ceil(q*(n-1)+half)))
		out.Low, out.High = data[lo], data[hi]
		return out
	}
	rng := rand.New(rand.NewPCG(0xb00757, uint64(len(xs))))
	const B = 1000
	// A resample is a multiset of xs's indices; its sorted order is xs's
	// sorted order with each value repeated as often as it was drawn, so
	// its percentile is read off the counts by rank without sorting (the
	// same draws and the same interpolation as sorting each resample).
	n := len(xs)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return xs[order[a]] < xs[order[b]] })
	rank := make([]int, n)
	for r, i := range order {
		rank[i] = r
	}
	h := p / 100 * float64(n-1)
	lo := int(math.Floor(h))
	count := make([]int, n)
	est := make([]float64, B)
	for b := 0; b < B; b++ {
		clear(count)
		for range n {
			count[rank[rng.IntN(n)]]++
		}
		// The values at sorted positions lo and lo+1 of the resample.
		var vlo, vhi float64
		seen, r := 0, 0
		for ; r < n; r++ {
			if seen+count[r] > lo {
				break
			}
			seen += count[r]
		}
		vlo = xs[order[r]]
		if lo+1 >= n {
			est[b] = vlo
			continue
		}
		if seen+count[r] > lo+1 {
			vhi = vlo
		} else {
			for r++; count[r] == 0; r++ {
			}
			vhi = xs[order[r]]
		}
		est[b] = vlo + (h-float64(lo))*(vhi-vlo)
	}
	out.Low, out.High = Percentile(est, 2.5), Percentile(est, 97.5)
	return out
}

// MinLagCorr is the correlation below which the best lag is not reported
// as the sensor's: power that barely follows the load says nothing about
// when it follows it.
const MinLagCorr = 0.5
