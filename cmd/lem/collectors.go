package main

import (
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/collectors/nvml"
	"github.com/llm-energy-measure/lem/collectors/rapl"
	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/internal/progress"
)

// collectorConfig is the one collector configuration of `lem agent` (from
// its flags) and `lem run` (from the experiment's collectors: block).
type collectorConfig struct {
	GPU        string // nvml, sim (simulated, labelled) or none
	Devices    []int  // NVML indices (nil: all)
	SimDevices int    // simulated GPUs
	Seed       uint64
	// RAPL is the powercap root ("" : /sys/class/powercap; "off": none).
	RAPL           string
	Publish        time.Duration // read-and-publish period (1 s)
	Counter        time.Duration // shortest counter period (1 s)
	CounterBudget  float64       // CPU share per GPU (0.004)
	AlsoInstant    bool
	AlignedCounter *bool // nil: the collector's default (aligned)
	// AllowNoGPU keeps going with RAPL only when NVML cannot open (agent).
	AllowNoGPU bool
	// Capacity scales a simulated GPU's load: requests in flight /
	// Capacity (min 1).
	Capacity float64
}

// openedCollectors are the collectors of one process with what the
// experiment protocol needs of them.
type openedCollectors struct {
	collectors []collectors.Collector
	devices    []string // UUIDs of the GPUs
	inventory  map[string]any
	probe      experiment.Probe
	nvml       *nvml.Reader // nil without NVML
	inFlight   atomic.Pointer[func() int64]
	close      func()
}

// setInFlight gives a simulated GPU the count of requests in flight.
func (o *openedCollectors) setInFlight(f func() int64) { o.inFlight.Store(&f) }

// openCollectors builds the collectors c names on host.
func openCollectors(c collectorConfig, host string, log zerolog.Logger) (*openedCollectors, error) {
	o := &openedCollectors{inventory: map[string]any{}, close: func() {}}
	if c.Publish <= 0 {
		c.Publish = time.Second
	}
	env := collectors.Env{Host: host, Log: log}
	if c.RAPL != "off" {
		if col, err := rapl.Build(rapl.Config{Root: c.RAPL, Period: c.Publish}, env); err == nil {
			o.collectors = append(o.collectors, col)
			log.Info().Int("domains", len(col.(*rapl.Collector).Domains)).Msg("rapl: CPU/DRAM energy collected")
		} else {
			log.Info().Err(err).Msg("CPU/DRAM energy not collected")
		}
	}
	switch c.GPU {
	case "nvml":
		col, err := nvml.Build(nvml.Config{Devices: c.Devices, Publish: c.Publish, Counter: c.Counter, CounterBudget: c.CounterBudget,
			AlsoInstant: c.AlsoInstant, AlignedCounter: c.AlignedCounter}, env)
		switch {
		case err != nil && (!c.AllowNoGPU || len(o.collectors) == 0):
			return nil, fmt.Errorf("nvml: %w (use the simulated GPU, collectors.gpu: sim or -sim, to exercise the pipeline without one)", err)
		case err != nil:
			log.Warn().Err(err).Msg("no GPU collected; CPU/DRAM energy only")
			return o, nil
		}
		rd := col.(*nvml.Collector).Reader()
		o.nvml, o.close = rd, func() { rd.Close() }
		for _, g := range rd.GPUs {
			o.devices = append(o.devices, g.ID.UUID)
			log.Info().Uint32("index", g.ID.Index).Str("uuid", g.ID.UUID).Str("name", g.ID.Name).
				Bool("buffer", g.HasBuffer).Bool("counter", g.HasCounter).Msg("gpu")
		}
		o.inventory["nvml"] = rd.Inv
		o.collectors = append(o.collectors, col)
		o.probe = func() (float64, float64, bool) {
			var w, t float64
			for _, g := range rd.GPUs {
				gw, gt, err := rd.Settling(g)
				if err != nil {
					return 0, 0, false
				}
				w, t = w+gw, math.Max(t, gt)
			}
			return w, t, true
		}
	case "sim":
		capacity := math.Max(c.Capacity, 1)
		load := func(int, int64) float64 {
			f := o.inFlight.Load()
			if f == nil {
				return 0
			}
			return math.Min(1, float64((*f)())/capacity)
		}
		cfg := sim.Config{Devices: max(c.SimDevices, 1), Seed: c.Seed, Publish: c.Publish, Load: load}
		if c.Capacity <= 0 {
			cfg.Load = nil // the simulator's own script (lem agent -sim)
		}
		col, err := sim.Build(cfg, env)
		if err != nil {
			return nil, err
		}
		s := col.(*sim.Sim)
		o.collectors = append(o.collectors, s)
		for _, d := range s.Devices() {
			o.devices = append(o.devices, d.UUID)
		}
		o.inventory["gpu"] = "simulated (not a measurement)"
		o.probe = func() (float64, float64, bool) {
			var w float64
			for i := range s.Devices() {
				w += s.Power(i)
			}
			return w, math.NaN(), true // the simulator has no temperature
		}
	case "none", "":
	default:
		return nil, fmt.Errorf("collectors.gpu: unknown %q (nvml, sim or none)", c.GPU)
	}
	return o, nil
}

// progressDisplay shows the protocol's progress events: a log line when a
// phase ends, with its duration, and a progress bar per measured cycle.
func progressDisplay(w io.Writer, log zerolog.Logger, quiet bool) func(experiment.Progress) {
	var mu sync.Mutex
	var bar *progress.Bar
	return func(p experiment.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.Phase == experiment.PhaseCycle {
			switch {
			case p.End:
				if bar != nil {
					bar.Done()
					bar = nil
				}
				log.Info().Str("run", p.Run).Int("cycle", p.Cycle+1).Int("of", p.Cycles).Dur("took", p.Elapsed.Round(time.Millisecond)).
					Int("requests", p.Total).Int("failed", p.Failed).Msg("cycle done")
			case bar == nil:
				bar = progress.New(w, fmt.Sprintf("cycle %d/%d %s", p.Cycle+1, p.Cycles, p.Run), int64(p.Total), quiet)
			default:
				bar.Set(int64(p.Done), fmt.Sprintf("%d failed", p.Failed))
			}
			return
		}
		if p.End {
			log.Info().Str("phase", string(p.Phase)).Dur("took", p.Elapsed.Round(time.Millisecond)).Msg("phase done")
		}
	}
}
