package analytics

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/schemas"
)

// poissonSends draws n Poisson arrivals at rate from t0 and sends each as
// send(scheduled) says.
func poissonSends(seed uint64, cycle uint32, t0 int64, n int, rate float64, send func(i int, scheduled int64) int64) []schemas.Request {
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []schemas.Request
	t := float64(t0)
	for i := 0; i < n; i++ {
		t += rng.ExpFloat64() / rate * 1e9
		s := int64(t)
		sent := send(i, s)
		out = append(out, schemas.Request{ID: fmt.Sprintf("c%d-r%d", cycle, i), Cycle: cycle, Scheduled: s, Sent: sent,
			FirstToken: sent + 5e6, LastToken: sent + 5e6, Done: sent + 6e6, OutputTokens: 1, Status: schemas.StatusOK})
	}
	return out
}

func arrivalConfig(process string, rate, cv float64) string {
	return fmt.Sprintf(`{"version":1,"workload":{"arrival":{"process":%q,"rate":%g,"burstiness":%g}}}`, process, rate, cv)
}

// The pacing rule: sends on time pass; sends that fall behind, or whose
// gaps are bunched on a timer's ticks, fail it and say which way.
func TestPacingRule(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC).UnixNano()
	jitter := rand.New(rand.NewPCG(3, 3))
	for _, c := range []struct {
		name   string
		rate   float64
		send   func(i int, s int64) int64
		held   bool
		reason string
	}{
		{"on time", 2000, func(_ int, s int64) int64 { return s + 5e3 + jitter.Int64N(20e3) }, true, ""},
		// A saturated client: each send waits for the one before it, 1 ms
		// of work each, so a backlog builds at 2,000/s.
		{"falls behind", 2000, func() func(int, int64) int64 {
			var free int64
			return func(_ int, s int64) int64 { free = max(free, s) + 1e6; return free }
		}(), false, "behind their schedule"},
		// Timers alone on a 1 ms tick: never 1 ms late, but the gaps are
		// whole milliseconds — no longer exponential at 2,000/s.
		{"bunched on ticks", 2000, func(_ int, s int64) int64 { return (s/1e6 + 1) * 1e6 }, false, "no longer Poisson at 2000/s"},
		// A few sends 3 ms late at 100/s (a CPU-bound llama.cpp on the same
		// two cores did this): each still leaves within its own gap.
		{"a few ms late", 100, func(i int, s int64) int64 {
			if i%50 == 0 {
				return s + 3e6
			}
			return s + 20e3
		}, true, ""},
		// The same ticks at 5/s: the gaps (200 ms on average) barely change.
		{"ticks at a low rate", 5, func(_ int, s int64) int64 { return (s/1e6 + 1) * 1e6 }, true, ""},
	} {
		reqs := poissonSends(1, 0, t0, 2000, c.rate, c.send)
		p := pacing(arrivalConfig("poisson", c.rate, 0), reqs)
		if p == nil {
			t.Fatalf("%s: no verdict for an open loop", c.name)
		}
		if p.Held != c.held || !strings.Contains(p.Why, c.reason) {
			t.Errorf("%s: held %v (%q), want %v (%q); late p99 %.3f ms, KS %.4f (critical %.4f, schedule %.4f)",
				c.name, p.Held, p.Why, c.held, c.reason, p.LateP99MS, p.KS, p.KSCritical, p.ScheduleKS)
		}
	}
	if p := pacing(`{"workload":{"arrival":{"process":"concurrency","concurrency":8}}}`, poissonSends(1, 0, t0, 100, 10, func(_ int, s int64) int64 { return s })); p != nil {
		t.Errorf("a closed loop has no schedule to keep: %+v", p)
	}
	if p := pacing(arrivalConfig("poisson", 10, 0), poissonSends(1, 0, t0, 5, 10, func(_ int, s int64) int64 { return s + 1e9 })); !p.Held || !strings.Contains(p.Why, "too few") {
		t.Errorf("5 sends: %+v", p)
	}
	// Gamma sends judged against the configured gamma, not the exponential.
	rng := rand.New(rand.NewPCG(4, 4))
	var reqs []schemas.Request
	ts := float64(t0)
	for i := 0; i < 2000; i++ {
		g := 0.0
		for k := 0; k < 4; k++ { // shape 4: CV 0.5
			g += rng.ExpFloat64() / (4 * 100)
		}
		ts += g * 1e9
		reqs = append(reqs, schemas.Request{ID: fmt.Sprint(i), Scheduled: int64(ts), Sent: int64(ts) + 10e3})
	}
	if p := pacing(arrivalConfig("gamma", 100, 0.5), reqs); !p.Held || p.KS > p.KSCritical {
		t.Errorf("gamma sends on time: %+v", p)
	}
	if p := pacing(arrivalConfig("poisson", 100, 0), reqs); p.ScheduleKS <= p.KSCritical {
		t.Errorf("gamma CV 0.5 passed as Poisson: %+v", p)
	}
}

