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

// Source labels.
const (
	SourceCounter = "nvml.counter"
	SourceBuffer  = "nvml.buffer"
	SourceInstant = "nvml.instant"
	SourceState   = "nvml.state"
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
}

// Reader holds the opened library and devices.
type Reader struct {
	lib  nvml.Interface
	Host string
	GPUs []*GPU
	Inv  Inventory
	now  func() int64
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
	rd := &Reader{lib: lib, Host: host, now: now}
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
		}
		rd.Inv.GPUs = append(rd.Inv.GPUs, info)
		rd.GPUs = append(rd.GPUs, g)
	}
	return rd, nil
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
// holds (up to ~2.4 s of history).
func (rd *Reader) ReadBuffer(g *GPU, pb *schemas.PowerBatch, gb *schemas.GapBatch) error {
	if !g.HasBuffer {
		return nil
	}
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
	if len(samples) == 0 {
		return nil
	}
	newest := samples[0].TimeStamp
	for _, s := range samples {
		newest = max(newest, s.TimeStamp)
	}
	rd.updateOffset(g, newest, now)
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

// updateOffset maps driver µs stamps onto the host clock. The driver stamps
// in host wall-clock µs on current drivers (offset ~0); when the newest
// sample is further than a second from the host time, a constant offset is
// estimated so the samples still align with token events.
func (rd *Reader) updateOffset(g *GPU, newest uint64, now int64) {
	d := now - int64(newest)*1000
	if d > int64(time.Second) || d < -int64(time.Second) {
		g.offset = d - int64(bufferPeriod)/2
	} else {
		g.offset = 0
	}
}

func (rd *Reader) hostTS(g *GPU, driverUS uint64) int64 { return int64(driverUS)*1000 + g.offset }

// ClockOffset returns the offset applied to g's driver timestamps (ns).
func (g *GPU) ClockOffset() time.Duration { return time.Duration(g.offset) }

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
