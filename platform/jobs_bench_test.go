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

// BenchmarkJobDispatch: 1,000 jobs queued at once and 20 simulated
// workers of the profile pulling them as lem worker does (fetch one, mark
// it running in the jobs bucket, acknowledge): the time from each job's
// queueing to its worker marking it running (issue 16's goal: p99 < 1 s).
func BenchmarkJobDispatch(b *testing.B) {
	const jobs, workers = 1000, 20
	for it := 0; it < b.N; it++ {
		p := newTestPlatformTB(b, withJobs(JobsConfig{Memory: true}))
		q := p.srv.cfg.Jobs
		ctx := context.Background()
		queued := make(map[string]int64, jobs)
		for i := 0; i < jobs; i++ {
			j := Job{ID: fmt.Sprintf("bench-%04d", i), User: "u", Profile: SimProfile, State: JobQueued}
			if err := q.Create(ctx, j); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < jobs; i++ {
			id := fmt.Sprintf("bench-%04d", i)
			queued[id] = time.Now().UnixNano()
			if err := q.Enqueue(ctx, Job{ID: id, Profile: SimProfile}); err != nil {
				b.Fatal(err)
			}
		}
		var mu sync.Mutex
		var lat []float64
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				cons, err := q.Consumer(ctx, SimProfile)
				if err != nil {
					b.Error(err)
					return
				}
				for {
					mu.Lock()
					n := len(lat)
					mu.Unlock()
					if n >= jobs {
						return
					}
					batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
					if err != nil {
						continue
					}
					for m := range batch.Messages() {
						id := string(m.Data())
						if _, err := q.Update(ctx, id, "worker", func(j *Job) error { j.State, j.Worker = JobRunning, fmt.Sprint(w); return nil }); err != nil {
							b.Error(err)
						}
						got := time.Now().UnixNano()
						m.Ack()
						mu.Lock()
						lat = append(lat, float64(got-queued[id])/1e6)
						mu.Unlock()
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
