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
	if err := writeFile(path, t, map[string]string{"lem.table": t.Name}, 0, ready); err != nil {
		return fmt.Errorf("parquet store: %w", err)
	}
	return nil
}

// ReadTable appends to t the rows of its table that f selects, file by
// file: a file whose statistics (the min and max of the time column, the
// run id or the device in each row group) show that none of its rows can
// be selected is not decoded, and of the others only the selected rows
// are kept, so memory follows the selection, not the store.
func (s *Store) ReadTable(_ context.Context, t *schemas.Table, f schemas.Filter) error {
	spec, ok := schemas.Spec(t.Name)
	if !ok {
		return fmt.Errorf("reading %s: not a table of the catalog", t.Name)
	}
	if t.Rows() > 0 {
		return fmt.Errorf("reading %s: the table to read into must be empty", t.Name)
	}
	files, err := Files(s.dir, t.Name)
	if err != nil {
		return err
	}
	scratch := schemas.EmptyTable(t.Name)
	prune := pruner(spec, f)
	for _, path := range files {
		scratch.Reset()
		read, err := readFile(path, scratch, prune)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if !read || scratch.Rows() == 0 {
			continue
		}
		keep, err := f.Keep(spec, scratch)
		if err != nil {
			return err
		}
		if err := t.AppendKept(scratch, keep); err != nil {
			return err
		}
	}
	return t.Check()
}

// pruner returns whether a file can hold none of f's rows, by its row
// groups' column statistics; nil when f selects by nothing a file's
// statistics can rule out.
func pruner(spec schemas.TableSpec, f schemas.Filter) func(*pq.File) bool {
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
	return func(pf *pq.File) bool {
		sch := pf.Schema()
		for _, rg := range pf.RowGroups() {
			maybe := true
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
					maybe = false
					break
				}
			}
			if maybe {
				return false // this row group may hold selected rows
			}
		}
		return len(pf.RowGroups()) > 0
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
