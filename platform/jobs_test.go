package platform

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func withJobs(c JobsConfig) platformOption {
	return func(cfg *Config, nc *nats.Conn, js jetstream.JetStream) {
		j, err := OpenJobs(context.Background(), nc, js, cfg.State, c)
		if err != nil {
			panic(err)
		}
		cfg.Jobs = j
	}
}

const simJob = `experiment: api-job
backend: {kind: pytorch, model: "toy:", port: 18999}
workload: {requests: 40, arrival: {concurrency: 4}, dataset: {output_tokens: {mean: 100}}}
measurement: {cycles: 3, baseline: 10s, settle: 1s, cooldown: {min: 1s, max: 5s}}
collectors: {gpu: sim}
`

// The job API: who may submit what, the estimate, confirmation before
// queueing, cancellation, the per-user quota.
func TestJobAPI(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}))
	alice, bob := p.user(t, "alice", RoleUser), p.user(t, "bob", RoleUser)
	var e map[string]any
	for _, c := range []struct {
		name, profile, yaml string
		code                int
		says                string
	}{
		{"unknown profile", "tpu-v9", simJob, 400, "not a hardware profile"},
		{"broken file", "sim", "backend: {kind: vllm, model: m}\nworkload: {requests: many}\n", 422, "problems"},
		{"a command of its own", "sim", simJob + "output: {store: parquet}\n", 422, "problems"},
		{"simulated power on a real profile", "h200-sxm", simJob, 422, "problems"},
		{"NVML on the sim profile", "sim", strings.Replace(simJob, "gpu: sim", "gpu: nvml", 1), 422, "problems"},
	} {
		e = nil
		if code := p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": c.profile, "experiment": c.yaml}, &e); code != c.code || !strings.Contains(e["error"].(string), c.says) {
			t.Errorf("%s: %d %v, want %d …%s…", c.name, code, e, c.code, c.says)
		}
	}
	if code := p.call(t, "POST", "/api/jobs", "", map[string]string{"profile": "sim", "experiment": simJob}, &e); code != http.StatusUnauthorized {
		t.Errorf("anonymous submission: %d", code)
	}
	var job Job
	if code := p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": "sim", "experiment": simJob}, &job); code != 201 || job.State != JobAwaiting {
		t.Fatalf("submit: %d %+v", code, job)
	}
	// The estimate: 3 cycles × 40 requests × 100 tokens at ≥ 10 tokens/s on
	// each of 4 streams is at most 300 s of load, plus the protocol and the
	// launch; nothing in it is free.
	est := job.Estimate
	if est.DurationS[0] <= 10 || est.DurationS[1] < 300+10+600 || est.DurationS[0] >= est.DurationS[1] || est.Cost != nil ||
		!strings.Contains(est.Basis, "conservative model") || est.EnergyKWh[1] <= est.EnergyKWh[0] || est.CO2Kg[1] <= 0 {
		t.Errorf("estimate %+v", est)
	}
	if code := p.call(t, "GET", "/api/jobs/"+job.ID, bob, nil, &e); code != 404 {
		t.Errorf("bob reads alice's job: %d", code)
	}
	if code := p.call(t, "POST", "/api/jobs/"+job.ID+"/confirm", bob, nil, &e); code != 404 {
		t.Errorf("bob confirms alice's job: %d", code)
	}
	if code := p.call(t, "POST", "/api/jobs/"+job.ID+"/confirm", alice, nil, &job); code != 200 || job.State != JobQueued {
		t.Fatalf("confirm: %d %+v", code, job)
	}
	var st struct {
		Job
		Waiting string
	}
	if p.call(t, "GET", "/api/jobs/"+job.ID, alice, nil, &st); !strings.Contains(st.Waiting, "no worker with the sim profile") {
		t.Errorf("waiting: %q", st.Waiting)
	}
	// No worker: nothing is released to the queue. One connects: the job
	// is released once, however often it is confirmed.
	ctx := context.Background()
	if info, err := p.srv.cfg.Jobs.queue.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("queue without a worker: %v, %v", err, info)
	}
	if err := p.srv.cfg.Jobs.Heartbeat(ctx, Worker{ID: "w1", Profile: SimProfile, GPUs: 1}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the job's release", func() bool { j, _, _ := p.srv.cfg.Jobs.Get(ctx, job.ID); return j.DispatchedNS > 0 })
	if code := p.call(t, "POST", "/api/jobs/"+job.ID+"/confirm", alice, nil, &job); code != 200 {
		t.Errorf("a second confirmation: %d", code)
	}
	time.Sleep(300 * time.Millisecond)
	if info, err := p.srv.cfg.Jobs.queue.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("queue: %v, %d messages (a repeated confirmation must not queue twice)", err, info.State.Msgs)
	}
	if p.call(t, "GET", "/api/jobs/"+job.ID, alice, nil, &st); !strings.Contains(st.Waiting, "released to the workers") {
		t.Errorf("waiting once released: %q", st.Waiting)
	}
	if code := p.call(t, "POST", "/api/jobs/"+job.ID+"/cancel", alice, nil, &job); code != 200 || job.State != JobCanceled {
		t.Errorf("cancel a queued job: %d %+v", code, job)
	}
	if code := p.call(t, "POST", "/api/jobs/"+job.ID+"/cancel", alice, nil, &e); code != http.StatusConflict {
		t.Errorf("cancel an ended job: %d", code)
	}
	for i := 0; i < MaxQueuedPerUser; i++ {
		if code := p.call(t, "POST", "/api/jobs", bob, map[string]string{"profile": "sim", "experiment": simJob}, &e); code != 201 {
			t.Fatalf("bob's job %d: %d %v", i, code, e)
		}
	}
	if code := p.call(t, "POST", "/api/jobs", bob, map[string]string{"profile": "sim", "experiment": simJob}, &e); code != http.StatusTooManyRequests {
		t.Errorf("over the quota: %d %v", code, e)
	}
	// Operators see the estimator's accuracy over finished jobs.
	p.srv.cfg.Jobs.Update(context.Background(), job.ID, "test", func(j *Job) error {
		j.State, j.ActualS = JobSucceeded, (j.Estimate.DurationS[0]+j.Estimate.DurationS[1])/4
		return nil
	})
	admin := p.user(t, "root", RoleAdmin)
	var acc struct {
		Estimator struct {
			Jobs   int
			Median float64 `json:"actual_over_estimate_median"`
			Within int     `json:"within_range"`
		}
	}
	if p.call(t, "GET", "/api/jobs?all=1", admin, nil, &acc); acc.Estimator.Jobs != 1 || acc.Estimator.Median != 0.5 || acc.Estimator.Within != 1 {
		t.Errorf("estimator accuracy: %+v", acc.Estimator)
	}
	var list struct{ Jobs []Job }
	if p.call(t, "GET", "/api/jobs", alice, nil, &list); len(list.Jobs) != 1 {
		t.Errorf("alice sees %d jobs, want her 1", len(list.Jobs))
	}
	if p.call(t, "GET", "/api/jobs", bob, nil, &list); len(list.Jobs) != MaxQueuedPerUser {
		t.Errorf("bob sees %d jobs", len(list.Jobs))
	}
}

