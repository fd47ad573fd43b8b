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

// Writer writes tables under Dir.
type Writer struct {
	Dir       string
	BatchRows int
	Files     []string
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

// WriteTable writes t to <Dir>/<table>.arrow.
func (w *Writer) WriteTable(t *schemas.Table, meta map[string]string) error {
	sch, err := Schema(t, meta)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(w.Dir, t.Name+".arrow")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// Uncompressed: zero-copy reading needs the buffers as they are, and
	// not every reader has IPC compression codecs (Arrow JS has none
	// registered by default).
	fw, err := ipc.NewFileWriter(f, ipc.WithSchema(sch))
	if err != nil {
		f.Close()
		return err
	}
	rows := w.BatchRows
	if rows <= 0 {
		rows = DefaultBatchRows
	}
	mem := memory.NewGoAllocator()
	b := array.NewRecordBuilder(mem, sch)
	defer b.Release()
	for a := 0; a < t.Rows(); a += rows {
		end := min(a+rows, t.Rows())
		for i, c := range t.Columns {
			appendColumn(b.Field(i), c, a, end)
		}
		rec := b.NewRecordBatch()
		err := fw.Write(rec)
		rec.Release()
		if err != nil {
			fw.Close()
			f.Close()
			return err
		}
	}
	if err := fw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	w.Files = append(w.Files, path)
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
