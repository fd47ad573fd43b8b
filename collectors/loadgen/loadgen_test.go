package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// recorder keeps decoded copies of published events.
type recorder struct {
	mu     sync.Mutex
	events []schemas.Event
}

func (r *recorder) Publish(_, _ string, ev schemas.Event) error {
	cp, err := schemas.Decode(ev.AppendWire(nil))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, cp)
	r.mu.Unlock()
	return nil
}

func TestClientAgainstSynthetic(t *testing.T) {
	syn := NewSynthetic(SyntheticConfig{StepBase: time.Millisecond})
	defer syn.Close()
	srv := httptest.NewServer(syn)
	defer srv.Close()
	for _, chat := range []bool{false, true} {
		c := NewClient(srv.URL, SyntheticModel)
		c.Chat = chat
		res := c.Do(context.Background(), "r1", "a b c d", 12, c.Clock.Now())
		q := res.Request
		if q.Status != schemas.StatusOK || q.OutputTokens != 12 || len(res.Chunks) != 12 || res.UsageMismatch {
			t.Fatalf("chat=%v: %+v (%d chunks, mismatch %v)", chat, q, len(res.Chunks), res.UsageMismatch)
		}
		if !(q.Scheduled <= q.Sent && q.Sent < q.FirstToken && q.FirstToken <= q.LastToken && q.LastToken <= q.Done) {
			t.Fatalf("stamps out of order: %+v", q)
		}
		if q.PromptTokens == 0 {
			t.Fatal("prompt tokens not taken from usage")
		}
	}
}

func TestClientRecordsFailures(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", "m")
	res := c.Do(context.Background(), "x", "p", 4, c.Clock.Now())
	if res.Request.Status != schemas.StatusError || res.Request.Error == "" {
		t.Fatalf("%+v", res.Request)
	}
	syn := NewSynthetic(SyntheticConfig{StepBase: 50 * time.Millisecond})
	defer syn.Close()
	srv := httptest.NewServer(syn)
	defer srv.Close()
	c = NewClient(srv.URL, "m")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	res = c.Do(ctx, "y", "p", 100, c.Clock.Now())
	if res.Request.Status != schemas.StatusTimeout {
		t.Fatalf("want timeout, got %+v", res.Request)
	}
}

func TestRunnerPublishesEverything(t *testing.T) {
	syn := NewSynthetic(SyntheticConfig{StepBase: time.Millisecond})
	defer syn.Close()
	srv := httptest.NewServer(syn)
	defer srv.Close()
	rec := &recorder{}
	cfg := RunConfig{RunID: "run-x", Experiment: "e", Backend: "synthetic", Model: SyntheticModel, Host: "h",
		Cycles: 2, RequestsPerCycle: 30, Concurrency: 8, OutputTokens: 10, PromptTokens: 20}
	r := NewRunner(cfg, NewClient(srv.URL, SyntheticModel), rec)
	if err := runCycles(r); err != nil {
		t.Fatal(err)
	}
	var reqs, runEvents int
	var tokens uint32
	ids := map[string]bool{}
	for _, ev := range rec.events {
		switch e := ev.(type) {
		case *schemas.RequestBatch:
			for _, q := range e.Requests {
				if q.Status != schemas.StatusOK || ids[q.ID] {
					t.Fatalf("request %+v", q)
				}
				ids[q.ID] = true
				reqs++
			}
		case *schemas.TokenBatch:
			for _, tk := range e.Tokens {
				tokens += tk.Tokens
			}
		case *schemas.RunEvent:
			runEvents++
		}
	}
	if reqs != 60 || tokens != 600 || runEvents != 2+2*2 {
		t.Fatalf("published %d requests, %d tokens, %d run events; want 60, 600, 6", reqs, tokens, runEvents)
	}
}

func TestPoissonArrivals(t *testing.T) {
	syn := NewSynthetic(SyntheticConfig{StepBase: time.Millisecond})
	defer syn.Close()
	srv := httptest.NewServer(syn)
	defer srv.Close()
	sched := make([]int64, 0, 100)
	cfg := RunConfig{RunID: "p", Cycles: 1, RequestsPerCycle: 100, Rate: 200, OutputTokens: 2, Seed: 3,
		OnResult: func(res Result) { sched = append(sched, res.Request.Scheduled) }}
	r := NewRunner(cfg, NewClient(srv.URL, SyntheticModel), &recorder{})
	start := time.Now()
	if err := runCycles(r); err != nil {
		t.Fatal(err)
	}
	// 100 arrivals at 200/s take about 0.5 s; allow wide bounds (the
	// check is that pacing happens at all, not its precision).
	if el := time.Since(start); el < 200*time.Millisecond || el > 5*time.Second {
		t.Fatalf("100 Poisson arrivals at 200/s took %v", el)
	}
	if len(sched) != 100 {
		t.Fatalf("%d results", len(sched))
	}
	// Scheduled times are the process's deadlines: strictly increasing
	// once sorted, with a mean gap near 1/rate.
	slices.Sort(sched)
	mean := float64(sched[99]-sched[0]) / 99 / 1e6
	if mean < 2 || mean > 10 {
		t.Fatalf("mean inter-arrival %.2f ms, want about 5", mean)
	}
}

