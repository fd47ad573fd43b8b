package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/llm-energy-measure/lem/collectors"
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
	// Concurrency > 0 runs a closed loop with that many requests in flight;
	// otherwise Rate requests/s arrive as a Poisson process.
	Concurrency  int
	Rate         float64
	PromptTokens int // approximate prompt length (words)
	OutputTokens int // max_tokens of every request
	Seed         uint64
	// Baseline is the idle window measured before the first cycle; CoolDown
	// separates cycles.
	Baseline time.Duration
	CoolDown time.Duration
	Timeout  time.Duration // per request (default 2 min)
}

// Runner executes a RunConfig and publishes run, request and token events.
type Runner struct {
	cfg    RunConfig
	client *Client
	pub    collectors.Publisher

	mu      sync.Mutex
	reqs    schemas.RequestBatch
	toks    schemas.TokenBatch
	flushes int
	// Results holds every finished request, by cycle.
	Results [][]Result
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
	return &Runner{cfg: cfg, client: client, pub: pub}
}

func (r *Runner) runEvent(cycle int, phase schemas.RunPhase, ts int64) error {
	c := &r.cfg
	ev := &schemas.RunEvent{RunID: c.RunID, Experiment: c.Experiment, Cycle: uint32(cycle), Phase: phase, TS: ts,
		Backend: c.Backend, Model: c.Model, Host: c.Host, Devices: c.Devices, Config: c.Config, Inventory: c.Inventory}
	// The baseline opens with a start event of cycle 0 too: the time keeps ids distinct.
	id := fmt.Sprintf("run/%s/%d/%s/%d", c.RunID, cycle, phase, ts)
	return r.pub.Publish(schemas.RunSubject(schemas.KindRun, c.RunID), id, ev)
}

// Run measures the idle baseline, then runs every cycle, publishing events
// as it goes. It returns the first publish error, or ctx's error.
func (r *Runner) Run(ctx context.Context) error {
	c := &r.cfg
	clk := r.client.Clock
	if c.Baseline > 0 {
		if err := r.runEvent(0, schemas.RunStart, clk.Now()); err != nil {
			return err
		}
		if !sleepCtx(ctx, c.Baseline) {
			return ctx.Err()
		}
		if err := r.runEvent(0, schemas.RunBaseline, clk.Now()); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x5eed))
	r.Results = make([][]Result, c.Cycles)
	for cycle := 0; cycle < c.Cycles; cycle++ {
		if cycle > 0 && c.CoolDown > 0 && !sleepCtx(ctx, c.CoolDown) {
			return ctx.Err()
		}
		if err := r.runEvent(cycle, schemas.RunStart, clk.Now()); err != nil {
			return err
		}
		if err := r.cycle(ctx, cycle, rng); err != nil {
			return err
		}
		if err := r.runEvent(cycle, schemas.RunEnd, clk.Now()); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (r *Runner) cycle(ctx context.Context, cycle int, rng *rand.Rand) error {
	c := &r.cfg
	clk := r.client.Clock
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pubErr error
	sem := make(chan struct{}, max(c.Concurrency, 1))
	start := clk.Now()
	next := start
	for i := 0; i < c.RequestsPerCycle && ctx.Err() == nil; i++ {
		scheduled := clk.Now()
		if c.Concurrency > 0 {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			scheduled = clk.Now()
		} else if c.Rate > 0 {
			// Absolute deadlines: relative sleeps would under-deliver.
			next += int64(rng.ExpFloat64() / c.Rate * 1e9)
			if d := time.Duration(next - clk.Now()); d > 0 && !sleepCtx(ctx, d) {
				break
			}
			scheduled = next
		}
		plen := max(1, c.PromptTokens*(75+rng.IntN(51))/100)
		prompt := strings.TrimSpace(strings.Repeat("token ", plen))
		id := fmt.Sprintf("%s-c%d-r%d", c.RunID, cycle, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, c.Timeout)
			res := r.client.Do(rctx, id, prompt, c.OutputTokens, scheduled)
			cancel()
			res.Request.Cycle = uint32(cycle)
			if c.Concurrency > 0 {
				<-sem
			}
			if err := r.add(res); err != nil {
				mu.Lock()
				pubErr = err
				mu.Unlock()
			}
			mu.Lock()
			r.Results[cycle] = append(r.Results[cycle], res)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := r.flush(); err != nil {
		return err
	}
	return pubErr
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

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
