package rapl

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/llm-energy-measure/lem/schemas"
)

// fakeSysfs builds a powercap tree like a two-socket host's: package zones
// with core and dram subzones, plus an unreadable zone and an unrelated one.
func fakeSysfs(t *testing.T) string {
	root := t.TempDir()
	zone := func(dir, name string, energy, maxRange uint64) {
		p := filepath.Join(root, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(p, "name"), name)
		write(t, filepath.Join(p, "max_energy_range_uj"), strconv.FormatUint(maxRange, 10))
		write(t, filepath.Join(p, "energy_uj"), strconv.FormatUint(energy, 10))
	}
	zone("intel-rapl:0", "package-0", 1000, 262143328850)
	zone("intel-rapl:0:0", "core", 500, 262143328850)
	zone("intel-rapl:0:1", "dram", 200, 65712999613)
	zone("intel-rapl:1", "package-1", 3000, 262143328850)
	os.MkdirAll(filepath.Join(root, "intel-rapl:2"), 0o755) // no files: skipped
	os.MkdirAll(filepath.Join(root, "dtpm"), 0o755)         // not RAPL
	return root
}

func write(t *testing.T, p, s string) {
	if err := os.WriteFile(p, []byte(s+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDiscover(t *testing.T) {
	ds, err := Discover(fakeSysfs(t), "h")
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 4 {
		t.Fatalf("%d domains, want 4", len(ds))
	}
	if ds[2].Name != "dram" || ds[2].Package != 0 || ds[3].Package != 1 || ds[2].ID.UUID != "rapl:h:0:1" || ds[3].ID.Index != 3 {
		t.Fatalf("%+v %+v", ds[2], ds[3])
	}
}

func TestAbsentIsOneClearError(t *testing.T) {
	for _, root := range []string{filepath.Join(t.TempDir(), "missing"), t.TempDir()} {
		if _, err := Discover(root, "h"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("%s: %v", root, err)
		}
	}
}

func TestWrapAround(t *testing.T) {
	root := fakeSysfs(t)
	ds, _ := Discover(root, "h")
	d := ds[2] // dram, range 65712999613 µJ
	energy := filepath.Join(d.Path, "energy_uj")
	steps := []uint64{65712999000, 65712999600, 100, 5000} // wraps between 2nd and 3rd
	var got []schemas.Energy
	for _, v := range steps {
		write(t, energy, strconv.FormatUint(v, 10))
		e, err := d.Read()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	// After the wrap the unwrapped counter continues: 65712999600 ->
	// 65712999613 + 100 (113 µJ later), then +4900.
	want := []schemas.Energy{65712999000, 65712999600, 65712999713, 65713004613}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("reading %d: %d, want %d", i, got[i], want[i])
		}
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatal("unwrapped counter went backwards")
		}
	}
}

type recorder struct{ batches []*schemas.EnergyBatch }

func (r *recorder) Publish(_, _ string, ev schemas.Event) error {
	cp, err := schemas.Decode(ev.AppendWire(nil))
	if err != nil {
		return err
	}
	r.batches = append(r.batches, cp.(*schemas.EnergyBatch))
	return nil
}

func TestTickPublishesEveryDomain(t *testing.T) {
	ds, _ := Discover(fakeSysfs(t), "h")
	rec := &recorder{}
	c := NewCollector("h", ds, 0)
	if err := c.Tick(rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.batches) != 4 || rec.batches[0].Source != Source || rec.batches[3].Readings[0].Energy != 3000 {
		t.Fatalf("%+v", rec.batches)
	}
	if err := rec.batches[0].Validate(0, 1<<62); err != nil {
		t.Fatal(err)
	}
}
