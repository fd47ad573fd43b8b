// Package parquet is the local Parquet store, the embedded default when no
// ClickHouse is configured: one folder per table, one file per written
// batch, named by the stream epoch and sequences it covers
// (e<epoch>-<first>-<last>.parquet), and one file per run for the analysis
// results. Ingest writes it; analytics and the exporters read it.
package parquet

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	pq "github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"

	"github.com/llm-energy-measure/lem/schemas"
)

// codec compresses every column of every file. One instance for all:
// each zstd.Codec pools its encoders, and an encoder holds megabytes of
// history, so a codec per column and schema made every write allocate
// fresh ones (the largest allocator of a 1,000-stream `lem run`).
var codec = &zstd.Codec{Level: zstd.SpeedDefault}

// Schema returns the Parquet schema of t, columns in the table's order:
// every column maps to its integer, float or string type — columns ending
// in _ns are INT64 nanoseconds (since the Unix epoch, or a duration for
// _dur_ns), as in ClickHouse, so arithmetic on them is arithmetic on
// nanoseconds in every reader. Compression is zstd.
func Schema(t *schemas.Table) (*pq.Schema, error) {
	g := orderedGroup{Group: pq.Group{}}
	for _, c := range t.Columns {
		n, err := node(c)
		if err != nil {
			return nil, err
		}
		g.Group[c.Name()] = pq.Compressed(n, codec)
		g.names = append(g.names, c.Name())
	}
	return pq.NewSchema(t.Name, g), nil
}

// orderedGroup is a Parquet group whose fields keep the order of names
// (pq.Group sorts its fields by name), so readers list columns in the
// table's order.
type orderedGroup struct {
	pq.Group
	names []string
}

func (g orderedGroup) Fields() []pq.Field {
	fs := make([]pq.Field, len(g.names))
	for i, n := range g.names {
		fs[i] = groupField{Node: g.Group[n], name: n}
	}
	return fs
}

type groupField struct {
	pq.Node
	name string
}

func (f groupField) Name() string { return f.name }

func (f groupField) Value(base reflect.Value) reflect.Value {
	return base.MapIndex(reflect.ValueOf(f.name))
}

func node(c schemas.Column) (pq.Node, error) {
	switch c.Data().(type) {
	case []string:
		return pq.String(), nil
	case []int64:
		return pq.Int(64), nil
	case []float64:
		if c.Nullable() {
			// NULL: a figure that could not be computed (NaN in Go).
			return pq.Optional(pq.Leaf(pq.DoubleType)), nil
		}
		return pq.Leaf(pq.DoubleType), nil
	case []int32:
		return pq.Int(32), nil
	case []uint64:
		return pq.Uint(64), nil
	case []uint32:
		return pq.Uint(32), nil
	case []uint8:
		return pq.Uint(8), nil
	case [][]string:
		return pq.Repeated(pq.String()), nil
	}
	return nil, fmt.Errorf("column %s: no parquet mapping for %T", c.Name(), c.Data())
}

var tmpSeq atomic.Uint64

// WriteFile writes t to path atomically (temp file, fsync, rename).
func WriteFile(path string, t *schemas.Table, meta map[string]string) error {
	return WriteFileRowGroups(path, t, meta, 0)
}

// WriteFileRowGroups is WriteFile with at most rowGroupRows rows per row
// group (0: parquet-go's default, one row group for small files).
func WriteFileRowGroups(path string, t *schemas.Table, meta map[string]string, rowGroupRows int64) error {
	return writeFile(path, t, meta, rowGroupRows, nil)
}

// writeFile is WriteFileRowGroups that, when ready is not nil, asks it
// just before the rename that makes the file visible, and leaves no file
// when it says no.
func writeFile(path string, t *schemas.Table, meta map[string]string, rowGroupRows int64, ready func() error) error {
	fw, err := CreateFile(path, t, meta, rowGroupRows)
	if err != nil {
		return err
	}
	if err := fw.Write(t); err != nil {
		fw.Abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return fw.close(ready)
}

// FileWriter writes one Parquet file of a table's rows, appended a table
// at a time (a row group is flushed whenever it holds rowGroupRows rows,
// so memory follows the row group, not the file), made visible atomically
// by Close (temp file, fsync, rename).
type FileWriter struct {
	path, tmp string
	f         *os.File
	w         *pq.Writer
	sch       *pq.Schema
	rows      int64
}

// CreateFile starts path for the rows of tables shaped like like (its
// name and columns; its rows are not written).
func CreateFile(path string, like *schemas.Table, meta map[string]string, rowGroupRows int64) (*FileWriter, error) {
	if err := like.Check(); err != nil {
		return nil, err
	}
	sch, err := Schema(like)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s.tmp-%d-%d", path, os.Getpid(), tmpSeq.Add(1))
	f, err := os.Create(tmp)
	if err != nil {
		return nil, err
	}
	opts := []pq.WriterOption{sch, pq.KeyValueMetadata("lem.schema_version", strconv.Itoa(schemas.WireVersion))}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		opts = append(opts, pq.KeyValueMetadata(k, meta[k]))
	}
	if rowGroupRows > 0 {
		opts = append(opts, pq.MaxRowsPerRowGroup(rowGroupRows))
	}
	return &FileWriter{path: path, tmp: tmp, f: f, w: pq.NewWriter(f, opts...), sch: sch}, nil
}

