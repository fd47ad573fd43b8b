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

// Writer writes tables under Dir.
type Writer struct {
	Dir   string
	Files []string
}

// WriteTable writes t (metadata goes to <table>.csv.meta as key=value lines).
func (w *Writer) WriteTable(t *schemas.Table, meta map[string]string) error {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(w.Dir, t.Name+".csv")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	cw.Write(t.ColumnNames())
	rec := make([]string, len(t.Columns))
	for r := 0; r < t.Rows(); r++ {
		for i, c := range t.Columns {
			rec[i] = cell(c, r)
		}
		if err := cw.Write(rec); err != nil {
			f.Close()
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var mb strings.Builder
	for _, k := range sortedKeys(meta) {
		fmt.Fprintf(&mb, "%s=%s\n", k, meta[k])
	}
	w.Files = append(w.Files, path)
	return os.WriteFile(path+".meta", []byte(mb.String()), 0o644)
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
