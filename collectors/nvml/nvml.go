// Package nvml collects GPU power, energy and state through NVML
// (go-nvml's nvml.Interface, so tests inject pkg/nvml/mock fakes).
//
// What it reads, and why (see shared/docs/gpu-power-facts.md):
//   - the cumulative energy counter, about once a second, stamped before and
//     after the ~3 ms call: the ground truth for every energy figure;
//   - the driver's power buffer (a sample every ~20 ms, ~2.4 s deep) with
//     GetSamples(TOTAL_POWER_SAMPLES, lastSeen), about once a second, keeping
//     the driver's own timestamps; a hole longer than the buffer or a failed
//     call is published as a gap, never filled;
//   - where the buffer is unsupported, field 186 (instant power) at 10 Hz,
//     labelled nvml.instant (lower quality: a 25 ms window per 100 ms);
//   - device state (clocks, temperature, utilisation, memory, throttle
//     reasons, power limit, pstate) at a few Hz.
//
// GetPowerUsage is never used for energy: on Hopper it is a 1 s average.
// Symbols are checked with Extensions().LookupSymbol before use, so an old
// driver degrades instead of crashing.
package nvml

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/llm-energy-measure/lem/schemas"
)

// Source labels (defined in schemas, where analytics reads them too).
const (
	SourceCounter        = schemas.SourceNVMLCounter
	SourceCounterAligned = schemas.SourceNVMLCounterAligned // read at its refresh (ReadEnergyAligned)
	SourceBuffer         = schemas.SourceNVMLBuffer
	SourceInstant        = schemas.SourceNVMLInstant
	SourceState          = schemas.SourceNVMLState
	ApportionedSuffix    = schemas.ApportionedSuffix
)

// FieldPowerInstant is NVML_FI_DEV_POWER_INSTANT.
const FieldPowerInstant = 186

// bufferPeriod is the driver's power-buffer sample period; a hole longer
// than gapFactor periods between consecutive samples is reported as a gap.
const (
	bufferPeriod = 20 * time.Millisecond
	gapFactor    = 3
)

// GPU is one device being collected.
type GPU struct {
	dev nvml.Device
	ID  schemas.Device
	// Capabilities found at open.
	HasCounter, HasBuffer, HasInstant bool

	lastBufferTS uint64 // driver µs of the newest buffer sample seen
	lastEnergy   uint64 // mJ
	haveEnergy   bool
	// offset maps driver µs timestamps to host ns: host = driver*1000 + offset.
	offset int64
	clock  clockSync
	// Refresh tracks the energy counter's refresh grid (aligned reads).
	Refresh refreshGrid
	// Instances are the MIG instances of a board in MIG mode, each with its
	// share of the board's power.
	Instances []MIGInstance
}

// MIGInstance is one MIG device of a board. Power and energy exist per
// board only; an instance is given Share of them (its SMs over the SMs of
// all the board's instances, so the shares of a board add up to 1).
type MIGInstance struct {
	ID    schemas.Device
	Share float64
}

// Inventory is the software and hardware description published with runs.
type Inventory struct {
	Driver     string    `json:"driver"`
	NVML       string    `json:"nvml"`
	CUDADriver int       `json:"cuda_driver"`
	GPUs       []GPUInfo `json:"gpus"`
}

// GPUInfo describes one device.
type GPUInfo struct {
	Index     uint32 `json:"index"`
	UUID      string `json:"uuid"`
	Name      string `json:"name"`
	PCIBusID  string `json:"pci_bus_id"`
	MIGMode   bool   `json:"mig_mode"`
	MIGParent string `json:"mig_parent,omitempty"`
	Buffer    bool   `json:"power_buffer"`
	Counter   bool   `json:"energy_counter"`
	// MIG lists the instances of a board in MIG mode.
	MIG      []MIGInfo `json:"mig_instances,omitempty"`
	MIGError string    `json:"mig_error,omitempty"`
}

// MIGInfo describes one MIG instance.
type MIGInfo struct {
	UUID            string  `json:"uuid"`
	Name            string  `json:"name"`
	GPUInstance     int     `json:"gpu_instance_id"`
	ComputeInstance int     `json:"compute_instance_id"`
	SMs             uint32  `json:"multiprocessors"`
	Slices          uint32  `json:"gpu_instance_slices"`
	MemoryMB        uint64  `json:"memory_mb"`
	Share           float64 `json:"power_share"`
}