// Write appends t's rows (t has the columns the file was created with).
func (fw *FileWriter) Write(t *schemas.Table) error {
	if err := t.Check(); err != nil {
		return err
	}
	fw.rows += int64(t.Rows())
	return writeRows(fw.w, fw.sch, t)
}

// Path is where the file appears once closed.
func (fw *FileWriter) Path() string { return fw.path }

// Rows is how many rows were written.
func (fw *FileWriter) Rows() int64 { return fw.rows }

// Close finishes the file and moves it into place.
func (fw *FileWriter) Close() error { return fw.close(nil) }

// Abort removes the unfinished file.
func (fw *FileWriter) Abort() {
	fw.f.Close()
	os.Remove(fw.tmp)
}

func (fw *FileWriter) close(ready func() error) error {
	err := fw.w.Close()
	if err == nil {
		err = fw.f.Sync()
	}
	if cerr := fw.f.Close(); err == nil {
		err = cerr
	}
	if err == nil && ready != nil {
		err = ready()
	}
	if err == nil {
		err = os.Rename(fw.tmp, fw.path)
	}
	if err != nil {
		os.Remove(fw.tmp)
		return fmt.Errorf("writing %s: %w", fw.path, err)
	}
	if d, err := os.Open(filepath.Dir(fw.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func writeRows(w *pq.Writer, sch *pq.Schema, t *schemas.Table) error {
	idx := make([]int, len(t.Columns))
	for i, c := range t.Columns {
		leaf, ok := sch.Lookup(c.Name())
		if !ok {
			return fmt.Errorf("column %s missing from schema", c.Name())
		}
		idx[i] = leaf.ColumnIndex
	}
	// Values must be ordered by column index within a row.
	order := make([]int, len(t.Columns))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return idx[order[a]] < idx[order[b]] })
	const chunk = 1024
	rows := make([]pq.Row, 0, chunk)
	// The rows' values share one backing array, reused chunk after chunk
	// (parquet-go copies what it keeps before WriteRows returns); a row
	// with a list may outgrow its share and is then reallocated.
	nc := len(t.Columns)
	backing := make([]pq.Value, chunk*nc)
	// Each column's data once: Data() boxes the slice in an interface,
	// an allocation per call.
	datas := make([]any, nc)
	for i, c := range t.Columns {
		datas[i] = c.Data()
	}
	n := t.Rows()
	for r := 0; r < n; r++ {
		k := len(rows)
		row := pq.Row(backing[k*nc : k*nc : (k+1)*nc])
		for _, ci := range order {
			row = appendValues(row, datas[ci], t.Columns[ci].Nullable(), r, idx[ci])
		}
		rows = append(rows, row)
		if len(rows) == chunk || r == n-1 {
			if _, err := w.WriteRows(rows); err != nil {
				return err
			}
			rows = rows[:0]
		}
	}
	return nil
}

func appendValues(row pq.Row, data any, nullable bool, r, col int) pq.Row {
	switch v := data.(type) {
	case []string:
		return append(row, pq.ByteArrayValue(bytesOf(v[r])).Level(0, 0, col))
	case []int64:
		return append(row, pq.Int64Value(v[r]).Level(0, 0, col))
	case []int32:
		return append(row, pq.Int32Value(v[r]).Level(0, 0, col))
	case []uint64:
		return append(row, pq.Int64Value(int64(v[r])).Level(0, 0, col))
	case []uint32:
		return append(row, pq.Int32Value(int32(v[r])).Level(0, 0, col))
	case []uint8:
		return append(row, pq.Int32Value(int32(v[r])).Level(0, 0, col))
	case []float64:
		if nullable {
			if math.IsNaN(v[r]) {
				return append(row, pq.NullValue().Level(0, 0, col))
			}
			return append(row, pq.DoubleValue(v[r]).Level(0, 1, col))
		}
		return append(row, pq.DoubleValue(v[r]).Level(0, 0, col))
	case [][]string:
		if len(v[r]) == 0 {
			return append(row, pq.NullValue().Level(0, 0, col))
		}
		for i, s := range v[r] {
			rep := 1
			if i == 0 {
				rep = 0
			}
			row = append(row, pq.ByteArrayValue(bytesOf(s)).Level(rep, 1, col))
		}
		return row
	}
	panic(fmt.Sprintf("pqstore: unmapped column type %T", data))
}

// bytesOf returns s's bytes without copying them: a string is never
// written to, and parquet-go only reads a value's bytes.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// BatchPath returns the file of a batch of table covering stream sequences
// first..last of stream epoch epoch.
func BatchPath(dir, table string, epoch int64, first, last uint64) string {
	return filepath.Join(dir, table, fmt.Sprintf("e%019d-%020d-%020d.parquet", epoch, first, last))
}

// UnsequencedPath returns a fresh file name for a table without stream
// sequences (devices, results).
func UnsequencedPath(dir, table string) string {
	return filepath.Join(dir, table, fmt.Sprintf("t%020d-%d.parquet", time.Now().UnixNano(), tmpSeq.Add(1)))
}

// Files lists the Parquet files of table, in name order.
func Files(dir, table string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, table))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".parquet") {
			out = append(out, filepath.Join(dir, table, e.Name()))
		}
	}
	return out, nil
}

