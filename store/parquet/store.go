package parquet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pq "github.com/parquet-go/parquet-go"

	"github.com/llm-energy-measure/lem/internal/fence"
	"github.com/llm-energy-measure/lem/schemas"
)

// Store is the Parquet store under a directory. Writes of different
// tables may run concurrently (ingest's workers do); each file is written
// atomically.
type Store struct {
	dir string
	// ToolVersion is recorded in the metadata of result files.
	ToolVersion string
}

// Open returns the store under dir; the directory is created on the first
// write.
func Open(dir string) *Store { return &Store{dir: dir} }

// Dir returns the store's root.
func (s *Store) Dir() string { return s.dir }

func (s *Store) Name() string { return "parquet" }

// Describe says where the store is, for people.
func (s *Store) Describe() string { return "Parquet store " + s.dir }

func (s *Store) Close() error { return nil }

// Watermark returns the highest stream sequence of epoch stored in table.
func (s *Store) Watermark(_ context.Context, table string, epoch int64) (uint64, error) {
	return Watermark(s.dir, table, epoch)
}

// BatchRowGroupRows bounds the row groups of the files Write stores.
// Ingest's blocks come sorted by host, device and time, so a row group
// this small spans few devices, and a read of one device's series skips
// the others' row groups by their statistics (analysis reads a device at
// a time: with one row group per block, every device's read decoded the
// whole block).
const BatchRowGroupRows = 8192

// Write stores t as one file, named by the stream positions it covers
// when it has them. A write bounded by a lease (ADR 0019) checks it just
// before the file is renamed into place.
func (s *Store) Write(ctx context.Context, t *schemas.Table) error {
	if t.Rows() == 0 {
		return nil
	}
	path := UnsequencedPath(s.dir, t.Name)
	seqc, epc := t.Column("stream_seq"), t.Column("stream_epoch")
	if seqc != nil && epc != nil {
		seqs, epochs := seqc.Data().([]uint64), epc.Data().([]int64)
		first, last := seqs[0], seqs[0]
		for i, q := range seqs {
			if epochs[i] != epochs[0] {
				return fmt.Errorf("parquet store: batch of %s spans two stream epochs", t.Name)
			}
			first, last = min(first, q), max(last, q)
		}
		path = BatchPath(s.dir, t.Name, epochs[0], first, last)
	}
	var ready func() error
	if _, ok := fence.From(ctx); ok {
		ready = func() error { return fence.Check(ctx) }
	}
	if err := writeFile(path, t, map[string]string{"lem.table": t.Name}, BatchRowGroupRows, ready); err != nil {
		return fmt.Errorf("parquet store: %w", err)
	}
	return nil
}

// ReadTable appends to t the rows of its table that f selects, file by
// file: a file whose statistics (the min and max of the time column, the
// run id or the device in each row group) show that none of its rows can
// be selected is not decoded, nor is such a row group of the others, and
// of what is decoded only the selected rows are kept, so memory follows
// the selection, not the store.
func (s *Store) ReadTable(ctx context.Context, t *schemas.Table, f schemas.Filter) error {
	if t.Rows() > 0 {
		return fmt.Errorf("reading %s: the table to read into must be empty", t.Name)
	}
	return s.Scan(ctx, t, f, 0, nil)
}

// Scan appends the rows of table t.Name that f selects to t, one row
// group at a time, skipping those the statistics rule out; with fn, it
// hands t to fn (and resets it) whenever it holds chunk rows or more (a
// chunk ends at a row group), so that memory follows the chunk, not the
// selection. What is left at the end stays in t.
func (s *Store) Scan(ctx context.Context, t *schemas.Table, f schemas.Filter, chunk int, fn func(*schemas.Table) error) error {
	spec, ok := schemas.Spec(t.Name)
	if !ok {
		return fmt.Errorf("reading %s: not a table of the catalog", t.Name)
	}
	files, err := Files(s.dir, t.Name)
	if err != nil {
		return err
	}
	scratch := schemas.EmptyTable(t.Name)
	group := groupFilter(spec, f)
	var prune func(*pq.File) bool
	if group != nil {
		prune = func(pf *pq.File) bool {
			for _, rg := range pf.RowGroups() {
				if group(pf.Schema(), rg) {
					return false // this row group may hold selected rows
				}
			}
			return len(pf.RowGroups()) > 0
		}
	}
	keep := func() error {
		if scratch.Rows() == 0 {
			return nil
		}
		kept, err := f.Keep(spec, scratch)
		if err != nil {
			return err
		}
		if err := t.AppendKept(scratch, kept); err != nil {
			return err
		}
		scratch.Reset()
		if fn != nil && t.Rows() >= chunk {
			if err := t.Check(); err != nil {
				return err
			}
			if err := fn(t); err != nil {
				return err
			}
			t.Reset()
		}
		return nil
	}
	for _, path := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		scratch.Reset()
		if _, err := readGroups(path, scratch, prune, group, keep); err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
	}
	return t.Check()
}

// groupFilter returns whether a row group may hold some of f's rows, by
// its column statistics; nil when f selects by nothing a row group's
// statistics can rule out.
func groupFilter(spec schemas.TableSpec, f schemas.Filter) func(*pq.Schema, pq.RowGroup) bool {
	type check struct {
		col string
		in  func(lo, hi pq.Value) bool
	}
	var checks []check
	switch {
	case spec.Whole || (spec.RunScoped && f.AllRuns):
		return nil
	case spec.RunScoped:
		checks = append(checks, check{"run_id", func(lo, hi pq.Value) bool {
			for _, id := range f.RunIDs {
				if id >= string(lo.ByteArray()) && id <= string(hi.ByteArray()) {
					return true
				}
			}
			return false
		}})
	default:
		checks = append(checks, check{spec.TimeColumn, func(lo, hi pq.Value) bool { return hi.Int64() >= f.From && lo.Int64() <= f.To }})
		if f.DeviceUUID != "" {
			checks = append(checks, check{"device_uuid", func(lo, hi pq.Value) bool {
				return f.DeviceUUID >= string(lo.ByteArray()) && f.DeviceUUID <= string(hi.ByteArray())
			}})
		}
	}
	return func(sch *pq.Schema, rg pq.RowGroup) bool {
		for _, c := range checks {
			leaf, ok := sch.Lookup(c.col)
			if !ok {
				continue
			}
			fc, ok := rg.ColumnChunks()[leaf.ColumnIndex].(*pq.FileColumnChunk)
			if !ok {
				continue
			}
			if lo, hi, ok := fc.Bounds(); ok && !c.in(lo, hi) {
				return false
			}
		}
		return true
	}
}

// ResultFileName is the file of one run's rows in each result table.
func ResultFileName(runID string) string {
	return "run-" + strings.ReplaceAll(schemas.SubjectToken(runID), "/", "_") + ".parquet"
}

// WriteResults stores one run's result tables as one file per table,
// replacing an earlier analysis of the run.
func (s *Store) WriteResults(_ context.Context, runID string, tables []*schemas.Table) error {
	for _, t := range tables {
		path := filepath.Join(s.dir, t.Name, ResultFileName(runID))
		if t.Rows() == 0 {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				return err
			}
			continue
		}
		if err := WriteFile(path, t, map[string]string{"lem.tool_version": s.ToolVersion, "lem.run_ids": runID}); err != nil {
			return err
		}
	}
	return nil
}
