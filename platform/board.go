package platform

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Board is the leaderboard: a projection of the published entries (whose
// source of truth is the platform's JetStream state) held in memory, with
// one sorted index per sortable column built on first use and dropped on
// change, so a query is one pass over the index with the filters.
type Board struct {
	mu      sync.RWMutex
	entries map[string]*item
	index   map[string][]*item // by sort column, ascending, nil figures last
	// Dimension values are interned: an item holds their numbers, so a
	// query compares and counts integers.
	vals [nDims][]string
	ids  [nDims]map[string]int32
}

// item is an entry with its interned dimensions and search text.
type item struct {
	e    *Entry
	dim  [nDims]int32
	text string // lower case
}

const nDims = 6

// NewBoard returns an empty board.
func NewBoard() *Board {
	b := &Board{entries: map[string]*item{}, index: map[string][]*item{}}
	for d := range b.ids {
		b.ids[d] = map[string]int32{}
	}
	return b
}

// Put adds or replaces an entry.
func (b *Board) Put(e Entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	it := &item{e: &e, text: strings.ToLower(strings.Join([]string{e.Model, e.Backend, e.Hardware, e.Experiment, e.Submitter, e.RunID, e.Workload}, "\x00"))}
	for d, name := range Dimensions {
		v := dimension(&e, name)
		id, ok := b.ids[d][v]
		if !ok {
			id = int32(len(b.vals[d]))
			b.ids[d][v] = id
			b.vals[d] = append(b.vals[d], v)
		}
		it.dim[d] = id
	}
	b.entries[e.RunID] = it
	clear(b.index)
}

// Get returns a run's entry.
func (b *Board) Get(runID string) (Entry, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	it, ok := b.entries[runID]
	if !ok {
		return Entry{}, false
	}
	return *it.e, true
}

// Len is the number of entries.
func (b *Board) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.entries)
}

// sortKeys are the columns a leaderboard sorts by: numbers (nil last in
// either direction) and strings.
var sortKeys = map[string]func(e *Entry) (float64, string, bool){
	"j_per_token":   numKey(func(e *Entry) *float64 { return e.JPerToken }),
	"j_per_request": numKey(func(e *Entry) *float64 { return e.JPerRequest }),
	"tokens_per_s":  numKey(func(e *Entry) *float64 { return e.TokensPerS }),
	"ttft_p50_ms":   numKey(func(e *Entry) *float64 { return e.TTFTp50 }),
	"ttft_p99_ms":   numKey(func(e *Entry) *float64 { return e.TTFTp99 }),
	"itl_p50_ms":    numKey(func(e *Entry) *float64 { return e.ITLp50 }),
	"mean_power_w":  numKey(func(e *Entry) *float64 { return e.MeanPowerW }),
	"gpus":          func(e *Entry) (float64, string, bool) { return float64(e.GPUs), "", true },
	"started_ns":    func(e *Entry) (float64, string, bool) { return float64(e.StartedNS), "", true },
	"published_ns":  func(e *Entry) (float64, string, bool) { return float64(e.PublishedNS), "", true },
	"model":         strKey(func(e *Entry) string { return e.Model }),
	"backend":       strKey(func(e *Entry) string { return e.Backend }),
	"hardware":      strKey(func(e *Entry) string { return e.Hardware }),
	"submitter":     strKey(func(e *Entry) string { return e.Submitter }),
}

func numKey(f func(*Entry) *float64) func(*Entry) (float64, string, bool) {
	return func(e *Entry) (float64, string, bool) {
		if v := f(e); v != nil {
			return *v, "", true
		}
		return 0, "", false
	}
}

func strKey(f func(*Entry) string) func(*Entry) (float64, string, bool) {
	return func(e *Entry) (float64, string, bool) { return 0, strings.ToLower(f(e)), true }
}

// Dimensions are the fields a leaderboard filters on, each by exact value.
var Dimensions = []string{"model", "backend", "precision", "parallelism", "hardware", "workload"}

func dimension(e *Entry, d string) string {
	switch d {
	case "model":
		return e.Model
	case "backend":
		return e.Backend
	case "precision":
		return e.Precision
	case "parallelism":
		return e.Parallelism
	case "hardware":
		return e.Hardware
	case "workload":
		return e.Workload
	}
	return ""
}

// AllWorkloads is the workload filter value that ranks every workload
// together (on request only).
const AllWorkloads = "*"

// Query is a leaderboard request; the page's URL holds every field.
type Query struct {
	Sort         string
	Desc         bool
	Filters      map[string]string // dimension → value
	VerifiedOnly bool
	Text         string // case-insensitive substring of model, backend, hardware, experiment, submitter or run id
	Page         int    // from 1
	PerPage      int
}

// Facet is one value of a dimension and its count among the runs the
// other filters leave.
type Facet struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// Result is one page of the leaderboard.
type Result struct {
	Total   int     `json:"total"`
	Page    int     `json:"page"`
	PerPage int     `json:"per_page"`
	Sort    string  `json:"sort"`
	Desc    bool    `json:"desc"`
	Rows    []Entry `json:"rows"`
	// Workload is the workload the page ranks (chosen when the query named
	// none: the one with the most runs), or AllWorkloads; Notice says so.
	Workload string             `json:"workload"`
	Notice   string             `json:"notice,omitempty"`
	Facets   map[string][]Facet `json:"facets"`
}

// MaxPerPage bounds a page.
const MaxPerPage = 500

