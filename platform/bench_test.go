package platform

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
	"github.com/llm-energy-measure/lem/store/parquet"
)

// hourStore writes a run of one hour on 8 GPUs with their power at 50 Hz
// (1.44 M samples, one file per device and minute, as ingest's blocks
// land) into a Parquet store.
func hourStore(b testing.TB) (*store.Store, string) {
	const run = "hour-8gpu"
	w := newBenchRun(b)
	runs := schemas.NewRows(schemas.KindRun)
	for _, ev := range []*schemas.RunEvent{
		{RunID: run, Experiment: "bench", Phase: schemas.RunStart, TS: w.t0, Devices: w.devs, Config: "{}", Inventory: "{}"},
		{RunID: run, Experiment: "bench", Phase: schemas.RunEnd, TS: w.t0 + 3600e9, Devices: w.devs, Config: "{}", Inventory: "{}"},
	} {
		runs.Append(ev, w.pos())
	}
	w.write(runs)
	for d, uuid := range w.devs {
		for m := range 60 {
			rows := schemas.NewRows(schemas.KindPower)
			batch := &schemas.PowerBatch{Origin: schemas.Origin{Host: "node", Source: schemas.SourceNVMLBuffer}, Device: schemas.Device{Index: uint32(d), UUID: uuid}}
			for i := range 3000 {
				ts := w.t0 + int64(m)*60e9 + int64(i)*20e6
				batch.Samples = append(batch.Samples, schemas.PowerSample{TS: ts, Power: schemas.Power(100_000 + (i*7919+m*31+d)%500_000)})
			}
			rows.Append(batch, w.pos())
			w.write(rows)
		}
	}
	return store.Wrap(w.ps), run
}

// benchRun writes a synthetic run of 8 GPUs into a fresh Parquet store.
type benchRun struct {
	b    testing.TB
	ps   *parquet.Store
	t0   int64
	devs []string
	seq  uint64
}

