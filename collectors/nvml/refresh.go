package nvml

import (
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/llm-energy-measure/lem/schemas"
)

// The energy counter refreshes on a steady grid: every 100.001 ms on the
// H200 trace (shared/data/h200-trace), residuals within the trace's own
// ±15 ms stamping error over 80 s. A plain read returns the value of the
// last refresh, 0–100 ms old, so its stamp is uncertain by ±50 ms — 4 J at
// idle and 35 J at 700 W on each window edge. An aligned read instead
// sleeps until just before the predicted refresh and polls until the
// value changes: the change is then bracketed by the two calls around it
// (a few ms), and the reading is stamped with that bracket. A bracket
// costs several calls (each ~3 ms of wall time and more of CPU), so once
// the grid is locked most reads are predicted: a single call shortly after
// the predicted refresh, stamped with it; every verifyEvery-th read
// brackets again to keep the grid locked.
const (
	refreshGuess = 100 * time.Millisecond
	// alignGuard is how long before the predicted refresh polling starts,
	// beyond the prediction's own uncertainty.
	alignGuard = 4 * time.Millisecond
	// acquirePolls bounds the calls of one read (~3 ms each): the first
	// read must wait for a change with no prediction, a little over one
	// refresh period, sleeping acquireGap between calls (a coarse bracket
	// that the next reads refine); later ones stop once the lead past the
	// predicted refresh. A read that sees no change is a miss (see
	// ReadEnergyAligned).
	acquirePolls = 16
	acquireGap   = 5 * time.Millisecond
	// alignMisses is how many misses in a row drop the prediction.
	alignMisses = 3
	// verifyEvery is how often a read brackets the refresh once the grid
	// is locked (after lockAfter brackets); the others are predicted.
	verifyEvery = 8
	lockAfter   = 4
	// settle is how long after a predicted refresh its single read comes,
	// beyond twice the grid's jitter.
	settle = 5 * time.Millisecond
)

// refreshGrid predicts the counter's refresh instants from the bracketed
// changes seen so far: anchor plus a whole number of periods.
type refreshGrid struct {
	anchor int64   // midpoint of the first bracketed change (host ns)
	last   int64   // midpoint of the latest bracketed change
	k      int64   // periods from anchor to last
	period float64 // ns
	unc    int64   // half-width of the latest bracket
	jitter int64   // decaying max of |observed − predicted| refresh
	misses int
	since  int // reads since the last bracket
	// Aligned and Missed count aligned reads that bracketed a change and
	// those that saw none; Predicted those stamped from the grid.
	Aligned, Missed, Predicted int
}

func (g *refreshGrid) known() bool { return g.anchor != 0 }

// Period returns the estimated refresh period (0 before a change was
// bracketed) and Jitter the decaying maximum of the refreshes' distance
// from their prediction.
func (g *refreshGrid) Period() time.Duration { return time.Duration(g.period) }

// Jitter: see Period.
func (g *refreshGrid) Jitter() time.Duration { return time.Duration(g.jitter) }

// next returns the first predicted refresh at or after t.
func (g *refreshGrid) next(t int64) int64 {
	n := math.Ceil(float64(t-g.last) / g.period)
	return g.last + int64(n*g.period)
}

