package schemas

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// Rows reach ClickHouse in arrival order: messages of eight devices
// interleaved, tokens of many requests interleaved. MergeTree sorts every
// inserted block by the table's ORDER BY unless the block is already
// sorted, and on 18.16 that sort (string keys first) costs the server
// 2.5–4.5 times more CPU than the rest of the insert together (docs/
// benchmarks.md: 770–1,390 ns a row unsorted, 280–310 ns sorted). The
// ingest sorts each block on its own side instead, where it is cheap:
// arrival order is made of sorted runs (one message of one device), so
// ordering the runs is usually enough.

// A Sorter puts the rows of tables into their sort-key order. It keeps its
// buffers between calls; it is not safe for concurrent use.
type Sorter struct {
	keys   [][]uint64 // per key column, per row: an order-preserving code
	bits   []int      // bits each key column needs (codes less their minimum)
	hi, lo []uint64   // the key columns packed into 128 bits per row
	perm   []int32
	runs   []int32 // start rows of the sorted runs
	wide   []wideKey
	dict   map[string]uint32
	strs   []string
	ranks  []uint32
	out    map[string]*Table
	// Stats of the last Sort, for tests and metrics.
	LastRuns   int  // sorted runs found in arrival order
	LastFull   bool // runs overlapped: every row was sorted
	LastCopied bool // false when the table was already in order
}

type wideKey struct {
	hi, lo uint64
	i      int32
}

// Sort returns t's rows ordered by the table's sort key (stable: rows with
// equal keys keep their arrival order). It returns t itself when t is
// already in order or its table has no known key; otherwise a table owned
// by the Sorter, valid until the next Sort of a table of that name.
func (s *Sorter) Sort(t *Table) (*Table, error) {
	s.LastRuns, s.LastFull, s.LastCopied = 1, false, false
	n := t.Rows()
	key := SortKey(t.Name)
	if n < 2 || len(key) == 0 {
		return t, nil
	}
	if err := s.encode(t, key); err != nil {
		return nil, err
	}
	total := 0
	for _, b := range s.bits {
		total += b
	}
	packed := total <= 128
	if packed {
		s.pack(n)
	}
	// Sorted runs of the arrival order: a new run starts where the key
	// goes down or any key column but the last changes (so that one
	// message of one device is one run, not glued to the next device's).
	s.runs = append(s.runs[:0], 0)
	lastBits := s.bits[len(s.bits)-1]
	for i := 1; i < n; i++ {
		var brk bool
		if packed {
			brk = s.cmpPacked(i, i-1) < 0 || !s.samePrefix(i, i-1, lastBits)
		} else {
			brk = s.compare(i, i-1) < 0
			for _, k := range s.keys[:len(s.keys)-1] {
				brk = brk || k[i] != k[i-1]
			}
		}
		if brk {
			s.runs = append(s.runs, int32(i))
		}
	}
	s.LastRuns = len(s.runs)
	if len(s.runs) == 1 || s.sortedRuns(n, packed) {
		return t, nil
	}
	s.perm = slices.Grow(s.perm[:0], n)[:0]
	if !s.orderRuns(n, packed) {
		s.LastFull = true
		s.fullSort(n, packed)
	}
	out := s.table(t)
	for i, c := range t.Columns {
		if err := c.gatherInto(out.Columns[i], s.perm); err != nil {
			return nil, err
		}
	}
	s.LastCopied = true
	return out, nil
}

// sortedRuns reports whether the runs (split on prefix changes) are
// already in order.
func (s *Sorter) sortedRuns(n int, packed bool) bool {
	for _, r := range s.runs[1:] {
		if s.cmp(int(r)-1, int(r), packed) > 0 {
			return false
		}
	}
	return true
}

// orderRuns sorts the runs by their first row; when consecutive runs then
// do not overlap, that order is the sorted order and s.perm holds it.
func (s *Sorter) orderRuns(n int, packed bool) bool {
	if len(s.runs) > n/4 { // short runs: a full sort is as cheap
		return false
	}
	type run struct{ a, b int32 }
	rs := make([]run, len(s.runs))
	for i, a := range s.runs {
		b := int32(n)
		if i+1 < len(s.runs) {
			b = s.runs[i+1]
		}
		rs[i] = run{a, b}
	}
	slices.SortStableFunc(rs, func(x, y run) int { return s.cmp(int(x.a), int(y.a), packed) })
	for i := 1; i < len(rs); i++ {
		// The last row of the previous run must not exceed the first of
		// this one; equal keys from a later run may not come first.
		last, first := int(rs[i-1].b-1), int(rs[i].a)
		if c := s.cmp(last, first, packed); c > 0 || (c == 0 && rs[i-1].a > rs[i].a) {
			return false
		}
	}
	for _, r := range rs {
		for j := r.a; j < r.b; j++ {
			s.perm = append(s.perm, j)
		}
	}
	return true
}

