package platform

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors/loadgen"
	"github.com/llm-energy-measure/lem/collectors/loadgen/backend"
	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/experiment"
)

// Remote execution: a job is an experiment file submitted to the platform
// for a hardware profile. Its life is events like everything else: every
// transition is a platform event (lem.v1.platform.job.<state>), the
// current state is in the jobs bucket, and a confirmed job is a message on
// a work-queue stream (subject per profile) that workers of that profile
// pull. JetStream redelivers a job whose worker stopped heartbeating
// (in-progress acknowledgements) after the lease; after MaxDeliver
// deliveries the platform marks it failed (the stream's max-deliveries
// advisory).
const (
	JobStream          = "LEM_JOBS_V1"
	JobSubjectRoot     = "lem.jobs.v1.queue"
	ProgressStream     = "LEM_JOB_PROGRESS_V1"
	ProgressRoot       = "lem.jobs.v1.progress"
	BucketJobs         = "lem_platform_jobs"
	BucketWorkers      = "lem_platform_workers"
	JobHeader          = "Lem-Job" // an upload's header naming the job that produced it
	DefaultLease       = 60 * time.Second
	DefaultMaxDeliver  = 3
	WorkerHeartbeatTTL = 30 * time.Second
)

// Job states.
const (
	JobAwaiting  = "awaiting_confirmation"
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCanceled  = "canceled"
)

// Job is a submitted experiment and where it stands.
type Job struct {
	ID         string `json:"id"`
	User       string `json:"user"`
	Profile    string `json:"profile"` // hardware profile id (Profiles), or "sim"
	Experiment string `json:"experiment"`
	Config     string `json:"config"` // the experiment file as submitted (YAML)
	State      string `json:"state"`
	// CancelRequested: the submitter asked to stop it; the worker stops
	// the backend cleanly and marks it canceled.
	CancelRequested bool     `json:"cancel_requested,omitempty"`
	Estimate        Estimate `json:"estimate"`
	Worker          string   `json:"worker,omitempty"`
	// DispatchedNS is when the dispatcher released the job to the workers
	// (0: waiting for a free GPU set); SetGPUs the size of the GPU sets
	// whose queue it went to.
	DispatchedNS int64    `json:"dispatched_ns,omitempty"`
	SetGPUs      int      `json:"set_gpus,omitempty"`
	Deliveries   int      `json:"deliveries,omitempty"`
	RunIDs       []string `json:"run_ids,omitempty"`
	Error        string   `json:"error,omitempty"`
	LogTail      string   `json:"log_tail,omitempty"`
	CreatedNS    int64    `json:"created_ns"`
	QueuedNS     int64    `json:"queued_ns,omitempty"`
	StartedNS    int64    `json:"started_ns,omitempty"`
	EndedNS      int64    `json:"ended_ns,omitempty"`
	// ActualS is how long the job took, beside the estimate;
	// ActualEnergyJ the GPU energy of its runs' measured cycles (summed),
	// unknown (EnergyUnknown) when a cycle has none.
	ActualS       float64  `json:"actual_s,omitempty"`
	ActualEnergyJ *float64 `json:"actual_energy_j,omitempty"`
	EnergyUnknown bool     `json:"energy_unknown,omitempty"`
}

// Done says whether the job has ended.
func (j Job) Done() bool {
	return j.State == JobSucceeded || j.State == JobFailed || j.State == JobCanceled
}

// Worker is one GPU set of a host that runs jobs (a host with several sets
// announces each), as it announces itself.
type Worker struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Profile string `json:"profile"`
	GPUs    int    `json:"gpus"`              // the set's size: it runs jobs of at most this many GPUs
	Devices []int  `json:"devices,omitempty"` // the set's GPU indices on its host
	Job     string `json:"job,omitempty"`     // running now
	Version string `json:"version"`
	SeenNS  int64  `json:"seen_ns"`
}

// Jobs is the job queue's JetStream state.
type Jobs struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	state    *State
	jobs     jetstream.KeyValue
	workers  jetstream.KeyValue
	queue    jetstream.Stream
	progress jetstream.Stream
	lease    time.Duration
	maxDel   int
	log      zerolog.Logger
	kick     chan struct{}
	served   map[string]int64 // the dispatcher's releases by user (its goroutine only)
}

