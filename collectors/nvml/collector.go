package nvml

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"runtime"
	"syscall"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/internal/logging"
	"github.com/llm-energy-measure/lem/schemas"
)

// Config sets the cadences. Zero values take the defaults.
type Config struct {
	// Devices are the NVML indices to measure (empty: all).
	Devices []int         `yaml:"devices"`
	Publish time.Duration `yaml:"publish"` // read the buffer and publish: 1 s
	// Counter is the shortest energy-counter read period (1 s). The
	// counter changes every ~100 ms; 100 ms gives its full resolution
	// (validation). A read busy-waits in the driver, so the period stretches
	// while the agent exceeds CounterBudget (see nextCounterPeriod).
	Counter time.Duration `yaml:"counter"`
	// CounterBudget is the agent's CPU share target per GPU (0.004 = 0.4% of
	// one core; negative: no limit, read every Counter).
	CounterBudget float64       `yaml:"counter_cpu_budget"`
	Instant       time.Duration `yaml:"instant"` // instant-power fallback period: 100 ms
	State         time.Duration `yaml:"state"`   // device state period: 500 ms
	// AlsoInstant reads instant power at 10 Hz even where the buffer works,
	// to compare the two (validation).
	AlsoInstant bool `yaml:"also_instant"`
	// Clock is how often the driver-clock offset bounds are published: 10 s.
	Clock time.Duration `yaml:"clock"`
	// AlignedCounter reads the counter aligned to its refresh
	// (ReadEnergyAligned, source nvml.counter.aligned: stamped within a few
	// ms; the default, nil) or, false, whenever the timer fires (source
	// nvml.counter: one call, its value 0–100 ms old). Once the refresh
	// grid is locked most aligned reads are one call like a plain one
	// (verifyEvery); the CPU budget holds either way.
	AlignedCounter *bool `yaml:"aligned_counter"`
}

// Aligned says whether the counter is read aligned to its refresh.
func (c Config) Aligned() bool { return c.AlignedCounter == nil || *c.AlignedCounter }

// SampleConfig is sample.yaml: every setting with its default.
//
//go:embed sample.yaml
var SampleConfig string

// Build opens NVML (the driver's library, loaded at run time) for the
// devices of c and returns their collector. The collector owns the
// library handle: Reader().Close() releases it.
func Build(c Config, env collectors.Env) (collectors.Collector, error) {
	rd, err := Open(gonvml.New(), env.Host, c.Devices, nil)
	if err != nil {
		return nil, err
	}
	return NewCollector(rd, c, env.Log), nil
}

// Reader returns the opened devices.
func (c *Collector) Reader() *Reader { return c.rd }

func (c Config) withDefaults() Config {
	if c.Publish <= 0 {
		c.Publish = time.Second
	}
	if c.Counter <= 0 {
		c.Counter = time.Second
	}
	if c.CounterBudget == 0 {
		c.CounterBudget = 0.004
	}
	if c.Instant <= 0 {
		c.Instant = 100 * time.Millisecond
	}
	if c.State <= 0 {
		c.State = 500 * time.Millisecond
	}
	if c.Clock <= 0 {
		c.Clock = 10 * time.Second
	}
	return c
}

// Collector publishes the events of every opened GPU.
type Collector struct {
	rd  *Reader
	cfg Config
	log zerolog.Logger
	st  []gpuBatches
	// counter period control (nextCounterPeriod): the collector's own CPU
	// (its locked thread's), adjusted every adjEvery.
	period   time.Duration
	lastAdj  time.Time
	lastCPU  time.Duration
	cpu      func() time.Duration
	adjEvery time.Duration
}

type gpuBatches struct {
	power, instant schemas.PowerBatch
	energy         schemas.EnergyBatch
	state          schemas.StateBatch
	gaps           schemas.GapBatch
	clock          schemas.ClockBatch
	lastClock      int64 // host ns of the last clock sample taken
}

// NewCollector wraps an opened Reader.
func NewCollector(rd *Reader, cfg Config, log zerolog.Logger) *Collector {
	// Read failures can repeat every cycle of the loop: at most a few a
	// minute reach the log (gap events record every one).
	c := &Collector{rd: rd, cfg: cfg.withDefaults(), log: logging.RateLimited(log, 5, time.Minute), st: make([]gpuBatches, len(rd.GPUs)),
		cpu: threadCPU, adjEvery: 5 * time.Second}
	for i, g := range rd.GPUs {
		b := &c.st[i]
		b.power = schemas.PowerBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceBuffer}, Device: g.ID}
		b.instant = schemas.PowerBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceInstant}, Device: g.ID}
		ctr := SourceCounterAligned
		if !c.cfg.Aligned() {
			ctr = SourceCounter
		}
		b.energy = schemas.EnergyBatch{Origin: schemas.Origin{Host: rd.Host, Source: ctr}, Device: g.ID}
		b.state = schemas.StateBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceState}, Device: g.ID}
		b.gaps = schemas.GapBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceBuffer}, Device: g.ID}
		b.clock = schemas.ClockBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceBuffer}, Device: g.ID}
		if !g.HasBuffer {
			log.Warn().Str("gpu", g.ID.UUID).Msg("driver power buffer unsupported: falling back to instant power (lower quality)")
		}
	}
	return c
}

