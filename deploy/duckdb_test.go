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

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/exporters"
	lemparquet "github.com/llm-energy-measure/lem/exporters/parquet"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/store"
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
