package platform

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
)

// Series is one device's power over the requested span: at most Points
// buckets of equal width, each with the minimum, maximum and mean of the
// samples in it (a bucket without samples is absent, never 0); when the
// span holds no more samples than buckets, the samples themselves
// (Raw: min = max = mean).
type Series struct {
	Device string    `json:"device"`
	Source string    `json:"source"`
	Raw    bool      `json:"raw"`
	T      []int64   `json:"t"` // bucket start (raw: the sample's time), ns
	Min    []float64 `json:"min"`
	Max    []float64 `json:"max"`
	Mean   []float64 `json:"mean"`
	N      int       `json:"n"` // samples in the span
}

// Timeline is the data of the experiment page's power timeline.
type Timeline struct {
	FromNS   int64       `json:"from_ns"`
	ToNS     int64       `json:"to_ns"`
	BucketNS int64       `json:"bucket_ns"`
	Series   []Series    `json:"series"`
	Cycles   [][3]int64  `json:"cycles"`   // cycle (-1: the idle baseline), from, to
	Requests []TLRequest `json:"requests"` // those overlapping the span, up to MaxTimelineRequests
	// RequestsTotal counts the overlapping requests (more than Requests
	// when capped); Tokens are the chunks' arrivals (ns, tokens) when the
	// span is at most TokenSpan.
	RequestsTotal int        `json:"requests_total"`
	Tokens        [][2]int64 `json:"tokens,omitempty"`
}

// TLRequest is a request's life on the timeline.
type TLRequest struct {
	ID         string `json:"id"`
	Cycle      uint32 `json:"cycle"`
	Sent       int64  `json:"sent"`
	FirstToken int64  `json:"first_token"`
	Done       int64  `json:"done"`
	OK         bool   `json:"ok"`
}

// Timeline limits.
const (
	MaxTimelinePoints   = 10_000
	MaxTimelineRequests = 2_000
	TokenSpan           = int64(10e9)
)

// Downsample buckets ps over [from, to) into at most points buckets.
func Downsample(ps []schemas.PowerSample, from, to int64, points int) Series {
	var s Series
	in := ps[:0:0]
	for _, p := range ps {
		if p.TS >= from && p.TS < to {
			in = append(in, p)
		}
	}
	s.N = len(in)
	if len(in) <= points {
		s.Raw = true
		for _, p := range in {
			w := float64(p.Power) / 1e3
			s.T, s.Min, s.Max, s.Mean = append(s.T, p.TS), append(s.Min, w), append(s.Max, w), append(s.Mean, w)
		}
		return s
	}
	width := (to - from + int64(points) - 1) / int64(points)
	cur, n := int64(-1), 0
	var lo, hi, sum float64
	flush := func() {
		if n > 0 {
			s.T, s.Min, s.Max, s.Mean = append(s.T, from+cur*width), append(s.Min, lo), append(s.Max, hi), append(s.Mean, sum/float64(n))
		}
	}
	for _, p := range in {
		b := (p.TS - from) / width
		w := float64(p.Power) / 1e3
		if b != cur {
			flush()
			cur, n, lo, hi, sum = b, 0, w, w, 0
		}
		lo, hi, sum, n = min(lo, w), max(hi, w), sum+w, n+1
	}
	flush()
	return s
}

