package nvml

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/schemas"
)

// fakeDriver imitates the driver's power ring buffer (a sample every 20 ms,
// 119 deep) and energy counter on top of go-nvml's DGX H100 mock.
type fakeDriver struct {
	nowUS   uint64 // driver and host clock, µs
	ring    []nvml.Sample
	energy  uint64 // mJ
	power   uint32 // mW, constant unless changed
	failGet bool
}

func (f *fakeDriver) advance(us uint64) {
	for t := f.nowUS + 20_000; t <= f.nowUS+us; t += 20_000 {
		var v [8]byte
		binary.LittleEndian.PutUint32(v[:], f.power)
		f.ring = append(f.ring, nvml.Sample{TimeStamp: t, SampleValue: v})
		if len(f.ring) > 119 {
			f.ring = f.ring[1:]
		}
		f.energy += uint64(f.power) * 20 / 1000
	}
	f.nowUS += us
}

func newServer(t *testing.T, f *fakeDriver) *server.Server {
	s := dgxh100.New()
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return f.energy, nvml.SUCCESS }
		dev.GetSamplesFunc = func(st nvml.SamplingType, last uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
			if st != nvml.TOTAL_POWER_SAMPLES {
				t.Errorf("sampling type %v", st)
			}
			if f.failGet {
				return 0, nil, nvml.ERROR_UNKNOWN
			}
			var out []nvml.Sample
			for _, s := range f.ring {
				if s.TimeStamp > last {
					out = append(out, s)
				}
			}
			if len(out) == 0 {
				return 0, nil, nvml.ERROR_NOT_FOUND
			}
			return nvml.VALUE_TYPE_UNSIGNED_INT, out, nvml.SUCCESS
		}
		dev.GetFieldValuesFunc = func(fv []nvml.FieldValue) nvml.Return {
			for i := range fv {
				fv[i].ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
				binary.LittleEndian.PutUint32(fv[i].Value[:], f.power)
				fv[i].Timestamp = int64(f.nowUS)
			}
			return nvml.SUCCESS
		}
		dev.GetClockInfoFunc = func(c nvml.ClockType) (uint32, nvml.Return) {
			return map[nvml.ClockType]uint32{nvml.CLOCK_SM: 1980, nvml.CLOCK_MEM: 2619}[c], nvml.SUCCESS
		}
		dev.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 41, nvml.SUCCESS }
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 97, Memory: 40}, nvml.SUCCESS }
		dev.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0x4, nvml.SUCCESS }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700_000, nvml.SUCCESS }
		dev.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.PSTATE_0, nvml.SUCCESS }
	}
	return s
}

func open(t *testing.T, s *server.Server, f *fakeDriver) *Reader {
	t.Helper()
	rd, err := Open(s, "h", []int{0}, func() int64 { return int64(f.nowUS) * 1000 })
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func TestBufferCapturesEverySample(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000}
	rd := open(t, newServer(t, f), f)
	g := rd.GPUs[0]
	var pb schemas.PowerBatch
	var gb schemas.GapBatch
	f.advance(1_000_000)
	for i := 0; i < 10; i++ {
		if err := rd.ReadBuffer(g, &pb, &gb); err != nil {
			t.Fatal(err)
		}
		f.advance(1_000_000) // read once a second: inside the 2.4 s buffer
	}
	if err := rd.ReadBuffer(g, &pb, &gb); err != nil {
		t.Fatal(err)
	}
	if len(pb.Samples) != 550 || len(gb.Gaps) != 0 {
		t.Fatalf("%d samples, %d gaps; want 550 samples (11 s at 50 Hz), no gap", len(pb.Samples), len(gb.Gaps))
	}
	for i := 1; i < len(pb.Samples); i++ {
		if pb.Samples[i].TS-pb.Samples[i-1].TS != 20e6 {
			t.Fatalf("sample %d not 20 ms after its predecessor", i)
		}
	}
	if g.ClockOffset() != 0 {
		t.Fatalf("offset %v on a driver stamping host time", g.ClockOffset())
	}
}

