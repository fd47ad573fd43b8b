package nvml

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
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
	// hostOffset is host − driver clock (ns) as seen by open's now();
	// callUS is how long GetSamples takes, half before its snapshot.
	hostOffset int64
	callUS     uint64
	// With refreshUS set, the counter shows energy as of its last refresh
	// (every refreshUS, at refreshPhaseUS past the grid) and each counter
	// call takes ctrCallUS.
	refreshUS, refreshPhaseUS, ctrCallUS uint64
	shown                                uint64 // mJ as of the last refresh
}

func (f *fakeDriver) advance(us uint64) {
	end := f.nowUS + us
	for f.nowUS < end {
		step := min(end-f.nowUS, 20_000-f.nowUS%20_000)
		if f.refreshUS > 0 {
			// The counter refreshes inside this step: energy up to it.
			r := f.nowUS - (f.nowUS+f.refreshUS-f.refreshPhaseUS)%f.refreshUS + f.refreshUS
			if r > f.nowUS && r <= f.nowUS+step {
				f.shown = f.energy + uint64(f.power)*(r-f.nowUS)/1_000_000
			}
		}
		f.energy += uint64(f.power) * step / 1_000_000
		f.nowUS += step
		if f.nowUS%20_000 == 0 {
			var v [8]byte
			binary.LittleEndian.PutUint32(v[:], f.power)
			f.ring = append(f.ring, nvml.Sample{TimeStamp: f.nowUS, SampleValue: v})
			if len(f.ring) > 119 {
				f.ring = f.ring[1:]
			}
		}
	}
}

func (f *fakeDriver) counter() uint64 {
	if f.refreshUS == 0 {
		return f.energy
	}
	f.advance(f.ctrCallUS / 2)
	defer f.advance(f.ctrCallUS - f.ctrCallUS/2)
	return f.shown
}

func newServer(t *testing.T, f *fakeDriver) *server.Server {
	s := dgxh100.New()
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return f.counter(), nvml.SUCCESS }
		dev.GetSamplesFunc = func(st nvml.SamplingType, last uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
			if st != nvml.TOTAL_POWER_SAMPLES {
				t.Errorf("sampling type %v", st)
			}
			if f.failGet {
				return 0, nil, nvml.ERROR_UNKNOWN
			}
			f.advance(f.callUS / 2)
			defer f.advance(f.callUS - f.callUS/2)
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
	rd, err := Open(s, "h", []int{0}, func() int64 { return int64(f.nowUS)*1000 + f.hostOffset })
	if err != nil {
		t.Fatal(err)
	}
	rd.sleep = func(d time.Duration) { f.advance(uint64(d / time.Microsecond)) }
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

// The clock bounds must contain the true offset, narrow to about a call's
// duration, and shift samples only when the driver is not on the host clock.
func TestClockOffsetBounds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		offset  int64 // true host − driver, ns
		applied bool
	}{{"host clock", 0, false}, {"own clock", -3_700_123_456, true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000, hostOffset: tc.offset, callUS: 300}
			rd := open(t, newServer(t, f), f)
			g := rd.GPUs[0]
			var pb schemas.PowerBatch
			var gb schemas.GapBatch
			f.advance(1_000_000)
			for i := 0; i < 60; i++ {
				// Reads about once a second at phases spread over the 20 ms cadence.
				f.advance(1_000_000 + uint64(i*7_919%20_000))
				if err := rd.ReadBuffer(g, &pb, &gb); err != nil {
					t.Fatal(err)
				}
			}
			est, ok := g.Clock(int64(f.nowUS) * 1000)
			if !ok {
				t.Fatal("no estimate")
			}
			if est.Low > tc.offset || est.High < tc.offset {
				t.Fatalf("true offset %d outside [%d, %d]", tc.offset, est.Low, est.High)
			}
			if w := est.High - est.Low; w > 1_000_000 {
				t.Fatalf("bounds %d ns wide after 60 reads, want under 1 ms", w)
			}
			if (est.Applied != 0) != tc.applied || (tc.applied && g.ClockOffset() != time.Duration(est.Applied)) {
				t.Fatalf("applied %d (offset in use %v)", est.Applied, g.ClockOffset())
			}
			// Published stamps sit on the host clock within the bounds.
			last := pb.Samples[len(pb.Samples)-1]
			if d := last.TS - (int64(g.lastBufferTS)*1000 + tc.offset); d < -(est.High-est.Low) || d > est.High-est.Low {
				t.Fatalf("last sample %d ns off the host clock", d)
			}
			if g.clock.Resets != 0 {
				t.Fatalf("%d resets on a steady clock", g.clock.Resets)
			}
		})
	}
}