// JobsConfig tunes the queue.
type JobsConfig struct {
	Lease      time.Duration // a worker's heartbeat must come within it (DefaultLease)
	MaxDeliver int           // deliveries before a job fails (DefaultMaxDeliver)
	Memory     bool          // streams in memory (tests)
	Log        zerolog.Logger
}

// OpenJobs creates (or opens) the job streams and buckets.
func OpenJobs(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, st *State, c JobsConfig) (*Jobs, error) {
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	j := &Jobs{js: js, nc: nc, state: st, lease: c.Lease, maxDel: c.MaxDeliver, log: c.Log, kick: make(chan struct{}, 1), served: map[string]int64{}}
	var err error
	if j.queue, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: JobStream, Description: "lem platform: confirmed jobs, one subject per hardware profile",
		Subjects: []string{JobSubjectRoot + ".>"}, Retention: jetstream.WorkQueuePolicy, Storage: storage, Duplicates: 10 * time.Minute}); err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", JobStream, err)
	}
	if j.progress, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: ProgressStream, Description: "lem platform: jobs' live progress, by job",
		Subjects: []string{ProgressRoot + ".>"}, Retention: jetstream.LimitsPolicy, Storage: storage, MaxAge: 7 * 24 * time.Hour, MaxMsgsPerSubject: 100000}); err != nil {
		return nil, fmt.Errorf("creating stream %s: %w", ProgressStream, err)
	}
	if j.jobs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketJobs, Description: "lem platform: jobs by id", History: 10, Storage: storage}); err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketJobs, err)
	}
	if j.workers, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketWorkers, Description: "lem platform: workers by id (expire without heartbeat)",
		TTL: WorkerHeartbeatTTL, Storage: storage}); err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", BucketWorkers, err)
	}
	return j, nil
}

// ConsumerName is the durable pull consumer that the workers of a profile
// with GPU sets of one size share.
func ConsumerName(profile string, setGPUs int) string {
	return "workers-" + profile + "-g" + strconv.Itoa(max(setGPUs, 1))
}

// Consumer returns (creating) the shared consumer of the jobs released to
// a profile's GPU sets of a size.
func (j *Jobs) Consumer(ctx context.Context, profile string, setGPUs int) (jetstream.Consumer, error) {
	return j.queue.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: ConsumerName(profile, setGPUs), FilterSubject: QueueSubject(profile, setGPUs),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: j.lease, MaxDeliver: j.maxDel, MaxAckPending: 1000})
}

// Lease is how long a job may go without a heartbeat.
func (j *Jobs) Lease() time.Duration { return j.lease }

// MaxDeliver is how many deliveries a job gets.
func (j *Jobs) MaxDeliver() int { return j.maxDel }

// Get returns a job.
func (j *Jobs) Get(ctx context.Context, id string) (Job, bool, error) {
	return get[Job](ctx, j.jobs, kvKey(id))
}

// Update applies f to the job's current state and records the result as
// a platform event (job.<state>) when f changes it; f returning an error
// leaves the job as it was. The platform and the workers update jobs from
// different processes: the write succeeds only over the revision f saw
// (compare and set), else f is applied again to the newer state, so no
// process's change is lost to another's.
func (j *Jobs) Update(ctx context.Context, id, actor string, f func(*Job) error) (Job, error) {
	for attempt := 0; ; attempt++ {
		e, err := j.jobs.Get(ctx, kvKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Job{}, fmt.Errorf("no job %q", id)
		}
		if err != nil {
			return Job{}, err
		}
		var cur Job
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return Job{}, fmt.Errorf("job %s: %w", id, err)
		}
		if err := f(&cur); err != nil {
			return cur, err
		}
		after, err := json.Marshal(cur)
		if err != nil {
			return Job{}, err
		}
		if string(after) == string(e.Value()) {
			return cur, nil
		}
		if _, err := j.jobs.Update(ctx, kvKey(id), after, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) && attempt < 100 {
				continue // another process wrote first: apply f to its state
			}
			return Job{}, fmt.Errorf("job %s: %w", id, err)
		}
		return cur, j.state.record(ctx, "job."+cur.State, cur.ID, actor, cur)
	}
}

