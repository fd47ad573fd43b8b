package loadgen

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/internal/sleep"
	"github.com/llm-energy-measure/lem/schemas"
)

// RunConfig describes one run: N cycles of the same workload.
type RunConfig struct {
	RunID      string
	Experiment string
	Backend    string
	Model      string
	Host       string
	Devices    []string // UUIDs of the devices serving the model
	Config     string   // canonical JSON of the normalised configuration
	Inventory  string   // canonical JSON of hardware and software

	Cycles           int
	RequestsPerCycle int
	// Duration, when set, stops issuing a cycle's requests after this long
	// (requests in flight finish).
	Duration time.Duration
	// Arrival is when requests are sent. Empty: Concurrency > 0 runs a
	// closed loop, else Rate requests/s arrive as a Poisson process.
	Arrival     Arrival
	Concurrency int
	Rate        float64
	// Prompts returns a cycle's prompts (at least RequestsPerCycle); nil:
	// PromptTokens words and OutputTokens max_tokens each.
	Prompts      func(cycle int) []Prompt
	PromptTokens int // approximate prompt length (words) without Prompts
	OutputTokens int // max_tokens of every request without Prompts
	Seed         uint64
	// Warmup requests are sent before measuring, unpublished. The
	// protocol around the cycles (baseline, cool-down, shuffled sweeps) is
	// package experiment's.
	Warmup  int
	Timeout time.Duration // per request (default 2 min)
	// Progress, when set, is called as requests finish.
	Progress func(cycle, done, total, failed int)
	// OnResult, when set, is given every finished request (one at a time)
	// after it was handed to the publisher. The runner keeps none: a
	// thousand streams' chunks go out in batches as requests finish.
	OnResult func(Result)
}

// Runner executes a RunConfig and publishes run, request and token events.
type Runner struct {
	cfg    RunConfig
	client *Client
	pub    collectors.Publisher
	rng    *rand.Rand

	mu      sync.Mutex
	reqs    schemas.RequestBatch
	toks    schemas.TokenBatch
	flushes int
	// InFlight is the number of requests currently in flight.
	InFlight atomic.Int64
}

// NewRunner returns a runner for cfg.
func NewRunner(cfg RunConfig, client *Client, pub collectors.Publisher) *Runner {
	if cfg.Cycles <= 0 {
		cfg.Cycles = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.OutputTokens <= 0 {
		cfg.OutputTokens = 64
	}
	if cfg.PromptTokens <= 0 {
		cfg.PromptTokens = 128
	}
	if cfg.Arrival.Process == "" {
		if cfg.Concurrency > 0 {
			cfg.Arrival = Arrival{Process: ArrivalConcurrency, Concurrency: cfg.Concurrency}
		} else {
			cfg.Arrival = Arrival{Process: ArrivalPoisson, Rate: cfg.Rate}
		}
	}
	return &Runner{cfg: cfg, client: client, pub: pub, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed))}
}

// SetProgress replaces the progress callback (before a cycle starts).
func (r *Runner) SetProgress(f func(cycle, done, total, failed int)) { r.cfg.Progress = f }

// Config returns the runner's configuration, defaults filled.
func (r *Runner) Config() RunConfig { return r.cfg }

func (r *Runner) runEvent(cycle int, phase schemas.RunPhase, ts int64) error {
	c := &r.cfg
	ev := &schemas.RunEvent{RunID: c.RunID, Experiment: c.Experiment, Cycle: uint32(cycle), Phase: phase, TS: ts,
		Backend: c.Backend, Model: c.Model, Host: c.Host, Devices: c.Devices, Config: c.Config, Inventory: c.Inventory}
	// The baseline opens with a start event of cycle 0 too: the time keeps ids distinct.
	id := fmt.Sprintf("run/%s/%d/%s/%d", c.RunID, cycle, phase, ts)
	return r.pub.Publish(schemas.RunSubject(schemas.KindRun, c.RunID), id, ev)
}

// MarkBaseline publishes the edges of an idle baseline window [from, to]
// measured outside the runner (one window shared by every run of an
// experiment).
func (r *Runner) MarkBaseline(from, to int64) error {
	if err := r.runEvent(0, schemas.RunStart, from); err != nil {
		return err
	}
	return r.runEvent(0, schemas.RunBaseline, to)
}

