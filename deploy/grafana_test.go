package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/collectors/sim"
	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Type       string `json:"type"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			RawSQL string `json:"rawSql"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	b, err := os.ReadFile("grafana/dashboards/lem-overview.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	return d
}

func TestDashboardStatic(t *testing.T) {
	d := loadDashboard(t)
	prov, err := os.ReadFile("grafana/provisioning/datasources/clickhouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d.UID != "lem-overview" || len(d.Panels) == 0 {
		t.Fatalf("uid %q, %d panels", d.UID, len(d.Panels))
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d repeated", p.ID)
		}
		ids[p.ID] = true
		if !strings.Contains(string(prov), "uid: "+p.Datasource.UID) {
			t.Errorf("panel %q uses datasource %q, not provisioned", p.Title, p.Datasource.UID)
		}
		if len(p.Targets) == 0 || p.Targets[0].RawSQL == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

var (
	timeFilterRE = regexp.MustCompile(`\$__timeFilter\((\w+)\)`)
)

// expand does what the ClickHouse plugin does with the macros lem uses
// (all of which work on 18.16).
func expand(sql, db string, from, to time.Time, intervalS int) string {
	sql = timeFilterRE.ReplaceAllString(sql, fmt.Sprintf("$1 >= toDateTime(%d) AND $1 <= toDateTime(%d)", from.Unix(), to.Unix()))
	sql = strings.ReplaceAll(sql, "$__interval_s", fmt.Sprint(intervalS))
	return strings.ReplaceAll(sql, "lem.", db+".")
}

// TestDashboardQueriesRun runs every panel's query against a real
// ClickHouse holding a short simulated run; a SQL error or an empty
// result fails.
func TestDashboardQueriesRun(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	sink, _ := chstore.New(conn, db)
	ctx := context.Background()
	start := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	s := sim.New(sim.Config{Host: "h", Devices: 2}, start)
	pow := schemas.NewRows(schemas.KindPower)
	en := schemas.NewRows(schemas.KindEnergy)
	seq := uint64(0)
	for sec := 1; sec <= 60; sec++ {
		for i := 0; i < 2; i++ {
			pb, eb := s.Advance(i, start.Add(time.Duration(sec)*time.Second).UnixNano())
			seq++
			pow.Append(pb, schemas.Position{Epoch: 1, Seq: seq})
			en.Append(eb, schemas.Position{Epoch: 1, Seq: seq})
		}
	}
	req := schemas.NewRows(schemas.KindRequest)
	tok := schemas.NewRows(schemas.KindToken)
	run := schemas.NewRows(schemas.KindRun)
	t0 := start.Add(5 * time.Second).UnixNano()
	rb := &schemas.RequestBatch{RunID: "r1"}
	tb := &schemas.TokenBatch{RunID: "r1"}
	for i := 0; i < 20; i++ {
		sent := t0 + int64(i)*1e9
		id := fmt.Sprint("q", i)
		// TTFT 40–59 ms, end to end 500–538 ms: percentiles that
		// interpolate, so the engines' quantile definitions are compared.
		rb.Requests = append(rb.Requests, schemas.Request{ID: id, Scheduled: sent, Sent: sent, FirstToken: sent + int64(40+i)*1e6,
			LastToken: sent + 490e6, Done: sent + int64(500+2*i)*1e6, PromptTokens: 100, OutputTokens: 10, Status: schemas.StatusOK})
		tb.RequestIDs = append(tb.RequestIDs, id)
		for k := 0; k < 10; k++ {
			tb.Tokens = append(tb.Tokens, schemas.Token{Request: uint32(i), Index: uint32(k), TS: sent + 50e6 + int64(k)*50e6, Tokens: 1})
		}
	}
	req.Append(rb, schemas.Position{Epoch: 1, Seq: 1000})
	tok.Append(tb, schemas.Position{Epoch: 1, Seq: 1001})
	var uuids []string
	for _, dv := range s.Devices() {
		uuids = append(uuids, dv.UUID)
	}
	// The configuration as `lem run` stores it.
	cfg, err := experiment.Parse([]byte("backend: {kind: vllm, model: m}\nworkload: {arrival: {concurrency: 4}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Normalize()
	cruns, _ := cfg.Runs()
	doc, err := cfg.RunDocument(cruns[0])
	if err != nil {
		t.Fatal(err)
	}
	for c, ph := range []schemas.RunPhase{schemas.RunStart, schemas.RunEnd} {
		run.Append(&schemas.RunEvent{RunID: "r1", Experiment: "e", Backend: "synthetic", Model: "m", Phase: ph,
			TS: t0 + int64(c)*25e9, Devices: uuids, Config: doc}, schemas.Position{Epoch: 1, Seq: uint64(1002 + c)})
	}
	for _, r := range []schemas.Rows{pow, en, req, tok, run} {
		if err := sink.Write(ctx, r.Table()); err != nil {
			t.Fatal(err)
		}
	}
	// The analysis, written back as lem analyze -write does.
	res, err := analytics.AnalyzeRun(ctx, store.Wrap(sink), "r1")
	if err != nil {
		t.Fatal(err)
	}
	// Written twice, as `lem analyze -write` run twice does: the replacing
	// tables hold duplicates until a merge, and every query and panel must
	// read them with FINAL.
	for k := int64(0); k < 2; k++ {
		for _, tb := range analytics.ResultTables(res, time.Now().UnixNano()+k) {
			if err := sink.Write(ctx, tb); err != nil {
				t.Fatal(err)
			}
		}
	}
	for table, want := range map[string]int{"request_energy": len(res.Requests), "cycle_results": len(res.Cycles)} {
		var raw, final uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+table+" WHERE run_id = 'r1'").Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+table+" FINAL WHERE run_id = 'r1'").Scan(&final); err != nil {
			t.Fatal(err)
		}
		if raw != 2*uint64(want) || final != uint64(want) {
			t.Errorf("%s: %d rows stored (want %d: duplicates present), %d with FINAL (want %d)", table, raw, 2*want, final, want)
		}
	}
	runQueries(t, conn, db)
	checkDuckDBParity(t, conn, db, store.Wrap(sink), "r1", "q3")
	checkModernClickHouse(t, conn, db, store.Wrap(sink), "r1", "q3", start.Add(-time.Minute), time.Now().Add(time.Minute))
	// No query or panel reads a replacing table without FINAL.
	sqls := []string{}
	for _, q := range deploy.Queries {
		sqls = append(sqls, q.Expand(db, "r1", "q3"))
	}
	for _, p := range loadDashboard(t).Panels {
		sqls = append(sqls, p.Targets[0].RawSQL)
	}
	for _, q := range sqls {
		for _, table := range []string{"request_energy", "cycle_results", "run_results", "devices"} {
			for _, m := range regexp.MustCompile(`\.`+table+`\b(\s+\w+)?`).FindAllStringSubmatch(q, -1) {
				if strings.TrimSpace(m[1]) != "FINAL" {
					t.Errorf("%s read without FINAL:\n%s", table, q)
				}
			}
		}
	}
	d := loadDashboard(t)
	for _, p := range d.Panels {
		q := expand(p.Targets[0].RawSQL, db, start.Add(-time.Minute), time.Now().Add(time.Minute), 10)
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Errorf("panel %q: %v\n%s", p.Title, err, q)
			continue
		}
		n, zeroStat := 0, false
		for rows.Next() {
			n++
			if p.Type == "stat" {
				// Aggregates without GROUP BY return one row even over no
				// data: require a positive first value.
				v, err := firstNumber(rows)
				if err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
				}
				zeroStat = zeroStat || !(v > 0)
			}
		}
		if zeroStat {
			t.Errorf("panel %q: stat value is zero or NaN", p.Title)
		}
		if err := rows.Err(); err != nil {
			t.Errorf("panel %q: %v", p.Title, err)
		}
		rows.Close()
		if n == 0 {
			t.Errorf("panel %q returned no rows", p.Title)
		}
	}
}

