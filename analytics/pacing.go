package analytics

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/llm-energy-measure/lem/internal/gof"
	"github.com/llm-energy-measure/lem/schemas"
)

// FlagScheduleSlip: an open-loop cycle's requests did not leave on their
// schedule — the sends lagged it by more than the mean scheduled gap (at
// least ScheduleLateFloor) at p99, or their
// gaps fail the KS test at 1% against the configured process where the
// schedule's own gaps pass it. The load was not the one configured (the
// client host's CPU, most often: docs/streaming.md "Pacing"), so its
// figures are not those of the configured arrival process.
const FlagScheduleSlip = "schedule_slip"

// The lateness rule catches a client that fell behind: its sends queue up
// and lag by more and more (hundreds of ms on two saturated cores,
// docs/benchmarks.md). A send may leave up to the mean scheduled gap late
// at p99, and never less than ScheduleLateFloor: a millisecond or two of
// lateness at p99 (seen against a CPU-bound llama.cpp on two cores) moves
// a request within its own gap and leaves the process as configured; the
// KS test judges its shape.
const (
	ScheduleLateFloor = 5e6 // ns
	// MinPacingSends is the fewest sends a pacing verdict rests on.
	MinPacingSends = 20
)

// Pacing is how closely an open-loop cycle's sends followed its schedule
// (kernel transmit times where recorded, docs/streaming.md).
type Pacing struct {
	Process string  // poisson, gamma, constant or trace
	Rate    float64 // requests/s configured (0 for a trace)
	Sends   int     // requests that left
	// LateP50MS, LateP99MS: sent − scheduled.
	LateP50MS, LateP99MS float64
	// LateBoundMS is the p99 lateness the rule allows this cycle.
	LateBoundMS float64
	// KS is the sent gaps' Kolmogorov–Smirnov distance from the process's
	// gap distribution, ScheduleKS the scheduled gaps' (the seed's own
	// draw), KSCritical the 1% critical value; NaN where the process has
	// no distribution to test (constant, trace).
	KS, ScheduleKS, KSCritical float64
	Held                       bool
	// Why says what broke the schedule, or why no verdict was reached.
	Why string
}

// arrivalOf reads the open-loop arrival process of a run's stored
// configuration; ok is false for a closed loop or no configuration.
func arrivalOf(config string) (process string, rate, cv float64, ok bool) {
	var doc struct {
		Workload struct {
			Arrival struct {
				Process    string  `json:"process"`
				Rate       float64 `json:"rate"`
				Burstiness float64 `json:"burstiness"`
			} `json:"arrival"`
		} `json:"workload"`
	}
	if config == "" || json.Unmarshal([]byte(config), &doc) != nil {
		return "", 0, 0, false
	}
	a := doc.Workload.Arrival
	switch a.Process {
	case "poisson", "constant", "gamma", "trace":
		return a.Process, a.Rate, a.Burstiness, true
	}
	return "", 0, 0, false
}

