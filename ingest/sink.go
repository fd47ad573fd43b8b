package ingest

import (
	"context"

	"github.com/llm-energy-measure/lem/schemas"
)

// Sink is a store that ingest writes tables to.
type Sink interface {
	// Watermark returns the highest stream sequence of stream epoch epoch
	// already stored in table, 0 if none.
	Watermark(ctx context.Context, table string, epoch int64) (uint64, error)
	// Write stores the rows of t atomically: after an error nothing of t
	// may be visible. The sink does not retain t after returning.
	Write(ctx context.Context, t *schemas.Table) error
	// Name describes the sink in logs and metrics ("clickhouse", "parquet").
	Name() string
	Close() error
}