func (c *Collector) needInstant() bool {
	if c.cfg.AlsoInstant {
		return true
	}
	for _, g := range c.rd.GPUs {
		if !g.HasBuffer && g.HasInstant {
			return true
		}
	}
	return false
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return "nvml" }

// Run polls until ctx ends, then publishes what it holds. Its goroutine
// is locked to one OS thread, whose CPU time is the collector's own cost:
// every NVML call (cgo) runs on it, nothing else does. The counter budget
// is applied to that, not to the process, in which the load generator,
// JetStream and ingest of `lem run` share the CPU.
func (c *Collector) Run(ctx context.Context, pub collectors.Publisher) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pubT := time.NewTicker(c.cfg.Publish)
	// The instant field is read only where the buffer is missing (or for
	// validation); otherwise its ticker never fires.
	instT := time.NewTicker(c.cfg.Instant)
	if !c.needInstant() {
		instT.Stop()
	}
	stateT := time.NewTicker(c.cfg.State)
	ctrT := time.NewTimer(c.cfg.Counter)
	defer ctrT.Stop()
	defer pubT.Stop()
	defer instT.Stop()
	defer stateT.Stop()
	c.readCounters()
	c.Tick() // prime: first counter reading and buffer position
	for {
		select {
		case <-ctx.Done():
			c.readCounters()
			c.Tick()
			c.sampleClocks(true)
			return c.Flush(pub)
		case <-instT.C:
			for i, g := range c.rd.GPUs {
				if !g.HasBuffer || c.cfg.AlsoInstant {
					if err := c.rd.ReadInstant(g, &c.st[i].instant); err != nil {
						c.log.Debug().Err(err).Str("gpu", g.ID.UUID).Msg("instant power read failed")
					}
				}
			}
		case <-ctrT.C:
			c.readCounters()
			next := c.nextCounterPeriod(c.cpu(), time.Now())
			if c.cfg.Aligned() {
				// An aligned read waits for the refresh itself: wake half a
				// refresh early so that a 100 ms period reads every refresh.
				next = max(next-refreshGuess/2, time.Millisecond)
			}
			ctrT.Reset(next)
		case <-stateT.C:
			for i, g := range c.rd.GPUs {
				c.rd.ReadState(g, &c.st[i].state)
			}
		case <-pubT.C:
			c.Tick()
			if err := c.Flush(pub); err != nil {
				return err
			}
		}
	}
}

// readCounters reads every GPU's counter.
func (c *Collector) readCounters() {
	for i, g := range c.rd.GPUs {
		read := c.rd.ReadEnergyAligned
		if !c.cfg.Aligned() {
			read = c.rd.ReadEnergy
		}
		if err := read(g, &c.st[i].energy); err != nil {
			c.log.Warn().Err(err).Str("gpu", g.ID.UUID).Msg("energy counter read failed")
		}
	}
}

// nextCounterPeriod adapts the counter period to keep the collector's own
// CPU share (its thread's, see Run) within CounterBudget per GPU: the counter
// read dominates the agent's cost (a driver busy-wait of ~7-11 ms of CPU
// per call on an H200, docs/validation/nvml-h200.md). The period grows by
// half while over budget, shrinks back toward cfg.Counter while well under
// it, and stays within [cfg.Counter, 10 s]. Longer intervals lose no time
// resolution: windows come from the buffer calibrated to the counter.
func (c *Collector) nextCounterPeriod(cpu time.Duration, now time.Time) time.Duration {
	if c.period == 0 {
		c.period = c.cfg.Counter
	}
	if c.cfg.CounterBudget < 0 {
		return c.period
	}
	if !c.lastAdj.IsZero() {
		if wall := now.Sub(c.lastAdj); wall >= c.adjEvery {
			share := float64(cpu-c.lastCPU) / float64(wall)
			target := c.cfg.CounterBudget * float64(max(len(c.rd.GPUs), 1))
			switch {
			case share > target:
				c.period = min(c.period*3/2, 10*time.Second)
			case share < 0.7*target:
				c.period = max(c.period*4/5, c.cfg.Counter)
			}
			c.lastAdj, c.lastCPU = now, cpu
		}
	} else {
		c.lastAdj, c.lastCPU = now, cpu
	}
	return c.period
}

// Tick reads every GPU's buffer once (and the counters, at start and end).
func (c *Collector) Tick() {
	for i, g := range c.rd.GPUs {
		b := &c.st[i]
		if err := c.rd.ReadBuffer(g, &b.power, &b.gaps); err != nil {
			c.log.Warn().Err(err).Str("gpu", g.ID.UUID).Msg("power buffer read failed")
		}
	}
	c.sampleClocks(false)
}

