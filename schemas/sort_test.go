package schemas

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// createKeyRE finds each CREATE TABLE's name and ORDER BY in a migration.
var createKeyRE = regexp.MustCompile(`(?s)CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)\s*\(.*?\)\s*ENGINE\s*=.*?ORDER BY\s*\(([^)]*)\)`)

// TestCatalogMatchesMigrations holds every table spec to its migration:
// the sort key is the table's ORDER BY, the time column and every column
// of the layout exist in the DDL, and every migrated table has a spec.
func TestCatalogMatchesMigrations(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	ddl := map[string]string{}
	keys := map[string]string{}
	for _, m := range ms {
		for _, s := range m.Statements {
			for _, g := range createKeyRE.FindAllStringSubmatch(s, -1) {
				var cols []string
				for _, c := range strings.Split(g[2], ",") {
					cols = append(cols, strings.TrimSpace(c))
				}
				keys[g[1]] = strings.Join(cols, ",")
				ddl[g[1]] = g[0]
			}
			// ALTER TABLE ... ADD COLUMN extends a table's DDL.
			for _, g := range regexp.MustCompile(`(?s)ALTER TABLE \{db\}\.(\w+)\s+([^;]*)`).FindAllStringSubmatch(s, -1) {
				ddl[g[1]] += " " + g[2]
			}
		}
	}
	seen := map[string]bool{}
	for _, spec := range Catalog() {
		seen[spec.Name] = true
		if got, want := strings.Join(spec.SortKey, ","), keys[spec.Name]; got != want {
			t.Errorf("%s: catalog sort key %q, migrations ORDER BY %q", spec.Name, got, want)
		}
		cols := spec.NewTable().ColumnNames()
		if !slices.Contains(cols, spec.TimeColumn) {
			t.Errorf("%s: time column %s not in the layout %v", spec.Name, spec.TimeColumn, cols)
		}
		for _, c := range cols {
			if !regexp.MustCompile(`\b` + c + `\b`).MatchString(ddl[spec.Name]) {
				t.Errorf("%s: column %s of the layout not in the migrations", spec.Name, c)
			}
		}
		if spec.RunScoped != slices.Contains(cols, "run_id") {
			t.Errorf("%s: run-scoped %v but run_id column %v", spec.Name, spec.RunScoped, slices.Contains(cols, "run_id"))
		}
		if spec.Replacing != strings.Contains(ddl[spec.Name], "ReplacingMergeTree") {
			t.Errorf("%s: replacing %v disagrees with the engine", spec.Name, spec.Replacing)
		}
	}
	for name := range keys {
		if !seen[name] && name != "schema_migrations" {
			t.Errorf("migrated table %s has no spec in the catalog", name)
		}
	}
	if SortKey("no_such_table") != nil {
		t.Error("unknown table has a key")
	}
}

