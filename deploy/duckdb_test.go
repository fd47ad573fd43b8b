package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/exporters"
	lemparquet "github.com/llm-energy-measure/lem/exporters/parquet"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
	chstore "github.com/llm-energy-measure/lem/store/clickhouse"
)

// answer is a query's result in a form both engines reduce to: column
// names, and rows of int64, float64, string or []any cells.
type answer struct {
	names []string
	rows  [][]any
}

// clickhouseAnswer runs sql and reduces its rows.
func clickhouseAnswer(conn driver.Conn, sql string) (answer, error) {
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		return answer{}, err
	}
	defer rows.Close()
	a := answer{names: rows.Columns()}
	types := rows.ColumnTypes()
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return a, err
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			row[i] = reduce(reflect.ValueOf(d).Elem())
		}
		a.rows = append(a.rows, row)
	}
	return a, rows.Err()
}

func reduce(v reflect.Value) any {
	if tm, ok := v.Interface().(time.Time); ok {
		return tm.UTC().Format("2006-01-02 15:04:05")
	}
	switch {
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return reduce(v.Elem())
	case v.CanInt():
		return v.Int()
	case v.CanUint():
		return int64(v.Uint())
	case v.CanFloat():
		return v.Float()
	case v.Kind() == reflect.String:
		return v.String()
	case v.Kind() == reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = reduce(v.Index(i))
		}
		return out
	}
	return fmt.Sprint(v.Interface())
}

// reduceJSON reduces DuckDB's lossless JSON (64-bit integers and NaN as
// strings) to the same cells.
func reduceJSON(x any) any {
	switch v := x.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case string:
		if i, err := strconv.ParseInt(v, 10, 64); err == nil {
			return i
		}
		switch v {
		case "NaN", "Infinity", "-Infinity":
			f, _ := strconv.ParseFloat(strings.TrimSuffix(v, "inity"), 64)
			return f
		}
		return v
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = reduceJSON(v[i])
		}
		return out
	}
	return x
}

// sameCell compares two reduced cells: integers exactly, numbers to 1e-6
// relative (ClickHouse computes quantiles in Float32), NaN equal to NaN,
// and a lag in seconds to 5 s (both engines read their own clock).
func sameCell(col string, a, b any) bool {
	// NULL and NaN both say "no value" (JSON has no NaN).
	isNone := func(x any) bool { f, ok := x.(float64); return x == nil || ok && math.IsNaN(f) }
	if isNone(a) || isNone(b) {
		return isNone(a) && isNone(b)
	}
	num := func(x any) (float64, bool) {
		switch v := x.(type) {
		case int64:
			return float64(v), true
		case float64:
			return v, true
		}
		return 0, false
	}
	if ai, ok := a.(int64); ok {
		if bi, ok := b.(int64); ok && col != "lag_s" {
			return ai == bi
		}
	}
	if x, ok := num(a); ok {
		y, ok := num(b)
		if !ok {
			return false
		}
		switch {
		case math.IsNaN(x) || math.IsNaN(y):
			return math.IsNaN(x) && math.IsNaN(y)
		case col == "lag_s":
			return math.Abs(x-y) <= 5
		}
		return math.Abs(x-y) <= 1e-6*math.Max(math.Abs(x), math.Abs(y))+1e-9
	}
	if as, ok := a.([]any); ok {
		bs, ok := b.([]any)
		if !ok || len(as) != len(bs) {
			return false
		}
		for i := range as {
			if !sameCell(col, as[i], bs[i]) {
				return false
			}
		}
		return true
	}
	return a == b
}

