package platform

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
)

// Entry is one published run as the leaderboard shows it: its
// configuration (the dimensions it is filtered by) and the figures the
// platform recomputed from its raw events. Numbers absent from the run
// are nil (JSON null, "—" on the page), never 0.
type Entry struct {
	RunID       string   `json:"run_id"`
	Experiment  string   `json:"experiment"`
	Model       string   `json:"model"`
	Backend     string   `json:"backend"`
	Precision   string   `json:"precision"`
	Parallelism string   `json:"parallelism"`
	Hardware    string   `json:"hardware"`
	GPUs        int      `json:"gpus"`
	Workload    string   `json:"workload"`
	Load        string   `json:"load"` // the workload's arrival: "8 in flight", "poisson 6/s"
	Cycles      int      `json:"cycles"`
	Quality     string   `json:"quality"`
	Flags       []string `json:"flags"`
	Simulated   bool     `json:"simulated"`
	// Verification: "verified" (uploaded, recomputed, every check passed),
	// "recomputed" (from the platform's own store: recomputed, not
	// uploaded), "failed".
	Verification string `json:"verification"`
	Submitter    string `json:"submitter"`
	StartedNS    int64  `json:"started_ns"`
	PublishedNS  int64  `json:"published_ns"`

	JPerToken      *float64 `json:"j_per_token"`
	JPerTokenCI    *float64 `json:"j_per_token_ci95"`
	JPerRequest    *float64 `json:"j_per_request"`
	JPerRequestCI  *float64 `json:"j_per_request_ci95"`
	TokensPerS     *float64 `json:"tokens_per_s"`
	TTFTp50        *float64 `json:"ttft_p50_ms"`
	TTFTp99        *float64 `json:"ttft_p99_ms"`
	ITLp50         *float64 `json:"itl_p50_ms"`
	MeanPowerW     *float64 `json:"mean_power_w"`
	EnergyJ        *float64 `json:"energy_j"`
	WorkloadDetail string   `json:"workload_detail"`
	// Parameters is the model's parameter count as the run recorded it
	// (the server's report, the weights' headers, or a declaration: the
	// source says which); null when nothing told.
	Parameters       *float64 `json:"parameters"`
	ParametersSource string   `json:"parameters_source,omitempty"`
	// Moderation is the submission's state on a moderated platform
	// (pending, approved, rejected, changes_requested); empty where none
	// is needed (no moderation, or the operator's own runs).
	Moderation string `json:"moderation,omitempty"`
}