// Past runs of the same model and hardware make the estimate: their
// throughput bounds the load's duration.
func TestEstimateFromPastRuns(t *testing.T) {
	c, errs := CheckJob([]byte(strings.Replace(simJob, "gpu: sim", "gpu: nvml", 1)))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	prof, _ := profileByID("h200-sxm")
	fast, slow := 400.0, 200.0
	past := []Entry{{Model: "toy:", Hardware: prof.Name, TokensPerS: &fast}, {Model: "toy:", Hardware: prof.Name, TokensPerS: &slow},
		{Model: "other", Hardware: prof.Name, TokensPerS: &fast}}
	est := estimate(c, prof, past, Prices{GPUHour: map[string]float64{"h200-sxm": 4}, PerKWh: 0.3, Currency: "EUR"})
	// 3 × 4,000 tokens at 200–400 tokens/s: 30–60 s of load.
	m := c.Measurement
	fixed := m.Baseline.Seconds() + m.Settle.Seconds()
	if lo := 30 + 3*m.CoolDown.Min.Seconds() + fixed; est.DurationS[0] != lo {
		t.Errorf("lower bound %v s, want %v", est.DurationS[0], lo)
	}
	if !strings.Contains(est.Basis, "2 past run(s)") || est.Cost == nil || est.Currency != "EUR" ||
		est.Cost[0] != est.GPUHours[0]*4+est.EnergyKWh[0]*0.3 {
		t.Errorf("estimate %+v", est)
	}
	if est.EnergyKWh[1] != est.GPUHours[1]*0.7 { // the H200 SXM's 700 W limit
		t.Errorf("upper energy %v kWh for %v GPU-hours", est.EnergyKWh[1], est.GPUHours[1])
	}
}

// A job whose worker dies on its last delivery is failed by the platform
// from JetStream's max-deliveries advisory, with the reason.
func TestJobFailsAfterMaxDeliveries(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true, Lease: 500 * time.Millisecond, MaxDeliver: 2}))
	jobs := p.srv.cfg.Jobs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice := p.user(t, "alice", RoleUser)
	var job Job
	p.call(t, "POST", "/api/jobs", alice, map[string]string{"profile": "sim", "experiment": simJob}, &job)
	p.call(t, "POST", "/api/jobs/"+job.ID+"/confirm", alice, nil, &job)
	jobs.Heartbeat(ctx, Worker{ID: "dead", Profile: SimProfile, GPUs: 1})
	cons, err := jobs.Consumer(ctx, SimProfile, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Two deliveries that die: fetched, marked running, never acknowledged.
	for i := 0; i < 2; i++ {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			jobs.Update(ctx, string(m.Data()), "worker:dead", func(j *Job) error { j.State, j.Worker = JobRunning, "dead"; return nil })
		}
		if n != 1 {
			t.Fatalf("delivery %d: %d messages", i+1, n)
		}
	}
	// Workers keep pulling (the server looks at redeliveries when asked for
	// messages): the job is not handed out a third time.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond)); err == nil {
			for m := range b.Messages() {
				t.Fatalf("delivered a third time: %s", m.Data())
			}
		}
		j, _, _ := jobs.Get(ctx, job.ID)
		if j.State == JobFailed {
			if !strings.Contains(j.Error, "after 2 deliveries") {
				t.Errorf("reason: %q", j.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s after its last delivery died", j.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info, _ := jobs.queue.Info(ctx); info.State.Msgs != 0 {
		t.Errorf("the failed job's message is still queued (%d)", info.State.Msgs)
	}
}