// Create records a new job (an event and its record).
func (j *Jobs) Create(ctx context.Context, job Job) error {
	if err := j.state.record(ctx, "job."+job.State, job.ID, job.User, job); err != nil {
		return err
	}
	return put(ctx, j.jobs, kvKey(job.ID), job)
}

// List returns every job, newest first.
func (j *Jobs) List(ctx context.Context) ([]Job, error) {
	out, err := list[Job](ctx, j.jobs)
	slices.SortFunc(out, func(a, b Job) int { return cmp.Compare(b.CreatedNS, a.CreatedNS) })
	return out, err
}

// Workers returns the workers seen within their heartbeat TTL.
func (j *Jobs) Workers(ctx context.Context) ([]Worker, error) { return list[Worker](ctx, j.workers) }

// Heartbeat records that a worker is alive (and what it runs).
func (j *Jobs) Heartbeat(ctx context.Context, w Worker) error {
	w.SeenNS = time.Now().UnixNano()
	return put(ctx, j.workers, kvKey(w.ID), w)
}

// Enqueue puts a job on the queue of its profile's GPU sets of its
// SetGPUs size (the dispatcher's release); the message id is the job id,
// so a repeated release is dropped by the stream.
func (j *Jobs) Enqueue(ctx context.Context, job Job) error {
	_, err := j.js.Publish(ctx, QueueSubject(job.Profile, job.SetGPUs), []byte(job.ID), jetstream.WithMsgID("job-"+job.ID))
	return err
}

// Progress is one live update of a running job, as the worker publishes it.
type Progress struct {
	Phase     string  `json:"phase"`
	Run       string  `json:"run,omitempty"`
	RunID     string  `json:"run_id,omitempty"`
	Cycle     int     `json:"cycle"`
	Cycles    int     `json:"cycles"`
	Done      int     `json:"done"`
	Total     int     `json:"total"`
	Failed    int     `json:"failed"`
	PowerW    float64 `json:"power_w,omitempty"`      // the devices' power now (sum)
	ChunksPS  float64 `json:"chunks_per_s,omitempty"` // streamed chunks per second over the last report interval
	ETAS      float64 `json:"eta_s,omitempty"`        // seconds left: the estimate's middle less the time elapsed
	ElapsedS  float64 `json:"elapsed_s"`
	State     string  `json:"state,omitempty"` // set on the job's last update
	Message   string  `json:"message,omitempty"`
	AtNS      int64   `json:"at_ns"`
	Seq       uint64  `json:"seq,omitempty"` // the stream sequence (set when served)
	JobID     string  `json:"job"`
	WorkerID  string  `json:"worker,omitempty"`
	Delivery  int     `json:"delivery,omitempty"`
	EndOfJob  bool    `json:"end,omitempty"`
	LogTail   string  `json:"log_tail,omitempty"`
	RunsTotal int     `json:"runs_total,omitempty"`
}

// ProgressSubject is where a job's progress is published.
func ProgressSubject(id string) string { return ProgressRoot + "." + kvKey(id) }

// --- submission: validation, the remote-safety rules, the estimate ---

var profileID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)

// remoteSafe refuses what a submitted experiment must not do on somebody
// else's GPU host: run a command of its choosing, set its environment,
// read or write paths there, or reach other servers.
func remoteSafe(c *experiment.Config) []string {
	var bad []string
	b := c.Backend
	if len(b.Command) > 0 {
		bad = append(bad, "backend.command: a job runs the worker's own backend executables; remove it")
	}
	if len(b.Env) > 0 {
		bad = append(bad, "backend.env: a job cannot set the worker's environment; remove it")
	}
	if b.LogFile != "" {
		bad = append(bad, "backend.log_file: the worker chooses where logs go; remove it")
	}
	if b.Kind == backend.External || b.Endpoint != "" {
		bad = append(bad, "backend.endpoint: a job launches its backend on the worker; attaching to another server is not allowed")
	}
	for i, l := range b.LoRA {
		if strings.HasPrefix(l.Path, "/") || strings.HasPrefix(l.Path, ".") || strings.HasPrefix(l.Path, "~") {
			bad = append(bad, fmt.Sprintf("backend.lora[%d].path: a path on the worker; use a Hugging Face id", i))
		}
	}
	if strings.HasPrefix(b.Model, "/") || strings.HasPrefix(b.Model, ".") || strings.HasPrefix(b.Model, "~") {
		bad = append(bad, "backend.model: a path on the worker; use a Hugging Face id (or toy:/random: for the reference server)")
	}
	if c.Collectors.RAPL != "" && c.Collectors.RAPL != "off" {
		bad = append(bad, "collectors.rapl: a path on the worker; leave it out (or off)")
	}
	runs, _ := c.Runs()
	for _, r := range runs {
		if r.Workload.Dataset.Path != "" {
			bad = append(bad, fmt.Sprintf("workload.dataset.path (%s): a file on the worker; use synthetic lengths", r.Name))
		}
		if r.Workload.Arrival.Trace != "" {
			bad = append(bad, fmt.Sprintf("workload.arrival.trace (%s): a file on the worker", r.Name))
		}
	}
	slices.Sort(bad)
	return slices.Compact(bad)
}

