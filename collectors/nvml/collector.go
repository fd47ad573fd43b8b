package nvml

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/schemas"
)

// Config sets the cadences. Zero values take the defaults.
type Config struct {
	Publish time.Duration // read the buffer and publish: 1 s
	// Counter is the shortest energy-counter read period (1 s). The
	// counter changes every ~100 ms; 100 ms gives its full resolution
	// (validation). A read busy-waits in the driver (7.75 ms of CPU per call
	// on average on an H200, docs/validation/nvml-h200.md), so the period
	// stretches until reads cost at most CounterBudget of one core.
	Counter time.Duration
	// CounterBudget is the share of one core that counter reads may use,
	// per GPU (0.003 = 0.3%; negative: no limit).
	CounterBudget float64
	Instant       time.Duration // instant-power fallback period: 100 ms
	State         time.Duration // device state period: 500 ms
	// AlsoInstant reads instant power at 10 Hz even where the buffer works,
	// to compare the two (validation).
	AlsoInstant bool
}

func (c Config) withDefaults() Config {
	if c.Publish <= 0 {
		c.Publish = time.Second
	}
	if c.Counter <= 0 {
		c.Counter = time.Second
	}
	if c.CounterBudget == 0 {
		c.CounterBudget = 0.003
	}
	if c.Instant <= 0 {
		c.Instant = 100 * time.Millisecond
	}
	if c.State <= 0 {
		c.State = 500 * time.Millisecond
	}
	return c
}

// Collector publishes the events of every opened GPU.
type Collector struct {
	rd  *Reader
	cfg Config
	log zerolog.Logger
	st  []gpuBatches
	// costEWMA is the smoothed duration of one counter read (ns).
	costEWMA float64
}

type gpuBatches struct {
	power, instant schemas.PowerBatch
	energy         schemas.EnergyBatch
	state          schemas.StateBatch
	gaps           schemas.GapBatch
}

// NewCollector wraps an opened Reader.
func NewCollector(rd *Reader, cfg Config, log zerolog.Logger) *Collector {
	c := &Collector{rd: rd, cfg: cfg.withDefaults(), log: log, st: make([]gpuBatches, len(rd.GPUs))}
	for i, g := range rd.GPUs {
		b := &c.st[i]
		b.power = schemas.PowerBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceBuffer}, Device: g.ID}
		b.instant = schemas.PowerBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceInstant}, Device: g.ID}
		b.energy = schemas.EnergyBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceCounter}, Device: g.ID}
		b.state = schemas.StateBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceState}, Device: g.ID}
		b.gaps = schemas.GapBatch{Origin: schemas.Origin{Host: rd.Host, Source: SourceBuffer}, Device: g.ID}
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

// Run polls until ctx ends, then publishes what it holds.
func (c *Collector) Run(ctx context.Context, pub collectors.Publisher) error {
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
			ctrT.Reset(c.counterPeriod(c.readCounters()))
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

// readCounters reads every GPU's counter and returns the mean duration of
// one read.
func (c *Collector) readCounters() time.Duration {
	var total time.Duration
	for i, g := range c.rd.GPUs {
		start := time.Now()
		if err := c.rd.ReadEnergy(g, &c.st[i].energy); err != nil {
			c.log.Warn().Err(err).Str("gpu", g.ID.UUID).Msg("energy counter read failed")
		}
		total += time.Since(start)
	}
	if len(c.rd.GPUs) == 0 {
		return 0
	}
	return total / time.Duration(len(c.rd.GPUs))
}

// counterPeriod returns the next counter period given the last read's
// cost, smoothed: at least cfg.Counter, long enough that reads stay within
// CounterBudget of a core, at most 10 s (the buffer calibration needs the
// counter, not its frequency: longer intervals lose no time resolution).
func (c *Collector) counterPeriod(cost time.Duration) time.Duration {
	if c.costEWMA == 0 {
		c.costEWMA = float64(cost)
	} else {
		c.costEWMA = 0.8*c.costEWMA + 0.2*float64(cost)
	}
	p := c.cfg.Counter
	if c.cfg.CounterBudget > 0 {
		p = max(p, time.Duration(c.costEWMA/c.cfg.CounterBudget))
	}
	return min(p, 10*time.Second)
}

// Tick reads every GPU's buffer once (and the counters, at start and end).
func (c *Collector) Tick() {
	for i, g := range c.rd.GPUs {
		b := &c.st[i]
		if err := c.rd.ReadBuffer(g, &b.power, &b.gaps); err != nil {
			c.log.Warn().Err(err).Str("gpu", g.ID.UUID).Msg("power buffer read failed")
		}
	}
}

// Flush publishes and empties every held batch.
func (c *Collector) Flush(pub collectors.Publisher) error {
	for i, g := range c.rd.GPUs {
		b := &c.st[i]
		send := func(k schemas.Kind, tag string, first int64, ev schemas.Event) error {
			id := fmt.Sprintf("%s/%s/%d", tag, g.ID.UUID, first)
			return pub.Publish(schemas.DeviceSubject(k, c.rd.Host, g.ID.Index), id, ev)
		}
		var err error
		if n := len(b.power.Samples); n > 0 {
			err = send(schemas.KindPower, SourceBuffer, b.power.Samples[0].TS, &b.power)
		}
		if n := len(b.instant.Samples); err == nil && n > 0 {
			err = send(schemas.KindPower, SourceInstant, b.instant.Samples[0].TS, &b.instant)
		}
		if n := len(b.energy.Readings); err == nil && n > 0 {
			err = send(schemas.KindEnergy, SourceCounter, b.energy.Readings[0].TSBefore, &b.energy)
		}
		if n := len(b.state.Samples); err == nil && n > 0 {
			err = send(schemas.KindState, SourceState, b.state.Samples[0].TS, &b.state)
		}
		if n := len(b.gaps.Gaps); err == nil && n > 0 {
			err = send(schemas.KindGap, "gap", b.gaps.Gaps[0].From, &b.gaps)
		}
		if err != nil {
			return err // batches kept: the next Flush retries them
		}
		b.power.Samples, b.instant.Samples = b.power.Samples[:0], b.instant.Samples[:0]
		b.energy.Readings, b.state.Samples, b.gaps.Gaps = b.energy.Readings[:0], b.state.Samples[:0], b.gaps.Gaps[:0]
	}
	return nil
}

var _ collectors.Collector = (*Collector)(nil)
