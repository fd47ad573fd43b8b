package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/platform"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write TestBrowserRemoteJob's screenshots to docs/platform/")

// bgProc is a lem process a test runs in the background, its output kept.
type bgProc struct {
	cmd *exec.Cmd
	syncBuffer
}

func startProc(t testing.TB, bin string, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = &p.syncBuffer, &p.syncBuffer
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("lem %s:\n%s", args[0], p.String())
		}
	})
	return p
}

// waitFor polls until f holds or the time is up.
func waitFor(t testing.TB, what string, limit time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testPlatform is a lem web with its job queue, run as a process.
type testPlatform struct {
	proc                                               *bgProc
	args                                               []string
	base, natsURL, natsTok, adminTok, workerTok, token string
}

// startPlatform starts lem web with its JetStream listening for workers
// (with a token of its own), an admin and a worker token; extra, given the
// platform's address, adds flags.
func startPlatform(t *testing.T, bin, dir string, extra ...func(base string) []string) *testPlatform {
	t.Helper()
	natsPort, webPort := freePort(t), freePort(t)
	p := &testPlatform{base: fmt.Sprintf("http://127.0.0.1:%d", webPort), natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		adminTok: filepath.Join(dir, "admin.token"), workerTok: filepath.Join(dir, "worker.token"), natsTok: filepath.Join(dir, "nats.token")}
	os.WriteFile(p.natsTok, []byte("nats-secret\n"), 0o600)
	p.args = []string{"web", "-listen", fmt.Sprintf("127.0.0.1:%d", webPort), "-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"-nats-listen-token-file", p.natsTok, "-data", filepath.Join(dir, "web"), "-admin-token-file", p.adminTok, "-worker-token-file", p.workerTok, "-publish-local=false"}
	for _, f := range extra {
		p.args = append(p.args, f(p.base)...)
	}
	p.proc = startProc(t, bin, p.args...)
	waitFor(t, "lem web", time.Minute, func() bool { return strings.Contains(p.proc.String(), "the results platform is at") })
	tok, _ := os.ReadFile(p.adminTok)
	p.token = strings.TrimSpace(string(tok))
	return p
}

// worker starts lem worker on the simulated GPU (extra flags appended).
func (p *testPlatform) worker(t *testing.T, bin, dir, name string, extra ...string) *bgProc {
	return startProc(t, bin, append([]string{"worker", "-nats", p.natsURL, "-nats-token-file", p.natsTok, "-platform", p.base, "-token-file", p.workerTok,
		"-profile", "sim", "-data", filepath.Join(dir, "w-"+name), "-id", name, "-lease", "4s", "-log-format", "console"}, extra...)...)
}

// submit runs lem submit as the admin and returns the job and the output.
func (p *testPlatform) submit(t *testing.T, bin string, args ...string) (string, string) {
	t.Helper()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(sctx, bin, append([]string{"submit", "-to", p.base, "-token-file", p.adminTok, "-yes"}, args...)...).CombinedOutput()
	if err != nil && !strings.Contains(strings.Join(args, " "), "-wait") {
		t.Fatalf("submit %v: %v\n%s", args, err, out)
	}
	m := regexp.MustCompile(`job (\S+):`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("submit %v printed no job:\n%s", args, out)
	}
	return string(m[1]), string(out)
}

type jobView struct {
	platform.Job
	Waiting string `json:"waiting"`
}

func (p *testPlatform) job(t *testing.T, id string) (j jobView) {
	t.Helper()
	if _, err := apiCall(context.Background(), http.MethodGet, p.base+"/api/jobs/"+id, p.token, nil, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// Remote execution end to end with real processes: lem web with its job
// queue, lem worker on the simulated GPU running the reference server,
// lem submit. A job runs and its run is verified onto the leaderboard in
// the submitter's name; a worker SIGKILLed mid-job leaves it to another
// worker after the lease, and the job counts one run; a job canceled while
// running stops; a job no worker can run waits and says why.
func TestRemoteJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	bin := buildLem(t)
	dir := t.TempDir()
	pl := startPlatform(t, bin, dir)
	web, webArgs, base, token, adminTok := pl.proc, pl.args, pl.base, pl.token, pl.adminTok
	ctx := context.Background()
	worker := func(name string) *bgProc { return pl.worker(t, bin, dir, name) }
	experimentFile := func(name string, requests int, tokens int) string {
		path := filepath.Join(dir, name+".yaml")
		os.WriteFile(path, []byte(fmt.Sprintf(`experiment: %s
backend: {kind: pytorch, model: "toy:", port: %d, pytorch: {max_batch_size: 4, batching: dynamic}}
workload:
  requests: %d
  arrival: {concurrency: 4}
  dataset: {prompt_tokens: {mean: 16}, output_tokens: {mean: %d}}
measurement: {cycles: 3, baseline: 1s, settle: 200ms, cooldown: {min: 100ms, max: 300ms}}
collectors: {gpu: sim, rapl: "off", scrape: {enabled: false}}
`, name, freePort(t), requests, tokens)), 0o644)
		return path
	}
	submit := func(args ...string) (string, string) { t.Helper(); return pl.submit(t, bin, args...) }
	getJob := func(id string) jobView { t.Helper(); return pl.job(t, id) }

	// A job no worker can run waits, and says why.
	nvmlFile := filepath.Join(dir, "h200.yaml")
	os.WriteFile(nvmlFile, bytes.ReplaceAll(must(os.ReadFile(experimentFile("h200", 4, 4))), []byte("gpu: sim"), []byte("gpu: nvml")), 0o644)
	waiting, _ := submit("-profile", "h200-sxm", nvmlFile)
	if j := getJob(waiting); j.State != platform.JobQueued || !strings.Contains(j.Waiting, "no worker with the h200-sxm profile") {
		t.Errorf("a job for an absent profile: %s, %q", j.State, j.Waiting)
	}
	// Refused before it is queued: a command of the submitter's choosing.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("backend: {kind: vllm, model: m, command: [sh, -c, 'rm -rf /']}\ncollectors: {gpu: sim}\n"), 0o644)
	if out, err := exec.Command(bin, "submit", "-to", base, "-token-file", adminTok, "-yes", "-profile", "sim", bad).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "backend.command") {
		t.Errorf("a job with its own command: %v\n%s", err, out)
	}

	// 1. A job runs to the leaderboard.
	wa := worker("a")
	id, out := submit("-profile", "sim", "-wait", experimentFile("remote-ok", 8, 8))
	j := getJob(id)
	if j.State != platform.JobSucceeded || len(j.RunIDs) != 1 || !strings.Contains(out, "/runs/"+j.RunIDs[0]) || j.ActualS <= 0 || j.ActualEnergyJ == nil {
		t.Fatalf("job %s: %+v\n%s", id, j.Job, out)
	}
	var lb struct {
		Total int
		Rows  []platform.Entry
	}
	if _, err := apiCall(ctx, http.MethodGet, base+"/api/leaderboard?workload=*", token, nil, &lb); err != nil || lb.Total != 1 ||
		lb.Rows[0].RunID != j.RunIDs[0] || lb.Rows[0].Submitter != "admin" || lb.Rows[0].Verification != "verified" {
		t.Fatalf("leaderboard after the job: %v %+v", err, lb)
	}
	// The job's energy is its run's cycles' total, not their mean.
	if e := lb.Rows[0]; e.EnergyJ == nil || e.Cycles != 3 || math.Abs(*j.ActualEnergyJ-3**e.EnergyJ) > 1e-6**j.ActualEnergyJ {
		t.Errorf("job energy %v J, run's mean cycle energy %v J over %d cycles", *j.ActualEnergyJ, e.EnergyJ, e.Cycles)
	}

	// 2. Canceled while running: the backend stops, no run counts.
	id, _ = submit("-profile", "sim", experimentFile("remote-cancel", 400, 64))
	waitFor(t, "the job to run", time.Minute, func() bool { return getJob(id).State == platform.JobRunning })
	if _, err := apiCall(ctx, http.MethodPost, base+"/api/jobs/"+id+"/cancel", token, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to stop", time.Minute, func() bool { return getJob(id).State == platform.JobCanceled })
	if j := getJob(id); len(j.RunIDs) != 0 {
		t.Errorf("a canceled job has runs: %v", j.RunIDs)
	}

	// 3. The worker is killed mid-job: another takes it after the lease;
	// the job has exactly one run.
	id, _ = submit("-profile", "sim", experimentFile("remote-kill", 60, 32))
	waitFor(t, "the job to run", time.Minute, func() bool { return getJob(id).State == platform.JobRunning })
	time.Sleep(time.Second)
	first := getJob(id).Worker
	if first != "a" {
		t.Fatalf("worker %q runs the job, want a", first)
	}
	wa.cmd.Process.Kill()
	worker("b")
	waitFor(t, "the job to end on worker b", 3*time.Minute, func() bool { return getJob(id).Done() })
	j = getJob(id)
	if j.State != platform.JobSucceeded || j.Worker != "b" || j.Deliveries != 2 || len(j.RunIDs) != 1 {
		t.Fatalf("after the kill: %+v", j.Job)
	}
	if _, err := apiCall(ctx, http.MethodGet, base+"/api/leaderboard?workload=*", token, nil, &lb); err != nil || lb.Total != 2 {
		t.Fatalf("leaderboard after the redelivered job: %v %d runs, want 2", err, lb.Total)
	}

	// 4. The platform restarts mid-job (its JetStream with it): the worker
	// reconnects, finishes and uploads; the job ends with one run, counted
	// once.
	id, _ = submit("-profile", "sim", experimentFile("remote-restart", 60, 32))
	waitFor(t, "the job to run", time.Minute, func() bool { return getJob(id).State == platform.JobRunning })
	web.cmd.Process.Signal(syscall.SIGTERM)
	web.cmd.Wait()
	web = startProc(t, bin, webArgs...)
	waitFor(t, "lem web again", time.Minute, func() bool { return strings.Contains(web.String(), "the results platform is at") })
	waitFor(t, "the job to end after the restart", 3*time.Minute, func() bool { return getJob(id).Done() })
	if j := getJob(id); j.State != platform.JobSucceeded || len(j.RunIDs) != 1 {
		t.Fatalf("after the platform's restart: %+v", j.Job)
	}
	if _, err := apiCall(ctx, http.MethodGet, base+"/api/leaderboard?workload=*", token, nil, &lb); err != nil || lb.Total != 3 {
		t.Fatalf("leaderboard after the restart: %v %d runs, want 3", err, lb.Total)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A redelivered job that already has uploaded runs is not run again: with
// all its runs in it succeeded; with only some of a sweep's it failed, and
// says why (running it again would count the uploaded ones twice).
func TestRedeliveredJobWithRuns(t *testing.T) {
	_, nc, js := testenv.JetStream(t)
	ctx := context.Background()
	state, err := platform.OpenState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := platform.OpenJobs(ctx, nc, js, state, platform.JobsConfig{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	sweep := `experiment: sweep
backend: {kind: pytorch, model: "toy:", port: 18999}
workload: {requests: 4, arrival: {concurrency: 2}}
sweep:
  - name: a
  - name: b
    workload: {arrival: {concurrency: 4}}
collectors: {gpu: sim}
`
	w := &worker{id: "w", profile: platform.SimProfile, jobs: jobs, js: js, log: zerolog.Nop()}
	cons, err := jobs.Consumer(ctx, platform.SimProfile, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		runs  []string
		state string
		says  string
	}{
		{[]string{"sweep-a", "sweep-b"}, platform.JobSucceeded, ""},
		{[]string{"sweep-a"}, platform.JobFailed, "1 of its 2 runs"},
	} {
		id := fmt.Sprintf("redelivered-%d", len(c.runs))
		if err := jobs.Create(ctx, platform.Job{ID: id, User: "u", Profile: platform.SimProfile, Config: sweep, State: platform.JobRunning, RunIDs: c.runs}); err != nil {
			t.Fatal(err)
		}
		if err := jobs.Enqueue(ctx, platform.Job{ID: id, Profile: platform.SimProfile}); err != nil {
			t.Fatal(err)
		}
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			w.handle(ctx, m)
		}
		j, _, _ := jobs.Get(ctx, id)
		if j.State != c.state || !strings.Contains(j.Error, c.says) || len(j.RunIDs) != len(c.runs) {
			t.Errorf("%d of 2 runs in: %s %q %v", len(c.runs), j.State, j.Error, j.RunIDs)
		}
	}
}

// A worker with two GPU sets runs two jobs at once, one on each set, with
// the operator's own llama.cpp executable and model file (the submitter
// names the model; the worker maps it to its file): llama.cpp's real
// server, launched per job on a port the worker chose. Both runs are
// verified onto the leaderboard under the model's name; a job needing
// more GPUs than any set waits and says so.
func TestWorkerGPUSetsRunLlamaCpp(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root, model := testenv.LlamaRoot(t)
	bin := buildLem(t)
	dir := t.TempDir()
	pl := startPlatform(t, bin, dir)
	pl.worker(t, bin, dir, "host", "-gpu-sets", "0 1", "-backend-command", "llama-server=chroot "+root+" llama-server", "-model", "tiny="+model)
	file := func(name string, extra string) string {
		path := filepath.Join(dir, name+".yaml")
		os.WriteFile(path, []byte(fmt.Sprintf(`experiment: %s
backend:
  kind: llama.cpp
  model: tiny
  port: 8080
  llama_cpp: {ctx_size: 2048, parallel: 2}%s
workload:
  requests: 24
  arrival: {concurrency: 2}
  dataset: {prompt_tokens: {mean: 32}, output_tokens: {mean: 24}}
measurement: {cycles: 3, baseline: 1s, settle: 200ms, cooldown: {min: 100ms, max: 300ms}}
collectors: {gpu: sim, rapl: "off"}
`, name, extra)), 0o644)
		return path
	}
	a, _ := pl.submit(t, bin, "-profile", "sim", file("set-a", ""))
	b, _ := pl.submit(t, bin, "-profile", "sim", file("set-b", ""))
	big, _ := pl.submit(t, bin, "-profile", "sim", file("set-big", "\n  parallelism: {tensor: 2}"))
	// Both run at the same time, on different sets.
	waitFor(t, "both jobs running at once", 2*time.Minute, func() bool {
		ja, jb := pl.job(t, a), pl.job(t, b)
		if ja.Done() || jb.Done() {
			t.Fatalf("a job ended before the other started: %s %s (%s %s)", ja.State, jb.State, ja.Error, jb.Error)
		}
		return ja.State == platform.JobRunning && jb.State == platform.JobRunning
	})
	if ja, jb := pl.job(t, a), pl.job(t, b); ja.Worker == jb.Worker || !strings.HasPrefix(ja.Worker, "host-gpu") || !strings.HasPrefix(jb.Worker, "host-gpu") {
		t.Errorf("workers %q and %q: want the host's two sets", ja.Worker, jb.Worker)
	}
	if j := pl.job(t, big); j.State != platform.JobQueued || !strings.Contains(j.Waiting, "needs 2 GPUs") {
		t.Errorf("a 2-GPU job on sets of one: %s %q", j.State, j.Waiting)
	}
	for _, id := range []string{a, b} {
		waitFor(t, "job "+id+" to end", 3*time.Minute, func() bool { return pl.job(t, id).Done() })
		if j := pl.job(t, id); j.State != platform.JobSucceeded || len(j.RunIDs) != 1 {
			t.Fatalf("job %s: %s %q\n%s", id, j.State, j.Error, j.LogTail)
		}
	}
	var lb struct {
		Total int
		Rows  []platform.Entry
	}
	if _, err := apiCall(context.Background(), http.MethodGet, pl.base+"/api/leaderboard?workload=*", pl.token, nil, &lb); err != nil || lb.Total != 2 {
		t.Fatalf("leaderboard: %v %d runs, want 2", err, lb.Total)
	}
	for _, e := range lb.Rows {
		if e.Model != "tiny" || e.Verification != "verified" || e.Backend != "llama.cpp" {
			t.Errorf("row %s: model %q backend %q %s", e.RunID, e.Model, e.Backend, e.Verification)
		}
	}
}

// The whole remote path in the browser, as a person uses it: sign in at
// the lab's OpenID Connect provider, fill in the config builder's form
// (generated from the experiment schema; the YAML beside it follows), see
// the estimate, submit and confirm, watch the job's live progress while a
// real lem worker runs llama.cpp's real server on the simulated GPU, and
// open the verified run it produced. The leaderboard then holds that run
// in the signed-in user's name.
func TestBrowserRemoteJob(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	uiDir, _ := filepath.Abs(filepath.Join("..", "..", "platform", "ui"))
	if _, err := os.Stat(filepath.Join(uiDir, "dist", "index.html")); err != nil {
		testenv.Miss(t, "the front end is not built (make ui), so lem embeds none")
	}
	chromium := testenv.Browser(t, uiDir)
	root, model := testenv.LlamaRoot(t)
	bin := buildLem(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "oidc.secret")
	os.WriteFile(secret, []byte("lem-secret\n"), 0o600)
	pl := startPlatform(t, bin, dir, func(base string) []string {
		issuer := testenv.OIDC(t, base+"/auth/callback/oidc")
		return []string{"-public-url", base, "-oidc-issuer", issuer, "-oidc-client-id", "lem", "-oidc-client-secret-file", secret, "-oidc-name", "Lab login"}
	})
	pl.worker(t, bin, dir, "gpu-box", "-backend-command", "llama.cpp=chroot "+root+" llama-server", "-model", "tiny="+model)
	out := t.TempDir()
	if *updateScreenshots {
		out, _ = filepath.Abs(filepath.Join("..", "..", "docs", "platform"))
	}
	yaml := `experiment: browser-remote
backend:
  kind: llama.cpp
  model: tiny
  llama_cpp: {ctx_size: 2048, parallel: 4}
workload:
  requests: 40
  arrival: {concurrency: 4}
  dataset: {prompt_tokens: {mean: 32}, output_tokens: {mean: 32}}
measurement: {cycles: 3, baseline: 1s, settle: 200ms, cooldown: {min: 100ms, max: 300ms}}
collectors: {gpu: sim, rapl: "off"}
`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test/browser.mjs", "remote-job", pl.base, "-", out)
	cmd.Dir = uiDir
	cmd.Env = append(os.Environ(), "LEM_CHROMIUM="+chromium, "LEM_JOB_YAML="+yaml)
	res, err := cmd.CombinedOutput()
	t.Logf("%s", res)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	var lb struct {
		Total int
		Rows  []platform.Entry
	}
	if _, err := apiCall(context.Background(), http.MethodGet, pl.base+"/api/leaderboard?workload=*", pl.token, nil, &lb); err != nil || lb.Total != 1 {
		t.Fatalf("leaderboard: %v %+v", err, lb)
	}
	if e := lb.Rows[0]; e.Model != "tiny" || e.Verification != "verified" || !strings.HasPrefix(e.Submitter, "oidc:") || !strings.HasPrefix(e.WorkloadDetail, "24 requests") {
		t.Errorf("the job's run on the leaderboard: model %q, %s, submitter %q, %q (the form set 24 requests)", e.Model, e.Verification, e.Submitter, e.WorkloadDetail)
	}
}