// Watermark returns the highest stream sequence of epoch stored for table.
func Watermark(dir, table string, epoch int64) (uint64, error) {
	files, err := Files(dir, table)
	if err != nil {
		return 0, err
	}
	var wm uint64
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".parquet")
		if !strings.HasPrefix(base, "e") {
			continue // unsequenced table
		}
		parts := strings.Split(base[1:], "-")
		if len(parts) != 3 {
			return 0, fmt.Errorf("store file %s: bad name", f)
		}
		e, err1 := strconv.ParseInt(parts[0], 10, 64)
		last, err2 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("store file %s: bad name", f)
		}
		if e == epoch {
			wm = max(wm, last)
		}
	}
	return wm, nil
}

// ReadTable reads every row of table into t (whose columns define what is
// read). A column absent from a file — written before an additive schema
// change — reads as its zero value, as ClickHouse's DEFAULT does. It
// appends to t.
func ReadTable(dir string, t *schemas.Table) error {
	files, err := Files(dir, t.Name)
	if err != nil {
		return err
	}
	for _, path := range files {
		if _, err := readFile(path, t, nil); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return t.Check()
}

// filesRead counts the files readFile decoded (not pruned), for tests.
var filesRead atomic.Int64

// groupsRead counts the row groups of flat files decoded, for tests.
var groupsRead atomic.Int64

// readFile appends path's rows to t, unless prune, given the open file,
// says none of them can be wanted (then it reports false and reads
// nothing).
func readFile(path string, t *schemas.Table, prune func(*pq.File) bool) (bool, error) {
	return readGroups(path, t, prune, nil, nil)
}

// readGroups is readFile that, when group is not nil, reads only the row
// groups group says may hold selected rows (flat files), and, when done
// is not nil, calls it after each row group read into t.
func readGroups(path string, t *schemas.Table, prune func(*pq.File) bool, group func(*pq.Schema, pq.RowGroup) bool, done func() error) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	pf, err := pq.OpenFile(f, st.Size())
	if err != nil {
		return false, err
	}
	if prune != nil && prune(pf) {
		return false, nil
	}
	filesRead.Add(1)
	sch := pf.Schema()
	idx := make([]int, len(t.Columns))
	flat := true
	for i, c := range t.Columns {
		leaf, ok := sch.Lookup(c.Name())
		if !ok {
			idx[i] = -1
			continue
		}
		idx[i] = leaf.ColumnIndex
		flat = flat && leaf.MaxRepetitionLevel == 0
	}
	if flat {
		return true, readColumns(pf, t, idx, group, done)
	}
	r := pq.NewReader(pf)
	defer r.Close()
	buf := make([]pq.Row, 512)
	var byCol [][]pq.Value // one row's values by leaf column, reused
	for {
		n, err := r.ReadRows(buf)
		for _, row := range buf[:n] {
			byCol = splitByColumn(row, byCol)
			for i, c := range t.Columns {
				if idx[i] < 0 {
					c.AppendZero()
					continue
				}
				var vals []pq.Value
				if idx[i] < len(byCol) {
					vals = byCol[idx[i]]
				}
				if err := appendFrom(c, vals); err != nil {
					return true, err
				}
			}
		}
		if err == io.EOF {
			if done != nil {
				return true, done()
			}
			return true, nil
		}
		if err != nil {
			return true, err
		}
	}
}

