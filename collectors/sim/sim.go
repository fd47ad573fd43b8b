// Package sim is a simulated power source shaped like the H200 trace in
// shared/data/h200-trace: idle near 83 W, bursts up to ~690 W, a tail that
// stays elevated for seconds after load stops, and 20 ms samples. Every
// event it emits carries source "sim", so it can never pass for a
// measurement. It is deterministic for a given seed and load function.
//
// It emits the same event kinds as the NVML collector: power batches of
// 20 ms samples (one message per device-second), and an energy counter
// that refreshes every 100 ms and is exactly the integral of the samples
// (sample-and-hold), read once a second.
package sim

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/schemas"
)

// Source is the label on every event of this package.
const Source = schemas.SourceSim

// LoadFunc returns the device's utilisation in [0, 1] at time ts (ns).
type LoadFunc func(device int, ts int64) float64

// Config shapes the simulated devices. Zero fields take H200-like defaults.
type Config struct {
	Host    string        `yaml:"-"` // from collectors.Env
	Devices int           `yaml:"devices"`
	Seed    uint64        `yaml:"seed"`
	IdleW   float64       `yaml:"idle_w"`   // settled idle power (83 W)
	PeakW   float64       `yaml:"peak_w"`   // power at full load, tail excluded (640 W)
	TailW   float64       `yaml:"tail_w"`   // extra power the tail reaches under sustained load (45 W)
	TailTau time.Duration `yaml:"tail_tau"` // time constant of the tail (3 s)
	NoiseW  float64       `yaml:"noise_w"`  // standard deviation of sample noise (1.5 W)
	Sample  time.Duration `yaml:"sample"`   // sample period (20 ms, the driver buffer's)
	Counter time.Duration `yaml:"counter"`  // counter refresh period (100 ms)
	Publish time.Duration `yaml:"publish"`  // one message per device per Publish (1 s)
	// Load drives the dynamic power; nil uses Script.
	Load LoadFunc `yaml:"-"`
}

// SampleConfig is sample.yaml: every setting with its default.
//
//go:embed sample.yaml
var SampleConfig string

// Build returns the simulator of c on env.Host, starting now.
func Build(c Config, env collectors.Env) (collectors.Collector, error) {
	c.Host = env.Host
	return New(c, time.Now()), nil
}

func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = "sim-host"
	}
	if c.Devices <= 0 {
		c.Devices = 1
	}
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.IdleW, 83)
	def(&c.PeakW, 640)
	def(&c.TailW, 45)
	def(&c.NoiseW, 1.5)
	if c.TailTau == 0 {
		c.TailTau = 3 * time.Second
	}
	if c.Sample == 0 {
		c.Sample = 20 * time.Millisecond
	}
	if c.Counter == 0 {
		c.Counter = 100 * time.Millisecond
	}
	if c.Publish == 0 {
		c.Publish = time.Second
	}
	if c.Load == nil {
		c.Load = Script
	}
	return c
}

// Script is the default load: a 30 s loop shaped like the H200 trace —
// idle 3 s, full burst 4 s, idle 2 s, prefill-like 4 s at 95%, idle 1 s,
// decode-like 14 s at 8%, idle 2 s.
func Script(_ int, ts int64) float64 {
	t := time.Duration(ts % int64(30*time.Second))
	switch {
	case t < 3*time.Second:
		return 0
	case t < 7*time.Second:
		return 1
	case t < 9*time.Second:
		return 0
	case t < 13*time.Second:
		return 0.95
	case t < 14*time.Second:
		return 0
	case t < 28*time.Second:
		return 0.08
	}
	return 0
}

// device is the simulation state of one device.
type device struct {
	id      schemas.Device
	rng     *rand.Rand
	next    int64   // time of the next sample
	tail    float64 // current tail power, W
	power   schemas.Power
	energy  float64 // exact integral so far, µJ (sample-and-hold)
	counter schemas.Energy
	nextCtr int64         // next counter refresh
	last    atomic.Uint64 // float64 bits of the latest power, W (read by Power)
}

// Sim generates the events of cfg.Devices simulated GPUs.
type Sim struct {
	cfg  Config
	devs []*device
	pb   schemas.PowerBatch
	eb   schemas.EnergyBatch
}

