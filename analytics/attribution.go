package analytics

import (
	"fmt"
	"sort"

	"github.com/llm-energy-measure/lem/schemas"
)

// Attribution methods for the dynamic energy of a slice.
const (
	// MethodTokens weighs each active request by its work in the slice:
	// prompt tokens being prefilled (spread evenly from sent to first token)
	// plus output tokens being decoded (each chunk's tokens spread over the
	// gap since the request's previous chunk). The default.
	MethodTokens = "token-weighted"
	// MethodEqual splits the slice's dynamic energy equally among the
	// requests in the system.
	MethodEqual = "equal-share"
	// MethodPowerModel fits, per window, how much power a request draws
	// while it prefills (α per prompt token) and while it decodes (β per
	// request) to the slices' measured dynamic power by least squares,
	// and splits each slice's dynamic energy by those fitted draws. Where
	// the fit is not determined (too few slices of each kind, or a
	// negative coefficient) the window falls back to MethodTokens and says
	// so (Attribution.Fit).
	MethodPowerModel = "power-model"
)

// PowerFit is the fitted draw of MethodPowerModel: dynamic power =
// α·(prompt tokens of the requests prefilling) + β·(requests decoding).
type PowerFit struct {
	AlphaW, BetaW float64 // W per prompt token prefilling; W per request decoding
	Slices        int
	// R2 is the share of the slices' dynamic-power variance the fit
	// explains (duration-weighted).
	R2 float64
	// Fallback says why the fit was not used ("" when it was).
	Fallback string
}

// RequestEnergy is the energy attributed to one request.
type RequestEnergy struct {
	ID                string
	Cycle             uint32
	StaticJ, DynamicJ float64 // static by time in system; dynamic by the method
	PrefillJ, DecodeJ float64 // split of StaticJ+DynamicJ by the request's phase
	PromptTokens      uint32
	OutputTokens      uint32
	JPerOutputToken   float64
	JPerInputToken    float64
}

// TotalJ is the request's whole share.
func (r RequestEnergy) TotalJ() float64 { return r.StaticJ + r.DynamicJ }

// Attribution is the split of one window's energy among its requests.
type Attribution struct {
	Method   string
	Requests []RequestEnergy
	// UnattributedJ is energy of slices in which no request was in the
	// system (idle gaps inside the window): kept, not spread.
	UnattributedJ float64
	TotalJ        float64 // the window's measured energy: Σ requests + unattributed
	PrefillJ      float64
	DecodeJ       float64
	// Fit is MethodPowerModel's fitted draw (nil for other methods).
	Fit *PowerFit
}

// Slice is a piece of the power timeline with its measured energy.
type Slice struct {
	From, To int64
	Joules   float64
}

// Slices cuts [from, to] at the power samples and gives each piece its
// counter-calibrated energy, so that the slices sum to CalibratedEnergy of
// the window. One pass: each counter interval's scale is computed once.
func Slices(rs []Reading, ps []schemas.PowerSample, hold, from, to int64) []Slice {
	cuts := []int64{from}
	i := sort.Search(len(ps), func(i int) bool { return ps[i].TS > from })
	for ; i < len(ps) && ps[i].TS < to; i++ {
		cuts = append(cuts, ps[i].TS)
	}
	cuts = append(cuts, to)
	pts, _ := series(rs)
	cal := newCalibrator(pts, ps, hold)
	out := make([]Slice, 0, len(cuts)-1)
	for k := 1; k < len(cuts); k++ {
		if cuts[k] > cuts[k-1] {
			out = append(out, Slice{From: cuts[k-1], To: cuts[k], Joules: cal.energy(cuts[k-1], cuts[k])})
		}
	}
	return out
}

// calibrator integrates the calibrated timeline over successive,
// non-decreasing windows, caching each counter interval's scale.
type calibrator struct {
	pts  []point
	ps   []schemas.PowerSample
	hold int64
	i    int // current counter interval: [pts[i-1], pts[i]]
	// resid is the interval's correction (counter − samples, J) and
	// weight its samples' calibration weight (roughness) over it.
	resid, weight float64
	scale         float64 // counter ÷ samples: where the weight is 0
	lin           bool    // interval has no samples: counter interpolated
}

func newCalibrator(pts []point, ps []schemas.PowerSample, hold int64) *calibrator {
	return &calibrator{pts: pts, ps: ps, hold: hold}
}

