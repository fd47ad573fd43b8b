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

func (s *ParquetSink) Watermark(_ context.Context, table string) (uint64, error) {
	return pqstore.Watermark(s.dir, table)
}

func (s *ParquetSink) Write(_ context.Context, t *schemas.Table) error {
	if t.Rows() == 0 {
		return nil
	}
	path := pqstore.UnsequencedPath(s.dir, t.Name)
	for _, c := range t.Columns {
		if c.Name() != "stream_seq" {
			continue
		}
		seqs := c.Data().([]uint64)
		first, last := seqs[0], seqs[0]
		for _, q := range seqs {
			first, last = min(first, q), max(last, q)
		}
		path = pqstore.BatchPath(s.dir, t.Name, first, last)
	}
	if err := pqstore.WriteFile(path, t, map[string]string{"lem.table": t.Name}); err != nil {
		return fmt.Errorf("parquet sink: %w", err)
	}
	return nil
}
