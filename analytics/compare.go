package analytics

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ConfigValue finds key (any case) anywhere in a run's configuration JSON (the first
// occurrence, depth first) and returns it as text ("" when absent).
func ConfigValue(config, key string) string {
	var v any
	if json.Unmarshal([]byte(config), &v) != nil {
		return ""
	}
	var find func(v any) (string, bool)
	find = func(v any) (string, bool) {
		switch x := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if strings.EqualFold(k, key) {
					if s, ok := x[k].(string); ok {
						return s, true
					}
					if x[k] != nil {
						b, _ := json.Marshal(x[k])
						return string(b), true
					}
				}
			}
			for _, k := range keys {
				if s, ok := find(x[k]); ok {
					return s, true
				}
			}
		case []any:
			for _, c := range x {
				if s, ok := find(c); ok {
					return s, true
				}
			}
		}
		return "", false
	}
	s, _ := find(v)
	return s
}

var paramsRE = regexp.MustCompile(`(?i)(\d+(?:\.\d+)?)\s*([BM])\b`)

// ModelSize returns a model's parameter count in billions read from its
// name ("Llama-3.1-8B", "random:llama-0.9b"), 0 when the name does not say.
func ModelSize(model string) float64 {
	m := paramsRE.FindStringSubmatch(model)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	if strings.EqualFold(m[2], "M") {
		v /= 1000
	}
	return v
}

// ErrMixedBackends rejects pooling runs of different backends.
type ErrMixedBackends struct{ ByBackend map[string][]string }

func (e ErrMixedBackends) Error() string {
	var parts []string
	for b, ids := range e.ByBackend {
		parts = append(parts, fmt.Sprintf("%s: %s", b, strings.Join(ids, ", ")))
	}
	sort.Strings(parts)
	return "cannot aggregate runs of different backends (" + strings.Join(parts, "; ") +
		"): their cycles are not samples of one distribution; compare them side by side instead"
}

// Aggregate pools the cycles of runs of one backend and model into one
// result (name), its statistics over all their cycles. Runs of different
// backends or models are rejected.
func Aggregate(name string, runs []*RunResult) (*RunResult, error) {
	if len(runs) == 0 {
		return nil, fmt.Errorf("nothing to aggregate")
	}
	by := map[string][]string{}
	models := map[string]bool{}
	for _, r := range runs {
		by[r.Backend] = append(by[r.Backend], r.RunID)
		models[r.Model] = true
	}
	if len(by) > 1 {
		return nil, ErrMixedBackends{ByBackend: by}
	}
	if len(models) > 1 {
		return nil, fmt.Errorf("cannot aggregate runs of different models (%d models): compare them instead", len(models))
	}
	if err := sameMeasurement(runs); err != nil {
		return nil, err
	}
	out := &RunResult{RunID: name, Experiment: runs[0].Experiment, Backend: runs[0].Backend, Model: runs[0].Model,
		Config: runs[0].Config, BaselineW: map[string]float64{}, SeriesShiftMS: map[string]float64{}, Summary: map[string]Stat{},
		Quality: QualityOK}
	for _, r := range runs {
		out.Devices = append(out.Devices, r.Devices...)
		out.Cycles = append(out.Cycles, r.Cycles...)
		out.Requests = append(out.Requests, r.Requests...)
		out.Quality = worse(out.Quality, r.Quality)
		out.Simulated = out.Simulated || r.Simulated
		out.Apportioned = out.Apportioned || r.Apportioned
	}
	summarise(out)
	return out, nil
}

// Comparison is one run (or aggregate) in a comparison.
type Comparison struct {
	Result *RunResult
	// Load is what drove the run: "16 in flight" (a closed loop of 16
	// concurrent requests) or "poisson 6/s" (an open loop's process and
	// rate).
	Load       string
	Precision  string
	ModelSizeB float64
}

