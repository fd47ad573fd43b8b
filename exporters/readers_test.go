package exporters_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/exporters"
	lemarrow "github.com/llm-energy-measure/lem/exporters/arrow"
	lemcsv "github.com/llm-energy-measure/lem/exporters/csv"
	"github.com/llm-energy-measure/lem/exporters/hfdataset"
	lemparquet "github.com/llm-energy-measure/lem/exporters/parquet"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	lemstore "github.com/llm-energy-measure/lem/store"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// truth is what the store holds, computed in Go.
type truth struct {
	rows map[string]int
	sums map[string]map[string]float64
}

// buildStore writes a small Parquet store: one run of two cycles on two
// simulated devices, with requests, tokens, server metrics and clocks.
func buildStore(t *testing.T) (string, string, truth) {
	t.Helper()
	dir := t.TempDir()
	tr := truth{rows: map[string]int{}, sums: map[string]map[string]float64{}}
	seq := uint64(0)
	write := func(ev schemas.Event) {
		seq++
		rows := schemas.NewRows(ev.Kind())
		rows.Append(ev, schemas.Position{Epoch: 7, Seq: seq})
		tb := rows.Table()
		if err := pqstore.WriteFile(pqstore.BatchPath(dir, tb.Name, 7, seq, seq), tb, nil); err != nil {
			t.Fatal(err)
		}
		tr.rows[tb.Name] += tb.Rows()
		if tr.sums[tb.Name] == nil {
			tr.sums[tb.Name] = map[string]float64{}
		}
		for _, c := range tb.Columns {
			switch v := c.Data().(type) {
			case []int64:
				for _, x := range v {
					tr.sums[tb.Name][c.Name()] += float64(x)
				}
			case []uint32:
				for _, x := range v {
					tr.sums[tb.Name][c.Name()] += float64(x)
				}
			case []float64:
				for _, x := range v {
					tr.sums[tb.Name][c.Name()] += x
				}
			}
		}
	}
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	t0 := start.UnixNano()
	s := sim.New(sim.Config{Host: "h", Devices: 2, Seed: 3, Load: func(int, int64) float64 { return 0.5 }}, start)
	var uuids []string
	for i, d := range s.Devices() {
		uuids = append(uuids, d.UUID)
		for sec := int64(1); sec <= 12; sec++ {
			pb, eb := s.Advance(i, t0+sec*1e9)
			write(&schemas.PowerBatch{Origin: pb.Origin, Device: pb.Device, Samples: append([]schemas.PowerSample(nil), pb.Samples...)})
			write(&schemas.EnergyBatch{Origin: eb.Origin, Device: eb.Device, Readings: append([]schemas.EnergyReading(nil), eb.Readings...)})
		}
		write(&schemas.ClockBatch{Origin: schemas.Origin{Host: "h", Source: "nvml.buffer"}, Device: d,
			Samples: []schemas.ClockSample{{TS: t0 + 5e9, Offset: 100, Low: -900, High: 1100, Reads: 12}}})
	}
	run := "export-test"
	for c := 0; c < 2; c++ {
		a, b := t0+int64(1+5*c)*1e9, t0+int64(5+5*c)*1e9
		write(&schemas.RunEvent{RunID: run, Experiment: "x", Cycle: uint32(c), Phase: schemas.RunStart, TS: a, Backend: "pytorch", Model: "m", Devices: uuids})
		var reqs schemas.RequestBatch
		toks := schemas.TokenBatch{RunID: run}
		reqs.RunID = run
		for r := 0; r < 3; r++ {
			id := fmt.Sprintf("c%d-r%d", c, r)
			q := schemas.Request{ID: id, Cycle: uint32(c), Scheduled: a + int64(r)*1e8, Sent: a + int64(r)*1e8 + 1e5,
				FirstToken: a + int64(r)*1e8 + 5e7, LastToken: a + 2e9, Done: a + 2e9 + 1e6, PromptTokens: 100, OutputTokens: 8,
				ServerPrefill: 4e7, ServerDecode: 19e8}
			reqs.Requests = append(reqs.Requests, q)
			toks.RequestIDs = append(toks.RequestIDs, id)
			for k := 0; k < 4; k++ {
				toks.Tokens = append(toks.Tokens, schemas.Token{Request: uint32(r), Index: uint32(2 * k), TS: q.FirstToken + int64(k)*3e8, Tokens: 2})
			}
		}
		write(&reqs)
		write(&toks)
		write(&schemas.MetricBatch{RunID: run, Endpoint: "http://s/metrics", Samples: []schemas.MetricSample{
			{TS: a + 1e9, Name: "lem_ref:generation_tokens_total", Value: float64(24 * (c + 1))},
			{TS: a + 1e9, Name: "vllm:e2e_request_latency_seconds_bucket", Labels: `le="+Inf"`, Value: 3}}})
		write(&schemas.RunEvent{RunID: run, Experiment: "x", Cycle: uint32(c), Phase: schemas.RunEnd, TS: b, Backend: "pytorch", Model: "m", Devices: uuids})
	}
	return dir, run, tr
}