// CheckJob parses, normalises and validates a submitted experiment file by
// the rules of lem check-config, and by the rules of remote execution.
func CheckJob(yaml []byte) (*experiment.Config, []string) {
	c, err := experiment.Parse(yaml)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var msgs []string
	// (before Normalize fills it in)
	if c.Output != (experiment.Output{}) {
		msgs = append(msgs, "output: the worker stores the run and uploads it; remove output")
	}
	c.Normalize()
	for _, e := range c.ValidateStatic() {
		msgs = append(msgs, e.Error())
	}
	msgs = append(msgs, remoteSafe(c)...)
	return c, msgs
}

// Prices turn an estimate into money and CO₂: the operator's GPU-hour
// price per profile and electricity price (no cost is shown without one:
// prices differ tenfold between places), and the grid's intensity.
type Prices struct {
	GPUHour    map[string]float64 // by profile id
	PerKWh     float64
	Currency   string
	GridGPerKW float64 // gCO₂e/kWh (0: analytics.DefaultFootprint)
}

// Estimate is a job's predicted cost, as a range.
type Estimate struct {
	DurationS [2]float64 `json:"duration_s"`
	GPUs      int        `json:"gpus"`
	GPUHours  [2]float64 `json:"gpu_hours"`
	EnergyKWh [2]float64 `json:"energy_kwh"`
	CO2Kg     [2]float64 `json:"co2_kg"`
	// Cost is GPU hours × the profile's price plus energy × its price;
	// null without a price.
	Cost     *[2]float64 `json:"cost"`
	Currency string      `json:"currency,omitempty"`
	// Basis says what the duration rests on: past runs (how many, of
	// which model, backend and hardware) or the stated conservative model.
	Basis string `json:"basis"`
}

// Conservative model without past runs: each request stream decodes at
// least minStreamTokS tokens/s, the launch takes at most the backend's
// startup timeout; the range is ×1/4…×1 of that (slower never assumed
// better than the floor).
const minStreamTokS = 10.0