// powerTable builds rows as ingest receives them: messages of 50 samples of
// one device each, devices interleaved, optionally in shuffled message
// order (a spool drained late) and with overlapping messages.
func powerTable(msgs int, shuffle, overlap bool, rng *rand.Rand) *PowerRows {
	r := newPowerRows()
	order := make([]int, msgs)
	for i := range order {
		order[i] = i
	}
	if shuffle {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	for seq, m := range order {
		dev := m % 8
		b := &PowerBatch{Origin: Origin{Host: fmt.Sprintf("h%d", m%3), Source: "nvml"}, Device: Device{Index: uint32(dev), UUID: fmt.Sprintf("GPU-%d", 7-dev)}}
		start := int64(m/24) * 1000 // the next message of this device (host, uuid)
		if overlap {
			start = int64(m/24) * 700 // messages of one device overlap in time
		}
		for i := 0; i < 50; i++ {
			b.Samples = append(b.Samples, PowerSample{TS: start + int64(i)*20, Power: Power(rng.IntN(5))})
		}
		r.Append(b, Position{Epoch: 1, Seq: uint64(seq + 1)})
	}
	return r
}

func tokenTable(msgs int, rng *rand.Rand) *TokenRows {
	r := newTokenRows()
	next := map[string]uint32{}
	for m := 0; m < msgs; m++ {
		b := &TokenBatch{RunID: fmt.Sprintf("run-%d", m%2)}
		for q := 0; q < 20; q++ {
			b.RequestIDs = append(b.RequestIDs, fmt.Sprintf("req-%d", rng.IntN(300)))
		}
		for i := 0; i < 100; i++ {
			q := uint32(rng.IntN(20))
			k := b.RunID + b.RequestIDs[q]
			b.Tokens = append(b.Tokens, Token{Request: q, Index: next[k] % 7, TS: int64(m*100 + i), Tokens: 1})
			next[k]++
		}
		r.Append(b, Position{Epoch: 1, Seq: uint64(m + 1)})
	}
	return r
}

// rowsOf renders every row of t as text, for multiset comparison.
func rowsOf(t *Table) []string {
	out := make([]string, t.Rows())
	for i := range out {
		var sb strings.Builder
		for _, c := range t.Columns {
			v := c.Slice(i, i+1).Data()
			fmt.Fprintf(&sb, "%v|", v)
		}
		out[i] = sb.String()
	}
	return out
}

// checkSorted verifies that out is a stable sort of in by the table key.
func checkSorted(t *testing.T, in, out *Table) {
	t.Helper()
	if err := out.Check(); err != nil {
		t.Fatal(err)
	}
	a, b := rowsOf(in), rowsOf(out)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatalf("sorted table is not a permutation of the input (%d vs %d rows)", len(a), len(b))
	}
	key := SortKey(in.Name)
	col := func(tb *Table, name string) Column {
		for _, c := range tb.Columns {
			if c.Name() == name {
				return c
			}
		}
		t.Fatalf("no column %s", name)
		return nil
	}
	cmpRow := func(i, j int) int {
		for _, k := range key {
			c := col(out, k)
			x, y := fmt.Sprint(c.Slice(i, i+1).Data()), fmt.Sprint(c.Slice(j, j+1).Data())
			switch v := c.Data().(type) {
			case []string:
				if r := strings.Compare(v[i], v[j]); r != 0 {
					return r
				}
			case []int64:
				if v[i] != v[j] {
					if v[i] < v[j] {
						return -1
					}
					return 1
				}
			case []uint32:
				if v[i] != v[j] {
					if v[i] < v[j] {
						return -1
					}
					return 1
				}
			default:
				t.Fatalf("key type %T (%s %s)", v, x, y)
			}
		}
		return 0
	}
	seq := col(out, "stream_seq").Data().([]uint64)
	for i := 1; i < out.Rows(); i++ {
		c := cmpRow(i-1, i)
		if c > 0 {
			t.Fatalf("rows %d and %d out of order", i-1, i)
		}
		if c == 0 && seq[i-1] > seq[i] {
			t.Fatalf("rows %d and %d with equal keys lost arrival order (seq %d before %d)", i-1, i, seq[i-1], seq[i])
		}
	}
}

func TestSorterPower(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var s Sorter
	for _, tc := range []struct {
		name              string
		shuffle, overlap  bool
		wantFull, wantRun bool
	}{
		{"interleaved devices", false, false, false, true},
		{"messages out of order", true, false, true, true},
		{"overlapping messages", false, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := powerTable(400, tc.shuffle, tc.overlap, rng).Table()
			out, err := s.Sort(in)
			if err != nil {
				t.Fatal(err)
			}
			if !s.LastCopied || s.LastFull != tc.wantFull {
				t.Errorf("copied %v full %v, want copied, full %v (runs %d)", s.LastCopied, s.LastFull, tc.wantFull, s.LastRuns)
			}
			checkSorted(t, in, out)
			// Sorting the sorted table is a no-op.
			again, err := s.Sort(out)
			if err != nil || again != out || s.LastCopied {
				t.Errorf("sorted table re-sorted: same %v copied %v err %v", again == out, s.LastCopied, err)
			}
		})
	}
}