type readerResult struct {
	Rows      int                `json:"rows"`
	Columns   map[string]string  `json:"columns"`
	Order     []string           `json:"order"`
	Sums      map[string]float64 `json:"sums"`
	Meta      map[string]string  `json:"meta"`
	RowGroups int                `json:"row_groups"`
	Files     int                `json:"files"`
	Codecs    []string           `json:"codecs"`
}

func readBack(t *testing.T, format, dir string, tables []string) map[string]readerResult {
	t.Helper()
	nm := testenv.NodeModules(t)
	script, _ := os.ReadFile("testdata/read.mjs")
	sp := filepath.Join(nm, fmt.Sprintf("read-%d.mjs", os.Getpid()))
	if err := os.WriteFile(sp, script, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(sp)
	out, err := exec.Command("node", append([]string{sp, format, dir}, tables...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("reader: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	res := map[string]readerResult{}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return res
}

// Every format, read back by a reader that is not lem's (DuckDB for
// Parquet and CSV, Apache Arrow JS for Arrow IPC), has the rows, the types
// and the values lem stored.
func TestExportsReadByIndependentReaders(t *testing.T) {
	store, run, tr := buildStore(t)
	st := lemstore.Parquet(store)
	ctx := context.Background()
	tables := []string{schemas.TableRun, schemas.TableRequest, schemas.TableToken, schemas.TableMetric, schemas.TablePower,
		schemas.TableEnergy, schemas.TableClock}
	out := t.TempDir()
	// Read and written in chunks of 97 rows (a prime: chunks straddle the
	// store's files, row groups and shards), as a large export is.
	defer func(n int) { exporters.ChunkRows = n }(exporters.ChunkRows)
	exporters.ChunkRows = 97
	// Shards of ~64 KiB and row groups of 500 rows, so a small store still
	// shows both.
	pw := &lemparquet.Writer{Dir: filepath.Join(out, "parquet"), RowGroupRows: 500, ShardBytes: 64 << 10}
	if _, err := exporters.Export(ctx, st, st, exporters.Selection{RunIDs: []string{run}}, "test", pw, nil); err != nil {
		t.Fatal(err)
	}
	aw := &lemarrow.Writer{Dir: filepath.Join(out, "arrow"), BatchRows: 1000}
	if _, err := exporters.Export(ctx, st, st, exporters.Selection{RunIDs: []string{run}}, "test", aw, nil); err != nil {
		t.Fatal(err)
	}
	cw := &lemcsv.Writer{Dir: filepath.Join(out, "csv")}
	if _, err := exporters.Export(ctx, st, st, exporters.Selection{RunIDs: []string{run}}, "test", cw, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]readerResult{}
	for _, f := range []string{"parquet", "arrow", "csv"} {
		for k, v := range readBack(t, f, filepath.Join(out, f), tables) {
			got[k] = v
		}
	}
	for _, f := range []string{"parquet", "arrow", "csv"} {
		for _, tb := range tables {
			r, ok := got[f+"/"+tb]
			if !ok {
				t.Errorf("%s/%s: not read back", f, tb)
				continue
			}
			if r.Rows != tr.rows[tb] {
				t.Errorf("%s/%s: %d rows, stored %d", f, tb, r.Rows, tr.rows[tb])
			}
			want := schemas.EmptyTable(tb).ColumnNames()
			if len(r.Columns) != len(want) {
				t.Errorf("%s/%s: columns %v, want %v", f, tb, r.Columns, want)
			}
			// Columns in the table's order, as ClickHouse lists them.
			if !slices.Equal(r.Order, want) {
				t.Errorf("%s/%s: columns in order %v, want %v", f, tb, r.Order, want)
			}
			for c, s := range r.Sums {
				w := tr.sums[tb][c]
				if c == "ttft_ms" {
					// (first_token_ns - sent_ns) / 1e6, as the README
					// computes it, is milliseconds: 49.9 ms per request.
					w = 49.9 * float64(tr.rows[tb])
				}
				if math.Abs(s-w) > 1e-9*math.Abs(w)+1e-6 {
					t.Errorf("%s/%s.%s: sum %v, stored %v", f, tb, c, s, w)
				}
			}
		}
	}
	// Types as a reader sees them: every _ns column is a 64-bit integer of
	// nanoseconds, as in ClickHouse (they were timestamps once, and DuckDB
	// read them to the microsecond, and made ns arithmetic an interval),
	// unsigned stays unsigned.
	for key, want := range map[string]string{
		"parquet/power_samples.ts_ns":            "BIGINT",
		"parquet/power_samples.power_mw":         "BIGINT",
		"parquet/requests.server_decode_dur_ns":  "BIGINT",
		"parquet/tokens.tokens":                  "UINTEGER",
		"parquet/server_metrics.value":           "DOUBLE",
		"arrow/power_samples.ts_ns":              "Int64",
		"arrow/requests.server_decode_dur_ns":    "Int64",
		"arrow/server_metrics.value":             "Float64",
		"arrow/runs.devices":                     "List<Utf8>",
		"csv/power_samples.power_mw":             "BIGINT",
		"parquet/clock_offsets.offset_dur_ns":    "BIGINT",
		"parquet/energy_readings.ts_before_ns":   "BIGINT",
		"parquet/requests.first_token_ns":        "BIGINT",
		"parquet/server_metrics.labels":          "VARCHAR",
		"parquet/runs.devices":                   "VARCHAR[]",
		"arrow/tokens.tokens":                    "Uint32",
		"parquet/energy_readings.energy_uj":      "BIGINT",
		"parquet/requests.server_prefill_dur_ns": "BIGINT",
		"arrow/energy_readings.ts_after_ns":      "Int64",
		"parquet/power_samples.stream_seq":       "UBIGINT",
		"arrow/power_samples.stream_seq":         "Uint64",
		"parquet/power_samples.stream_epoch":     "BIGINT",
		"csv/requests.request_id":                "VARCHAR",
		"parquet/requests.status":                "VARCHAR",
		"parquet/energy_readings.reset":          "UTINYINT",
		"arrow/energy_readings.reset":            "Uint8",
		"parquet/device_state.pstate":            "",
		"arrow/clock_offsets.reads":              "Uint32",
		"parquet/clock_offsets.reads":            "UINTEGER",
		"parquet/server_metrics.ts_ns":           "BIGINT",
		"arrow/server_metrics.ts_ns":             "Int64",
		"parquet/tokens.ts_ns":                   "BIGINT",
		"arrow/requests.scheduled_ns":            "Int64",
		"parquet/requests.cycle":                 "UINTEGER",
		"parquet/requests.prompt_tokens":         "UINTEGER",
		"parquet/requests.error":                 "VARCHAR",
		"parquet/power_samples.device_uuid":      "VARCHAR",
		"parquet/power_samples.device_index":     "UINTEGER",
		"parquet/energy_readings.source":         "VARCHAR",
		"arrow/power_samples.power_mw":           "Int64",
		"parquet/clock_offsets.applied_dur_ns":   "BIGINT",
		"parquet/server_metrics.endpoint":        "VARCHAR",
		"arrow/runs.config":                      "Utf8",
	} {
		if want == "" {
			continue
		}
		parts := strings.SplitN(key, ".", 2)
		if got := got[parts[0]].Columns[parts[1]]; got != want {
			t.Errorf("%s: reader sees %q, want %q", key, got, want)
		}
	}
	// Parquet layout: zstd, sharded by size, row groups of 500 rows, the
	// export's key-value metadata.
	pq := got["parquet/power_samples"]
	if pq.Files < 2 || pq.RowGroups < pq.Files || len(pq.Codecs) != 1 || pq.Codecs[0] != "ZSTD" {
		t.Errorf("power_samples: %d files, %d row groups, codecs %v", pq.Files, pq.RowGroups, pq.Codecs)
	}
	if min := (tr.rows[schemas.TablePower] + 499) / 500; pq.RowGroups < min {
		t.Errorf("%d row groups for %d rows at 500 per group", pq.RowGroups, tr.rows[schemas.TablePower])
	}
	for _, k := range []string{"lem.schema_version", "lem.tool_version", "lem.run_ids", "lem.units", "lem.table"} {
		if pq.Meta[k] == "" || got["arrow/power_samples"].Meta[k] == "" {
			t.Errorf("metadata %s missing (parquet %q, arrow %q)", k, pq.Meta[k], got["arrow/power_samples"].Meta[k])
		}
	}
	if pq.Meta["lem.run_ids"] != run {
		t.Errorf("run ids %q", pq.Meta["lem.run_ids"])
	}
}

// The Hugging Face dataset: data/<table>/*.parquet readable by DuckDB, and
// a card whose configs point at exactly those files.
func TestHFDatasetReadable(t *testing.T) {
	store, run, tr := buildStore(t)
	st := lemstore.Parquet(store)
	res, err := analytics.AnalyzeRun(context.Background(), st, run)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	sum, err := hfdataset.Export(context.Background(), st, st, []string{run}, []*analytics.RunResult{res}, out, "test")
	if err != nil {
		t.Fatal(err)
	}
	got := readBack(t, "parquet", filepath.Join(out, "data"), []string{schemas.TableRequest, schemas.TablePower, schemas.TableMetric})
	for _, tb := range []string{schemas.TableRequest, schemas.TablePower, schemas.TableMetric} {
		if got["parquet/"+tb].Rows != tr.rows[tb] || sum.Rows[tb] != tr.rows[tb] {
			t.Errorf("%s: read %d, exported %d, stored %d", tb, got["parquet/"+tb].Rows, sum.Rows[tb], tr.rows[tb])
		}
	}
	card, _ := os.ReadFile(filepath.Join(out, "README.md"))
	for _, want := range []string{"config_name: server_metrics", "path: data/requests/*.parquet", "license: cc-by-4.0", "**Simulated data.**",
		"**No power here was measured.**"} {
		if !strings.Contains(string(card), want) {
			t.Errorf("card lacks %q", want)
		}
	}
	// A card of simulated runs never says plainly that the power came from
	// NVML (it did, before this was tested).
	if strings.Contains(string(card), "\nPower and energy come from each GPU's on-board sensor") {
		t.Errorf("the card of a simulated dataset says the power came from the sensors:\n%s", card)
	}
}
