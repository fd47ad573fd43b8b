// Package experiment reads, normalises, validates and displays an
// experiment file (`lem run experiment.yaml`): the backend, the workload,
// a sweep of workload configurations, the measurement protocol, the
// collectors and where events go.
package experiment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/llm-energy-measure/lem/collectors/loadgen"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
)

// Config is an experiment file.
type Config struct {
	Experiment  string         `yaml:"experiment"`
	Out         string         `yaml:"out"` // directory for logs and the local store
	Backend     backend.Config `yaml:"backend"`
	Workload    Workload       `yaml:"workload"`
	Sweep       []Variant      `yaml:"sweep"`
	Measurement Measurement    `yaml:"measurement"`
	Collectors  Collectors     `yaml:"collectors"`
	Output      Output         `yaml:"output"`
}

// Workload is what the load generator sends in one cycle.
type Workload struct {
	API       string           `yaml:"api"`      // completions (default) or chat
	Requests  int              `yaml:"requests"` // per cycle
	Duration  backend.Duration `yaml:"duration"` // optional cap on a cycle's sending time
	Arrival   loadgen.Arrival  `yaml:"arrival"`
	Dataset   loadgen.Dataset  `yaml:"dataset"`
	Sampling  Sampling         `yaml:"sampling"`
	IgnoreEOS *bool            `yaml:"ignore_eos"` // default true: exactly max_tokens per request
	Timeout   backend.Duration `yaml:"timeout"`    // per request
	Warmup    int              `yaml:"warmup"`     // requests before measuring, unpublished
	// Adapter is the LoRA adapter (a name in backend.lora) every request
	// asks for, as its "model"; empty: the base model. A sweep over it
	// measures what serving an adapter costs.
	Adapter string `yaml:"adapter"`
	// Tokenize counts prompt tokens with the server's /tokenize, so that
	// synthetic prompts have exact lengths (default true).
	Tokenize *bool `yaml:"tokenize"`
}

// Sampling is a preset, optionally overridden field by field.
type Sampling struct {
	Preset           string `yaml:"preset"` // deterministic (default), standard, creative, factual
	loadgen.Sampling `yaml:",inline"`
}

// Variant is one configuration of a sweep: a name and workload fields that
// override the base workload. Each variant is its own run.
type Variant struct {
	Name     string    `yaml:"name"`
	Workload yaml.Node `yaml:"workload"`
}

// Measurement is the protocol.
type Measurement struct {
	Cycles   int              `yaml:"cycles"`   // 3
	Baseline backend.Duration `yaml:"baseline"` // idle window before any load (30s)
	Settle   backend.Duration `yaml:"settle"`   // wait after starting collectors and the server (5s)
	CoolDown CoolDown         `yaml:"cooldown"`
	Shuffle  *bool            `yaml:"shuffle"` // shuffle the variants' order in every cycle (true)
	Seed     uint64           `yaml:"seed"`    // 1
}

// CoolDown between cycles: at least Min, then until power and temperature
// are back near the baseline, at most Max.
type CoolDown struct {
	Min         backend.Duration `yaml:"min"`           // 5s
	Max         backend.Duration `yaml:"max"`           // 60s
	PowerWithin float64          `yaml:"power_within"`  // fraction above baseline power (0.10)
	TempWithinC float64          `yaml:"temp_within_c"` // °C above baseline temperature (3)
}

// Collectors measure power and energy beside the load.
type Collectors struct {
	GPU     string `yaml:"gpu"`     // nvml (default), sim (simulated, labelled), none
	Devices []int  `yaml:"devices"` // GPU indices; default: the backend's parallelism devices, else all
	RAPL    string `yaml:"rapl"`    // powercap root; "" (default) uses /sys/class/powercap when present; "off"
	// CounterCPUBudget is the NVML agent's CPU share per GPU (0.004).
	CounterCPUBudget float64 `yaml:"counter_cpu_budget"`
	// AlignedCounter reads the energy counter aligned to its refresh
	// (stamped within a few ms; default true); false reads it whenever its
	// timer fires (±50 ms).
	AlignedCounter *bool  `yaml:"aligned_counter"`
	Scrape         Scrape `yaml:"scrape"`
}

// Scrape is the server-metrics scraper.
type Scrape struct {
	Enabled  *bool            `yaml:"enabled"`  // default true
	Path     string           `yaml:"path"`     // /metrics
	Interval backend.Duration `yaml:"interval"` // 1s
	Match    []string         `yaml:"match"`    // name prefixes kept (all)
}