// observe records a change bracketed by [lo, hi].
func (g *refreshGrid) observe(lo, hi int64) {
	mid := lo + (hi-lo)/2
	g.unc, g.misses, g.since = (hi-lo)/2, 0, 0
	g.Aligned++
	if !g.known() {
		g.anchor, g.last, g.k, g.period = mid, mid, 0, float64(refreshGuess)
		return
	}
	res := mid - g.next(mid-int64(g.period/2))
	g.jitter = max(abs(res), g.jitter*4/5)
	k := int64(math.Round(float64(mid-g.anchor) / g.period))
	if k > 0 && k > g.k {
		// The period from the longest baseline: bracket errors of a few ms
		// shrink as 1/k.
		g.period = float64(mid-g.anchor) / float64(k)
	}
	g.last, g.k = mid, k
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// lead is how long before a predicted refresh polling starts, and how
// long after it polling goes on.
func (g *refreshGrid) lead() int64 { return int64(alignGuard) + 2*g.unc + g.jitter }

func (g *refreshGrid) miss() {
	g.Missed++
	if g.misses++; g.misses >= alignMisses {
		*g = refreshGrid{Aligned: g.Aligned, Missed: g.Missed, Predicted: g.Predicted}
	}
}

// ReadEnergyAligned appends one counter reading of g to b, stamped with a
// bracket of the refresh instant its value refers to: TSBefore is the host
// time before the last call that still saw the old value, TSAfter the time
// after the first call that saw the new one (a few ms apart). It sleeps
// until shortly before the predicted refresh and polls across it. A read
// that sees no change (a miss, counted in g.Refresh.Missed) still appends
// its value, bracketed by what is known without a change: the refresh was
// after the end of the last poll minus one period and before the first
// poll. Its source is SourceCounterAligned.
func (rd *Reader) ReadEnergyAligned(g *GPU, b *schemas.EnergyBatch) error {
	if !g.HasCounter {
		return nil
	}
	grid := &g.Refresh
	if grid.known() && grid.Aligned >= lockAfter && grid.since < verifyEvery-1 {
		return rd.readPredicted(g, b)
	}
	grid.since = 0
	polls, deadline := acquirePolls, int64(math.MaxInt64)
	if grid.known() {
		lead := grid.lead()
		now := rd.now()
		next := grid.next(now + lead)
		if wait := next - lead - now; wait > 0 {
			rd.sleep(time.Duration(wait))
		}
		deadline = next + lead
	}
	firstAfter, prevBefore := int64(0), rd.now()
	prev, r := g.dev.GetTotalEnergyConsumption()
	firstAfter = rd.now()
	if r != nvml.SUCCESS {
		return nvErr("energy counter", r)
	}
	add := func(mj uint64, lo, hi int64) {
		reset := (g.haveEnergy && mj < g.lastEnergy) || mj < prev
		g.lastEnergy, g.haveEnergy = mj, true
		b.Readings = append(b.Readings, schemas.EnergyReading{TSBefore: lo, TSAfter: hi,
			Energy: schemas.Energy(mj) * schemas.Millijoule, Reset: reset})
	}
	after := firstAfter
	for i := 1; i < polls && after < deadline; i++ {
		if !grid.known() {
			rd.sleep(acquireGap)
		}
		before := rd.now()
		mj, r := g.dev.GetTotalEnergyConsumption()
		after = rd.now()
		if r != nvml.SUCCESS {
			return nvErr("energy counter", r)
		}
		if mj == prev {
			prevBefore = before
			continue
		}
		grid.observe(prevBefore, after)
		add(mj, prevBefore, after)
		return nil
	}
	grid.miss()
	grid.since = verifyEvery // the next read brackets again
	period := int64(refreshGuess)
	if grid.period > 0 {
		period = int64(grid.period)
	}
	add(prev, min(after-period, firstAfter), firstAfter)
	return nil
}

// readPredicted takes one counter value shortly after the next predicted
// refresh and stamps it with that refresh, ± the grid's jitter and last
// bracket.
func (rd *Reader) readPredicted(g *GPU, b *schemas.EnergyBatch) error {
	grid := &g.Refresh
	now := rd.now()
	target := grid.next(now + int64(time.Millisecond))
	if wait := target + int64(settle) + 2*grid.jitter - now; wait > 0 {
		rd.sleep(time.Duration(wait))
	}
	mj, r := g.dev.GetTotalEnergyConsumption()
	if r != nvml.SUCCESS {
		return nvErr("energy counter", r)
	}
	grid.since++
	grid.Predicted++
	u := grid.jitter + grid.unc
	reset := g.haveEnergy && mj < g.lastEnergy
	g.lastEnergy, g.haveEnergy = mj, true
	b.Readings = append(b.Readings, schemas.EnergyReading{TSBefore: target - u, TSAfter: target + u,
		Energy: schemas.Energy(mj) * schemas.Millijoule, Reset: reset})
	return nil
}
