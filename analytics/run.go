package analytics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/llm-energy-measure/lem/schemas"
)

// CycleResult holds one cycle's figures. Energies are in joules, times in
// milliseconds.
type CycleResult struct {
	Cycle     uint32
	From, To  int64
	DurationS float64
	EnergyJ   float64            // all devices of the run, counter-based
	DeviceJ   map[string]float64 // each device's part of EnergyJ
	StaticJ   float64            // idle baseline power x duration
	DynamicJ  float64            // EnergyJ - StaticJ
	// DynamicUncJ is the random uncertainty of DynamicJ: the window's edge
	// uncertainty and the static part's (the baseline's own edge
	// uncertainty scaled to the cycle's duration), in quadrature.
	DynamicUncJ float64
	// Flags are the run-level rules' verdicts on this cycle
	// (negative_dynamic, outlier_cycle; see flags.go).
	Flags        []string
	EdgeUncJ     float64 // random uncertainty from counter resolution
	SystematicJ  float64 // sensor gain uncertainty (±5% of reading)
	Requests     int
	Failed       int
	PromptTokens uint64
	OutputTokens uint64
	JPerToken    float64 // EnergyJ / output tokens
	JPerRequest  float64 // EnergyJ / successful requests
	TokensPerJ   float64
	TTFTp50      float64
	TTFTp99      float64
	ITLp50       float64
	ITLp99       float64
	TPOTp50      float64
	E2Ep50       float64
	Quality      string
	Simulated    bool   // power came from the simulator
	Apportioned  bool   // a device is a MIG instance: its share of the board, not measured
	Method       string // "calibrated <source>" or "counter"
	// Per-request attribution of the cycle's energy (RunResult.Method);
	// only with a power series (Method "calibrated ...").
	PrefillJ, DecodeJ, UnattributedJ float64
	RequestJp50                      float64 // median energy of one request
	// Fit is the power model's fitted draws for this cycle (attribution
	// power-model; its Fallback says why token weights were used instead).
	Fit *PowerFit `json:",omitempty"`
	// Attribution is the method that split this cycle among its requests
	// (token-weighted where the power model fell back).
	Attribution string
	// Pacing is how closely an open-loop cycle's sends followed their
	// schedule (nil for a closed loop).
	Pacing *Pacing `json:",omitempty"`
}

// RunResult aggregates a run's cycles.
type RunResult struct {
	RunID, Experiment, Backend, Model string
	Config                            string // the run's normalised configuration (canonical JSON)
	Method                            string // per-request attribution method
	Devices                           []string
	BaselineW                         map[string]float64 // idle power per device, settled, before the run
	// BaselineUncW is the random uncertainty of BaselineW (the baseline
	// window's edge uncertainty over its duration).
	BaselineUncW map[string]float64
	// SeriesShiftMS is, per device, the shift applied to the power series
	// to put it on the aligned counter's time base (AlignSeries), in ms;
	// absent where none was applied.
	SeriesShiftMS map[string]float64
	Cycles        []CycleResult
	// Summary holds mean/std/CI/CV over cycles for each metric by name.
	Summary map[string]Stat
	Quality string
	// Flags are the run-level verdicts (too_few_cycles, outlier_cycle,
	// negative_dynamic); Outliers say which cycles and why.
	Flags       []string
	Outliers    []Outlier
	Trends      []Trend
	Simulated   bool
	Apportioned bool // some device is a MIG instance (figures apportioned)
	// Requests holds each request's attributed energy, all cycles.
	Requests []RequestEnergy
	// Correlation relates the devices' power to the load (nil when the run
	// has no power series or too few bins).
	Correlation *Correlation
	// Latency holds p50/p90/p99 of TTFT, ITL (per token), TPOT and E2E
	// over all successful requests of all cycles, with bootstrap 95% CIs.
	Latency map[string][]PercentileCI
	// Chunks and KernelStamped count the run's streamed chunks and those
	// stamped with the kernel's receive time of their own segment (the
	// rest: a later segment's time, or when the client read them;
	// docs/streaming.md); SentRequests and SentKernel its requests and those
	// whose send time is the kernel's transmit time.
	Chunks, KernelStamped    int
	SentRequests, SentKernel int
	// Context is what was happening besides the load: device clocks,
	// temperature and throttle reasons, and the server's own metrics.
	Context *RunContext
	// Node is the host's CPU package and DRAM energy per cycle (RAPL); nil
	// when none was collected.
	Node *NodeEnergy
	// Server holds the server's own per-request view where its responses
	// report one (llama.cpp, the reference server): medians over the
	// run's successful requests, beside the client's for cross-checking.
	Server *ServerView
}

// ServerView compares the server-reported timings with the client's.
type ServerView struct {
	Requests                           int     // with server timings
	QueueP50, PrefillP50, DecodeP50    float64 // ms, server-reported
	ClientTTFTP50, ClientDecodeSpanP50 float64 // ms: first token − sent, last token − first token
}

func serverView(reqs []schemas.Request) *ServerView {
	var q, p, d, ttft, span []float64
	for _, r := range reqs {
		if r.Status != schemas.StatusOK || (r.ServerPrefill == 0 && r.ServerDecode == 0) {
			continue
		}
		q = append(q, float64(r.ServerQueue)/1e6)
		p = append(p, float64(r.ServerPrefill)/1e6)
		d = append(d, float64(r.ServerDecode)/1e6)
		ttft = append(ttft, float64(r.FirstToken-r.Sent)/1e6)
		span = append(span, float64(r.LastToken-r.FirstToken)/1e6)
	}
	if len(p) == 0 {
		return nil
	}
	return &ServerView{Requests: len(p), QueueP50: Percentile(q, 50), PrefillP50: Percentile(p, 50), DecodeP50: Percentile(d, 50),
		ClientTTFTP50: Percentile(ttft, 50), ClientDecodeSpanP50: Percentile(span, 50)}
}