// Reader holds the opened library and devices.
type Reader struct {
	lib  nvml.Interface
	Host string
	GPUs []*GPU
	Inv  Inventory
	now  func() int64
	// sleep waits on the same clock as now (tests replace both).
	sleep func(time.Duration)
}

func nvErr(what string, r nvml.Return) error {
	return fmt.Errorf("nvml %s: %s", what, nvml.ErrorString(r))
}

// Open initialises NVML and enumerates devices. indices selects devices
// (nil: all). now returns host time in ns (nil: time.Now).
func Open(lib nvml.Interface, host string, indices []int, now func() int64) (*Reader, error) {
	if now == nil {
		now = func() int64 { return time.Now().UnixNano() }
	}
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, nvErr("init", r)
	}
	rd := &Reader{lib: lib, Host: host, now: now, sleep: time.Sleep}
	rd.Inv.Driver, _ = lib.SystemGetDriverVersion()
	rd.Inv.NVML, _ = lib.SystemGetNVMLVersion()
	rd.Inv.CUDADriver, _ = lib.SystemGetCudaDriverVersion()
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, nvErr("device count", r)
	}
	want := map[int]bool{}
	for _, i := range indices {
		if i < 0 || i >= n {
			return nil, fmt.Errorf("nvml: no device %d (have %d)", i, n)
		}
		want[i] = true
	}
	ext := lib.Extensions()
	has := func(sym string) bool { return ext.LookupSymbol(sym) == nil }
	for i := 0; i < n; i++ {
		if len(want) > 0 && !want[i] {
			continue
		}
		dev, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return nil, nvErr(fmt.Sprintf("device %d", i), r)
		}
		g := &GPU{dev: dev, HasCounter: has("nvmlDeviceGetTotalEnergyConsumption"),
			HasBuffer: has("nvmlDeviceGetSamples"), HasInstant: has("nvmlDeviceGetFieldValues")}
		g.ID.Index = uint32(i)
		if g.ID.UUID, r = dev.GetUUID(); r != nvml.SUCCESS {
			return nil, nvErr(fmt.Sprintf("device %d uuid", i), r)
		}
		g.ID.Name, _ = dev.GetName()
		info := GPUInfo{Index: uint32(i), UUID: g.ID.UUID, Name: g.ID.Name, Buffer: g.HasBuffer, Counter: g.HasCounter}
		if pci, r := dev.GetPciInfo(); r == nvml.SUCCESS {
			info.PCIBusID = cString(pci.BusId[:])
		}
		if cur, _, r := dev.GetMigMode(); r == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
			// Power exists per board only: MIG instances share this device's
			// figures and per-instance energy must be apportioned.
			info.MIGMode = true
			// A driver that cannot enumerate them still gets the board
			// measured; the inventory says why the instances are missing.
			if mi, err := migInstances(dev, g); err != nil {
				info.MIGError = err.Error()
			} else {
				info.MIG = mi
			}
		}
		rd.Inv.GPUs = append(rd.Inv.GPUs, info)
		rd.GPUs = append(rd.GPUs, g)
	}
	return rd, nil
}

// migInstances enumerates the MIG devices of board dev and gives each its
// share of the board's power by SM count.
func migInstances(dev nvml.Device, g *GPU) ([]MIGInfo, error) {
	n, r := dev.GetMaxMigDeviceCount()
	if r != nvml.SUCCESS {
		return nil, nvErr("MIG device count", r)
	}
	var out []MIGInfo
	var total uint32
	for j := 0; j < n; j++ {
		mig, r := dev.GetMigDeviceHandleByIndex(j)
		if r == nvml.ERROR_NOT_FOUND || r == nvml.ERROR_INVALID_ARGUMENT {
			continue // an empty slot
		}
		if r != nvml.SUCCESS {
			return nil, nvErr(fmt.Sprintf("MIG device %d", j), r)
		}
		var m MIGInfo
		if m.UUID, r = mig.GetUUID(); r != nvml.SUCCESS {
			return nil, nvErr(fmt.Sprintf("MIG device %d uuid", j), r)
		}
		a, r := mig.GetAttributes()
		if r != nvml.SUCCESS {
			return nil, nvErr(fmt.Sprintf("MIG device %d attributes", j), r)
		}
		m.Name, _ = mig.GetName()
		m.GPUInstance, _ = mig.GetGpuInstanceId()
		m.ComputeInstance, _ = mig.GetComputeInstanceId()
		m.SMs, m.Slices, m.MemoryMB = a.MultiprocessorCount, a.GpuInstanceSliceCount, a.MemorySizeMB
		total += m.SMs
		out = append(out, m)
	}
	g.Instances = nil
	for k := range out {
		if total > 0 {
			out[k].Share = float64(out[k].SMs) / float64(total)
		}
		g.Instances = append(g.Instances, MIGInstance{
			ID:    schemas.Device{Index: g.ID.Index, UUID: out[k].UUID, Name: out[k].Name, MIGParent: g.ID.UUID},
			Share: out[k].Share})
	}
	return out, nil
}

