// Package exporters turns stored runs into files researchers publish:
// Parquet shards (exporters/parquet), Arrow IPC (exporters/arrow), CSV
// (exporters/csv) and Hugging Face datasets (exporters/hfdataset). Export
// reads each table once from a store (ClickHouse or the Parquet store) and
// hands it to the format's writer.
package exporters

import (
	"context"
	"fmt"
	"strings"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
)

// Tables exported by default, in order: run-scoped first (events, then the
// results written back by analytics), then the device time series of the
// runs' span.
var Tables = []string{schemas.TableRun, schemas.TableRequest, schemas.TableToken, schemas.TableMetric,
	schemas.TableRunResults, schemas.TableCycleResults, schemas.TableRequestEnerg,
	schemas.TablePower, schemas.TableEnergy, schemas.TableState, schemas.TableGap, schemas.TableClock, schemas.TableDevice}

// Selection is what to export: runs (run-scoped tables by id, device tables
// over the runs' span ± Margin) or a time range.
type Selection struct {
	RunIDs   []string
	From, To int64 // ns; used when RunIDs is empty, or to widen it
	Tables   []string
	Margin   int64 // ns around the runs' span (5 s)
}

// Writer writes tables in some format, a table at a time and each in
// chunks: BeginTable, Append (any number of times), EndTable. A table
// with no rows appended leaves no file.
type Writer interface {
	BeginTable(name string, meta map[string]string) error
	Append(t *schemas.Table) error
	EndTable() error
	Close() error
}

// Scanner streams a table's selected rows in chunks (store.Store does,
// over either store).
type Scanner interface {
	ScanTable(ctx context.Context, name string, f schemas.Filter, rows int, fn func(*schemas.Table) error) error
}

// ChunkRows is how many rows Export reads and writes at a time: memory
// follows it, not the export's size.
var ChunkRows = 1 << 18

// Summary says what an export wrote.
type Summary struct {
	Rows  map[string]int
	Files []string
}

// Meta is the key-value metadata every exported file carries.
func Meta(sel Selection, toolVersion, table string) map[string]string {
	return map[string]string{
		"lem.schema_version": fmt.Sprint(schemas.WireVersion),
		"lem.tool_version":   toolVersion,
		"lem.table":          table,
		"lem.run_ids":        strings.Join(sel.RunIDs, ","),
		"lem.from_ns":        fmt.Sprint(sel.From),
		"lem.to_ns":          fmt.Sprint(sel.To),
		"lem.units":          "power_mw=mW energy_uj=µJ *_ns=ns since the Unix epoch *_dur_ns=ns (a duration) value=the metric's own unit",
	}
}

// Export reads each selected table from src and writes it with w, in
// chunks of ChunkRows; progress (may be nil) is told each table's rows as
// they are written.
func Export(ctx context.Context, src Scanner, store analytics.Store, sel Selection, toolVersion string,
	w Writer, progress func(table string, rows int)) (Summary, error) {
	sum := Summary{Rows: map[string]int{}}
	if sel.Margin == 0 {
		sel.Margin = 5e9
	}
	f := schemas.Filter{RunIDs: sel.RunIDs, From: sel.From, To: sel.To}
	if len(sel.RunIDs) > 0 {
		from, to, err := analytics.RunSpan(ctx, store, sel.RunIDs)
		if err != nil {
			return sum, err
		}
		f.From, f.To = from-sel.Margin, to+sel.Margin
		if sel.From != 0 {
			f.From = min(f.From, sel.From)
		}
		if sel.To != 0 {
			f.To = max(f.To, sel.To)
		}
		sel.From, sel.To = f.From, f.To
	} else if sel.To <= sel.From {
		return sum, fmt.Errorf("export: give run ids, or a time range with from < to")
	}
	tables := sel.Tables
	if len(tables) == 0 {
		tables = Tables
	}
	for _, name := range tables {
		spec, ok := schemas.Spec(name)
		if !ok {
			return sum, fmt.Errorf("export: unknown table %q", name)
		}
		if len(sel.RunIDs) == 0 && spec.RunScoped {
			// A time range selects the runs that overlap it.
			ids, err := runsIn(ctx, store, sel.From, sel.To)
			if err != nil {
				return sum, err
			}
			f.RunIDs = ids
		}
		if err := w.BeginTable(name, Meta(sel, toolVersion, name)); err != nil {
			return sum, fmt.Errorf("writing %s: %w", name, err)
		}
		write := func(t *schemas.Table) error {
			if t.Rows() == 0 {
				return nil
			}
			if err := w.Append(t); err != nil {
				return fmt.Errorf("writing %s: %w", name, err)
			}
			sum.Rows[name] += t.Rows()
			if progress != nil {
				progress(name, sum.Rows[name])
			}
			return nil
		}
		if err := src.ScanTable(ctx, name, f, ChunkRows, write); err != nil {
			return sum, fmt.Errorf("exporting %s: %w", name, err)
		}
		if _, ok := sum.Rows[name]; !ok {
			sum.Rows[name] = 0 // listed, with no rows
		}
		if err := w.EndTable(); err != nil {
			return sum, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return sum, w.Close()
}

// runsIn returns the runs with an event inside [from, to].
func runsIn(ctx context.Context, store analytics.Store, from, to int64) ([]string, error) {
	ids, err := store.RunIDs(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		evs, err := store.RunEvents(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.TS >= from && e.TS <= to {
				out = append(out, id)
				break
			}
		}
	}
	return out, nil
}
