package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/loadgen"
	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/exporters"
	"github.com/llm-energy-measure/lem/exporters/hfdataset"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/chserver"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

func init() {
	register(&command{
		name: "demo",
		summary: "Run a short measured experiment on embedded defaults (JetStream in-process, simulated GPU power, " +
			"synthetic streaming server), store it, print the results table and export a dataset.",
		setup: newDemoCmd,
	})
}

// demoExperiment is the demo's experiment file: the synthetic server
// attached as an external backend, a simulated GPU, closed-loop load.
const demoExperiment = `experiment: lem-demo
out: %q
backend: {kind: external, endpoint: %q, model: %q}
workload:
  requests: %d
  arrival: {process: concurrency, concurrency: %d}
  dataset: {kind: synthetic, prompt_tokens: {mean: 256}, output_tokens: {mean: %d}}
  tokenize: false
measurement:
  cycles: %d
  baseline: %s
  settle: 1s
  cooldown: {min: %s, max: %s}
  seed: %d
collectors: {gpu: sim, rapl: "off", scrape: {enabled: false}}
`

type demo struct {
	out, store                                        string
	ch                                                chstore.Config
	log                                               zerolog.Logger
	cycles, requests, concurrency, outTokens, devices int
	baseline, cooldown                                time.Duration
	seed                                              uint64
}

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	// 1. Embedded JetStream.
	natsDir := filepath.Join(d.out, "nats")
	os.RemoveAll(natsDir)
	emb, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: natsDir})
	if err != nil {
		return err
	}
	defer emb.Shutdown()
	nc, err := emb.Connect("lem-demo")
	if err != nil {
		return err
	}
	defer nc.Close()
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		return err
	}
	js := pub.JetStream()
	if err := bus.EnsureStreams(ctx, js, bus.StreamConfig{}); err != nil {
		return err
	}

	// 2. The store.
	store, err := d.openStore(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	fmt.Printf("store: %s\n", store.Describe())

	// 3. Ingest in-process.
	ictx, stopIngest := context.WithCancel(context.Background())
	ingestDone := make(chan error, 1)
	go func() {
		ingestDone <- ingest.New(js, store, ingest.Config{FlushInterval: 500 * time.Millisecond}, nil, d.log).Run(ictx)
	}()
	defer func() { stopIngest(); <-ingestDone }()

	// 4. Synthetic server and the simulated GPU whose power follows it.
	syn := loadgen.NewSynthetic(loadgen.SyntheticConfig{})
	defer syn.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: syn, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	host, _ := os.Hostname()
	simulator := sim.New(sim.Config{Host: host, Devices: d.devices, Seed: d.seed, Publish: 500 * time.Millisecond,
		Load: func(int, int64) float64 { return syn.Load() }}, time.Now())
	var uuids []string
	for _, dev := range simulator.Devices() {
		uuids = append(uuids, dev.UUID)
	}

	// 5. The experiment: the same protocol as lem run, on an experiment
	// file written here.
	cfg, err := experiment.Parse([]byte(fmt.Sprintf(demoExperiment, d.out, "http://"+ln.Addr().String(), loadgen.SyntheticModel,
		d.requests, d.concurrency, d.outTokens, d.cycles, d.baseline, d.cooldown, d.cooldown, d.seed)))
	if err != nil {
		return err
	}
	cfg.Normalize()
	if errs := cfg.Validate(); len(errs) > 0 {
		return fmt.Errorf("demo experiment: %v", errs)
	}
	stamp := time.Now().UTC().Format("20060102T150405Z")
	runID := "lem-demo-" + stamp
	fmt.Printf("run %s: %d-s idle baseline, then %d cycles of %d requests (concurrency %d)\n",
		runID, int(d.baseline.Seconds()), d.cycles, d.requests, d.concurrency)
	_, err = experiment.Execute(ctx, cfg, experiment.Deps{Publisher: pub, Collectors: []collectors.Collector{simulator},
		Devices: uuids, Host: host, Stamp: stamp, Log: d.log, Progress: progressDisplay(os.Stderr, d.log, d.log.GetLevel() >= zerolog.ErrorLevel),
		Inventory: map[string]any{"gpu": "simulated (not a measurement)", "devices": d.devices, "lem": version}})
	if err != nil {
		return err
	}
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := pub.Flush(fctx); err != nil {
		return err
	}
	msgs, _ := pub.Published()
	if err := waitIngested(fctx, js); err != nil {
		return err
	}
	fmt.Printf("published %d messages; all stored\n\n", msgs)

	// 6. Results.
	res, err := analytics.AnalyzeRun(ctx, store, runID)
	if err != nil {
		return err
	}
	analytics.PrintRun(os.Stdout, res)
	// Results beside the events, for SQL, Grafana and exports.
	if err := writeResults(ctx, store, res); err != nil {
		return err
	}

	// 7. Dataset.
	dsDir := filepath.Join(d.out, "dataset")
	os.RemoveAll(dsDir)
	sum, err := hfdataset.Export(ctx, store, store, []string{runID}, []*analytics.RunResult{res}, dsDir, version)
	if err != nil {
		return err
	}
	var parts []string
	for _, t := range exporters.Tables {
		if n := sum.Rows[t]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", t, n))
		}
	}
	fmt.Printf("\ndataset: %s (%s rows)\n", dsDir, strings.Join(parts, ", "))
	d.printNext(runID, store.Name())
	fmt.Printf("\ndemo finished in %.0f s\n", time.Since(start).Seconds())
	return nil
}

