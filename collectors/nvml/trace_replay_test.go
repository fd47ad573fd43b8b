package nvml

import (
	"encoding/binary"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

// h200Trace is the real H200 recording beside the repository
// (shared/data/h200-trace): the counter's changes, the driver's 20 ms
// buffer samples (driver stamps, rows only where the value changed) and
// the workload's phase edges.
type h200Trace struct {
	counter []analytics.Reading   // every change of the energy counter
	buffer  []schemas.PowerSample // driver power samples
	phases  map[string][2]int64
}

func loadH200Trace(t *testing.T) *h200Trace {
	src := testenv.LoadH200Trace(t)
	tr := &h200Trace{buffer: src.Buffer, phases: src.Phases}
	for _, e := range src.Counter {
		tr.counter = append(tr.counter, analytics.Reading{EnergyReading: e, Source: "trace.counter-change"})
	}
	return tr
}

// replayDriver serves the trace through go-nvml's mock at replay time now:
// the counter's last value, and the buffer samples of the last 2.38 s.
type replayDriver struct {
	tr  *h200Trace
	now int64 // host ns
}

func (r *replayDriver) server(mig bool) *server.Server {
	s := dgxh100.New()
	d := s.Devices[0].(*server.Device)
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
		r.now += 1_500_000 // a call takes ~3 ms; the value is read mid-call
		defer func() { r.now += 1_500_000 }()
		i := sort.Search(len(r.tr.counter), func(i int) bool { return r.tr.counter[i].TSBefore > r.now })
		if i == 0 {
			return 0, nvml.ERROR_NOT_READY
		}
		return uint64(r.tr.counter[i-1].Energy / schemas.Millijoule), nvml.SUCCESS
	}
	d.GetSamplesFunc = func(_ nvml.SamplingType, last uint64) (nvml.ValueType, []nvml.Sample, nvml.Return) {
		var out []nvml.Sample
		for _, p := range r.tr.buffer {
			us := uint64(p.TS / 1000)
			if p.TS > r.now || p.TS < r.now-2_380_000_000 || us <= last {
				continue
			}
			var v [8]byte
			binary.LittleEndian.PutUint32(v[:], uint32(p.Power))
			out = append(out, nvml.Sample{TimeStamp: us, SampleValue: v})
		}
		if len(out) == 0 {
			return 0, nil, nvml.ERROR_NOT_FOUND
		}
		return nvml.VALUE_TYPE_UNSIGNED_INT, out, nvml.SUCCESS
	}
	if mig {
		withMIG(s, 0)
	}
	return s
}

