package platform

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// waitUntil polls f until it holds (or fails the test after 20 s).
func waitUntil(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ids(js []Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.ID
	}
	return out
}

// The fair order: the user with the fewest jobs active goes first, then
// the oldest job; a burst of one user's jobs takes turns with the others.
func TestFairOrder(t *testing.T) {
	q := func(id, user string, at int64) Job { return Job{ID: id, User: user, State: JobQueued, QueuedNS: at} }
	for _, c := range []struct {
		name   string
		queued []Job
		active map[string]int
		served map[string]int64
		want   string
	}{
		{"first in first out for one user", []Job{q("b2", "bob", 2), q("b1", "bob", 1), q("b3", "bob", 3)}, nil, nil, "b1 b2 b3"},
		{"a burst takes turns", []Job{q("b1", "bob", 1), q("b2", "bob", 2), q("b3", "bob", 3), q("a1", "alice", 10), q("a2", "alice", 11)}, nil, nil,
			"b1 a1 b2 a2 b3"},
		{"running jobs count", []Job{q("b1", "bob", 1), q("b2", "bob", 2), q("a1", "alice", 10)}, map[string]int{"bob": 2}, nil,
			"a1 b1 b2"},
		{"three users", []Job{q("c1", "carol", 5), q("b1", "bob", 1), q("b2", "bob", 2), q("a1", "alice", 3), q("a2", "alice", 4)}, map[string]int{"alice": 1}, nil,
			"b1 c1 a1 b2 a2"},
		// Nobody running: bob was served last, so alice goes first although
		// bob's job is older (one GPU set, bob's job just ended).
		{"turns", []Job{q("b2", "bob", 2), q("a1", "alice", 10)}, nil, map[string]int64{"bob": 100, "alice": 50}, "a1 b2"},
	} {
		if got := strings.Join(ids(fairOrder(c.queued, c.active, c.served)), " "); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// Through the running dispatcher: bob queues five jobs, then alice one;
// one worker takes them one at a time: alice's runs second, not sixth. And
// GPU sets: a two-GPU job goes to the worker whose set has two GPUs, a
// one-GPU job to the smaller set, and a job larger than every set waits
// and says so.
func TestDispatchFairAndBySetSize(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}))
	jobs := p.srv.cfg.Jobs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice, bob := p.user(t, "alice", RoleUser), p.user(t, "bob", RoleUser)
	submit := func(tok, yaml string) Job {
		t.Helper()
		var j Job
		if code := p.call(t, "POST", "/api/jobs", tok, map[string]string{"profile": "sim", "experiment": yaml}, &j); code != 201 {
			t.Fatalf("submit: %d", code)
		}
		if code := p.call(t, "POST", "/api/jobs/"+j.ID+"/confirm", tok, nil, &j); code != 200 {
			t.Fatalf("confirm: %d", code)
		}
		return j
	}
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, submit(bob, simJob).ID)
	}
	a := submit(alice, simJob)
	want = slices.Insert(want, 1, a.ID)

	// One worker of one GPU, running each job to its end.
	jobs.Heartbeat(ctx, Worker{ID: "w1", Profile: SimProfile, GPUs: 1})
	cons, err := jobs.Consumer(ctx, SimProfile, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < len(want) {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			id := string(m.Data())
			got = append(got, id)
			jobs.Update(ctx, id, "worker:w1", func(j *Job) error { j.State, j.Worker = JobRunning, "w1"; return nil })
			if info, _ := jobs.queue.Info(ctx); info.State.Msgs != 1 { // the one it runs, unacknowledged
				t.Errorf("%d jobs in the queue while the only worker runs one: released before a set was free", info.State.Msgs)
			}
			time.Sleep(50 * time.Millisecond)
			jobs.Update(ctx, id, "worker:w1", func(j *Job) error { j.State = JobSucceeded; return nil })
			m.Ack()
		}
		if n == 0 {
			t.Fatalf("no job released after %v", got)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v (alice's job second)", got, want)
	}

	// GPU sets of two sizes.
	two := strings.Replace(simJob, `port: 18999}`, `port: 18999, parallelism: {tensor: 2}}`, 1)
	four := strings.Replace(simJob, `port: 18999}`, `port: 18999, parallelism: {tensor: 4}}`, 1)
	jobs.Heartbeat(ctx, Worker{ID: "w2", Profile: SimProfile, GPUs: 2, Devices: []int{2, 3}})
	big := submit(alice, four)
	j2 := submit(alice, two)
	j1 := submit(bob, simJob)
	for _, c := range []struct {
		job  Job
		size int
	}{{j2, 2}, {j1, 1}} {
		waitUntil(t, "release of "+c.job.ID, func() bool { j, _, _ := jobs.Get(ctx, c.job.ID); return j.DispatchedNS > 0 })
		if j, _, _ := jobs.Get(ctx, c.job.ID); j.SetGPUs != c.size {
			t.Errorf("a %d-GPU job went to sets of %d", c.size, j.SetGPUs)
		}
		c2, err := jobs.Consumer(ctx, SimProfile, c.size)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c2.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			if string(m.Data()) != c.job.ID {
				t.Errorf("sets of %d got %s, want %s", c.size, m.Data(), c.job.ID)
			}
			m.Ack()
		}
	}
	var st struct {
		Job
		Waiting string
	}
	if p.call(t, "GET", "/api/jobs/"+big.ID, alice, nil, &st); st.DispatchedNS != 0 || !strings.Contains(st.Waiting, "needs 4 GPUs") {
		t.Errorf("a job larger than every set: released %v, %q", st.DispatchedNS, st.Waiting)
	}
}

// Updates from two processes (the platform and a worker) do not lose each
// other's changes: a cancel request made while the worker records its
// progress survives.
func TestJobUpdateCompareAndSet(t *testing.T) {
	p := newTestPlatformTB(t, withJobs(JobsConfig{Memory: true}))
	ctx := context.Background()
	a := p.srv.cfg.Jobs
	b, err := OpenJobs(ctx, a.nc, a.js, p.state, JobsConfig{Memory: true}) // another process's view
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Create(ctx, Job{ID: "cas", User: "u", Profile: SimProfile, State: JobRunning}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for i := 0; i < 50; i++ {
		go func() {
			_, err := a.Update(ctx, "cas", "platform", func(j *Job) error { j.Deliveries++; return nil })
			done <- err
		}()
		go func() {
			_, err := b.Update(ctx, "cas", "worker", func(j *Job) error { j.LogTail += "x"; return nil })
			done <- err
		}()
	}
	for i := 0; i < 100; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	j, _, _ := a.Get(ctx, "cas")
	if j.Deliveries != 50 || len(j.LogTail) != 50 {
		t.Errorf("after 50 updates from each side: %d and %d survived", j.Deliveries, len(j.LogTail))
	}
}
