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

// Writer writes tables under Dir, a table at a time: BeginTable, Append
// any number of chunks, EndTable. A shard is closed and the next begun
// once it holds about ShardBytes.
type Writer struct {
	Dir          string
	RowGroupRows int64
	ShardBytes   int64
	Files        []string

	cur *open
}

// open is the table being written.
type open struct {
	name  string
	meta  map[string]string
	part  int
	bytes int64 // in the current shard, estimated before compression
	fw    *pqstore.FileWriter
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

// BeginTable starts table name's shards.
func (w *Writer) BeginTable(name string, meta map[string]string) error {
	if w.cur != nil {
		return fmt.Errorf("parquet: %s begun before %s ended", name, w.cur.name)
	}
	w.cur = &open{name: name, meta: meta}
	return nil
}

// Append writes t's rows into the current shard, beginning the next one
// whenever the current holds ShardBytes.
func (w *Writer) Append(t *schemas.Table) error {
	o := w.cur
	if o == nil {
		return fmt.Errorf("parquet: rows of %s appended outside a table", t.Name)
	}
	rg, shard := w.RowGroupRows, w.ShardBytes
	if rg <= 0 {
		rg = DefaultRowGroupRows
	}
	if shard <= 0 {
		shard = DefaultShardBytes
	}
	rowBytes := RowBytes(t)
	for a, n := 0, t.Rows(); a < n; {
		if o.fw == nil {
			path := filepath.Join(w.Dir, o.name, fmt.Sprintf("part-%05d.parquet", o.part))
			m := map[string]string{}
			for k, v := range o.meta {
				m[k] = v
			}
			m["lem.shard"] = fmt.Sprintf("%d", o.part)
			fw, err := pqstore.CreateFile(path, t.Slice(0, 0), m, rg)
			if err != nil {
				return err
			}
			o.fw, o.bytes = fw, 0
		}
		room := max(int((shard-o.bytes)/rowBytes), 1)
		b := min(a+room, n)
		if err := o.fw.Write(t.Slice(a, b)); err != nil {
			return err
		}
		o.bytes += int64(b-a) * rowBytes
		a = b
		if o.bytes >= shard {
			if err := w.closeShard(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *Writer) closeShard() error {
	o := w.cur
	if err := o.fw.Close(); err != nil {
		return err
	}
	w.Files = append(w.Files, o.fw.Path())
	o.fw = nil
	o.part++
	return nil
}

// EndTable finishes the table's last shard.
func (w *Writer) EndTable() error {
	defer func() { w.cur = nil }()
	if w.cur == nil || w.cur.fw == nil {
		return nil
	}
	return w.closeShard()
}

// Close implements exporters.Writer.
func (w *Writer) Close() error {
	return os.MkdirAll(w.Dir, 0o755)
}