// The real H200 trace replayed through the collector at production
// cadence (counter and buffer once a second, at phases drifting across the
// driver's cadence): what it publishes, calibrated, meets the full-
// resolution counter within 1% on every phase of 2 s or more; gaps are
// exactly the trace's holes; the clock bounds hold the driver's offset
// (0: it stamps on the host clock); and a MIG board's instances add up to
// the board, labelled apportioned.
func TestH200TraceReplayThroughCollector(t *testing.T) {
	tr := loadH200Trace(t)
	rp := &replayDriver{tr: tr, now: tr.counter[0].TSBefore + 1e9}
	rd, err := Open(rp.server(true), "h200", []int{0}, func() int64 { return rp.now })
	if err != nil {
		t.Fatal(err)
	}
	rd.sleep = func(d time.Duration) { rp.now += int64(d) }
	c := NewCollector(rd, Config{AlignedCounter: ptrTo(true)}, zerolog.Nop())
	rec := &recorder{}
	end := tr.counter[len(tr.counter)-1].TSBefore
	for i := 0; rp.now < end; i++ {
		c.readCounters()
		c.Tick()
		if err := c.Flush(rec); err != nil {
			t.Fatal(err)
		}
		rp.now += 1e9 + int64(i*7_919%20_000)*1000 // 1 s plus 0–20 ms
	}
	c.Tick() // as Run does when it stops
	c.sampleClocks(true)
	if err := c.Flush(rec); err != nil {
		t.Fatal(err)
	}

	board := rd.GPUs[0].ID.UUID
	readings := map[string][]analytics.Reading{}
	power := map[string][]schemas.PowerSample{}
	var gaps []schemas.Gap
	var clocks []schemas.ClockSample
	for _, ev := range rec.events {
		switch e := ev.(type) {
		case *schemas.EnergyBatch:
			for _, r := range e.Readings {
				readings[e.Device.UUID] = append(readings[e.Device.UUID], analytics.Reading{EnergyReading: r, Source: e.Source})
			}
		case *schemas.PowerBatch:
			power[e.Device.UUID] = append(power[e.Device.UUID], e.Samples...)
		case *schemas.GapBatch:
			if e.Device.UUID == board {
				gaps = append(gaps, e.Gaps...)
			}
		case *schemas.ClockBatch:
			clocks = append(clocks, e.Samples...)
		}
	}

	// Every driver sample of the replayed span was published, once.
	first := sort.Search(len(tr.buffer), func(i int) bool { return tr.buffer[i].TS >= power[board][0].TS })
	if want := len(tr.buffer) - first; len(power[board]) != want {
		t.Fatalf("published %d buffer samples, the trace has %d in the span", len(power[board]), want)
	}
	// Gaps: exactly the holes longer than three periods in the trace.
	holes := 0
	for i := first + 1; i < len(tr.buffer); i++ {
		if tr.buffer[i].TS-tr.buffer[i-1].TS > gapFactor*int64(bufferPeriod) {
			holes++
		}
	}
	if len(gaps) != holes {
		t.Fatalf("%d gap events for %d holes in the trace", len(gaps), holes)
	}

	for _, name := range []string{"idle", "matmul", "idle2", "prefill", "decode", "decode_b1"} {
		ph := tr.phases[name]
		ref := analytics.WindowEnergy(tr.counter, ph[0], ph[1]).Joules
		// The trace keeps a row only where the value changed: a sample
		// holds until the next row.
		got := analytics.CalibratedEnergy(readings[board], power[board], 1e9, ph[0], ph[1])
		rel := (got - ref) / ref
		if math.Abs(rel) > 0.01 {
			t.Errorf("%s: collector calibrated %.1f J, counter %.1f J (%+.2f%%)", name, got, ref, 100*rel)
		}
		t.Logf("%-9s counter %7.1f J  collector calibrated %7.1f J  %+.2f%%", name, ref, got, 100*rel)
		var sum float64
		for _, inst := range rd.GPUs[0].Instances {
			u := inst.ID.UUID
			j := analytics.CalibratedEnergy(readings[u], power[u], 1e9, ph[0], ph[1])
			if w := analytics.WindowEnergy(readings[u], ph[0], ph[1]); !w.Apportioned {
				t.Fatalf("%s: instance %s window not labelled apportioned (source %s)", name, u, w.Source)
			}
			sum += j
		}
		if math.Abs(sum-got) > 1e-4*got {
			t.Errorf("%s: MIG instances sum to %.3f J, board %.3f J", name, sum, got)
		}
	}

	if len(clocks) < 5 {
		t.Fatalf("%d clock samples over %d s", len(clocks), (end-tr.counter[0].TSBefore)/1e9)
	}
	last := clocks[len(clocks)-1]
	g := rd.GPUs[0].Refresh
	t.Logf("aligned counter reads %d, missed %d, period %.4f ms; clock bounds [%d, %d] ns from %d reads", g.Aligned, g.Missed, g.period/1e6, last.Low, last.High, last.Reads)
	if last.Low > 0 || last.High < 0 || last.Applied != 0 || rd.GPUs[0].clock.Resets != 0 {
		t.Fatalf("clock: %+v, %d resets (the trace's driver stamps host time)", last, rd.GPUs[0].clock.Resets)
	}
}