// estimate predicts a job's duration and cost from its workload and, when
// there are some, the throughput of past runs of the same model, backend
// and hardware profile on the board.
func estimate(c *experiment.Config, prof Profile, past []Entry, pr Prices) Estimate {
	runs, _ := c.Runs()
	m := c.Measurement
	gpus := max(c.Backend.Parallelism.GPUs(), 1)
	var tput []float64
	for _, e := range past {
		if e.Model == c.Backend.Name() && e.TokensPerS != nil && *e.TokensPerS > 0 && strings.EqualFold(e.Hardware, prof.Name) {
			tput = append(tput, *e.TokensPerS)
		}
	}
	est := Estimate{GPUs: gpus}
	var lo, hi float64
	for _, r := range runs {
		w := r.Workload
		tokens := float64(w.Requests) * math.Max(w.Dataset.OutputTokens.Mean, 1)
		a := w.Arrival
		streams := float64(max(a.Concurrency, 1))
		var cycleLo, cycleHi float64
		switch {
		case len(tput) > 0:
			t0, t1 := slices.Min(tput), slices.Max(tput)
			cycleLo, cycleHi = tokens/t1, tokens/t0
		default:
			cycleHi = tokens / (minStreamTokS * streams)
			cycleLo = cycleHi / 4
		}
		if a.Process != "" && a.Process != loadgen.ArrivalConcurrency && a.Rate > 0 {
			// Open loop: the sends alone take requests / rate.
			send := float64(w.Requests) / a.Rate
			cycleLo, cycleHi = math.Max(cycleLo, send), math.Max(cycleHi, send)
		}
		per := float64(m.Cycles)
		lo += per * (cycleLo + m.CoolDown.Min.Seconds())
		hi += per * (cycleHi + m.CoolDown.Max.Seconds())
		warm := float64(w.Warmup) * math.Max(w.Dataset.OutputTokens.Mean, 1) / (minStreamTokS * streams)
		hi += warm
	}
	fixed := m.Baseline.Seconds() + m.Settle.Seconds()
	launch := c.Backend.StartupTimeout.Seconds()
	if launch == 0 {
		launch = 600
	}
	est.DurationS = [2]float64{lo + fixed, hi + fixed + launch}
	if len(tput) > 0 {
		est.Basis = fmt.Sprintf("%d past run(s) of %s on %s: %.4g–%.4g output tokens/s, plus the protocol (baseline, settle, cool-downs) and up to the startup timeout for the launch",
			len(tput), c.Backend.Name(), prof.Name, slices.Min(tput), slices.Max(tput))
	} else {
		est.Basis = fmt.Sprintf("no past run of %s on %s: a conservative model (each of the %d request streams decodes at least %g tokens/s; the fastest case 4× that), plus the protocol and up to the startup timeout for the launch",
			c.Backend.Name(), orDefault(prof.Name, "this profile"), int(math.Max(1, float64(c.Workload.Arrival.Concurrency))), minStreamTokS)
	}
	g := float64(gpus)
	est.GPUHours = [2]float64{est.DurationS[0] * g / 3600, est.DurationS[1] * g / 3600}
	// Power between idle (the profile's idle band floor) and the limit.
	limit := prof.LimitW
	if limit == 0 {
		limit = 700 // the largest standard profile's limit: an upper bound
	}
	idleLo, _ := Profile{LimitW: limit}.IdleRange()
	est.EnergyKWh = [2]float64{est.GPUHours[0] * idleLo / 1000, est.GPUHours[1] * limit / 1000}
	grid := pr.GridGPerKW
	if grid == 0 {
		grid = analytics.DefaultFootprint.GridGPerKWh
	}
	est.CO2Kg = [2]float64{est.EnergyKWh[0] * grid / 1000, est.EnergyKWh[1] * grid / 1000}
	if price, ok := pr.GPUHour[prof.ID]; ok || pr.PerKWh > 0 {
		c := [2]float64{est.GPUHours[0]*price + est.EnergyKWh[0]*pr.PerKWh, est.GPUHours[1]*price + est.EnergyKWh[1]*pr.PerKWh}
		est.Cost, est.Currency = &c, pr.Currency
	}
	return est
}

func newJobID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// SimProfile is the profile of workers on the simulated GPU (tests, demos).
const SimProfile = "sim"

// profileByID returns a standard profile, the simulated one, or false.
func profileByID(id string) (Profile, bool) {
	if id == SimProfile {
		return Profile{ID: SimProfile, Name: "simulated GPU"}, true
	}
	for _, p := range AllProfiles() {
		if p.ID == id {
			return p, true
		}
	}
	return Profile{}, false
}

// --- HTTP ---

const maxJobBytes = 256 << 10

// MaxQueuedPerUser bounds a user's jobs waiting or running at once.
const MaxQueuedPerUser = 10

// jobRequest is a submission (and a check).
type jobRequest struct {
	Profile    string `json:"profile"`
	Experiment string `json:"experiment"` // the experiment file (YAML)
}

