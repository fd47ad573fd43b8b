package platform

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Dispatch: a confirmed job waits in the jobs bucket (state queued) until
// a GPU set that can run it is free; the dispatcher then releases it onto
// the work-queue subject of that set's size (QueueSubject), where exactly
// one worker of the profile and size pulls it. Releasing only to free sets
// is what makes the order fair: the stream itself is first in, first out,
// so what enters it is chosen here — the user with the fewest jobs
// released or running goes first, then the one served least recently,
// then the longest-waiting job (fairOrder).
// A user's burst of jobs therefore takes turns with everybody else's
// instead of filling the queue ahead of them.
//
// Everything the dispatcher decides from is in the buckets (jobs, workers'
// heartbeats), so a restarted platform carries on where it stopped; a job
// released just before a restart is already in the stream, and its
// message id (the job id) drops a second release within the stream's
// duplicate window.

// QueueSubject is where jobs for a profile's GPU sets of a size wait.
func QueueSubject(profile string, setGPUs int) string {
	return JobSubjectRoot + "." + profile + ".g" + strconv.Itoa(max(setGPUs, 1))
}

// jobGPUs is how many GPUs a job asks for.
func jobGPUs(j Job) int { return max(j.Estimate.GPUs, 1) }

// fairOrder returns the queued jobs in the order the dispatcher releases
// them: repeatedly the head job (oldest confirmation) of the user with the
// fewest jobs active (released or running), ties to the user served least
// recently (served: when each user's latest job was released; never is
// first), then to the oldest head job — counting the jobs this order has
// already placed as active and just served. So users take turns: with one
// GPU set, a user's burst of five alternates with another's single job
// instead of going first. active and served are not modified.
func fairOrder(queued []Job, active map[string]int, served map[string]int64) []Job {
	byUser := map[string][]Job{}
	for _, j := range queued {
		byUser[j.User] = append(byUser[j.User], j)
	}
	users := make([]string, 0, len(byUser))
	n, last := map[string]int{}, map[string]int64{}
	for u, js := range byUser {
		slices.SortStableFunc(js, func(a, b Job) int { return cmp.Or(cmp.Compare(a.QueuedNS, b.QueuedNS), cmp.Compare(a.ID, b.ID)) })
		users = append(users, u)
		n[u], last[u] = active[u], served[u]
	}
	slices.Sort(users)
	out := make([]Job, 0, len(queued))
	placed := int64(math.MaxInt64 - len(queued)) // later than any real release
	for len(out) < len(queued) {
		best := ""
		for _, u := range users {
			if len(byUser[u]) == 0 {
				continue
			}
			if best == "" || cmp.Or(cmp.Compare(n[u], n[best]), cmp.Compare(last[u], last[best]), cmp.Compare(byUser[u][0].QueuedNS, byUser[best][0].QueuedNS)) < 0 {
				best = u
			}
		}
		out = append(out, byUser[best][0])
		byUser[best] = byUser[best][1:]
		n[best]++
		last[best] = placed
		placed++
	}
	return out
}

// released says whether a job is in the work-queue stream now (released,
// not yet started, or handed back for redelivery).
func released(j Job) bool { return j.State == JobQueued && j.DispatchedNS > 0 }

// pool is a profile's GPU sets as the dispatcher sees them.
type pool struct {
	free    map[int]int // idle sets by size, less the jobs released to that size and not yet started
	largest int         // the largest set connected
	workers int
}

// pools counts each profile's free GPU sets from the workers' heartbeats
// and the jobs' states.
func pools(jobs []Job, workers []Worker) map[string]*pool {
	busy := map[string]bool{}
	for _, j := range jobs {
		if j.State == JobRunning && j.Worker != "" {
			busy[j.Worker] = true
		}
	}
	ps := map[string]*pool{}
	get := func(profile string) *pool {
		p := ps[profile]
		if p == nil {
			p = &pool{free: map[int]int{}}
			ps[profile] = p
		}
		return p
	}
	for _, w := range workers {
		p := get(w.Profile)
		size := max(w.GPUs, 1)
		p.workers++
		p.largest = max(p.largest, size)
		if w.Job == "" && !busy[w.ID] {
			p.free[size]++
		}
	}
	for _, j := range jobs {
		if released(j) {
			get(j.Profile).free[max(j.SetGPUs, 1)]--
		}
	}
	return ps
}

// fit is the smallest free set size of the pool that holds n GPUs (0:
// none now).
func (p *pool) fit(n int) int {
	best := 0
	for size, free := range p.free {
		if free > 0 && size >= n && (best == 0 || size < best) {
			best = size
		}
	}
	return best
}

// activeByUser counts each user's jobs released or running, and says
// when each user was last served (a job released or started).
func activeByUser(jobs []Job) (map[string]int, map[string]int64) {
	a, served := map[string]int{}, map[string]int64{}
	for _, j := range jobs {
		if j.State == JobRunning || released(j) {
			a[j.User]++
		}
		// When it was released — or started: a worker that takes a job
		// before the dispatcher records its release leaves it without
		// dispatched_ns (the release's update finds it running).
		served[j.User] = max(served[j.User], j.DispatchedNS, j.StartedNS)
	}
	return a, served
}

