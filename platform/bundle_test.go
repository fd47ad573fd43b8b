package platform

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// h200Store is the measured run of docs/validation/h200-lem-run (lem run
// on an H200 against the reference server).
func h200Store(t testing.TB) (*store.Store, string) {
	t.Helper()
	dir := testenv.Untar(t, filepath.Join("..", "docs", "validation", "h200-lem-run", "store.tgz"))
	s := store.Parquet(filepath.Join(dir, "store"))
	ids, err := s.RunIDs(context.Background())
	if err != nil || len(ids) == 0 {
		t.Fatalf("runs of the H200 store: %v %v", ids, err)
	}
	return s, ids[0]
}

var h200 struct {
	once   sync.Once
	run    string
	bundle []byte
	m      Manifest
	hash   string
	err    error
}

// h200Bundle is the H200 run's bundle, written once for all tests.
func h200Bundle(t testing.TB) ([]byte, Manifest, string, string) {
	t.Helper()
	h200.once.Do(func() {
		s, run := h200Store(t)
		var buf bytes.Buffer
		h200.run = run
		h200.m, h200.hash, h200.err = WriteBundle(context.Background(), s, run, "test", &buf)
		h200.bundle = buf.Bytes()
	})
	if h200.err != nil {
		t.Fatal(h200.err)
	}
	return h200.bundle, h200.m, h200.hash, h200.run
}

func TestBundleRoundTripVerifies(t *testing.T) {
	ctx := context.Background()
	data, m, hash, run := h200Bundle(t)
	buf := bytes.NewBuffer(data)
	if m.Events == 0 || m.Rows[schemas.TablePower] == 0 || m.Rows[schemas.TableToken] == 0 || len(m.Results) < 10 {
		t.Fatalf("thin bundle: %+v", m)
	}
	b, err := ReadBundle(bytes.NewReader(buf.Bytes()), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if b.Hash != hash || b.Bytes != int64(buf.Len()) {
		t.Fatalf("hash %s / %d bytes, writer said %s / %d", b.Hash, b.Bytes, hash, buf.Len())
	}
	// The bundle's events are the store's: the same rows, table by table.
	for name, n := range m.Rows {
		got := 0
		if b.Tables[name] != nil {
			got = b.Tables[name].Rows()
		}
		if got != n {
			t.Errorf("%s: %d rows decoded, %d written", name, got, n)
		}
	}
	r, rep, err := Verify(ctx, b.Store(), run, b.Manifest.Results)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed() {
		t.Fatalf("the store's own run failed verification: %s\n%+v", rep.Failures(), rep.Checks)
	}
	for _, c := range rep.Checks {
		t.Logf("%-18s %-4s %s", c.Name, c.Status, c.Detail)
		if c.Status == "n/a" {
			t.Errorf("check %s not applied to a measured H200 run: %s", c.Name, c.Detail)
		}
	}
	if r.Simulated || len(r.Cycles) == 0 {
		t.Fatalf("recomputed run: simulated %v, %d cycles", r.Simulated, len(r.Cycles))
	}
}

// Bundles that must be refused, each with a reason that names what is
// wrong; a refused bundle yields nothing.
func TestBundleRefusals(t *testing.T) {
	good, _, _, _ := h200Bundle(t)
	small := DefaultLimits
	small.MaxBytes = int64(len(good) / 2)
	fewer := DefaultLimits
	fewer.MaxEvents = 10
	for _, c := range []struct {
		name string
		data []byte
		lim  Limits
		want string
	}{
		{"not a bundle", []byte("PK\x03\x04 a zip file"), DefaultLimits, "bad magic"},
		{"truncated", good[:len(good)*2/3], DefaultLimits, "truncated"},
		{"oversized", good, small, "size limit"},
		{"too many events", good, fewer, "over the limit"},
		{"forged run id", withManifest(t, good, func(m *Manifest) { m.RunID = "someone-elses-run" }), DefaultLimits, "belongs to run"},
		{"fewer rows than the manifest", withManifest(t, good, func(m *Manifest) { m.Rows[schemas.TablePower]++ }), DefaultLimits, "the manifest says"},
		{"unknown manifest field", bytes.Replace(good, []byte(`{"format":1,`), []byte(`{"format":1,"x":1,`), 1), DefaultLimits, "manifest"},
		{"trailing garbage", append(append([]byte(nil), good...), 0, 0, 0, 9, 'L', 'E', 'M', 1, 1, 0, 1, 2, 3), DefaultLimits, "event"},
	} {
		b, err := ReadBundle(bytes.NewReader(c.data), c.lim)
		if err == nil || !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a refusal saying %q", c.name, err, c.want)
		}
		if b != nil {
			t.Errorf("%s: a refused bundle returned content", c.name)
		}
	}
}

// Results that the raw events do not give are refused, with the
// difference shown.
func TestVerifyRefusesResultsTheEventsDoNotGive(t *testing.T) {
	ctx := context.Background()
	data, m, _, run := h200Bundle(t)
	b, err := ReadBundle(bytes.NewReader(data), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	claimed := map[string]float64{}
	for k, v := range m.Results {
		claimed[k] = v
	}
	claimed["j_per_token"] *= 0.9 // a 10% better efficiency than measured
	_, rep, err := Verify(ctx, b.Store(), run, claimed)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Passed() || len(rep.Mismatches) != 1 || rep.Mismatches[0].Metric != "j_per_token" {
		t.Fatalf("a 10%% better J/token passed or was misreported: %s %+v", rep.Failures(), rep.Mismatches)
	}
	if !strings.Contains(rep.Failures(), "j_per_token submitted") {
		t.Fatalf("the refusal does not show the difference: %s", rep.Failures())
	}
}

// withManifest returns bundle b with its manifest changed by f.
func withManifest(t *testing.T, b []byte, f func(*Manifest)) []byte {
	t.Helper()
	n := int(binary.BigEndian.Uint32(b[len(bundleMagic):]))
	var m Manifest
	if err := json.Unmarshal(b[len(bundleMagic)+4:len(bundleMagic)+4+n], &m); err != nil {
		t.Fatal(err)
	}
	f(&m)
	man, _ := json.Marshal(m)
	out := append([]byte(bundleMagic), binary.BigEndian.AppendUint32(nil, uint32(len(man)))...)
	out = append(out, man...)
	return append(out, b[len(bundleMagic)+4+n:]...)
}

// Without a recorded power limit the range check says what it did not check.
func TestPowerRangeWithoutLimit(t *testing.T) {
	data, _, _, run := h200Bundle(t)
	b, err := ReadBundle(bytes.NewReader(data), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	r, err := analytics.AnalyzeRun(context.Background(), b.Store(), run)
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]deviceInfo{}
	for _, d := range r.Devices {
		info[d] = deviceInfo{Name: "NVIDIA H200"} // no limit
	}
	var got Check
	checkPower(context.Background(), b.Store(), r, info, func(name, status, format string, a ...any) {
		got = Check{name, status, fmt.Sprintf(format, a...)}
	})
	if got.Status != "pass" || !strings.Contains(got.Detail, "not checked against one") {
		t.Fatalf("%+v", got)
	}
}
