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
	return s.Scan(ctx, t, f, 0, nil)
}

// Scan appends the rows of table t.Name that f selects to t, streamed
// from one SELECT; with fn, it hands t to fn (and resets it) whenever it
// holds chunk rows, so that memory follows the chunk, not the selection.
// What is left at the end stays in t.
func (s *Store) Scan(ctx context.Context, t *schemas.Table, f schemas.Filter, chunk int, fn func(*schemas.Table) error) error {
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
