package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/collectors/nvml"
	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/platform"
	"github.com/llm-energy-measure/lem/store"
)

func init() {
	register(&command{
		name: "worker",
		summary: "Run jobs from a results platform on this GPU host: announce its hardware profile and GPU sets, take the jobs the platform " +
			"releases to them (one at a time per set), run each experiment with the normal collectors, upload the runs for verification.",
		setup: newWorkerCmd,
	})
}

type workerCmd struct {
	natsURL, platformURL, tokenFile, profile, data, id, sets *string
	lease                                                    *time.Duration
	once                                                     *bool
	commands                                                 map[string][]string // backend kind → this host's executable
	models                                                   map[string]string   // model name → this host's file or folder
	natsOpts                                                 func() ([]nats.Option, error)
	logger                                                   func() zerolog.Logger
}

func newWorkerCmd(fs *flag.FlagSet) func([]string) error {
	opt := &workerCmd{
		natsURL:     fs.String("nats", "nats://127.0.0.1:4222", "the platform's NATS server (lem web -nats-listen)"),
		platformURL: fs.String("platform", "http://127.0.0.1:8080", "the platform's address (uploads)"),
		tokenFile:   fs.String("token-file", "", "file holding an API token with the worker and upload scopes (or set LEM_TOKEN)"),
		profile:     fs.String("profile", "auto", "hardware profile of this host's jobs: auto (from NVML), sim (simulated GPU), or a standard profile id"),
		data:        fs.String("data", "lem-worker", "directory for each job's logs and local store"),
		id:          fs.String("id", "", "this worker's name (default host-pid)"),
		sets: fs.String("gpu-sets", "", "the GPU sets that each run one job at a time, as GPU indices: \"0,1 2,3\" is two sets of two "+
			"(default: one set of all the host's GPUs); a set takes jobs of at most its size"),
		lease:    fs.Duration("lease", platform.DefaultLease, "a job is handed to another worker when this one has not heartbeat for this long"),
		once:     fs.Bool("once", false, "exit after one job"),
		natsOpts: natsFlags(fs),
		logger:   logFlags(fs),
		commands: map[string][]string{},
		models:   map[string]string{},
	}
	fs.Func("backend-command", "KIND=COMMAND: the executable this host runs for a backend kind, e.g. "+
		"'llama.cpp=/opt/llama/bin/llama-server' (repeatable; default: the kind's usual executable on PATH)", func(v string) error {
		k, c, ok := strings.Cut(v, "=")
		kind, err := backend.Canonical(strings.TrimSpace(k))
		if !ok || len(strings.Fields(c)) == 0 {
			return fmt.Errorf("want KIND=COMMAND, got %q", v)
		}
		if err != nil {
			return err
		}
		opt.commands[kind] = strings.Fields(c)
		return nil
	})
	fs.Func("model", "NAME=PATH: a model this host serves from a local file or folder; a job naming NAME as its backend.model runs PATH "+
		"and is recorded under NAME (repeatable)", func(v string) error {
		name, path, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(name) == "" || strings.TrimSpace(path) == "" {
			return fmt.Errorf("want NAME=PATH, got %q", v)
		}
		opt.models[strings.TrimSpace(name)] = strings.TrimSpace(path)
		return nil
	})
	return opt.run
}

// detectProfile matches this host's first GPU to a standard profile; an
// unknown board is an error, never a guess.
func detectProfile(log zerolog.Logger) (string, int, error) {
	host, _ := os.Hostname()
	col, err := nvml.Build(nvml.Config{}, collectors.Env{Host: host, Log: log})
	if err != nil {
		return "", 0, fmt.Errorf("-profile auto: %w (give -profile)", err)
	}
	rd := col.(*nvml.Collector).Reader()
	defer rd.Close()
	if len(rd.GPUs) == 0 {
		return "", 0, errors.New("-profile auto: no GPU")
	}
	p, ok := platform.MatchProfile(rd.GPUs[0].ID.Name, 0)
	if !ok {
		return "", 0, fmt.Errorf("-profile auto: %q matches no standard profile; an operator adds it, or give -profile", rd.GPUs[0].ID.Name)
	}
	return p.ID, len(rd.GPUs), nil
}

