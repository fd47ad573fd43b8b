package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/loadgen"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/collectors/loadgen/experiment"
	"github.com/llm-energy-measure/lem/collectors/nvml"
	"github.com/llm-energy-measure/lem/collectors/rapl"
	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/progress"
	"github.com/llm-energy-measure/lem/schemas"
)

func init() {
	register(&command{
		name: "run",
		summary: "Run an experiment file: launch (or attach to) the backend, measure the idle baseline, warm up, " +
			"run the cycles of every configuration with power collectors beside the load, and print the results.",
		usage: "EXPERIMENT.yaml",
		setup: func(fs *flag.FlagSet) func([]string) error {
			showTokens := fs.Bool("show-tokens", false, "print the streamed text of each cycle's first request as it arrives")
			dryRun := fs.Bool("dry-run", false, "check the file, print the plan and the backend's command line, run nothing")
			outDir := fs.String("out", "", "directory for logs and the local store (overrides the file's out:)")
			chc := clickhouseFlags(fs)
			natsOpts := natsFlags(fs)
			logger := logFlags(fs)
			return func(args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				cfg, notes, err := loadExperiment(args[0])
				if err != nil {
					return err
				}
				if *outDir != "" {
					if cfg.Output.Parquet == cfg.Out+"/store" {
						cfg.Output.Parquet = filepath.Join(*outDir, "store")
					}
					cfg.Out = *outDir
				}
				ch, err := chc()
				if err != nil {
					return err
				}
				nopts, err := natsOpts()
				if err != nil {
					return err
				}
				log := logger()
				e := &experimentRun{cfg: cfg, notes: notes, ch: ch, natsOpts: nopts, log: log, showTokens: *showTokens,
					quiet: log.GetLevel() >= zerolog.ErrorLevel, out: os.Stdout}
				if *dryRun {
					return e.plan(os.Stdout)
				}
				ctx, cancel := signalContext()
				defer cancel()
				_, err = e.execute(ctx)
				return err
			}
		},
	})
	register(&command{
		name:    "check-config",
		summary: "Validate an experiment file: every problem names its parameter, why, and what to use instead.",
		usage:   "EXPERIMENT.yaml",
		setup: func(fs *flag.FlagSet) func([]string) error {
			return func(args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				cfg, notes, err := loadExperiment(args[0])
				if err != nil {
					return err
				}
				for _, n := range notes {
					fmt.Printf("normalised %s\n", n)
				}
				fmt.Printf("%s: ok (%s, %d configuration(s), %d cycles)\n", args[0], cfg.Backend.Kind, max(len(cfg.Sweep), 1), cfg.Measurement.Cycles)
				return nil
			}
		},
	})
	register(&command{
		name:    "config",
		summary: "config show EXPERIMENT.yaml: print the values that differ from the defaults, after normalisation.",
		usage:   "show EXPERIMENT.yaml",
		setup: func(fs *flag.FlagSet) func([]string) error {
			return func(args []string) error {
				if len(args) != 2 || args[0] != "show" {
					return errUsage
				}
				cfg, notes, err := loadExperiment(args[1])
				if err != nil {
					return err
				}
				return experiment.ShowNonDefault(os.Stdout, cfg, notes)
			}
		},
	})
}

// loadExperiment reads, normalises and validates an experiment file.
func loadExperiment(path string) (*experiment.Config, []string, error) {
	cfg, err := experiment.Load(path)
	if err != nil {
		return nil, nil, err
	}
	notes := cfg.Normalize()
	if errs := cfg.Validate(); len(errs) > 0 {
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = "  " + e.Error()
		}
		return nil, nil, fmt.Errorf("%s: %d problem(s):\n%s", path, len(errs), strings.Join(lines, "\n"))
	}
	return cfg, notes, nil
}

type experimentRun struct {
	cfg        *experiment.Config
	notes      []string
	ch         ingest.ClickHouseConfig
	natsOpts   []nats.Option // authentication and TLS for output.nats
	log        zerolog.Logger
	showTokens bool
	quiet      bool
	out        io.Writer
	// stamp names the runs (UTC time of start unless set).
	stamp string
}

