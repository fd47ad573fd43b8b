// Package parquet writes exported tables as Parquet shards:
// <dir>/<table>/part-NNNNN.parquet, zstd, INT64 nanoseconds for _ns columns
// (as in ClickHouse), columns in the table's order,
// row groups of a set number of rows, shards of at most a set size, and
// key-value metadata (schema version, tool version, run ids, units).
package parquet

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/llm-energy-measure/lem/schemas"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"
)

// Defaults: row groups of 1 M rows (tens of MB of column chunks: large
// enough for scans, small enough for readers that load a group at a time)
// and shards of about 500 MB.
const (
	DefaultRowGroupRows = 1 << 20
	DefaultShardBytes   = 500 << 20
)

// Writer writes tables under Dir.
type Writer struct {
	Dir          string
	RowGroupRows int64
	ShardBytes   int64
	Files        []string
}

// RowBytes estimates the encoded size of a row of t before compression:
// fixed widths, and strings at their mean length in t.
func RowBytes(t *schemas.Table) int64 {
	var n int64
	rows := max(t.Rows(), 1)
	for _, c := range t.Columns {
		switch v := c.Data().(type) {
		case []string:
			var total int
			for _, s := range v {
				total += len(s) + 4
			}
			n += int64(total / rows)
		case [][]string:
			var total int
			for _, ss := range v {
				for _, s := range ss {
					total += len(s) + 4
				}
			}
			n += int64(total / rows)
		case []int64, []uint64, []float64:
			n += 8
		default:
			n += 4
		}
	}
	return max(n, 1)
}

// WriteTable writes t in as many shards as ShardBytes requires.
func (w *Writer) WriteTable(t *schemas.Table, meta map[string]string) error {
	rg, shard := w.RowGroupRows, w.ShardBytes
	if rg <= 0 {
		rg = DefaultRowGroupRows
	}
	if shard <= 0 {
		shard = DefaultShardBytes
	}
	perShard := max(int(shard/RowBytes(t)), 1)
	n := t.Rows()
	for part, a := 0, 0; a < n; part, a = part+1, a+perShard {
		b := min(a+perShard, n)
		path := filepath.Join(w.Dir, t.Name, fmt.Sprintf("part-%05d.parquet", part))
		m := map[string]string{}
		for k, v := range meta {
			m[k] = v
		}
		m["lem.shard"] = fmt.Sprintf("%d", part)
		if err := pqstore.WriteFileRowGroups(path, t.Slice(a, b), m, rg); err != nil {
			return err
		}
		w.Files = append(w.Files, path)
	}
	return nil
}

// Close implements exporters.Writer.
func (w *Writer) Close() error {
	return os.MkdirAll(w.Dir, 0o755)
}