// openStore picks ClickHouse (given, or a local server started here) or
// the Parquet store, emptied first.
func (d *demo) openStore(ctx context.Context) (*store.Store, error) {
	useCH := d.ch.Addr != "" || d.store == "clickhouse"
	if d.store == "auto" && d.ch.Addr == "" {
		if _, err := chserver.Binary(); err == nil {
			useCH = true
		}
	}
	if d.store == "parquet" {
		useCH = false
	}
	if !useCH {
		dir := filepath.Join(d.out, "store")
		os.RemoveAll(dir)
		return openStore(ctx, store.Config{Parquet: dir}, false, d.log)
	}
	if d.ch.Addr == "" {
		dir := filepath.Join(d.out, "clickhouse")
		stopPrevious(dir)
		srv, err := chserver.Start(ctx, chserver.Options{Dir: dir, Detach: true})
		if err != nil {
			return nil, err
		}
		d.ch.Addr = srv.Addr()
		fmt.Printf("started clickhouse-server (pid %d) on %s; it keeps running so the rows stay queryable "+
			"(stop it: kill %d, or make demo-stop)\n", srv.Pid(), srv.Addr(), srv.Pid())
	}
	return openStore(ctx, store.Config{ClickHouse: d.ch}, true, d.log)
}

// stopPrevious stops a server an earlier demo left in dir.
func stopPrevious(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil || pid <= 0 {
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !strings.Contains(exe, "clickhouse") {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// waitIngested returns once every ingest consumer has acknowledged all
// messages of its subject.
func waitIngested(ctx context.Context, js jetstream.JetStream) error {
	for {
		done := true
		for _, k := range schemas.Kinds {
			c, err := js.Consumer(ctx, bus.EventStream, "ingest-"+k.String())
			if err != nil {
				done = false
				break
			}
			ci, err := c.Info(ctx)
			if err != nil || ci.NumPending > 0 || ci.NumAckPending > 0 {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("ingest did not catch up within a minute")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *demo) printNext(runID, storeName string) {
	fmt.Println("\nnext:")
	if storeName == "clickhouse" {
		_, port, _ := net.SplitHostPort(d.ch.Addr)
		// The README's queries (docs/queries.md; checked against ClickHouse
		// and DuckDB by go test ./deploy).
		for _, q := range deploy.Queries {
			if q.Title == "TTFT of each request" || q.Title == "Power per second" {
				fmt.Printf("  clickhouse-client --port %s --query \"%s\"\n", port, strings.Join(strings.Fields(q.Expand(d.ch.Database, runID, "")), " "))
			}
		}
		fmt.Printf("  %s runs -clickhouse %s\n", os.Args[0], d.ch.Addr)
		fmt.Printf("  %s analyze -clickhouse %s %s\n", os.Args[0], d.ch.Addr, runID)
	} else {
		fmt.Printf("  %s runs -parquet %s\n", os.Args[0], filepath.Join(d.out, "store"))
		fmt.Printf("  %s analyze -parquet %s %s\n", os.Args[0], filepath.Join(d.out, "store"), runID)
		fmt.Printf("  duckdb -c \"SELECT request_id, output_tokens, (first_token_ns - sent_ns) / 1e6 AS ttft_ms FROM '%s/dataset/data/requests/*.parquet' ORDER BY scheduled_ns LIMIT 5\"\n", d.out)
	}
}

// demoCmd holds the flags of `lem demo`.
type demoCmd struct {
	out         *string
	store       *string
	cycles      *int
	requests    *int
	concurrency *int
	outTokens   *int
	baseline    *time.Duration
	cooldown    *time.Duration
	devices     *int
	seed        *uint64
	stc         func() store.Config
	logger      func() zerolog.Logger
}

// newDemoCmd registers the flags of `lem demo` on fs.
func newDemoCmd(fs *flag.FlagSet) func([]string) error {
	opt := &demoCmd{
		out:         fs.String("out", "lem-demo", "directory for the store, the exported dataset and logs"),
		store:       fs.String("store", "auto", "auto (a local clickhouse-server if installed, else Parquet), clickhouse, or parquet"),
		cycles:      fs.Int("cycles", 3, "measurement cycles"),
		requests:    fs.Int("requests", 48, "requests per cycle"),
		concurrency: fs.Int("concurrency", 8, "requests in flight"),
		outTokens:   fs.Int("output-tokens", 64, "max_tokens of each request"),
		baseline:    fs.Duration("baseline", 3*time.Second, "idle baseline measured before the first cycle"),
		cooldown:    fs.Duration("cooldown", 2*time.Second, "pause between cycles"),
		devices:     fs.Int("devices", 1, "simulated GPUs"),
		seed:        fs.Uint64("seed", 1, "seed of the simulator and the workload"),
		stc:         storeFlags(fs, "", ""),
		logger:      logFlags(fs),
	}
	return opt.run
}

func (opt *demoCmd) run(_ []string) error {
	d := demo{out: *opt.out, store: *opt.store, ch: opt.stc().ClickHouse, log: opt.logger(), cycles: *opt.cycles, requests: *opt.requests,
		concurrency: *opt.concurrency, outTokens: *opt.outTokens, baseline: *opt.baseline, cooldown: *opt.cooldown,
		devices: *opt.devices, seed: *opt.seed}
	ctx, cancel := signalContext()
	defer cancel()
	return d.run(ctx)

}
