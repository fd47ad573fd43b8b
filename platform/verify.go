package platform

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// Check is one verification check's outcome.
type Check struct {
	Name   string `json:"name"`
	Status string `json:"status"` // pass, fail, warn, n/a
	Detail string `json:"detail"`
}

// Report is a bundle's verification: the recomputation and the
// plausibility checks, as the experiment page shows them.
type Report struct {
	RunID  string  `json:"run_id"`
	Hash   string  `json:"hash,omitempty"`
	Checks []Check `json:"checks"`
	// Mismatches lists the submitted figures the recomputation does not
	// reproduce (empty when it does).
	Mismatches []Mismatch `json:"mismatches,omitempty"`
}

// Mismatch is a submitted figure that differs from the recomputed one.
type Mismatch struct {
	Metric     string  `json:"metric"`
	Submitted  float64 `json:"submitted"`
	Recomputed float64 `json:"recomputed"`
}

// Passed says whether no check failed.
func (r *Report) Passed() bool {
	for _, c := range r.Checks {
		if c.Status == "fail" {
			return false
		}
	}
	return true
}

// Failures names the failed checks with their details.
func (r *Report) Failures() string {
	var b bytes.Buffer
	for _, c := range r.Checks {
		if c.Status == "fail" {
			fmt.Fprintf(&b, "%s: %s; ", c.Name, c.Detail)
		}
	}
	return string(bytes.TrimSuffix(b.Bytes(), []byte("; ")))
}

// resultTolerance is the relative difference allowed between a submitted
// and a recomputed figure: rounding of JSON floats and summation order,
// nothing a change of method could hide in.
const resultTolerance = 1e-9