// runCycles marks a short baseline and runs every cycle of r, as the
// experiment protocol does.
func runCycles(r *Runner) error {
	ctx := context.Background()
	clk := NewClock()
	from := clk.Now()
	time.Sleep(10 * time.Millisecond)
	if err := r.MarkBaseline(from, clk.Now()); err != nil {
		return err
	}
	if err := r.WarmUp(ctx); err != nil {
		return err
	}
	for cy := 0; cy < r.Config().Cycles; cy++ {
		if err := r.Cycle(ctx, cy); err != nil {
			return err
		}
	}
	return nil
}

// Lines longer than the client's 4 KiB read buffer are gathered whole (a
// chunk carrying many tokens at once); one over 64 KiB fails the request
// with a message that says so.
func TestLongStreamLines(t *testing.T) {
	for _, c := range []struct {
		text string
		want string // error; "" = ok
	}{{strings.Repeat("x", 20<<10), ""}, {strings.Repeat("y", 70<<10), "stream line longer than 64 KiB"}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: {\"choices\":[{\"text\":%q}]}\n\n", c.text)
			fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"z\"}]}\n\ndata: [DONE]\n\n")
		}))
		cl := NewClient(srv.URL, "m")
		var got strings.Builder
		cl.OnText = func(_, s string) { got.WriteString(s) }
		res := cl.Do(context.Background(), "r", "p", 2, cl.Clock.Now())
		srv.Close()
		if c.want != "" {
			if res.Request.Status == schemas.StatusOK || !strings.Contains(res.Request.Error, c.want) {
				t.Errorf("%d-byte line: status %v, error %q; want %q", len(c.text), res.Request.Status, res.Request.Error, c.want)
			}
			continue
		}
		if res.Request.Status != schemas.StatusOK || len(res.Chunks) != 2 || got.String() != c.text+"z" {
			t.Errorf("%d-byte line: status %v %q, %d chunks, %d bytes of text", len(c.text), res.Request.Status, res.Request.Error, len(res.Chunks), got.Len())
		}
	}
}

// Before an open-loop run, the warm-up opens the connections the run will
// hold (rate × the warm-up's mean request duration, with 30% headroom), so
// no measured request waits for a connection to be set up.
func TestWarmUpOpensConnectionsForOpenLoop(t *testing.T) {
	var mu sync.Mutex
	opened := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: [DONE]\n\n")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			opened++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	r := NewRunner(RunConfig{RunID: "w", RequestsPerCycle: 1, Warmup: 4, OutputTokens: 1,
		Arrival: Arrival{Process: ArrivalPoisson, Rate: 200}}, NewClient(srv.URL, "m"), &recorder{})
	if err := r.WarmUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// 200/s × (~0.1 s + 20 ms) × 1.3 = 32 (the warm-up's own 4 are reused).
	if opened < 31 || opened > 200 { // more when the machine slows the warm-up
		t.Fatalf("%d connections opened; want about 32", opened)
	}
}

// Where the kernel gives no stamps (another OS, an option refused: here
// turned off), chunks and sends carry the client's own clock and say so:
// no chunk counts as kernel-stamped, no send as the kernel's transmit time.
func TestFallbackStampsAreMarked(t *testing.T) {
	KernelStamps = false
	defer func() { KernelStamps = true }()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "data: {\"choices\":[{\"text\":\"t%d\"}]}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(2 * time.Millisecond)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "m")
	before := c.Clock.Now()
	res := c.DoAt(context.Background(), "r", "p", 5, before+int64(5*time.Millisecond))
	after := c.Clock.Now()
	q := res.Request
	if q.Status != schemas.StatusOK || len(res.Chunks) != 5 {
		t.Fatalf("%s %q, %d chunks", q.Status, q.Error, len(res.Chunks))
	}
	if q.KernelStamped != 0 || q.SentKernel {
		t.Errorf("kernel_stamped %d, sent_kernel %v without kernel stamps", q.KernelStamped, q.SentKernel)
	}
	if q.Sent < q.Scheduled || q.Sent > q.FirstToken {
		t.Errorf("send stamped %+.3f ms from its deadline, first token at %+.3f ms", float64(q.Sent-q.Scheduled)/1e6, float64(q.FirstToken-q.Scheduled)/1e6)
	}
	for k, ch := range res.Chunks {
		if ch.Kernel || ch.TS < before || ch.TS > after {
			t.Errorf("chunk %d: kernel %v, stamp %d outside the request [%d, %d]", k, ch.Kernel, ch.TS, before, after)
		}
	}
}
