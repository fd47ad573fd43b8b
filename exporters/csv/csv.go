// Package csv writes exported tables as <dir>/<table>.csv: a header of
// column names, instants as integer ns since the Unix epoch (as stored;
// columns ending _ns), lists joined by ';'.
package csv

import (
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// Writer writes tables under Dir, a table at a time: BeginTable, Append
// any number of chunks, EndTable.
type Writer struct {
	Dir   string
	Files []string

	cur *open
}

// open is the table being written.
type open struct {
	name, path string
	meta       map[string]string
	f          *os.File
	cw         *csv.Writer
	rec        []string
}

// BeginTable starts <Dir>/<name>.csv (metadata goes to <name>.csv.meta
// as key=value lines); the header comes from the first chunk appended.
func (w *Writer) BeginTable(name string, meta map[string]string) error {
	if w.cur != nil {
		return fmt.Errorf("csv: %s begun before %s ended", name, w.cur.name)
	}
	w.cur = &open{name: name, meta: meta, path: filepath.Join(w.Dir, name+".csv")}
	return nil
}

// Append writes t's rows.
func (w *Writer) Append(t *schemas.Table) error {
	o := w.cur
	if o == nil {
		return fmt.Errorf("csv: rows of %s appended outside a table", t.Name)
	}
	if o.cw == nil {
		if err := os.MkdirAll(w.Dir, 0o755); err != nil {
			return err
		}
		f, err := os.Create(o.path)
		if err != nil {
			return err
		}
		o.f, o.cw = f, csv.NewWriter(f)
		o.rec = make([]string, len(t.Columns))
		if err := o.cw.Write(t.ColumnNames()); err != nil {
			return err
		}
	}
	for r := 0; r < t.Rows(); r++ {
		for i, c := range t.Columns {
			o.rec[i] = cell(c, r)
		}
		if err := o.cw.Write(o.rec); err != nil {
			return err
		}
	}
	return nil
}

// EndTable finishes the table's files (none when no rows were appended).
func (w *Writer) EndTable() error {
	o := w.cur
	w.cur = nil
	if o == nil || o.cw == nil {
		return nil
	}
	o.cw.Flush()
	if err := o.cw.Error(); err != nil {
		o.f.Close()
		return err
	}
	if err := o.f.Close(); err != nil {
		return err
	}
	var mb strings.Builder
	for _, k := range sortedKeys(o.meta) {
		fmt.Fprintf(&mb, "%s=%s\n", k, o.meta[k])
	}
	w.Files = append(w.Files, o.path)
	return os.WriteFile(o.path+".meta", []byte(mb.String()), 0o644)
}

func cell(c schemas.Column, r int) string {
	switch v := c.Data().(type) {
	case []string:
		return v[r]
	case []int64:
		return strconv.FormatInt(v[r], 10)
	case []int32:
		return strconv.FormatInt(int64(v[r]), 10)
	case []uint64:
		return strconv.FormatUint(v[r], 10)
	case []uint32:
		return strconv.FormatUint(uint64(v[r]), 10)
	case []uint8:
		return strconv.FormatUint(uint64(v[r]), 10)
	case []float64:
		if c.Nullable() && math.IsNaN(v[r]) {
			return "" // NULL: the figure could not be computed
		}
		return strconv.FormatFloat(v[r], 'g', -1, 64)
	case [][]string:
		return strings.Join(v[r], ";")
	}
	panic(fmt.Sprintf("csv: unmapped column type %T", c.Data()))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// Close implements exporters.Writer.
func (w *Writer) Close() error { return nil }