// Through lem analyze: an open-loop run whose second cycle fell behind
// is flagged schedule_slip, the cycle named, and the output says why.
func TestAnalyzeFlagsScheduleSlip(t *testing.T) {
	start := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Devices: 1, Seed: 5, NoiseW: 0.001}, start)
	m := &memStore{energy: map[string][]Reading{}, tokens: map[string][]schemas.Token{}, power: map[string][]schemas.PowerSample{}}
	dev := s.Devices()[0].UUID
	for sec := 1; sec <= 20; sec++ {
		_, eb := s.Advance(0, t0+int64(sec)*1e9)
		for _, e := range eb.Readings {
			m.energy[dev] = append(m.energy[dev], Reading{EnergyReading: e, Source: "sim"})
		}
	}
	sec := func(k float64) int64 { return t0 + int64(k*1e9) }
	cfg := arrivalConfig("poisson", 500, 0)
	ev := func(c uint32, p schemas.RunPhase, ts int64) schemas.RunEvent {
		return schemas.RunEvent{RunID: "r", Backend: "synthetic", Config: cfg, Cycle: c, Phase: p, TS: ts, Devices: []string{dev}}
	}
	for c := uint32(0); c < 3; c++ {
		from := sec(2 + 5*float64(c))
		m.runs = append(m.runs, ev(c, schemas.RunStart, from), ev(c, schemas.RunEnd, from+4e9))
		send := func(_ int, s int64) int64 { return s + 20e3 }
		if c == 1 {
			var free int64
			send = func(_ int, s int64) int64 { free = max(free, s) + 3e6; return free } // 3 ms a send at 500/s
		}
		m.requests = append(m.requests, poissonSends(uint64(c+1), c, from, 1000, 500, send)...)
	}
	res, err := AnalyzeRun(context.Background(), m, "r")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Cycles {
		if slip := hasFlag(c.Flags, FlagScheduleSlip); slip != (c.Cycle == 1) {
			t.Errorf("cycle %d: flags %v (pacing %+v)", c.Cycle, c.Flags, c.Pacing)
		}
	}
	if !hasFlag(res.Flags, FlagScheduleSlip) || !strings.Contains(res.Label(), FlagScheduleSlip) {
		t.Errorf("run flags %v, label %q", res.Flags, res.Label())
	}
	var b bytes.Buffer
	PrintRun(&b, res)
	if out := b.String(); !strings.Contains(out, "WARNING: cycle 1 (schedule_slip): sends left 1096 ms behind their schedule at p99 (allowed: 5.00 ms)") || strings.Contains(out, "WARNING: cycle 0") ||
		strings.Contains(out, "NaN") { // one-token responses have no ITL: "—", not NaN
		t.Errorf("analyze output:\n%s", out)
	}
}