// Close shuts NVML down.
func (rd *Reader) Close() error {
	if r := rd.lib.Shutdown(); r != nvml.SUCCESS {
		return nvErr("shutdown", r)
	}
	return nil
}

func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// ReadEnergy reads the energy counter of g into b (appending one reading).
func (rd *Reader) ReadEnergy(g *GPU, b *schemas.EnergyBatch) error {
	if !g.HasCounter {
		return nil
	}
	before := rd.now()
	mj, r := g.dev.GetTotalEnergyConsumption()
	after := rd.now()
	if r != nvml.SUCCESS {
		return nvErr("energy counter", r)
	}
	reset := g.haveEnergy && mj < g.lastEnergy
	g.lastEnergy, g.haveEnergy = mj, true
	b.Readings = append(b.Readings, schemas.EnergyReading{TSBefore: before, TSAfter: after,
		Energy: schemas.Energy(mj) * schemas.Millijoule, Reset: reset})
	return nil
}

// ReadBuffer appends the driver's power samples newer than the last seen
// to pb, and any hole to gb. The first call only takes what the buffer
// holds (up to ~2.4 s of history). Every call that returns samples also
// bounds the driver-to-host clock offset (clockSync).
func (rd *Reader) ReadBuffer(g *GPU, pb *schemas.PowerBatch, gb *schemas.GapBatch) error {
	if !g.HasBuffer {
		return nil
	}
	before := rd.now()
	vt, samples, r := g.dev.GetSamples(nvml.TOTAL_POWER_SAMPLES, g.lastBufferTS)
	now := rd.now()
	switch r {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_FOUND: // no sample newer than lastBufferTS
		return nil
	default:
		if g.lastBufferTS != 0 {
			gb.Gaps = append(gb.Gaps, schemas.Gap{From: rd.hostTS(g, g.lastBufferTS) + int64(bufferPeriod), To: now,
				Reason: "GetSamples failed: " + nvml.ErrorString(r)})
		}
		return nvErr("power samples", r)
	}
	newest, oldestNew := uint64(0), uint64(0)
	for _, s := range samples {
		newest = max(newest, s.TimeStamp)
		if s.TimeStamp > g.lastBufferTS && (oldestNew == 0 || s.TimeStamp < oldestNew) {
			oldestNew = s.TimeStamp
		}
	}
	if oldestNew == 0 {
		return nil // only the repeated boundary sample
	}
	g.clock.observe(before, now, oldestNew, newest)
	if est, ok := g.clock.estimate(now); ok {
		g.offset = est.Applied
	}
	prev := g.lastBufferTS
	for _, s := range samples {
		if s.TimeStamp <= g.lastBufferTS {
			continue // the driver may repeat the boundary sample
		}
		if prev != 0 && s.TimeStamp-prev > uint64(gapFactor*bufferPeriod/time.Microsecond) {
			reason := "sample hole"
			if s.TimeStamp-prev > uint64(2*time.Second/time.Microsecond) {
				reason = "reader fell behind the driver buffer"
			}
			gb.Gaps = append(gb.Gaps, schemas.Gap{From: rd.hostTS(g, prev) + int64(bufferPeriod), To: rd.hostTS(g, s.TimeStamp), Reason: reason})
		}
		mw := sampleValue(vt, s.SampleValue)
		pb.Samples = append(pb.Samples, schemas.PowerSample{TS: rd.hostTS(g, s.TimeStamp), Power: schemas.Power(mw)})
		prev = s.TimeStamp
	}
	g.lastBufferTS = max(g.lastBufferTS, newest)
	return nil
}

