package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/gof"
	"github.com/llm-energy-measure/lem/internal/pacedserver"
	"github.com/llm-energy-measure/lem/schemas"
)

func startServer(b *testing.B, h http.Handler) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func quantile(xs []float64, q float64) float64 {
	sort.Float64s(xs)
	return xs[min(len(xs)-1, int(q*float64(len(xs))))]
}

// BenchmarkTimestampAccuracy: N concurrent streams, 20 tokens each at
// 50 ms; the error of every client stamp against the server's write stamp
// (p50, p99, max, in ms). Started within 200 ms of each other, on
// connections opened by a warm-up round (as after a run's warm-up: the
// connection setup of N streams at once is not what is measured).
func BenchmarkTimestampAccuracy(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		for _, kernel := range []bool{true, false} {
			b.Run(fmt.Sprintf("streams=%d/kernel=%v", n, kernel), func(b *testing.B) {
				KernelStamps = kernel
				defer func() { KernelStamps = true }()
				clk := NewClock()
				srv := &pacedserver.Server{Tokens: 20, ITL: 50 * time.Millisecond, Now: clk.Now}
				url := startServer(b, srv)
				c := NewClient(url, "m")
				c.Clock = clk
				warmUp(c, n)
				b.ResetTimer()
				var errs, first, later []float64
				for it := 0; it < b.N; it++ {
					results := streamAll(c, n, it)
					log := srv.Log()
					for i, r := range results {
						if r.Request.Status != schemas.StatusOK {
							b.Fatalf("request %d: %s", i, r.Request.Error)
						}
						sent := log[r.Request.ID].Flushed
						if len(sent) != len(r.Chunks) {
							b.Fatalf("request %d: %d chunks read, %d written", i, len(r.Chunks), len(sent))
						}
						for k, ch := range r.Chunks {
							e := float64(ch.TS-sent[k]) / 1e6
							errs = append(errs, e)
							if k < 3 {
								first = append(first, e)
							} else {
								later = append(later, e)
							}
						}
					}
				}
				if testing.Verbose() {
					b.Logf("p90 %.2f p95 %.2f p99.9 %.2f; first 3 tokens p99 %.2f, later p99 %.2f", quantile(errs, 0.9), quantile(errs, 0.95),
						quantile(errs, 0.999), quantile(first, 0.99), quantile(later, 0.99))
				}
				b.ReportMetric(quantile(errs, 0.5), "p50-ms")
				b.ReportMetric(quantile(errs, 0.99), "p99-ms")
				b.ReportMetric(quantile(errs, 1), "max-ms")
				b.ReportMetric(float64(len(errs))/float64(b.N), "stamps/op")
			})
		}
	}
}