func TestBufferOverrunIsAGap(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000}
	rd := open(t, newServer(t, f), f)
	g := rd.GPUs[0]
	var pb schemas.PowerBatch
	var gb schemas.GapBatch
	f.advance(1_000_000)
	_ = rd.ReadBuffer(g, &pb, &gb)
	f.advance(4_000_000) // the reader stalls longer than the buffer holds
	_ = rd.ReadBuffer(g, &pb, &gb)
	if len(gb.Gaps) != 1 {
		t.Fatalf("%d gaps, want 1", len(gb.Gaps))
	}
	gap := gb.Gaps[0]
	// 4 s elapsed, 119 samples (2.38 s) survived: about 1.6 s lost.
	if lost := gap.To - gap.From; lost < 1_500e6 || lost > 1_700e6 {
		t.Fatalf("gap of %v ns", lost)
	}
	f.failGet = true
	f.advance(1_000_000)
	if err := rd.ReadBuffer(g, &pb, &gb); err == nil || len(gb.Gaps) != 2 {
		t.Fatalf("failed call: err %v, %d gaps", err, len(gb.Gaps))
	}
}

func TestEnergyResetAndUnits(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000, energy: 2_000_000}
	rd := open(t, newServer(t, f), f)
	g := rd.GPUs[0]
	var eb schemas.EnergyBatch
	_ = rd.ReadEnergy(g, &eb)
	f.advance(1_000_000) // +300 J
	_ = rd.ReadEnergy(g, &eb)
	f.energy = 5 // driver reload
	_ = rd.ReadEnergy(g, &eb)
	r := eb.Readings
	if len(r) != 3 || r[1].Energy-r[0].Energy != 300*schemas.Joule || r[1].Reset || !r[2].Reset {
		t.Fatalf("%+v", r)
	}
}

func TestMissingSymbolFallsBackToInstant(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 250_000}
	s := newServer(t, f)
	s.LookupSymbolFunc = func(sym string) error {
		if sym == "nvmlDeviceGetSamples" {
			return errors.New("symbol not found")
		}
		return nil
	}
	calls := 0
	s.Devices[0].(*server.Device).GetSamplesFunc = func(nvml.SamplingType, uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
		calls++
		return 0, nil, nvml.ERROR_UNKNOWN
	}
	rd := open(t, s, f)
	g := rd.GPUs[0]
	if g.HasBuffer || !g.HasInstant || rd.Inv.GPUs[0].Buffer {
		t.Fatalf("capabilities %+v", g)
	}
	var pb schemas.PowerBatch
	var gb schemas.GapBatch
	if err := rd.ReadBuffer(g, &pb, &gb); err != nil || calls != 0 {
		t.Fatalf("buffer read on a driver without the symbol: err %v, %d calls", err, calls)
	}
	if err := rd.ReadInstant(g, &pb); err != nil || len(pb.Samples) != 1 || pb.Samples[0].Power != 250_000 {
		t.Fatalf("instant: %v %+v", err, pb.Samples)
	}
}

func TestInventoryStateAndMIG(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000}
	s := newServer(t, f)
	s.Devices[1].(*server.Device).GetMigModeFunc = func() (int, int, nvml.Return) {
		return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS
	}
	rd, err := Open(s, "h", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.GPUs) != 8 || rd.Inv.Driver != "550.54.15" || rd.Inv.GPUs[0].UUID == "" || rd.Inv.GPUs[0].Name == "" {
		t.Fatalf("inventory %+v", rd.Inv)
	}
	if rd.Inv.GPUs[0].MIGMode || !rd.Inv.GPUs[1].MIGMode {
		t.Fatalf("MIG modes %v %v", rd.Inv.GPUs[0].MIGMode, rd.Inv.GPUs[1].MIGMode)
	}
	var sb schemas.StateBatch
	rd.ReadState(rd.GPUs[0], &sb)
	st := sb.Samples[0]
	if st.SMClock != 1980 || st.MemClock != 2619 || st.Temperature != 41 || st.UtilGPU != 97 || st.PowerLimit != 700*schemas.Watt || st.PState != 0 || st.ThrottleReasons != 4 {
		t.Fatalf("%+v", st)
	}
	if _, err := Open(s, "h", []int{9}, nil); err == nil {
		t.Fatal("device 9 of 8 accepted")
	}
}

