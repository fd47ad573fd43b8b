package parquet

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/internal/fence"
	"github.com/llm-energy-measure/lem/schemas"
)

// writeSeconds writes n batch files of power samples, file k holding 50
// samples of second k of two devices.
func writeSeconds(t testing.TB, dir string, n int) {
	for k := 0; k < n; k++ {
		rows := schemas.NewRows(schemas.KindPower)
		for d := 0; d < 2; d++ {
			pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: schemas.SourceNVMLBuffer},
				Device: schemas.Device{Index: uint32(d), UUID: fmt.Sprint("GPU-", d)}}
			for i := 0; i < 50; i++ {
				pb.Samples = append(pb.Samples, schemas.PowerSample{TS: int64(k)*1e9 + int64(i)*20e6, Power: schemas.PowerFromWatts(100)})
			}
			rows.Append(pb, schemas.Position{Epoch: 1, Seq: uint64(2*k + d + 1)})
		}
		if err := WriteFile(BatchPath(dir, schemas.TablePower, 1, uint64(2*k+1), uint64(2*k+2)), rows.Table(), nil); err != nil {
			t.Fatal(err)
		}
	}
}

// A read of a time window decodes only the files whose time column's
// statistics overlap it, and a read of one run only the files whose
// run_id range holds it; the rows are exactly the selected ones.
func TestReadPrunesFilesByStatistics(t *testing.T) {
	dir := t.TempDir()
	writeSeconds(t, dir, 40)
	st := Open(dir)
	before := filesRead.Load()
	pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := st.ReadTable(context.Background(), pw.Table(), schemas.Filter{From: 10e9, To: 12e9 - 1, DeviceUUID: "GPU-1"}); err != nil {
		t.Fatal(err)
	}
	if n := filesRead.Load() - before; n != 2 {
		t.Errorf("decoded %d of 40 files for a 2 s window (want 2)", n)
	}
	if len(pw.TS.V) != 100 {
		t.Fatalf("%d samples, want 100 (2 s of one device at 50 Hz)", len(pw.TS.V))
	}
	for _, ts := range pw.TS.V {
		if ts < 10e9 || ts >= 12e9 {
			t.Fatalf("sample at %d outside the window", ts)
		}
	}
	// Run-scoped: five runs, one file each.
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		rb := &schemas.RequestBatch{RunID: id, Requests: []schemas.Request{{ID: id + "-1", Sent: 1, Done: 2, Status: schemas.StatusOK}}}
		rows := schemas.NewRows(schemas.KindRequest)
		rows.Append(rb, schemas.Position{Epoch: 2, Seq: uint64(id[0])})
		if err := WriteFile(BatchPath(dir, schemas.TableRequest, 2, uint64(id[0]), uint64(id[0])), rows.Table(), nil); err != nil {
			t.Fatal(err)
		}
	}
	before = filesRead.Load()
	rq := schemas.NewRows(schemas.KindRequest).(*schemas.RequestRows)
	if err := st.ReadTable(context.Background(), rq.Table(), schemas.Filter{RunIDs: []string{"c"}}); err != nil {
		t.Fatal(err)
	}
	if n := filesRead.Load() - before; n != 1 || len(rq.RunID.V) != 1 || rq.RunID.V[0] != "c" {
		t.Errorf("decoded %d of 5 files, rows %v (want 1 file, run c)", n, rq.RunID.V)
	}
}

// BenchmarkReadWindow: one second of 600 one-second files, pruned against
// reading them all and filtering (the store before).
func BenchmarkReadWindow(b *testing.B) {
	dir := b.TempDir()
	writeSeconds(b, dir, 600)
	st := Open(dir)
	f := schemas.Filter{From: 300e9, To: 301e9 - 1, DeviceUUID: "GPU-0"}
	b.Run("pruned", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
			if err := st.ReadTable(context.Background(), pw.Table(), f); err != nil || len(pw.TS.V) != 50 {
				b.Fatal(err, len(pw.TS.V))
			}
		}
	})
	b.Run("whole-table", func(b *testing.B) {
		spec, _ := schemas.Spec(schemas.TablePower)
		for i := 0; i < b.N; i++ {
			pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
			if err := ReadTable(dir, pw.Table()); err != nil {
				b.Fatal(err)
			}
			keep, _ := f.Keep(spec, pw.Table())
			pw.Table().Filter(keep)
			if len(pw.TS.V) != 50 {
				b.Fatal(len(pw.TS.V))
			}
		}
	})
}

