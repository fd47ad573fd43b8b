package analytics

import (
	"context"
	"fmt"

	"github.com/llm-energy-measure/lem/schemas"
)

// TableReader reads raw table rows (for export and validation): it
// appends to the empty t the rows of its table that f selects.
type TableReader interface {
	ReadTable(ctx context.Context, t *schemas.Table, f schemas.Filter) error
}

// RunSpan returns the time span covered by the runs' events.
func RunSpan(ctx context.Context, s Store, runIDs []string) (from, to int64, err error) {
	from = 1<<63 - 1
	for _, id := range runIDs {
		evs, err := s.RunEvents(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		for _, e := range evs {
			from, to = min(from, e.TS), max(to, e.TS)
		}
	}
	if to == 0 {
		return 0, 0, fmt.Errorf("no events for runs %v", runIDs)
	}
	return from, to, nil
}