// Verify recomputes the run's results from s (a bundle's events, or a
// store's) and checks them against submitted (nil: nothing submitted, as
// for a run published from the platform's own store) and for
// plausibility.
func Verify(ctx context.Context, s *store.Store, runID string, submitted map[string]float64) (*analytics.RunResult, *Report, error) {
	rep := &Report{RunID: runID}
	r, err := analytics.AnalyzeRun(ctx, s, runID)
	if err != nil {
		return nil, nil, fmt.Errorf("recomputing %s: %w", runID, err)
	}
	add := func(name, status, format string, a ...any) {
		rep.Checks = append(rep.Checks, Check{Name: name, Status: status, Detail: fmt.Sprintf(format, a...)})
	}
	// 1. The recomputation.
	if submitted == nil {
		add("recomputed", "pass", "figures computed by this platform from the raw events (%d metrics); none submitted", len(r.Summary))
	} else {
		got := summaryMeans(r)
		names := make([]string, 0, len(submitted))
		for k := range submitted {
			names = append(names, k)
		}
		for k := range got {
			if _, ok := submitted[k]; !ok {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		for _, k := range names {
			sv, sok := submitted[k]
			gv, gok := got[k]
			if sok && gok && math.Abs(sv-gv) <= resultTolerance*math.Max(math.Abs(sv), math.Abs(gv)) {
				continue
			}
			m := Mismatch{Metric: k, Submitted: math.NaN(), Recomputed: math.NaN()}
			if sok {
				m.Submitted = sv
			}
			if gok {
				m.Recomputed = gv
			}
			rep.Mismatches = append(rep.Mismatches, m)
		}
		if len(rep.Mismatches) == 0 {
			add("recomputed", "pass", "all %d submitted figures reproduced from the raw events", len(submitted))
		} else {
			mm := rep.Mismatches[0]
			add("recomputed", "fail", "%d of %d figures differ from the raw events' (first: %s submitted %s, recomputed %s)",
				len(rep.Mismatches), len(names), mm.Metric, fmtFloat(mm.Submitted), fmtFloat(mm.Recomputed))
		}
	}
	// 2. Plausibility against the hardware.
	info, err := runDeviceInfo(ctx, s, r)
	if err != nil {
		return nil, nil, err
	}
	checkPower(ctx, s, r, info, add)
	checkCounterVsSeries(ctx, s, r, add)
	checkBaseline(r, info, add)
	checkTokens(ctx, s, runID, add)
	checkClock(ctx, s, r, add)
	return r, rep, nil
}

func fmtFloat(v float64) string {
	if math.IsNaN(v) {
		return "none"
	}
	return fmt.Sprintf("%.6g", v)
}

type adder func(name, status, format string, a ...any)

// cycleSpan is the run's measured span: first cycle's start to last's end.
func cycleSpan(r *analytics.RunResult) (int64, int64) {
	if len(r.Cycles) == 0 {
		return 0, 0
	}
	return r.Cycles[0].From, r.Cycles[len(r.Cycles)-1].To
}

// checkPower: every power sample within 0 … 1.1 × the device's enforced
// power limit (the highest in its state samples, runDeviceInfo). A device
// without a known limit is checked for ≥ 0 only, and the detail says so.
func checkPower(ctx context.Context, s *store.Store, r *analytics.RunResult, info map[string]deviceInfo, add adder) {
	from, to := cycleSpan(r)
	if from == to {
		add("power_range", "n/a", "no measured cycles")
		return
	}
	var worst string
	var unlimited []string
	checked := 0
	for _, d := range r.Devices {
		limitW := info[d].LimitW
		if limitW == 0 {
			unlimited = append(unlimited, d)
		}
		by, err := s.PowerBySource(ctx, d, from, to)
		if err != nil {
			add("power_range", "fail", "reading power of %s: %v", d, err)
			return
		}
		for src, ps := range by {
			for _, p := range ps {
				checked++
				w := float64(p.Power) / 1e3
				if w < 0 || (limitW > 0 && w > 1.1*limitW) {
					worst = fmt.Sprintf("%s %s: %.1f W at %d (limit %.0f W)", d, src, w, p.TS, limitW)
				}
			}
		}
	}
	switch {
	case checked == 0:
		add("power_range", "n/a", "no power samples in the measured cycles")
	case worst != "":
		add("power_range", "fail", "a sample outside 0 … 1.1 × the power limit: %s", worst)
	case len(unlimited) > 0:
		add("power_range", "pass", "%d samples ≥ 0; no enforced power limit recorded for %s, so not checked against one", checked, strings.Join(unlimited, ", "))
	default:
		add("power_range", "pass", "%d samples within 0 … 1.1 × each device's enforced power limit", checked)
	}
}

// checkCounterVsSeries: per cycle and device, the energy counter's
// increase between the readings that bracket the cycle against the raw
// power series' integral over the same span (sample and hold, 60 ms),
// within 10% where both exist. A bundle whose power samples were edited
// without its counter (or the reverse) fails here.
func checkCounterVsSeries(ctx context.Context, s *store.Store, r *analytics.RunResult, add adder) {
	var n, bad int
	var worst float64
	var first string
	for _, c := range r.Cycles {
		for _, d := range r.Devices {
			rs, err := s.Energy(ctx, d, c.From-bundleMargin, c.To+bundleMargin)
			if err != nil {
				add("counter_vs_series", "fail", "reading the counter of %s: %v", d, err)
				return
			}
			ps, _, err := analytics.Power(ctx, s, d, c.From-bundleMargin, c.To+bundleMargin)
			if err != nil {
				add("counter_vs_series", "fail", "reading power of %s: %v", d, err)
				return
			}
			// The counter readings that bracket the cycle, and the
			// series over exactly their span: both measure that span.
			a, b := -1, -1
			for i, x := range rs {
				if x.TSAfter <= c.From {
					a = i
				}
				if b < 0 && x.TSBefore >= c.To {
					b = i
				}
			}
			if a < 0 || b < 0 || len(ps) == 0 {
				continue
			}
			reset := false
			for _, x := range rs[a+1 : b+1] {
				reset = reset || x.Reset
			}
			ta, tb := (rs[a].TSBefore+rs[a].TSAfter)/2, (rs[b].TSBefore+rs[b].TSAfter)/2
			if reset || ps[0].TS > ta+100e6 || ps[len(ps)-1].TS < tb-100e6 {
				continue
			}
			counter := float64(rs[b].Energy-rs[a].Energy) / 1e6
			series, k := analytics.IntegratePower(ps, ta, tb, 60e6)
			if k == 0 || counter <= 0 {
				continue
			}
			n++
			dev := math.Abs(series-counter) / counter
			if dev > worst {
				worst = dev
			}
			if dev > 0.10 {
				bad++
				if first == "" {
					first = fmt.Sprintf("cycle %d on %s: series %.1f J, counter %.1f J", c.Cycle, d, series, counter)
				}
			}
		}
	}
	switch {
	case n == 0:
		add("counter_vs_series", "n/a", "no cycle with both a counter and a power series")
	case bad > 0:
		add("counter_vs_series", "fail", "%d of %d cycle×device windows differ by over 10%% (%s)", bad, n, first)
	default:
		add("counter_vs_series", "pass", "%d cycle×device windows: the power series' integral meets the counter within %.1f%%", n, 100*worst)
	}
}

// checkBaseline: an idle baseline above 0 and below the power limit.
//
// Against a standard hardware profile the baseline must lie in its idle
// band (2–40% of the board's limit; outside: warn — idle depends on clocks
// and persistence mode — with the band and the value).
func checkBaseline(r *analytics.RunResult, info map[string]deviceInfo, add adder) {
	if len(r.BaselineW) == 0 {
		add("baseline", "warn", "no idle baseline: dynamic energy is unknown")
		return
	}
	var within, unprofiled []string
	for _, d := range r.Devices {
		w, ok := r.BaselineW[d]
		if !ok {
			continue
		}
		if math.IsNaN(w) || w <= 0 {
			add("baseline", "fail", "device %s: idle baseline %.1f W is not a power a powered device draws", d, w)
			return
		}
		di := info[d]
		if !di.Known {
			unprofiled = append(unprofiled, di.Name)
			continue
		}
		lo, hi := di.Profile.IdleRange()
		if w < lo || w > hi {
			add("baseline", "warn", "device %s (%s): idle baseline %.1f W outside the profile's plausible idle band %.0f–%.0f W", d, di.Profile.Name, w, lo, hi)
			return
		}
		within = append(within, fmt.Sprintf("%.1f W in %.0f–%.0f W (%s)", w, lo, hi, di.Profile.ID))
	}
	detail := fmt.Sprintf("idle baseline measured on %d devices", len(r.BaselineW))
	if len(within) > 0 {
		detail += "; within the profile's idle band: " + strings.Join(within, ", ")
	}
	if len(unprofiled) > 0 {
		detail += "; no standard profile for " + strings.Join(unprofiled, ", ")
	}
	add("baseline", "pass", "%s", detail)
}

// checkTokens: each successful request's streamed chunks carry the output
// tokens the server's usage report says (where chunks were recorded).
func checkTokens(ctx context.Context, s *store.Store, runID string, add adder) {
	reqs, err := s.Requests(ctx, runID)
	if err != nil {
		add("token_counts", "fail", "reading requests: %v", err)
		return
	}
	toks, err := s.Tokens(ctx, runID)
	if err != nil {
		add("token_counts", "fail", "reading tokens: %v", err)
		return
	}
	var n, bad int
	var first string
	for _, q := range reqs {
		ts := toks[q.ID]
		if q.Status != schemas.StatusOK || len(ts) == 0 {
			continue
		}
		n++
		var sum uint64
		for _, t := range ts {
			sum += uint64(t.Tokens)
		}
		if sum != uint64(q.OutputTokens) {
			bad++
			if first == "" {
				first = fmt.Sprintf("%s: %d streamed, %d reported", q.ID, sum, q.OutputTokens)
			}
		}
	}
	switch {
	case n == 0:
		add("token_counts", "n/a", "no streamed requests")
	case bad > 0:
		add("token_counts", "warn", "%d of %d requests stream a different count than the server's usage (%s)", bad, n, first)
	default:
		add("token_counts", "pass", "%d requests: streamed tokens equal the server's usage report", n)
	}
}

// checkClock: the run's requests lie inside its cycles, in order.
func checkClock(ctx context.Context, s *store.Store, r *analytics.RunResult, add adder) {
	reqs, err := s.Requests(ctx, r.RunID)
	if err != nil {
		add("clock", "fail", "reading requests: %v", err)
		return
	}
	var bad int
	var first string
	for _, q := range reqs {
		if q.Status != schemas.StatusOK {
			continue
		}
		ok := q.Sent >= q.Scheduled-int64(1e9) && q.FirstToken >= q.Sent && q.LastToken >= q.FirstToken && q.Done >= q.LastToken
		if !ok {
			bad++
			if first == "" {
				first = q.ID
			}
		}
	}
	if bad > 0 {
		add("clock", "fail", "%d requests' stamps are out of order (first: %s)", bad, first)
		return
	}
	add("clock", "pass", "%d requests: sent no more than 1 s before scheduled, sent ≤ first token ≤ last token ≤ done", len(reqs))
}

func isNaNOrInf(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