func (c *calibrator) load(i int) {
	c.i = i
	a, b := c.pts[i-1], c.pts[i]
	sampJ, weight := energyAndRoughness(c.ps, a.t, b.t, c.hold)
	c.lin = sampJ <= 0
	if !c.lin {
		counterJ := (b.e - a.e) / 1e6
		c.scale, c.resid, c.weight = counterJ/sampJ, counterJ-sampJ, weight
	}
}

// energy of [lo, hi]; calls must come in non-decreasing order of lo.
func (c *calibrator) energy(lo, hi int64) float64 {
	if len(c.pts) < 2 || len(c.ps) == 0 {
		return WindowEnergy(nil, lo, hi).Joules
	}
	var j float64
	n := len(c.pts)
	if lo < c.pts[0].t {
		e, _ := IntegratePower(c.ps, lo, min(hi, c.pts[0].t), c.hold)
		j += e
		lo = min(hi, c.pts[0].t)
	}
	if hi > c.pts[n-1].t {
		e, _ := IntegratePower(c.ps, max(lo, c.pts[n-1].t), hi, c.hold)
		j += e
		hi = max(lo, c.pts[n-1].t)
	}
	for lo < hi {
		if c.i == 0 || c.pts[c.i].t <= lo {
			k := c.i + 1
			for k < n && c.pts[k].t <= lo {
				k++
			}
			if k >= n {
				break
			}
			c.load(k)
		}
		a, b := c.pts[c.i-1], c.pts[c.i]
		end := min(hi, b.t)
		if c.lin {
			j += (b.e - a.e) / 1e6 * float64(end-lo) / float64(b.t-a.t)
		} else {
			e, w := energyAndRoughness(c.ps, lo, end, c.hold)
			if c.weight > 0 {
				e += c.resid * w / c.weight
			} else {
				e *= c.scale
			}
			j += e
		}
		lo = end
	}
	return j
}

// activeFrom is when a request starts to occupy the server: when it was
// sent, or — where the server reports its queue time — when it left the
// queue. Queued, it does no work and takes no share: the energy of that
// time belongs to the requests running then.
func activeFrom(q schemas.Request) int64 {
	if q.Sent == 0 {
		return 0
	}
	if q.ServerQueue > 0 && (q.FirstToken == 0 || q.Sent+q.ServerQueue < q.FirstToken) {
		return q.Sent + q.ServerQueue
	}
	return q.Sent
}