func (rd *Reader) hostTS(g *GPU, driverUS uint64) int64 { return int64(driverUS)*1000 + g.offset }

// ClockOffset returns the offset applied to g's driver timestamps (ns).
func (g *GPU) ClockOffset() time.Duration { return time.Duration(g.offset) }

// Clock returns the current bounds on g's driver-to-host clock offset, as
// of host time now; ok is false before the buffer returned samples.
func (g *GPU) Clock(now int64) (schemas.ClockSample, bool) { return g.clock.estimate(now) }

func sampleValue(vt nvml.ValueType, v [8]byte) int64 {
	switch vt {
	case nvml.VALUE_TYPE_DOUBLE:
		return int64(math.Float64frombits(binary.LittleEndian.Uint64(v[:])))
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return int64(binary.LittleEndian.Uint32(v[:]))
	case nvml.VALUE_TYPE_SIGNED_INT:
		return int64(int32(binary.LittleEndian.Uint32(v[:])))
	default: // unsigned long, unsigned long long, signed long long
		return int64(binary.LittleEndian.Uint64(v[:]))
	}
}

// ReadInstant appends one instant-power reading (field 186) to pb: the
// fallback where the buffer is unsupported.
func (rd *Reader) ReadInstant(g *GPU, pb *schemas.PowerBatch) error {
	if !g.HasInstant {
		return nil
	}
	fv := []nvml.FieldValue{{FieldId: FieldPowerInstant}}
	if r := g.dev.GetFieldValues(fv); r != nvml.SUCCESS {
		return nvErr("instant power field", r)
	}
	if nvml.Return(fv[0].NvmlReturn) != nvml.SUCCESS {
		g.HasInstant = false // not supported by this board: stop asking
		return nvErr("instant power field", nvml.Return(fv[0].NvmlReturn))
	}
	ts := rd.now()
	if fv[0].Timestamp > 0 {
		ts = fv[0].Timestamp * 1000
	}
	pb.Samples = append(pb.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(sampleValue(nvml.ValueType(fv[0].ValueType), fv[0].Value))})
	return nil
}

// Settling returns g's power (GetPowerUsage: a 1 s average on Hopper) and
// temperature, for deciding when a device is back near idle between
// cycles. Never use it for energy.
func (rd *Reader) Settling(g *GPU) (watts, tempC float64, err error) {
	mw, r := g.dev.GetPowerUsage()
	if r != nvml.SUCCESS {
		return 0, 0, nvErr("power usage", r)
	}
	t, r := g.dev.GetTemperature(nvml.TEMPERATURE_GPU)
	if r != nvml.SUCCESS {
		return 0, 0, nvErr("temperature", r)
	}
	return float64(mw) / 1000, float64(t), nil
}

// ReadState appends one state sample of g to b. Readings the device does
// not support stay zero (pstate -1).
func (rd *Reader) ReadState(g *GPU, b *schemas.StateBatch) {
	s := schemas.StateSample{TS: rd.now(), PState: -1}
	d := g.dev
	if v, r := d.GetClockInfo(nvml.CLOCK_SM); r == nvml.SUCCESS {
		s.SMClock = v
	}
	if v, r := d.GetClockInfo(nvml.CLOCK_MEM); r == nvml.SUCCESS {
		s.MemClock = v
	}
	if v, r := d.GetTemperature(nvml.TEMPERATURE_GPU); r == nvml.SUCCESS {
		s.Temperature = int32(v)
	}
	if u, r := d.GetUtilizationRates(); r == nvml.SUCCESS {
		s.UtilGPU, s.UtilMem = min(u.Gpu, 100), min(u.Memory, 100)
	}
	if m, r := d.GetMemoryInfo(); r == nvml.SUCCESS {
		s.MemUsed = m.Used
	}
	if v, r := d.GetCurrentClocksEventReasons(); r == nvml.SUCCESS {
		s.ThrottleReasons = v
	}
	if v, r := d.GetEnforcedPowerLimit(); r == nvml.SUCCESS {
		s.PowerLimit = schemas.Power(v)
	}
	if v, r := d.GetPerformanceState(); r == nvml.SUCCESS {
		s.PState = int32(v)
	}
	b.Samples = append(b.Samples, s)
}