// BenchmarkPoissonKS: the runner sends N requests as a Poisson process at
// a rate to the paced server in its own process (one-token and 20-token
// responses, 50 ms apart); the KS statistic of the gaps between the actual
// send stamps (the kernel's transmit times) against the exponential, the
// 1% critical value 1.63/√N, and how late the sends left against their
// deadlines.
func BenchmarkPoissonKS(b *testing.B) {
	for _, tokens := range []int{1, 20} {
		for _, rate := range []float64{500, 2000} {
			b.Run(fmt.Sprintf("tokens=%d/rate=%g", tokens, rate), func(b *testing.B) {
				url := pacedserver.Spawn(b, fmt.Sprintf("%s=%d", pacedserver.EnvTokens, tokens))
				n := 4000
				var ks, late []float64
				kernel := 0
				for it := 0; it < b.N; it++ {
					c := NewClient(url, "m")
					var sent []int64
					r := NewRunner(RunConfig{RunID: fmt.Sprint("ks", it), Cycles: 1, RequestsPerCycle: n, OutputTokens: tokens,
						Arrival: Arrival{Process: ArrivalPoisson, Rate: rate}, Seed: uint64(it + 1), Warmup: 16,
						OnResult: func(res Result) {
							if res.Request.Status != schemas.StatusOK {
								b.Errorf("request %s: %s", res.Request.ID, res.Request.Error)
							}
							sent = append(sent, res.Request.Sent)
							late = append(late, float64(res.Request.Sent-res.Request.Scheduled)/1e6)
							if res.Request.SentKernel {
								kernel++
							}
						}}, c, nopPublisher{})
					// The warm-up opens the connections the run will hold.
					if err := r.WarmUp(context.Background()); err != nil {
						b.Fatal(err)
					}
					if err := r.Cycle(context.Background(), 0); err != nil {
						b.Fatal(err)
					}
					sort.Slice(sent, func(i, j int) bool { return sent[i] < sent[j] })
					ks = append(ks, gof.KSExponential(sent, rate))
				}
				b.ReportMetric(quantile(ks, 0.5), "KS")
				b.ReportMetric(gof.Critical1(n-1), "KS-crit-1%")
				b.ReportMetric(quantile(late, 0.5), "late-p50-ms")
				b.ReportMetric(quantile(late, 0.99), "late-p99-ms")
				b.ReportMetric(100*float64(kernel)/float64(len(late)), "tx-stamped-%")
			})
		}
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(string, string, schemas.Event) error { return nil }

// BenchmarkTimestampAccuracySeparateServer is BenchmarkTimestampAccuracy
// with the server in its own process (issue 14's setup: the two share this
// machine's cores, as a user's client and server on one host do): each
// stamp against the server's own stamp after its flush, kernel receive
// stamps against user-space ones.
func BenchmarkTimestampAccuracySeparateServer(b *testing.B) {
	for _, n := range []int{100, 1000, 2000} {
		for _, kernel := range []bool{true, false} {
			b.Run(fmt.Sprintf("streams=%d/kernel=%v", n, kernel), func(b *testing.B) {
				KernelStamps = kernel
				defer func() { KernelStamps = true }()
				url := pacedserver.Spawn(b)
				c := NewClient(url, "m")
				warmUp(c, n)
				b.ResetTimer()
				var errs, exact []float64
				for it := 0; it < b.N; it++ {
					results := streamAll(c, n, it)
					log, _, err := pacedserver.Fetch(url)
					if err != nil {
						b.Fatal(err)
					}
					for i, r := range results {
						s := log[r.Request.ID].Flushed
						if r.Request.Status != schemas.StatusOK || len(s) != len(r.Chunks) {
							b.Fatalf("request %d: %s, %d chunks read, %d written", i, r.Request.Error, len(r.Chunks), len(s))
						}
						for k, ch := range r.Chunks {
							e := float64(ch.TS-s[k]) / 1e6
							errs = append(errs, e)
							if ch.Kernel {
								exact = append(exact, e)
							}
						}
					}
				}
				b.ReportMetric(quantile(errs, 0.5), "p50-ms")
				b.ReportMetric(quantile(errs, 0.99), "p99-ms")
				b.ReportMetric(quantile(errs, 1), "max-ms")
				if kernel {
					// Stamps counted exact (the last line of their read)
					// and their share: the rest waited behind another.
					b.ReportMetric(100*float64(len(exact))/float64(len(errs)), "exact-%")
					if len(exact) > 0 {
						b.ReportMetric(quantile(exact, 0.99), "exact-p99-ms")
					}
				}
			})
		}
	}
}

// warmUp opens n connections with one-token requests, as a run's warm-up
// does (the connection setup of n streams at once is not what is
// measured).
func warmUp(c *Client, n int) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.Do(context.Background(), fmt.Sprint("warm-", i), "p", 1, c.Clock.Now()) }()
	}
	wg.Wait()
}

// streamAll starts n 20-token streams within 200 ms of each other and
// returns their results (iteration it names the requests).
func streamAll(c *Client, n, it int) []Result {
	results := make([]Result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 200 * time.Millisecond / time.Duration(n))
			results[i] = c.Do(context.Background(), fmt.Sprintf("%d-%d", it, i), "p", 20, c.Clock.Now())
		}()
	}
	wg.Wait()
	return results
}