// pacing judges one open-loop cycle's sends against its schedule (nil for
// a closed loop).
func pacing(config string, reqs []schemas.Request) *Pacing {
	process, rate, cv, ok := arrivalOf(config)
	if !ok {
		return nil
	}
	p := &Pacing{Process: process, Rate: rate, KS: math.NaN(), ScheduleKS: math.NaN(), KSCritical: math.NaN(), Held: true}
	type send struct{ scheduled, sent int64 }
	var ss []send
	for _, q := range reqs {
		if q.Sent != 0 && q.Scheduled != 0 {
			ss = append(ss, send{q.Scheduled, q.Sent})
		}
	}
	p.Sends = len(ss)
	if len(ss) < MinPacingSends {
		p.Why = fmt.Sprintf("%d sends, too few to judge (%d wanted)", len(ss), MinPacingSends)
		return p
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].scheduled < ss[j].scheduled })
	late := make([]float64, len(ss))
	sched, sent := make([]int64, len(ss)), make([]int64, len(ss))
	for i, s := range ss {
		late[i] = float64(s.sent-s.scheduled) / 1e6
		sched[i], sent[i] = s.scheduled, s.sent
	}
	sort.Slice(sent, func(i, j int) bool { return sent[i] < sent[j] })
	p.LateP50MS, p.LateP99MS = Percentile(late, 50), Percentile(late, 99)
	gaps := gof.Gaps(sched)
	mean := float64(sched[len(sched)-1]-sched[0]) / float64(len(sched)-1)
	p.LateBoundMS = math.Max(ScheduleLateFloor, mean) / 1e6
	var cdf func(float64) float64
	switch {
	case process == "poisson" && rate > 0:
		cdf = gof.Exponential(rate)
	case process == "gamma" && rate > 0 && cv > 0:
		cdf = gof.Gamma(rate, cv)
	}
	if cdf != nil {
		p.KS, p.ScheduleKS, p.KSCritical = gof.KS(gof.Gaps(sent), cdf), gof.KS(gaps, cdf), gof.Critical1(len(gaps))
	}
	switch {
	case p.LateP99MS > p.LateBoundMS:
		p.Held = false
		p.Why = fmt.Sprintf("sends left %s ms behind their schedule at p99 (allowed: %s ms)", sig(p.LateP99MS, 3), sig(p.LateBoundMS, 3))
	case p.KS > p.KSCritical && p.ScheduleKS <= p.KSCritical:
		p.Held = false
		p.Why = fmt.Sprintf("the gaps between sends are no longer %s: KS %s against a critical %s at 1%% (the schedule's own %s)",
			processName(process, rate, cv), num(p.KS, 3), num(p.KSCritical, 3), num(p.ScheduleKS, 3))
	case p.ScheduleKS > p.KSCritical:
		p.Why = fmt.Sprintf("the seed's schedule itself fails the KS test (%s against %s); sends judged by lateness alone", num(p.ScheduleKS, 3), num(p.KSCritical, 3))
	}
	return p
}

func processName(process string, rate, cv float64) string {
	switch process {
	case "gamma":
		return fmt.Sprintf("gamma at %s/s with CV %s", strconv.FormatFloat(rate, 'g', -1, 64), num(cv, 3))
	case "poisson":
		return fmt.Sprintf("Poisson at %s/s", strconv.FormatFloat(rate, 'g', -1, 64))
	}
	return process
}

// printPacing says whether an open-loop run's sends kept their schedule,
// cycle by cycle where one did not.
func printPacing(w io.Writer, r *RunResult) {
	var cycles []*Pacing
	var late []float64
	held := true
	for i := range r.Cycles {
		if p := r.Cycles[i].Pacing; p != nil {
			cycles = append(cycles, p)
			late = append(late, p.LateP99MS)
			held = held && p.Held
		}
	}
	if len(cycles) == 0 {
		return
	}
	p0 := cycles[0]
	fmt.Fprintf(w, "pacing (%s", p0.Process)
	if p0.Rate > 0 {
		fmt.Fprintf(w, " %s/s", strconv.FormatFloat(p0.Rate, 'g', -1, 64))
	}
	fmt.Fprintf(w, "): sends − schedule p99 %s ms (worst cycle)", sig(slices.Max(late), 3))
	if held {
		var ks []string
		for _, p := range cycles {
			if !math.IsNaN(p.KS) {
				ks = append(ks, num(p.KS, 3))
			}
		}
		if len(ks) > 0 {
			fmt.Fprintf(w, ", gaps' KS %s against a critical %s at 1%%", strings.Join(ks, ", "), num(p0.KSCritical, 3))
		}
		fmt.Fprintln(w, ": the schedule was kept")
		for _, c := range r.Cycles {
			if c.Pacing != nil && c.Pacing.Why != "" {
				fmt.Fprintf(w, "  cycle %d: %s\n", c.Cycle, c.Pacing.Why)
			}
		}
		return
	}
	fmt.Fprintln(w)
	for i := range r.Cycles {
		if p := r.Cycles[i].Pacing; p != nil && !p.Held {
			fmt.Fprintf(w, "WARNING: cycle %d (%s): %s — the load was not the configured one (the client's CPU, or cores it shares with the server: docs/streaming.md)\n",
				r.Cycles[i].Cycle, FlagScheduleSlip, p.Why)
		}
	}
}