// WarmUp sends the configured warm-up requests (closed loop, results
// discarded): caches, JIT compilation and clocks settle before measuring.
func (r *Runner) WarmUp(ctx context.Context) error {
	c := &r.cfg
	if c.Warmup <= 0 {
		return nil
	}
	conc := max(c.Arrival.Concurrency, min(c.Warmup, 8))
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var took time.Duration // summed over successful warm-up requests
	ok := 0
	prompts := r.prompts(-1, c.Warmup)
	for i := 0; i < c.Warmup && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, c.Timeout)
			res := r.client.Do(rctx, fmt.Sprintf("%s-warmup-%d", c.RunID, i), prompts[i].Text, prompts[i].MaxTokens, r.client.Clock.Now())
			cancel()
			if q := res.Request; q.Status == schemas.StatusOK && q.Done > q.Sent {
				mu.Lock()
				took += time.Duration(q.Done - q.Sent)
				ok++
				mu.Unlock()
			}
			<-sem
		}()
	}
	wg.Wait()
	if ctx.Err() == nil && ok > 0 && c.Arrival.Rate > 0 && c.Arrival.Concurrency == 0 {
		// Each request also holds its connection for sendLead before it
		// leaves.
		held := took/time.Duration(ok) + sendLead
		r.openConnections(ctx, int(math.Ceil(c.Arrival.Rate*held.Seconds()*connHeadroom)))
	}
	return ctx.Err()
}

// connHeadroom and maxOpen bound the connections an open-loop run opens
// before measuring.
const (
	connHeadroom = 1.3
	maxOpen      = 10000
)

// openConnections opens about n connections to the server (by Little's
// law an open-loop run holds rate × (mean request duration + sendLead) in
// flight, the duration measured by the warm-up) with n concurrent
// one-token requests, unpublished: no measured request then waits for a
// connection to be set up (BenchmarkPoissonKS, docs/benchmarks.md).
func (r *Runner) openConnections(ctx context.Context, n int) {
	var wg sync.WaitGroup
	for i := range min(n, maxOpen) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			r.client.Do(rctx, fmt.Sprintf("%s-connect-%d", r.cfg.RunID, i), "hi", 1, r.client.Clock.Now())
			cancel()
		}()
	}
	wg.Wait()
}

func (r *Runner) prompts(cycle, n int) []Prompt {
	c := &r.cfg
	if c.Prompts != nil && cycle >= 0 {
		if ps := c.Prompts(cycle); len(ps) >= n {
			return ps
		}
	}
	out := make([]Prompt, n)
	for i := range out {
		plen := max(1, c.PromptTokens*(75+r.rng.IntN(51))/100)
		out[i] = Prompt{Text: strings.TrimSpace(strings.Repeat("token ", plen)), Tokens: plen, MaxTokens: c.OutputTokens}
	}
	if c.Prompts != nil && cycle < 0 {
		// Warm-up draws from the dataset too, when there is one.
		if ps := c.Prompts(0); len(ps) > 0 {
			for i := range out {
				out[i] = ps[i%len(ps)]
			}
		}
	}
	return out
}

// Cycle runs one measured cycle between start and end events.
func (r *Runner) Cycle(ctx context.Context, cycle int) error {
	c := &r.cfg
	clk := r.client.Clock
	n := c.RequestsPerCycle
	prompts := r.prompts(cycle, n)
	sched, err := c.Arrival.Schedule(n, r.rng)
	if err != nil {
		return err
	}
	if err := r.runEvent(cycle, schemas.RunStart, clk.Now()); err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pubErr error
	done, failed := 0, 0
	sem := make(chan struct{}, max(c.Arrival.Concurrency, 1))
	start := clk.Now()
	send := func(i int, scheduled int64, closed bool) {
		defer wg.Done()
		id := fmt.Sprintf("%s-c%d-r%d", c.RunID, cycle, i)
		p := prompts[i]
		r.InFlight.Add(1)
		rctx, cancel := context.WithTimeout(ctx, c.Timeout)
		var res Result
		if closed || c.Arrival.CoarseTiming {
			res = r.client.Do(rctx, id, p.Text, p.MaxTokens, scheduled)
		} else {
			res = r.client.DoAt(rctx, id, p.Text, p.MaxTokens, scheduled)
		}
		cancel()
		r.InFlight.Add(-1)
		res.Request.Cycle = uint32(cycle)
		if closed {
			<-sem
		}
		err := r.add(res)
		mu.Lock()
		if err != nil {
			pubErr = err
		}
		if c.OnResult != nil {
			c.OnResult(res)
		}
		done++
		if res.Request.Status != schemas.StatusOK {
			failed++
		}
		if c.Progress != nil {
			c.Progress(cycle, done, n, failed)
		}
		mu.Unlock()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if c.Duration > 0 && clk.Now()-start >= int64(c.Duration) {
			break
		}
		if sched == nil {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				continue
			}
			wg.Add(1)
			go send(i, clk.Now(), true)
			continue
		}
		scheduled := start + sched[i]
		if c.Duration > 0 && scheduled-start >= int64(c.Duration) {
			break
		}
		// Open loop: the request is started sendLead ahead and leaves at
		// its deadline (DoAt: the write waits for it), unless timing is
		// coarse. Either way this loop only sleeps on timers: the
		// precision is the write's, and a spin here took a scheduler slot
		// from the readers (BenchmarkPoissonKS, docs/benchmarks.md).
		at := scheduled
		if !c.Arrival.CoarseTiming {
			at -= int64(sendLead)
		}
		if !pace(ctx, clk, at, true) {
			break
		}
		wg.Add(1)
		go send(i, scheduled, false)
	}
	wg.Wait()
	if err := r.flush(); err != nil {
		return err
	}
	if pubErr != nil {
		return pubErr
	}
	if err := r.runEvent(cycle, schemas.RunEnd, clk.Now()); err != nil {
		return err
	}
	return ctx.Err()
}

