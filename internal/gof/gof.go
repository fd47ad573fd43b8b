// Package gof tests how well observed gaps between events fit the
// distribution an arrival process draws them from (one-sample
// Kolmogorov–Smirnov). The load generator's benchmarks and the analysis of
// a run's sends use the same statistic.
package gof

import (
	"math"
	"sort"
)

// Gaps returns the seconds between successive times (ns), sorted
// ascending; times must be in order.
func Gaps(times []int64) []float64 {
	if len(times) < 2 {
		return nil
	}
	g := make([]float64, len(times)-1)
	for i := 1; i < len(times); i++ {
		g[i-1] = float64(times[i]-times[i-1]) / 1e9
	}
	sort.Float64s(g)
	return g
}

// KS is the Kolmogorov–Smirnov statistic of sorted xs against cdf: the
// largest distance between their empirical and theoretical distribution
// functions (NaN for no values).
func KS(sorted []float64, cdf func(float64) float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	n := float64(len(sorted))
	var d float64
	for i, x := range sorted {
		f := cdf(x)
		d = math.Max(d, math.Max(f-float64(i)/n, float64(i+1)/n-f))
	}
	return d
}

// Critical1 is the KS statistic's critical value at the 1% level for n
// values (the asymptotic 1.63/√n; for n ≥ 35 within 1% of the exact one).
func Critical1(n int) float64 { return 1.63 / math.Sqrt(float64(n)) }

// Exponential is the distribution function of gaps of a Poisson process
// of rate (events/s).
func Exponential(rate float64) func(float64) float64 {
	return func(x float64) float64 {
		if x <= 0 {
			return 0
		}
		return -math.Expm1(-rate * x)
	}
}

// Gamma is the distribution function of gamma gaps at rate (events/s)
// whose coefficient of variation is cv: shape 1/cv², mean 1/rate.
func Gamma(rate, cv float64) func(float64) float64 {
	k := 1 / (cv * cv)
	theta := 1 / (rate * k)
	return func(x float64) float64 {
		if x <= 0 {
			return 0
		}
		return LowerGammaP(k, x/theta)
	}
}

// KSExponential is KS of the gaps between times (ns, in order) against
// the exponential distribution of rate: how far a schedule, as sent, is
// from a Poisson process.
func KSExponential(times []int64, rate float64) float64 {
	return KS(Gaps(times), Exponential(rate))
}

// LowerGammaP is the regularised lower incomplete gamma function P(a, x)
// for a > 0, x ≥ 0: its series where it converges fast (x < a + 1), else
// one minus the continued fraction of Q(a, x) evaluated by Lentz's method.
func LowerGammaP(a, x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case math.IsInf(x, 1):
		return 1
	}
	lg, _ := math.Lgamma(a)
	front := math.Exp(a*math.Log(x) - x - lg)
	if x < a+1 {
		// P = e^{-x} x^a / Γ(a+1) · Σ x^n / ((a+1)…(a+n))
		sum, term := 1/a, 1/a
		for n := 1; n < 1000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return math.Min(1, sum*front)
	}
	// Q = e^{-x} x^a / Γ(a) · 1/(x+1−a− 1·(1−a)/(x+3−a− 2·(2−a)/(x+5−a−…)))
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	h := d
	for i := 1; i < 1000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < 1e-15 {
			break
		}
	}
	return math.Max(0, 1-front*h)
}