func (opt *workerCmd) run(args []string) error {
	if len(args) != 0 {
		return errUsage
	}
	log := opt.logger()
	token, err := apiToken(*opt.tokenFile, "the worker and upload scopes")
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	id := *opt.id
	if id == "" {
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	nopts, err := opt.natsOpts()
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	nc, err := bus.Connect(*opt.natsURL, "lem-worker "+id, log, nopts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	state, err := platform.OpenState(ctx, js)
	if err != nil {
		return err
	}
	jobs, err := platform.OpenJobs(ctx, nc, js, state, platform.JobsConfig{Lease: *opt.lease})
	if err != nil {
		return err
	}
	// Boards the platform's moderators accepted are profiles too.
	if err := platform.LoadAcceptedProfiles(ctx, state); err != nil {
		return err
	}
	profile, gpus := *opt.profile, 1
	if profile == "auto" {
		if profile, gpus, err = detectProfile(log); err != nil {
			return err
		}
	}
	sets, err := parseGPUSets(*opt.sets, gpus)
	if err != nil {
		return err
	}

	// One loop per GPU set, each announced as a worker of its own.
	errs := make(chan error, len(sets))
	for _, set := range sets {
		wid := id
		if len(sets) > 1 {
			wid = fmt.Sprintf("%s-gpu%s", id, joinInts(set, "-"))
		}
		w := &worker{id: wid, host: host, profile: profile, gpus: len(set), devices: set, jobs: jobs, js: js, token: token,
			commands: opt.commands, models: opt.models,
			platformURL: *opt.platformURL, data: filepath.Join(*opt.data, wid), log: log.With().Str("worker", wid).Logger()}
		go func() { errs <- w.loop(ctx, *opt.once) }()
	}
	var first error
	for range sets {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// parseGPUSets reads -gpu-sets: sets separated by spaces or semicolons,
// indices within a set by commas. Empty: one set of the host's gpus GPUs.
// A GPU in two sets is refused.
func parseGPUSets(s string, gpus int) ([][]int, error) {
	if strings.TrimSpace(s) == "" {
		set := make([]int, max(gpus, 1))
		for i := range set {
			set[i] = i
		}
		return [][]int{set}, nil
	}
	var sets [][]int
	seen := map[int]bool{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ';' }) {
		set, err := parseIndices(f)
		if err != nil || len(set) == 0 {
			return nil, fmt.Errorf("-gpu-sets %q: %q is not a comma-separated list of GPU indices", s, f)
		}
		for _, d := range set {
			if seen[d] {
				return nil, fmt.Errorf("-gpu-sets %q: GPU %d is in two sets", s, d)
			}
			seen[d] = true
		}
		sets = append(sets, set)
	}
	return sets, nil
}

func joinInts(xs []int, sep string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, sep)
}

type worker struct {
	id, host, profile, token, platformURL, data string
	gpus                                        int
	devices                                     []int // this worker's GPU set
	commands                                    map[string][]string
	models                                      map[string]string
	jobs                                        *platform.Jobs
	js                                          jetstream.JetStream
	log                                         zerolog.Logger
	current                                     atomic.Value // string: the job running now
}

func (w *worker) beat(ctx context.Context) {
	job, _ := w.current.Load().(string)
	if err := w.jobs.Heartbeat(ctx, platform.Worker{ID: w.id, Host: w.host, Profile: w.profile, GPUs: w.gpus, Devices: w.devices, Job: job, Version: version}); err != nil {
		w.log.Warn().Err(err).Msg("heartbeat")
	}
}

// loop pulls one job at a time until ctx ends.
func (w *worker) loop(ctx context.Context, once bool) error {
	cons, err := w.jobs.Consumer(ctx, w.profile, w.gpus)
	if err != nil {
		return err
	}
	w.current.Store("")
	w.beat(ctx)
	go func() {
		t := time.NewTicker(platform.WorkerHeartbeatTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.beat(ctx)
			}
		}
	}()
	w.log.Info().Str("profile", w.profile).Ints("gpus", w.devices).Dur("lease", w.jobs.Lease()).Msg("worker ready")
	for ctx.Err() == nil {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			w.log.Warn().Err(err).Msg("fetching a job")
			time.Sleep(time.Second)
			continue
		}
		for m := range batch.Messages() {
			w.handle(ctx, m)
			if once {
				return nil
			}
		}
	}
	return nil
}

