package clickhouse

import (
	"context"
	"fmt"
	"strings"

	"github.com/llm-energy-measure/lem/schemas"
)

// ReadTable appends to t the rows of table t.Name that f selects, with one
// parameterised SELECT of t's columns. Replacing tables are read with
// FINAL, so a re-analysed run shows its latest rows only.
func (s *Store) ReadTable(ctx context.Context, t *schemas.Table, f schemas.Filter) error {
	return s.scan(ctx, t, f, 0, nil)
}

// ScanTable calls fn with the rows of table name that f selects, in
// chunks of about rows rows (the last may be smaller), streamed from one
// SELECT: memory follows the chunk, not the selection. The chunk is
// reused after fn returns.
func (s *Store) ScanTable(ctx context.Context, name string, f schemas.Filter, rows int, fn func(*schemas.Table) error) error {
	spec, ok := schemas.Spec(name)
	if !ok {
		return fmt.Errorf("reading %s: not a table of the catalog", name)
	}
	t := spec.NewTable()
	if err := s.scan(ctx, t, f, max(rows, 1), fn); err != nil {
		return err
	}
	if t.Rows() > 0 {
		return fn(t)
	}
	return nil
}

// scan appends the selected rows to t; with fn, it hands t to fn (and
// resets it) whenever it holds chunk rows.
func (s *Store) scan(ctx context.Context, t *schemas.Table, f schemas.Filter, chunk int, fn func(*schemas.Table) error) error {
	spec, ok := schemas.Spec(t.Name)
	if !ok {
		return fmt.Errorf("reading %s: not a table of the catalog", t.Name)
	}
	q := "SELECT " + strings.Join(t.ColumnNames(), ", ") + " FROM " + s.db + "." + t.Name
	if spec.Replacing {
		q += " FINAL"
	}
	where, args := f.SQL(spec)
	if where == "false" {
		return nil
	}
	if where != "" {
		q += " WHERE " + where
	}
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", t.Name, err)
	}
	defer rows.Close()
	dest := make([]any, len(t.Columns))
	for i, c := range t.Columns {
		dest[i] = c.ScanDest()
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("reading %s: %w", t.Name, err)
		}
		for i, c := range t.Columns {
			c.AppendScanned(dest[i])
		}
		if fn != nil && t.Rows() >= chunk {
			if err := t.Check(); err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return err
			}
			t.Reset()
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", t.Name, err)
	}
	return t.Check()
}

// WriteResults stores one run's result tables. The tables are
// ReplacingMergeTrees on analyzed_ns: rows of an earlier analysis are
// replaced (readers use FINAL until the merge).
func (s *Store) WriteResults(ctx context.Context, runID string, tables []*schemas.Table) error {
	for _, t := range tables {
		if err := s.Write(ctx, t); err != nil {
			return fmt.Errorf("writing results of %s: %w", runID, err)
		}
	}
	return nil
}
