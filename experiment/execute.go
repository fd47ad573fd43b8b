package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/loadgen"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/internal/sleep"
	"github.com/llm-energy-measure/lem/schemas"
)

// Publisher is where the experiment's events go.
type Publisher interface {
	collectors.Publisher
	// Flush returns once every published event is acknowledged.
	Flush(ctx context.Context) error
}

// Probe reads the measured devices' power (W, summed) and hottest
// temperature (°C, NaN when unknown) for cool-down decisions.
type Probe func() (watts, tempC float64, ok bool)

// Launcher starts the backend c describes (logging to logPath, working in
// dir) and returns its stop function and the command line it ran.
type Launcher func(ctx context.Context, c *backend.Config, dir, logPath string) (stop func(), line string, err error)

// Phase names a step of the protocol in progress events.
type Phase string

// The protocol's steps, in order.
const (
	PhaseLaunch   Phase = "launch"   // backend started (or attached) and healthy
	PhasePrompts  Phase = "prompts"  // every cycle's prompts drawn
	PhaseSettle   Phase = "settle"   // collectors and server settling
	PhaseBaseline Phase = "baseline" // idle power measured
	PhaseWarmup   Phase = "warmup"   // unmeasured requests sent
	PhaseCycle    Phase = "cycle"    // a measured cycle of one configuration
	PhaseCoolDown Phase = "cooldown" // between cycles
	PhaseTail     Phase = "tail"     // the post-load tail, collectors stopped, events flushed
)

// Progress is one progress event: a phase began (Done = 0 and Elapsed =
// 0), requests finished inside a cycle, or a phase ended (End set, with
// its duration). A terminal bar, a log line and a web page read the same
// events.
type Progress struct {
	Phase  Phase
	Run    string // configuration name (cycle, warm-up)
	RunID  string
	Cycle  int // 0-based
	Cycles int
	// Requests of the cycle: finished, planned, failed.
	Done, Total, Failed int
	End                 bool
	Elapsed             time.Duration
}

// Deps are what an experiment runs with; the caller (lem run, lem
// schedule, lem demo, a remote worker) wires them.
type Deps struct {
	Publisher Publisher
	// Collectors run from before the baseline until after the tail.
	Collectors []collectors.Collector
	// Probe, when set, lets the cool-down wait for power and temperature
	// to return near the baseline; nil: the minimum cool-down only.
	Probe Probe
	// Devices are the UUIDs of the measured devices; Inventory describes
	// hardware and software (stored with every run event).
	Devices   []string
	Inventory map[string]any
	Host      string
	// Stamp names the runs: <experiment>-<stamp>[-<configuration>]
	// (default: the UTC start time).
	Stamp string
	// Launch starts the backend (nil: backend.Start with backend.Command;
	// an external backend or an endpoint is attached to, never launched).
	Launch Launcher
	// Progress receives progress events (nil: none).
	Progress func(Progress)
	Log      zerolog.Logger
	// OnText, when set, receives the streamed text of every request.
	OnText func(reqID, text string)
	// InFlight, when set, receives the function counting the requests in
	// flight, once the runners exist (a simulated GPU's load follows it).
	InFlight func(func() int64)
}

// Executed is one configuration's run, done.
type Executed struct {
	Name   string
	RunID  string
	Runner *loadgen.Runner
}

