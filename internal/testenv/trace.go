package testenv

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
)

// H200Trace is the real H200 trace shipped beside the repository
// (shared/data/h200-trace): every change of the energy counter, the
// driver's 20 ms power samples (sorted) and the workload's phase edges.
type H200Trace struct {
	Counter []schemas.EnergyReading // stamped at the change (TSBefore = TSAfter)
	Buffer  []schemas.PowerSample
	Phases  map[string][2]int64
}

// LoadH200Trace reads the trace; it fails the test when the trace is
// missing or implausibly short.
func LoadH200Trace(t testing.TB) *H200Trace {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "..", "shared", "data", "h200-trace")
	read := func(name string) [][]string {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("the H200 trace must be beside the repo: %v", err)
		}
		defer f.Close()
		r := csv.NewReader(f)
		r.FieldsPerRecord = -1
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	tr := &H200Trace{Phases: map[string][2]int64{}}
	for _, rec := range read("changes.csv") {
		ts, _ := strconv.ParseInt(rec[1], 10, 64)
		v, _ := strconv.ParseFloat(rec[2], 64)
		switch rec[0] {
		case "energy_mJ":
			tr.Counter = append(tr.Counter, schemas.EnergyReading{TSBefore: ts, TSAfter: ts, Energy: schemas.Energy(v * 1000)})
		case "driver_power_sample":
			tr.Buffer = append(tr.Buffer, schemas.PowerSample{TS: ts, Power: schemas.Power(v)})
		}
	}
	sort.Slice(tr.Buffer, func(i, j int) bool { return tr.Buffer[i].TS < tr.Buffer[j].TS })
	for _, rec := range read("phases.csv") {
		a, _ := strconv.ParseInt(rec[1], 10, 64)
		b, _ := strconv.ParseInt(rec[2], 10, 64)
		tr.Phases[rec[0]] = [2]int64{a, b}
	}
	if len(tr.Counter) < 100 || len(tr.Buffer) < 1000 {
		t.Fatalf("trace: %d counter changes, %d buffer samples", len(tr.Counter), len(tr.Buffer))
	}
	return tr
}
