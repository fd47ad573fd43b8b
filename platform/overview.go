package platform

import (
	"context"
	"math"
	"sync"

	"github.com/llm-energy-measure/lem/analytics"
)

// OverviewRes is the resolution of a run's power overview: the timeline
// serves views whose buckets are at least this wide from it (bucket edges
// on whole multiples of it, so every bucket's min/max/mean is exact), and
// reads the samples only for narrower views.
const OverviewRes = int64(1e9)

// overview is a run's power at OverviewRes: per device, the minimum,
// maximum, sum and count of the samples in each slot from T0.
type overview struct {
	T0     int64
	Slots  int
	Series []overviewSeries
}

type overviewSeries struct {
	Device, Source string
	Min, Max, Sum  []float64
	N              []int32
}

const overviewCache = 16

type overviews struct {
	mu    sync.Mutex
	runs  map[string]*overviewEntry
	order []string
}

type overviewEntry struct {
	once sync.Once
	ov   *overview
	err  error
}

// overview returns (building once, then from memory) the run's overview.
func (s *Server) overview(ctx context.Context, runID string, devs []string, from, to int64) (*overview, error) {
	s.ovs.mu.Lock()
	if s.ovs.runs == nil {
		s.ovs.runs = map[string]*overviewEntry{}
	}
	e, ok := s.ovs.runs[runID]
	if !ok {
		e = &overviewEntry{}
		s.ovs.runs[runID] = e
		s.ovs.order = append(s.ovs.order, runID)
		if len(s.ovs.order) > overviewCache {
			delete(s.ovs.runs, s.ovs.order[0])
			s.ovs.order = s.ovs.order[1:]
		}
	}
	s.ovs.mu.Unlock()
	e.once.Do(func() { e.ov, e.err = buildOverview(ctx, s.cfg.Store, devs, from, to) })
	if e.err != nil {
		s.ovs.mu.Lock()
		delete(s.ovs.runs, runID) // try again next time
		s.ovs.mu.Unlock()
	}
	return e.ov, e.err
}

func buildOverview(ctx context.Context, st analytics.Store, devs []string, from, to int64) (*overview, error) {
	t0 := from - mod(from, OverviewRes)
	ov := &overview{T0: t0, Slots: int((to-t0)/OverviewRes) + 1}
	for _, d := range devs {
		ps, src, err := analytics.Power(ctx, st, d, from, to)
		if err != nil {
			return nil, err
		}
		se := overviewSeries{Device: d, Source: src, Min: make([]float64, ov.Slots), Max: make([]float64, ov.Slots),
			Sum: make([]float64, ov.Slots), N: make([]int32, ov.Slots)}
		for i := range se.Min {
			se.Min[i], se.Max[i] = math.Inf(1), math.Inf(-1)
		}
		for _, p := range ps {
			if p.TS < t0 || p.TS > to {
				continue
			}
			k := int((p.TS - t0) / OverviewRes)
			w := float64(p.Power) / 1e3
			se.Min[k], se.Max[k], se.Sum[k], se.N[k] = math.Min(se.Min[k], w), math.Max(se.Max[k], w), se.Sum[k]+w, se.N[k]+1
		}
		ov.Series = append(ov.Series, se)
	}
	return ov, nil
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// series aggregates the overview into buckets of width (a multiple of
// OverviewRes) over [from, to): buckets start on whole slots, so the
// first may begin before from.
func (ov *overview) series(from, to, width int64) []Series {
	per := int(width / OverviewRes)
	first := int((from - ov.T0) / OverviewRes)
	first -= first % per
	last := int((to - 1 - ov.T0) / OverviewRes)
	out := make([]Series, 0, len(ov.Series))
	for _, se := range ov.Series {
		s := Series{Device: se.Device, Source: se.Source}
		for b := max(first, 0); b <= last && b < ov.Slots; b += per {
			lo, hi, sum, n := math.Inf(1), math.Inf(-1), 0.0, int32(0)
			for k := b; k < b+per && k < ov.Slots; k++ {
				if se.N[k] == 0 {
					continue
				}
				lo, hi, sum, n = math.Min(lo, se.Min[k]), math.Max(hi, se.Max[k]), sum+se.Sum[k], n+se.N[k]
			}
			if n == 0 {
				continue // no samples: absent, never 0
			}
			s.T, s.Min, s.Max, s.Mean = append(s.T, ov.T0+int64(b)*OverviewRes), append(s.Min, lo), append(s.Max, hi), append(s.Mean, sum/float64(n))
			s.N += int(n)
		}
		out = append(out, s)
	}
	return out
}

// warmOverview builds the run's overview from st (an upload's own events,
// before ingest has stored them, or the platform's store) and keeps it,
// so that the run page's first view is as fast as the next.
func (s *Server) warmOverview(ctx context.Context, st analytics.Store, runID string) error {
	evs, err := st.RunEvents(ctx, runID)
	if err != nil {
		return err
	}
	from, to, err := analytics.RunSpan(ctx, st, []string{runID})
	if err != nil {
		return err
	}
	ov, err := buildOverview(ctx, st, runDevices(evs), from-bundleMargin, to+bundleMargin)
	if err != nil {
		return err
	}
	e := &overviewEntry{ov: ov}
	e.once.Do(func() {})
	s.ovs.mu.Lock()
	defer s.ovs.mu.Unlock()
	if s.ovs.runs == nil {
		s.ovs.runs = map[string]*overviewEntry{}
	}
	if _, ok := s.ovs.runs[runID]; !ok {
		s.ovs.order = append(s.ovs.order, runID)
	}
	s.ovs.runs[runID] = e
	for len(s.ovs.order) > overviewCache {
		delete(s.ovs.runs, s.ovs.order[0])
		s.ovs.order = s.ovs.order[1:]
	}
	return nil
}
