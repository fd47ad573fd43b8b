package platform

import (
	"fmt"
	"strings"
	"testing"
)

func boardOf(n int) *Board {
	b := NewBoard()
	for i := range n {
		e := Entry{RunID: fmt.Sprintf("run-%05d", i), Model: []string{"llama-8b", "qwen-7b", "mistral-7b"}[i%3],
			Backend: []string{"vllm", "sglang"}[i%2], Precision: "bf16", Parallelism: "tp1 pp1 dp1", Hardware: "NVIDIA H200",
			Workload:     []string{"sharegpt, 16 in flight", "sharegpt, 16 in flight", "synthetic 512→128 tokens, 8 in flight"}[i%3/2*2],
			Verification: []string{"verified", "recomputed"}[i%2], GPUs: 1 + i%4}
		if i%7 != 0 { // every seventh run has no J/token
			e.JPerToken = fp(float64((i*7919)%1000) / 1000)
		}
		b.Put(e)
	}
	return b
}

func TestBoardQuery(t *testing.T) {
	b := boardOf(300)
	for _, desc := range []bool{false, true} {
		res, err := b.Query(Query{Sort: "j_per_token", Desc: desc, PerPage: 500})
		if err != nil {
			t.Fatal(err)
		}
		// Never two workloads ranked together unless asked.
		if res.Workload != "sharegpt, 16 in flight" || !strings.Contains(res.Notice, "1 other workload") {
			t.Fatalf("default workload %q, notice %q", res.Workload, res.Notice)
		}
		seenNil := false
		for i, e := range res.Rows {
			if e.Workload != res.Workload {
				t.Fatalf("row %d of workload %q on a page of %q", i, e.Workload, res.Workload)
			}
			if e.JPerToken == nil {
				seenNil = true
				continue
			}
			if seenNil {
				t.Fatalf("desc=%v: a run without J/token ranked before one with it (row %d)", desc, i)
			}
			if i > 0 && res.Rows[i-1].JPerToken != nil {
				prev, cur := *res.Rows[i-1].JPerToken, *e.JPerToken
				if (!desc && prev > cur) || (desc && prev < cur) {
					t.Fatalf("desc=%v: row %d out of order: %v then %v", desc, i, prev, cur)
				}
			}
		}
		if !seenNil {
			t.Fatal("no run without J/token on the page")
		}
	}
	all, _ := b.Query(Query{Filters: map[string]string{"workload": AllWorkloads}, PerPage: 1})
	if all.Total != 300 || !strings.Contains(all.Notice, "not comparable") {
		t.Fatalf("all workloads: %d runs, notice %q", all.Total, all.Notice)
	}
	f, _ := b.Query(Query{Filters: map[string]string{"model": "qwen-7b", "backend": "vllm"}, VerifiedOnly: true, PerPage: 500})
	for _, e := range f.Rows {
		if e.Model != "qwen-7b" || e.Backend != "vllm" || e.Verification != "verified" {
			t.Fatalf("filtered page holds %+v", e)
		}
	}
	if f.Total == 0 {
		t.Fatal("the filter kept nothing")
	}
	// Facets count each dimension's values under the other filters.
	for _, fc := range f.Facets["model"] {
		if fc.Value == "llama-8b" && fc.Count == 0 {
			t.Fatal("a facet with no runs")
		}
	}
	// Pages partition the result.
	seen := map[string]bool{}
	for page := 1; ; page++ {
		r, _ := b.Query(Query{Page: page, PerPage: 40, Sort: "gpus"})
		for _, e := range r.Rows {
			if seen[e.RunID] {
				t.Fatalf("run %s on two pages", e.RunID)
			}
			seen[e.RunID] = true
		}
		if len(r.Rows) < 40 {
			if len(seen) != r.Total {
				t.Fatalf("%d runs over the pages, total %d", len(seen), r.Total)
			}
			break
		}
	}
	txt, _ := b.Query(Query{Text: "RUN-0001", Filters: map[string]string{"workload": AllWorkloads}})
	if txt.Total != 10 {
		t.Fatalf("text search: %d runs, want 10", txt.Total)
	}
	if _, err := b.Query(Query{Sort: "drop table"}); err == nil || !strings.Contains(err.Error(), "j_per_token") {
		t.Fatalf("unknown sort: %v", err)
	}
	if _, err := b.Query(Query{Filters: map[string]string{"colour": "red"}}); err == nil {
		t.Fatal("unknown filter accepted")
	}
}