// plan prints what a run would do.
func (e *experimentRun) plan(w io.Writer) error {
	c := e.cfg
	fmt.Fprintf(w, "experiment %s: backend %s, %d cycles, baseline %v, collectors gpu=%s\n", c.Experiment, c.Backend.Kind,
		c.Measurement.Cycles, c.Measurement.Baseline.Duration, c.Collectors.GPU)
	if c.Backend.Kind == backend.External || c.Backend.Endpoint != "" {
		fmt.Fprintf(w, "attach: %s (model %s)\n", c.Backend.BaseURL(), c.Backend.Name())
	} else {
		l, err := backend.Command(&c.Backend, filepath.Join(c.Out, "lem-pyserver.py"))
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "launch: %s\n", l)
	}
	runs, err := c.Runs()
	if err != nil {
		return err
	}
	for _, r := range runs {
		a := r.Workload.Arrival
		fmt.Fprintf(w, "run %s: %d requests/cycle, arrival %s (rate %g, concurrency %d), dataset %s, sampling %s\n", r.Name,
			r.Workload.Requests, a.Process, a.Rate, a.Concurrency, r.Workload.Dataset.Kind, r.Workload.Sampling.Preset)
	}
	fmt.Fprintln(w, "non-default settings:")
	return experiment.ShowNonDefault(w, c, e.notes)
}

// probe reads the measured devices' power (W, summed) and hottest
// temperature (°C) for cool-down decisions.
type probe func() (watts, tempC float64, ok bool)

type runState struct {
	name    string
	runner  *loadgen.Runner
	prompts [][]loadgen.Prompt
}

