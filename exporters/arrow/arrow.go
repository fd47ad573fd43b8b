// Package arrow writes exported tables as Arrow IPC files
// (<dir>/<table>.arrow, the random-access file format) for zero-copy
// readers: columns ending _ns as int64 nanoseconds (instants since the Unix
// epoch, durations for _dur_ns), as in ClickHouse and the Parquet export,
// so arithmetic on them is arithmetic on nanoseconds; unsigned integers as such, lists
// of strings as list<utf8>; record batches of a set number of rows; the
// export's key-value metadata on the schema.
package arrow

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/llm-energy-measure/lem/schemas"
)

// DefaultBatchRows is the rows per record batch.
const DefaultBatchRows = 1 << 16

// Writer writes tables under Dir, a table at a time: BeginTable, Append
// any number of chunks, EndTable.
type Writer struct {
	Dir       string
	BatchRows int
	Files     []string

	cur *open
}

// open is the table being written.
type open struct {
	name, path string
	meta       map[string]string
	f          *os.File
	fw         *ipc.FileWriter
	b          *array.RecordBuilder
}

// Schema maps a table's columns to Arrow fields.
func Schema(t *schemas.Table, meta map[string]string) (*arrow.Schema, error) {
	fields := make([]arrow.Field, len(t.Columns))
	for i, c := range t.Columns {
		var dt arrow.DataType
		switch c.Data().(type) {
		case []string:
			dt = arrow.BinaryTypes.String
		case []int64:
			dt = arrow.PrimitiveTypes.Int64
		case []int32:
			dt = arrow.PrimitiveTypes.Int32
		case []uint64:
			dt = arrow.PrimitiveTypes.Uint64
		case []uint32:
			dt = arrow.PrimitiveTypes.Uint32
		case []uint8:
			dt = arrow.PrimitiveTypes.Uint8
		case []float64:
			dt = arrow.PrimitiveTypes.Float64
		case [][]string:
			dt = arrow.ListOf(arrow.BinaryTypes.String)
		default:
			return nil, fmt.Errorf("column %s: no Arrow mapping for %T", c.Name(), c.Data())
		}
		fields[i] = arrow.Field{Name: c.Name(), Type: dt, Nullable: c.Nullable()}
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = meta[k]
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md), nil
}

// BeginTable starts <Dir>/<name>.arrow; its schema comes from the first
// chunk appended.
func (w *Writer) BeginTable(name string, meta map[string]string) error {
	if w.cur != nil {
		return fmt.Errorf("arrow: %s begun before %s ended", name, w.cur.name)
	}
	w.cur = &open{name: name, meta: meta, path: filepath.Join(w.Dir, name+".arrow")}
	return nil
}

// Append writes t's rows as record batches of BatchRows rows.
func (w *Writer) Append(t *schemas.Table) error {
	o := w.cur
	if o == nil {
		return fmt.Errorf("arrow: rows of %s appended outside a table", t.Name)
	}
	if o.fw == nil {
		sch, err := Schema(t, o.meta)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(w.Dir, 0o755); err != nil {
			return err
		}
		if o.f, err = os.Create(o.path); err != nil {
			return err
		}
		// Uncompressed: zero-copy reading needs the buffers as they are,
		// and not every reader has IPC compression codecs (Arrow JS has
		// none registered by default).
		if o.fw, err = ipc.NewFileWriter(o.f, ipc.WithSchema(sch)); err != nil {
			o.f.Close()
			return err
		}
		o.b = array.NewRecordBuilder(memory.NewGoAllocator(), sch)
	}
	rows := w.BatchRows
	if rows <= 0 {
		rows = DefaultBatchRows
	}
	for a := 0; a < t.Rows(); a += rows {
		end := min(a+rows, t.Rows())
		for i, c := range t.Columns {
			appendColumn(o.b.Field(i), c, a, end)
		}
		rec := o.b.NewRecordBatch()
		err := o.fw.Write(rec)
		rec.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// EndTable finishes the table's file (none when no rows were appended).
func (w *Writer) EndTable() error {
	o := w.cur
	w.cur = nil
	if o == nil || o.fw == nil {
		return nil
	}
	o.b.Release()
	if err := o.fw.Close(); err != nil {
		o.f.Close()
		return err
	}
	if err := o.f.Close(); err != nil {
		return err
	}
	w.Files = append(w.Files, o.path)
	return nil
}

func appendColumn(fb array.Builder, c schemas.Column, a, b int) {
	switch v := c.Data().(type) {
	case []string:
		fb.(*array.StringBuilder).AppendValues(v[a:b], nil)
	case []int64:
		fb.(*array.Int64Builder).AppendValues(v[a:b], nil)
	case []int32:
		fb.(*array.Int32Builder).AppendValues(v[a:b], nil)
	case []uint64:
		fb.(*array.Uint64Builder).AppendValues(v[a:b], nil)
	case []uint32:
		fb.(*array.Uint32Builder).AppendValues(v[a:b], nil)
	case []uint8:
		fb.(*array.Uint8Builder).AppendValues(v[a:b], nil)
	case []float64:
		fb := fb.(*array.Float64Builder)
		if !c.Nullable() {
			fb.AppendValues(v[a:b], nil)
			break
		}
		// NULL where the figure could not be computed (NaN in Go).
		for _, x := range v[a:b] {
			if math.IsNaN(x) {
				fb.AppendNull()
			} else {
				fb.Append(x)
			}
		}
	case [][]string:
		lb := fb.(*array.ListBuilder)
		sb := lb.ValueBuilder().(*array.StringBuilder)
		for _, ss := range v[a:b] {
			lb.Append(true)
			sb.AppendValues(ss, nil)
		}
	}
}

// Close implements exporters.Writer.
func (w *Writer) Close() error { return nil }
