package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var updateScreenshots = flag.Bool("update", false, "write the browser test's screenshots to docs/platform/")

// needBrowser returns the Chromium binary and the UI's folder with its
// node_modules, or skips (fails with LEM_E2E=1) when the machine lacks
// them (testenv.Browser) or this test binary lacks the built front end.
func needBrowser(t *testing.T) (chromium, uiDir string) {
	t.Helper()
	if _, err := fs.Stat(uiFiles, "ui/dist/index.html"); err != nil {
		testenv.Miss(t, "the front end is not built into this test binary: run make ui first")
	}
	uiDir, _ = filepath.Abs("ui")
	return testenv.Browser(t, uiDir), uiDir
}

// TestBrowser uses the platform in headless Chromium as a person would:
// signing in at an OpenID Connect provider (its own login page), making
// an API token in the UI and uploading the H200 run with it; the
// leaderboard with that verified upload and a run whose model name
// holds markup, sorting and filtering through the page (state in the URL,
// kept across a reload), the run page with its verification report, and
// the power timeline zoomed from the whole run down to samples and tokens.
func TestBrowser(t *testing.T) {
	chromium, uiDir := needBrowser(t)
	data, _, hash, run := h200Bundle(t)
	p := newTestPlatform(t)
	issuer := startOIDC(t, p.http.URL+"/auth/callback/oidc")
	prov, err := NewOIDC(context.Background(), OIDCConfig{ID: "oidc", Name: "Lab login", Issuer: issuer, ClientID: "lem",
		ClientSecret: "lem-secret", RedirectURL: p.http.URL + "/auth/callback/oidc"})
	if err != nil {
		t.Fatal(err)
	}
	p.srv.cfg.Providers = []Provider{prov}
	out := t.TempDir()
	if *updateScreenshots {
		out, _ = filepath.Abs(filepath.Join("..", "docs", "platform"))
		os.MkdirAll(out, 0o755)
	}
	node := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "node", append([]string{"test/browser.mjs"}, args...)...)
		cmd.Dir = uiDir
		cmd.Env = append(os.Environ(), "LEM_CHROMIUM="+chromium)
		res, err := cmd.CombinedOutput()
		t.Logf("%s", res)
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		lines := strings.Split(strings.TrimSpace(string(res)), "\n")
		return lines[len(lines)-1]
	}
	// Sign in through the provider's own login page and make a token in
	// the UI; then upload with it as lem upload does.
	var signed struct{ Secret string }
	if json.Unmarshal([]byte(node("signin", p.http.URL, out)), &signed) != nil || !strings.HasPrefix(signed.Secret, "lem_") {
		t.Fatal("no token from the tokens page")
	}
	bundle := filepath.Join(t.TempDir(), "run.lemb")
	os.WriteFile(bundle, data, 0o600)
	msg, err := Send(context.Background(), p.http.URL, signed.Secret, bundle, hash)
	if err != nil || !strings.Contains(msg, "verified and published") {
		t.Fatalf("upload with the UI's token: %v\n%s", err, msg)
	}
	// A second measured run to compare with: the LoRA run of
	// docs/validation/h200-lora.
	dir := testenv.Untar(t, filepath.Join("..", "docs", "validation", "h200-lora", "store.tgz"))
	lora := store.Parquet(filepath.Join(dir, "lora", "store"))
	ids, err := lora.RunIDs(context.Background())
	if err != nil || len(ids) == 0 {
		t.Fatalf("LoRA runs: %v %v", ids, err)
	}
	var lb bytes.Buffer
	if _, _, err := WriteBundle(context.Background(), lora, ids[0], "test", &lb); err != nil {
		t.Fatal(err)
	}
	if code, out := p.upload(t, signed.Secret, lb.Bytes()); code != 201 {
		t.Fatalf("the LoRA run: %d %v", code, out)
	}
	// A hostile run name: must render as text.
	hostile := Entry{RunID: "hostile", Model: `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">`, Backend: "vllm",
		Hardware: "NVIDIA H200", Workload: "sharegpt, 4 in flight", Verification: "recomputed", Submitter: `<b>mallory</b>`, Flags: []string{}}
	if err := p.state.Publish(context.Background(), Published{Entry: hostile}); err != nil {
		t.Fatal(err)
	}
	p.srv.Board().Put(hostile)
	// A run whose model's parameter count was recorded (the H200 runs
	// predate it): the efficiency scatter sizes it, the others are rings.
	sized := Entry{RunID: "sized-example", Model: "example-8b (test entry)", Backend: "vllm", Hardware: "NVIDIA H200", GPUs: 1,
		Workload: "sharegpt, 8 in flight (test entry)", Verification: "recomputed", Submitter: "test", Flags: []string{},
		JPerToken: fp(0.35), TokensPerS: fp(900), Parameters: fp(8.03e9), ParametersSource: "declared (backend.model_parameters)"}
	if err := p.state.Publish(context.Background(), Published{Entry: sized}); err != nil {
		t.Fatal(err)
	}
	p.srv.Board().Put(sized)
	// The timeline needs the events stored: wait for ingest.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tl Timeline
		if getJSON(t, p.http.URL+"/api/runs/"+run+"/timeline?points=10", &tl); len(tl.Series) == 1 && tl.RequestsTotal == 192 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the uploaded run's events did not reach the store")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var m struct {
		FCP *float64 `json:"first_contentful_paint_ms"`
	}
	if json.Unmarshal([]byte(node("browse", p.http.URL, run, out)), &m) != nil || m.FCP == nil {
		t.Fatalf("no first contentful paint reported")
	}
	t.Logf("leaderboard first contentful paint: %.0f ms; screenshots in %s", *m.FCP, out)
}