// CutSlices splits every slice at the given times that fall strictly
// inside it, each piece taking the slice's energy in proportion to its
// duration (a slice holds one power sample); the total is kept exactly.
// times need not be sorted; zeros are ignored.
func CutSlices(slices []Slice, times []int64) []Slice {
	ts := make([]int64, 0, len(times))
	for _, t := range times {
		if t != 0 {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return slices
	}
	sort.Slice(ts, func(a, b int) bool { return ts[a] < ts[b] })
	out := make([]Slice, 0, len(slices)+len(ts))
	k := 0
	for _, sl := range slices {
		for k < len(ts) && ts[k] <= sl.From {
			k++
		}
		from, dur := sl.From, float64(sl.To-sl.From)
		for j := k; j < len(ts) && ts[j] < sl.To; j++ {
			if ts[j] <= from {
				continue
			}
			out = append(out, Slice{From: from, To: ts[j], Joules: sl.Joules * float64(ts[j]-from) / dur})
			from = ts[j]
		}
		out = append(out, Slice{From: from, To: sl.To, Joules: sl.Joules * float64(sl.To-from) / dur})
	}
	return out
}

// work is one request's activity as intervals with token weights.
type work struct {
	from, to int64
	tokens   float64 // spread evenly over [from, to]
	prefill  bool
}

// MergeSlices sums several devices' slices onto one grid of step ns over
// [from, to]: each slice's energy goes to the grid cells it overlaps, in
// proportion, so the total is kept exactly. Attributing the merged slices
// once gives each request its energy summed over the devices, as
// attributing each device's and adding would, in one pass instead of one
// per device (energy moves by less than one step within a device).
func MergeSlices(sets [][]Slice, step, from, to int64) []Slice {
	if step <= 0 || to <= from {
		return nil
	}
	n := int((to - from + step - 1) / step)
	out := make([]Slice, n)
	for i := range out {
		out[i] = Slice{From: from + int64(i)*step, To: min(from+int64(i+1)*step, to)}
	}
	for _, set := range sets {
		for _, sl := range set {
			if sl.To <= sl.From {
				continue
			}
			a := max(int((sl.From-from)/step), 0)
			for k := a; k < n && out[k].From < sl.To; k++ {
				lo, hi := max(out[k].From, sl.From), min(out[k].To, sl.To)
				if hi > lo {
					out[k].Joules += sl.Joules * float64(hi-lo) / float64(sl.To-sl.From)
				}
			}
		}
	}
	return out
}

// Attribute splits the energy of slices among requests. staticW is the
// idle power of the devices (sum), taken from the baseline; each slice's
// static part is staticW × its duration, the rest is dynamic (it may be
// negative when power dips below the baseline: it is split all the same,
// so the sum stays exact).
func Attribute(slices []Slice, staticW float64, reqs []schemas.Request, toks map[string][]schemas.Token, method string) (*Attribution, error) {
	if method == "" {
		method = MethodTokens
	}
	if method != MethodTokens && method != MethodEqual && method != MethodPowerModel {
		return nil, fmt.Errorf("unknown attribution method %q (want %s, %s or %s)", method, MethodTokens, MethodEqual, MethodPowerModel)
	}
	a := &Attribution{Method: method, Requests: make([]RequestEnergy, 0, len(reqs))}
	// No slice may straddle a request's transition from prefill to decode:
	// cut at every first token, and at the end of a server-reported queue
	// (a slice holds one power sample, constant within it, so a piece's
	// energy is its share of the slice's time). Entries need no cut: a
	// request's weight in a slice already counts only its work inside it.
	cuts := make([]int64, 0, len(reqs))
	for _, q := range reqs {
		cuts = append(cuts, q.FirstToken)
		if from := activeFrom(q); from != q.Sent {
			cuts = append(cuts, from)
		}
	}
	var fit *PowerFit
	if method == MethodPowerModel {
		// Fitted on the slices as measured (each one power sample, whose
		// value is the mean over its span): a cut piece only inherits its
		// slice's mean power, which would blur the fit.
		fit = FitPower(slices, staticW, reqs)
		a.Fit = fit
		if fit.Fallback != "" {
			method = MethodTokens
			a.Method = MethodTokens
		}
	}
	if method == MethodPowerModel {
		slices = cutByModel(slices, cuts, fit, staticW, reqs)
	} else {
		slices = CutSlices(slices, cuts)
	}
	works := make([][]work, len(reqs))
	firstTok := make([]int64, len(reqs))
	reqToks := make([][]schemas.Token, len(reqs))
	total := 0
	for i, q := range reqs {
		reqToks[i] = toks[q.ID]
		total += len(reqToks[i]) + 1
	}
	backing := make([]work, 0, total)
	for i, q := range reqs {
		a.Requests = append(a.Requests, RequestEnergy{ID: q.ID, PromptTokens: q.PromptTokens, OutputTokens: q.OutputTokens})
		first := q.FirstToken
		if first == 0 {
			first = q.Done
		}
		firstTok[i] = first
		start := len(backing)
		if method == MethodPowerModel {
			// Weights are the fitted draws times time: α·prompt while
			// prefilling, β while decoding.
			from, end := activeFrom(q), q.Done
			if end == 0 {
				end = q.LastToken
			}
			if from != 0 && first > from {
				backing = append(backing, work{from: from, to: first, tokens: fit.AlphaW * float64(max(q.PromptTokens, 1)) * float64(first-from) / 1e9, prefill: true})
			}
			if end > first {
				backing = append(backing, work{from: first, to: end, tokens: fit.BetaW * float64(end-first) / 1e9})
			}
			works[i] = backing[start:len(backing):len(backing)]
			continue
		}
		if from := activeFrom(q); from != 0 && first > from {
			backing = append(backing, work{from: from, to: first, tokens: float64(max(q.PromptTokens, 1)), prefill: true})
		}
		prev := first
		for _, t := range reqToks[i] {
			if t.TS > prev {
				backing = append(backing, work{from: prev, to: t.TS, tokens: float64(t.Tokens)})
				prev = t.TS
			}
		}
		works[i] = backing[start:len(backing):len(backing)]
	}
	type share struct {
		req        int
		w          float64
		prefillW   float64
		inSystemNS int64
	}
	// Sweep line: requests enter the active set in order of Sent and leave
	// once their stream ended before the slice; each request's work list is
	// walked with a cursor, as slices only move forward in time.
	end := make([]int64, len(reqs))
	order := make([]int, 0, len(reqs))
	start := make([]int64, len(reqs))
	for i, q := range reqs {
		end[i] = q.Done
		if end[i] == 0 {
			end[i] = q.LastToken
		}
		start[i] = activeFrom(q)
		if start[i] != 0 && end[i] > start[i] {
			order = append(order, i)
		}
	}
	sort.Slice(order, func(x, y int) bool { return start[order[x]] < start[order[y]] })
	cursor := make([]int, len(reqs))
	var active []int
	next := 0
	var shares []share
	for _, s := range slices {
		a.TotalJ += s.Joules
		dur := float64(s.To-s.From) / 1e9
		static := staticW * dur
		dynamic := s.Joules - static
		for next < len(order) && start[order[next]] < s.To {
			active = append(active, order[next])
			next++
		}
		kept := active[:0]
		for _, i := range active {
			if end[i] > s.From {
				kept = append(kept, i)
			}
		}
		active = kept
		shares = shares[:0]
		var sumW, sumT float64
		for _, i := range active {
			lo, hi := max(start[i], s.From), min(end[i], s.To)
			if hi <= lo {
				continue
			}
			sh := share{req: i, inSystemNS: hi - lo}
			switch method {
			case MethodEqual:
				sh.w = 1
				if lo < firstTok[i] {
					sh.prefillW = float64(min(hi, firstTok[i])-lo) / float64(hi-lo)
				}
			default:
				ws := works[i]
				for cursor[i] < len(ws) && ws[cursor[i]].to <= s.From {
					cursor[i]++
				}
				for k := cursor[i]; k < len(ws) && ws[k].from < s.To; k++ {
					wk := ws[k]
					ol, oh := max(wk.from, s.From), min(wk.to, s.To)
					if oh <= ol {
						continue
					}
					x := wk.tokens * float64(oh-ol) / float64(wk.to-wk.from)
					sh.w += x
					if wk.prefill {
						sh.prefillW += x
					}
				}
				if sh.w > 0 {
					sh.prefillW /= sh.w
				}
			}
			sumW += sh.w
			sumT += float64(sh.inSystemNS)
			shares = append(shares, sh)
		}
		if len(shares) == 0 {
			a.UnattributedJ += s.Joules
			continue
		}
		for _, sh := range shares {
			r := &a.Requests[sh.req]
			st := static * float64(sh.inSystemNS) / sumT
			var dy float64
			if sumW > 0 {
				dy = dynamic * sh.w / sumW
			} else {
				// In the system but no token work in this slice (queued,
				// or between chunks): share by time in system.
				dy = dynamic * float64(sh.inSystemNS) / sumT
			}
			r.StaticJ += st
			r.DynamicJ += dy
			pf := sh.prefillW
			if sumW == 0 {
				pf = 0
			}
			r.PrefillJ += (st + dy) * pf
			r.DecodeJ += (st + dy) * (1 - pf)
		}
	}
	for i := range a.Requests {
		r := &a.Requests[i]
		a.PrefillJ += r.PrefillJ
		a.DecodeJ += r.DecodeJ
		if r.OutputTokens > 0 {
			r.JPerOutputToken = r.TotalJ() / float64(r.OutputTokens)
		}
		if r.PromptTokens > 0 {
			r.JPerInputToken = r.TotalJ() / float64(r.PromptTokens)
		}
	}
	return a, nil
}

// FitPower fits MethodPowerModel's draws to slices (as measured, one power
// sample each): in each slice, the dynamic power (energy less staticW ×
// duration, over the duration) against the prompt tokens of the requests
// prefilling (time-weighted within the slice) and the number of requests
// decoding; least squares weighted by duration. A fit with a coefficient
// that is not positive is not used (Fallback says why).
func FitPower(slices []Slice, staticW float64, reqs []schemas.Request) *PowerFit {
	x1, x2 := powerFeatures(slices, reqs)
	f := &PowerFit{}
	var s11, s12, s22, s1y, s2y, sy, sw, syy float64
	for k, sl := range slices {
		d := float64(sl.To-sl.From) / 1e9
		if d <= 0 || x1[k]+x2[k] == 0 {
			continue
		}
		y := (sl.Joules - staticW*d) / d
		s11 += d * x1[k] * x1[k]
		s12 += d * x1[k] * x2[k]
		s22 += d * x2[k] * x2[k]
		s1y += d * x1[k] * y
		s2y += d * x2[k] * y
		sy += d * y
		syy += d * y * y
		sw += d
		f.Slices++
	}
	det := s11*s22 - s12*s12
	switch {
	case f.Slices < 20:
		f.Fallback = fmt.Sprintf("%d slices with requests: too few to fit", f.Slices)
		return f
	case s11 == 0 || s22 == 0 || det <= 1e-12*s11*s22:
		f.Fallback = "prefill and decode never apart: the draws are not determined"
		return f
	}
	f.AlphaW, f.BetaW = (s1y*s22-s2y*s12)/det, (s2y*s11-s1y*s12)/det
	if f.AlphaW <= 0 || f.BetaW <= 0 {
		f.Fallback = fmt.Sprintf("fitted draws not both positive (α %.3g W/token, β %.3g W/request)", f.AlphaW, f.BetaW)
		return f
	}
	// R² of the fit (duration-weighted, about the mean).
	var res float64
	for k, sl := range slices {
		d := float64(sl.To-sl.From) / 1e9
		if d <= 0 || x1[k]+x2[k] == 0 {
			continue
		}
		y := (sl.Joules - staticW*d) / d
		e := y - f.AlphaW*x1[k] - f.BetaW*x2[k]
		res += d * e * e
	}
	if tot := syy - sy*sy/sw; tot > 0 {
		f.R2 = 1 - res/tot
	}
	return f
}

// powerFeatures returns, per slice, the prompt tokens of the requests
// prefilling and the number of requests decoding, each averaged over the
// slice's time (slices sorted and disjoint).
func powerFeatures(slices []Slice, reqs []schemas.Request) (x1, x2 []float64) {
	n := len(slices)
	x1, x2 = make([]float64, n), make([]float64, n)
	add := func(x []float64, from, to int64, v float64) {
		k := sort.Search(n, func(k int) bool { return slices[k].To > from })
		for ; k < n && slices[k].From < to; k++ {
			lo, hi := max(from, slices[k].From), min(to, slices[k].To)
			if d := slices[k].To - slices[k].From; hi > lo && d > 0 {
				x[k] += v * float64(hi-lo) / float64(d)
			}
		}
	}
	for _, q := range reqs {
		from, first, end := activeFrom(q), q.FirstToken, q.Done
		if end == 0 {
			end = q.LastToken
		}
		if first == 0 {
			first = end
		}
		if from != 0 && first > from {
			add(x1, from, first, float64(max(q.PromptTokens, 1)))
		}
		if end > first {
			add(x2, first, end, 1)
		}
	}
	return x1, x2
}

// cutByModel cuts slices at times as CutSlices does, but splits each
// slice's energy among its pieces by the fitted model's power in each
// (staticW + α·prefilling prompt tokens + β·decoding requests), not by
// duration: a piece before a first token and the piece after it drew
// different power within one sample. The total is kept exactly.
func cutByModel(slices []Slice, times []int64, f *PowerFit, staticW float64, reqs []schemas.Request) []Slice {
	pieces := CutSlices(slices, times)
	x1, x2 := powerFeatures(pieces, reqs)
	out := pieces[:0:0]
	k := 0
	for _, sl := range slices {
		j := k
		var model float64
		for j < len(pieces) && pieces[j].To <= sl.To && pieces[j].From >= sl.From {
			d := float64(pieces[j].To-pieces[j].From) / 1e9
			model += d * (staticW + f.AlphaW*x1[j] + f.BetaW*x2[j])
			j++
		}
		for ; k < j; k++ {
			p := pieces[k]
			d := float64(p.To-p.From) / 1e9
			if model > 0 {
				p.Joules = sl.Joules * d * (staticW + f.AlphaW*x1[k] + f.BetaW*x2[k]) / model
			}
			out = append(out, p)
		}
	}
	return out
}
