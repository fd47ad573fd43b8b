package analytics

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// hostStep is one step load whose GPU start and end are known on the host
// clock (collectors/nvml/validate/timebase.py).
type hostStep struct {
	nominal    float64
	start, end int64
}

func readSteps(t *testing.T, path string) []hostStep {
	var out []hostStep
	for _, r := range readCSV(t, path) {
		nom, _ := strconv.ParseFloat(r[1], 64)
		s, _ := strconv.ParseInt(r[3], 10, 64)
		e, _ := strconv.ParseInt(r[4], 10, 64)
		out = append(out, hostStep{nom, s, e})
	}
	return out
}

// edgeFromEnergy places a step inside w = [t−100 ms, t+100 ms] from a
// series' energy over w, the level before (the mean over the 100 ms
// before w) and after (the 100 ms after): the one time that makes a step
// between those levels integrate to what the series does.
func edgeFromEnergy(energy func(a, b int64) float64, t int64) (float64, bool) {
	const h = 100e6
	before := energy(t-2*h, t-h) / 0.1
	after := energy(t+h, t+2*h) / 0.1
	if math.Abs(after-before) < 100 {
		return 0, false
	}
	e := energy(t-h, t+h)
	// e = before·(x − (t−h)) + after·((t+h) − x)  →  x
	x := (after*float64(t+h) - before*float64(t-h) - e*1e9) / (after - before)
	return (x - float64(t)) / 1e6, true
}

// TestTimeBaseMeasured: on an H200 (docs/validation/h200-timebase), 48
// step loads of 0.1–2 s whose GPU start and end are known on the host
// clock to microseconds (CUDA events), next to an agent reading the 20 ms
// buffer and the counter at every refresh. Where do analytics's series
// place each edge? Each series' energy over ±100 ms of the edge, with the
// levels of the 100 ms on either side, gives the one step time it implies
// (edgeFromEnergy). `go test ./analytics -run TimeBase -v` prints the
// offsets and histograms that docs/methodology.md shows.
func TestTimeBaseMeasured(t *testing.T) {
	base := filepath.Join("..", "docs", "validation", "h200-timebase")
	dir := testenv.Untar(t, filepath.Join(base, "store.tgz"))
	steps := readSteps(t, filepath.Join(base, "steps.csv"))
	if len(steps) < 40 {
		t.Fatalf("%d steps", len(steps))
	}
	ctx := context.Background()
	a := store.Parquet(filepath.Join(dir, "store"))
	devs := schemas.NewDeviceRows()
	if err := a.ReadTable(ctx, devs.Table(), schemas.Filter{AllRuns: true}); err != nil || len(devs.UUID.V) == 0 {
		t.Fatalf("devices: %v", err)
	}
	dev := devs.UUID.V[0]
	by, err := a.PowerBySource(ctx, dev, 0, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	raw := by[schemas.SourceNVMLBuffer]
	if len(raw) < 3000 {
		t.Fatalf("%d buffer samples", len(raw))
	}
	rs, err := a.Energy(ctx, dev, 0, math.MaxInt64)
	if err != nil || len(rs) < 500 {
		t.Fatalf("%d counter readings, %v", len(rs), err)
	}
	// Each series' energy over [a, b], as analytics computes it: the
	// buffer placed by BufferLead and held (IntegratePower), the buffer at
	// its raw stamps, and the aligned counter interpolated (WindowEnergy).
	shifted := OnSensorTimebase(schemas.SourceNVMLBuffer, append([]schemas.PowerSample(nil), raw...))
	energy := map[string]func(a, b int64) float64{
		"buffer (analytics)":  func(a, b int64) float64 { j, _ := IntegratePower(shifted, a, b, 60e6); return j },
		"buffer (raw stamps)": func(a, b int64) float64 { j, _ := IntegratePower(raw, a, b, 60e6); return j },
		"counter (aligned)":   func(a, b int64) float64 { return WindowEnergy(rs, a, b).Joules },
	}
	type key struct{ series, edge string }
	delays := map[key][]float64{}
	for _, st := range steps {
		if st.nominal < 0.2 {
			continue // the level after the rise needs 200 ms of load
		}
		for name, en := range energy {
			if d, ok := edgeFromEnergy(en, st.start); ok {
				delays[key{name, "rise"}] = append(delays[key{name, "rise"}], d)
			}
			if d, ok := edgeFromEnergy(en, st.end); ok {
				delays[key{name, "fall"}] = append(delays[key{name, "fall"}], d)
			}
		}
	}
	mean := map[key]float64{}
	var b strings.Builder
	fmt.Fprintf(&b, "| series | edge | steps | mean ms | sd ms | p5 | p50 | p95 | histogram (10 ms bins from −50 ms) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{"buffer (analytics)", "buffer (raw stamps)", "counter (aligned)"} {
		for _, edge := range []string{"rise", "fall"} {
			d := delays[key{name, edge}]
			if len(d) < 35 {
				t.Errorf("%s %s: %d edges measured", name, edge, len(d))
				continue
			}
			st := Summarise(d)
			sort.Float64s(d)
			hist := make([]int, 12)
			for _, x := range d {
				hist[max(0, min(11, int(math.Floor((x+50)/10))))]++
			}
			var hs []string
			for _, h := range hist {
				hs = append(hs, strconv.Itoa(h))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %+.1f | %.1f | %+.0f | %+.0f | %+.0f | %s |\n", name, edge, len(d), st.Mean, st.Std,
				Percentile(d, 5), Percentile(d, 50), Percentile(d, 95), strings.Join(hs, " "))
			mean[key{name, edge}] = st.Mean
		}
	}
	// The time base: the mean of the rise and fall offsets (a transient
	// of the same shape at both edges — power overshooting as the clocks
	// boost, decaying after — moves them in opposite directions and
	// cancels there) within 10 ms of host time for the buffer as analytics
	// places it and for the counter; the two sensors agree edge by edge
	// within 5 ms; at raw stamps the buffer is ≥ 15 ms late (BufferLead).
	for _, name := range []string{"buffer (analytics)", "counter (aligned)"} {
		if tb := (mean[key{name, "rise"}] + mean[key{name, "fall"}]) / 2; math.Abs(tb) > 10 {
			t.Errorf("%s: time base %+.1f ms off host time", name, tb)
		}
	}
	for _, edge := range []string{"rise", "fall"} {
		if d := mean[key{"buffer (analytics)", edge}] - mean[key{"counter (aligned)", edge}]; math.Abs(d) > 5 {
			t.Errorf("%s: buffer and counter %+.1f ms apart", edge, d)
		}
		if d := mean[key{"buffer (raw stamps)", edge}] - mean[key{"counter (aligned)", edge}]; d < 15 {
			t.Errorf("%s: the raw buffer stamps only %+.1f ms after the counter: BufferLead no longer measured", edge, d)
		}
	}
	t.Logf("%d steps\n%s", len(steps), b.String())
}
