package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Arrival processes.
const (
	ArrivalPoisson     = "poisson"     // exponential gaps at Rate
	ArrivalConstant    = "constant"    // 1/Rate apart
	ArrivalGamma       = "gamma"       // gamma gaps at Rate with coefficient of variation Burstiness
	ArrivalConcurrency = "concurrency" // closed loop: Concurrency requests in flight
	ArrivalTrace       = "trace"       // offsets from a file
)

// Arrival describes when requests are sent.
type Arrival struct {
	Process     string  `yaml:"process"`
	Rate        float64 `yaml:"rate"`        // requests/s (poisson, constant, gamma)
	Burstiness  float64 `yaml:"burstiness"`  // gamma: CV of the gaps (1 = Poisson, >1 burstier, <1 smoother)
	Concurrency int     `yaml:"concurrency"` // closed loop
	Trace       string  `yaml:"trace"`       // file: one offset in seconds per line, or JSONL {"t": s, ...}
	// TimeScale stretches trace offsets (0.5 replays twice as fast).
	TimeScale float64 `yaml:"time_scale"`
	// CoarseTiming paces open-loop arrivals with timers alone (~1 ms late,
	// bunched on ticks) instead of holding each write to its deadline (the
	// send thread spins the last 50 µs, 10% of a core at 2,000
	// requests/s; without cgo the writer spins 1.5 ms), which matters when
	// the load generator shares the measured host's CPU energy.
	CoarseTiming bool `yaml:"coarse_timing"`
}

// Validate names the first wrong field.
func (a Arrival) Validate() error {
	// A field of the other kind of process would be stored with the run
	// and read as if it had shaped the load.
	switch {
	case a.Process != ArrivalConcurrency && a.Concurrency != 0:
		return fmt.Errorf("arrival.concurrency: only a closed loop (process: concurrency) has one; %s arrivals are sent on schedule whatever is in flight — remove it", a.Process)
	case a.Process == ArrivalConcurrency && a.Rate != 0:
		return fmt.Errorf("arrival.rate: a closed loop (process: concurrency) sends when a request ends, at no set rate — remove it, or use an open-loop process (poisson, constant, gamma)")
	}
	switch a.Process {
	case ArrivalPoisson, ArrivalConstant:
		if !(a.Rate > 0) {
			return fmt.Errorf("arrival.rate: %s arrivals need a positive rate (requests/s)", a.Process)
		}
	case ArrivalGamma:
		if !(a.Rate > 0) {
			return fmt.Errorf("arrival.rate: gamma arrivals need a positive rate")
		}
		if !(a.Burstiness > 0) {
			return fmt.Errorf("arrival.burstiness: gamma arrivals need a positive coefficient of variation (1 = Poisson)")
		}
	case ArrivalConcurrency:
		if a.Concurrency < 1 {
			return fmt.Errorf("arrival.concurrency: must be at least 1")
		}
	case ArrivalTrace:
		if a.Trace == "" {
			return fmt.Errorf("arrival.trace: a trace file is required")
		}
	default:
		return fmt.Errorf("arrival.process: unknown %q (poisson, constant, gamma, concurrency or trace)", a.Process)
	}
	return nil
}

// Schedule returns n send offsets (ns from the start) for an open-loop
// process; closed loops (concurrency) return nil. Offsets are absolute
// deadlines: the runner sleeps until each, never for a relative gap.
func (a Arrival) Schedule(n int, rng *rand.Rand) ([]int64, error) {
	out := make([]int64, 0, n)
	var t float64
	switch a.Process {
	case ArrivalConcurrency:
		return nil, nil
	case ArrivalPoisson:
		for i := 0; i < n; i++ {
			t += rng.ExpFloat64() / a.Rate
			out = append(out, int64(t*1e9))
		}
	case ArrivalConstant:
		for i := 0; i < n; i++ {
			out = append(out, int64(float64(i)/a.Rate*1e9))
		}
	case ArrivalGamma:
		// Gaps ~ Gamma(k, θ) with mean 1/rate and CV = 1/√k.
		k := 1 / (a.Burstiness * a.Burstiness)
		theta := 1 / (a.Rate * k)
		for i := 0; i < n; i++ {
			t += gamma(rng, k) * theta
			out = append(out, int64(t*1e9))
		}
	case ArrivalTrace:
		ts, err := readTrace(a.Trace)
		if err != nil {
			return nil, err
		}
		scale := a.TimeScale
		if scale <= 0 {
			scale = 1
		}
		for i := 0; i < n && i < len(ts); i++ {
			out = append(out, int64(ts[i]*scale*1e9))
		}
		if len(out) < n {
			return nil, fmt.Errorf("arrival.trace: %s has %d arrivals, %d requested", a.Trace, len(ts), n)
		}
	default:
		return nil, a.Validate()
	}
	return out, nil
}

// gamma draws from Gamma(k, 1) (Marsaglia and Tsang, 2000; boosted for k < 1).
func gamma(rng *rand.Rand, k float64) float64 {
	if k < 1 {
		return gamma(rng, k+1) * math.Pow(rng.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// readTrace reads arrival offsets in seconds: one number per line, or JSON
// lines with a "t" (or "timestamp") field; sorted, made relative to the
// first.
func readTrace(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrival.trace: %w", err)
	}
	defer f.Close()
	return parseTrace(f, path)
}

func parseTrace(r io.Reader, path string) ([]float64, error) {
	var err error
	var ts []float64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		var v float64
		if strings.HasPrefix(s, "{") {
			var rec struct {
				T  *float64 `json:"t"`
				TS *float64 `json:"timestamp"`
			}
			if err := json.Unmarshal([]byte(s), &rec); err != nil || (rec.T == nil && rec.TS == nil) {
				return nil, fmt.Errorf("arrival.trace: %s line %d: want a number or {\"t\": seconds}", path, line)
			}
			if rec.T != nil {
				v = *rec.T
			} else {
				v = *rec.TS
			}
		} else if v, err = strconv.ParseFloat(s, 64); err != nil {
			return nil, fmt.Errorf("arrival.trace: %s line %d: %q is not a number of seconds", path, line, s)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("arrival.trace: %s line %d: offset %v", path, line, v)
		}
		ts = append(ts, v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Float64s(ts)
	for i := len(ts) - 1; i >= 0 && len(ts) > 0; i-- {
		ts[i] -= ts[0]
	}
	return ts, nil
}