// NewComparison reads what a comparison shows from a result.
func NewComparison(r *RunResult) Comparison {
	c := Comparison{Result: r, Precision: ConfigValue(r.Config, "precision"), ModelSizeB: ModelSize(r.Model)}
	if n := ConfigValue(r.Config, "concurrency"); n != "" {
		c.Load = n + " in flight"
	}
	if c.Precision == "" {
		c.Precision = "default"
	}
	if proc := ConfigValue(r.Config, "process"); proc != "" && proc != "concurrency" {
		// An open loop: its rate, not a concurrency, describes the load.
		c.Load = proc + " " + ConfigValue(r.Config, "rate") + "/s"
	}
	return c
}

// PrintComparison writes the side-by-side table (mean ± 95% CI over cycles).
func PrintComparison(w io.Writer, cs []Comparison) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tbackend\tmodel\tprecision\tload\tcycles\tJ/token\ttokens/J\tthroughput tok/s\tTTFT p50 ms\tITL p50 ms\tenergy J/cycle\tquality")
	for _, c := range cs {
		r := c.Result
		s := r.Summary
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.RunID, r.Backend, r.Model, c.Precision, c.Load,
			len(r.Cycles), fmtCI(s["j_per_token"]), fmtCI(s["tokens_per_j"]), fmtCI(s["throughput_tok_s"]), fmtCI(s["ttft_p50_ms"]),
			fmtCI(s["itl_p50_ms"]), fmtCI(s["energy_j"]), r.Label())
	}
	tw.Flush()
	for _, c := range cs {
		if c.Result.Simulated {
			fmt.Fprintln(w, "NOTE: runs marked simulated used the simulator's power: not measurements.")
			break
		}
	}
}

// CycleValues returns metric m of each cycle of r (for box plots).
func CycleValues(r *RunResult, m string) []float64 {
	var out []float64
	for _, c := range r.Cycles {
		v := cycleMetric(&c, m)
		if !math.IsNaN(v) {
			out = append(out, v)
		}
	}
	return out
}

// sameMeasurement refuses to pool runs whose configurations differ in
// anything that changes what they measure — workload, arrival, lengths,
// sampling, precision, quantisation, parallelism, the number of devices —
// naming the first such field. Names, seeds, the protocol's timing
// (cycles, baseline, cool-down) and how the server is reached do not count.
func sameMeasurement(runs []*RunResult) error {
	flat := make([]map[string]string, len(runs))
	for i, r := range runs {
		flat[i] = map[string]string{"devices": fmt.Sprint(len(r.Devices))}
		var doc any
		if r.Config != "" && json.Unmarshal([]byte(r.Config), &doc) == nil {
			flattenJSON("", doc, flat[i])
		}
	}
	keys := map[string]bool{}
	for _, f := range flat {
		for k := range f {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		if !ignoredForPooling(k) {
			sorted = append(sorted, k)
		}
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		for i := 1; i < len(runs); i++ {
			if a, b := flat[0][k], flat[i][k]; a != b {
				return fmt.Errorf("cannot aggregate %s with %s: %s differs (%s against %s): they measure different things; compare them instead",
					runs[0].RunID, runs[i].RunID, k, orNone(a), orNone(b))
			}
		}
	}
	return nil
}

func orNone(v string) string {
	if v == "" {
		return "not set"
	}
	return v
}

// ignoredForPooling lists configuration paths that do not change what a
// run measures.
func ignoredForPooling(k string) bool {
	for _, p := range []string{"run", "experiment", "version", "measurement", "backend.env", "backend.log_file", "backend.port",
		"backend.host", "backend.endpoint", "backend.startup_timeout", "backend.command", "workload.warmup", "workload.timeout",
		"workload.tokenize", "workload.arrival.coarse_timing", "Run", "Measurement"} {
		if k == p || strings.HasPrefix(k, p+".") || strings.HasPrefix(k, p+"[") {
			return true
		}
	}
	return false
}

// flattenJSON maps every leaf of a decoded JSON document to its dotted
// path.
func flattenJSON(prefix string, v any, out map[string]string) {
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			flattenJSON(join(k), c, out)
		}
	case []any:
		b, _ := json.Marshal(x)
		out[prefix] = string(b)
	case nil:
	default:
		out[prefix] = fmt.Sprint(x)
	}
}