// checkDuckDBParity exports what the ClickHouse database db holds for run
// to Parquet, as `lem export` does, and requires every documented query's
// DuckDB form over the export to answer as its ClickHouse form does.
func checkDuckDBParity(t *testing.T, conn driver.Conn, db string, st *store.Store, run, request string) {
	t.Helper()
	nm := testenv.NodeModules(t)
	dir := t.TempDir()
	w := &lemparquet.Writer{Dir: dir}
	// A margin wide enough to hold every device row of the database, so
	// the ingest-lag query counts the same rows in both.
	sum, err := exporters.Export(context.Background(), st, st, exporters.Selection{RunIDs: []string{run}, Margin: 3600e9}, "test", w, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for tb, n := range sum.Rows {
		if n > 0 {
			tables = append(tables, tb)
		}
	}
	sort.Strings(tables)
	setup := filepath.Join(dir, "setup.sql")
	if err := os.WriteFile(setup, []byte(deploy.DuckDBSetup(dir, tables)), 0o644); err != nil {
		t.Fatal(err)
	}
	var duck []string
	for _, q := range deploy.Queries {
		duck = append(duck, q.ExpandDuckDB(run, request))
	}
	qs, _ := json.Marshal(duck)
	qpath := filepath.Join(dir, "queries.json")
	if err := os.WriteFile(qpath, qs, 0o644); err != nil {
		t.Fatal(err)
	}
	script, _ := os.ReadFile("testdata/duckdb.mjs")
	sp := filepath.Join(nm, fmt.Sprintf("duckdb-%d.mjs", os.Getpid()))
	if err := os.WriteFile(sp, script, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(sp)
	out, err := exec.Command("node", sp, setup, qpath).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("duckdb: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var got []struct {
		Names []string `json:"names"`
		Rows  []any    `json:"rows"`
		Error string   `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil || len(got) != len(deploy.Queries) {
		t.Fatalf("duckdb output (%v): %s", err, out)
	}
	for i, q := range deploy.Queries {
		want, err := clickhouseAnswer(conn, q.Expand(db, run, request))
		if err != nil {
			t.Errorf("%s: ClickHouse: %v", q.Title, err)
			continue
		}
		if got[i].Error != "" {
			t.Errorf("%s: DuckDB: %s\n%s", q.Title, got[i].Error, duck[i])
			continue
		}
		d := answer{names: got[i].Names}
		for _, r := range got[i].Rows {
			d.rows = append(d.rows, reduceJSON(r).([]any))
		}
		if !reflect.DeepEqual(d.names, want.names) {
			t.Errorf("%s: DuckDB columns %v, ClickHouse %v", q.Title, d.names, want.names)
			continue
		}
		if len(d.rows) != len(want.rows) || len(want.rows) == 0 {
			t.Errorf("%s: DuckDB %d rows, ClickHouse %d", q.Title, len(d.rows), len(want.rows))
			continue
		}
		if !strings.Contains(q.SQL, "ORDER BY") {
			// Without ORDER BY the engines may order rows differently.
			for _, a := range []answer{d, want} {
				sort.Slice(a.rows, func(x, y int) bool { return fmt.Sprint(a.rows[x]) < fmt.Sprint(a.rows[y]) })
			}
		}
		bad := 0
		for r := range want.rows {
			for c, name := range want.names {
				if !sameCell(name, want.rows[r][c], d.rows[r][c]) && bad < 5 {
					bad++
					t.Errorf("%s: row %d %s: DuckDB %v, ClickHouse %v", q.Title, r, name, d.rows[r][c], want.rows[r][c])
				}
			}
		}
	}
}

// The README's queries are documented queries (so the parity test covers
// them): each ClickHouse query it shows is a Query's SQL, each DuckDB one
// a Query's DuckDB form.
func TestREADMEQueriesAreChecked(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	norm := func(s string) string {
		return strings.Join(strings.Fields(strings.ReplaceAll(s, "'RUN'", "'{run}'")), " ")
	}
	known := map[string]bool{}
	for _, q := range deploy.Queries {
		known["clickhouse "+norm(q.SQL)] = true
		known["duckdb "+norm(q.DuckDB)] = true
	}
	readme := string(b)
	var ch, duck []string
	for _, m := range regexp.MustCompile(`(?s)--query "(.*?)"`).FindAllStringSubmatch(readme, -1) {
		ch = append(ch, m[1])
	}
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(readme, -1) {
		for _, s := range strings.Split(m[1], ";") {
			if strings.TrimSpace(s) != "" {
				duck = append(duck, s)
			}
		}
	}
	if len(ch) == 0 || len(duck) == 0 {
		t.Fatalf("README shows %d ClickHouse and %d DuckDB queries; want both", len(ch), len(duck))
	}
	for engine, qs := range map[string][]string{"clickhouse": ch, "duckdb": duck} {
		for _, q := range qs {
			if !known[engine+" "+norm(q)] {
				t.Errorf("README's %s query is not in deploy.Queries (so nothing checks it):\n%s", engine, q)
			}
		}
	}
}

// A figure that could not be computed is NULL in ClickHouse and in the
// Parquet export (DuckDB reads NULL), so aggregates skip it: a cycle
// without power never averages in as 0 or poisons avg() as NaN.
func TestUnknownFiguresAreNull(t *testing.T) {
	db, conn := testenv.FreshDatabase(t)
	sink, _ := chstore.New(conn, db)
	ctx := context.Background()
	cr := schemas.NewCycleResultRows()
	for c, e := range []float64{100, math.NaN(), 300} {
		cr.RunID.Append("r")
		cr.Cycle.Append(uint32(c))
		cr.From.Append(int64(c) * 1e9)
		cr.To.Append(int64(c+1) * 1e9)
		for _, col := range []*schemas.Col[float64]{cr.DurationS, cr.EnergyJ, cr.StaticJ, cr.DynamicJ, cr.PrefillJ, cr.DecodeJ, cr.UnattributedJ,
			cr.EdgeUncJ, cr.SystemJ, cr.JPerToken, cr.TokensPerJ, cr.RequestJp50, cr.TTFTp50, cr.TTFTp99, cr.ITLp50, cr.ITLp99, cr.TPOTp50, cr.E2Ep50,
			cr.CPUPackageJ, cr.DRAMJ, cr.CPUDRAMUncJ, cr.CPUDRAMJPerToken} {
			col.Append(e)
		}
		cr.Requests.Append(1)
		cr.Failed.Append(0)
		cr.PromptTokens.Append(1)
		cr.OutputTokens.Append(1)
		cr.Quality.Append("ok")
		cr.Method.Append("counter")
		cr.AnalyzedNS.Append(1)
	}
	run := schemas.NewRows(schemas.KindRun)
	for k, ph := range []schemas.RunPhase{schemas.RunStart, schemas.RunEnd} {
		run.Append(&schemas.RunEvent{RunID: "r", Phase: ph, TS: int64(k) * 3e9}, schemas.Position{Epoch: 1, Seq: uint64(k + 1)})
	}
	for _, tb := range []*schemas.Table{cr.Table(), run.Table()} {
		if err := sink.Write(ctx, tb); err != nil {
			t.Fatal(err)
		}
	}
	var n, known uint64
	var mean float64
	if err := conn.QueryRow(ctx, "SELECT count(), count(energy_j), avg(energy_j) FROM "+db+".cycle_results FINAL").Scan(&n, &known, &mean); err != nil {
		t.Fatal(err)
	}
	if n != 3 || known != 2 || mean != 200 {
		t.Fatalf("ClickHouse: %d rows, %d with energy, mean %v; want 3, 2, 200 (the unknown cycle NULL, skipped)", n, known, mean)
	}
	// Read back through the store: NULL is NaN again, not 0.
	st := store.Wrap(sink)
	back := schemas.NewCycleResultRows()
	if err := st.ReadTable(ctx, back.Table(), schemas.Filter{RunIDs: []string{"r"}}); err != nil {
		t.Fatal(err)
	}
	if len(back.EnergyJ.V) != 3 || !math.IsNaN(back.EnergyJ.V[1]) || back.EnergyJ.V[0] != 100 {
		t.Fatalf("read back %v", back.EnergyJ.V)
	}
	// The Parquet export: DuckDB sees NULL and skips it too.
	nm := testenv.NodeModules(t)
	dir := t.TempDir()
	if _, err := exporters.Export(ctx, st, st, exporters.Selection{RunIDs: []string{"r"}, Tables: []string{schemas.TableCycleResults}},
		"test", &lemparquet.Writer{Dir: dir}, nil); err != nil {
		t.Fatal(err)
	}
	setup := filepath.Join(dir, "setup.sql")
	os.WriteFile(setup, []byte(deploy.DuckDBSetup(dir, []string{schemas.TableCycleResults})), 0o644)
	qs, _ := json.Marshal([]string{"SELECT count(*) AS n, count(energy_j) AS known, avg(energy_j) AS mean FROM lem.cycle_results"})
	qpath := filepath.Join(dir, "q.json")
	os.WriteFile(qpath, qs, 0o644)
	script, _ := os.ReadFile("testdata/duckdb.mjs")
	sp := filepath.Join(nm, fmt.Sprintf("duckdb-null-%d.mjs", os.Getpid()))
	os.WriteFile(sp, script, 0o644)
	defer os.Remove(sp)
	out, err := exec.Command("node", sp, setup, qpath).CombinedOutput()
	if err != nil {
		t.Fatalf("duckdb: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"rows":[["3","2",200]]`) {
		t.Fatalf("DuckDB over the export: %s; want 3 rows, 2 with energy, mean 200", out)
	}
}

// checkModernClickHouse runs every migration (the version-gated modern
// ones included) in chDB — a current ClickHouse engine, in-process — loads
// the data the 18.16 server db holds (exported to Parquet, as `lem export`
// writes it), and requires every documented query and every Grafana panel
// to answer there as on 18.16; where they disagree, the error says which
// query and how.
func checkModernClickHouse(t *testing.T, conn driver.Conn, db string, st *store.Store, run, request string, from, to time.Time) {
	t.Helper()
	dir := t.TempDir()
	sum, err := exporters.Export(context.Background(), st, st, exporters.Selection{RunIDs: []string{run}, Margin: 3600e9}, "test", &lemparquet.Writer{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	setup := []string{"CREATE DATABASE IF NOT EXISTS lem"}
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		sts, err := m.Render("lem")
		if err != nil {
			t.Fatal(err)
		}
		setup = append(setup, sts...)
	}
	for tb, n := range sum.Rows {
		if n == 0 {
			continue
		}
		cols := strings.Join(schemas.EmptyTable(tb).ColumnNames(), ", ")
		setup = append(setup, fmt.Sprintf("INSERT INTO lem.%s (%s) SELECT %s FROM file('%s/%s/*.parquet', Parquet)", tb, cols, cols, dir, tb))
	}
	type named struct{ name, ch, modern string }
	var qs []named
	for _, q := range deploy.Queries {
		qs = append(qs, named{"query " + q.Title, q.Expand(db, run, request), q.Expand("lem", run, request)})
	}
	for _, p := range loadDashboard(t).Panels {
		qs = append(qs, named{"panel " + p.Title, expand(p.Targets[0].RawSQL, db, from, to, 10), expand(p.Targets[0].RawSQL, "lem", from, to, 10)})
	}
	var modern []string
	for _, q := range qs {
		modern = append(modern, q.modern)
	}
	out := runChDB(t, setup, modern)
	var got struct {
		Version     string `json:"version"`
		SetupErrors []struct {
			SQL   string `json:"sql"`
			Error string `json:"error"`
		} `json:"setup_errors"`
		Results []struct {
			Names []string `json:"names"`
			Rows  []any    `json:"rows"`
			Error string   `json:"error"`
		} `json:"results"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil || len(got.Results) != len(qs) {
		t.Fatalf("chdb output (%v): %.2000s", err, out)
	}
	t.Logf("chDB (ClickHouse %s): %d migration statements and %d table loads, %d queries and panels", got.Version, len(setup)-len(sum.Rows), len(sum.Rows), len(qs))
	for _, e := range got.SetupErrors {
		t.Errorf("ClickHouse %s refuses:\n%s\n%s", got.Version, e.SQL, e.Error)
	}
	for i, q := range qs {
		r := got.Results[i]
		if r.Error != "" {
			t.Errorf("%s: fails on ClickHouse %s (runs on 18.16): %s", q.name, got.Version, r.Error)
			continue
		}
		want, err := clickhouseAnswer(conn, q.ch)
		if err != nil {
			t.Errorf("%s: 18.16: %v", q.name, err)
			continue
		}
		var rows [][]any
		for _, row := range r.Rows {
			rows = append(rows, reduceJSON(row).([]any))
		}
		if len(rows) != len(want.rows) {
			t.Errorf("%s: %d rows on ClickHouse %s, %d on 18.16", q.name, len(rows), got.Version, len(want.rows))
			continue
		}
		if !strings.Contains(q.ch, "ORDER BY") {
			for _, rs := range [][][]any{rows, want.rows} {
				sort.Slice(rs, func(x, y int) bool { return fmt.Sprint(rs[x]) < fmt.Sprint(rs[y]) })
			}
		}
		bad := 0
		for k := range want.rows {
			for c, name := range want.names {
				if !sameCell(name, want.rows[k][c], rows[k][c]) && bad < 3 {
					bad++
					t.Errorf("%s: row %d %s: ClickHouse %s %v, 18.16 %v", q.name, k, name, got.Version, rows[k][c], want.rows[k][c])
				}
			}
		}
	}
}

// TestClusteredSchemaParsesOnCurrentClickHouse: every statement of `lem
// migrate -cluster` (ON CLUSTER, replicated local tables, Distributed
// tables; TestClickHouseCluster2x2 runs them on four 18.16 servers) is
// parsed by a current ClickHouse (chDB) through formatQuery. chDB has no
// ZooKeeper or Keeper and no cluster, so it cannot run them: what a
// current server is checked for here is the syntax, not the execution.
func TestClusteredSchemaParsesOnCurrentClickHouse(t *testing.T) {
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var sts, queries []string
	for _, m := range ms {
		s, err := m.RenderCluster("lem", "lem_cluster")
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range s {
			sts = append(sts, st)
			lit := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(st)
			queries = append(queries, "SELECT formatQuery('"+lit+"')")
		}
	}
	// A statement that does not parse must fail here: the check can fail.
	sts = append(sts, "CREATE TABLE lem.x ON CLUSTER (")
	queries = append(queries, `SELECT formatQuery('CREATE TABLE lem.x ON CLUSTER (')`)
	out := runChDB(t, []string{}, queries)
	var got struct {
		Version string `json:"version"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &got); err != nil || len(got.Results) != len(queries) {
		t.Fatalf("chdb output (%v): %.2000s", err, out)
	}
	last := len(queries) - 1
	for i, r := range got.Results[:last] {
		if r.Error != "" {
			t.Errorf("ClickHouse %s does not parse:\n%s\n%s", got.Version, sts[i], r.Error)
		}
	}
	if got.Results[last].Error == "" {
		t.Errorf("ClickHouse %s parsed a broken statement: the check cannot fail", got.Version)
	}
	t.Logf("ClickHouse %s parses the %d statements of the clustered schema", got.Version, last)
}

// runChDB runs testdata/chdb.mjs: the setup statements in order, then the
// queries, in chDB (a current ClickHouse in process); its JSON output.
func runChDB(t *testing.T, setup, queries []string) []byte {
	t.Helper()
	nm := testenv.NodeModules(t)
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sp := filepath.Join(nm, fmt.Sprintf("chdb-%d-%d.mjs", os.Getpid(), time.Now().UnixNano()))
	script, _ := os.ReadFile("testdata/chdb.mjs")
	if err := os.WriteFile(sp, script, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(sp)
	out, err := exec.Command("node", sp, write("setup.json", setup), write("queries.json", queries)).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("chdb: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return out
}