// BenchmarkLeaderboard is the leaderboard over 100,000 runs: one page,
// sorted and filtered (the sorted index is built once, then reused).
// BenchmarkLeaderboardAfterUpload: a run published, then the first query
// (indexes kept, selections counted again).
func BenchmarkLeaderboardAfterUpload(b *testing.B) {
	board := boardOf(100_000)
	board.Query(Query{})
	b.ResetTimer()
	for i := range b.N {
		board.Put(Entry{RunID: fmt.Sprintf("new-%d", i), Workload: "sharegpt, 16 in flight", JPerToken: fp(0.5)})
		if _, err := board.Query(Query{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeaderboard(b *testing.B) {
	board := boardOf(100_000)
	board.Query(Query{}) // builds the default index
	b.ResetTimer()
	for i := range b.N {
		q := Query{Sort: "j_per_token", Desc: i%2 == 0, Page: 1 + i%20, PerPage: 50}
		if i%3 == 0 {
			q.Filters = map[string]string{"backend": "vllm"}
		}
		if _, err := board.Query(q); err != nil {
			b.Fatal(err)
		}
	}
}

// Indexes kept up to date by Put give the order a fresh sort gives.
func TestBoardReindex(t *testing.T) {
	b := boardOf(500)
	for _, k := range sortNames() {
		b.Query(Query{Sort: k}) // build every index
	}
	for i := range 200 {
		e := Entry{RunID: fmt.Sprintf("run-%05d", (i*37)%700), Model: "m", Workload: "w", GPUs: i % 5}
		if i%3 != 0 {
			e.JPerToken = fp(float64(i%17) / 10)
		}
		b.Put(e)
	}
	fresh := NewBoard()
	for _, it := range b.entries {
		fresh.Put(*it.e)
	}
	for _, k := range sortNames() {
		for _, desc := range []bool{false, true} {
			q := Query{Sort: k, Desc: desc, PerPage: MaxPerPage, Filters: map[string]string{"workload": AllWorkloads}}
			got, _ := b.Query(q)
			want, _ := fresh.Query(q)
			if got.Total != want.Total || len(got.Rows) != len(want.Rows) {
				t.Fatalf("%s: %d/%d rows, fresh %d/%d", k, len(got.Rows), got.Total, len(want.Rows), want.Total)
			}
			for i := range got.Rows {
				if got.Rows[i].RunID != want.Rows[i].RunID {
					t.Fatalf("sort %s desc %v row %d: %s, a fresh sort gives %s", k, desc, i, got.Rows[i].RunID, want.Rows[i].RunID)
				}
			}
		}
	}
}

// With as many runs in each workload, the page ranks the one published to
// most recently.
func TestDefaultWorkloadTie(t *testing.T) {
	b := NewBoard()
	b.Put(Entry{RunID: "a", Workload: "alpha", PublishedNS: 1})
	b.Put(Entry{RunID: "z", Workload: "zulu", PublishedNS: 2})
	if res, _ := b.Query(Query{}); res.Workload != "zulu" {
		t.Fatalf("tie went to %q, want the newest, zulu", res.Workload)
	}
	b.Put(Entry{RunID: "a2", Workload: "alpha", PublishedNS: 0})
	if res, _ := b.Query(Query{}); res.Workload != "alpha" {
		t.Fatalf("%q ranked, want alpha with two runs", res.Workload)
	}
}