// A host clock step makes the bounds cross: the window restarts instead of
// publishing an impossible interval.
func TestClockStepResetsWindow(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 300_000, callUS: 300}
	rd := open(t, newServer(t, f), f)
	g := rd.GPUs[0]
	var pb schemas.PowerBatch
	var gb schemas.GapBatch
	for i := 0; i < 20; i++ {
		f.advance(1_000_000 + uint64(i*3_001%20_000))
		_ = rd.ReadBuffer(g, &pb, &gb)
	}
	f.hostOffset = 50_000_000 // NTP steps the host clock by 50 ms
	for i := 0; i < 20; i++ {
		f.advance(1_000_000 + uint64(i*3_001%20_000))
		_ = rd.ReadBuffer(g, &pb, &gb)
	}
	est, _ := g.Clock(0)
	if g.clock.Resets == 0 || est.Low > 50_000_000 || est.High < 50_000_000 {
		t.Fatalf("after a step: resets %d, bounds [%d, %d]", g.clock.Resets, est.Low, est.High)
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
	withMIG(s, 1)
	s.Devices[2].(*server.Device).GetMigModeFunc = func() (int, int, nvml.Return) {
		return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS
	}
	s.Devices[2].(*server.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	rd, err := Open(s, "h", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.GPUs) != 8 || rd.Inv.Driver != "550.54.15" || rd.Inv.GPUs[0].UUID == "" || rd.Inv.GPUs[0].Name == "" {
		t.Fatalf("inventory %+v", rd.Inv)
	}
	if rd.Inv.GPUs[0].MIGMode || !rd.Inv.GPUs[1].MIGMode || len(rd.Inv.GPUs[1].MIG) != 2 {
		t.Fatalf("MIG modes %v %v", rd.Inv.GPUs[0].MIGMode, rd.Inv.GPUs[1].MIGMode)
	}
	// An old driver that cannot enumerate instances degrades: the board is
	// still measured and the inventory says why.
	if g2 := rd.Inv.GPUs[2]; !g2.MIGMode || len(g2.MIG) != 0 || !strings.Contains(g2.MIGError, "NOT_SUPPORTED") || len(rd.GPUs[2].Instances) != 0 {
		t.Fatalf("device 2: %+v", g2)
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
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, energy: 10, refreshUS: 100_000, refreshPhaseUS: 37_000, ctrCallUS: 3_000}
	rd := open(t, newServer(t, f), f)
	c := NewCollector(rd, Config{AlignedCounter: ptrTo(true)}, zerolog.Nop())
	c.readCounters()
	f.advance(1_000_000)
	c.readCounters()
	f.advance(1_000_000)
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
	if kinds[schemas.KindPower] != 1 || kinds[schemas.KindEnergy] != 1 || kinds[schemas.KindState] != 1 || kinds[schemas.KindClock] != 1 {
		t.Fatalf("published %v", kinds)
	}
	if err := c.Flush(rec); err != nil || len(rec.events) != 4 {
		t.Fatalf("second flush republished: %d events", len(rec.events))
	}
	eb := rec.events[1].(*schemas.EnergyBatch)
	if eb.Source != SourceCounterAligned || len(eb.Readings) != 2 {
		t.Fatalf("%+v", eb)
	}
	// Aligned reads bracket a refresh (grid 37 ms + n × 100 ms) within a
	// few ms, and the energy between them is the power times whole periods.
	for _, r := range eb.Readings {
		us := (r.TSBefore/1000 + r.TSAfter/1000) / 2
		if off := (us - 37_000) % 100_000; off > 6_000 && off < 94_000 || r.TSAfter-r.TSBefore > 12e6 {
			t.Fatalf("reading [%d, %d] is %d µs off the refresh grid", r.TSBefore, r.TSAfter, off)
		}
	}
	if d := eb.Readings[1].Energy - eb.Readings[0].Energy; d%(40*schemas.Joule) != 0 || d < 400*schemas.Joule || d > 440*schemas.Joule {
		t.Fatalf("energy between aligned reads %d µJ, want 400 W × whole 100 ms periods", d)
	}
	if g := rd.GPUs[0].Refresh; g.Aligned != 2 || g.Missed != 0 || math.Abs(g.period-100e6) > 0.5e6 {
		t.Fatalf("refresh grid %+v", g)
	}
}

// Aligned reads are the default (Config{} brackets the refresh); plain
// reads, asked for, take the counter whenever the timer fires.
func TestPlainCounterWhenAsked(t *testing.T) {
	if !(Config{}).Aligned() || (Config{AlignedCounter: ptrTo(false)}).Aligned() {
		t.Fatal("aligned reads are not the default")
	}
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, energy: 10}
	rd := open(t, newServer(t, f), f)
	c := NewCollector(rd, Config{AlignedCounter: ptrTo(false)}, zerolog.Nop())
	c.readCounters()
	f.advance(1_000_000)
	c.readCounters()
	eb := c.st[0].energy
	if eb.Source != SourceCounter || len(eb.Readings) != 2 || eb.Readings[1].Energy-eb.Readings[0].Energy != 400*schemas.Joule {
		t.Fatalf("%+v", eb)
	}
}

