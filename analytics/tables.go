package analytics

import (
	"context"
	"fmt"
	"strings"

	"github.com/llm-energy-measure/lem/internal/pqstore"
	"github.com/llm-energy-measure/lem/schemas"
)

// TableReader reads raw table rows for export. The filter keeps rows of
// the given runs (run-scoped tables) or inside [From, To] (device tables).
type TableReader interface {
	ReadTable(ctx context.Context, t *schemas.Table, f Filter) error
}

// Filter selects rows.
type Filter struct {
	RunIDs   []string
	From, To int64
}

func timeColumn(table string) string {
	switch table {
	case schemas.TableEnergy:
		return "ts_before_ns"
	case schemas.TableGap:
		return "from_ns"
	case schemas.TableDevice:
		return "seen_ns"
	}
	return "ts_ns"
}

func runScoped(table string) bool {
	switch table {
	case schemas.TableRun, schemas.TableRequest, schemas.TableToken, schemas.TableMetric,
		schemas.TableRunResults, schemas.TableCycleResults, schemas.TableRequestEnerg:
		return true
	}
	return false
}

// replacing tables hold re-analysed rows: read them with FINAL.
func replacing(table string) bool {
	switch table {
	case schemas.TableDevice, schemas.TableRunResults, schemas.TableCycleResults, schemas.TableRequestEnerg:
		return true
	}
	return false
}

// RunScoped reports whether table's rows belong to runs (selected by run
// id) rather than to devices (selected by time).
func RunScoped(table string) bool { return runScoped(table) }

// ReadTable implements TableReader with a parameterised SELECT.
func (s *ClickHouseStore) ReadTable(ctx context.Context, t *schemas.Table, f Filter) error {
	q := "SELECT " + strings.Join(t.ColumnNames(), ", ") + " FROM " + s.q(t.Name)
	if replacing(t.Name) {
		q += " FINAL" // a ReplacingMergeTree: the latest row per key
	}
	var args []any
	switch {
	case runScoped(t.Name):
		if len(f.RunIDs) == 0 {
			return nil
		}
		q += " WHERE run_id IN (?" + strings.Repeat(", ?", len(f.RunIDs)-1) + ")"
		for _, id := range f.RunIDs {
			args = append(args, id)
		}
	case t.Name != schemas.TableDevice:
		q += " WHERE " + timeColumn(t.Name) + " BETWEEN ? AND ?"
		args = append(args, f.From, f.To)
	}
	rows, err := s.Conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", t.Name, err)
	}
	defer rows.Close()
	dest := make([]any, len(t.Columns))
	for rows.Next() {
		for i, c := range t.Columns {
			switch c.(type) {
			case *schemas.Col[string]:
				dest[i] = new(string)
			case *schemas.Col[int64]:
				dest[i] = new(int64)
			case *schemas.Col[int32]:
				dest[i] = new(int32)
			case *schemas.Col[uint64]:
				dest[i] = new(uint64)
			case *schemas.Col[uint32]:
				dest[i] = new(uint32)
			case *schemas.Col[uint8]:
				dest[i] = new(uint8)
			case *schemas.Col[float64]:
				dest[i] = new(float64)
			case *schemas.Col[[]string]:
				dest[i] = new([]string)
			}
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		for i, c := range t.Columns {
			switch col := c.(type) {
			case *schemas.Col[string]:
				col.Append(*dest[i].(*string))
			case *schemas.Col[int64]:
				col.Append(*dest[i].(*int64))
			case *schemas.Col[int32]:
				col.Append(*dest[i].(*int32))
			case *schemas.Col[uint64]:
				col.Append(*dest[i].(*uint64))
			case *schemas.Col[uint32]:
				col.Append(*dest[i].(*uint32))
			case *schemas.Col[uint8]:
				col.Append(*dest[i].(*uint8))
			case *schemas.Col[float64]:
				col.Append(*dest[i].(*float64))
			case *schemas.Col[[]string]:
				col.Append(*dest[i].(*[]string))
			}
		}
	}
	return rows.Err()
}

// ReadTable implements TableReader by loading the table and filtering.
func (s *ParquetStore) ReadTable(_ context.Context, t *schemas.Table, f Filter) error {
	all := &schemas.Table{Name: t.Name, Columns: t.Columns}
	if err := pqstore.ReadTable(s.Dir, all); err != nil {
		return err
	}
	keep := make([]bool, all.Rows())
	var key []string
	var ts []int64
	for _, c := range t.Columns {
		if c.Name() == "run_id" {
			key = c.Data().([]string)
		}
		if c.Name() == timeColumn(t.Name) {
			ts, _ = c.Data().([]int64)
		}
	}
	runs := map[string]bool{}
	for _, id := range f.RunIDs {
		runs[id] = true
	}
	for i := range keep {
		switch {
		case runScoped(t.Name):
			keep[i] = runs[key[i]]
		case t.Name == schemas.TableDevice:
			keep[i] = true
		default:
			keep[i] = ts[i] >= f.From && ts[i] <= f.To
		}
	}
	filterColumns(t, keep)
	return nil
}

func filterColumns(t *schemas.Table, keep []bool) {
	for _, c := range t.Columns {
		switch col := c.(type) {
		case *schemas.Col[string]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[int64]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[int32]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[uint64]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[uint32]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[uint8]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[float64]:
			col.V = filterSlice(col.V, keep)
		case *schemas.Col[[]string]:
			col.V = filterSlice(col.V, keep)
		default:
			// A column left unfiltered would misalign every row after it.
			panic(fmt.Sprintf("analytics: filterColumns: column %s of type %T", c.Name(), c))
		}
	}
}

func filterSlice[T any](v []T, keep []bool) []T {
	out := v[:0]
	for i, x := range v {
		if keep[i] {
			out = append(out, x)
		}
	}
	return out
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