// handle runs one delivered job: it heartbeats the message while the job
// runs (in-progress acknowledgements), watches for cancellation, and
// acknowledges only once the job's end is recorded, so a worker that dies
// leaves the job to be redelivered after the lease.
func (w *worker) handle(ctx context.Context, m jetstream.Msg) {
	jobID := string(m.Data())
	md, _ := m.Metadata()
	delivery := 1
	if md != nil {
		delivery = int(md.NumDelivered)
	}
	log := w.log.With().Str("job", jobID).Int("delivery", delivery).Logger()
	job, ok, err := w.jobs.Get(ctx, jobID)
	if err != nil {
		log.Warn().Err(err).Msg("reading the job; leaving it for redelivery")
		return
	}
	if !ok || job.Done() || job.CancelRequested {
		// Ended (canceled before it started, or finished by an earlier
		// delivery whose acknowledgement was lost): nothing to run twice.
		log.Info().Bool("known", ok).Str("state", job.State).Msg("job needs no run")
		m.Ack()
		return
	}
	if len(job.RunIDs) > 0 {
		// A delivery that died after uploading runs of it: they count, and
		// running it again would count them twice. All of them in: it
		// succeeded; only some (a sweep cut short): it failed, and says so.
		state, why := platform.JobSucceeded, ""
		if cfg, problems := platform.CheckJob([]byte(job.Config)); len(problems) == 0 {
			if runs, err := cfg.Runs(); err == nil && len(job.RunIDs) < len(runs) {
				state = platform.JobFailed
				why = fmt.Sprintf("an earlier delivery died after uploading %d of its %d runs; running it again would count those twice (submit the rest as a new job)", len(job.RunIDs), len(runs))
			}
		}
		w.finish(ctx, jobID, state, why, "", job.RunIDs)
		m.Ack()
		return
	}
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	started := time.Now()
	if _, err := w.jobs.Update(ctx, jobID, "worker:"+w.id, func(j *platform.Job) error {
		j.State, j.Worker, j.Deliveries, j.StartedNS = platform.JobRunning, w.id, delivery, started.UnixNano()
		j.Error = ""
		return nil
	}); err != nil {
		log.Warn().Err(err).Msg("marking the job running; leaving it for redelivery")
		return
	}
	w.current.Store(jobID)
	w.beat(ctx)
	defer func() { w.current.Store(""); w.beat(ctx) }()

	// Heartbeat the message and watch the job's record for cancellation.
	var canceled atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.jobs.Lease() / 3)
		defer t.Stop()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
				if err := m.InProgress(); err != nil {
					log.Warn().Err(err).Msg("heartbeat of the job")
				}
				if j, ok, _ := w.jobs.Get(jctx, jobID); ok && j.CancelRequested && !canceled.Load() {
					log.Info().Msg("cancel requested: stopping the backend")
					canceled.Store(true)
					cancel()
				}
			}
		}
	}()
	runIDs, tail, err := w.run(jctx, job, delivery)
	cancel()
	wg.Wait()
	switch {
	case canceled.Load():
		w.finish(ctx, jobID, platform.JobCanceled, "canceled at the submitter's request", tail, runIDs)
		m.Ack()
	case err != nil && ctx.Err() != nil:
		// This worker is stopping: leave the job to another delivery.
		log.Info().Msg("stopping; the job will be redelivered")
		m.Nak()
	case err != nil && delivery >= w.jobs.MaxDeliver():
		w.finish(ctx, jobID, platform.JobFailed, err.Error(), tail, runIDs)
		m.Term()
	case err != nil:
		log.Warn().Err(err).Msg("job failed; it will be redelivered")
		w.jobs.Update(ctx, jobID, "worker:"+w.id, func(j *platform.Job) error {
			j.State, j.Error, j.LogTail = platform.JobQueued, err.Error(), tail
			return nil
		})
		m.NakWithDelay(time.Second)
	default:
		w.finish(ctx, jobID, platform.JobSucceeded, "", tail, runIDs)
		m.Ack()
	}
}