// Output is where events go.
type Output struct {
	// NATS publishes to an external JetStream (its ingest stores them);
	// empty: an embedded server with in-process ingest into Store.
	NATS       string `yaml:"nats"`
	Store      string `yaml:"store"`      // parquet (default) or clickhouse
	Parquet    string `yaml:"parquet"`    // default <out>/store
	ClickHouse string `yaml:"clickhouse"` // host:port (credentials: env LEM_CLICKHOUSE_PASSWORD or -clickhouse-password-file)
	Database   string `yaml:"database"`   // lem
}

// Load reads and strictly decodes an experiment file: unknown keys are
// errors naming the key and its line.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes an experiment from YAML (strict).
func Parse(b []byte) (*Config, error) {
	var c Config
	// Every unknown key and wrongly typed value at once, by dotted path.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	if errs := checkNode(&root, reflect.TypeOf(c), ""); len(errs) > 0 {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = "  " + e.Error()
		}
		return nil, fmt.Errorf("%d problem(s):\n%s", len(errs), strings.Join(lines, "\n"))
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty experiment file")
		}
		return nil, err
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document: an experiment file holds one")
	}
	return &c, nil
}

// Defaults returns the configuration every field falls back to.
func Defaults() Config {
	t := true
	return Config{
		Experiment: "experiment",
		Out:        "lem-runs",
		Workload: Workload{API: "completions", Requests: 100, Arrival: loadgen.Arrival{Process: loadgen.ArrivalConcurrency, Concurrency: 8},
			Dataset: loadgen.Dataset{Kind: "synthetic", PromptTokens: loadgen.Dist{Dist: "fixed", Mean: 256},
				OutputTokens: loadgen.Dist{Dist: "fixed", Mean: 128}},
			Sampling: Sampling{Preset: "deterministic"}, IgnoreEOS: &t, Timeout: backend.Duration{Duration: 2 * time.Minute},
			Tokenize: &t},
		Measurement: Measurement{Cycles: 3, Baseline: backend.Duration{Duration: 30 * time.Second},
			Settle: backend.Duration{Duration: 5 * time.Second}, Shuffle: &t, Seed: 1,
			CoolDown: CoolDown{Min: backend.Duration{Duration: 5 * time.Second}, Max: backend.Duration{Duration: time.Minute},
				PowerWithin: 0.10, TempWithinC: 3}},
		Collectors: Collectors{GPU: "nvml", CounterCPUBudget: 0.004, AlignedCounter: &t,
			Scrape: Scrape{Enabled: &t, Path: "/metrics", Interval: backend.Duration{Duration: time.Second}}},
		Output: Output{Store: "parquet", Database: "lem"},
	}
}

// Normalize fills defaults and canonical spellings, returning the
// rewrites of values the user wrote (for the display).
func (c *Config) Normalize() []string {
	d := Defaults()
	notes := c.Backend.Normalize()
	if c.Experiment == "" {
		c.Experiment = d.Experiment
	}
	if c.Out == "" {
		c.Out = d.Out
	}
	w := &c.Workload
	fillWorkload(w, d.Workload)
	if p := strings.ToLower(w.API); p == "chat" || p == "chat/completions" {
		w.API = "chat"
	}
	m := &c.Measurement
	if m.Cycles == 0 {
		m.Cycles = d.Measurement.Cycles
	}
	if m.Baseline.Duration == 0 {
		m.Baseline = d.Measurement.Baseline
	}
	if m.Settle.Duration == 0 {
		m.Settle = d.Measurement.Settle
	}
	if m.Shuffle == nil {
		m.Shuffle = d.Measurement.Shuffle
	}
	if m.Seed == 0 {
		m.Seed = d.Measurement.Seed
	}
	cd, dd := &m.CoolDown, d.Measurement.CoolDown
	if cd.Min.Duration == 0 {
		cd.Min = dd.Min
	}
	if cd.Max.Duration == 0 {
		cd.Max = dd.Max
	}
	if cd.PowerWithin == 0 {
		cd.PowerWithin = dd.PowerWithin
	}
	if cd.TempWithinC == 0 {
		cd.TempWithinC = dd.TempWithinC
	}
	col := &c.Collectors
	if g := strings.ToLower(col.GPU); g != col.GPU {
		notes = append(notes, fmt.Sprintf("collectors.gpu: %q → %q", col.GPU, g))
		col.GPU = g
	}
	if col.GPU == "" {
		col.GPU = d.Collectors.GPU
	}
	if col.CounterCPUBudget == 0 {
		col.CounterCPUBudget = d.Collectors.CounterCPUBudget
	}
	if col.AlignedCounter == nil {
		col.AlignedCounter = d.Collectors.AlignedCounter
	}
	if len(col.Devices) == 0 {
		col.Devices = append(col.Devices, c.Backend.Parallelism.Devices...)
	}
	if col.Scrape.Enabled == nil {
		col.Scrape.Enabled = d.Collectors.Scrape.Enabled
	}
	if col.Scrape.Path == "" {
		col.Scrape.Path = d.Collectors.Scrape.Path
	}
	if col.Scrape.Interval.Duration == 0 {
		col.Scrape.Interval = d.Collectors.Scrape.Interval
	}
	o := &c.Output
	if o.Store == "" {
		o.Store = d.Output.Store
	}
	if o.Database == "" {
		o.Database = d.Output.Database
	}
	if o.Parquet == "" && o.Store == "parquet" {
		o.Parquet = c.Out + "/store"
	}
	return notes
}