// sampleClocks takes each GPU's clock-offset bounds every cfg.Clock (and
// always when final).
func (c *Collector) sampleClocks(final bool) {
	now := c.rd.now()
	for i, g := range c.rd.GPUs {
		b := &c.st[i]
		if !final && b.lastClock != 0 && now-b.lastClock < int64(c.cfg.Clock) {
			continue
		}
		if s, ok := g.Clock(now); ok {
			b.clock.Samples = append(b.clock.Samples, s)
			b.lastClock = now
		}
	}
}

// Flush publishes and empties every held batch. A board in MIG mode also
// gets each instance's apportioned share of its power, energy and gaps,
// published under the instance's UUID with sources ending in
// ApportionedSuffix.
func (c *Collector) Flush(pub collectors.Publisher) error {
	for i, g := range c.rd.GPUs {
		b := &c.st[i]
		if err := c.publish(pub, g.ID, b); err != nil {
			return err // batches kept: the next Flush retries them
		}
		for _, inst := range g.Instances {
			if err := c.publish(pub, inst.ID, apportion(b, inst)); err != nil {
				return err
			}
		}
		b.power.Samples, b.instant.Samples = b.power.Samples[:0], b.instant.Samples[:0]
		b.energy.Readings, b.state.Samples, b.gaps.Gaps = b.energy.Readings[:0], b.state.Samples[:0], b.gaps.Gaps[:0]
		b.clock.Samples = b.clock.Samples[:0]
	}
	return nil
}

func (c *Collector) publish(pub collectors.Publisher, dev schemas.Device, b *gpuBatches) error {
	send := func(k schemas.Kind, tag string, first int64, ev schemas.Event) error {
		id := fmt.Sprintf("%s/%s/%d", tag, dev.UUID, first)
		return pub.Publish(schemas.DeviceSubject(k, c.rd.Host, dev.Index), id, ev)
	}
	var err error
	if n := len(b.power.Samples); n > 0 {
		err = send(schemas.KindPower, b.power.Source, b.power.Samples[0].TS, &b.power)
	}
	if n := len(b.instant.Samples); err == nil && n > 0 {
		err = send(schemas.KindPower, b.instant.Source, b.instant.Samples[0].TS, &b.instant)
	}
	if n := len(b.energy.Readings); err == nil && n > 0 {
		err = send(schemas.KindEnergy, b.energy.Source, b.energy.Readings[0].TSBefore, &b.energy)
	}
	if n := len(b.state.Samples); err == nil && n > 0 {
		err = send(schemas.KindState, b.state.Source, b.state.Samples[0].TS, &b.state)
	}
	if n := len(b.gaps.Gaps); err == nil && n > 0 {
		err = send(schemas.KindGap, "gap", b.gaps.Gaps[0].From, &b.gaps)
	}
	if n := len(b.clock.Samples); err == nil && n > 0 {
		err = send(schemas.KindClock, "clock", b.clock.Samples[0].TS, &b.clock)
	}
	return err
}

// apportion returns inst's share of a board's held batches: power samples
// and cumulative counter values scaled by the share (so differences, and
// the sum over a board's instances, keep the board's energy to within a
// µJ / mW of rounding), the board's gaps as they are; state and clock stay
// with the board.
func apportion(b *gpuBatches, inst MIGInstance) *gpuBatches {
	scale := func(src schemas.PowerBatch) schemas.PowerBatch {
		out := schemas.PowerBatch{Origin: schemas.Origin{Host: src.Host, Source: src.Source + ApportionedSuffix}, Device: inst.ID,
			Samples: make([]schemas.PowerSample, len(src.Samples))}
		for k, s := range src.Samples {
			out.Samples[k] = schemas.PowerSample{TS: s.TS, Power: schemas.Power(math.Round(float64(s.Power) * inst.Share))}
		}
		return out
	}
	a := &gpuBatches{power: scale(b.power), instant: scale(b.instant)}
	a.energy = schemas.EnergyBatch{Origin: schemas.Origin{Host: b.energy.Host, Source: b.energy.Source + ApportionedSuffix}, Device: inst.ID,
		Readings: make([]schemas.EnergyReading, len(b.energy.Readings))}
	for k, r := range b.energy.Readings {
		r.Energy = schemas.Energy(math.Round(float64(r.Energy) * inst.Share))
		a.energy.Readings[k] = r
	}
	a.gaps = schemas.GapBatch{Origin: schemas.Origin{Host: b.gaps.Host, Source: b.gaps.Source + ApportionedSuffix}, Device: inst.ID, Gaps: b.gaps.Gaps}
	return a
}

// threadCPU is the CPU time of the calling OS thread (Linux
// RUSAGE_THREAD); the collector's goroutine is locked to its thread.
func threadCPU() time.Duration {
	const rusageThread = 1
	var ru syscall.Rusage
	if syscall.Getrusage(rusageThread, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var _ collectors.Collector = (*Collector)(nil)
