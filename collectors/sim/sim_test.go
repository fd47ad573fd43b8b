package sim

import (
	"reflect"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

var start = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func run(seed uint64, seconds int) ([]schemas.PowerSample, []schemas.EnergyReading) {
	s := New(Config{Seed: seed}, start)
	var ps []schemas.PowerSample
	var es []schemas.EnergyReading
	for i := 1; i <= seconds; i++ {
		pb, eb := s.Advance(0, start.Add(time.Duration(i)*time.Second).UnixNano())
		ps = append(ps, pb.Samples...)
		es = append(es, eb.Readings...)
	}
	return ps, es
}

func TestDeterministic(t *testing.T) {
	a, _ := run(7, 10)
	b, _ := run(7, 10)
	c, _ := run(8, 10)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, different samples")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("different seeds, same samples")
	}
	if len(a) != 500 {
		t.Fatalf("%d samples in 10 s, want 500 (50 Hz)", len(a))
	}
}

// The counter must be the exact sample-and-hold integral of the samples.
func TestCounterIsIntegral(t *testing.T) {
	ps, es := run(1, 30)
	if len(es) != 300 {
		t.Fatalf("%d counter readings in 30 s, want 300 (10 Hz)", len(es))
	}
	for _, e := range es {
		var sum float64
		for _, p := range ps {
			if p.TS >= e.TSBefore {
				break
			}
			end := min(p.TS+int64(20*time.Millisecond), e.TSBefore)
			sum += float64(p.Power) * float64(end-p.TS) / 1e6
		}
		if d := float64(e.Energy) - sum; d > 1 || d < -1 {
			t.Fatalf("counter at %d = %d µJ, integral %.0f µJ", e.TSBefore, e.Energy, sum)
		}
	}
}

// Shape: idle near 83 W, burst above 600 W, and a tail above idle after
// the burst that decays.
func TestShape(t *testing.T) {
	ps, _ := run(1, 30)
	mean := func(from, to time.Duration) float64 {
		var s float64
		var n int
		for _, p := range ps {
			d := time.Duration(p.TS - start.UnixNano())
			if d >= from && d < to {
				s += p.Power.Watts()
				n++
			}
		}
		return s / float64(n)
	}
	if m := mean(0, 3*time.Second); m < 80 || m > 86 {
		t.Errorf("idle %.1f W", m)
	}
	if m := mean(5*time.Second, 7*time.Second); m < 600 {
		t.Errorf("burst %.1f W", m)
	}
	early, late := mean(7*time.Second, 7500*time.Millisecond), mean(8500*time.Millisecond, 9*time.Second)
	if !(early > late && late > 90) {
		t.Errorf("tail: %.1f W then %.1f W, want elevated and decaying", early, late)
	}
}