// finish records a job's end, with what it took.
func (w *worker) finish(ctx context.Context, jobID, state, why, tail string, runIDs []string) {
	j, err := w.jobs.Update(ctx, jobID, "worker:"+w.id, func(j *platform.Job) error {
		j.State, j.EndedNS, j.Error, j.LogTail = state, time.Now().UnixNano(), why, tail
		if j.StartedNS > 0 {
			j.ActualS = float64(j.EndedNS-j.StartedNS) / 1e9
		}
		for _, r := range runIDs {
			if !slices.Contains(j.RunIDs, r) {
				j.RunIDs = append(j.RunIDs, r)
			}
		}
		return nil
	})
	if err != nil {
		w.log.Error().Err(err).Str("job", jobID).Msg("recording the job's end")
		return
	}
	w.publish(ctx, platform.Progress{JobID: jobID, State: j.State, EndOfJob: true, Message: why, ElapsedS: j.ActualS, LogTail: tail})
	w.log.Info().Str("job", jobID).Str("state", j.State).Strs("runs", j.RunIDs).Msg("job ended")
}

// publish sends a progress update of a job to its subject.
func (w *worker) publish(ctx context.Context, p platform.Progress) {
	p.AtNS, p.WorkerID = time.Now().UnixNano(), w.id
	b, _ := json.Marshal(p)
	if _, err := w.js.Publish(ctx, platform.ProgressSubject(p.JobID), b); err != nil {
		w.log.Debug().Err(err).Msg("progress not published")
	}
}