// fullSort sorts every row: on one uint64 (key and row number) when they
// fit, else on 128-bit keys, else column by column.
func (s *Sorter) fullSort(n int, packed bool) {
	total := 0
	for _, b := range s.bits {
		total += b
	}
	idxBits := bits.Len(uint(n - 1))
	switch {
	case packed && total+idxBits <= 64:
		v := s.hi[:0] // hi is free for reuse: total <= 64 means all bits are in lo
		v = slices.Grow(v, n)[:n]
		for i := range v {
			v[i] = s.lo[i]<<idxBits | uint64(i)
		}
		slices.Sort(v)
		mask := uint64(1)<<idxBits - 1
		for _, x := range v {
			s.perm = append(s.perm, int32(x&mask))
		}
	case packed:
		w := slices.Grow(s.wide[:0], n)[:n]
		for i := range w {
			w[i] = wideKey{s.hi[i], s.lo[i], int32(i)}
		}
		slices.SortFunc(w, func(a, b wideKey) int {
			if c := cmp.Compare(a.hi, b.hi); c != 0 {
				return c
			}
			if c := cmp.Compare(a.lo, b.lo); c != 0 {
				return c
			}
			return cmp.Compare(a.i, b.i)
		})
		for _, x := range w {
			s.perm = append(s.perm, x.i)
		}
		s.wide = w
	default:
		for i := 0; i < n; i++ {
			s.perm = append(s.perm, int32(i))
		}
		slices.SortFunc(s.perm, func(a, b int32) int {
			if c := s.compare(int(a), int(b)); c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
	}
}

// pack concatenates the key columns' codes, most significant first, into
// 128 bits per row (hi, lo).
func (s *Sorter) pack(n int) {
	s.hi = slices.Grow(s.hi[:0], n)[:n]
	s.lo = slices.Grow(s.lo[:0], n)[:n]
	clear(s.hi)
	clear(s.lo)
	for ki, k := range s.keys {
		b := uint(s.bits[ki])
		if b == 0 {
			continue
		}
		for i, v := range k {
			h, l := s.hi[i], s.lo[i]
			if b >= 64 {
				h, l = l, 0
				if b > 64 {
					h = h<<(b-64) | 0
				}
			} else {
				h = h<<b | l>>(64-b)
				l <<= b
			}
			s.hi[i], s.lo[i] = h, l|v
		}
	}
}

func (s *Sorter) cmpPacked(a, b int) int {
	if c := cmp.Compare(s.hi[a], s.hi[b]); c != 0 {
		return c
	}
	return cmp.Compare(s.lo[a], s.lo[b])
}

// samePrefix reports whether rows a and b agree on every key column but
// the last (the low lastBits bits).
func (s *Sorter) samePrefix(a, b, lastBits int) bool {
	if lastBits >= 64 {
		return s.hi[a]>>(lastBits-64) == s.hi[b]>>(lastBits-64)
	}
	return s.hi[a] == s.hi[b] && s.lo[a]>>lastBits == s.lo[b]>>lastBits
}

func (s *Sorter) cmp(a, b int, packed bool) int {
	if packed {
		return s.cmpPacked(a, b)
	}
	return s.compare(a, b)
}

func (s *Sorter) compare(a, b int) int {
	for _, k := range s.keys {
		if c := cmp.Compare(k[a], k[b]); c != 0 {
			return c
		}
	}
	return 0
}

// encode turns each key column into order-preserving uint64 codes less
// their minimum (strings: their rank among the block's distinct values;
// signed integers: offset), and the bits each needs.
func (s *Sorter) encode(t *Table, key []string) error {
	n := t.Rows()
	for len(s.keys) < len(key) {
		s.keys = append(s.keys, nil)
	}
	s.keys = s.keys[:len(key)]
	s.bits = s.bits[:0]
	for ki, name := range key {
		var col Column
		for _, c := range t.Columns {
			if c.Name() == name {
				col = c
				break
			}
		}
		if col == nil {
			return fmt.Errorf("sorting %s: sort-key column %s missing", t.Name, name)
		}
		k := slices.Grow(s.keys[ki][:0], n)[:n]
		switch v := col.Data().(type) {
		case []string:
			s.rankStrings(v, k)
		case []int64:
			for i, x := range v {
				k[i] = uint64(x) ^ 1<<63
			}
		case []int32:
			for i, x := range v {
				k[i] = uint64(int64(x)) ^ 1<<63
			}
		case []uint64:
			copy(k, v)
		case []uint32:
			for i, x := range v {
				k[i] = uint64(x)
			}
		case []uint8:
			for i, x := range v {
				k[i] = uint64(x)
			}
		default:
			return fmt.Errorf("sorting %s: sort-key column %s has unsupported type %T", t.Name, name, v)
		}
		lo, hi := slices.Min(k), slices.Max(k)
		if lo != 0 {
			for i := range k {
				k[i] -= lo
			}
		}
		s.bits = append(s.bits, bits.Len64(hi-lo))
		s.keys[ki] = k
	}
	return nil
}

func (s *Sorter) rankStrings(v []string, k []uint64) {
	if s.dict == nil {
		s.dict = map[string]uint32{}
	}
	clear(s.dict)
	s.strs = s.strs[:0]
	prev, code := "", uint32(0)
	for i, x := range v {
		// Rows of one message share their strings: skip the map then.
		if i == 0 || x != prev {
			c, ok := s.dict[x]
			if !ok {
				c = uint32(len(s.strs))
				s.dict[x] = c
				s.strs = append(s.strs, x)
			}
			prev, code = x, c
		}
		k[i] = uint64(code)
	}
	// Codes in first-seen order → ranks in byte order (ClickHouse compares
	// strings as bytes, as Go does).
	order := make([]uint32, len(s.strs))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortFunc(order, func(a, b uint32) int { return strings.Compare(s.strs[a], s.strs[b]) })
	s.ranks = slices.Grow(s.ranks[:0], len(order))[:len(order)]
	for r, c := range order {
		s.ranks[c] = uint32(r)
	}
	for i := range k {
		k[i] = uint64(s.ranks[k[i]])
	}
}

// table returns the Sorter's reusable output table shaped like t.
func (s *Sorter) table(t *Table) *Table {
	if s.out == nil {
		s.out = map[string]*Table{}
	}
	out, ok := s.out[t.Name]
	if !ok || len(out.Columns) != len(t.Columns) {
		out = &Table{Name: t.Name, Columns: make([]Column, len(t.Columns))}
		for i, c := range t.Columns {
			out.Columns[i] = c.empty()
		}
		s.out[t.Name] = out
	}
	out.Reset()
	return out
}
