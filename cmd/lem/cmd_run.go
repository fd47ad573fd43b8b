package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

func init() {
	register(&command{
		name: "run",
		summary: "Run an experiment file: launch (or attach to) the backend, measure the idle baseline, warm up, " +
			"run the cycles of every configuration with power collectors beside the load, and print the results.",
		usage: "EXPERIMENT.yaml",
		setup: newRunCmd,
	})
	register(&command{
		name:    "check-config",
		summary: "Validate an experiment file: every problem names its parameter, why, and what to use instead.",
		usage:   "EXPERIMENT.yaml",
		setup: func(fs *flag.FlagSet) func([]string) error {
			sets := setFlags(fs)
			return func(args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				cfg, notes, err := loadExperiment(args[0], sets()...)
				if err != nil {
					return err
				}
				for _, n := range notes {
					fmt.Printf("normalised %s\n", n)
				}
				if cfg.Measurement.Cycles < analytics.MinCyclesForCI {
					fmt.Printf("warning: measurement.cycles: %d cycle(s) give no confidence interval (too_few_cycles); use %d or more\n",
						cfg.Measurement.Cycles, analytics.MinCyclesForCI)
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
			sets := setFlags(fs)
			return func(args []string) error {
				if len(args) != 2 || args[0] != "show" {
					return errUsage
				}
				cfg, notes, err := loadExperiment(args[1], sets()...)
				if err != nil {
					return err
				}
				return experiment.ShowNonDefault(os.Stdout, cfg, notes)
			}
		},
	})
}

// loadExperiment reads, normalises and validates an experiment file.
func loadExperiment(path string, sets ...string) (*experiment.Config, []string, error) {
	cfg, err := experiment.LoadWith(path, sets)
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
	ch         chstore.Config
	natsOpts   []nats.Option // authentication and TLS for output.nats
	log        zerolog.Logger
	showTokens bool
	quiet      bool
	out        io.Writer
	// footprint converts energy to CO2e and cost in the printed results.
	footprint analytics.Footprint
	// stamp names the runs (UTC time of start unless set).
	stamp string
	// Hooks of a remote worker: progress events (instead of the terminal
	// display), each streamed chunk, and the devices' power probe once the
	// collectors are open.
	onProgress func(experiment.Progress)
	onChunk    func()
	onProbe    func(experiment.Probe)
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

// execute runs the experiment end to end (experiment.Execute with this
// process's publisher, collectors and progress display), then analyses
// and prints each run and writes its results back to the store.
func (e *experimentRun) execute(ctx context.Context) ([]*analytics.RunResult, error) {
	c := e.cfg
	log := e.log
	if err := os.MkdirAll(c.Out, 0o755); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()

	// 1. Where events go: an external JetStream, or an embedded one with
	// ingest into the store.
	chcfg := e.ch
	if c.Output.Store == "clickhouse" {
		chcfg.Addr, chcfg.Database = c.Output.ClickHouse, c.Output.Database
	}
	pq := c.Output.Parquet
	if pq == "" {
		pq = filepath.Join(c.Out, "store")
	}
	sc := store.Config{Parquet: pq}
	if chcfg.Addr != "" {
		sc = store.Config{ClickHouse: chcfg}
	}
	var pub *bus.Publisher
	var stopBackbone func()
	if c.Output.NATS == "" {
		bb, err := startBackbone("", "", pq+".nats", sc, log)
		if err != nil {
			return nil, err
		}
		stopBackbone = bb.stop
		if pub, err = bus.NewPublisher(bb.nc, 0); err != nil {
			bb.stop()
			return nil, err
		}
	} else {
		nc, err := bus.Connect(c.Output.NATS, "lem-run", log, e.natsOpts...)
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
	capacity := 8.0
	if a := c.Workload.Arrival; a.Concurrency > 0 {
		capacity = float64(a.Concurrency)
	}
	gc, err := openCollectors(collectorConfig{GPU: c.Collectors.GPU, Devices: c.Collectors.Devices,
		SimDevices: max(len(c.Collectors.Devices), c.Backend.Parallelism.GPUs(), 1), Seed: c.Measurement.Seed,
		RAPL: c.Collectors.RAPL, CounterBudget: c.Collectors.CounterCPUBudget, AlignedCounter: c.Collectors.AlignedCounter,
		Publish: 500 * time.Millisecond, Capacity: capacity}, host, log)
	if err != nil {
		return nil, err
	}
	defer gc.close()
	gc.inventory["lem"], gc.inventory["host"] = version, host

	// 3. The protocol.
	deps := experiment.Deps{Publisher: pub, Collectors: gc.collectors, Probe: gc.probe, Devices: gc.devices,
		Inventory: gc.inventory, Host: host, Stamp: e.stamp, Log: log, InFlight: gc.setInFlight,
		Progress: progressDisplay(os.Stderr, log, e.quiet)}
	if e.onProgress != nil {
		deps.Progress = e.onProgress
	}
	if e.onProbe != nil && gc.probe != nil {
		e.onProbe(gc.probe)
	}
	switch {
	case e.showTokens:
		deps.OnText = func(reqID, text string) {
			if strings.HasSuffix(reqID, "-r0") {
				fmt.Fprint(os.Stderr, text)
			}
		}
	case e.onChunk != nil:
		deps.OnText = func(string, string) { e.onChunk() }
	}
	fmt.Fprintf(e.out, "experiment %s: idle baseline %v\n", c.Experiment, c.Measurement.Baseline.Duration)
	runs, err := experiment.Execute(ctx, c, deps)
	if err != nil {
		return nil, err
	}
	backboneStopped = true
	stopBackbone()
	if c.Output.NATS != "" {
		fmt.Fprintf(e.out, "events published to %s; analyse with: lem analyze -clickhouse ... %s\n", c.Output.NATS, runs[0].RunID)
		return nil, nil
	}

	// 4. Analysis, printed and written back.
	st, err := openStore(context.Background(), sc, false, log)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var results []*analytics.RunResult
	var names []string
	for _, r := range runs {
		res, err := analytics.AnalyzeRun(context.Background(), st, r.RunID)
		if err != nil {
			return results, err
		}
		f := e.footprint
		if f.GridGPerKWh == 0 && f.GridSource == "" {
			f = analytics.DefaultFootprint
		}
		analytics.PrintRunWith(e.out, res, f)
		fmt.Fprintln(e.out)
		results, names = append(results, res), append(names, r.Name)
		if err := writeResults(context.Background(), st, res); err != nil {
			return results, err
		}
	}
	if len(results) > 1 {
		printSweep(e.out, names, results)
	}
	return results, nil
}

// printSweep writes one line per configuration.
func printSweep(w io.Writer, names []string, results []*analytics.RunResult) {
	fmt.Fprintln(w, "configurations (mean ± 95% CI over cycles):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tenergy J\tJ/token\ttokens/J\tTTFT p50 ms\tITL p50 ms\tthroughput tok/s\tquality")
	for i, r := range results {
		s := r.Summary
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", names[i], analytics.FormatStat(s["energy_j"]), analytics.FormatStat(s["j_per_token"]),
			analytics.FormatStat(s["tokens_per_j"]), analytics.FormatStat(s["ttft_p50_ms"]), analytics.FormatStat(s["itl_p50_ms"]), analytics.FormatStat(s["throughput_tok_s"]), r.Label())
	}
	tw.Flush()
}

// runCmd holds the flags of `lem run`.
type runCmd struct {
	showTokens *bool
	dryRun     *bool
	outDir     *string
	stc        func() store.Config
	natsOpts   func() ([]nats.Option, error)
	logger     func() zerolog.Logger
	footprint  func() analytics.Footprint
	sets       func() []string
	profile    func() (stop func(), err error)
}

// newRunCmd registers the flags of `lem run` on fs.
func newRunCmd(fs *flag.FlagSet) func([]string) error {
	opt := &runCmd{
		showTokens: fs.Bool("show-tokens", false, "print the streamed text of each cycle's first request as it arrives"),
		dryRun:     fs.Bool("dry-run", false, "check the file, print the plan and the backend's command line, run nothing"),
		outDir:     fs.String("out", "", "directory for logs and the local store (overrides the file's out:)"),
		stc:        storeFlags(fs, "", ""),
		natsOpts:   natsFlags(fs),
		logger:     logFlags(fs),
		footprint:  footprintFlags(fs),
		sets:       setFlags(fs),
		profile:    profileFlag(fs, "the run (load generator, pipeline, analysis)"),
	}
	return opt.run
}

func (opt *runCmd) run(args []string) error {
	if len(args) != 1 {
		return errUsage
	}
	cfg, notes, err := loadExperiment(args[0], opt.sets()...)
	if err != nil {
		return err
	}
	if *opt.outDir != "" {
		if cfg.Output.Parquet == cfg.Out+"/store" {
			cfg.Output.Parquet = filepath.Join(*opt.outDir, "store")
		}
		cfg.Out = *opt.outDir
	}
	ch := opt.stc().ClickHouse
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	log := opt.logger()
	e := &experimentRun{cfg: cfg, notes: notes, ch: ch, natsOpts: nopts, log: log, showTokens: *opt.showTokens, footprint: opt.footprint(),
		quiet: log.GetLevel() >= zerolog.ErrorLevel, out: os.Stdout}
	if *opt.dryRun {
		return e.plan(os.Stdout)
	}
	stop, err := opt.profile()
	if err != nil {
		return err
	}
	defer stop()
	ctx, cancel := signalContext()
	defer cancel()
	_, err = e.execute(ctx)
	return err

}
