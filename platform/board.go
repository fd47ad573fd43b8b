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
	index   map[string]sortedIndex // by sort column
	gen     uint64                 // changes with every Put
	// Dimension values are interned: an item holds their numbers, so a
	// query compares and counts integers.
	vals [nDims][]string
	ids  [nDims]map[string]int32
	// cache holds the selections of recent filter sets (cleared by Put).
	cacheMu sync.Mutex
	cache   map[string]*selection
}

// sortedIndex is the items in ascending order of a column, those without
// the figure last (from known on).
type sortedIndex struct {
	items []*item
	known int
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
	b := &Board{entries: map[string]*item{}, index: map[string]sortedIndex{}, cache: map[string]*selection{}}
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
	old := b.entries[e.RunID]
	b.entries[e.RunID] = it
	b.gen++
	b.reindex(old, it)
	b.cacheMu.Lock()
	clear(b.cache)
	b.cacheMu.Unlock()
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
// All returns a copy of every entry.
func (b *Board) All() []Entry {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]Entry, 0, len(b.entries))
	for _, it := range b.entries {
		out = append(out, *it.e)
	}
	return out
}

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
	"parameters":    numKey(func(e *Entry) *float64 { return e.Parameters }),
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
	si := b.sorted(q.Sort, key)
	b.mu.Unlock()
	idx, known := si.items, si.known
	b.mu.RLock()
	defer b.mu.RUnlock()

	res := Result{Page: q.Page, PerPage: q.PerPage, Sort: q.Sort, Desc: q.Desc, Rows: []Entry{}}
	sel := b.selection(q, text, idx)
	res.Facets, res.Workload, res.Notice, res.Total = sel.facets, sel.workload, sel.notice, sel.total
	// One pass in the requested order, nil figures last either way,
	// stopping when the page is full (the total is the selection's).
	first := (q.Page - 1) * q.PerPage
	matched := 0
	emit := func(it *item) bool {
		if !sel.match(it) {
			return true
		}
		if matched >= first {
			res.Rows = append(res.Rows, *it.e)
		}
		matched++
		return len(res.Rows) < q.PerPage
	}
	more := true
	if q.Desc {
		for i := known - 1; i >= 0 && more; i-- {
			more = emit(idx[i])
		}
	} else {
		for i := 0; i < known && more; i++ {
			more = emit(idx[i])
		}
	}
	for i := known; i < len(idx) && more; i++ {
		more = emit(idx[i])
	}
	return res, nil
}

// cond is a filter as (dimension, interned value); a value never seen
// matches nothing.
type cond struct{ d, v int32 }

// selection is what a query's filters select, independent of its order
// and page: cached per filter set until the board changes.
type selection struct {
	verified bool
	text     string
	conds    []cond
	facets   map[string][]Facet
	workload string
	notice   string
	total    int
}

func (s *selection) match(it *item) bool {
	if s.verified && it.e.Verification != "verified" {
		return false
	}
	if s.text != "" && !strings.Contains(it.text, s.text) {
		return false
	}
	for _, c := range s.conds {
		if it.dim[c.d] != c.v {
			return false
		}
	}
	return true
}

const selectionCache = 256