// execute runs the experiment end to end and returns each run's results.
func (e *experimentRun) execute(ctx context.Context) ([]*analytics.RunResult, error) {
	c := e.cfg
	log := e.log
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return nil, err
	}
	if e.stamp == "" {
		e.stamp = time.Now().UTC().Format("20060102T150405Z")
	}
	base := schemas.SubjectToken(c.Experiment) + "-" + e.stamp
	host, _ := os.Hostname()

	// 1. Where events go.
	var pub *bus.Publisher
	var stopBackbone func()
	chcfg := e.ch
	if c.Output.Store == "clickhouse" {
		chcfg.Addr, chcfg.Database = c.Output.ClickHouse, c.Output.Database
	}
	if c.Output.NATS == "" {
		pq := c.Output.Parquet
		if pq == "" {
			pq = filepath.Join(c.Out, "store")
		}
		bb, err := startBackbone("", pq, chcfg, log)
		if err != nil {
			return nil, err
		}
		stopBackbone = bb.stop
		if pub, err = bus.NewPublisher(bb.nc, 0); err != nil {
			bb.stop()
			return nil, err
		}
	} else {
		nc, err := nats.Connect(c.Output.NATS, append([]nats.Option{nats.Name("lem-run"), nats.MaxReconnects(-1)}, e.natsOpts...)...)
		if err != nil {
			return nil, fmt.Errorf("output.nats: %w", err)
		}
		if pub, err = bus.NewPublisher(nc, 0); err != nil {
			nc.Close()
			return nil, err
		}
		stopBackbone = func() {
			fctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = pub.Flush(fctx)
			nc.Close()
		}
	}
	backboneStopped := false
	defer func() {
		if !backboneStopped {
			stopBackbone()
		}
	}()

	// 2. Collectors.
	var inflight func() int64 // set once the runners exist
	var inflightMu sync.Mutex
	load := func(int, int64) float64 {
		inflightMu.Lock()
		f := inflight
		inflightMu.Unlock()
		if f == nil {
			return 0
		}
		capacity := 8.0
		if a := c.Workload.Arrival; a.Concurrency > 0 {
			capacity = float64(a.Concurrency)
		}
		return math.Min(1, float64(f())/capacity)
	}
	var cols []collectors.Collector
	var devUUIDs []string
	var pr probe
	inventory := map[string]any{"lem": version, "host": host}
	switch c.Collectors.GPU {
	case "nvml":
		rd, err := nvml.Open(gonvml.New(), host, c.Collectors.Devices, nil)
		if err != nil {
			return nil, fmt.Errorf("collectors.gpu nvml: %w (use collectors.gpu: sim to exercise the pipeline without a GPU)", err)
		}
		defer rd.Close()
		cols = append(cols, nvml.NewCollector(rd, nvml.Config{CounterBudget: c.Collectors.CounterCPUBudget, AlignedCounter: c.Collectors.AlignedCounter}, log))
		for _, g := range rd.GPUs {
			devUUIDs = append(devUUIDs, g.ID.UUID)
		}
		inventory["nvml"] = rd.Inv
		pr = func() (float64, float64, bool) {
			var w, t float64
			for _, g := range rd.GPUs {
				gw, gt, err := rd.Settling(g)
				if err != nil {
					return 0, 0, false
				}
				w, t = w+gw, math.Max(t, gt)
			}
			return w, t, true
		}
	case "sim":
		n := max(len(c.Collectors.Devices), c.Backend.Parallelism.GPUs(), 1)
		s := sim.New(sim.Config{Host: host, Devices: n, Seed: c.Measurement.Seed, Publish: 500 * time.Millisecond, Load: load}, time.Now())
		cols = append(cols, s)
		for _, d := range s.Devices() {
			devUUIDs = append(devUUIDs, d.UUID)
		}
		inventory["gpu"] = "simulated (not a measurement)"
		pr = func() (float64, float64, bool) {
			var w float64
			for i := range s.Devices() {
				w += s.Power(i)
			}
			return w, 0, true
		}
	}
	if c.Collectors.RAPL != "off" {
		root := c.Collectors.RAPL
		if root == "" {
			root = "/sys/class/powercap"
		}
		if ds, err := rapl.Discover(root, host); err == nil {
			cols = append(cols, rapl.NewCollector(host, ds, time.Second))
		} else {
			log.Info().Err(err).Msg("CPU/DRAM energy not collected")
		}
	}
	cctx, stopCollectors := context.WithCancel(context.Background())
	var cwg sync.WaitGroup
	for _, col := range cols {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			if err := col.Run(cctx, pub); err != nil && !errors.Is(err, context.Canceled) {
				log.Error().Err(err).Str("collector", col.Name()).Msg("collector stopped")
			}
		}()
	}
	collectorsStopped := false
	stopCols := func() {
		if !collectorsStopped {
			collectorsStopped = true
			stopCollectors()
			cwg.Wait()
		}
	}
	defer stopCols()

	// 3. The backend.
	b := &c.Backend
	launchLine := "attached to " + b.BaseURL()
	if b.Kind == backend.External || b.Endpoint != "" {
		if err := backend.Attach(ctx, b.BaseURL(), "/v1/models", b.StartupTimeout.Duration); err != nil {
			return nil, fmt.Errorf("backend.endpoint: %w", err)
		}
	} else {
		py := filepath.Join(c.Out, "lem-pyserver.py")
		if b.Kind == backend.PyTorch {
			if err := os.WriteFile(py, backend.PyServer, 0o644); err != nil {
				return nil, err
			}
			py, _ = filepath.Abs(py)
		}
		l, err := backend.Command(b, py)
		if err != nil {
			return nil, err
		}
		launchLine = l.String()
		logPath := b.LogFile
		if logPath == "" {
			logPath = filepath.Join(c.Out, base+"-server.log")
		}
		logPath, _ = filepath.Abs(logPath)
		log.Info().Str("command", launchLine).Str("log", logPath).Msg("starting backend")
		srv, err := backend.Start(ctx, l, b.BaseURL(), c.Out, logPath, b.StartupTimeout.Duration)
		if err != nil {
			return nil, err
		}
		defer srv.Stop(30 * time.Second)
	}
	inventory["backend_command"] = launchLine

	// 4. Runs, prompts drawn before anything is measured.
	runs, err := c.Runs()
	if err != nil {
		return nil, err
	}
	invJSON, _ := json.Marshal(inventory)
	var states []*runState
	for _, r := range runs {
		id := base
		if len(c.Sweep) > 0 {
			id = base + "-" + schemas.SubjectToken(r.Name)
		}
		w := r.Workload
		client := loadgen.NewClient(b.BaseURL(), b.Name())
		client.Chat = w.API == "chat"
		client.Sampling = w.ResolvedSampling()
		client.IgnoreEOS = *w.IgnoreEOS
		if e.showTokens {
			client.OnText = func(reqID, text string) {
				if strings.HasSuffix(reqID, "-r0") {
					fmt.Fprint(os.Stderr, text)
				}
			}
		}
		var tok loadgen.Tokenizer
		if *w.Tokenize {
			tok = &loadgen.HTTPTokenizer{BaseURL: b.BaseURL(), Model: b.Name()}
		}
		st := &runState{name: r.Name}
		rng := rand.New(rand.NewPCG(c.Measurement.Seed, uint64(len(states))+1))
		for cy := 0; cy < c.Measurement.Cycles; cy++ {
			ps, err := w.Dataset.Load(ctx, w.Requests, rng, tok)
			if err != nil {
				return nil, fmt.Errorf("run %s: %w", r.Name, err)
			}
			st.prompts = append(st.prompts, ps)
		}
		// Stored with every run event: secrets in the backend's environment
		// are redacted (the launch used the real values).
		cfgJSON, _ := json.Marshal(map[string]any{"backend": b.Redacted(), "workload": w, "run": r.Name,
			"sampling": client.Sampling, "measurement": c.Measurement})
		rc := loadgen.RunConfig{RunID: id, Experiment: c.Experiment, Backend: b.Kind, Model: b.Name(), Host: host,
			Devices: devUUIDs, Config: string(cfgJSON), Inventory: string(invJSON), Cycles: c.Measurement.Cycles,
			RequestsPerCycle: w.Requests, Duration: w.Duration.Duration, Arrival: w.Arrival,
			Prompts: func(cy int) []loadgen.Prompt { return st.prompts[cy] }, Seed: c.Measurement.Seed + uint64(len(states)),
			Warmup: w.Warmup, Timeout: w.Timeout.Duration}
		st.runner = loadgen.NewRunner(rc, client, pub)
		states = append(states, st)
	}
	inflightMu.Lock()
	inflight = func() int64 {
		var n int64
		for _, s := range states {
			n += s.runner.InFlight.Load()
		}
		return n
	}
	inflightMu.Unlock()

	// 5. Settle, idle baseline, warm-up.
	if !sleepCtx(ctx, c.Measurement.Settle.Duration) {
		return nil, ctx.Err()
	}
	clk := loadgen.NewClock()
	fmt.Fprintf(e.out, "experiment %s: idle baseline %v\n", c.Experiment, c.Measurement.Baseline.Duration)
	from := clk.Now()
	var baseW, baseT []float64
	for end := time.Now().Add(c.Measurement.Baseline.Duration); time.Now().Before(end); {
		if pr != nil {
			if w, t, ok := pr(); ok {
				baseW, baseT = append(baseW, w), append(baseT, t)
			}
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	to := clk.Now()
	for _, s := range states {
		if err := s.runner.MarkBaseline(from, to); err != nil {
			return nil, err
		}
	}
	idleW, idleT := math.NaN(), math.NaN()
	if len(baseW) > 0 {
		idleW, idleT = analytics.Summarise(baseW).Mean, analytics.Summarise(baseT).Mean
	}
	if c.Collectors.GPU == "sim" {
		idleT = math.NaN() // the simulator has no temperature
	}
	for _, s := range states {
		if err := s.runner.WarmUp(ctx); err != nil {
			return nil, err
		}
	}

	// 6. Cycles: every configuration once per cycle, in shuffled order.
	order := make([]int, len(states))
	for i := range order {
		order[i] = i
	}
	srng := rand.New(rand.NewPCG(c.Measurement.Seed, 0xc0ffee))
	first := true
	for cy := 0; cy < c.Measurement.Cycles; cy++ {
		if *c.Measurement.Shuffle {
			srng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		for _, i := range order {
			s := states[i]
			if !first {
				e.coolDown(ctx, pr, idleW, idleT)
			}
			first = false
			rc := s.runner.Config()
			bar := progress.New(os.Stderr, fmt.Sprintf("cycle %d/%d %s", cy+1, c.Measurement.Cycles, s.name), int64(rc.RequestsPerCycle), e.quiet)
			s.runner.SetProgress(func(_, done, total, failed int) { bar.Set(int64(done), fmt.Sprintf("%d failed", failed)) })
			sctx, stopScrape := context.WithCancel(ctx)
			var swg sync.WaitGroup
			if *c.Collectors.Scrape.Enabled {
				sc := &loadgen.Scraper{URL: b.BaseURL() + c.Collectors.Scrape.Path, RunID: rc.RunID,
					Interval: c.Collectors.Scrape.Interval.Duration, Match: c.Collectors.Scrape.Match, Clock: clk}
				swg.Add(1)
				go func() { defer swg.Done(); _ = sc.Run(sctx, pub) }()
			}
			err := s.runner.Cycle(ctx, cy)
			stopScrape()
			swg.Wait()
			bar.Done()
			if err != nil {
				return nil, fmt.Errorf("run %s cycle %d: %w", s.name, cy, err)
			}
		}
	}

	// 7. The post-load tail, then stop everything and analyse.
	sleepCtx(ctx, time.Second)
	stopCols()
	// Every event the collectors and runners published must be in the
	// stream before ingest is told to drain it.
	fctx, fcancel := context.WithTimeout(context.Background(), time.Minute)
	if err := pub.Flush(fctx); err != nil {
		log.Error().Err(err).Msg("flushing published events")
	}
	fcancel()
	backboneStopped = true
	stopBackbone()
	if c.Output.NATS != "" {
		fmt.Fprintf(e.out, "events published to %s; analyse with: lem analyze -run %s ...\n", c.Output.NATS, base)
		return nil, nil
	}
	pq := c.Output.Parquet
	if chcfg.Addr != "" {
		pq = ""
	}
	st, closeFn, err := openStore(context.Background(), chcfg, pq)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	var results []*analytics.RunResult
	for _, s := range states {
		res, err := analytics.AnalyzeRun(context.Background(), st, s.runner.Config().RunID)
		if err != nil {
			return results, err
		}
		analytics.PrintRun(e.out, res)
		fmt.Fprintln(e.out)
		results = append(results, res)
		if err := writeResults(context.Background(), chcfg, pq, res); err != nil {
			return results, fmt.Errorf("writing results of %s: %w", res.RunID, err)
		}
	}
	if len(results) > 1 {
		printSweep(e.out, states, results)
	}
	return results, nil
}

// coolDown waits at least the minimum, then until the devices are back
// near their baseline power and temperature, at most the maximum.
func (e *experimentRun) coolDown(ctx context.Context, pr probe, idleW, idleT float64) {
	cd := e.cfg.Measurement.CoolDown
	start := time.Now()
	if !sleepCtx(ctx, cd.Min.Duration) || pr == nil || math.IsNaN(idleW) {
		return
	}
	for time.Since(start) < cd.Max.Duration {
		w, t, ok := pr()
		if !ok || (w <= idleW*(1+cd.PowerWithin) && (math.IsNaN(idleT) || t <= idleT+cd.TempWithinC)) {
			return
		}
		if !sleepCtx(ctx, 500*time.Millisecond) {
			return
		}
	}
	e.log.Warn().Dur("max", cd.Max.Duration).Msg("devices not back near baseline power/temperature at the end of the cool-down")
}

// printSweep writes one line per configuration.
func printSweep(w io.Writer, states []*runState, results []*analytics.RunResult) {
	fmt.Fprintln(w, "configurations (mean ± 95% CI over cycles):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tenergy J\tJ/token\ttokens/J\tTTFT p50 ms\tITL p50 ms\tthroughput tok/s\tquality")
	for i, r := range results {
		s := r.Summary
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", states[i].name, fmtStat(s["energy_j"]), fmtStat(s["j_per_token"]),
			fmtStat(s["tokens_per_j"]), fmtStat(s["ttft_p50_ms"]), fmtStat(s["itl_p50_ms"]), fmtStat(s["throughput_tok_s"]), r.Quality)
	}
	tw.Flush()
}

func fmtStat(s analytics.Stat) string {
	if math.IsNaN(s.CI95) {
		return fmt.Sprintf("%.4g", s.Mean)
	}
	return fmt.Sprintf("%.4g ± %.2g", s.Mean, s.CI95)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
