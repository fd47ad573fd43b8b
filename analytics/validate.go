package analytics

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"text/tabwriter"

	"github.com/llm-energy-measure/lem/schemas"
)

// Phase is a named time window, e.g. from a workload's own log.
type Phase struct {
	Name     string
	From, To int64
}

// PhaseCheck compares, for one device and phase, the energy of the counter
// with the integrals of each power series.
type PhaseCheck struct {
	Phase    Phase
	Device   string
	CounterJ float64
	EdgeUncJ float64            // the counter's own resolution at the phase edges
	SeriesJ  map[string]float64 // by source (nvml.buffer, nvml.instant, ...)
	// CalibratedJ is the buffer calibrated to this store's own counter
	// (CalibratedEnergy); NaN without buffer samples.
	CalibratedJ float64
	// CalibratedUncJ is the interval analytics states for CalibratedJ
	// (CalibratedUncJ), and Covered whether it covers the reference.
	CalibratedUncJ float64
	Covered        bool
	Samples        map[string]int
	Expected       int // buffer samples expected at 50 Hz
	Gaps           int
	Quality        string
	// Snapped is set when the phase's edges were moved to the nearest
	// refresh of an aligned counter (see snapToRefresh); Phase then holds
	// the snapped edges.
	Snapped bool
}