// selection returns (computing and caching) the selection of q's filters.
// b.mu must be held for reading.
func (b *Board) selection(q Query, text string, all []*item) *selection {
	key := fmt.Sprintf("%v\x00%s", q.VerifiedOnly, text)
	for _, name := range Dimensions {
		key += "\x00" + q.Filters[name]
	}
	b.cacheMu.Lock()
	if s, ok := b.cache[key]; ok {
		b.cacheMu.Unlock()
		return s
	}
	b.cacheMu.Unlock()
	sel := &selection{verified: q.VerifiedOnly, text: text, facets: map[string][]Facet{}}
	wl := int32(slices.Index(Dimensions, "workload"))
	intern := func(d int, v string) int32 {
		if id, ok := b.ids[d][v]; ok {
			return id
		}
		return -1
	}
	var others []cond // every filter but the workload
	for d, name := range Dimensions {
		if v := q.Filters[name]; v != "" && name != "workload" {
			others = append(others, cond{int32(d), intern(d, v)})
		}
	}
	sel.conds = others
	// The workload: never rank different workloads together silently.
	switch w := q.Filters["workload"]; w {
	case "":
		// The one with the most runs among those the other filters keep;
		// on a tie, the one published to most recently.
		counts := make([]int, len(b.vals[wl]))
		newest := make([]int64, len(b.vals[wl]))
		for _, it := range all {
			if sel.match(it) {
				counts[it.dim[wl]]++
				newest[it.dim[wl]] = max(newest[it.dim[wl]], it.e.PublishedNS)
			}
		}
		best, n := int32(-1), 0
		for id, c := range counts {
			if c > n || (c == n && c > 0 && newest[id] > newest[best]) {
				best, n = int32(id), c
			}
		}
		if best >= 0 {
			sel.workload = b.vals[wl][best]
			sel.conds = append(sel.conds, cond{wl, best})
			others := 0
			for _, c := range counts {
				if c > 0 {
					others++
				}
			}
			if others > 1 {
				sel.notice = fmt.Sprintf("ranking the workload with the most runs (%q); %d other workloads are not compared with it: choose one, or all", sel.workload, others-1)
			}
		}
	case AllWorkloads:
		sel.workload = AllWorkloads
		sel.notice = "ranking runs of different workloads together: their figures are not comparable"
	default:
		sel.workload = w
		sel.conds = append(sel.conds, cond{wl, intern(int(wl), w)})
	}
	// Facets: each dimension's values among the runs the other filters
	// keep (a run failing exactly one filter counts for that filter's
	// dimension only); the total is the runs failing none.
	var counts [nDims][]int
	for d := range counts {
		counts[d] = make([]int, len(b.vals[d]))
	}
	pre := &selection{verified: sel.verified, text: sel.text}
	for _, it := range all {
		if !pre.match(it) {
			continue
		}
		miss, missD := 0, int32(-1)
		for _, c := range sel.conds {
			if it.dim[c.d] != c.v {
				miss++
				missD = c.d
			}
		}
		switch miss {
		case 0:
			sel.total++
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
		sel.facets[name] = fs
	}
	b.cacheMu.Lock()
	if len(b.cache) >= selectionCache {
		clear(b.cache)
	}
	b.cache[key] = sel
	b.cacheMu.Unlock()
	return sel
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
func (b *Board) sorted(col string, key func(*Entry) (float64, string, bool)) sortedIndex {
	if si, ok := b.index[col]; ok {
		return si
	}
	idx := make([]*item, 0, len(b.entries))
	for _, it := range b.entries {
		idx = append(idx, it)
	}
	sort.Slice(idx, func(i, j int) bool { return less(key, idx[i], idx[j]) })
	si := sortedIndex{idx, knownOf(key, idx)}
	b.index[col] = si
	return si
}

// less orders items by key: figures ascending, those without last, ties
// by run id.
func less(key func(*Entry) (float64, string, bool), a, b *item) bool {
	fa, sa, oka := key(a.e)
	fb, sb, okb := key(b.e)
	switch {
	case oka != okb:
		return oka
	case fa != fb:
		return fa < fb
	case sa != sb:
		return sa < sb
	}
	return a.e.RunID < b.e.RunID
}

func knownOf(key func(*Entry) (float64, string, bool), idx []*item) int {
	known := len(idx)
	for known > 0 {
		if _, _, ok := key(idx[known-1].e); ok {
			break
		}
		known--
	}
	return known
}

// reindex replaces old (nil: none) by it in every built index, copying
// (readers may hold the former slices): O(n) per index, no re-sort.
func (b *Board) reindex(old, it *item) {
	for col, si := range b.index {
		key := sortKeys[col]
		out := make([]*item, 0, len(si.items)+1)
		for _, x := range si.items {
			if x != old {
				out = append(out, x)
			}
		}
		at := sort.Search(len(out), func(i int) bool { return less(key, it, out[i]) })
		out = slices.Insert(out, at, it)
		b.index[col] = sortedIndex{out, knownOf(key, out)}
	}
}

// Generation changes whenever the board does (for caching answers).
func (b *Board) Generation() uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.gen
}

func sortNames() []string {
	out := make([]string, 0, len(sortKeys))
	for k := range sortKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