// firstNumber scans a row and returns its first column as float64,
// whatever numeric type the server chose (quantiles are Float32).
func firstNumber(rows driver.Rows) (float64, error) {
	types := rows.ColumnTypes()
	dest := make([]any, len(types))
	for i, ct := range types {
		dest[i] = reflect.New(ct.ScanType()).Interface()
	}
	if err := rows.Scan(dest...); err != nil {
		return 0, err
	}
	v := reflect.ValueOf(dest[0]).Elem()
	switch {
	case v.CanFloat():
		return v.Float(), nil
	case v.CanInt():
		return float64(v.Int()), nil
	case v.CanUint():
		return float64(v.Uint()), nil
	}
	return 0, fmt.Errorf("first column is %s, not a number", v.Type())
}

// runQueries runs every query of docs/queries.md against the seeded run.
func runQueries(t *testing.T, conn driver.Conn, db string) {
	t.Helper()
	for _, q := range deploy.Queries {
		sql := q.Expand(db, "r1", "q3")
		rows, err := conn.Query(context.Background(), sql)
		if err != nil {
			t.Errorf("query %q: %v\n%s", q.Title, err, sql)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			t.Errorf("query %q: %v", q.Title, err)
		}
		rows.Close()
		if n == 0 {
			t.Errorf("query %q returned no rows", q.Title)
		}
	}
}