// checkJobRequest decodes a submission and checks it, answering the
// problems itself (false) when there are any.
func (s *Server) checkJobRequest(w http.ResponseWriter, r *http.Request) (jobRequest, *experiment.Config, Profile, bool) {
	var req jobRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJobBytes)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "job: %v", err)
		return req, nil, Profile{}, false
	}
	prof, ok := profileByID(req.Profile)
	if !ok || !profileID.MatchString(req.Profile) {
		writeErr(w, http.StatusBadRequest, "profile %q: not a hardware profile (one of %s)", req.Profile, strings.Join(profileIDs(), ", "))
		return req, nil, Profile{}, false
	}
	cfg, problems := CheckJob([]byte(req.Experiment))
	if cfg != nil && len(problems) == 0 {
		switch {
		case prof.ID == SimProfile && cfg.Collectors.GPU != "sim":
			problems = append(problems, "collectors.gpu: the sim profile's workers have simulated GPUs only; set gpu: sim (or choose a real profile)")
		case prof.ID != SimProfile && cfg.Collectors.GPU == "sim":
			problems = append(problems, fmt.Sprintf("collectors.gpu: sim on a %s worker would publish simulated power as a measurement of it; use nvml", prof.ID))
		}
	}
	if len(problems) > 0 {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "the experiment file has problems", "problems": problems, "doc": yamlDoc(req.Experiment)})
		return req, nil, Profile{}, false
	}
	return req, cfg, prof, true
}

// yamlDoc is the experiment file as a JSON value (what the config builder's
// form shows), or nil when it is not YAML.
func yamlDoc(src string) any {
	var v any
	if yaml.Unmarshal([]byte(src), &v) != nil {
		return nil
	}
	if _, ok := v.(map[string]any); !ok {
		return nil
	}
	return v
}

// HostChosen lists the experiment settings a remote job leaves to its
// worker or may not set (remoteSafe, the worker's run): the config
// builder's form leaves them out.
var HostChosen = []string{"out", "output", "backend.command", "backend.env", "backend.log_file", "backend.endpoint", "backend.host", "backend.port",
	"backend.parallelism.devices", "collectors.devices", "collectors.rapl", "workload.dataset.path", "workload.arrival.trace",
	"sweep.workload.dataset.path", "sweep.workload.arrival.trace"}

// experimentSchema is the JSON Schema of experiment files (generated once).
var experimentSchema = sync.OnceValues(experiment.JSONSchema)

// handleJobSchema serves the schema for the config builder's form, with the
// settings a job leaves to the worker.
func (s *Server) handleJobSchema(w http.ResponseWriter, r *http.Request) {
	b, err := experimentSchema()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"schema": json.RawMessage(b), "host_chosen": HostChosen})
}

// handleSchemaFile serves the schema itself, for editors
// (yaml-language-server: $schema=<platform>/experiment.schema.json).
func (s *Server) handleSchemaFile(w http.ResponseWriter, r *http.Request) {
	b, err := experimentSchema()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "%v", err)
		return
	}
	w.Header().Set("Content-Type", "application/schema+json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Write(b)
}

func profileIDs() []string {
	ids := []string{SimProfile}
	for _, p := range AllProfiles() {
		ids = append(ids, p.ID)
	}
	return ids
}

// handleCheckJob answers what a submission would: its problems, or its
// estimate — for the config builder, as the user types.
func (s *Server) handleCheckJob(w http.ResponseWriter, r *http.Request, _ *principal) {
	req, cfg, prof, ok := s.checkJobRequest(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"problems": []string{}, "estimate": estimate(cfg, prof, s.board.All(), s.cfg.Prices), "doc": yamlDoc(req.Experiment)})
}

// handleTemplates lists the example experiment files and the profiles.
func (s *Server) handleTemplates(w http.ResponseWriter, r *http.Request, _ *principal) {
	var profs []Profile
	profs = append(profs, Profile{ID: SimProfile, Name: "simulated GPU (tests, demos)"})
	profs = append(profs, AllProfiles()...)
	writeJSON(w, http.StatusOK, map[string]any{"templates": deploy.ExperimentTemplates(), "profiles": profs})
}