// Once locked, most aligned reads are single predicted calls stamped on
// the refresh grid. When the grid jumps, the next bracket misses, later
// reads bracket until the prediction is dropped, and the reads re-acquire.
func TestAlignedReadsPredictMissAndReacquire(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, refreshUS: 100_000, refreshPhaseUS: 5_000, ctrCallUS: 3_000}
	rd := open(t, newServer(t, f), f)
	g := rd.GPUs[0]
	var eb schemas.EnergyBatch
	onGrid := func(r schemas.EnergyReading, phaseUS int64) bool {
		off := ((r.TSBefore+r.TSAfter)/2000 - phaseUS) % 100_000
		return off <= 4_000 || off >= 96_000
	}
	for i := 0; i < 12; i++ {
		_ = rd.ReadEnergyAligned(g, &eb)
		f.advance(700_000 + uint64(i*7_919%20_000))
	}
	if len(eb.Readings) != 12 || g.Refresh.Missed != 0 || g.Refresh.Predicted < 4 {
		t.Fatalf("%d readings, %d misses, %d predicted", len(eb.Readings), g.Refresh.Missed, g.Refresh.Predicted)
	}
	for i, r := range eb.Readings {
		if !onGrid(r, 5_000) {
			t.Fatalf("reading %d [%d, %d] off the refresh grid", i, r.TSBefore, r.TSAfter)
		}
		// The value is the energy at the stamped refresh.
		if i > 0 {
			dt := float64((r.TSBefore+r.TSAfter)/2-(eb.Readings[i-1].TSBefore+eb.Readings[i-1].TSAfter)/2) / 1e9
			if dj := float64(r.Energy-eb.Readings[i-1].Energy) / 1e6; math.Abs(dj-400*dt) > 400*0.004 {
				t.Fatalf("reading %d: %.2f J over %.4f s at 400 W", i, dj, dt)
			}
		}
	}
	f.refreshPhaseUS = 55_000 // the grid jumps by half a period
	n := len(eb.Readings)
	for i := 0; i < verifyEvery+alignMisses+2; i++ {
		_ = rd.ReadEnergyAligned(g, &eb)
		f.advance(700_000)
	}
	if g.Refresh.Missed == 0 || g.Refresh.Missed > alignMisses || len(eb.Readings) != n+verifyEvery+alignMisses+2 {
		t.Fatalf("after the jump: %d readings, %d misses", len(eb.Readings)-n, g.Refresh.Missed)
	}
	if last := eb.Readings[len(eb.Readings)-1]; !onGrid(last, 55_000) {
		t.Fatalf("re-acquired reading [%d, %d] off the new grid", last.TSBefore, last.TSAfter)
	}
}