// A moderator decides on a held upload in the browser: refused without a
// reason, changes requested with one, approved onto the leaderboard; the
// audit log lists both decisions.
func TestBrowserModeration(t *testing.T) {
	chromium, uiDir := needBrowser(t)
	data, _, _, run := h200Bundle(t)
	p := newTestPlatformTB(t, func(c *Config, _ *nats.Conn, _ jetstream.JetStream) {
		c.Moderate = true
		c.Moderators = []string{"test:mod"}
	})
	alice := p.user(t, "alice", RoleUser)
	if code, out := p.upload(t, alice, data); code != http.StatusCreated {
		t.Fatalf("upload: %d %v", code, out)
	}
	// A board no standard profile matches, seen in a run: proposed.
	p.srv.proposeUnknown(context.Background(), "b200-run", map[string]deviceInfo{"GPU-b": {Name: "NVIDIA B200", LimitW: 1000}})
	cookie, _, _, err := p.state.SignIn(context.Background(), User{ID: "test:mod", Login: "mod", Name: "A. Moderator", Provider: "test"}, nil, p.cfg.Moderators)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if *updateScreenshots {
		out, _ = filepath.Abs(filepath.Join("..", "docs", "platform"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "test/browser.mjs", "moderate", p.http.URL, run, out)
	cmd.Dir = uiDir
	cmd.Env = append(os.Environ(), "LEM_CHROMIUM="+chromium, "LEM_SESSION="+cookie)
	res, err := cmd.CombinedOutput()
	t.Logf("%s", res)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// The jobs pages in the browser: a webhook added on the settings page
// (its secret shown once) hears of the job's end and its log says so; the
// builder shows a broken file's
// problems and a good one's estimate as it is typed; submitted and
// confirmed, the job's page follows its live progress (a simulated worker
// here: cmd/lem's TestRemoteJobs runs the real one) to the end.
func TestBrowserJobs(t *testing.T) {
	chromium, uiDir := needBrowser(t)
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}), withNotifier(NotifyConfig{Memory: true, AllowPrivate: true, Backoff: 100 * time.Millisecond}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startNotifier(t, ctx, p)
	hook := &receiver{}
	hookURL := newHTTPServer(t, hook)
	cookie, _, _, err := p.state.SignIn(ctx, User{ID: "test:ada", Login: "ada", Name: "Ada", Provider: "test"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	jobs := p.srv.cfg.Jobs
	go func() { // the worker
		jobs.Heartbeat(ctx, Worker{ID: "sim-1", Profile: SimProfile, GPUs: 1})
		cons, err := jobs.Consumer(ctx, SimProfile, 1)
		if err != nil {
			return
		}
		for ctx.Err() == nil {
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				continue
			}
			for m := range b.Messages() {
				id := string(m.Data())
				jobs.Update(ctx, id, "worker:sim", func(j *Job) error {
					j.State, j.Worker, j.StartedNS = JobRunning, "sim-1", time.Now().UnixNano()
					return nil
				})
				for i := 1; i <= 5; i++ {
					time.Sleep(400 * time.Millisecond)
					b, _ := json.Marshal(Progress{JobID: id, Phase: "cycle", Cycle: 0, Cycles: 1, Done: i, Total: 5, PowerW: 310 + float64(i), ChunksPS: 40, ElapsedS: float64(i) * 0.4, ETAS: float64(5-i) * 0.4, AtNS: time.Now().UnixNano()})
					jobs.js.Publish(ctx, ProgressSubject(id), b)
				}
				j, _ := jobs.Update(ctx, id, "worker:sim", func(j *Job) error {
					j.State, j.EndedNS = JobSucceeded, time.Now().UnixNano()
					j.ActualS = float64(j.EndedNS-j.StartedNS) / 1e9
					return nil
				})
				b, _ := json.Marshal(Progress{JobID: id, State: j.State, EndOfJob: true, Done: 5, Total: 5, Cycles: 1, PowerW: 300, AtNS: time.Now().UnixNano()})
				jobs.js.Publish(ctx, ProgressSubject(id), b)
				m.Ack()
			}
		}
	}()
	out := t.TempDir()
	if *updateScreenshots {
		out, _ = filepath.Abs(filepath.Join("..", "docs", "platform"))
	}
	cctx, ccancel := context.WithTimeout(ctx, 3*time.Minute)
	defer ccancel()
	cmd := exec.CommandContext(cctx, "node", "test/browser.mjs", "jobs", p.http.URL, "-", out)
	cmd.Dir = uiDir
	cmd.Env = append(os.Environ(), "LEM_CHROMIUM="+chromium, "LEM_SESSION="+cookie, "LEM_JOB_YAML="+simJob, "LEM_HOOK_URL="+hookURL+"/lem")
	res, err := cmd.CombinedOutput()
	t.Logf("%s", res)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
}
