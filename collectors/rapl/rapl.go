// Package rapl collects CPU package, core and DRAM energy from the Linux
// powercap interface (/sys/class/powercap/intel-rapl*), the source Kepler
// and Scaphandre use. Counters are in µJ and wrap at max_energy_range_uj;
// the collector unwraps them into a monotonic counter per domain and
// publishes them as energy readings (source "rapl"), one device per domain.
package rapl

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/llm-energy-measure/lem/collectors"
	"github.com/llm-energy-measure/lem/schemas"
)

// Source is the label of every RAPL event.
const Source = schemas.SourceRAPL

// ErrUnavailable is returned when the host exposes no RAPL domain (not an
// Intel/AMD host, a VM, or powercap not readable).
var ErrUnavailable = errors.New("rapl: no readable powercap domain (not supported here, or needs root)")

// Domain is one RAPL zone: a package, or a core/uncore/dram subzone.
type Domain struct {
	Path     string // sysfs directory
	Name     string // package-0, core, dram, ...
	Package  int
	MaxRange uint64 // µJ at which energy_uj wraps
	ID       schemas.Device

	last    uint64
	offset  uint64 // added wraps
	started bool
}

// Discover finds RAPL domains under root (normally /sys/class/powercap).
func Discover(root string, host string) ([]*Domain, error) {
	// /sys/class/powercap lists every zone and subzone as a top-level
	// entry (symlinks into /sys/devices): no walk needed.
	ents, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("rapl: %w", err)
	}
	var ds []*Domain
	for _, e := range ents {
		base := e.Name()
		zone, ok := strings.CutPrefix(base, "intel-rapl:")
		if !ok {
			if zone, ok = strings.CutPrefix(base, "amd-rapl:"); !ok {
				continue
			}
		}
		path := filepath.Join(root, base)
		name, err1 := readString(filepath.Join(path, "name"))
		maxR, err2 := readUint(filepath.Join(path, "max_energy_range_uj"))
		_, err3 := readUint(filepath.Join(path, "energy_uj"))
		if err1 != nil || err2 != nil || err3 != nil {
			continue // unreadable (often: energy_uj is root-only)
		}
		pkg, _ := strconv.Atoi(strings.Split(zone, ":")[0])
		ds = append(ds, &Domain{Path: path, Name: name, Package: pkg, MaxRange: maxR,
			ID: schemas.Device{UUID: fmt.Sprintf("rapl:%s:%s", host, zone), Name: "RAPL " + name}})
	}
	if len(ds) == 0 {
		return nil, ErrUnavailable
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Path < ds[j].Path })
	for i, d := range ds {
		d.ID.Index = uint32(i)
	}
	return ds, nil
}

func readString(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func readUint(p string) (uint64, error) {
	s, err := readString(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(s, 10, 64)
}

// Read returns the domain's unwrapped energy (µJ since the first read).
// A value below the previous one is a wrap of the hardware counter at
// MaxRange: the counter kept counting, so the range is added.
func (d *Domain) Read() (schemas.Energy, error) {
	v, err := readUint(filepath.Join(d.Path, "energy_uj"))
	if err != nil {
		return 0, fmt.Errorf("rapl %s: %w", d.Name, err)
	}
	if d.started && v < d.last {
		d.offset += d.MaxRange
	}
	d.last, d.started = v, true
	return schemas.Energy(v + d.offset), nil
}

// Config is the RAPL collector's configuration.
type Config struct {
	Root   string        `yaml:"root"`   // powercap root (/sys/class/powercap)
	Period time.Duration `yaml:"period"` // read and publish every counter this often (1 s)
}

// SampleConfig is sample.yaml: every setting with its default.
//
//go:embed sample.yaml
var SampleConfig string

// Build discovers the RAPL domains under c.Root and returns their
// collector; an error says why there are none (no powercap, no
// permission).
func Build(c Config, env collectors.Env) (collectors.Collector, error) {
	if c.Root == "" {
		c.Root = "/sys/class/powercap"
	}
	ds, err := Discover(c.Root, env.Host)
	if err != nil {
		return nil, err
	}
	return NewCollector(env.Host, ds, c.Period), nil
}

// Collector publishes every domain's counter once per Interval.
type Collector struct {
	Host     string
	Domains  []*Domain
	Interval time.Duration
	now      func() int64
}

// NewCollector returns a collector over domains (Interval default 1 s).
func NewCollector(host string, domains []*Domain, interval time.Duration) *Collector {
	if interval <= 0 {
		interval = time.Second
	}
	return &Collector{Host: host, Domains: domains, Interval: interval, now: func() int64 { return time.Now().UnixNano() }}
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return "rapl" }

// Run publishes until ctx ends.
func (c *Collector) Run(ctx context.Context, pub collectors.Publisher) error {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		if err := c.Tick(pub); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return c.Tick(pub)
		case <-t.C:
		}
	}
}

// Tick reads and publishes every domain once.
func (c *Collector) Tick(pub collectors.Publisher) error {
	for _, d := range c.Domains {
		before := c.now()
		e, err := d.Read()
		after := c.now()
		if err != nil {
			return err
		}
		b := &schemas.EnergyBatch{Origin: schemas.Origin{Host: c.Host, Source: Source}, Device: d.ID,
			Readings: []schemas.EnergyReading{{TSBefore: before, TSAfter: after, Energy: e}}}
		id := fmt.Sprintf("%s/%s/%d", Source, d.ID.UUID, before)
		if err := pub.Publish(schemas.DeviceSubject(schemas.KindEnergy, c.Host, d.ID.Index), id, b); err != nil {
			return err
		}
	}
	return nil
}

var _ collectors.Collector = (*Collector)(nil)