// waitingJobs returns the queued jobs not yet released, by profile, in
// fair order.
// served adds the releases this dispatcher made and may not see in the
// records yet (nil: none).
func waitingJobs(jobs []Job, served map[string]int64) map[string][]Job {
	byProfile := map[string][]Job{}
	for _, j := range jobs {
		if j.State == JobQueued && j.DispatchedNS == 0 && !j.CancelRequested {
			byProfile[j.Profile] = append(byProfile[j.Profile], j)
		}
	}
	active, last := activeByUser(jobs)
	for u, t := range served {
		last[u] = max(last[u], t)
	}
	for p, js := range byProfile {
		byProfile[p] = fairOrder(js, active, last)
	}
	return byProfile
}

// release releases, in fair order, every waiting job that a free GPU set
// can run now, and returns the jobs as updated. A job too large for every
// free set does not hold up a smaller one behind it.
func (j *Jobs) release(ctx context.Context, jobs []Job, workers []Worker) ([]Job, error) {
	ps := pools(jobs, workers)
	var out []Job
	for profile, order := range waitingJobs(jobs, j.served) {
		p := ps[profile]
		if p == nil {
			continue
		}
		for _, job := range order {
			size := p.fit(jobGPUs(job))
			if size == 0 {
				continue
			}
			job.SetGPUs = size
			if err := j.Enqueue(ctx, job); err != nil {
				return out, fmt.Errorf("releasing job %s: %w", job.ID, err)
			}
			// Served now, whatever the record says next: a worker may take
			// the job before its release is recorded, and then the record
			// never holds dispatched_ns.
			j.served[job.User] = time.Now().UnixNano()
			cur, err := j.Update(ctx, job.ID, "platform", func(cur *Job) error {
				if cur.State != JobQueued || cur.DispatchedNS > 0 {
					return nil // canceled or taken meanwhile; its worker acknowledges the stale message
				}
				cur.DispatchedNS, cur.SetGPUs = time.Now().UnixNano(), size
				return nil
			})
			if err != nil {
				return out, err
			}
			out = append(out, cur)
			p.free[size]--
		}
	}
	return out, nil
}

// Kick asks the dispatcher for a pass now (after a confirmation).
func (j *Jobs) Kick() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// RunDispatcher releases jobs whenever the jobs or the workers change (a
// job confirmed, started or ended; a worker connected or gone), and every
// two seconds regardless (a worker whose heartbeat expired leaves no
// event), until ctx ends. It follows both buckets with watchers, so a pass
// costs no reads of the store however many jobs there are.
func (j *Jobs) RunDispatcher(ctx context.Context) error {
	jw, err := j.jobs.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer jw.Stop()
	ww, err := j.workers.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer ww.Stop()
	jobs, workers := map[string]Job{}, map[string]Worker{}
	intoJobs, intoWorkers := follow(jobs), follow(workers)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-jw.Updates():
			intoJobs(e)
		case e := <-ww.Updates():
			intoWorkers(e)
		case <-j.kick:
		case <-t.C:
		}
		// Take every change already waiting before deciding (a burst of
		// confirmations is one pass).
	drain:
		for {
			select {
			case e := <-jw.Updates():
				intoJobs(e)
			case e := <-ww.Updates():
				intoWorkers(e)
			default:
				break drain
			}
		}
		js := make([]Job, 0, len(jobs))
		for _, v := range jobs {
			js = append(js, v)
		}
		live := make([]Worker, 0, len(workers))
		stale := time.Now().Add(-WorkerHeartbeatTTL).UnixNano()
		for _, w := range workers {
			if w.SeenNS >= stale {
				live = append(live, w)
			}
		}
		done, err := j.release(ctx, js, live)
		for _, v := range done {
			jobs[kvKey(v.ID)] = v // before the watcher brings it: the next pass counts it released
		}
		if err != nil && ctx.Err() == nil {
			j.log.Warn().Err(err).Msg("dispatching jobs")
		}
	}
}

// follow returns what applies a bucket watcher's entry to m (keyed by the
// bucket's keys): a put decodes into it, a delete or purge (or a value that
// does not decode) removes it, nil (the watcher's end of the current
// values) changes nothing.
func follow[T any](m map[string]T) func(jetstream.KeyValueEntry) {
	return func(e jetstream.KeyValueEntry) {
		if e == nil {
			return
		}
		var v T
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &v) != nil {
			delete(m, e.Key())
			return
		}
		m[e.Key()] = v
	}
}

// whyWaiting says why a queued job has not started: no worker of its
// profile, no GPU set large enough, or the jobs ahead of it in the fair
// order.
func whyWaiting(job Job, jobs []Job, workers []Worker) string {
	if job.State != JobQueued {
		return ""
	}
	p := pools(jobs, workers)[job.Profile]
	switch {
	case p == nil || p.workers == 0:
		return fmt.Sprintf("no worker with the %s profile is connected (none heartbeat within %v); the job waits until one is", job.Profile, WorkerHeartbeatTTL)
	case p.largest < jobGPUs(job):
		return fmt.Sprintf("it needs %d GPUs; the connected %s workers run jobs on sets of at most %d", jobGPUs(job), job.Profile, p.largest)
	case job.DispatchedNS > 0:
		return "released to the workers; it starts when one takes it"
	}
	ahead := 0
	for _, w := range waitingJobs(jobs, nil)[job.Profile] {
		if w.ID == job.ID {
			break
		}
		ahead++
	}
	return fmt.Sprintf("all %s GPU sets that fit it are busy; %d job(s) ahead of it in the fair order (users take turns: the fewest jobs running first, then the one served least recently)", job.Profile, ahead)
}