// Metrics summarised over cycles, in table order.
// wh_per_1000_requests and kwh_per_million_tokens are j_per_request and
// j_per_token in the units readers ask for (exact conversions, so they
// reach run_results and every export with their intervals).
var SummaryMetrics = []string{"energy_j", "dynamic_j", "idle_share", "prefill_j", "decode_j", "j_per_token", "j_per_request", "tokens_per_j",
	"wh_per_1000_requests", "kwh_per_million_tokens",
	"ttft_p50_ms", "itl_p50_ms", "tpot_p50_ms", "e2e_p50_ms", "throughput_tok_s"}

// ErrNoRun is returned for a run without start and end events.
var ErrNoRun = errors.New("run has no complete cycle")

// Options tune an analysis.
type Options struct {
	// Method attributes each slice's dynamic energy: MethodPowerModel
	// (the default), MethodTokens or MethodEqual. Static energy is always
	// shared by time in the system.
	Method string
}

// AnalyzeRun computes the results of runID from store (attribution by
// AttributionMethod).
func AnalyzeRun(ctx context.Context, store Store, runID string) (*RunResult, error) {
	return AnalyzeRunWith(ctx, store, runID, Options{})
}

// AnalyzeRunWith is AnalyzeRun with options.
func AnalyzeRunWith(ctx context.Context, store Store, runID string, opt Options) (*RunResult, error) {
	if opt.Method == "" {
		opt.Method = AttributionMethod
	}
	if opt.Method != MethodTokens && opt.Method != MethodEqual && opt.Method != MethodPowerModel {
		return nil, fmt.Errorf("unknown attribution method %q (want %s, %s or %s)", opt.Method, MethodPowerModel, MethodTokens, MethodEqual)
	}
	evs, err := store.RunEvents(ctx, runID)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("run %q: %w", runID, ErrNoRun)
	}
	res := &RunResult{RunID: runID, Experiment: evs[0].Experiment, Backend: evs[0].Backend, Model: evs[0].Model, Config: evs[0].Config,
		Devices: evs[0].Devices, BaselineW: map[string]float64{}, BaselineUncW: map[string]float64{}, SeriesShiftMS: map[string]float64{}, Summary: map[string]Stat{}, Quality: QualityOK}
	starts, ends := map[uint32]int64{}, map[uint32]int64{}
	var baseFrom, baseTo int64
	for _, e := range evs {
		switch e.Phase {
		case schemas.RunBaseline:
			baseTo = e.TS
		case schemas.RunStart:
			// Events are in time order: with a baseline, the first start
			// opens it and a second start of cycle 0 follows it.
			if baseFrom == 0 {
				baseFrom = e.TS
			}
			starts[e.Cycle] = e.TS
		case schemas.RunEnd:
			ends[e.Cycle] = e.TS
		}
	}
	if baseTo == 0 || baseFrom >= baseTo {
		baseFrom, baseTo = 0, 0
	}
	reqs, err := store.Requests(ctx, runID)
	if err != nil {
		return nil, err
	}
	res.Server = serverView(reqs)
	toks, err := store.Tokens(ctx, runID)
	if err != nil {
		return nil, err
	}
	for _, q := range reqs {
		res.Chunks += len(toks[q.ID])
		res.KernelStamped += int(q.KernelStamped)
		res.SentRequests++
		if q.SentKernel {
			res.SentKernel++
		}
	}
	// Each cycle's requests, as views of reqs (grouped by cycle, in
	// schedule order within one): no copies.
	sort.SliceStable(reqs, func(a, b int) bool { return reqs[a].Cycle < reqs[b].Cycle })
	byCycle := map[uint32][]schemas.Request{}
	for i := 0; i < len(reqs); {
		j := i
		for j < len(reqs) && reqs[j].Cycle == reqs[i].Cycle {
			j++
		}
		byCycle[reqs[i].Cycle] = reqs[i:j:j]
		i = j
	}
	var cycles [][2]int64
	for c := uint32(0); ; c++ {
		s, ok1 := starts[c]
		e, ok2 := ends[c]
		if !ok1 || !ok2 {
			break
		}
		cycles = append(cycles, [2]int64{s, e})
	}
	// The devices' readings and series are read a span of cycles at a
	// time (LoadSpan), so memory follows the span, not the run; a short
	// run is one span, baseline included.
	var windows [][2]int64
	var pbins [][]float64
	hasSeries := false
	for _, g := range loadGroups(baseFrom, baseTo, cycles, LoadSpan) {
		devs, err := loadDevices(ctx, store, res, g.from-loadMargin, g.to+loadMargin)
		if err != nil {
			return nil, err
		}
		if g.baseline {
			for _, d := range res.Devices {
				w := devs[d].window(baseFrom, baseTo)
				res.BaselineW[d] = w.Joules / (float64(baseTo-baseFrom) / 1e9)
				res.BaselineUncW[d] = w.EdgeUncJ / (float64(baseTo-baseFrom) / 1e9)
			}
		}
		for c := g.first; c < g.last; c++ {
			s, e := cycles[c][0], cycles[c][1]
			cr := cycleResult(uint32(c), s, e, res, devs, byCycle[uint32(c)], toks)
			cr.Pacing = pacing(res.Config, byCycle[uint32(c)])
			if err := attributeCycle(&cr, res, devs, byCycle[uint32(c)], toks, opt.Method); err != nil {
				return nil, err
			}
			res.Cycles = append(res.Cycles, cr)
			res.Quality = worse(res.Quality, cr.Quality)
			res.Simulated = res.Simulated || cr.Simulated
			res.Apportioned = res.Apportioned || cr.Apportioned
			// The devices' summed power on the correlation's grid.
			w := [2]int64{s, e}
			windows = append(windows, w)
			var bins []float64
			for _, d := range res.Devices {
				if dd := devs[d]; len(dd.power) > 0 {
					hasSeries = true
					bins = addBins(bins, powerBins(w, dd.power, dd.hold()))
				}
			}
			pbins = append(pbins, bins)
		}
	}
	if len(res.Cycles) == 0 {
		return nil, fmt.Errorf("run %q: %w", runID, ErrNoRun)
	}
	summarise(res)
	flagRun(res)
	if hasSeries {
		res.Correlation = correlateBins(windows, pbins, reqs, toks)
	}
	res.Latency = latencyPercentiles(reqs, toks)
	if tr, ok := store.(TableReader); ok {
		if res.Context, err = runContext(ctx, tr, res, windows); err != nil {
			return nil, err
		}
		if res.Node, err = nodeEnergy(ctx, store, tr, evs[0].Host, res.Cycles); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// latencyPercentiles pools the run's successful requests.
func latencyPercentiles(reqs []schemas.Request, toks map[string][]schemas.Token) map[string][]PercentileCI {
	var ttft, itl, tpot, e2e []float64
	for _, q := range reqs {
		if q.Status != schemas.StatusOK || q.FirstToken == 0 {
			continue
		}
		ttft = append(ttft, float64(q.FirstToken-q.Sent)/1e6)
		e2e = append(e2e, float64(q.Done-q.Sent)/1e6)
		if q.OutputTokens > 1 {
			tpot = append(tpot, float64(q.LastToken-q.FirstToken)/1e6/float64(q.OutputTokens-1))
		}
		ts := toks[q.ID]
		for i := 1; i < len(ts); i++ {
			if n := ts[i].Tokens; n > 0 {
				g := float64(ts[i].TS-ts[i-1].TS) / 1e6 / float64(n)
				for k := uint32(0); k < n; k++ {
					itl = append(itl, g)
				}
			}
		}
	}
	out := map[string][]PercentileCI{}
	for name, xs := range map[string][]float64{"ttft_ms": ttft, "itl_ms": itl, "tpot_ms": tpot, "e2e_ms": e2e} {
		for _, p := range []float64{50, 90, 99} {
			out[name] = append(out[name], BootstrapPercentile(xs, p))
		}
	}
	return out
}

// cycleGetters read each summary metric from a cycle.
var cycleGetters = map[string]func(*CycleResult) float64{
	"energy_j": func(c *CycleResult) float64 { return c.EnergyJ }, "dynamic_j": func(c *CycleResult) float64 { return c.DynamicJ },
	"j_per_token": func(c *CycleResult) float64 { return c.JPerToken }, "j_per_request": func(c *CycleResult) float64 { return c.JPerRequest },
	"tokens_per_j": func(c *CycleResult) float64 { return c.TokensPerJ }, "ttft_p50_ms": func(c *CycleResult) float64 { return c.TTFTp50 },
	"itl_p50_ms": func(c *CycleResult) float64 { return c.ITLp50 }, "tpot_p50_ms": func(c *CycleResult) float64 { return c.TPOTp50 },
	"e2e_p50_ms":       func(c *CycleResult) float64 { return c.E2Ep50 },
	"prefill_j":        func(c *CycleResult) float64 { return c.PrefillJ },
	"decode_j":         func(c *CycleResult) float64 { return c.DecodeJ },
	"throughput_tok_s": func(c *CycleResult) float64 { return float64(c.OutputTokens) / c.DurationS },
	"idle_share":       func(c *CycleResult) float64 { return c.StaticJ / c.EnergyJ },
	"duration_s":       func(c *CycleResult) float64 { return c.DurationS },
	// 1 Wh = 3,600 J; 1 kWh = 3.6e6 J.
	"wh_per_1000_requests":   func(c *CycleResult) float64 { return c.JPerRequest * 1000 / 3600 },
	"kwh_per_million_tokens": func(c *CycleResult) float64 { return c.JPerToken * 1e6 / 3.6e6 },
}

func cycleMetric(c *CycleResult, m string) float64 {
	if f, ok := cycleGetters[m]; ok {
		return f(c)
	}
	return math.NaN()
}

// summarise fills r.Summary from its cycles.
func summarise(r *RunResult) {
	for _, m := range SummaryMetrics {
		xs := make([]float64, len(r.Cycles))
		for i := range r.Cycles {
			xs[i] = cycleMetric(&r.Cycles[i], m)
		}
		st := Summarise(xs)
		if st.N < MinCyclesForCI {
			st.CI95 = math.NaN() // too few cycles to state an interval
		}
		r.Summary[m] = st
	}
}

// LoadSpan is the most run time analysis holds the devices' readings and
// power series of at once: cycles are analysed a span of them at a time
// (a cycle longer than this alone). 30 min of 64 GPUs' 50 Hz series is
// about 6 M samples.
var LoadSpan = int64(30 * 60e9)

// loadMargin widens a span's reads: counter readings up to 10 s apart
// (the agent's CPU budget) must still bracket its first and last windows.
const loadMargin = int64(12e9)

// loadGroup is a span of consecutive cycles [first, last) read together,
// the baseline with the first when baseline is set.
type loadGroup struct {
	from, to    int64
	first, last int
	baseline    bool
}

// loadGroups packs the baseline and the cycles, in order, into spans of at
// most span ns (a longer cycle or baseline alone).
func loadGroups(baseFrom, baseTo int64, cycles [][2]int64, span int64) []loadGroup {
	var out []loadGroup
	var g *loadGroup
	add := func(from, to int64, cycle int, baseline bool) {
		if g != nil && max(g.to, to)-g.from > span {
			out = append(out, *g)
			g = nil
		}
		if g == nil {
			g = &loadGroup{from: from, to: to, first: cycle, last: cycle}
		}
		g.from, g.to = min(g.from, from), max(g.to, to)
		if baseline {
			g.baseline = true
		} else {
			g.last = cycle + 1
		}
	}
	if baseFrom != 0 && baseTo > baseFrom {
		add(baseFrom, baseTo, 0, true)
	}
	for c, w := range cycles {
		add(w[0], w[1], c, false)
	}
	if g != nil {
		out = append(out, *g)
	}
	return out
}

// loadDevices reads the run's devices' counter readings and best power
// series in [from, to], each series placed on the counter's time base
// when a fit says so (AlignSeries; the first span's shift is the one
// reported).
func loadDevices(ctx context.Context, store Store, res *RunResult, from, to int64) (map[string]*deviceData, error) {
	devs := map[string]*deviceData{}
	var spanReadings map[string][]Reading
	var spanPower map[string]map[string][]schemas.PowerSample
	if sr, ok := store.(SpanReader); ok {
		var err error
		if spanReadings, spanPower, err = sr.Span(ctx, res.Devices, from, to); err != nil {
			return nil, err
		}
	}
	for _, d := range res.Devices {
		var rs []Reading
		var ps []schemas.PowerSample
		var src string
		if spanReadings != nil {
			rs = spanReadings[d]
			ps, src = pickSeries(spanPower[d])
		} else {
			var err error
			if rs, err = store.Energy(ctx, d, from, to); err != nil {
				return nil, err
			}
			if ps, src, err = Power(ctx, store, d, from, to); err != nil {
				return nil, err
			}
		}
		dd := &deviceData{readings: rs, power: ps, source: src}
		if len(ps) > 0 {
			var fit DelayFit
			var shifted bool
			if dd.power, fit, shifted = AlignSeries(rs, ps, dd.hold()); shifted {
				if _, ok := res.SeriesShiftMS[d]; !ok {
					res.SeriesShiftMS[d] = float64(fit.Delay) / 1e6
				}
			}
		}
		devs[d] = dd
	}
	return devs, nil
}

// deviceData holds one device's counter readings and power series.
type deviceData struct {
	readings []Reading
	power    []schemas.PowerSample
	source   string
}

// hold is how long one sample of the series stands for: up to three sample
// periods (a longer hole is a gap).
func (d *deviceData) hold() int64 {
	if sensor, _ := SplitSource(d.source); sensor == schemas.SourceNVMLInstant {
		return 300e6
	}
	return 60e6
}

// window is the device's energy over [from, to]: the power series
// calibrated to the counter when there is one (the counter fixes how much,
// the samples when), else the counter interpolated. Without a series,
// quality comes from the counter's coverage; with one, from the series'
// (calibratedQuality); with calibration the edge uncertainty is half a
// sample period of power at each edge.
func (d *deviceData) window(from, to int64) Window {
	if len(d.power) == 0 {
		return WindowEnergy(d.readings, from, to)
	}
	w := Window{From: from, To: to, Source: d.source, Joules: math.NaN()}
	w.Simulated = d.source == schemas.SourceSim
	_, w.Apportioned = SplitSource(d.source)
	if known, q := WindowCoverage(d.readings, d.power, d.hold(), from, to).Known(); !known {
		w.Quality = q
		return w
	}
	w.Joules = CalibratedEnergy(d.readings, d.power, d.hold(), from, to)
	w.Quality = calibratedQuality(d.readings, d.power, d.hold(), from, to)
	w.EdgeUncJ = CalibratedUncJ(d.readings, d.power, d.hold(), from, to)
	return w
}

// Terms of a calibrated window's stated uncertainty, fitted to nothing:
// chosen from what the errors are made of, and held to the coverage test
// (TestIntervalsCoverTheTruth, docs/methodology.md "Coverage").
var (
	// StepTiming: where power changes near an edge, the samples may place
	// the change this far off the counter (20 ms samples, the buffer's
	// time base, the counter's refresh): ±|ΔP|·StepTiming.
	StepTiming = 0.05
	// ShapeError: inside one counter interval the samples' shape fixes how
	// the interval's energy splits at an edge; short spikes between
	// samples move up to this share of the smaller side.
	ShapeError = 0.03
)

// CalibratedUncJ is the 95% uncertainty of a calibrated window: at each
// edge the timing of a power change (the range of the samples within
// ±100 ms × StepTiming)
// and the split of its counter interval (ShapeError × the smaller side),
// and the counter readings' timing (1.96 × calibrationSigmaJ), in
// quadrature.
func CalibratedUncJ(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) float64 {
	pts, _ := series(rs)
	v := math.Pow(1.96*calibrationSigmaJ(pts, rs, ps, hold, from, to), 2)
	for _, t := range []int64{from, to} {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range ps[sort.Search(len(ps), func(i int) bool { return ps[i].TS >= t-CounterRefresh }):] {
			if p.TS > t+CounterRefresh {
				break
			}
			lo, hi = math.Min(lo, p.Power.Watts()), math.Max(hi, p.Power.Watts())
		}
		if hi > lo {
			v += math.Pow((hi-lo)*StepTiming, 2)
		}
		// The counter interval holding t, split at t.
		k := sort.Search(len(pts), func(i int) bool { return pts[i].t > t })
		if k > 0 && k < len(pts) {
			a, b := pts[k-1].t, pts[k].t
			l, h := max(a, from), min(b, to)
			if h > l {
				part, _ := IntegratePower(ps, l, h, hold)
				all, _ := IntegratePower(ps, a, b, hold)
				v += math.Pow(ShapeError*math.Min(part, all-part), 2)
			}
		}
	}
	return math.Sqrt(v)
}

// ReadTiming is how far a counter reading's value may lie from the time
// analytics gives it (uniform, ±): a plain read returns the last 100 ms
// refresh and is shifted by CounterLag, so ±50 ms; an aligned read is
// taken just after a refresh, ±5 ms; sources stamped at the change itself
// (the shared trace, the simulator) ±0.
func ReadTiming(source string) float64 {
	switch sensor, _ := SplitSource(source); sensor {
	case schemas.SourceNVMLCounter:
		return CounterRefresh / 2 / 1e9
	case schemas.SourceNVMLCounterAligned:
		return 0.005
	}
	return 0
}

// calibrationSigmaJ is the standard deviation of a calibrated window's
// energy from the timing of the counter readings that calibrate it. A
// reading k whose value belongs δk earlier than its time moves energy
// Pk·δk between the intervals on either side of it; inside the window
// that cancels, so only the readings around its edges count, each by how
// differently the window covers its two intervals:
//
//	error = Σk Pk·(f(k+1) − f(k))·δk,
//
// f(k) the share of interval k's samples inside the window, Pk the power
// at reading k, δk uniform within ±ReadTiming (variance τ²/3).
// pts is series(rs), one point per reading.
func calibrationSigmaJ(pts []point, rs []Reading, ps []schemas.PowerSample, hold, from, to int64) float64 {
	n := len(pts)
	if n < 2 || len(ps) == 0 {
		return 0
	}
	// The intervals that hold an edge: around the readings bracketing from
	// and to.
	lo := max(sort.Search(n, func(i int) bool { return pts[i].t >= from })-1, 0)
	hi := min(sort.Search(n, func(i int) bool { return pts[i].t > to }), n-1)
	share := func(k int) float64 { // interval k: pts[k-1]..pts[k]; 0 outside
		if k <= 0 || k >= n {
			return 0
		}
		a, b := pts[k-1].t, pts[k].t
		l, h := max(a, from), min(b, to)
		if h <= l {
			return 0
		}
		all, _ := IntegratePower(ps, a, b, hold)
		part, _ := IntegratePower(ps, l, h, hold)
		if all <= 0 {
			return float64(h-l) / float64(b-a)
		}
		return part / all
	}
	// Reads a whole number of refreshes apart (a regular ticker) see the
	// same phase of the refresh: one δ for the group, whose terms add
	// before squaring (for steady power they cancel). Reads at irregular
	// spacing have independent δ.
	var v, group float64
	start := pts[lo].t
	for k := lo; k <= hi; k++ {
		if k > lo {
			gap := (pts[k].t - pts[k-1].t) % CounterRefresh
			if min(gap, CounterRefresh-gap) > SamePhase || pts[k].t-start > PhaseMemory {
				v += group * group / 3
				group, start = 0, pts[k].t
			}
		}
		tau := ReadTiming(rs[k].Source)
		c := share(k+1) - share(k)
		if tau == 0 || c == 0 {
			continue
		}
		e, _ := IntegratePower(ps, pts[k].t-CounterRefresh/2, pts[k].t+CounterRefresh/2, hold)
		pc := e / (CounterRefresh / 1e9) * c
		if sensor, _ := SplitSource(rs[k].Source); sensor != schemas.SourceNVMLCounter {
			// Aligned reads: each read's own latency, independent.
			v += math.Pow(pc*tau, 2) / 3
			continue
		}
		group += pc * tau
		// and each plain read's own jitter (the call, the scheduler).
		v += math.Pow(pc*ReadJitter, 2) / 3
	}
	v += group * group / 3
	return math.Sqrt(v)
}

// ReadJitter is the spread of each plain read's own timing (a ~3 ms
// call, the scheduler), independent between reads, ±.
const ReadJitter = 0.005

// SamePhase is how close to a whole number of refresh periods two reads
// must be apart to share the refresh's phase, and PhaseMemory how long
// they keep sharing it (the refresh's period is not exactly 100 ms of
// host time: on the H200 recordings the phase wanders within seconds).
const (
	SamePhase   = 2e6
	PhaseMemory = 2.5e9
)

// CounterBracket is how far from a window's edge the nearest counter
// reading may be: the collector stretches its counter period up to 10 s
// under its CPU budget, and a read lands a few ms late (readings 10.005 s
// apart were seen on the H200), so 10 s plus slack.
const CounterBracket = 12e9

// calibratedQuality flags a window of the calibrated timeline: gaps when
// the counter does not bracket it (no reading within CounterBracket before its start
// or after its end), when it resets inside, or when the series has a hole
// longer than hold inside it; too_short and low_resolution by the window's
// length as every window (lengthQuality). The
// counter's own spacing does not matter here: the series carries the
// timing, the counter only the totals between its readings.
func calibratedQuality(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) string {
	pts, _ := series(rs)
	before, after := false, false
	for i, p := range pts {
		before = before || (p.t <= from && p.t >= from-CounterBracket)
		after = after || (p.t >= to && p.t <= to+CounterBracket)
		if i > 0 && p.t > from && pts[i-1].t < to && (rs[i].Reset || rs[i].Energy < rs[i-1].Energy) {
			return QualityGaps
		}
	}
	if !before || !after {
		return QualityGaps
	}
	i := sort.Search(len(ps), func(i int) bool { return ps[i].TS > from })
	if i == 0 || i == len(ps) {
		return QualityGaps
	}
	for j := i; j < len(ps) && ps[j-1].TS < to; j++ {
		if ps[j].TS-ps[j-1].TS > hold {
			return QualityGaps
		}
	}
	if ps[len(ps)-1].TS < to {
		return QualityGaps
	}
	return lengthQuality(to - from)
}

func cycleResult(c uint32, from, to int64, run *RunResult, devs map[string]*deviceData,
	reqs []schemas.Request, toks map[string][]schemas.Token) CycleResult {
	cr := CycleResult{Cycle: c, From: from, To: to, DurationS: float64(to-from) / 1e9, Quality: QualityOK}
	var unc2, staticUnc2 float64
	cr.Method = "counter"
	for _, d := range run.Devices {
		dd := devs[d]
		if len(dd.power) > 0 {
			cr.Method = "calibrated " + dd.source
		}
		w := dd.window(from, to)
		cr.EnergyJ += w.Joules
		if cr.DeviceJ == nil {
			cr.DeviceJ = map[string]float64{}
		}
		cr.DeviceJ[d] = w.Joules
		unc2 += w.EdgeUncJ * w.EdgeUncJ
		cr.Quality = worse(cr.Quality, w.Quality)
		cr.Simulated = cr.Simulated || w.Simulated
		cr.Apportioned = cr.Apportioned || w.Apportioned
		if p, ok := run.BaselineW[d]; ok {
			cr.StaticJ += p * cr.DurationS
			su := run.BaselineUncW[d] * cr.DurationS
			staticUnc2 += su * su
		} else {
			cr.StaticJ = math.NaN()
		}
	}
	if len(run.Devices) == 0 {
		// A latency-only run (collectors.gpu: none): no energy at all.
		cr.EnergyJ, cr.StaticJ, cr.Quality = math.NaN(), math.NaN(), QualityNoPower
	}
	cr.DynamicJ = cr.EnergyJ - cr.StaticJ
	cr.EdgeUncJ = math.Sqrt(unc2)
	cr.DynamicUncJ = math.Sqrt(unc2 + staticUnc2)
	cr.SystematicJ = SensorGain * cr.EnergyJ
	var ttft, itl, tpot, e2e []float64
	ok := 0
	for _, q := range reqs {
		cr.Requests++
		if q.Status != schemas.StatusOK {
			cr.Failed++
			continue
		}
		ok++
		cr.PromptTokens += uint64(q.PromptTokens)
		cr.OutputTokens += uint64(q.OutputTokens)
		if q.FirstToken != 0 {
			ttft = append(ttft, float64(q.FirstToken-q.Sent)/1e6)
		}
		if q.Done != 0 {
			e2e = append(e2e, float64(q.Done-q.Sent)/1e6)
		}
		if q.OutputTokens > 1 && q.LastToken > q.FirstToken {
			tpot = append(tpot, float64(q.LastToken-q.FirstToken)/1e6/float64(q.OutputTokens-1))
		}
		// ITL per token: a chunk carrying n tokens after a gap g counts as
		// n inter-token latencies of g/n.
		ts := toks[q.ID]
		for i := 1; i < len(ts); i++ {
			n := max(ts[i].Tokens, 1)
			g := float64(ts[i].TS-ts[i-1].TS) / 1e6 / float64(n)
			for k := uint32(0); k < n; k++ {
				itl = append(itl, g)
			}
		}
	}
	cr.JPerToken = cr.EnergyJ / float64(cr.OutputTokens)
	cr.JPerRequest = cr.EnergyJ / float64(ok)
	cr.TokensPerJ = float64(cr.OutputTokens) / cr.EnergyJ
	cr.TTFTp50, cr.TTFTp99 = Percentile(ttft, 50), Percentile(ttft, 99)
	cr.ITLp50, cr.ITLp99 = Percentile(itl, 50), Percentile(itl, 99)
	cr.TPOTp50 = Percentile(tpot, 50)
	cr.E2Ep50 = Percentile(e2e, 50)
	return cr
}

// attributeCycle splits the cycle's energy among its requests, device by
// device (each with its own timeline and baseline), and sums per request.
func attributeCycle(cr *CycleResult, run *RunResult, devs map[string]*deviceData, reqs []schemas.Request, toks map[string][]schemas.Token, method string) error {
	byID := map[string]*RequestEnergy{}
	var order []string
	cr.PrefillJ, cr.DecodeJ, cr.UnattributedJ = math.NaN(), math.NaN(), math.NaN()
	// One pass over the devices' slices merged on a 5 ms grid, with the
	// devices' summed baseline as the static power.
	var sets [][]Slice
	var staticW float64
	for _, d := range run.Devices {
		dd := devs[d]
		if len(dd.power) == 0 {
			return nil // no time-resolved power: no attribution
		}
		sets = append(sets, Slices(dd.readings, dd.power, dd.hold(), cr.From, cr.To))
		staticW += run.BaselineW[d]
	}
	if len(sets) == 0 {
		return nil // a latency-only run (collectors.gpu: none): nothing to attribute
	}
	slices := sets[0]
	if len(sets) > 1 {
		slices = MergeSlices(sets, 5e6, cr.From, cr.To)
	}
	a, err := Attribute(slices, staticW, reqs, toks, method)
	run.Method = method
	if err != nil {
		return err
	}
	cr.PrefillJ, cr.DecodeJ, cr.UnattributedJ = a.PrefillJ, a.DecodeJ, a.UnattributedJ
	cr.Fit, cr.Attribution = a.Fit, a.Method
	for _, r := range a.Requests {
		acc, ok := byID[r.ID]
		if !ok {
			acc = &RequestEnergy{ID: r.ID, Cycle: cr.Cycle, PromptTokens: r.PromptTokens, OutputTokens: r.OutputTokens}
			byID[r.ID] = acc
			order = append(order, r.ID)
		}
		acc.StaticJ += r.StaticJ
		acc.DynamicJ += r.DynamicJ
		acc.PrefillJ += r.PrefillJ
		acc.DecodeJ += r.DecodeJ
	}
	var totals []float64
	for _, id := range order {
		r := byID[id]
		if r.OutputTokens > 0 {
			r.JPerOutputToken = r.TotalJ() / float64(r.OutputTokens)
		}
		if r.PromptTokens > 0 {
			r.JPerInputToken = r.TotalJ() / float64(r.PromptTokens)
		}
		totals = append(totals, r.TotalJ())
		run.Requests = append(run.Requests, *r)
	}
	cr.RequestJp50 = Percentile(totals, 50)
	return nil
}

// printFits says how each cycle's energy was split among requests: the
// power model's fitted draws, or why token weights stood in.
func printFits(w io.Writer, r *RunResult) {
	var fitted []string
	for _, c := range r.Cycles {
		f := c.Fit
		switch {
		case f == nil:
		case f.Fallback != "":
			fmt.Fprintf(w, "  attribution, cycle %d: token weights (power model not determined: %s)\n", c.Cycle, f.Fallback)
		default:
			fitted = append(fitted, fmt.Sprintf("%d: α %s W/prompt token, β %s W/request, R² %.2f", c.Cycle, sig(f.AlphaW, 3), sig(f.BetaW, 3), f.R2))
		}
	}
	if len(fitted) > 0 {
		fmt.Fprintf(w, "  attribution: power model fitted per cycle (dynamic power = α × prompt tokens prefilling + β × requests decoding) — %s\n", strings.Join(fitted, "; "))
	}
	for _, c := range r.Cycles {
		if f := c.Fit; f != nil && f.Fallback == "" && f.R2 < WeakFitR2 {
			fmt.Fprintf(w, "  attribution: the power model explains little of the power (R² under %.1f in some cycles): the prefill/decode split and each request's share are weakly determined\n", WeakFitR2)
			break
		}
	}
}

// WeakFitR2 is the R² below which printFits says the power model is
// weakly determined (the simulator's load model, say, follows neither
// prompt tokens nor requests decoding).
const WeakFitR2 = 0.2

// printStamps says which stamps a run's chunks and sends carry, and warns
// when more chunks carry a later time than the one per request that a
// server's closing usage chunk explains (read together with the last
// token): then the client fell behind its streams and the latency
// figures hold upper bounds.
func printStamps(w io.Writer, r *RunResult) {
	if r.Chunks == 0 {
		return
	}
	switch r.KernelStamped {
	case 0:
		fmt.Fprintf(w, "token stamps: all %d chunks when the client read them (no kernel receive times: another OS, or recorded before lem read them)", r.Chunks)
	case r.Chunks:
		fmt.Fprintf(w, "token stamps: all %d chunks carry the kernel's receive time of their own segment", r.Chunks)
	default:
		fmt.Fprintf(w, "token stamps: %d of %d chunks (%s%%) carry the kernel's receive time of their own segment, the rest a later time (that of a segment read with them, or when the client read them)",
			r.KernelStamped, r.Chunks, num(100*float64(r.KernelStamped)/float64(r.Chunks), 1))
	}
	if r.SentRequests > 0 {
		fmt.Fprintf(w, "; send times: %d of %d requests the kernel's transmit time", r.SentKernel, r.SentRequests)
	}
	fmt.Fprintln(w, " (docs/streaming.md)")
	if excess := r.Chunks - r.KernelStamped - r.SentRequests; r.KernelStamped > 0 && float64(excess) > StampLagShare*float64(r.Chunks) {
		fmt.Fprintf(w, "WARNING: %s%% of the chunks carry a later time than their own beyond the one per request a closing usage chunk explains: the client fell behind its streams (its CPU, or cores it shares with the server); TTFT, ITL and TPOT include those later times — fewer streams or more cores give exact ones\n",
			num(100*float64(excess)/float64(r.Chunks), 1))
	}
}

// StampLagShare is the share of a run's chunks that may carry a later
// time than their own, beyond one per request, before lem analyze warns.
const StampLagShare = 0.05

// PrintRun writes the results table of r.
func PrintRun(w io.Writer, r *RunResult) { PrintRunWith(w, r, DefaultFootprint) }

// PrintRunWith is PrintRun with the footprint's grid intensity and price.
func PrintRunWith(w io.Writer, r *RunResult, f Footprint) {
	fmt.Fprintf(w, "run %s  experiment %s  backend %s  model %s  devices %d  quality %s\n",
		r.RunID, r.Experiment, r.Backend, r.Model, len(r.Devices), r.Label())
	for _, d := range r.Devices {
		if p, ok := r.BaselineW[d]; ok {
			fmt.Fprintf(w, "  idle baseline %s: %.1f W\n", d, p)
		}
	}
	for _, d := range r.Devices {
		if ms, ok := r.SeriesShiftMS[d]; ok {
			fmt.Fprintf(w, "  power series of %s shifted %+.0f ms onto the counter's time base (fitted)\n", d, ms)
		}
	}
	if len(r.Cycles) > 0 {
		fmt.Fprintf(w, "  energy: %s (docs/methodology.md)\n", r.Cycles[0].Method)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "cycle\tdur s\tenergy J\t±edge J\t±5% J\tdynamic J\tprefill J\tdecode J\tunattr J\treqs\tfail\tout tok\tJ/token\tJ/req\treq J p50\tTTFT p50 ms\tTTFT p99 ms\tITL p50 ms\tITL p99 ms\tquality\t")
	var excluded []string
	excludedWhy := map[string]bool{}
	attributed := false
	for _, c := range r.Cycles {
		attributed = attributed || !math.IsNaN(c.PrefillJ)
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			c.Cycle, num(c.DurationS, 2), num(c.EnergyJ, 1), num(c.EdgeUncJ, 2), num(c.SystematicJ, 1), num(c.DynamicJ, 1),
			num(c.PrefillJ, 1), num(c.DecodeJ, 1), num(c.UnattributedJ, 1), c.Requests, c.Failed, c.OutputTokens, num(c.JPerToken, 4), num(c.JPerRequest, 2),
			num(c.RequestJp50, 2), num(c.TTFTp50, 1), num(c.TTFTp99, 1), num(c.ITLp50, 2), num(c.ITLp99, 2),
			qualityLabel(c.Quality, c.Simulated, c.Apportioned, c.Flags...))
		if math.IsNaN(c.EnergyJ) {
			excluded = append(excluded, fmt.Sprint(c.Cycle))
			excludedWhy[c.Quality] = true
		}
	}
	tw.Flush()
	if attributed {
		fmt.Fprintln(w, "  prefill + decode + unattr = energy (unattr: time with no request in the system); req J p50 is the median of each request's own attributed share")
		printFits(w, r)
	}
	fmt.Fprintln(w, "  J/req = energy / successful requests, so it includes the unattributed and idle energy")
	if len(excluded) > 0 {
		var why []string
		for q := range excludedWhy {
			why = append(why, q)
		}
		sort.Strings(why)
		fmt.Fprintf(w, "  left out of the means: cycles %s (%s): their energy is unknown, not zero\n",
			strings.Join(excluded, ", "), strings.Join(why, ", "))
	}
	for _, tr := range r.Trends {
		fmt.Fprintf(w, "  trend: %s moves with the cycles' order (Mann–Kendall S %+d, p %.3f; slope %s per cycle, p %.3f): the cycles are not independent draws; the interval below does not cover the drift\n",
			tr.Metric, tr.S, tr.P, sig(tr.Slope, 3), tr.SlopeP)
	}
	for _, o := range describeOutliers(r) {
		fmt.Fprintf(w, "  outlier_cycle: %s\n", o)
	}
	for _, c := range r.Cycles {
		for _, f := range c.Flags {
			if f == FlagNegativeDynamic {
				fmt.Fprintf(w, "  negative_dynamic: cycle %d dynamic %s J < −%s J (its uncertainty): the idle baseline does not hold for it; its dynamic and per-request figures are not to be used\n",
					c.Cycle, num(c.DynamicJ, 1), num(c.DynamicUncJ, 1))
			}
		}
	}
	if hasFlag(r.Flags, FlagTooFewCycles) {
		fmt.Fprintf(w, "over %d cycles (mean; too_few_cycles: no confidence interval under %d cycles — measure more):\n", len(r.Cycles), MinCyclesForCI)
	} else {
		fmt.Fprintf(w, "over %d cycles (mean ± 95%% CI, Student t; CV):\n", len(r.Cycles))
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range SummaryMetrics {
		s := r.Summary[m]
		cv := "CV " + num(100*s.CV, 1) + "%"
		if math.IsNaN(s.CV) {
			cv = ""
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", m, fmtCI(s), cv)
	}
	tw.Flush()
	PrintFootprint(w, r, f)
	if c := r.Correlation; c != nil {
		if r.Simulated {
			fmt.Fprint(w, "(simulated power: the simulator's load model, not a sensor) ")
		}
		pair := func(k string) string {
			p, sp := c.Pearson[k], c.Spearman[k]
			if math.IsNaN(p) && math.IsNaN(sp) {
				return "n/a (constant: a closed loop keeps it fixed)"
			}
			return fmt.Sprintf("%s/%s", num(p, 2), num(sp, 2))
		}
		lag := fmt.Sprintf("effective sensor lag %+.0f ms (r %.2f)", c.LagMS, c.LagCorr)
		if !(c.LagCorr >= MinLagCorr) {
			lag = fmt.Sprintf("effective sensor lag not determined (best r %s < %.1f)", num(c.LagCorr, 2), MinLagCorr)
		}
		fmt.Fprintf(w, "power vs load over %d bins of 100 ms: Pearson/Spearman with tokens/s %s, requests in system %s, decoding %s; %s\n",
			c.Bins, pair("tokens_per_s"), pair("requests_in_system"), pair("requests_decoding"), lag)
	}
	printStamps(w, r)
	printPacing(w, r)
	if len(r.Latency) > 0 {
		fmt.Fprint(w, "latency over all cycles (p50 / p90 / p99 ms, bootstrap 95% CI):")
		for _, name := range []string{"ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"} {
			fmt.Fprintf(w, "\n  %-8s", strings.TrimSuffix(name, "_ms"))
			for _, p := range r.Latency[name] {
				if math.IsNaN(p.Value) {
					fmt.Fprint(w, "  —")
					continue
				}
				fmt.Fprintf(w, "  %.4g [%.4g, %.4g]", p.Value, p.Low, p.High)
			}
		}
		fmt.Fprintln(w)
	}
	if c := r.Context; c != nil {
		c.print(w)
	}
	r.Node.print(w, r)
	if v := r.Server; v != nil {
		fmt.Fprintf(w, "server-reported, p50 over %d requests: queue %.1f ms, prefill %.1f ms, decode %.1f ms; client: TTFT %.1f ms, first→last token %.1f ms\n",
			v.Requests, v.QueueP50, v.PrefillP50, v.DecodeP50, v.ClientTTFTP50, v.ClientDecodeSpanP50)
	}
	if r.Simulated {
		fmt.Fprintln(w, "NOTE: power came from the simulator (source=sim): these figures exercise the pipeline and are not measurements.")
	}
	if r.Apportioned {
		fmt.Fprintln(w, "NOTE: some devices are MIG instances: their energy is a share of the board's (by SMs), apportioned, not measured per instance.")
	}
}

// Label is the run's quality with every mark a reader must see beside a
// figure: simulated, apportioned, and the run-level flags.
func (r *RunResult) Label() string {
	return qualityLabel(r.Quality, r.Simulated, r.Apportioned, r.Flags...)
}

func hasFlag(fs []string, f string) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}

// num formats v with prec decimals, or "—" when it is not a number (no
// data: never printed as 0, NaN or Inf).
func num(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// FormatStat renders a summary as "mean ± CI", "mean (n=N)" without an
// interval, or "—" when no cycle has the figure.
func FormatStat(s Stat) string { return fmtCI(s) }

func fmtCI(s Stat) string {
	if s.N == 0 || math.IsNaN(s.Mean) {
		return "— (no cycle has it)"
	}
	if math.IsNaN(s.CI95) {
		return fmt.Sprintf("%s (n=%d)", sig(s.Mean, 4), s.N)
	}
	return MeanCI(s.Mean, s.CI95)
}

// MeanCI renders mean ± half-width with the interval's two significant
// digits deciding the decimals of both ("540 ± 310", "0.53 ± 0.31"), never
// in exponent notation.
func MeanCI(mean, ci float64) string {
	if math.IsNaN(ci) || math.IsInf(ci, 0) || ci <= 0 {
		return sig(mean, 4)
	}
	e := int(math.Floor(math.Log10(ci))) - 1 // the interval's second digit
	dec := max(0, -e)
	q := math.Pow(10, float64(e))
	r := func(v float64) string { return strconv.FormatFloat(math.Round(v/q)*q, 'f', dec, 64) }
	return r(mean) + " ± " + r(ci)
}

// sig renders v with n significant digits, without exponent notation.
func sig(v float64, n int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	if v == 0 {
		return "0"
	}
	dec := max(0, n-1-int(math.Floor(math.Log10(math.Abs(v)))))
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func qualityLabel(q string, simulated, apportioned bool, flags ...string) string {
	var marks []string
	if q != QualityOK {
		marks = append(marks, q)
	}
	if simulated {
		marks = append(marks, "simulated")
	}
	if apportioned {
		marks = append(marks, "apportioned")
	}
	marks = append(marks, flags...)
	// "ok" only when nothing else applies: never "ok" beside a flag.
	if len(marks) == 0 {
		return QualityOK
	}
	return strings.Join(marks, ",")
}