func fp(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// NewEntry builds a run's leaderboard entry from its recomputed result and
// its first run event (configuration and inventory).
func NewEntry(r *analytics.RunResult, ev schemas.RunEvent, deviceNames []string) Entry {
	e := Entry{RunID: r.RunID, Experiment: r.Experiment, Model: r.Model, Backend: r.Backend, Cycles: len(r.Cycles),
		Quality: r.Quality, Flags: append([]string{}, r.Flags...), Simulated: r.Simulated, GPUs: len(r.Devices), StartedNS: ev.TS}
	var doc struct {
		Backend struct {
			Kind        string `json:"kind"`
			Model       string `json:"model"`
			Precision   string `json:"precision"`
			Parallelism struct {
				Tensor, Pipeline, Data int
			} `json:"parallelism"`
		} `json:"backend"`
		Workload struct {
			API     string `json:"api"`
			Arrival struct {
				Process     string  `json:"process"`
				Concurrency int     `json:"concurrency"`
				Rate        float64 `json:"rate"`
			} `json:"arrival"`
			Dataset struct {
				Kind         string `json:"kind"`
				Path         string `json:"path"`
				PromptTokens struct {
					Mean float64 `json:"mean"`
				} `json:"prompt_tokens"`
				OutputTokens struct {
					Mean float64 `json:"mean"`
				} `json:"output_tokens"`
			} `json:"dataset"`
			Requests int    `json:"requests"`
			Adapter  string `json:"adapter"`
		} `json:"workload"`
	}
	_ = json.Unmarshal([]byte(r.Config), &doc)
	if e.Model == "" {
		e.Model = doc.Backend.Model
	}
	if e.Backend == "" {
		e.Backend = doc.Backend.Kind
	}
	e.Precision = doc.Backend.Precision
	if e.Precision == "" {
		e.Precision = "default"
	}
	p := doc.Backend.Parallelism
	e.Parallelism = fmt.Sprintf("tp%d pp%d dp%d", max(p.Tensor, 1), max(p.Pipeline, 1), max(p.Data, 1))
	// Hardware: the devices' product names, counted.
	count := map[string]int{}
	for _, n := range deviceNames {
		count[n]++
	}
	var hw []string
	for n, c := range count {
		if c > 1 {
			hw = append(hw, fmt.Sprintf("%d× %s", c, n))
		} else {
			hw = append(hw, n)
		}
	}
	sort.Strings(hw)
	e.Hardware = strings.Join(hw, " + ")
	var inv struct {
		GPU              string  `json:"gpu"`
		Parameters       float64 `json:"model_parameters"`
		ParametersSource string  `json:"model_parameters_source"`
	}
	_ = json.Unmarshal([]byte(ev.Inventory), &inv)
	if e.Hardware == "" {
		e.Hardware = inv.GPU
	}
	if inv.Parameters > 0 {
		e.Parameters, e.ParametersSource = fp(inv.Parameters), inv.ParametersSource
	}
	if e.Hardware == "" {
		e.Hardware = "unknown"
	}
	// Workload: what was sent, as a filterable label; runs of different
	// workloads are never ranked together unless the user asks.
	w := doc.Workload
	ds := w.Dataset.Kind
	if ds == "" {
		ds = "synthetic"
	}
	if w.Dataset.Path != "" {
		ds += ":" + lastPath(w.Dataset.Path)
	} else if w.Dataset.PromptTokens.Mean > 0 || w.Dataset.OutputTokens.Mean > 0 {
		ds += fmt.Sprintf(" %g→%g tokens", w.Dataset.PromptTokens.Mean, w.Dataset.OutputTokens.Mean)
	}
	var load string
	switch w.Arrival.Process {
	case "", "concurrency":
		load = fmt.Sprintf("%d in flight", max(w.Arrival.Concurrency, 1))
	default:
		load = fmt.Sprintf("%s %g/s", w.Arrival.Process, w.Arrival.Rate)
	}
	e.Workload = ds + ", " + load
	e.Load = load
	if w.Adapter != "" {
		e.Workload += ", adapter " + w.Adapter
	}
	e.WorkloadDetail = fmt.Sprintf("%d requests per cycle over the %s API", w.Requests, orDefault(w.API, "completions"))

	get := func(name string) (*float64, *float64) {
		s, ok := r.Summary[name]
		if !ok || s.N == 0 {
			return nil, nil
		}
		return fp(s.Mean), fp(s.CI95)
	}
	e.JPerToken, e.JPerTokenCI = get("j_per_token")
	e.JPerRequest, e.JPerRequestCI = get("j_per_request")
	e.TokensPerS, _ = get("throughput_tok_s")
	e.EnergyJ, _ = get("energy_j")
	e.ITLp50, _ = get("itl_p50_ms")
	if ps := r.Latency["ttft_ms"]; len(ps) >= 3 {
		e.TTFTp50, e.TTFTp99 = fp(ps[0].Value), fp(ps[2].Value)
	}
	if e.ITLp50 == nil {
		if ps := r.Latency["itl_ms"]; len(ps) >= 1 {
			e.ITLp50 = fp(ps[0].Value)
		}
	}
	var pw []float64
	for _, c := range r.Cycles {
		if c.DurationS > 0 && !math.IsNaN(c.EnergyJ) {
			pw = append(pw, c.EnergyJ/c.DurationS)
		}
	}
	if len(pw) > 0 {
		e.MeanPowerW = fp(analytics.Summarise(pw).Mean)
	}
	return e
}

func lastPath(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