// Query runs q. An unknown sort column or dimension is an error that
// names it.
func (b *Board) Query(q Query) (Result, error) {
	if q.Sort == "" {
		q.Sort = "j_per_token"
	}
	key, ok := sortKeys[q.Sort]
	if !ok {
		return Result{}, fmt.Errorf("unknown sort column %q (one of %s)", q.Sort, strings.Join(sortNames(), ", "))
	}
	for d := range q.Filters {
		if !isDimension(d) {
			return Result{}, fmt.Errorf("unknown filter %q (one of %s)", d, strings.Join(Dimensions, ", "))
		}
	}
	if q.PerPage <= 0 {
		q.PerPage = 50
	}
	q.PerPage = min(q.PerPage, MaxPerPage)
	q.Page = max(q.Page, 1)
	text := strings.ToLower(strings.TrimSpace(q.Text))

	b.mu.Lock() // the index may be built
	idx := b.sorted(q.Sort, key)
	b.mu.Unlock()
	b.mu.RLock()
	defer b.mu.RUnlock()

	res := Result{Page: q.Page, PerPage: q.PerPage, Sort: q.Sort, Desc: q.Desc, Rows: []Entry{}, Facets: map[string][]Facet{}}
	// The filters as (dimension, interned value); a value never seen
	// matches nothing.
	type cond struct{ d, v int32 }
	var conds []cond
	wantWorkload := ""
	for d, name := range Dimensions {
		v := q.Filters[name]
		if v == "" || (name == "workload" && v == AllWorkloads) {
			if name == "workload" {
				wantWorkload = v
			}
			continue
		}
		if name == "workload" {
			wantWorkload = v
		}
		id, ok := b.ids[d][v]
		if !ok {
			id = -1
		}
		conds = append(conds, cond{int32(d), id})
	}
	wl := int32(slices.Index(Dimensions, "workload"))
	// Pass 1, facets: each dimension's values among the runs the other
	// filters keep (a run failing exactly one filter counts for that
	// filter's dimension only).
	var counts [nDims][]int
	for d := range counts {
		counts[d] = make([]int, len(b.vals[d]))
	}
	pre := func(it *item) bool {
		if q.VerifiedOnly && it.e.Verification != "verified" {
			return false
		}
		return text == "" || strings.Contains(it.text, text)
	}
	for _, it := range idx {
		if !pre(it) {
			continue
		}
		miss, missD := 0, int32(-1)
		for _, c := range conds {
			if it.dim[c.d] != c.v {
				miss++
				missD = c.d
			}
		}
		switch miss {
		case 0:
			for d := range counts {
				counts[d][it.dim[d]]++
			}
		case 1:
			counts[missD][it.dim[missD]]++
		}
	}
	for d, name := range Dimensions {
		fs := []Facet{}
		for id, n := range counts[d] {
			if n > 0 {
				fs = append(fs, Facet{b.vals[d][id], n})
			}
		}
		sort.Slice(fs, func(a, b int) bool {
			if fs[a].Count != fs[b].Count {
				return fs[a].Count > fs[b].Count
			}
			return fs[a].Value < fs[b].Value
		})
		res.Facets[name] = fs
	}
	// The workload: never rank different workloads together silently.
	switch wantWorkload {
	case "":
		if ws := res.Facets["workload"]; len(ws) > 0 {
			wantWorkload = ws[0].Value
			conds = append(conds, cond{wl, b.ids[wl][wantWorkload]})
			if len(ws) > 1 {
				res.Notice = fmt.Sprintf("ranking the workload with the most runs (%q); %d other workloads are not compared with it: choose one, or all", ws[0].Value, len(ws)-1)
			}
		}
	case AllWorkloads:
		res.Notice = "ranking runs of different workloads together: their figures are not comparable"
	}
	res.Workload = wantWorkload
	// Pass 2 in the requested order; nil figures last either way.
	first := (q.Page - 1) * q.PerPage
	emit := func(it *item) {
		if !pre(it) {
			return
		}
		for _, c := range conds {
			if it.dim[c.d] != c.v {
				return
			}
		}
		if res.Total >= first && len(res.Rows) < q.PerPage {
			res.Rows = append(res.Rows, *it.e)
		}
		res.Total++
	}
	known := len(idx)
	for known > 0 {
		if _, _, ok := key(idx[known-1].e); ok {
			break
		}
		known--
	}
	if q.Desc {
		for i := known - 1; i >= 0; i-- {
			emit(idx[i])
		}
	} else {
		for _, it := range idx[:known] {
			emit(it)
		}
	}
	for _, it := range idx[known:] {
		emit(it)
	}
	return res, nil
}

func isDimension(d string) bool {
	for _, x := range Dimensions {
		if x == d {
			return true
		}
	}
	return false
}

// sorted returns (building if needed) the index of col: ascending, ties by
// run id, entries without the figure at the end. b.mu must be held.
func (b *Board) sorted(col string, key func(*Entry) (float64, string, bool)) []*item {
	if idx, ok := b.index[col]; ok {
		return idx
	}
	idx := make([]*item, 0, len(b.entries))
	for _, it := range b.entries {
		idx = append(idx, it)
	}
	sort.Slice(idx, func(i, j int) bool {
		fi, si, oki := key(idx[i].e)
		fj, sj, okj := key(idx[j].e)
		switch {
		case oki != okj:
			return oki
		case fi != fj:
			return fi < fj
		case si != sj:
			return si < sj
		}
		return idx[i].e.RunID < idx[j].e.RunID
	})
	b.index[col] = idx
	return idx
}

func sortNames() []string {
	out := make([]string, 0, len(sortKeys))
	for k := range sortKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