func fillWorkload(w *Workload, d Workload) {
	if w.API == "" {
		w.API = d.API
	}
	if w.Requests == 0 {
		w.Requests = d.Requests
	}
	if w.Arrival.Process == "" {
		switch {
		case w.Arrival.Concurrency > 0:
			w.Arrival.Process = loadgen.ArrivalConcurrency
		case w.Arrival.Rate > 0:
			w.Arrival.Process = loadgen.ArrivalPoisson
		default:
			w.Arrival = d.Arrival
		}
	}
	w.Arrival.Process = strings.ToLower(w.Arrival.Process)
	if w.Dataset.Kind == "" {
		w.Dataset.Kind = d.Dataset.Kind
	}
	if w.Dataset.Kind == "synthetic" && w.Dataset.PromptTokens == (loadgen.Dist{}) {
		w.Dataset.PromptTokens = d.Dataset.PromptTokens
	}
	if o := &w.Dataset.OutputTokens; (o.Dist == "" || o.Dist == "fixed") && o.Mean == 0 {
		// Only bounds given (e.g. a ShareGPT cap): the default length for
		// prompts that do not bring their own.
		o.Mean = d.Dataset.OutputTokens.Mean
	}
	if w.Dataset.PromptTokens.Dist == "" {
		w.Dataset.PromptTokens.Dist = "fixed"
	}
	if w.Dataset.OutputTokens.Dist == "" {
		w.Dataset.OutputTokens.Dist = "fixed"
	}
	if w.Sampling.Preset == "" {
		w.Sampling.Preset = d.Sampling.Preset
	}
	w.Sampling.Preset = strings.ToLower(w.Sampling.Preset)
	if w.IgnoreEOS == nil {
		w.IgnoreEOS = d.IgnoreEOS
	}
	if w.Timeout.Duration == 0 {
		w.Timeout = d.Timeout
	}
	if w.Tokenize == nil {
		w.Tokenize = d.Tokenize
	}
}

// ResolvedSampling is the preset with the explicit fields laid over it.
func (w Workload) ResolvedSampling() loadgen.Sampling {
	s := loadgen.SamplingPresets[w.Sampling.Preset]
	o := w.Sampling.Sampling
	if o.Temperature != 0 {
		s.Temperature = o.Temperature
	}
	if o.TopP != 0 {
		s.TopP = o.TopP
	}
	if o.TopK != 0 {
		s.TopK = o.TopK
	}
	if o.Seed != nil {
		s.Seed = o.Seed
	}
	return s
}

// Run is one run of the experiment: the base workload, or one variant of
// the sweep laid over it.
type Run struct {
	Name     string
	Workload Workload
}

