package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
)

func p99(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[int(0.99*float64(len(xs)-1))]
}

// BenchmarkJobDispatch: 1,000 jobs confirmed at once and 20 simulated
// workers of the profile (one GPU each) pulling them as lem worker does
// (fetch one, mark it running, mark it ended, acknowledge), through the
// platform's dispatcher, which releases a job only to a free GPU set, in
// fair order. Reported: the dispatch latency — from a worker's set
// becoming free (its job ended) to the next job marked running on it —
// and the jobs per second (issue 16's goal: p99 < 1 s).
func BenchmarkJobDispatch(b *testing.B) {
	const jobs, workers = 1000, 20
	for it := 0; it < b.N; it++ {
		p := newTestPlatformTB(b, withJobs(JobsConfig{Memory: true}))
		q := p.srv.cfg.Jobs
		ctx := context.Background()
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < jobs; i++ {
			j := Job{ID: fmt.Sprintf("bench-%04d", i), User: fmt.Sprintf("u%d", i%7), Profile: SimProfile, State: JobQueued, QueuedNS: time.Now().UnixNano()}
			if err := q.Create(ctx, j); err != nil {
				b.Fatal(err)
			}
		}
		q.Kick()
		var mu sync.Mutex
		var lat []float64
		done := 0
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				id := fmt.Sprintf("w%d", w)
				if err := q.Heartbeat(ctx, Worker{ID: id, Profile: SimProfile, GPUs: 1}); err != nil {
					b.Error(err)
					return
				}
				cons, err := q.Consumer(ctx, SimProfile, 1)
				if err != nil {
					b.Error(err)
					return
				}
				freed := time.Now() // the set is free from its first heartbeat
				for {
					mu.Lock()
					n := done
					mu.Unlock()
					if n >= jobs {
						return
					}
					batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
					if err != nil {
						continue
					}
					for m := range batch.Messages() {
						job := string(m.Data())
						if _, err := q.Update(ctx, job, "worker", func(j *Job) error { j.State, j.Worker = JobRunning, id; return nil }); err != nil {
							b.Error(err)
						}
						running := time.Now()
						if _, err := q.Update(ctx, job, "worker", func(j *Job) error { j.State = JobSucceeded; return nil }); err != nil {
							b.Error(err)
						}
						m.Ack()
						mu.Lock()
						lat = append(lat, float64(running.Sub(freed))/1e6)
						done++
						mu.Unlock()
						freed = time.Now()
					}
				}
			}(w)
		}
		wg.Wait()
		b.StopTimer()
		b.ReportMetric(p99(lat), "dispatch-p99-ms")
		b.ReportMetric(float64(jobs)/time.Since(start).Seconds(), "jobs/s")
	}
}

// BenchmarkLiveFanout: 1,000 WebSocket viewers of one running job; the
// worker publishes an update every 50 ms; the time from its publication
// to each viewer's receipt (issue 16's goal: p99 < 500 ms).
func BenchmarkLiveFanout(b *testing.B) {
	const viewers, updates = 1000, 20
	for it := 0; it < b.N; it++ {
		p := newTestPlatformTB(b, withJobs(JobsConfig{Memory: true}))
		ctx := context.Background()
		tok, _, err := p.state.CreateToken(ctx, "u", "bench", []string{ScopeRead}, 0)
		if err != nil {
			b.Fatal(err)
		}
		job := Job{ID: "fanout", User: "u", Profile: SimProfile, State: JobRunning}
		if err := p.srv.cfg.Jobs.Create(ctx, job); err != nil {
			b.Fatal(err)
		}
		url := strings.Replace(p.http.URL, "http://", "ws://", 1) + "/api/jobs/fanout/live"
		var mu sync.Mutex
		var lat []float64
		var wg, ready sync.WaitGroup
		for v := 0; v < viewers; v++ {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				dctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
				ready.Done()
				if err != nil {
					b.Error(err)
					return
				}
				defer c.CloseNow()
				for {
					_, msg, err := c.Read(dctx)
					if err != nil {
						return // closed after the last update
					}
					now := time.Now().UnixNano()
					var pr Progress
					json.Unmarshal(msg, &pr)
					mu.Lock()
					lat = append(lat, float64(now-pr.AtNS)/1e6)
					mu.Unlock()
					if pr.EndOfJob {
						return
					}
				}
			}()
		}
		ready.Wait()
		b.ResetTimer()
		for u := 1; u <= updates; u++ {
			pr := Progress{JobID: "fanout", Done: u, Total: updates, EndOfJob: u == updates, AtNS: time.Now().UnixNano()}
			buf, _ := json.Marshal(pr)
			if _, err := p.srv.cfg.Jobs.js.Publish(ctx, ProgressSubject("fanout"), buf); err != nil {
				b.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		wg.Wait()
		b.StopTimer()
		if len(lat) != viewers*updates {
			b.Errorf("%d deliveries, want %d", len(lat), viewers*updates)
		}
		b.ReportMetric(p99(lat), "delivery-p99-ms")
	}
}
