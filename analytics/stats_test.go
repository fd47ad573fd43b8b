package analytics

import (
	"math"
	"testing"
)

func TestStudentT(t *testing.T) {
	// Reference quantiles t_{0.975, df} from standard tables.
	for df, want := range map[float64]float64{1: 12.706, 2: 4.303, 4: 2.776, 9: 2.262, 29: 2.045, 1000: 1.962} {
		if got := StudentTQuantile(0.975, df); math.Abs(got-want) > 0.001 {
			t.Errorf("t(0.975, %v) = %.4f, want %.3f", df, got, want)
		}
	}
}

func TestSummarise(t *testing.T) {
	s := Summarise([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	// mean 5, sample std sqrt(32/7), CI = t(0.975,7) * std / sqrt(8)
	if s.N != 8 || s.Mean != 5 || math.Abs(s.Std-math.Sqrt(32.0/7)) > 1e-12 {
		t.Fatalf("%+v", s)
	}
	if want := 2.3646 * math.Sqrt(32.0/7) / math.Sqrt(8); math.Abs(s.CI95-want) > 1e-3 {
		t.Fatalf("CI95 %v, want %v", s.CI95, want)
	}
	if one := Summarise([]float64{3}); one.Mean != 3 || !math.IsNaN(one.CI95) {
		t.Fatalf("%+v", one)
	}
	if p := Percentile([]float64{4, 1, 3, 2}, 50); p != 2.5 {
		t.Fatalf("median %v", p)
	}
}