// logTail keeps the last lines of a job's log.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (t *logTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		t.lines = append(t.lines, l)
	}
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
	return len(b), nil
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// run executes the job's experiment as lem run does (embedded JetStream,
// local store under the worker's data directory), publishes live
// progress, and uploads each run with the job's id. It returns the runs
// uploaded and the log's tail.
func (w *worker) run(ctx context.Context, job platform.Job, delivery int) ([]string, string, error) {
	tail := &logTail{}
	log := zerolog.New(zerolog.MultiLevelWriter(tail, zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true, TimeFormat: "15:04:05.000"})).Level(zerolog.InfoLevel).With().Timestamp().Str("job", job.ID).Logger()
	cfg, problems := platform.CheckJob([]byte(job.Config))
	if len(problems) > 0 {
		return nil, tail.String(), fmt.Errorf("the experiment file: %s", strings.Join(problems, "; "))
	}
	// The host's side of the job is the worker's to choose: its GPU set
	// (the file's devices, if any, are replaced) and a free port for the
	// backend (another set's job may be running on the file's).
	n := max(cfg.Backend.Parallelism.GPUs(), 1)
	if n > len(w.devices) {
		return nil, tail.String(), fmt.Errorf("the job needs %d GPUs; this worker's set has %d (%v)", n, len(w.devices), w.devices)
	}
	if d := cfg.Backend.Parallelism.Devices; len(d) > 0 && !slices.Equal(d, w.devices[:n]) {
		log.Info().Ints("file", d).Ints("set", w.devices[:n]).Msg("the job runs on this worker's GPU set, not on the devices its file names")
	}
	cfg.Backend.Parallelism.Devices = slices.Clone(w.devices[:n])
	cfg.Collectors.Devices = slices.Clone(w.devices[:n])
	port, err := freeTCPPort()
	if err != nil {
		return nil, tail.String(), err
	}
	cfg.Backend.Port = port
	if c, ok := w.commands[cfg.Backend.Kind]; ok {
		cfg.Backend.Command = slices.Clone(c)
	}
	if path, ok := w.models[cfg.Backend.Model]; ok {
		if cfg.Backend.ServedName == "" {
			cfg.Backend.ServedName = cfg.Backend.Model
		}
		cfg.Backend.Model = path
	}
	dir := filepath.Join(w.data, job.ID, fmt.Sprintf("delivery-%d", delivery))
	cfg.Out = dir
	cfg.Output.Parquet = filepath.Join(dir, "store")
	started := time.Now()
	var chunks atomic.Int64
	var probe atomic.Pointer[experiment.Probe]
	var last atomic.Pointer[platform.Progress]
	var runsTotal int
	if runs, err := cfg.Runs(); err == nil {
		runsTotal = len(runs)
	}
	report := func(p experiment.Progress) {
		pr := platform.Progress{JobID: job.ID, Phase: string(p.Phase), Run: p.Run, RunID: p.RunID, Cycle: p.Cycle, Cycles: p.Cycles,
			Done: p.Done, Total: p.Total, Failed: p.Failed, ElapsedS: time.Since(started).Seconds(), Delivery: delivery, RunsTotal: runsTotal}
		last.Store(&pr)
		w.publish(ctx, pr)
	}
	// Every second: the devices' power, the chunk rate, and an ETA (the
	// estimate's middle less the time elapsed).
	tickDone := make(chan struct{})
	tctx, stopTicks := context.WithCancel(ctx)
	defer stopTicks()
	go func() {
		defer close(tickDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prev := int64(0)
		for {
			select {
			case <-tctx.Done():
				return
			case <-t.C:
			}
			pr := platform.Progress{JobID: job.ID, Phase: "running", ElapsedS: time.Since(started).Seconds(), Delivery: delivery, RunsTotal: runsTotal}
			if l := last.Load(); l != nil {
				pr = *l
				pr.ElapsedS = time.Since(started).Seconds()
			}
			n := chunks.Load()
			pr.ChunksPS, prev = float64(n-prev), n
			if f := probe.Load(); f != nil {
				if watts, _, ok := (*f)(); ok {
					pr.PowerW = watts
				}
			}
			mid := (job.Estimate.DurationS[0] + job.Estimate.DurationS[1]) / 2
			pr.ETAS = max(0, mid-pr.ElapsedS)
			w.publish(ctx, pr)
		}
	}()
	e := &experimentRun{cfg: cfg, log: log, quiet: true, out: tail, footprint: analytics.DefaultFootprint,
		onProgress: report, onChunk: func() { chunks.Add(1) }, onProbe: func(p experiment.Probe) { probe.Store(&p) }}
	results, err := e.execute(ctx)
	stopTicks()
	<-tickDone
	if err != nil {
		return nil, tail.String(), err
	}
	st, err := openStore(context.Background(), store.Config{Parquet: cfg.Output.Parquet}, false, log)
	if err != nil {
		return nil, tail.String(), err
	}
	defer st.Close()
	var uploaded []string
	for _, r := range results {
		path := filepath.Join(dir, r.RunID+".lemb")
		f, err := os.Create(path)
		if err != nil {
			return uploaded, tail.String(), err
		}
		_, hash, err := platform.WriteBundle(ctx, st, r.RunID, version, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return uploaded, tail.String(), fmt.Errorf("bundle of %s: %w", r.RunID, err)
		}
		msg, err := platform.SendWith(ctx, w.platformURL, w.token, path, hash, platform.SendOptions{Job: job.ID})
		if err != nil {
			return uploaded, tail.String(), fmt.Errorf("uploading %s: %w", r.RunID, err)
		}
		log.Info().Str("run", r.RunID).Msg(strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0]))
		uploaded = append(uploaded, r.RunID)
	}
	return uploaded, tail.String(), nil
}

// freeTCPPort asks the kernel for a loopback port nobody listens on.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port for the backend: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