func (s *Server) handleTimeline(w http.ResponseWriter, r *http.Request) {
	id, ok := s.publishedRun(w, r)
	if !ok {
		return
	}
	tl, err := s.timeline(r.Context(), id, r.URL.Query().Get("from_ns"), r.URL.Query().Get("to_ns"), r.URL.Query().Get("points"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, tl)
}

func (s *Server) timeline(ctx context.Context, id, fromS, toS, pointsS string) (*Timeline, error) {
	evs, err := s.cfg.Store.RunEvents(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("run %s has no events in the store", id)
	}
	span0, span1, err := analytics.RunSpan(ctx, s.cfg.Store, []string{id})
	if err != nil {
		return nil, err
	}
	tl := &Timeline{FromNS: span0, ToNS: span1}
	parse := func(v string, def int64, name string) (int64, error) {
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not an integer (ns since the Unix epoch)", name, v)
		}
		return n, nil
	}
	if tl.FromNS, err = parse(fromS, span0, "from_ns"); err != nil {
		return nil, err
	}
	if tl.ToNS, err = parse(toS, span1, "to_ns"); err != nil {
		return nil, err
	}
	if tl.ToNS <= tl.FromNS {
		return nil, fmt.Errorf("to_ns %d is not after from_ns %d", tl.ToNS, tl.FromNS)
	}
	points := int64(2000)
	if pointsS != "" {
		if points, err = parse(pointsS, 2000, "points"); err != nil || points < 1 || points > MaxTimelinePoints {
			return nil, fmt.Errorf("points: give 1 … %d", MaxTimelinePoints)
		}
	}
	tl.BucketNS = (tl.ToNS - tl.FromNS + points - 1) / points
	devs := runDevices(evs)
	for _, e := range evs {
		switch e.Phase {
		case schemas.RunStart:
			tl.Cycles = append(tl.Cycles, [3]int64{int64(e.Cycle), e.TS, 0})
		case schemas.RunEnd, schemas.RunBaseline:
			// The baseline window is a start closed by a baseline mark: cycle -1.
			for i := len(tl.Cycles) - 1; i >= 0; i-- {
				if tl.Cycles[i][0] == int64(e.Cycle) && tl.Cycles[i][2] == 0 {
					tl.Cycles[i][2] = e.TS
					if e.Phase == schemas.RunBaseline {
						tl.Cycles[i][0] = -1
					}
					break
				}
			}
		}
	}
	if tl.BucketNS >= OverviewRes {
		// A wide view: from the run's overview, buckets on whole slots.
		ov, err := s.overview(ctx, id, devs, span0-bundleMargin, span1+bundleMargin)
		if err != nil {
			return nil, err
		}
		tl.BucketNS = (tl.BucketNS + OverviewRes - 1) / OverviewRes * OverviewRes
		tl.Series = ov.series(tl.FromNS, tl.ToNS, tl.BucketNS)
	} else {
		for _, d := range devs {
			ps, src, err := analytics.Power(ctx, s.cfg.Store, d, tl.FromNS, tl.ToNS)
			if err != nil {
				return nil, err
			}
			ser := Downsample(ps, tl.FromNS, tl.ToNS, int(points))
			ser.Device, ser.Source = d, src
			tl.Series = append(tl.Series, ser)
		}
	}
	reqs, err := s.cfg.Store.Requests(ctx, id)
	if err != nil {
		return nil, err
	}
	tl.Requests = []TLRequest{}
	for _, q := range reqs {
		end := max(q.Done, q.Sent)
		if end < tl.FromNS || q.Sent > tl.ToNS {
			continue
		}
		tl.RequestsTotal++
		if len(tl.Requests) < MaxTimelineRequests {
			tl.Requests = append(tl.Requests, TLRequest{ID: q.ID, Cycle: q.Cycle, Sent: q.Sent, FirstToken: q.FirstToken, Done: q.Done, OK: q.Status == schemas.StatusOK})
		}
	}
	if tl.ToNS-tl.FromNS <= TokenSpan {
		toks, err := s.cfg.Store.Tokens(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, ts := range toks {
			for _, t := range ts {
				if t.TS >= tl.FromNS && t.TS < tl.ToNS {
					tl.Tokens = append(tl.Tokens, [2]int64{t.TS, int64(t.Tokens)})
				}
			}
		}
		sort.Slice(tl.Tokens, func(a, b int) bool { return tl.Tokens[a][0] < tl.Tokens[b][0] })
	}
	return tl, nil
}