// readColumns reads a file whose columns are all flat (no repeated
// values) column chunk by column chunk, in batches of values: no row is
// assembled, which is several times faster than reading rows.
func readColumns(pf *pq.File, t *schemas.Table, idx []int, group func(*pq.Schema, pq.RowGroup) bool, done func() error) error {
	vals := make([]pq.Value, 4096)
	for _, rg := range pf.RowGroups() {
		if group != nil && !group(pf.Schema(), rg) {
			continue
		}
		groupsRead.Add(1)
		n := rg.NumRows()
		chunks := rg.ColumnChunks()
		for i, c := range t.Columns {
			if idx[i] < 0 {
				for range n {
					c.AppendZero()
				}
				continue
			}
			got, err := readChunk(chunks[idx[i]], c, vals)
			if err != nil {
				return fmt.Errorf("column %s: %w", c.Name(), err)
			}
			if got != n {
				return fmt.Errorf("column %s: %d values in a row group of %d rows", c.Name(), got, n)
			}
		}
		if done != nil {
			if err := done(); err != nil {
				return err
			}
		}
	}
	return nil
}

func readChunk(cc pq.ColumnChunk, c schemas.Column, vals []pq.Value) (int64, error) {
	pages := cc.Pages()
	defer pages.Close()
	var got int64
	for {
		p, err := pages.ReadPage()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		vr := p.Values()
		for {
			k, err := vr.ReadValues(vals)
			if k > 0 {
				if aerr := appendColumn(c, vals[:k]); aerr != nil {
					pq.Release(p)
					return got, aerr
				}
				got += int64(k)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				pq.Release(p)
				return got, err
			}
		}
		pq.Release(p)
	}
}

// appendColumn appends one value per row of a flat column.
func appendColumn(c schemas.Column, vs []pq.Value) error {
	switch col := c.(type) {
	case *schemas.Col[string]:
		// Identity columns repeat one value for many rows: reuse the
		// previous string instead of allocating each (the comparison
		// does not allocate).
		last := ""
		for i, v := range vs {
			if b := v.ByteArray(); i == 0 || string(b) != last {
				last = string(b)
			}
			col.Append(last)
		}
	case *schemas.Col[int64]:
		for _, v := range vs {
			col.Append(v.Int64())
		}
	case *schemas.Col[int32]:
		for _, v := range vs {
			col.Append(v.Int32())
		}
	case *schemas.Col[uint64]:
		for _, v := range vs {
			col.Append(uint64(v.Int64()))
		}
	case *schemas.Col[uint32]:
		for _, v := range vs {
			col.Append(uint32(v.Int32()))
		}
	case *schemas.Col[uint8]:
		for _, v := range vs {
			col.Append(uint8(v.Int32()))
		}
	case *schemas.Col[float64]:
		for _, v := range vs {
			if v.IsNull() {
				col.AppendNull()
			} else {
				col.Append(v.Double())
			}
		}
	default:
		for _, v := range vs {
			if err := appendFrom(c, []pq.Value{v}); err != nil {
				return err
			}
		}
	}
	return nil
}

// splitByColumn groups a row's values by leaf column into by (reused
// across rows: no allocation per row once it has grown).
func splitByColumn(row pq.Row, by [][]pq.Value) [][]pq.Value {
	for i := range by {
		by[i] = by[i][:0]
	}
	for _, v := range row {
		c := v.Column()
		for c >= len(by) {
			by = append(by, nil)
		}
		by[c] = append(by[c], v)
	}
	return by
}

func appendFrom(c schemas.Column, vals []pq.Value) error {
	if len(vals) == 0 {
		return fmt.Errorf("column %s: no value", c.Name())
	}
	v := vals[0]
	switch col := c.(type) {
	case *schemas.Col[string]:
		col.Append(string(v.ByteArray()))
	case *schemas.Col[int64]:
		col.Append(v.Int64())
	case *schemas.Col[int32]:
		col.Append(v.Int32())
	case *schemas.Col[uint64]:
		col.Append(uint64(v.Int64()))
	case *schemas.Col[uint32]:
		col.Append(uint32(v.Int32()))
	case *schemas.Col[uint8]:
		col.Append(uint8(v.Int32()))
	case *schemas.Col[float64]:
		if v.IsNull() {
			col.AppendNull() // NaN: not computed
		} else {
			col.Append(v.Double())
		}
	case *schemas.Col[[]string]:
		var ss []string
		for _, x := range vals {
			if !x.IsNull() {
				ss = append(ss, string(x.ByteArray()))
			}
		}
		col.Append(ss)
	default:
		return fmt.Errorf("column %s: unmapped type %T", c.Name(), c)
	}
	return nil
}
