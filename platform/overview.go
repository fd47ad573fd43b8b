package platform

import (
	"context"
	"encoding/binary"
	"errors"
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
	e.once.Do(func() {
		// Kept in the platform's state when the run was published; built
		// from the samples (and kept) otherwise.
		if s.cfg.State != nil {
			if ov, ok, err := s.cfg.State.LoadOverview(ctx, runID); err == nil && ok {
				e.ov = ov
				return
			}
		}
		e.ov, e.err = buildOverview(ctx, s.cfg.Store, devs, from, to)
		if e.err == nil && s.cfg.State != nil {
			if err := s.cfg.State.SaveOverview(ctx, runID, e.ov); err != nil {
				s.cfg.Log.Warn().Err(err).Str("run", runID).Msg("power overview not kept")
			}
		}
	})
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
	if s.cfg.State != nil {
		if err := s.cfg.State.SaveOverview(ctx, runID, ov); err != nil {
			return err
		}
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

// encode writes the overview in a compact binary form (little-endian):
// T0, slots, series; per series its device and source, then per slot
// min, max, sum (float64) and the count (int32).
func (ov *overview) encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(ov.T0))
	b = binary.LittleEndian.AppendUint32(b, uint32(ov.Slots))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ov.Series)))
	str := func(x string) { b = binary.LittleEndian.AppendUint32(b, uint32(len(x))); b = append(b, x...) }
	for _, se := range ov.Series {
		str(se.Device)
		str(se.Source)
		for k := range ov.Slots {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(se.Min[k]))
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(se.Max[k]))
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(se.Sum[k]))
			b = binary.LittleEndian.AppendUint32(b, uint32(se.N[k]))
		}
	}
	return b
}

func decodeOverview(b []byte) (*overview, error) {
	bad := errors.New("power overview: truncated or corrupt")
	if len(b) < 16 {
		return nil, bad
	}
	ov := &overview{T0: int64(binary.LittleEndian.Uint64(b)), Slots: int(binary.LittleEndian.Uint32(b[8:]))}
	n := int(binary.LittleEndian.Uint32(b[12:]))
	b = b[16:]
	str := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		l := int(binary.LittleEndian.Uint32(b))
		if len(b) < 4+l {
			return "", false
		}
		x := string(b[4 : 4+l])
		b = b[4+l:]
		return x, true
	}
	for range n {
		var se overviewSeries
		var ok1, ok2 bool
		se.Device, ok1 = str()
		se.Source, ok2 = str()
		if !ok1 || !ok2 || len(b) < ov.Slots*28 {
			return nil, bad
		}
		se.Min, se.Max, se.Sum, se.N = make([]float64, ov.Slots), make([]float64, ov.Slots), make([]float64, ov.Slots), make([]int32, ov.Slots)
		for k := range ov.Slots {
			se.Min[k] = math.Float64frombits(binary.LittleEndian.Uint64(b))
			se.Max[k] = math.Float64frombits(binary.LittleEndian.Uint64(b[8:]))
			se.Sum[k] = math.Float64frombits(binary.LittleEndian.Uint64(b[16:]))
			se.N[k] = int32(binary.LittleEndian.Uint32(b[24:]))
			b = b[28:]
		}
		ov.Series = append(ov.Series, se)
	}
	if len(b) != 0 {
		return nil, bad
	}
	return ov, nil
}

// loadOverview brings a run's overview into memory: the kept one, else
// built from the store (and kept).
func (s *Server) loadOverview(ctx context.Context, runID string) error {
	evs, err := s.cfg.Store.RunEvents(ctx, runID)
	if err != nil {
		return err
	}
	from, to, err := analytics.RunSpan(ctx, s.cfg.Store, []string{runID})
	if err != nil {
		return err
	}
	_, err = s.overview(ctx, runID, runDevices(evs), from-bundleMargin, to+bundleMargin)
	return err
}