func (s *Server) handleSubmitJob(w http.ResponseWriter, r *http.Request, p *principal) {
	req, cfg, prof, ok := s.checkJobRequest(w, r)
	if !ok {
		return
	}
	jobs, err := s.cfg.Jobs.List(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	open := 0
	for _, j := range jobs {
		if j.User == p.User.ID && !j.Done() {
			open++
		}
	}
	if open >= MaxQueuedPerUser {
		writeErr(w, http.StatusTooManyRequests, "user %s has %d jobs awaiting, queued or running: at most %d at once", p.User.ID, open, MaxQueuedPerUser)
		return
	}
	job := Job{ID: newJobID(), User: p.User.ID, Profile: prof.ID, Experiment: cfg.Experiment, Config: req.Experiment, State: JobAwaiting,
		Estimate: estimate(cfg, prof, s.board.All(), s.cfg.Prices), CreatedNS: time.Now().UnixNano()}
	if err := s.cfg.Jobs.Create(r.Context(), job); err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	writeJSON(w, http.StatusCreated, job)
}

// jobOf reads the request's job, visible to its submitter, moderators and
// admins.
func (s *Server) jobOf(w http.ResponseWriter, r *http.Request, p *principal) (Job, bool) {
	job, ok, err := s.cfg.Jobs.Get(r.Context(), r.PathValue("id"))
	switch {
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return Job{}, false
	case !ok || (job.User != p.User.ID && p.User.Role != RoleAdmin && p.User.Role != RoleModerator):
		writeErr(w, http.StatusNotFound, "no job %q", r.PathValue("id"))
		return Job{}, false
	}
	return job, true
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request, p *principal) {
	if job, ok := s.jobOf(w, r, p); ok {
		writeJSON(w, http.StatusOK, struct {
			Job
			Waiting string `json:"waiting,omitempty"`
		}{job, s.waiting(r.Context(), job)})
	}
}

// waiting says why a queued job has not started (whyWaiting).
func (s *Server) waiting(ctx context.Context, job Job) string {
	if job.State != JobQueued {
		return ""
	}
	jobs, err := s.cfg.Jobs.List(ctx)
	if err != nil {
		return ""
	}
	ws, err := s.cfg.Jobs.Workers(ctx)
	if err != nil {
		return ""
	}
	return whyWaiting(job, jobs, ws)
}

func (s *Server) handleConfirmJob(w http.ResponseWriter, r *http.Request, p *principal) {
	job, ok := s.jobOf(w, r, p)
	if !ok {
		return
	}
	if job.User != p.User.ID {
		writeErr(w, http.StatusForbidden, "only the submitter confirms a job's cost")
		return
	}
	job, err := s.cfg.Jobs.Update(r.Context(), job.ID, p.User.ID, func(j *Job) error {
		switch j.State {
		case JobAwaiting:
			j.State, j.QueuedNS = JobQueued, time.Now().UnixNano()
			return nil
		case JobQueued:
			return nil // confirmed already
		}
		return fmt.Errorf("job %s is %s: nothing to confirm", j.ID, j.State)
	})
	if err != nil {
		writeErr(w, http.StatusConflict, "%v", err)
		return
	}
	s.cfg.Jobs.Kick() // the dispatcher releases it when a GPU set that fits is free
	writeJSON(w, http.StatusOK, job)
}

func (s *Server) handleCancelJob(w http.ResponseWriter, r *http.Request, p *principal) {
	job, ok := s.jobOf(w, r, p)
	if !ok {
		return
	}
	job, err := s.cfg.Jobs.Update(r.Context(), job.ID, p.User.ID, func(j *Job) error {
		switch {
		case j.Done():
			return fmt.Errorf("job %s has ended (%s)", j.ID, j.State)
		case j.State == JobRunning:
			j.CancelRequested = true // the worker stops it and marks it canceled
		default:
			j.State, j.EndedNS, j.CancelRequested = JobCanceled, time.Now().UnixNano(), true
		}
		return nil
	})
	if err != nil {
		writeErr(w, http.StatusConflict, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

// handleJobs lists the user's jobs (admins: everyone's with all=1), the
// connected workers, and for operators how far estimates were from the
// actual durations of finished jobs.
func (s *Server) handleJobs(w http.ResponseWriter, r *http.Request, p *principal) {
	all := r.URL.Query().Get("all") == "1" && (p.User.Role == RoleAdmin || p.User.Role == RoleModerator)
	jobs, err := s.cfg.Jobs.List(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	out := []Job{}
	var ratios []float64
	inside := 0
	for _, j := range jobs {
		if all || j.User == p.User.ID {
			out = append(out, j)
		}
		if j.State == JobSucceeded && j.ActualS > 0 {
			mid := (j.Estimate.DurationS[0] + j.Estimate.DurationS[1]) / 2
			ratios = append(ratios, j.ActualS/mid)
			if j.ActualS >= j.Estimate.DurationS[0] && j.ActualS <= j.Estimate.DurationS[1] {
				inside++
			}
		}
	}
	ws, err := s.cfg.Jobs.Workers(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if ws == nil {
		ws = []Worker{}
	}
	resp := map[string]any{"jobs": out, "workers": ws}
	if all {
		acc := map[string]any{"jobs": len(ratios)}
		if len(ratios) > 0 {
			acc["actual_over_estimate_median"] = analytics.Percentile(ratios, 50)
			acc["within_range"] = inside
		}
		resp["estimator"] = acc
	}
	writeJSON(w, http.StatusOK, resp)
}

// --- the job an upload belongs to, and failure after the last delivery ---

// jobUploaded records a verified upload that a worker made for a job: the
// job has its run (so a redelivery does not run it again) and the run's
// measured energy adds to the job's actual cost. The worker records the
// job's end once all its runs are in.
func (s *Server) jobUploaded(ctx context.Context, jobID, worker string, r *analytics.RunResult) error {
	if s.cfg.Jobs == nil || jobID == "" {
		return nil
	}
	// The run's GPU energy is the sum of its cycles' (the measured
	// windows); a cycle without energy leaves the job's total unknown,
	// never short.
	total := 0.0
	for _, c := range r.Cycles {
		total += c.EnergyJ
	}
	_, err := s.cfg.Jobs.Update(ctx, jobID, worker, func(j *Job) error {
		if slices.Contains(j.RunIDs, r.RunID) {
			return nil
		}
		j.RunIDs = append(j.RunIDs, r.RunID)
		switch {
		case j.EnergyUnknown:
		case math.IsNaN(total) || len(r.Cycles) == 0:
			j.EnergyUnknown, j.ActualEnergyJ = true, nil
		default:
			total += ptrOr(j.ActualEnergyJ, 0)
			j.ActualEnergyJ = &total
		}
		return nil
	})
	return err
}

func ptrOr(p *float64, v float64) float64 {
	if p == nil {
		return v
	}
	return *p
}

// WatchMaxDeliveries marks failed every job whose last delivery ended
// without an acknowledgement (its worker died or kept failing): JetStream
// says so in an advisory; the job's message is then removed from the
// queue. It runs until ctx ends.
func (j *Jobs) WatchMaxDeliveries(ctx context.Context) error {
	sub, err := j.nc.Subscribe(advisoryMaxDeliveries+"."+JobStream+".>", func(m *nats.Msg) {
		var adv struct {
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries int    `json:"deliveries"`
		}
		if json.Unmarshal(m.Data, &adv) != nil {
			return
		}
		raw, err := j.queue.GetMsg(ctx, adv.StreamSeq)
		if err != nil {
			return
		}
		id := string(raw.Data)
		_, _ = j.Update(ctx, id, "platform", func(job *Job) error {
			if job.Done() {
				return nil
			}
			job.State, job.EndedNS, job.Deliveries = JobFailed, time.Now().UnixNano(), adv.Deliveries
			job.Error = fmt.Sprintf("gave up after %d deliveries: the worker stopped heartbeating or failed each time (last worker %s)", adv.Deliveries, orDefault(job.Worker, "none"))
			return nil
		})
		_ = j.queue.DeleteMsg(ctx, adv.StreamSeq)
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// advisoryMaxDeliveries is the subject prefix of JetStream's advisory
// that a message exceeded its consumer's MaxDeliver (nats-server's
// JSAdvisoryConsumerMaxDeliveryExceedPre), followed by stream and consumer.
const advisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

var errNoJobs = errors.New("this platform runs no jobs")

// withJobs authenticates the principal and answers 404 where the platform
// runs no jobs.
func (s *Server) withJobs(h func(w http.ResponseWriter, r *http.Request, p *principal)) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, p *principal) {
		if s.cfg.Jobs == nil {
			writeErr(w, http.StatusNotFound, "%v", errNoJobs)
			return
		}
		h(w, r, p)
	})
}
