package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/pacedserver"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// BenchmarkRunAttachedStamps measures lem's token stamps as a user gets
// them (issue 14): `lem run` attached (backend external) to an independent
// streaming server in its own process (internal/pacedserver: 20 one-token
// chunks per request at absolute 50 ms deadlines, logging when each
// flush returned and when each request arrived), N requests in flight in
// a closed loop, both processes on this machine's cores. Every stored
// chunk is joined with the server's flush by request id and token index.
//
// Reported: the stamp error (lem's stamp − the server's flush) over all
// tokens (p50/p90/p99/max) and first tokens (p99), the share of chunks
// with their own segment's kernel time; TTFT and ITL p99 from lem's store
// beside the server's own (first flush − the kernel's receive time of the
// request at the server, and − when its handler began; flush gaps);
// requests completed of those sent; lem's and the server's CPU seconds,
// lem's peak RSS and Go heap (GODEBUG=gctrace=1), and how long `lem
// analyze` of the run takes.
func BenchmarkRunAttachedStamps(b *testing.B) {
	for _, n := range []int{1000, 2000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			lem := buildLem(b)
			for it := 0; it < b.N; it++ {
				runAttached(b, lem, n)
			}
		})
	}
}

var gcHeap = regexp.MustCompile(`(\d+)->(\d+)->(\d+) MB`)

func runAttached(b *testing.B, lem string, n int) {
	url := pacedserver.Spawn(b)
	dir := b.TempDir()
	const rounds = 3 // requests per stream and cycle
	exp := filepath.Join(dir, "exp.yaml")
	if err := os.WriteFile(exp, []byte(fmt.Sprintf(`
experiment: stamps-%d
out: %s
backend: {kind: external, endpoint: %s, model: m}
workload:
  requests: %d
  warmup: %d
  arrival: {concurrency: %d}
  dataset: {prompt_tokens: {mean: 8}, output_tokens: {mean: 20}}
measurement: {cycles: 1, baseline: 200ms, settle: 100ms, cooldown: {min: 50ms, max: 100ms}}
collectors: {gpu: none, rapl: "off", scrape: {enabled: false}}
`, n, dir, url, rounds*n, n, n)), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(lem, "run", "-quiet", exp)
	cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1") // its Go heap at every GC, on stderr
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("lem run: %v\n%s", err, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	lemCPU := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	log, serverCPU, err := pacedserver.Fetch(url)
	if err != nil {
		b.Fatal(err)
	}

	ctx := context.Background()
	st := store.Parquet(filepath.Join(dir, "store"))
	runs, err := st.RunIDs(ctx)
	if err != nil || len(runs) != 1 {
		b.Fatalf("runs %v, %v\n%s", runs, err, out)
	}
	reqs, err := st.Requests(ctx, runs[0])
	if err != nil {
		b.Fatal(err)
	}
	toks, err := st.Tokens(ctx, runs[0])
	if err != nil {
		b.Fatal(err)
	}
	var all, first, ttft, ttftServer, ttftHandler, itl, itlServer []float64
	ok, chunks, exact, sentKernel := 0, 0, 0, 0
	for _, q := range reqs {
		e, seen := log[q.ID]
		if q.Status != schemas.StatusOK || !seen {
			continue
		}
		ok++
		chunks += len(toks[q.ID])
		exact += int(q.KernelStamped)
		if q.SentKernel {
			sentKernel++
		}
		ts := toks[q.ID]
		slices.SortFunc(ts, func(a, b schemas.Token) int { return int(a.Index) - int(b.Index) })
		if len(ts) != len(e.Flushed) {
			b.Fatalf("request %s: %d chunks stored, %d flushed", q.ID, len(ts), len(e.Flushed))
		}
		for k, tk := range ts {
			d := float64(tk.TS-e.Flushed[k]) / 1e6
			all = append(all, d)
			if k == 0 {
				first = append(first, d)
			} else {
				itl = append(itl, float64(tk.TS-ts[k-1].TS)/1e6)
				itlServer = append(itlServer, float64(e.Flushed[k]-e.Flushed[k-1])/1e6)
			}
		}
		ttft = append(ttft, float64(q.FirstToken-q.Sent)/1e6)
		ttftHandler = append(ttftHandler, float64(e.Flushed[0]-e.Received)/1e6)
		if e.Arrived == 0 {
			b.Fatalf("request %s: the server recorded no kernel arrival time", q.ID)
		}
		ttftServer = append(ttftServer, float64(e.Flushed[0]-e.Arrived)/1e6)
	}
	if ok != rounds*n {
		b.Errorf("%d of %d requests completed", ok, rounds*n)
	}
	if len(all) == 0 {
		b.Fatalf("no tokens joined\n%s", out)
	}

	start := time.Now()
	if out, err := exec.Command(lem, "analyze", "-parquet", filepath.Join(dir, "store"), runs[0]).CombinedOutput(); err != nil {
		b.Fatalf("lem analyze: %v\n%s", err, out)
	}
	analyze := time.Since(start).Seconds()

	q := func(xs []float64, p float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	b.ReportMetric(q(all, 0.5), "p50-ms")
	b.ReportMetric(q(all, 0.9), "p90-ms")
	b.ReportMetric(q(all, 0.99), "p99-ms")
	b.ReportMetric(q(all, 1), "max-ms")
	b.ReportMetric(q(first, 0.99), "first-p99-ms")
	b.ReportMetric(100*float64(exact)/float64(chunks), "exact-%")
	b.ReportMetric(100*float64(sentKernel)/float64(ok), "tx-%")
	b.ReportMetric(q(ttft, 0.99), "ttft-p99-ms")
	b.ReportMetric(q(ttftServer, 0.99), "server-ttft-p99-ms")
	b.ReportMetric(q(ttftHandler, 0.99), "server-handler-ttft-p99-ms")
	b.ReportMetric(q(itl, 0.99), "itl-p99-ms")
	b.ReportMetric(q(itlServer, 0.99), "server-itl-p99-ms")
	b.ReportMetric(float64(ok), "completed")
	b.ReportMetric(lemCPU, "lem-cpu-s")
	b.ReportMetric(serverCPU, "server-cpu-s")
	b.ReportMetric(float64(ru.Maxrss)/1024, "lem-maxrss-MiB")
	// gctrace: "… X->Y->Z MB …": heap at GC start, at its end, live after.
	heapMax, liveMax := 0, 0
	for _, m := range gcHeap.FindAllSubmatch(out, -1) {
		x, _ := strconv.Atoi(string(m[1]))
		z, _ := strconv.Atoi(string(m[3]))
		heapMax, liveMax = max(heapMax, x), max(liveMax, z)
	}
	if heapMax == 0 {
		b.Fatalf("no GC trace in lem's output:\n%s", out)
	}
	b.ReportMetric(float64(heapMax), "lem-heap-max-MB")
	b.ReportMetric(float64(liveMax), "lem-live-heap-max-MB")
	b.ReportMetric(analyze, "analyze-s")
}