// New returns a simulator whose first sample is at start.
func New(cfg Config, start time.Time) *Sim {
	cfg = cfg.withDefaults()
	s := &Sim{cfg: cfg}
	t0 := start.UnixNano()
	for i := 0; i < cfg.Devices; i++ {
		s.devs = append(s.devs, &device{
			id: schemas.Device{Index: uint32(i), UUID: fmt.Sprintf("SIM-%s-%d", schemas.SubjectToken(cfg.Host), i),
				Name: "Simulated H200 (not a measurement)"},
			rng:     rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)),
			next:    t0,
			nextCtr: t0 + int64(cfg.Counter),
		})
	}
	return s
}

// Devices returns the simulated device identities.
func (s *Sim) Devices() []schemas.Device {
	out := make([]schemas.Device, len(s.devs))
	for i, d := range s.devs {
		out[i] = d.id
	}
	return out
}

// TrueEnergy returns the exact energy device i has drawn since start,
// including the sample in progress up to its last sample time.
func (s *Sim) TrueEnergy(i int) schemas.Energy { return schemas.Energy(s.devs[i].energy) }

// Name implements collectors.Collector.
func (s *Sim) Name() string { return "sim" }

// Power returns device i's latest simulated power (W); safe to call while
// Run is publishing.
func (s *Sim) Power(i int) float64 { return math.Float64frombits(s.devs[i].last.Load()) }

// Advance generates samples of device i up to (excluding) until and returns
// the power batch and the counter readings taken at each counter refresh.
// The returned batches are reused by the next call.
func (s *Sim) Advance(i int, until int64) (*schemas.PowerBatch, *schemas.EnergyBatch) {
	d := s.devs[i]
	c := &s.cfg
	s.pb = schemas.PowerBatch{Origin: schemas.Origin{Host: c.Host, Source: Source}, Device: d.id, Samples: s.pb.Samples[:0]}
	s.eb = schemas.EnergyBatch{Origin: schemas.Origin{Host: c.Host, Source: Source}, Device: d.id, Readings: s.eb.Readings[:0]}
	dt := int64(c.Sample)
	decay := math.Exp(-float64(dt) / float64(c.TailTau))
	for d.next < until {
		load := math.Min(1, math.Max(0, c.Load(i, d.next)))
		// The tail charges toward TailW*load and relaxes with TailTau.
		d.tail = d.tail*decay + c.TailW*load*(1-decay)
		w := c.IdleW + (c.PeakW-c.IdleW)*load + d.tail + d.rng.NormFloat64()*c.NoiseW
		d.power = schemas.PowerFromWatts(math.Max(w, 0))
		d.last.Store(math.Float64bits(math.Max(w, 0)))
		s.pb.Samples = append(s.pb.Samples, schemas.PowerSample{TS: d.next, Power: d.power})
		// Sample-and-hold integral, and counter refreshes inside it.
		end := d.next + dt
		for d.nextCtr <= end {
			part := float64(d.power) * float64(d.nextCtr-d.next) / 1e6
			d.counter = schemas.Energy(d.energy + part)
			s.eb.Readings = append(s.eb.Readings, schemas.EnergyReading{TSBefore: d.nextCtr, TSAfter: d.nextCtr, Energy: d.counter})
			d.nextCtr += int64(c.Counter)
		}
		d.energy += float64(d.power) * float64(dt) / 1e6
		d.next = end
	}
	return &s.pb, &s.eb
}

// Run publishes in real time: every Publish period, one power batch and one
// energy batch per device covering the period just ended.
func (s *Sim) Run(ctx context.Context, pub collectors.Publisher) error {
	tick := time.NewTicker(s.cfg.Publish)
	defer tick.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			now = time.Now()
		case now = <-tick.C:
		}
		if err := s.PublishUntil(pub, now.UnixNano()); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// PublishUntil generates and publishes every device's events up to until.
func (s *Sim) PublishUntil(pub collectors.Publisher, until int64) error {
	for i, d := range s.devs {
		first := d.next
		pb, eb := s.Advance(i, until)
		if len(pb.Samples) > 0 {
			id := fmt.Sprintf("%s/%s/p/%d", Source, d.id.UUID, first)
			if err := pub.Publish(schemas.DeviceSubject(schemas.KindPower, s.cfg.Host, d.id.Index), id, pb); err != nil {
				return err
			}
		}
		if len(eb.Readings) > 0 {
			id := fmt.Sprintf("%s/%s/e/%d", Source, d.id.UUID, eb.Readings[0].TSBefore)
			if err := pub.Publish(schemas.DeviceSubject(schemas.KindEnergy, s.cfg.Host, d.id.Index), id, eb); err != nil {
				return err
			}
		}
	}
	return nil
}

var _ collectors.Collector = (*Sim)(nil)