func newBenchRun(b testing.TB) *benchRun {
	b.Helper()
	w := &benchRun{b: b, ps: parquet.Open(filepath.Join(b.TempDir(), "store")),
		t0: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	for d := range 8 {
		w.devs = append(w.devs, fmt.Sprintf("GPU-%08d-0000-4000-8000-000000000000", d))
	}
	return w
}

// pos is the next stream position.
func (w *benchRun) pos() schemas.Position { w.seq++; return schemas.Position{Epoch: 1, Seq: w.seq} }

func (w *benchRun) write(r schemas.Rows) {
	if err := w.ps.Write(context.Background(), r.Table()); err != nil {
		w.b.Fatal(err)
	}
}

// BenchmarkTimelineHour8GPU: the timeline of a 1 h × 8 GPU run at 50 Hz,
// downsampled to 2,000 points per device, as the run page first asks.
func BenchmarkTimelineHour8GPU(b *testing.B) {
	st, run := hourStore(b)
	state := newTestPlatformTB(b).state
	// As at publication: the overview built once and kept in the state.
	if err := (&Server{cfg: Config{Store: st, State: state}}).warmOverview(context.Background(), st, run); err != nil {
		b.Fatal(err)
	}
	b.Run("never-built", func(b *testing.B) { benchTimeline(b, st, nil, run, true) })
	b.Run("first-view", func(b *testing.B) { benchTimeline(b, st, state, run, true) })
	b.Run("later-views", func(b *testing.B) { benchTimeline(b, st, state, run, false) })
}

// benchTimeline asks for the whole run's timeline; cold: on a fresh server
// each time (with state: the kept overview is loaded; without: built from
// the samples), else from the overview in memory.
func benchTimeline(b *testing.B, st *store.Store, state *State, run string, cold bool) {
	srv := &Server{cfg: Config{Store: st, State: state}, board: NewBoard()}
	if !cold {
		if _, err := srv.timeline(context.Background(), run, "", "", "2000"); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if cold {
			srv = &Server{cfg: Config{Store: st, State: state}, board: NewBoard()}
		}
		tl, err := srv.timeline(context.Background(), run, "", "", "2000")
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, s := range tl.Series {
			n += s.N
			if len(s.T) > 2000 {
				b.Fatalf("%d points", len(s.T))
			}
		}
		if len(tl.Series) != 8 || n < 8*(60*3000-1) {
			b.Fatalf("%d series, %d samples", len(tl.Series), n)
		}
	}
}

// BenchmarkConcurrentClients: 200 clients at once on the leaderboard (a
// board of 100,000 runs) and on a run page and its timeline (the H200
// run); reports p50/p99 of the server's answers and fails on any error.
func BenchmarkConcurrentClients(b *testing.B) {
	data, _, _, run := h200Bundle(b)
	bundle, err := ReadBundle(bytes.NewReader(data), DefaultLimits)
	if err != nil {
		b.Fatal(err)
	}
	p := newBenchPlatform(b, bundle.Store())
	for _, e := range boardOf(100_000).entries {
		p.srv.board.Put(*e.e)
	}
	res, rep, err := Verify(context.Background(), bundle.Store(), run, nil)
	if err != nil {
		b.Fatal(err)
	}
	e, _ := p.srv.entry(context.Background(), bundle.Store(), res)
	p.state.Publish(context.Background(), Published{Entry: e, Report: rep})
	p.srv.board.Put(e)
	urls := []string{"/api/leaderboard", "/api/leaderboard?sort=tokens_per_s&order=desc&page=3", "/api/leaderboard?backend=vllm&q=qwen",
		"/api/runs/" + run, "/api/runs/" + run + "/timeline?points=1500"}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	get := func(u string) (time.Duration, error) {
		t := time.Now()
		resp, err := client.Get(p.url + u)
		if err != nil {
			return 0, err
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("%s: %d %s", u, resp.StatusCode, buf.String())
		}
		return time.Since(t), nil
	}
	for _, u := range urls { // warm: the run page's recomputation is cached after the first view
		if _, err := get(u); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var lat []time.Duration
	var mu sync.Mutex
	for range b.N {
		var wg sync.WaitGroup
		for c := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := get(urls[c%len(urls)])
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1e3, "p99-ms")
}

// BenchmarkLeaderboardP95 reports the 95th percentile of one leaderboard
// query over 100,000 runs (varied sorts, filters and pages).
func BenchmarkLeaderboardP95(b *testing.B) {
	board := boardOf(100_000)
	sorts := []string{"j_per_token", "tokens_per_s", "ttft_p50_ms", "model", "started_ns"}
	for _, s := range sorts { // the indexes, built once per change of the board
		board.Query(Query{Sort: s})
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		q := Query{Sort: sorts[i%len(sorts)], Desc: i%2 == 0, Page: 1 + i%50, PerPage: 50, VerifiedOnly: i%5 == 0}
		if i%3 == 0 {
			q.Filters = map[string]string{"backend": "vllm"}
		}
		if i%7 == 0 {
			q.Text = "qwen"
		}
		t := time.Now()
		if _, err := board.Query(q); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1e3, "p95-ms")
}

// BenchmarkVerifyBundle: decoding, validating and recomputing the H200
// run's bundle, in rows per second.
func BenchmarkVerifyBundle(b *testing.B) {
	data, m, _, run := h200Bundle(b)
	rows := 0
	for _, n := range m.Rows {
		rows += n
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		bd, err := ReadBundle(bytes.NewReader(data), DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		if _, rep, err := Verify(context.Background(), bd.Store(), run, bd.Manifest.Results); err != nil || !rep.Passed() {
			b.Fatal(err, rep.Failures())
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkReadBundleHour8GPU: decoding and validating the bundle of a
// 1 h × 8 GPU run (1.44 M power samples), the first half of verifying it.
func BenchmarkReadBundleHour8GPU(b *testing.B) {
	st, run := hourStore(b)
	var buf bytes.Buffer
	if _, _, err := writeEvents(context.Background(), st, run, &buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for range b.N {
		bd, err := ReadBundle(bytes.NewReader(buf.Bytes()), DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		if n := bd.Tables[schemas.TablePower].Rows(); n != 1_440_000 {
			b.Fatalf("%d power rows", n)
		}
	}
	b.ReportMetric(1_440_000*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

type benchPlatform struct {
	srv   *Server
	state *State
	url   string
}

// newBenchPlatform is a platform over st (read-only: no uploads).
func newBenchPlatform(b *testing.B, st *store.Store) *benchPlatform {
	b.Helper()
	tp := newTestPlatformTB(b)
	srv, err := New(context.Background(), Config{Store: st, State: tp.state, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	hs := newHTTPServer(b, srv.Handler())
	return &benchPlatform{srv: srv, state: tp.state, url: hs}
}

// writeEvents writes run runID of s as a bundle without results (a run
// with no load, which analytics cannot summarise).
func writeEvents(ctx context.Context, s *store.Store, runID string, w io.Writer) (Manifest, string, error) {
	m, msgs, err := collectEvents(ctx, s, runID, "")
	if err != nil {
		return m, "", err
	}
	hash, err := writeBundle(w, m, msgs)
	return m, hash, err
}

// BenchmarkRunPageAfterRestart: the first view of the H200 run's page on
// a freshly started platform: its figures as kept at verification
// ("kept"), or recomputed from the store ("recomputed": another lem
// version, as every restart did before the figures were kept).
func BenchmarkRunPageAfterRestart(b *testing.B) {
	data, _, _, run := h200Bundle(b)
	p := newTestPlatformTB(b)
	ctx := context.Background()
	secret, _, err := p.state.CreateToken(ctx, "bench", "bench", []string{ScopeUpload}, 0)
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, p.http.URL+"/api/uploads", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatalf("upload: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	// Ingest stores the run's events asynchronously: wait until they are in.
	for i := 0; ; i++ {
		if _, err := analytics.AnalyzeRun(ctx, p.store, run); err == nil {
			break
		} else if i == 300 {
			b.Fatalf("the run never reached the store: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	versions := 0 // each recomputing server a version of its own (nothing kept for it)
	for _, kept := range []bool{true, false} {
		name := map[bool]string{true: "kept", false: "recomputed"}[kept]
		b.Run(name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				version := "test"
				if !kept {
					versions++
					version = fmt.Sprint("other-", versions)
				}
				srv, err := New(ctx, Config{Store: p.store, State: p.state, ToolVersion: version, Log: zerolog.Nop()})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := srv.detailJSON(ctx, run); err != nil {
					b.Fatal(err)
				}
				if got := srv.analyses.Load(); got != map[bool]int64{true: 0, false: 1}[kept] {
					b.Fatalf("%d analyses", got)
				}
			}
		})
	}
}
