package ingest

import (
	"context"
	"fmt"

	"github.com/llm-energy-measure/lem/internal/pqstore"
	"github.com/llm-energy-measure/lem/schemas"
)

// ParquetSink writes each batch as one Parquet file of the local store
// (see internal/pqstore). It is the embedded default when no ClickHouse is
// configured.
type ParquetSink struct {
	dir string
}

// NewParquetSink stores under dir.
func NewParquetSink(dir string) *ParquetSink { return &ParquetSink{dir: dir} }

// Dir returns the store's root.
func (s *ParquetSink) Dir() string { return s.dir }

func (s *ParquetSink) Name() string { return "parquet" }

func (s *ParquetSink) Close() error { return nil }

func (s *ParquetSink) Watermark(_ context.Context, table string, epoch int64) (uint64, error) {
	return pqstore.Watermark(s.dir, table, epoch)
}

func (s *ParquetSink) Write(_ context.Context, t *schemas.Table) error {
	if t.Rows() == 0 {
		return nil
	}
	path := pqstore.UnsequencedPath(s.dir, t.Name)
	var seqs []uint64
	var epochs []int64
	for _, c := range t.Columns {
		switch c.Name() {
		case "stream_seq":
			seqs = c.Data().([]uint64)
		case "stream_epoch":
			epochs = c.Data().([]int64)
		}
	}
	if seqs != nil && epochs != nil {
		first, last := seqs[0], seqs[0]
		for i, q := range seqs {
			if epochs[i] != epochs[0] {
				return fmt.Errorf("parquet sink: batch of %s spans two stream epochs", t.Name)
			}
			first, last = min(first, q), max(last, q)
		}
		path = pqstore.BatchPath(s.dir, t.Name, epochs[0], first, last)
	}
	if err := pqstore.WriteFile(path, t, map[string]string{"lem.table": t.Name}); err != nil {
		return fmt.Errorf("parquet sink: %w", err)
	}
	return nil
}
