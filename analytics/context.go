package analytics

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// RunContext is what went on besides the load during a run's cycles.
type RunContext struct {
	// Device state over the cycles: SM clock mean and minimum (MHz),
	// hottest temperature (°C), the union of throttle-reason bits.
	SMClockMeanMHz, SMClockMinMHz, TempMaxC float64
	ThrottleReasons                         uint64
	StateSamples                            int
	// Server metrics scraped during the cycles: for each gauge its mean,
	// for each counter its increase summed over the cycles' windows (last −
	// first inside each), by metric name and labels. Known ratios
	// (prefix-cache hit rate, speculative acceptance, mean queue time) are
	// derived where the server exposes their parts.
	Gauges, Increases map[string]float64
	Derived           map[string]float64
}

// EdgeTolerance is how far from a window's edge a scrape may be and still
// stand for the counter's value at that edge.
const EdgeTolerance = int64(1e9)

// counterName reports whether a scraped series is cumulative.
func counterName(name string) bool {
	return strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") ||
		strings.HasSuffix(name, "_bucket")
}

func runContext(ctx context.Context, tr TableReader, r *RunResult, windows [][2]int64) (*RunContext, error) {
	if len(windows) == 0 {
		return nil, nil
	}
	from, to := windows[0][0], windows[0][1]
	for _, w := range windows {
		from, to = min(from, w[0]), max(to, w[1])
	}
	in := func(t int64) bool {
		for _, w := range windows {
			if t >= w[0] && t <= w[1] {
				return true
			}
		}
		return false
	}
	c := &RunContext{SMClockMinMHz: math.NaN(), SMClockMeanMHz: math.NaN(), TempMaxC: math.NaN(),
		Gauges: map[string]float64{}, Increases: map[string]float64{}, Derived: map[string]float64{}}
	devs := map[string]bool{}
	for _, d := range r.Devices {
		devs[d] = true
	}
	st := schemas.NewRows(schemas.KindState).(*schemas.StateRows)
	if err := tr.ReadTable(ctx, st.Table(), schemas.Filter{RunIDs: []string{r.RunID}, From: from, To: to}); err != nil {
		return nil, err
	}
	uuids := st.Table().Columns[3].Data().([]string)
	var sum float64
	for i := range st.TS.V {
		if !devs[uuids[i]] || !in(st.TS.V[i]) {
			continue
		}
		c.StateSamples++
		sm := float64(st.SMClock.V[i])
		sum += sm
		c.SMClockMinMHz = nanMin(c.SMClockMinMHz, sm)
		c.TempMaxC = nanMax(c.TempMaxC, float64(st.Temperature.V[i]))
		c.ThrottleReasons |= st.Throttle.V[i]
	}
	if c.StateSamples > 0 {
		c.SMClockMeanMHz = sum / float64(c.StateSamples)
	}
	m := schemas.NewRows(schemas.KindMetric).(*schemas.MetricRows)
	if err := tr.ReadTable(ctx, m.Table(), schemas.Filter{RunIDs: []string{r.RunID}, From: from, To: to}); err != nil {
		return nil, err
	}
	// A cumulative counter is the server's, not the run's: between this
	// run's windows it also counts other configurations of a sweep and the
	// cool-downs. Its increase is taken window by window — from the scrape
	// at or just before the window's start to the one at or just after its
	// end (the scraper runs from just before a cycle to just after it; a
	// scrape more than EdgeTolerance away does not bracket), else from the
	// first to the last scrape inside — and summed; a drop is a restart,
	// counted from zero. Gauges are averaged over the scrapes inside.
	type sample struct {
		t int64
		v float64
	}
	byKey := map[string][]sample{}
	for i := range m.TS.V {
		if strings.HasSuffix(m.Name.V[i], "_bucket") {
			continue
		}
		key := m.Name.V[i]
		if l := m.Label.V[i]; l != "" {
			key += "{" + l + "}"
		}
		byKey[key] = append(byKey[key], sample{m.TS.V[i], m.Value.V[i]})
	}
	for k, ss := range byKey {
		sort.Slice(ss, func(a, b int) bool { return ss[a].t < ss[b].t })
		name := k
		if i := strings.IndexByte(k, '{'); i >= 0 {
			name = k[:i]
		}
		if !counterName(name) {
			var sum float64
			n := 0
			for _, x := range ss {
				if in(x.t) {
					sum += x.v
					n++
				}
			}
			if n > 0 {
				c.Gauges[k] = sum / float64(n)
			}
			continue
		}
		var inc float64
		seen := false
		for _, w := range windows {
			first, last := -1, -1
			for i, x := range ss {
				if x.t <= w[0] && x.t >= w[0]-EdgeTolerance {
					first = i // the latest at or just before the start
				}
				if last < 0 && x.t >= w[1] && x.t <= w[1]+EdgeTolerance {
					last = i // the earliest at or just after the end
				}
			}
			if first < 0 || last < 0 { // no bracket: the scrapes inside
				fi, la := -1, -1
				for i, x := range ss {
					if x.t >= w[0] && x.t <= w[1] {
						if fi < 0 {
							fi = i
						}
						la = i
					}
				}
				if first < 0 {
					first = fi
				}
				if last < 0 {
					last = la
				}
			}
			if first < 0 || last < 0 || last < first {
				continue
			}
			seen = true
			if d := ss[last].v - ss[first].v; d >= 0 {
				inc += d
			} else {
				inc += ss[last].v // the server restarted inside the window
			}
		}
		if seen {
			c.Increases[k] = inc
		}
	}
	// Ratios from parts, summed over label sets.
	total := func(prefix string) (float64, bool) {
		var v float64
		ok := false
		for k, x := range c.Increases {
			if k == prefix || strings.HasPrefix(k, prefix+"{") {
				v += x
				ok = true
			}
		}
		return v, ok
	}
	ratio := func(name, num, den string) {
		if n, ok := total(num); ok {
			if d, ok := total(den); ok && d > 0 {
				c.Derived[name] = n / d
			}
		}
	}
	ratio("prefix_cache_hit_rate", "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total")
	ratio("spec_decode_acceptance", "vllm:spec_decode_num_accepted_tokens_total", "vllm:spec_decode_num_draft_tokens_total")
	ratio("mean_queue_time_s", "vllm:request_queue_time_seconds_sum", "vllm:request_queue_time_seconds_count")
	ratio("mean_batch_size", "lem_ref:batch_size_sum", "lem_ref:batches_total")
	ratio("mean_queue_time_s", "lem_ref:queue_seconds_total", "lem_ref:requests_total")
	for k, v := range c.Gauges {
		if strings.HasPrefix(k, "vllm:gpu_cache_usage_perc") || strings.HasPrefix(k, "vllm:kv_cache_usage_perc") ||
			strings.HasPrefix(k, "llamacpp:kv_cache_usage_ratio") {
			c.Derived["kv_cache_usage_mean"] = v
		}
	}
	if c.StateSamples == 0 && len(byKey) == 0 {
		return nil, nil
	}
	return c, nil
}

func nanMin(a, b float64) float64 {
	if math.IsNaN(a) || b < a {
		return b
	}
	return a
}

func nanMax(a, b float64) float64 {
	if math.IsNaN(a) || b > a {
		return b
	}
	return a
}

func (c *RunContext) print(w io.Writer) {
	if c.StateSamples > 0 {
		fmt.Fprintf(w, "devices during the cycles: SM clock mean %.0f MHz (min %.0f), max temperature %.0f °C, throttle reasons 0x%x (%d state samples)\n",
			c.SMClockMeanMHz, c.SMClockMinMHz, c.TempMaxC, c.ThrottleReasons, c.StateSamples)
	}
	if len(c.Derived) > 0 {
		keys := make([]string, 0, len(c.Derived))
		for k := range c.Derived {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprint(w, "server during the cycles:")
		for _, k := range keys {
			fmt.Fprintf(w, " %s %.4g;", k, c.Derived[k])
		}
		fmt.Fprintln(w)
	}
}