// withMIG puts device 0 of s in MIG mode with a 4g (64 SMs) and a 3g
// (60 SMs) instance in slots 0 and 2 of 7.
func withMIG(s *server.Server, index int) {
	d := s.Devices[index].(*server.Device)
	d.GetMigModeFunc = func() (int, int, nvml.Return) { return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS }
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	mk := func(uuid, name string, gi, sms, slices uint32) nvml.Device {
		return &mock.Device{
			GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
			GetNameFunc: func() (string, nvml.Return) { return name, nvml.SUCCESS },
			GetAttributesFunc: func() (nvml.DeviceAttributes, nvml.Return) {
				return nvml.DeviceAttributes{MultiprocessorCount: sms, GpuInstanceSliceCount: slices, MemorySizeMB: 40_000}, nvml.SUCCESS
			},
			GetGpuInstanceIdFunc:     func() (int, nvml.Return) { return int(gi), nvml.SUCCESS },
			GetComputeInstanceIdFunc: func() (int, nvml.Return) { return 0, nvml.SUCCESS },
		}
	}
	d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		switch i {
		case 0:
			return mk("MIG-4g-aaaa", "NVIDIA H100 80GB HBM3 MIG 4g.40gb", 1, 64, 4), nvml.SUCCESS
		case 2:
			return mk("MIG-3g-bbbb", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 2, 60, 3), nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
}

// A MIG board's power and energy go to its instances by SM share, labelled
// as apportioned, and the instances add back up to the board.
func TestMIGInstancesApportioned(t *testing.T) {
	f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, energy: 1_000, refreshUS: 100_000, ctrCallUS: 3_000}
	s := newServer(t, f)
	withMIG(s, 0)
	rd := open(t, s, f)
	inv := rd.Inv.GPUs[0]
	if !inv.MIGMode || len(inv.MIG) != 2 || inv.MIG[0].UUID != "MIG-4g-aaaa" || inv.MIG[1].GPUInstance != 2 || inv.MIG[0].Slices != 4 {
		t.Fatalf("MIG inventory %+v", inv)
	}
	if sh := inv.MIG[0].Share + inv.MIG[1].Share; math.Abs(sh-1) > 1e-12 || math.Abs(inv.MIG[0].Share-64.0/124) > 1e-12 {
		t.Fatalf("shares %v %v", inv.MIG[0].Share, inv.MIG[1].Share)
	}
	c := NewCollector(rd, Config{}, zerolog.Nop())
	c.readCounters()
	f.advance(1_000_000)
	c.readCounters()
	c.Tick()
	rec := &recorder{}
	if err := c.Flush(rec); err != nil {
		t.Fatal(err)
	}
	power := map[string]int64{}  // uuid -> Σ mW over samples
	energy := map[string]int64{} // uuid -> counter delta µJ
	for _, ev := range rec.events {
		switch e := ev.(type) {
		case *schemas.PowerBatch:
			apportioned := strings.HasSuffix(e.Source, ApportionedSuffix)
			if apportioned != (e.Device.MIGParent != "") || (apportioned && e.Device.MIGParent != rd.GPUs[0].ID.UUID) {
				t.Fatalf("power batch %s of %s (parent %q)", e.Source, e.Device.UUID, e.Device.MIGParent)
			}
			for _, s := range e.Samples {
				power[e.Device.UUID] += int64(s.Power)
			}
		case *schemas.EnergyBatch:
			energy[e.Device.UUID] = int64(e.Readings[len(e.Readings)-1].Energy - e.Readings[0].Energy)
		}
	}
	board := rd.GPUs[0].ID.UUID
	if len(power) != 3 || power[board] == 0 {
		t.Fatalf("power by device %v", power)
	}
	n := int64(len(rec.events[0].(*schemas.PowerBatch).Samples))
	if d := power["MIG-4g-aaaa"] + power["MIG-3g-bbbb"] - power[board]; d < -n || d > n {
		t.Fatalf("instances' power differs from the board's by %d mW over %d samples", d, n)
	}
	if d := energy["MIG-4g-aaaa"] + energy["MIG-3g-bbbb"] - energy[board]; d < -2 || d > 2 || energy[board] < 400*int64(schemas.Joule) {
		t.Fatalf("energy: board %d µJ, instances differ by %d", energy[board], d)
	}
	if r := float64(energy["MIG-3g-bbbb"]) / float64(energy[board]); math.Abs(r-60.0/124) > 1e-6 {
		t.Fatalf("3g share of energy %v", r)
	}
}

// TestCounterBudgetIsTheCollectorsOwn: the counter period follows the CPU
// the collector itself spends (its thread's), not the process's. Inside
// `lem run` the load generator, JetStream and ingest share the process;
// budgeting on the process stretched the counter to 10 s there. Here a
// goroutine spinning elsewhere leaves the period alone, and reads that
// burn CPU themselves stretch it.
func TestCounterBudgetIsTheCollectorsOwn(t *testing.T) {
	run := func(burnInRead, burnElsewhere bool) time.Duration {
		f := &fakeDriver{nowUS: 1_795_757_000_000_000, power: 400_000, energy: 10}
		s := newServer(t, f)
		if burnInRead {
			dev := s.Devices[0].(*server.Device)
			read := dev.GetTotalEnergyConsumptionFunc
			dev.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
				for end := time.Now().Add(5 * time.Millisecond); time.Now().Before(end); {
				}
				return read()
			}
		}
		rd := open(t, s, f)
		c := NewCollector(rd, Config{Counter: 50 * time.Millisecond, Publish: time.Second, CounterBudget: 0.004}, zerolog.Nop())
		c.adjEvery = 200 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
		defer cancel()
		if burnElsewhere {
			go func() {
				for ctx.Err() == nil {
				}
			}()
		}
		if err := c.Run(ctx, &recorder{}); err != nil {
			t.Fatal(err)
		}
		return c.period
	}
	// Within 2× of the base period: the collector's own thread pays some
	// runtime overhead on a loaded machine (the whole of make test runs
	// beside it), while budgeting on the process stretched it to the 10 s
	// cap.
	if p := run(false, true); p > 100*time.Millisecond {
		t.Errorf("another goroutine's CPU stretched the counter period to %v", p)
	}
	if p := run(true, false); p < 200*time.Millisecond {
		t.Errorf("reads costing 5 ms of CPU each every 50 ms (10%% of a core, budget 0.4%%): period %v, want stretched", p)
	}
}

func ptrTo[T any](v T) *T { return &v }