// Runs expands the sweep (a single run named "base" without one).
func (c *Config) Runs() ([]Run, error) {
	if len(c.Sweep) == 0 {
		return []Run{{Name: "base", Workload: c.Workload}}, nil
	}
	var out []Run
	seen := map[string]bool{}
	for i, v := range c.Sweep {
		if v.Name == "" {
			return nil, fmt.Errorf("sweep[%d].name: required", i)
		}
		if seen[v.Name] {
			return nil, fmt.Errorf("sweep[%d].name: %q used twice", i, v.Name)
		}
		seen[v.Name] = true
		w := c.Workload
		// Pointer fields are copied so that decoding cannot write through
		// to the base workload.
		w.IgnoreEOS, w.Tokenize = copyBool(w.IgnoreEOS), copyBool(w.Tokenize)
		if v.Workload.Kind != 0 {
			// Decode onto a copy of the base: only fields present override.
			b, err := yaml.Marshal(&v.Workload)
			if err != nil {
				return nil, err
			}
			dec := yaml.NewDecoder(bytes.NewReader(b))
			dec.KnownFields(true)
			if err := dec.Decode(&w); err != nil {
				return nil, fmt.Errorf("sweep[%d] (%s).workload: %w", i, v.Name, err)
			}
			// An arrival override without a process implies one: a
			// concurrency means a closed loop, a rate an open loop (the
			// base's if it is open, else Poisson).
			keys := arrivalKeys(&v.Workload)
			if keys != nil && !keys["process"] {
				switch {
				case keys["concurrency"]:
					w.Arrival.Process = loadgen.ArrivalConcurrency
				case keys["rate"] && w.Arrival.Process == loadgen.ArrivalConcurrency:
					w.Arrival.Process = loadgen.ArrivalPoisson
				}
			}
			// A field the variant's process does not have, inherited from
			// the base, is dropped (a Poisson variant of a closed-loop base
			// has no concurrency); one the variant sets itself is kept for
			// validation to refuse.
			if w.Arrival.Process != loadgen.ArrivalConcurrency && !keys["concurrency"] {
				w.Arrival.Concurrency = 0
			}
			if w.Arrival.Process == loadgen.ArrivalConcurrency && !keys["rate"] {
				w.Arrival.Rate = 0
			}
			fillWorkload(&w, c.Workload)
		}
		out = append(out, Run{Name: v.Name, Workload: w})
	}
	return out, nil
}

// Validate returns every problem of a normalised configuration, each
// naming its parameter.
func (c *Config) Validate() []error { return c.validate(true) }

// ValidateStatic is Validate without opening the files the experiment
// refers to (datasets, traces, adapters): for checking an example whose
// files the user fetches.
func (c *Config) ValidateStatic() []error { return c.validate(false) }

func (c *Config) validate(files bool) []error {
	var errs []error
	for _, p := range c.Backend.Validate() {
		errs = append(errs, p)
	}
	for i, l := range c.Backend.LoRA {
		if !files {
			break
		}
		// A local path (a Hugging Face id is fetched by the server).
		if strings.HasPrefix(l.Path, "/") || strings.HasPrefix(l.Path, ".") || strings.HasPrefix(l.Path, "~") {
			if _, err := os.Stat(l.Path); err != nil {
				errs = append(errs, fmt.Errorf("backend.lora[%d].path: %w", i, err))
			}
		}
	}
	runs, err := c.Runs()
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range runs {
		prefix := "workload."
		if len(c.Sweep) > 0 {
			prefix = "sweep " + r.Name + ": workload."
		}
		w := r.Workload
		add := func(err error) {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s%w", prefix, err))
			}
		}
		if w.API != "completions" && w.API != "chat" {
			add(fmt.Errorf("api: unknown %q (completions or chat)", w.API))
		}
		if w.Requests < 1 {
			add(errors.New("requests: at least 1 per cycle"))
		}
		add(w.Arrival.Validate())
		add(w.Dataset.Validate())
		// Files the run will read must exist and parse now, not 2 s into
		// the run.
		if files && w.Arrival.Process == loadgen.ArrivalTrace && w.Arrival.Trace != "" {
			if _, err := os.Stat(w.Arrival.Trace); err != nil {
				add(fmt.Errorf("arrival.trace: %w", err))
			}
		}
		if k := w.Dataset.Kind; files && (k == "sharegpt" || k == "jsonl") && w.Dataset.Path != "" {
			if _, err := w.Dataset.Load(context.Background(), max(w.Requests, 1), rand.New(rand.NewPCG(1, 2)), nil); err != nil {
				add(err) // names dataset.path
			}
		}
		if _, ok := loadgen.SamplingPresets[w.Sampling.Preset]; !ok {
			add(fmt.Errorf("sampling.preset: unknown %q (deterministic, standard, creative or factual)", w.Sampling.Preset))
		}
		if t := w.Sampling.Temperature; t < 0 || t > 2 {
			add(fmt.Errorf("sampling.temperature: %g outside [0, 2]", t))
		}
		if p := w.Sampling.TopP; p < 0 || p > 1 {
			add(fmt.Errorf("sampling.top_p: %g outside [0, 1]", p))
		}
		if w.Warmup < 0 {
			add(errors.New("warmup: negative"))
		}
		if w.Adapter != "" {
			var names []string
			for _, l := range c.Backend.LoRA {
				names = append(names, l.Name)
			}
			if !slices.Contains(names, w.Adapter) {
				if len(names) == 0 {
					add(fmt.Errorf("adapter: %q, but backend.lora lists no adapter (add {name: %s, path: ...})", w.Adapter, w.Adapter))
				} else {
					add(fmt.Errorf("adapter: no adapter named %q in backend.lora (have %s)", w.Adapter, strings.Join(names, ", ")))
				}
			}
		}
		if m := c.Backend.MaxModelLen; m > 0 {
			d := w.Dataset
			if d.PromptTokens.Max+d.OutputTokens.Max > m || (d.PromptTokens.Dist == "fixed" && int(d.PromptTokens.Mean)+int(d.OutputTokens.Mean) > m) {
				add(fmt.Errorf("dataset: prompt plus output tokens can exceed backend.max_model_len %d", m))
			}
		}
	}
	m := c.Measurement
	if m.Cycles < 1 {
		errs = append(errs, errors.New("measurement.cycles: at least 1"))
	}
	if m.CoolDown.Max.Duration < m.CoolDown.Min.Duration {
		errs = append(errs, errors.New("measurement.cooldown: max below min"))
	}
	if m.CoolDown.PowerWithin < 0 || m.CoolDown.TempWithinC < 0 {
		errs = append(errs, errors.New("measurement.cooldown: tolerances must be positive"))
	}
	switch c.Collectors.GPU {
	case "nvml", "sim", "none":
	default:
		errs = append(errs, fmt.Errorf("collectors.gpu: unknown %q (nvml, sim or none)", c.Collectors.GPU))
	}
	if c.Collectors.CounterCPUBudget > 0.5 {
		errs = append(errs, fmt.Errorf("collectors.counter_cpu_budget: %g is a fraction of one core (0.004 = 0.4%%)", c.Collectors.CounterCPUBudget))
	}
	switch c.Output.Store {
	case "parquet":
	case "clickhouse":
		if c.Output.ClickHouse == "" && c.Output.NATS == "" {
			errs = append(errs, errors.New("output.clickhouse: host:port required with store clickhouse"))
		}
	default:
		errs = append(errs, fmt.Errorf("output.store: unknown %q (parquet or clickhouse)", c.Output.Store))
	}
	return errs
}

