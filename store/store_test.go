package store_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// events returns one table per kind holding a small run on two devices:
// what ingest would write after decoding.
func events() []*schemas.Table {
	const t0 = int64(1_800_000_000_000_000_000)
	pos := func(i int) schemas.Position { return schemas.Position{Epoch: 7, Seq: uint64(i + 1)} }
	var out []*schemas.Table
	add := func(k schemas.Kind, evs ...schemas.Event) {
		r := schemas.NewRows(k)
		for i, ev := range evs {
			r.Append(ev, pos(i))
		}
		out = append(out, r.Table())
	}
	var pows, ens []schemas.Event
	for d, uuid := range []string{"GPU-a", "GPU-b"} {
		pb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "nvml.buffer"}, Device: schemas.Device{Index: uint32(d), UUID: uuid}}
		sb := &schemas.PowerBatch{Origin: schemas.Origin{Host: "h", Source: "nvml.instant"}, Device: schemas.Device{Index: uint32(d), UUID: uuid}}
		eb := &schemas.EnergyBatch{Origin: schemas.Origin{Host: "h", Source: "nvml.counter"}, Device: schemas.Device{Index: uint32(d), UUID: uuid}}
		for i := 0; i < 50; i++ {
			ts := t0 + int64(i)*20e6
			pb.Samples = append(pb.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(100_000 + 1000*d + i)})
			sb.Samples = append(sb.Samples, schemas.PowerSample{TS: ts + 1, Power: 90_000})
			if i%5 == 0 {
				eb.Readings = append(eb.Readings, schemas.EnergyReading{TSBefore: ts, TSAfter: ts + 3e6, Energy: schemas.Energy(int64(i) * 2e6)})
			}
		}
		pows, ens = append(pows, pb, sb), append(ens, eb)
	}
	add(schemas.KindPower, pows...)
	add(schemas.KindEnergy, ens...)
	add(schemas.KindRun,
		&schemas.RunEvent{RunID: "r1", Experiment: "e", Cycle: 0, Phase: schemas.RunStart, TS: t0, Backend: "vllm", Devices: []string{"GPU-a"}, Config: `{"a":1}`},
		&schemas.RunEvent{RunID: "r1", Experiment: "e", Cycle: 0, Phase: schemas.RunEnd, TS: t0 + 9e8, Backend: "vllm", Devices: []string{"GPU-a"}},
		&schemas.RunEvent{RunID: "r0", Experiment: "e", Cycle: 0, Phase: schemas.RunStart, TS: t0 - 1, Backend: "vllm"})
	add(schemas.KindRequest, &schemas.RequestBatch{RunID: "r1", Requests: []schemas.Request{
		{ID: "q2", Scheduled: t0 + 2, Sent: t0 + 3, FirstToken: t0 + 4e6, Done: t0 + 9e6, OutputTokens: 3, Status: schemas.StatusTimeout, Error: "late"},
		{ID: "q1", Scheduled: t0 + 1, Sent: t0 + 2, FirstToken: t0 + 3e6, Done: t0 + 8e6, PromptTokens: 5, OutputTokens: 2, ServerPrefill: 7}}})
	add(schemas.KindToken, &schemas.TokenBatch{RunID: "r1", RequestIDs: []string{"q1", "q2"}, Tokens: []schemas.Token{
		{Request: 0, Index: 1, TS: t0 + 5e6, Tokens: 1}, {Request: 0, Index: 0, TS: t0 + 3e6, Tokens: 1}, {Request: 1, Index: 0, TS: t0 + 4e6, Tokens: 3}}})
	return out
}

func results(mean float64, analyzed int64) []*schemas.Table {
	r := schemas.NewRunResultRows()
	r.RunID.Append("r1")
	r.Experiment.Append("e")
	r.Backend.Append("vllm")
	r.Model.Append("m")
	r.Devices.Append([]string{"GPU-a"})
	r.Metric.Append("energy_j")
	r.N.Append(3)
	for _, c := range []*schemas.Col[float64]{r.Mean, r.Std, r.CI95, r.CV} {
		c.Append(mean)
	}
	r.Quality.Append("ok")
	r.Simulated.Append(0)
	r.Apportioned.Append(0)
	r.AnalyzedNS.Append(analyzed)
	return []*schemas.Table{r.Table()}
}

type snapshot struct {
	RunIDs   []string
	Runs     []schemas.RunEvent
	Requests []schemas.Request
	Tokens   map[string][]schemas.Token
	Energy   []schemas.CounterReading
	Power    map[string][]schemas.PowerSample
	Results  []float64
}