type recorder struct{ events []schemas.Event }

func (r *recorder) Publish(subject, _ string, ev schemas.Event) error {
	cp, err := schemas.Decode(ev.AppendWire(nil))
	if err != nil {
		return err
	}
	if err := cp.Validate(0, 1<<62); err != nil {
		return err
	}
	r.events = append(r.events, cp)
	return nil
}

func TestCollectorPublishesEachKind(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, energy: 10}
	rd := open(t, newServer(t, f), f)
	c := NewCollector(rd, Config{}, zerolog.Nop())
	c.readCounters()
	f.advance(1_000_000)
	c.readCounters()
	c.Tick()
	rd.ReadState(rd.GPUs[0], &c.st[0].state)
	rec := &recorder{}
	if err := c.Flush(rec); err != nil {
		t.Fatal(err)
	}
	kinds := map[schemas.Kind]int{}
	for _, ev := range rec.events {
		kinds[ev.Kind()]++
	}
	if kinds[schemas.KindPower] != 1 || kinds[schemas.KindEnergy] != 1 || kinds[schemas.KindState] != 1 {
		t.Fatalf("published %v", kinds)
	}
	if err := c.Flush(rec); err != nil || len(rec.events) != 3 {
		t.Fatalf("second flush republished: %d events", len(rec.events))
	}
	eb := rec.events[1].(*schemas.EnergyBatch)
	if eb.Source != SourceCounter || len(eb.Readings) != 2 || eb.Readings[1].Energy-eb.Readings[0].Energy != 400*schemas.Joule {
		t.Fatalf("%+v", eb)
	}
}

func TestProbeOnMock(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000}
	f.advance(3_000_000)
	s := newServer(t, f)
	ticks := uint64(0)
	s.Devices[0].(*server.Device).GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
		ticks++
		return ticks / 100, nvml.SUCCESS // changes every 100 calls
	}
	rd := open(t, s, f)
	p := rd.Probe(rd.GPUs[0], 20*time.Millisecond)
	if p.BufferDepth != 119 || p.BufferSpacing[1] != 20*time.Millisecond || p.CounterRefresh <= 0 {
		t.Fatalf("%+v", p)
	}
	if _, ok := p.CallCost["GetTotalEnergyConsumption"]; !ok {
		t.Fatal("counter call not timed")
	}
}

func TestCounterPeriodFollowsCPUBudget(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000}
	c := NewCollector(open(t, newServer(t, f), f), Config{}, zerolog.Nop()) // 1 GPU: target 0.4%
	now := time.Unix(0, 0)
	var cpu time.Duration
	step := func(share float64) time.Duration {
		now = now.Add(6 * time.Second)
		cpu += time.Duration(share * float64(6*time.Second))
		return c.nextCounterPeriod(cpu, now)
	}
	step(0) // baseline
	if p := step(0.10); p != 1500*time.Millisecond {
		t.Fatalf("over budget: %v, want 1.5 s", p)
	}
	for i := 0; i < 10; i++ {
		step(0.10)
	}
	if p := step(0.10); p != 10*time.Second {
		t.Fatalf("capped at %v, want 10 s", p)
	}
	for i := 0; i < 20; i++ {
		step(0.001)
	}
	if p := step(0.001); p != time.Second {
		t.Fatalf("well under budget: %v, want back at the 1 s minimum", p)
	}
	if p := step(0.0035); p != time.Second {
		t.Fatalf("inside the band: %v, want unchanged", p)
	}
	c = NewCollector(c.rd, Config{Counter: 100 * time.Millisecond, CounterBudget: -1}, zerolog.Nop())
	if p := c.nextCounterPeriod(time.Hour, now); p != 100*time.Millisecond {
		t.Fatalf("validation cadence without budget: %v", p)
	}
}
