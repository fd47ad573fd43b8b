package nvml

import (
	"time"

	"github.com/llm-energy-measure/lem/schemas"
)

// clockWindow is how long buffer reads keep bounding the offset: long
// enough for reads at random phases to narrow the bounds to about the
// call's duration, short enough that a drifting clock stays inside them.
const clockWindow = 60 * time.Second

// sameClock is the offset under which the driver is taken to stamp on the
// host clock itself: its samples are then published unshifted, and the
// bounds measure how long after its stamp a sample becomes readable.
const sameClock = time.Second

// clockRead is one GetSamples call that returned samples: the host time
// before and after it, the newest driver stamp it returned, and (once the
// next call shows it) the oldest stamp it did not return yet.
type clockRead struct {
	before, after int64  // host ns
	newest, next  uint64 // driver µs; next 0 until known
}

// clockSync bounds host − driver offset the way NTP bounds a peer's: a
// sample returned by a call existed before the call returned (offset ≤
// after − newest), and a sample first returned by a later call did not
// exist when the earlier call began (offset ≥ before − next). Each read
// gives an interval about one sample period wide; their intersection over
// the window narrows to about a call's duration as reads land at different
// phases of the driver's 20 ms cadence.
type clockSync struct {
	reads []clockRead
	// Resets counts windows dropped because the bounds crossed (the host
	// clock stepped, or the driver's clock is not steady).
	Resets int
}

// observe records a call that returned samples. oldestNew is the oldest
// stamp newer than everything returned before (it bounds the previous
// read from below).
func (c *clockSync) observe(before, after int64, oldestNew, newest uint64) {
	if n := len(c.reads); n > 0 && c.reads[n-1].next == 0 {
		c.reads[n-1].next = oldestNew
	}
	c.reads = append(c.reads, clockRead{before: before, after: after, newest: newest})
	cut := 0
	for cut < len(c.reads)-1 && after-c.reads[cut].after > int64(clockWindow) {
		cut++
	}
	c.reads = c.reads[cut:]
	if lo, hi, _ := c.bounds(); lo > hi {
		c.Resets++
		c.reads = c.reads[len(c.reads)-1:]
	}
}

// bounds returns the offset interval and how many reads bounded it; ok is
// false before any read.
func (c *clockSync) bounds() (lo, hi int64, reads int) {
	lo, hi = -1<<62, 1<<62
	for _, r := range c.reads {
		hi = min(hi, r.after-int64(r.newest)*1000)
		if r.next != 0 {
			lo = max(lo, r.before-int64(r.next)*1000)
		}
	}
	if len(c.reads) > 0 && lo == -1<<62 {
		// Only the first read so far: the next sample is at most a few
		// periods behind the newest (a longer hole is a gap).
		lo = hi - int64(gapFactor*bufferPeriod) - (c.reads[0].after - c.reads[0].before)
	}
	return lo, hi, len(c.reads)
}

// estimate returns the current clock sample (ok false before any read).
func (c *clockSync) estimate(now int64) (schemas.ClockSample, bool) {
	lo, hi, n := c.bounds()
	if n == 0 {
		return schemas.ClockSample{}, false
	}
	mid := lo + (hi-lo)/2
	s := schemas.ClockSample{TS: now, Offset: mid, Low: lo, High: hi, Reads: uint32(n)}
	if mid > int64(sameClock) || mid < -int64(sameClock) {
		s.Applied = mid
	}
	return s, true
}