// ShowNonDefault writes the values that differ from the defaults (after
// normalisation), one `path: value` per line, sorted, then the rewrites
// normalisation made.
func ShowNonDefault(w io.Writer, c *Config, notes []string) error {
	d := Defaults()
	d.Normalize()
	shown := *c
	shown.Backend = c.Backend.Redacted()
	got, err := flatten(&shown)
	if err != nil {
		return err
	}
	def, err := flatten(&d)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if def[k] != got[k] {
			fmt.Fprintf(w, "%s: %s\n", k, got[k])
		}
	}
	for _, n := range notes {
		fmt.Fprintf(w, "# normalised %s\n", n)
	}
	return nil
}

// flatten maps each leaf of c's YAML form to its path.
func flatten(c *Config) (map[string]string, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, err
	}
	out := map[string]string{}
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, k := range n.Content {
				walk(prefix, k)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if prefix != "" {
					p = prefix + "." + p
				}
				walk(p, n.Content[i+1])
			}
		case yaml.SequenceNode:
			if len(n.Content) == 0 {
				return
			}
			// A list of plain values is one value: compared and shown
			// whole (devices [0, 1] is not "devices[1]: 1").
			scalars := make([]string, 0, len(n.Content))
			for _, k := range n.Content {
				if k.Kind != yaml.ScalarNode {
					scalars = nil
					break
				}
				scalars = append(scalars, k.Value)
			}
			if scalars != nil {
				out[prefix] = "[" + strings.Join(scalars, ", ") + "]"
				return
			}
			for i, k := range n.Content {
				walk(fmt.Sprintf("%s[%d]", prefix, i), k)
			}
		default:
			if n.Tag == "!!null" || n.Value == "" || n.Value == "0" || n.Value == "0s" || n.Value == "false" {
				return // zero values are defaults
			}
			out[prefix] = n.Value
		}
	}
	walk("", &root)
	return out, nil
}

func copyBool(p *bool) *bool {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// arrivalKeys returns the keys under workload.arrival in a variant's node
// (nil when it has no arrival).
func arrivalKeys(n *yaml.Node) map[string]bool {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "arrival" && n.Content[i+1].Kind == yaml.MappingNode {
			keys := map[string]bool{}
			a := n.Content[i+1]
			for j := 0; j+1 < len(a.Content); j += 2 {
				keys[a.Content[j].Value] = true
			}
			return keys
		}
	}
	return nil
}