// Execute runs the experiment c (normalised and validated) with d: start
// the collectors, launch or attach to the backend, draw every cycle's
// prompts, settle, measure the idle baseline, warm up, run the cycles of
// every configuration (shuffled per cycle, cool-down between them, the
// server's metrics scraped during each), keep measuring a short tail,
// stop the collectors and flush. It returns the runs in configuration
// order; analysing them is the caller's.
func Execute(ctx context.Context, c *Config, d Deps) ([]Executed, error) {
	log := d.Log
	progress := d.Progress
	if progress == nil {
		progress = func(Progress) {}
	}
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return nil, err
	}
	if d.Stamp == "" {
		d.Stamp = time.Now().UTC().Format("20060102T150405Z")
	}
	base := schemas.SubjectToken(c.Experiment) + "-" + d.Stamp
	phase := func(p Phase, f func() error) error {
		start := time.Now()
		progress(Progress{Phase: p})
		err := f()
		progress(Progress{Phase: p, End: true, Elapsed: time.Since(start)})
		return err
	}

	// 1. Collectors, from before the baseline to after the tail.
	cctx, stopCollectors := context.WithCancel(context.Background())
	var cwg sync.WaitGroup
	for _, col := range d.Collectors {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			if err := col.Run(cctx, d.Publisher); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Str("collector", col.Name()).Msg("collector stopped")
			}
		}()
	}
	stopCols := sync.OnceFunc(func() {
		stopCollectors()
		cwg.Wait()
	})
	defer stopCols()

	// 2. The backend.
	b := &c.Backend
	inventory := map[string]any{}
	for k, v := range d.Inventory {
		inventory[k] = v
	}
	var stopBackend func()
	err := phase(PhaseLaunch, func() error {
		if b.Kind == backend.External || b.Endpoint != "" {
			if err := backend.Attach(ctx, b.BaseURL(), "/v1/models", b.StartupTimeout.Duration); err != nil {
				return fmt.Errorf("backend.endpoint: %w", err)
			}
			inventory["backend_command"] = "attached to " + b.BaseURL()
			return nil
		}
		logPath := b.LogFile
		if logPath == "" {
			logPath = filepath.Join(c.Out, base+"-server.log")
		}
		logPath, _ = filepath.Abs(logPath)
		launch := d.Launch
		if launch == nil {
			launch = Launch
		}
		stop, line, err := launch(ctx, b, c.Out, logPath)
		if err != nil {
			return err
		}
		stopBackend = stop
		inventory["backend_command"] = line
		log.Info().Str("command", line).Str("log", logPath).Msg("backend healthy")
		return nil
	})
	defer func() {
		if stopBackend != nil {
			stopBackend()
		}
	}()
	if err != nil {
		return nil, err
	}
	if n, src, warn := backend.ModelParameters(ctx, b); n > 0 {
		inventory["model_parameters"], inventory["model_parameters_source"] = n, src
		if warn != "" {
			log.Warn().Msg(warn)
		}
	}

	// 3. Runs, prompts drawn before anything is measured.
	runs, err := c.Runs()
	if err != nil {
		return nil, err
	}
	invJSON, _ := json.Marshal(inventory)
	var states []*state
	err = phase(PhasePrompts, func() error {
		for i, r := range runs {
			st, err := c.prepare(ctx, i, r, base, d, string(invJSON))
			if err != nil {
				return err
			}
			states = append(states, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if d.InFlight != nil {
		d.InFlight(func() int64 {
			var n int64
			for _, s := range states {
				n += s.runner.InFlight.Load()
			}
			return n
		})
	}

	// 4. Settle, idle baseline, warm-up.
	if err := phase(PhaseSettle, func() error { return wait(ctx, c.Measurement.Settle.Duration) }); err != nil {
		return nil, err
	}
	clk := loadgen.NewClock()
	idleW, idleT := math.NaN(), math.NaN()
	err = phase(PhaseBaseline, func() error {
		from := clk.Now()
		var ws, ts []float64
		for end := time.Now().Add(c.Measurement.Baseline.Duration); time.Now().Before(end); {
			if d.Probe != nil {
				if w, t, ok := d.Probe(); ok {
					ws, ts = append(ws, w), append(ts, t)
				}
			}
			if err := wait(ctx, min(500*time.Millisecond, time.Until(end))); err != nil {
				return err
			}
		}
		to := clk.Now()
		for _, s := range states {
			if err := s.runner.MarkBaseline(from, to); err != nil {
				return err
			}
		}
		if len(ws) > 0 {
			idleW, idleT = analytics.Summarise(ws).Mean, analytics.Summarise(ts).Mean
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = phase(PhaseWarmup, func() error {
		for _, s := range states {
			if err := s.runner.WarmUp(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// 5. Cycles: every configuration once per cycle, in shuffled order.
	order := make([]int, len(states))
	for i := range order {
		order[i] = i
	}
	srng := rand.New(rand.NewPCG(c.Measurement.Seed, 0xc0ffee))
	cycles := c.Measurement.Cycles
	first := true
	for cy := 0; cy < cycles; cy++ {
		if *c.Measurement.Shuffle {
			srng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for _, i := range order {
			s := states[i]
			if !first {
				if err := phase(PhaseCoolDown, func() error { return c.coolDown(ctx, d.Probe, idleW, idleT, log) }); err != nil {
					return nil, err
				}
			}
			first = false
			rc := s.runner.Config()
			ev := Progress{Phase: PhaseCycle, Run: s.name, RunID: rc.RunID, Cycle: cy, Cycles: cycles, Total: rc.RequestsPerCycle}
			start := time.Now()
			progress(ev)
			var failedN atomic.Int64
			s.runner.SetProgress(func(_, done, total, failed int) {
				e := ev
				e.Done, e.Total, e.Failed = done, total, failed
				failedN.Store(int64(failed))
				progress(e)
			})
			sctx, stopScrape := context.WithCancel(ctx)
			var swg sync.WaitGroup
			if *c.Collectors.Scrape.Enabled {
				sc := &loadgen.Scraper{URL: b.BaseURL() + c.Collectors.Scrape.Path, RunID: rc.RunID,
					Interval: c.Collectors.Scrape.Interval.Duration, Match: c.Collectors.Scrape.Match, Clock: clk}
				swg.Add(1)
				go func() { defer swg.Done(); _ = sc.Run(sctx, d.Publisher) }()
			}
			err := s.runner.Cycle(ctx, cy)
			stopScrape()
			swg.Wait()
			ev.End, ev.Elapsed, ev.Done, ev.Failed = true, time.Since(start), rc.RequestsPerCycle, int(failedN.Load())
			progress(ev)
			if err != nil {
				return nil, fmt.Errorf("run %s cycle %d: %w", s.name, cy, err)
			}
		}
	}

	// 6. The post-load tail, then stop the collectors and flush: every
	// event must be in the stream before anyone analyses it.
	err = phase(PhaseTail, func() error {
		_ = wait(ctx, time.Second)
		stopCols()
		fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Publisher.Flush(fctx); err != nil {
			return fmt.Errorf("flushing published events: %w", err)
		}
		return nil
	})
	out := make([]Executed, len(states))
	for i, s := range states {
		out[i] = Executed{Name: s.name, RunID: s.runner.Config().RunID, Runner: s.runner}
	}
	return out, err
}

// state is one configuration being run.
type state struct {
	name    string
	runner  *loadgen.Runner
	prompts [][]loadgen.Prompt
}

// prepare draws every cycle's prompts of configuration i and builds its
// runner.
func (c *Config) prepare(ctx context.Context, i int, r Run, base string, d Deps, inventory string) (*state, error) {
	id := base
	if len(c.Sweep) > 0 {
		id = base + "-" + schemas.SubjectToken(r.Name)
	}
	b := &c.Backend
	w := r.Workload
	model := b.Name()
	if w.Adapter != "" {
		// The adapter by its name, as OpenAI-compatible servers route
		// LoRA requests (vLLM, SGLang, lem's reference server).
		model = w.Adapter
	}
	client := loadgen.NewClient(b.BaseURL(), model)
	client.Chat = w.API == "chat"
	client.Sampling = w.ResolvedSampling()
	client.IgnoreEOS = *w.IgnoreEOS
	client.OnText = d.OnText
	var tok loadgen.Tokenizer
	if *w.Tokenize {
		tok = &loadgen.HTTPTokenizer{BaseURL: b.BaseURL(), Model: b.Name()}
	}
	st := &state{name: r.Name}
	rng := rand.New(rand.NewPCG(c.Measurement.Seed, uint64(i)+1))
	for cy := 0; cy < c.Measurement.Cycles; cy++ {
		ps, err := w.Dataset.Load(ctx, w.Requests, rng, tok)
		if err != nil {
			return nil, fmt.Errorf("run %s: %w", r.Name, err)
		}
		st.prompts = append(st.prompts, ps)
	}
	doc, err := c.RunDocument(r)
	if err != nil {
		return nil, err
	}
	rc := loadgen.RunConfig{RunID: id, Experiment: c.Experiment, Backend: b.Kind, Model: b.Name(), Host: d.Host,
		Devices: d.Devices, Config: doc, Inventory: inventory, Cycles: c.Measurement.Cycles,
		RequestsPerCycle: w.Requests, Duration: w.Duration.Duration, Arrival: w.Arrival,
		Prompts: func(cy int) []loadgen.Prompt { return st.prompts[cy] }, Seed: c.Measurement.Seed + uint64(i),
		Warmup: w.Warmup, Timeout: w.Timeout.Duration}
	st.runner = loadgen.NewRunner(rc, client, d.Publisher)
	return st, nil
}

// DocumentVersion is the version of the stored run configuration.
const DocumentVersion = 1

// RunDocument is the configuration stored with every event of run r: a
// versioned JSON document whose keys are the experiment file's (snake
// case), so that SQL over it (visitParamExtract…, JSONExtract…) names
// fields as the YAML does. Secrets in the backend's environment are
// redacted (the launch used the real values).
func (c *Config) RunDocument(r Run) (string, error) {
	doc := struct {
		Version     int         `yaml:"version"`
		Experiment  string      `yaml:"experiment"`
		Run         string      `yaml:"run"`
		Backend     any         `yaml:"backend"`
		Workload    Workload    `yaml:"workload"`
		Sampling    any         `yaml:"sampling"`
		Measurement Measurement `yaml:"measurement"`
	}{DocumentVersion, c.Experiment, r.Name, c.Backend.Redacted(), r.Workload, r.Workload.ResolvedSampling(), c.Measurement}
	return yamlToJSON(doc)
}

// yamlToJSON renders v as JSON with its YAML field names.
func yamlToJSON(v any) (string, error) {
	y, err := yaml.Marshal(v)
	if err != nil {
		return "", err
	}
	var m any
	if err := yaml.Unmarshal(y, &m); err != nil {
		return "", err
	}
	j, err := json.Marshal(m)
	return string(j), err
}

// Launch starts the backend with lem's launch command for its kind
// (writing the reference PyTorch server next to the logs when needed).
func Launch(ctx context.Context, b *backend.Config, dir, logPath string) (func(), string, error) {
	py := filepath.Join(dir, "lem-pyserver.py")
	if b.Kind == backend.PyTorch {
		if err := os.WriteFile(py, backend.PyServer, 0o644); err != nil {
			return nil, "", err
		}
		py, _ = filepath.Abs(py)
	}
	l, err := backend.Command(b, py)
	if err != nil {
		return nil, "", err
	}
	srv, err := backend.Start(ctx, l, b.BaseURL(), dir, logPath, b.StartupTimeout.Duration)
	if err != nil {
		return nil, "", err
	}
	return func() { srv.Stop(30 * time.Second) }, l.String(), nil
}

// coolDown waits at least the minimum, then until the devices are back
// near their baseline power and temperature, at most the maximum.
func (c *Config) coolDown(ctx context.Context, pr Probe, idleW, idleT float64, log zerolog.Logger) error {
	cd := c.Measurement.CoolDown
	start := time.Now()
	if err := wait(ctx, cd.Min.Duration); err != nil || pr == nil || math.IsNaN(idleW) {
		return err
	}
	for time.Since(start) < cd.Max.Duration {
		w, t, ok := pr()
		if !ok || (w <= idleW*(1+cd.PowerWithin) && (math.IsNaN(idleT) || t <= idleT+cd.TempWithinC)) {
			return nil
		}
		if err := wait(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
	log.Warn().Dur("max", cd.Max.Duration).Msg("devices not back near baseline power/temperature at the end of the cool-down")
	return nil
}

// wait waits d or until ctx ends (then its error).
func wait(ctx context.Context, d time.Duration) error {
	if !sleep.Ctx(ctx, d) {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