// snapToRefresh returns the stamp (bracket midpoint) of the aligned counter
// reading nearest t and the bracket's half-width, if one lies within
// 110 ms. At such an instant the counter's value is exact, so a window
// between two of them needs no interpolation: its only timing error is the
// bracket, a few ms, instead of the ±50 ms of a refresh period.
func snapToRefresh(rs []Reading, t int64) (int64, int64, bool) {
	best, half, ok := int64(0), int64(0), false
	for _, r := range rs {
		if sensor, _ := SplitSource(r.Source); sensor != schemas.SourceNVMLCounterAligned {
			return 0, 0, false
		}
		mid := r.TSBefore + (r.TSAfter-r.TSBefore)/2
		if d := abs64(mid - t); d <= 110e6 && (!ok || d < abs64(best-t)) {
			best, half, ok = mid, (r.TSAfter-r.TSBefore)/2, true
		}
	}
	return best, half, ok
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// ComparePhases computes a PhaseCheck for every device and phase. The
// reference counter comes from ref (nil: st), so that a store collected at
// production cadence can be checked against a counter read at full
// resolution by a second agent on the same GPU.
func ComparePhases(ctx context.Context, st interface {
	Store
	TableReader
}, ref Store, phases []Phase) ([]PhaseCheck, error) {
	if ref == nil {
		ref = st
	}
	if len(phases) == 0 {
		return nil, nil
	}
	from, to := phases[0].From, phases[0].To
	for _, p := range phases {
		from, to = min(from, p.From), max(to, p.To)
	}
	pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := st.ReadTable(ctx, pw.Table(), schemas.Filter{From: from - 5e9, To: to + 5e9}); err != nil {
		return nil, err
	}
	gp := schemas.NewRows(schemas.KindGap).(*schemas.GapRows)
	if err := st.ReadTable(ctx, gp.Table(), schemas.Filter{From: from - 5e9, To: to + 5e9}); err != nil {
		return nil, err
	}
	cols := pw.Table().Columns
	sources, uuids := cols[1].Data().([]string), cols[3].Data().([]string)
	series := map[string]map[string][]schemas.PowerSample{} // device -> source -> samples
	for i, u := range uuids {
		if series[u] == nil {
			series[u] = map[string][]schemas.PowerSample{}
		}
		series[u][sources[i]] = append(series[u][sources[i]], schemas.PowerSample{TS: pw.TS.V[i], Power: schemas.Power(pw.Power.V[i])})
	}
	devs := make([]string, 0, len(series))
	for d, m := range series {
		devs = append(devs, d)
		for src, s := range m {
			sort.Slice(s, func(a, b int) bool { return s[a].TS < s[b].TS })
			OnSensorTimebase(src, s)
		}
	}
	sort.Strings(devs)
	gapUUIDs := gp.Table().Columns[3].Data().([]string)
	var out []PhaseCheck
	for _, d := range devs {
		rs, err := ref.Energy(ctx, d, from-5e9, to+5e9)
		if err != nil {
			return nil, err
		}
		own := rs
		if ref != Store(st) {
			if own, err = st.Energy(ctx, d, from-5e9, to+5e9); err != nil {
				return nil, err
			}
		}
		for _, p := range phases {
			// With an aligned reference counter, compare on windows whose
			// edges are its refreshes: the counter is then exact at both
			// edges and the edge uncertainty is the brackets' (a few ms).
			from, hf, ok1 := snapToRefresh(rs, p.From)
			to, ht, ok2 := snapToRefresh(rs, p.To)
			snapped := ok1 && ok2 && to > from
			if snapped {
				p.From, p.To = from, to
			}
			w := WindowEnergy(rs, p.From, p.To)
			if buf := series[d][schemas.SourceNVMLBuffer]; snapped && len(buf) > 0 {
				edge := func(t, h int64) float64 {
					j, _ := IntegratePower(buf, t-h, t+h, 60e6)
					return j / 2
				}
				w.EdgeUncJ = math.Hypot(edge(p.From, hf), edge(p.To, ht))
			}
			pc := PhaseCheck{Phase: p, Device: d, CounterJ: w.Joules, EdgeUncJ: w.EdgeUncJ, Quality: w.Quality, SeriesJ: map[string]float64{},
				Samples: map[string]int{}, Expected: int((p.To - p.From) / 20e6), Snapped: snapped}
			for src, s := range series[d] {
				// A sample holds until the next one, at most three periods
				// (longer is a gap): the driver's 20 ms cadence jitters.
				hold := int64(60e6)
				if src != schemas.SourceNVMLBuffer && src != schemas.SourceSim {
					hold = 300e6
				}
				pc.SeriesJ[src], pc.Samples[src] = IntegratePower(s, p.From, p.To, hold)
			}
			pc.CalibratedJ = math.NaN()
			if buf := series[d][schemas.SourceNVMLBuffer]; len(buf) > 0 {
				// As analytics does for runs: the buffer on the store's own
				// counter time base when the data determine the shift.
				aligned, _, _ := AlignSeries(own, buf, 60e6)
				pc.CalibratedJ = CalibratedEnergy(own, aligned, 60e6, p.From, p.To)
				pc.CalibratedUncJ = CalibratedUncJ(own, aligned, 60e6, p.From, p.To)
				// The reference's own edge uncertainty counts on its side.
				pc.Covered = math.Abs(pc.CalibratedJ-pc.CounterJ) <= pc.CalibratedUncJ+pc.EdgeUncJ
				// The buffer's coverage is judged as analyze judges it.
				pc.Quality = worse(pc.Quality, calibratedQuality(own, aligned, 60e6, p.From, p.To))
			}
			for i, u := range gapUUIDs {
				if u == d && gp.From.V[i] < p.To && gp.To.V[i] > p.From {
					pc.Gaps++
				}
			}
			out = append(out, pc)
		}
	}
	return out, nil
}

// signed is num with an explicit sign.
func signed(v float64, prec int) string {
	if n := num(v, prec); n == "—" || v < 0 {
		return n
	}
	return "+" + num(v, prec)
}

// PrintPhaseChecks writes a markdown table of checks.
func PrintPhaseChecks(w io.Writer, cs []PhaseCheck) {
	srcSet := map[string]bool{}
	for _, c := range cs {
		for s := range c.SeriesJ {
			srcSet[s] = true
		}
	}
	var srcs []string
	for s := range srcSet {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprint(tw, "| device\t| phase\t| s\t| counter J\t| ±edge J\t| mean W\t|")
	for _, s := range srcs {
		fmt.Fprintf(tw, " %s J\t| Δ%%\t| samples\t|", s)
	}
	fmt.Fprintln(tw, " calibrated buffer J\t| ± stated J\t| Δ%\t| covers\t| expected 50 Hz\t| gaps\t| quality\t|")
	fmt.Fprint(tw, "|---\t|---\t|---\t|---\t|---\t|---\t|")
	for range srcs {
		fmt.Fprint(tw, "---\t|---\t|---\t|")
	}
	fmt.Fprintln(tw, "---\t|---\t|---\t|---\t|---\t|---\t|---\t|")
	for _, c := range cs {
		dur := float64(c.Phase.To-c.Phase.From) / 1e9
		fmt.Fprintf(tw, "| %s\t| %s\t| %.2f\t| %s\t| %s\t| %s\t|", c.Device, c.Phase.Name, dur, num(c.CounterJ, 1), num(c.EdgeUncJ, 1), num(c.CounterJ/dur, 1))
		for _, s := range srcs {
			j, ok := c.SeriesJ[s]
			if !ok {
				fmt.Fprint(tw, " —\t| —\t| 0\t|")
				continue
			}
			fmt.Fprintf(tw, " %.1f\t| %s%%\t| %d\t|", j, signed(100*(j-c.CounterJ)/c.CounterJ, 2), c.Samples[s])
		}
		covers := "—"
		if !math.IsNaN(c.CalibratedJ) {
			covers = map[bool]string{true: "yes", false: "no"}[c.Covered]
		}
		fmt.Fprintf(tw, " %s\t| %s\t| %s%%\t| %s\t| %d\t| %d\t| %s\t|\n", num(c.CalibratedJ, 1), num(c.CalibratedUncJ, 1),
			signed(100*(c.CalibratedJ-c.CounterJ)/c.CounterJ, 2), covers, c.Expected, c.Gaps, c.Quality)
	}
	tw.Flush()
	for _, c := range cs {
		if c.Snapped {
			fmt.Fprintln(w, "\nPhase edges snapped to the nearest refresh of the aligned reference counter (within 110 ms): "+
				"the counter is exact there, ±edge J is the refresh brackets' width times power.")
			break
		}
	}
}