// A write bounded by a lease whose limit has passed leaves no file (ADR
// 0019); within its limit it is stored.
func TestFencedWrite(t *testing.T) {
	dir := t.TempDir()
	st := Open(dir)
	block := func(seq uint64) *schemas.Table {
		rows := schemas.NewRows(schemas.KindPower)
		rows.Append(&schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: schemas.SourceNVMLBuffer}, Device: schemas.Device{UUID: "GPU-0"},
			Samples: []schemas.PowerSample{{TS: 1, Power: 1}}}, schemas.Position{Epoch: 1, Seq: seq})
		return rows.Table()
	}
	past := fence.With(context.Background(), func() time.Time { return time.Now().Add(-time.Millisecond) })
	if err := st.Write(past, block(1)); !errors.Is(err, fence.ErrExpired) {
		t.Fatalf("write past its limit: %v, want fence.ErrExpired", err)
	}
	if wm, err := st.Watermark(context.Background(), schemas.TablePower, 1); err != nil || wm != 0 {
		t.Fatalf("watermark %d (%v) after a refused write, want 0", wm, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, schemas.TablePower, "*")); len(left) != 0 {
		t.Fatalf("files left by a refused write: %v", left)
	}
	ahead := fence.With(context.Background(), func() time.Time { return time.Now().Add(time.Hour) })
	if err := st.Write(ahead, block(2)); err != nil {
		t.Fatal(err)
	}
	if wm, err := st.Watermark(context.Background(), schemas.TablePower, 1); err != nil || wm != 2 {
		t.Fatalf("watermark %d (%v), want 2", wm, err)
	}
}

// In a file of many row groups, a time window decodes only the row groups
// whose statistics overlap it (the predicate pushed down to row groups,
// not only files), and Scan does the same.
func TestReadPrunesRowGroups(t *testing.T) {
	dir := t.TempDir()
	rows := schemas.NewRows(schemas.KindPower)
	pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: schemas.SourceNVMLBuffer}, Device: schemas.Device{UUID: "GPU-0"}}
	for i := 0; i < 100*50; i++ { // 100 s at 50 Hz
		pb.Samples = append(pb.Samples, schemas.PowerSample{TS: int64(i) * 20e6, Power: 1})
	}
	rows.Append(pb, schemas.Position{Epoch: 1, Seq: 1})
	// Row groups of 1 s.
	if err := WriteFileRowGroups(BatchPath(dir, schemas.TablePower, 1, 1, 1), rows.Table(), nil, 50); err != nil {
		t.Fatal(err)
	}
	st := Open(dir)
	f := schemas.Filter{From: 10e9, To: 12e9 - 1}
	before := groupsRead.Load()
	pw := schemas.NewRows(schemas.KindPower).(*schemas.PowerRows)
	if err := st.ReadTable(context.Background(), pw.Table(), f); err != nil {
		t.Fatal(err)
	}
	if n := groupsRead.Load() - before; n != 2 {
		t.Errorf("decoded %d of 100 row groups for a 2 s window (want 2)", n)
	}
	if len(pw.TS.V) != 100 {
		t.Fatalf("%d samples, want 100", len(pw.TS.V))
	}
	before = groupsRead.Load()
	var got int
	chunk := schemas.EmptyTable(schemas.TablePower)
	if err := st.Scan(context.Background(), chunk, f, 10, func(c *schemas.Table) error {
		got += c.Rows()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got += chunk.Rows() // the rest, left in the chunk
	if n := groupsRead.Load() - before; n != 2 || got != 100 {
		t.Errorf("Scan decoded %d row groups (want 2) for %d rows (want 100)", n, got)
	}
}
