package gof

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestLowerGammaP(t *testing.T) {
	for _, c := range []struct{ a, x, want float64 }{
		{1, 0.5, 1 - math.Exp(-0.5)},         // exponential
		{1, 7, 1 - math.Exp(-7)},             // continued-fraction side
		{2, 1, 1 - 2/math.E},                 // 1 − (1+x)e^{-x}
		{2, 5, 1 - 6*math.Exp(-5)},           //
		{0.5, 0.3, math.Erf(math.Sqrt(0.3))}, // P(1/2, x) = erf(√x)
		{0.5, 4, math.Erf(2)},
		// integer a: P(a, x) = P[Poisson(x) ≥ a], summed exactly in Python
		{25, 20, 0.156772621826}, // series side
		{25, 30, 0.842757972762}, // continued-fraction side
	} {
		if got := LowerGammaP(c.a, c.x); math.Abs(got-c.want) > 1e-7 {
			t.Errorf("P(%g, %g) = %.9f, want %.9f", c.a, c.x, got, c.want)
		}
	}
}

// Draws of a process pass their own KS test at 1% and fail another's.
func TestKSOfArrivalProcesses(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n, rate = 4000, 500.0
	exp := make([]int64, n)
	gam := make([]int64, n)
	var te, tg float64
	for i := range exp {
		te += rng.ExpFloat64() / rate
		// gamma of shape 4 (cv 0.5): a sum of four exponentials
		g := 0.0
		for k := 0; k < 4; k++ {
			g += rng.ExpFloat64() / (4 * rate)
		}
		tg += g
		exp[i], gam[i] = int64(te*1e9), int64(tg*1e9)
	}
	crit := Critical1(n - 1)
	if d := KSExponential(exp, rate); d > crit {
		t.Errorf("Poisson draws against the exponential: KS %.4f > %.4f", d, crit)
	}
	if d := KS(Gaps(gam), Gamma(rate, 0.5)); d > crit {
		t.Errorf("gamma draws against their gamma: KS %.4f > %.4f", d, crit)
	}
	if d := KS(Gaps(exp), Gamma(rate, 0.5)); d < 3*crit {
		t.Errorf("Poisson draws against gamma cv 0.5: KS %.4f, want far above %.4f", d, crit)
	}
	if d := KSExponential(gam, rate); d < 3*crit {
		t.Errorf("gamma draws against the exponential: KS %.4f, want far above %.4f", d, crit)
	}
	if d := KS(Gaps(exp), Gamma(rate, 1)); math.Abs(d-KSExponential(exp, rate)) > 1e-9 {
		t.Errorf("gamma of cv 1 is the exponential: %.6f vs %.6f", d, KSExponential(exp, rate))
	}
}