func read(t *testing.T, st *store.Store) snapshot {
	t.Helper()
	ctx := context.Background()
	var s snapshot
	var err error
	must := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatalf("%s: %v", st.Name(), e)
		}
	}
	s.RunIDs, err = st.RunIDs(ctx)
	must(err)
	s.Runs, err = st.RunEvents(ctx, "r1")
	must(err)
	s.Requests, err = st.Requests(ctx, "r1")
	must(err)
	s.Tokens, err = st.Tokens(ctx, "r1")
	must(err)
	const t0 = int64(1_800_000_000_000_000_000)
	s.Energy, err = st.Energy(ctx, "GPU-b", t0+100e6, t0+600e6)
	must(err)
	s.Power, err = st.PowerBySource(ctx, "GPU-a", t0, t0+200e6)
	must(err)
	rr := schemas.NewRunResultRows()
	must(st.ReadTable(ctx, rr.Table(), schemas.Filter{RunIDs: []string{"r1"}}))
	s.Results = rr.Mean.V
	return s
}

// TestStoresAgree writes the same events and results into ClickHouse and
// the Parquet store and reads them back through the one Store type: every
// typed read and the filtered table reads must agree, and writing a
// run's results again must replace, not add.
func TestStoresAgree(t *testing.T) {
	ctx := context.Background()
	db, conn := testenv.FreshDatabase(t)
	chs, err := chstore.New(conn, db)
	if err != nil {
		t.Fatal(err)
	}
	stores := []*store.Store{store.Wrap(chs), store.Parquet(t.TempDir())}
	var snaps []snapshot
	for _, st := range stores {
		for _, tb := range events() {
			if err := st.Write(ctx, tb); err != nil {
				t.Fatalf("%s: %v", st.Name(), err)
			}
		}
		if err := st.WriteResults(ctx, "r1", results(1, 10)); err != nil {
			t.Fatal(err)
		}
		if err := st.WriteResults(ctx, "r1", results(2, 20)); err != nil {
			t.Fatal(err)
		}
		wm, err := st.Watermark(ctx, schemas.TablePower, 7)
		if err != nil || wm != 4 {
			t.Fatalf("%s: power watermark %d, %v; want 4", st.Name(), wm, err)
		}
		snaps = append(snaps, read(t, st))
	}
	s := snaps[0]
	if !reflect.DeepEqual(s.RunIDs, []string{"r0", "r1"}) {
		t.Errorf("run ids %v", s.RunIDs)
	}
	if len(s.Runs) != 2 || s.Runs[0].Phase != schemas.RunStart || s.Runs[1].Phase != schemas.RunEnd || s.Runs[0].Config != `{"a":1}` {
		t.Errorf("run events %+v", s.Runs)
	}
	if len(s.Requests) != 2 || s.Requests[0].ID != "q1" || s.Requests[1].Status != schemas.StatusTimeout || s.Requests[0].ServerPrefill != 7 {
		t.Errorf("requests %+v", s.Requests)
	}
	if len(s.Tokens["q1"]) != 2 || s.Tokens["q1"][0].Index != 0 {
		t.Errorf("tokens %+v", s.Tokens)
	}
	if len(s.Energy) != 6 || s.Energy[0].TSBefore != 1_800_000_000_000_000_000+100e6 || s.Energy[0].Source != "nvml.counter" {
		t.Errorf("energy of one device in a window: %+v", s.Energy)
	}
	if len(s.Power) != 2 || len(s.Power["nvml.buffer"]) != 11 || s.Power["nvml.buffer"][10].Power != 100_010 {
		t.Errorf("power by source of one device in a window: %d sources, %d buffer samples", len(s.Power), len(s.Power["nvml.buffer"]))
	}
	if !reflect.DeepEqual(s.Results, []float64{2}) {
		t.Errorf("results after re-analysis: %v, want the latest only", s.Results)
	}
	if !reflect.DeepEqual(snaps[0], snaps[1]) {
		t.Errorf("ClickHouse and Parquet disagree:\n%+v\n%+v", snaps[0], snaps[1])
	}
}