// TestArrivalQueryOnLemRunConfigs: the J/token-by-arrival query over
// configurations as `lem run` stores them (experiment.RunDocument): a
// closed loop of 8, another of 8, a closed loop of 2 and a Poisson run are
// three groups, never one (it once averaged a closed loop and a Poisson
// run together: Go field names made the concurrency read as 0).
func TestArrivalQueryOnLemRunConfigs(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	sink, _ := chstore.New(conn, db)
	ctx := context.Background()
	run := schemas.NewRows(schemas.KindRun)
	res := schemas.NewRunResultRows()
	for i, v := range []struct {
		id, arrival string
		jpt         float64
	}{{"c8a", "{concurrency: 8}", 1}, {"c8b", "{concurrency: 8}", 3}, {"c2", "{concurrency: 2}", 5}, {"p6", "{process: poisson, rate: 6}", 7}} {
		c, err := experiment.Parse([]byte("backend: {kind: vllm, model: m}\nworkload: {arrival: " + v.arrival + "}\n"))
		if err != nil {
			t.Fatal(err)
		}
		c.Normalize()
		runs, _ := c.Runs()
		doc, err := c.RunDocument(runs[0])
		if err != nil {
			t.Fatal(err)
		}
		run.Append(&schemas.RunEvent{RunID: v.id, Backend: "vllm", Model: "m", Phase: schemas.RunStart, TS: time.Now().UnixNano(), Config: doc},
			schemas.Position{Epoch: 1, Seq: uint64(i + 1)})
		res.RunID.Append(v.id)
		res.Experiment.Append("e")
		res.Backend.Append("vllm")
		res.Model.Append("m")
		res.Devices.Append(nil)
		res.Metric.Append("j_per_token")
		res.N.Append(3)
		for _, col := range []*schemas.Col[float64]{res.Mean, res.Std, res.CI95, res.CV} {
			col.Append(v.jpt)
		}
		res.Quality.Append("ok")
		res.Simulated.Append(0)
		res.Apportioned.Append(0)
		res.AnalyzedNS.Append(1)
	}
	for _, tb := range []*schemas.Table{run.Table(), res.Table()} {
		if err := sink.Write(ctx, tb); err != nil {
			t.Fatal(err)
		}
	}
	var q deploy.Query
	for _, x := range deploy.Queries {
		if strings.HasPrefix(x.Title, "J per output token by backend and arrival") {
			q = x
		}
	}
	rows, err := conn.Query(ctx, q.Expand(db, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]float64{}
	for rows.Next() {
		var backend, model, arrival string
		var load, jpt, ci float64
		var n uint64
		if err := rows.Scan(&backend, &model, &arrival, &load, &jpt, &ci, &n); err != nil {
			t.Fatal(err)
		}
		got[fmt.Sprintf("%s %g", arrival, load)] = jpt
	}
	want := map[string]float64{"concurrency 8": 2, "concurrency 2": 5, "poisson 6": 7}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
}