// add buffers a finished request and its chunks, publishing when the
// buffer is large enough.
func (r *Runner) add(res Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs.Requests = append(r.reqs.Requests, res.Request)
	ref := uint32(len(r.toks.RequestIDs))
	r.toks.RequestIDs = append(r.toks.RequestIDs, res.Request.ID)
	var index uint32
	for _, ch := range res.Chunks {
		r.toks.Tokens = append(r.toks.Tokens, schemas.Token{Request: ref, Index: index, TS: ch.TS, Tokens: ch.Tokens})
		index += ch.Tokens
	}
	if len(r.toks.Tokens) >= 2000 || len(r.reqs.Requests) >= 200 {
		return r.flushLocked()
	}
	return nil
}

func (r *Runner) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushLocked()
}

func (r *Runner) flushLocked() error {
	c := &r.cfg
	if len(r.reqs.Requests) == 0 {
		return nil
	}
	r.flushes++
	r.reqs.RunID, r.toks.RunID = c.RunID, c.RunID
	id := fmt.Sprintf("%s/%d", c.RunID, r.flushes)
	if len(r.toks.Tokens) > 0 {
		if err := r.pub.Publish(schemas.RunSubject(schemas.KindToken, c.RunID), "tok/"+id, &r.toks); err != nil {
			return err
		}
	}
	if err := r.pub.Publish(schemas.RunSubject(schemas.KindRequest, c.RunID), "req/"+id, &r.reqs); err != nil {
		return err
	}
	r.reqs.Requests = r.reqs.Requests[:0]
	r.toks.RequestIDs = r.toks.RequestIDs[:0]
	r.toks.Tokens = r.toks.Tokens[:0]
	return nil
}

// sendLead is how long before its deadline an open-loop request is
// started: it is prepared and takes its connection, then its write waits
// for the deadline (on the reactor's send thread). It covers the goroutine
// start, building the request and the transport's hand-off to its writer
// (0.1–0.7 ms median, and tens of ms in the tail on two busy cores: with
// 5 ms, 1% of sends at 500 requests/s left 3–4 ms late).
const sendLead = 20 * time.Millisecond

// spinWindow is how long before a deadline the pacer stops sleeping and
// spins: timers wake up to ~1 ms late on common kernels (measured here:
// a 50 µs sleep took 1.05 ms), which would bunch open-loop arrivals on
// millisecond ticks and distort the process being simulated.
const spinWindow = 1500 * time.Microsecond

// pace waits until deadline (ns, clk's time base): a timer sleep to within
// spinWindow, then a yielding spin, unless coarse. It returns false if ctx
// ended.
func pace(ctx context.Context, clk Clock, deadline int64, coarse bool) bool {
	if coarse {
		d := time.Duration(deadline - clk.Now())
		return d <= 0 || sleep.Ctx(ctx, d)
	}
	if d := time.Duration(deadline-clk.Now()) - spinWindow; d > 0 && !sleep.Ctx(ctx, d) {
		return false
	}
	for clk.Now() < deadline {
		if ctx.Err() != nil {
			return false
		}
		runtime.Gosched()
	}
	return true
}