// TestConfigValidate: exactly one store, and a database name that is an
// identifier.
func TestConfigValidate(t *testing.T) {
	for _, c := range []store.Config{
		{},
		{Parquet: "x", ClickHouse: chstore.Config{Addr: "h:9000"}},
		{ClickHouse: chstore.Config{Addr: "h:9000", Database: "lem; DROP TABLE x"}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (store.Config{Parquet: "x"}).Validate(); err != nil {
		t.Error(err)
	}
}

// rowSet renders t's rows as sorted lines, to compare selections that may
// come in another order.
func rowSet(t *schemas.Table) []string {
	out := make([]string, t.Rows())
	for r := range out {
		var b strings.Builder
		for _, c := range t.Columns {
			fmt.Fprintf(&b, "%v|", c.Slice(r, r+1).Data())
		}
		out[r] = b.String()
	}
	sort.Strings(out)
	return out
}

// TestScanTableChunks: both stores stream a selection in chunks of about
// the size asked, and the chunks together are exactly what ReadTable
// returns for that selection.
func TestScanTableChunks(t *testing.T) {
	ctx := context.Background()
	db, conn := testenv.FreshDatabase(t)
	chs, err := chstore.New(conn, db)
	if err != nil {
		t.Fatal(err)
	}
	const t0 = int64(1_800_000_000_000_000_000)
	selections := []struct {
		table string
		f     schemas.Filter
		rows  int
	}{
		{schemas.TablePower, schemas.Filter{From: t0 + 100e6, To: t0 + 500e6, DeviceUUID: "GPU-b"}, 21},
		{schemas.TablePower, schemas.Filter{From: t0, To: t0 + 1e9}, 7},
		{schemas.TableEnergy, schemas.Filter{From: t0, To: t0 + 1e9}, 4},
		{schemas.TableRequest, schemas.Filter{RunIDs: []string{"r1"}}, 1},
		{schemas.TableToken, schemas.Filter{RunIDs: []string{"r1"}}, 2},
		{schemas.TableRun, schemas.Filter{AllRuns: true}, 1},
	}
	for _, st := range []*store.Store{store.Wrap(chs), store.Parquet(t.TempDir())} {
		for _, tb := range events() {
			// Twice, as two blocks: a selection spans files.
			half := tb.Rows() / 2
			for _, part := range []*schemas.Table{tb.Slice(0, half), tb.Slice(half, tb.Rows())} {
				if err := st.Write(ctx, part); err != nil {
					t.Fatalf("%s: %v", st.Name(), err)
				}
			}
		}
		for _, sel := range selections {
			spec, _ := schemas.Spec(sel.table)
			whole := spec.NewTable()
			if err := st.ReadTable(ctx, whole, sel.f); err != nil {
				t.Fatal(err)
			}
			got := spec.NewTable()
			var sizes []int
			err := st.ScanTable(ctx, sel.table, sel.f, sel.rows, func(c *schemas.Table) error {
				sizes = append(sizes, c.Rows())
				all := make([]bool, c.Rows())
				for i := range all {
					all[i] = true
				}
				return got.AppendKept(c, all)
			})
			if err != nil {
				t.Fatalf("%s %s: %v", st.Name(), sel.table, err)
			}
			if whole.Rows() == 0 {
				t.Fatalf("%s %s: the selection is empty: the test proves nothing", st.Name(), sel.table)
			}
			if !reflect.DeepEqual(rowSet(got), rowSet(whole)) {
				t.Errorf("%s %s: the chunks hold %d rows, ReadTable %d, or other rows", st.Name(), sel.table, got.Rows(), whole.Rows())
			}
			// Every chunk but the last holds at least the rows asked: from
			// ClickHouse exactly that many, from Parquet up to a row group
			// more (a chunk ends where a row group does).
			for i, n := range sizes {
				last := i == len(sizes)-1
				if (!last && n < sel.rows) || n == 0 || (st.Name() == "clickhouse" && n > sel.rows) {
					t.Errorf("%s %s: chunks of %v rows, asked for %d", st.Name(), sel.table, sizes, sel.rows)
					break
				}
			}
		}
	}
}

// TestSpanAgreesWithDeviceReads: the one-pass read of a span (analysis's)
// gives each device exactly what its own reads give, in both stores.
func TestSpanAgreesWithDeviceReads(t *testing.T) {
	ctx := context.Background()
	db, conn := testenv.FreshDatabase(t)
	chs, err := chstore.New(conn, db)
	if err != nil {
		t.Fatal(err)
	}
	const t0 = int64(1_800_000_000_000_000_000)
	from, to := t0+100e6, t0+700e6
	for _, st := range []*store.Store{store.Wrap(chs), store.Parquet(t.TempDir())} {
		for _, tb := range events() {
			if err := st.Write(ctx, tb); err != nil {
				t.Fatal(err)
			}
		}
		devices := []string{"GPU-a", "GPU-b", "GPU-none"}
		readings, power, err := st.Span(ctx, devices, from, to)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devices {
			rs, err := st.Energy(ctx, d, from, to)
			if err != nil {
				t.Fatal(err)
			}
			by, err := st.PowerBySource(ctx, d, from, to)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != len(readings[d]) || (len(rs) > 0 && !reflect.DeepEqual(rs, readings[d])) {
				t.Errorf("%s %s: span readings %v, device readings %v", st.Name(), d, readings[d], rs)
			}
			if len(by) != len(power[d]) || (len(by) > 0 && !reflect.DeepEqual(by, power[d])) {
				t.Errorf("%s %s: span power %v, device power %v", st.Name(), d, power[d], by)
			}
			if d != "GPU-none" && (len(rs) == 0 || len(by) == 0) {
				t.Errorf("%s %s: nothing in the span: the test proves nothing", st.Name(), d)
			}
		}
	}
}
