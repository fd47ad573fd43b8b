package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
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
	web                                               string // lem web's address; empty: not started
}

func (d *demo) run(ctx context.Context) error {
	start := time.Now()
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	// A platform left by an earlier demo reads the store about to be
	// emptied: stop it and drop its state.
	stopPreviousProcess(filepath.Join(d.out, "web", "pid"), "web")
	os.RemoveAll(filepath.Join(d.out, "web"))
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

	// 8. The results platform, showing the run.
	if d.web != "" {
		url, err := d.startWeb(store.Name())
		if err != nil {
			return fmt.Errorf("starting the results platform: %w", err)
		}
		fmt.Printf("\nthe results platform is at %s — the demo run is on its leaderboard, marked simulated:\n  %sruns/%s\n(it keeps running; stop it: make demo-stop, or kill $(cat %s))\n",
			url, url, runID, filepath.Join(d.out, "web", "pid"))
	}
	fmt.Printf("\ndemo finished in %.0f s\n", time.Since(start).Seconds())
	return nil
}

// startWeb starts `lem web` on the demo's store as a process of its own
// (it outlives the demo), waits until it serves the run, and returns its
// address. A platform left by an earlier demo in the same directory is
// stopped first.
func (d *demo) startWeb(storeName string) (string, error) {
	dir := filepath.Join(d.out, "web")
	stopPreviousProcess(filepath.Join(dir, "pid"), "web")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	addr := d.web
	if ln, err := net.Listen("tcp", addr); err == nil {
		addr = ln.Addr().String() // a port of 0 becomes the one chosen
		ln.Close()
	} else if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
		addr = ln.Addr().String() // the asked-for port is taken: any free one
		ln.Close()
	} else {
		return "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(exe, ".test") {
		// In-process demos of tests: a test binary is not lem.
		return "", errors.New("the platform is started by the lem binary, not by a test binary: pass -web \"\"")
	}
	args := []string{"web", "-listen", addr, "-data", dir, "-admin-token-file", filepath.Join(dir, "admin-token"), "-log-format", "json"}
	if storeName == "clickhouse" {
		args = append(args, "-clickhouse", d.ch.Addr, "-database", d.ch.Database, "-clickhouse-user", d.ch.User)
		if d.ch.PasswordFile != "" {
			args = append(args, "-clickhouse-password-file", d.ch.PasswordFile)
		}
	} else {
		args = append(args, "-parquet", filepath.Join(d.out, "store"))
	}
	logf, err := os.Create(filepath.Join(dir, "web.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(fmt.Sprintln(pid)), 0o644); err != nil {
		return "", err
	}
	url := "http://" + addr + "/"
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(url + "api/health")
		if err == nil {
			var h struct{ Runs int }
			json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if h.Runs > 0 {
				return url, nil
			}
		}
		if syscall.Kill(pid, 0) != nil || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "web.log"))
			return "", fmt.Errorf("lem web did not come up on %s: %s", addr, tailOf(log, 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tailOf(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// stopPreviousProcess stops the process whose pid is in pidFile if its
// command line contains word (a lem web or clickhouse-server left by an
// earlier demo), and waits for it to exit.
func stopPreviousProcess(pidFile, word string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscanf(string(b), "%d", &pid); err != nil || pid <= 0 {
		return
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !strings.Contains(string(cmdline), word) && !strings.Contains(exe, word) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
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
func stopPrevious(dir string) { stopPreviousProcess(filepath.Join(dir, "pid"), "clickhouse") }

// waitIngested returns once ingest has stored everything on the stream.
func waitIngested(ctx context.Context, js jetstream.JetStream) error {
	return bus.WaitIngested(ctx, js)
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
	web         *string
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
		web:         fs.String("web", "127.0.0.1:8080", "start the results platform (lem web) on this address at the end, showing the run (another free port if taken; empty: don't)"),
		stc:         storeFlags(fs, "", ""),
		logger:      logFlags(fs),
	}
	return opt.run
}

func (opt *demoCmd) run(_ []string) error {
	d := demo{out: *opt.out, store: *opt.store, ch: opt.stc().ClickHouse, log: opt.logger(), cycles: *opt.cycles, requests: *opt.requests,
		concurrency: *opt.concurrency, outTokens: *opt.outTokens, baseline: *opt.baseline, cooldown: *opt.cooldown,
		devices: *opt.devices, seed: *opt.seed, web: *opt.web}
	ctx, cancel := signalContext()
	defer cancel()
	return d.run(ctx)

}