func TestSorterTokens(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var s Sorter
	for round := 0; round < 3; round++ { // buffers reused between calls
		in := tokenTable(50+round*30, rng).Table()
		out, err := s.Sort(in)
		if err != nil {
			t.Fatal(err)
		}
		if !s.LastFull {
			t.Errorf("interleaved tokens sorted by runs (%d runs)", s.LastRuns)
		}
		checkSorted(t, in, out)
	}
}

func TestSorterSmallAndUnknown(t *testing.T) {
	var s Sorter
	one := powerTable(1, false, false, rand.New(rand.NewPCG(5, 6))).Table()
	if out, err := s.Sort(one); err != nil || out != one {
		t.Fatalf("one sorted message copied: %v", err)
	}
	empty := newPowerRows().Table()
	if out, err := s.Sort(empty); err != nil || out != empty {
		t.Fatalf("empty table: %v", err)
	}
	unknown := &Table{Name: "not_a_table", Columns: []Column{newCol[string]("x", "String")}}
	if out, err := s.Sort(unknown); err != nil || out != unknown {
		t.Fatalf("table without key: %v", err)
	}
	broken := &Table{Name: TablePower, Columns: []Column{newCol[string]("host", "String")}}
	broken.Columns[0].(*Col[string]).Append("a")
	broken.Columns[0].(*Col[string]).Append("b")
	if _, err := s.Sort(broken); err == nil || !strings.Contains(err.Error(), "device_uuid") {
		t.Fatalf("missing key column: %v", err)
	}
}

func BenchmarkSortPower(b *testing.B) {
	benchSort(b, powerTable(20_000, false, false, rand.New(rand.NewPCG(1, 1))).Table()) // 1 M rows, runs of one message
}

func BenchmarkSortTokens(b *testing.B) {
	benchSort(b, tokenTable(5_000, rand.New(rand.NewPCG(1, 1))).Table()) // 500 k rows, interleaved row by row
}

func benchSort(b *testing.B, in *Table) {
	var s Sorter
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sort(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(in.Rows()), "ns/row")
}

// Scraped metrics: four key columns (run_id, name, labels, ts_ns), many
// series per message, every message a scrape of all of them.
func TestSorterMetrics(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var s Sorter
	for round := 0; round < 8; round++ {
		r := newMetricRows()
		for m := 0; m < 40; m++ {
			b := &MetricBatch{RunID: "run", Endpoint: "http://x/metrics"}
			ts := int64(1e18) + int64(m)*1e9
			for k := 0; k < 12; k++ {
				labels := fmt.Sprintf("l=%d", k%3)
				if round%2 == 1 { // one time stamp per scrape, no labels
					labels = ""
				} else {
					ts += int64(rng.IntN(1000))
				}
				b.Samples = append(b.Samples, MetricSample{TS: ts, Name: fmt.Sprintf("lem_ref:m%d", (k*5)%7), Labels: labels, Value: float64(m*100 + k)})
			}
			r.Append(b, Position{Epoch: 1, Seq: uint64(m + 1)})
		}
		in := r.Table()
		out, err := s.Sort(in)
		if err != nil {
			t.Fatal(err)
		}
		checkSorted(t, in, out)
	}
}

// A nullable figure absent from older data (a column added since) reads
// as unknown (NaN, NULL), a plain number as 0, as ClickHouse's defaults do.
func TestAppendZeroOfNullableFigureIsUnknown(t *testing.T) {
	nullable, plain := figure("x"), newCol[float64]("y", "Float64")
	nullable.AppendZero()
	plain.AppendZero()
	if !math.IsNaN(nullable.V[0]) || plain.V[0] != 0 {
		t.Errorf("nullable %v, plain %v", nullable.V[0], plain.V[0])
	}
}
