package platform

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/ingest"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

// testPlatform is a platform on embedded JetStream with in-process ingest
// into a fresh Parquet store, as `lem web` runs on embedded defaults.
type testPlatform struct {
	srv   *Server
	http  *httptest.Server
	state *State
	store *store.Store
	cfg   Config
}

func newTestPlatform(t *testing.T) *testPlatform { return newTestPlatformTB(t) }

// platformOption adjusts a test platform's configuration (with its NATS
// connection at hand).
type platformOption func(c *Config, nc *nats.Conn, js jetstream.JetStream)

func newTestPlatformTB(t testing.TB, opts ...platformOption) *testPlatform {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	_, nc, js := testenv.JetStream(t)
	dir := filepath.Join(t.TempDir(), "store")
	sink := store.Parquet(dir)
	done := make(chan struct{})
	go func() { defer close(done); ingest.New(js, sink, ingest.Config{}, nil, zerolog.Nop()).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Profiles accepted on this platform are process-wide: not the next test's.
	t.Cleanup(func() { accepted.Lock(); accepted.ps = nil; accepted.Unlock() })
	pub, err := bus.NewPublisher(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	state, err := OpenState(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	st := store.Parquet(dir)
	cfg := Config{Store: st, State: state, Publisher: pub, ToolVersion: "test", Log: zerolog.Nop(),
		Stored: func(ctx context.Context) error { return bus.WaitIngested(ctx, js) }}
	for _, o := range opts {
		o(&cfg, nc, js)
	}
	srv, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testPlatform{srv: srv, http: hs, state: state, store: st, cfg: cfg}
}

// newHTTPServer serves h until the test ends and returns its URL.
func newHTTPServer(t testing.TB, h http.Handler) string {
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.URL
}

func (p *testPlatform) token(t *testing.T, user string, scopes ...string) string {
	t.Helper()
	secret, _, err := p.state.CreateToken(context.Background(), user, "test", scopes, 0)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func (p *testPlatform) upload(t *testing.T, token string, bundle []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.http.URL+"/api/uploads", bytes.NewReader(bundle))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("upload answer %d not JSON: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return resp.StatusCode
}

func TestUploadVerifyPublish(t *testing.T) {
	data, m, _, run := h200Bundle(t)
	p := newTestPlatform(t)
	up := p.token(t, "alice", ScopeUpload)
	read := p.token(t, "bob", ScopeRead)

	// Refusals first: nothing of them may be stored or published.
	if code, out := p.upload(t, "", data); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d %v", code, out)
	}
	if code, out := p.upload(t, read, data); code != http.StatusUnauthorized || !strings.Contains(fmt.Sprint(out["error"]), "upload scope") {
		t.Fatalf("read-only token: %d %v", code, out)
	}
	forged := withManifest(t, data, func(m *Manifest) { m.Results["j_per_token"] *= 0.8 })
	code, out := p.upload(t, up, forged)
	if code != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(out["error"]), "j_per_token submitted") {
		t.Fatalf("results the events do not give: %d %v", code, out)
	}
	if code, out := p.upload(t, up, data[:len(data)/2]); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["error"]), "truncated") {
		t.Fatalf("truncated bundle: %d %v", code, out)
	}
	var lb Result
	getJSON(t, p.http.URL+"/api/leaderboard", &lb)
	if lb.Total != 0 {
		t.Fatalf("refused uploads are on the leaderboard: %+v", lb.Rows)
	}
	time.Sleep(500 * time.Millisecond) // anything published would be ingested by now
	if ids, _ := p.store.RunIDs(context.Background()); len(ids) != 0 {
		t.Fatalf("refused uploads stored runs %v", ids)
	}

	// The bundle itself: verified, stored through the event stream, published.
	code, out = p.upload(t, up, data)
	if code != http.StatusCreated || out["state"] != "verified" {
		t.Fatalf("upload: %d %v", code, out)
	}
	getJSON(t, p.http.URL+"/api/leaderboard?verified=1", &lb)
	if lb.Total != 1 || lb.Rows[0].RunID != run || lb.Rows[0].Verification != "verified" || lb.Rows[0].Submitter != "alice" {
		t.Fatalf("leaderboard after the upload: %+v", lb)
	}
	e := lb.Rows[0]
	if e.JPerToken == nil || *e.JPerToken != m.Results["j_per_token"] || e.TTFTp50 == nil || e.Hardware != "NVIDIA H200 SXM 141 GB" || e.Simulated {
		t.Fatalf("entry: %+v", e)
	}
	// Published means readable: the run's timeline answers at once (the
	// upload waited for ingest to store the events).
	var now Timeline
	if code := getJSON(t, p.http.URL+"/api/runs/"+run+"/timeline", &now); code != http.StatusOK || len(now.Series) == 0 {
		t.Fatalf("the timeline right after publication: %d, %d series", code, len(now.Series))
	}
	// Again: a no-op. Other content under the same run id: refused.
	if code, out := p.upload(t, up, data); code != http.StatusOK {
		t.Fatalf("the same upload again: %d %v", code, out)
	}
	other := withManifest(t, data, func(m *Manifest) { m.ToolVersion = "other" })
	if code, out := p.upload(t, up, other); code != http.StatusConflict {
		t.Fatalf("other content, same run: %d %v", code, out)
	}
	// Another user cannot change alice's submission: other content is
	// refused, the same content changes nothing (she stays the submitter).
	mallory := p.token(t, "mallory", ScopeUpload)
	if code, out := p.upload(t, mallory, other); code != http.StatusConflict {
		t.Fatalf("mallory's other content for alice's run: %d %v", code, out)
	}
	if code, _ := p.upload(t, mallory, data); code != http.StatusOK {
		t.Fatalf("mallory re-sending alice's bundle: %d", code)
	}
	getJSON(t, p.http.URL+"/api/leaderboard?verified=1", &lb)
	if lb.Rows[0].Submitter != "alice" {
		t.Fatalf("submitter after mallory's uploads: %s", lb.Rows[0].Submitter)
	}

	// The events arrive in the platform's store through ingest; the
	// timeline reads them.
	// Exactly once: every table holds the bundle's rows, no more.
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := storedRows(t, p.store, run, tl0(t, p, run))
		if maps.Equal(got, m.Rows) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored rows %v, the bundle's %v", got, m.Rows)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var tl Timeline
	getJSON(t, p.http.URL+"/api/runs/"+run+"/timeline?points=200", &tl)
	if len(tl.Series) != 1 {
		t.Fatalf("timeline: %d series", len(tl.Series))
	}
	s := tl.Series[0]
	if s.Raw || len(s.T) == 0 || len(s.T) > 200 {
		t.Fatalf("downsampled to %d points (raw %v), want ≤ 200", len(s.T), s.Raw)
	}
	for i := range s.T {
		if !(s.Min[i] <= s.Mean[i] && s.Mean[i] <= s.Max[i]) || s.Min[i] < 0 {
			t.Fatalf("bucket %d: min %v mean %v max %v", i, s.Min[i], s.Mean[i], s.Max[i])
		}
	}
	if len(tl.Cycles) != 4 || tl.Cycles[0][0] != -1 || tl.RequestsTotal != 192 {
		t.Fatalf("timeline: %d cycles, %d requests", len(tl.Cycles), tl.RequestsTotal)
	}
	// The recomputed figures of the page are the entry's.
	var page struct {
		Entry  Entry
		Report Report
		Result map[string]any
	}
	if code := getJSON(t, p.http.URL+"/api/runs/"+run, &page); code != http.StatusOK || !page.Report.Passed() {
		t.Fatalf("run page: %d %+v", code, page.Report)
	}
	sum := page.Result["Summary"].(map[string]any)["j_per_token"].(map[string]any)
	if sum["Mean"].(float64) != *e.JPerToken {
		t.Fatalf("page J/token %v, leaderboard %v", sum["Mean"], *e.JPerToken)
	}
	// The platform's history is stored through ingest like every event.
	hist := schemas.NewRows(schemas.KindPlatform).Table()
	deadline = time.Now().Add(30 * time.Second)
	for {
		hist.Reset()
		if err := p.store.ReadTable(context.Background(), hist, schemas.Filter{From: 0, To: math.MaxInt64}); err != nil {
			t.Fatal(err)
		}
		if hist.Rows() >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var types []string
	for i, typ := range hist.Column("type").(*schemas.Col[string]).V {
		if sub := hist.Column("subject").(*schemas.Col[string]).V[i]; sub == run || typ == "token.created" {
			types = append(types, typ)
		}
	}
	slices.Sort(types)
	if want := []string{"run.published", "token.created", "token.created", "token.created", "upload.refused", "upload.verified"}; !slices.Equal(types, want) {
		t.Fatalf("platform history %v, want %v", types, want)
	}
	// Anyone can download the run's events and recompute its figures.
	resp, err := http.Get(p.http.URL + "/api/runs/" + run + "/bundle")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("bundle download: %v %v", err, resp.StatusCode)
	}
	down, err := ReadBundle(resp.Body, DefaultLimits)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, rep, err := Verify(context.Background(), down.Store(), run, down.Manifest.Results); err != nil || !rep.Passed() {
		t.Fatalf("the downloaded bundle does not verify: %v %s", err, rep.Failures())
	}
	if down.Manifest.Results["j_per_token"] != *e.JPerToken {
		t.Fatalf("downloaded J/token %v, published %v", down.Manifest.Results["j_per_token"], *e.JPerToken)
	}
	// The run as a Hugging Face dataset.
	resp, err = http.Get(p.http.URL + "/api/runs/" + run + "/dataset")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("dataset download: %v %v", err, resp.StatusCode)
	}
	zb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	zr, err := zip.NewReader(bytes.NewReader(zb), int64(len(zb)))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range zr.File {
		have[f.Name] = true
	}
	for _, want := range []string{run + "/README.md", run + "/results.json", run + "/data/requests/part-00000.parquet", run + "/data/power_samples/part-00000.parquet"} {
		if !have[want] {
			t.Errorf("the dataset zip lacks %s (has %v)", want, have)
		}
	}
	// A platform restarted on the same state has the run, and shows its
	// page from the figures kept when it was verified: nothing recomputed.
	pageOf := func(srv *Server) []byte {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/runs/"+run, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("run page: %d %s", rec.Code, rec.Body)
		}
		return rec.Body.Bytes()
	}
	before := pageOf(p.srv)
	srv2, err := New(context.Background(), Config{Store: p.store, State: p.state, Log: zerolog.Nop(), ToolVersion: p.srv.cfg.ToolVersion})
	if err != nil || srv2.Board().Len() != 1 {
		t.Fatalf("after a restart: %v, %d runs", err, srv2.Board().Len())
	}
	if after := pageOf(srv2); !bytes.Equal(after, before) || srv2.analyses.Load() != 0 {
		t.Fatalf("after a restart the run page changed (%d vs %d bytes) or was recomputed (%d analyses)", len(after), len(before), srv2.analyses.Load())
	}
	// Its dataset needs the whole result: recomputed once, the page's
	// figures unchanged.
	rec := httptest.NewRecorder()
	srv2.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/runs/"+run+"/dataset", nil))
	if rec.Code != http.StatusOK || srv2.analyses.Load() != 1 || !bytes.Equal(pageOf(srv2), before) {
		t.Fatalf("dataset after a restart: %d, %d analyses", rec.Code, srv2.analyses.Load())
	}
	// Another version of lem recomputes it (its analysis may differ).
	srv3, err := New(context.Background(), Config{Store: p.store, State: p.state, Log: zerolog.Nop(), ToolVersion: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if pageOf(srv3); srv3.analyses.Load() != 1 {
		t.Fatalf("another lem version: %d analyses, want 1", srv3.analyses.Load())
	}
}

func TestUploadLimitsPerUser(t *testing.T) {
	data, _, _, _ := h200Bundle(t)
	p := newTestPlatform(t)
	p.srv.cfg.UploadsPerHour = 2
	tok := p.token(t, "carol", ScopeUpload)
	var codes []int
	for range 3 {
		c, _ := p.upload(t, tok, data[:100])
		codes = append(codes, c)
	}
	if !slices.Equal(codes, []int{400, 400, 429}) {
		t.Fatalf("codes %v, want two refusals for the bundle and then 429", codes)
	}
}

func TestTokens(t *testing.T) {
	p := newTestPlatform(t)
	ctx := context.Background()
	secret, tok, err := p.state.CreateToken(ctx, "dave", "ci", []string{ScopeUpload}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(tok.Hash, secret) || tok.Hash == secret {
		t.Fatal("the stored token holds the secret")
	}
	if _, err := p.state.Authenticate(ctx, secret, ScopeUpload); err != nil {
		t.Fatal(err)
	}
	if _, err := p.state.Authenticate(ctx, secret+"x", ScopeUpload); err == nil {
		t.Fatal("a wrong secret authenticated")
	}
	if err := p.state.RevokeToken(ctx, tok.Hash); err != nil {
		t.Fatal(err)
	}
	if _, err := p.state.Authenticate(ctx, secret, ScopeUpload); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: %v", err)
	}
	exp, _, _ := p.state.CreateToken(ctx, "dave", "short", []string{ScopeUpload}, time.Nanosecond)
	time.Sleep(time.Millisecond)
	if _, err := p.state.Authenticate(ctx, exp, ScopeUpload); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	if _, _, err := p.state.CreateToken(ctx, "dave", "x", []string{"root"}, 0); err == nil {
		t.Fatal("an unknown scope was accepted")
	}
}

// The OpenAPI document describes exactly the routes the server has.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(documented)
	routes := slices.Sorted(slices.Values(routeList))
	if !slices.Equal(documented, routes) {
		t.Fatalf("documented %v\nserved %v", documented, routes)
	}
	// Every route is served (a 404 from the mux would mean a typo).
	p := newTestPlatform(t)
	for _, r := range routeList {
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{id}", "nope", "{hash}", "nope", "{provider}", "nope").Replace(path)
		req, _ := http.NewRequest(method, p.http.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if strings.HasPrefix(path, "/embed/") { // an image and a page for other sites
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %s", r, resp.Status)
			}
			continue
		}
		if path == "/experiment.schema.json" { // for editors: a JSON Schema document
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/schema+json" {
				t.Errorf("%s: %s, %q", r, resp.Status, ct)
			}
			continue
		}
		if path == "/experiment.schema.json" { // for editors: a JSON Schema document
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/schema+json" {
				t.Errorf("%s: %s, %q", r, resp.Status, ct)
			}
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: content type %q (not routed to the API?)", r, ct)
		}
	}
	// The leaderboard's sort enum is the board's.
	var lb struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name   string
				Schema struct{ Enum []string }
			}
		}
	}
	json.Unmarshal(openAPI, &lb)
	for _, prm := range lb.Paths["/api/leaderboard"]["get"].Parameters {
		if prm.Name == "sort" && !slices.Equal(slices.Sorted(slices.Values(prm.Schema.Enum)), sortNames()) {
			t.Fatalf("sort enum %v, board sorts by %v", prm.Schema.Enum, sortNames())
		}
	}
}

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m))
}

// tl0 is the span the bundle's device series cover: the run's ± the margin.
func tl0(t *testing.T, p *testPlatform, run string) [2]int64 {
	t.Helper()
	from, to, err := analytics.RunSpan(context.Background(), p.store, []string{run})
	if err != nil {
		return [2]int64{}
	}
	return [2]int64{from - bundleMargin, to + bundleMargin}
}

// storedRows counts the run's rows in st, table by table, as a bundle
// selects them.
func storedRows(t *testing.T, st *store.Store, run string, span [2]int64) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, name := range bundleTables {
		spec, _ := schemas.Spec(name)
		tb := spec.NewTable()
		f := schemas.Filter{RunIDs: []string{run}}
		if !spec.RunScoped {
			f = schemas.Filter{From: span[0], To: span[1]}
		}
		if err := st.ReadTable(context.Background(), tb, f); err != nil {
			t.Fatal(err)
		}
		out[name] = tb.Rows()
	}
	return out
}

// A wide view served from the overview equals the samples aggregated on
// the same bucket grid, bucket by bucket.
func TestOverviewEqualsSamples(t *testing.T) {
	data, _, _, run := h200Bundle(t)
	b, err := ReadBundle(bytes.NewReader(data), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{cfg: Config{Store: b.Store()}, board: NewBoard()}
	tl, err := srv.timeline(context.Background(), run, "", "", "100")
	if err != nil {
		t.Fatal(err)
	}
	if tl.BucketNS%OverviewRes != 0 || tl.BucketNS < OverviewRes {
		t.Fatalf("bucket %d ns: not a whole number of overview slots", tl.BucketNS)
	}
	s := tl.Series[0]
	ps, _, err := analytics.Power(context.Background(), b.Store(), s.Device, tl.FromNS-bundleMargin, tl.ToNS+bundleMargin)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.T) < 50 {
		t.Fatalf("%d buckets", len(s.T))
	}
	for i, t0 := range s.T {
		lo, hi, sum, n := math.Inf(1), math.Inf(-1), 0.0, 0
		for _, p := range ps {
			if p.TS >= t0 && p.TS < t0+tl.BucketNS {
				w := float64(p.Power) / 1e3
				lo, hi, sum, n = math.Min(lo, w), math.Max(hi, w), sum+w, n+1
			}
		}
		if n == 0 || s.Min[i] != lo || s.Max[i] != hi || math.Abs(s.Mean[i]-sum/float64(n)) > 1e-9 {
			t.Fatalf("bucket %d at %d: overview %v/%v/%v, samples %v/%v/%v (%d)", i, t0, s.Min[i], s.Mean[i], s.Max[i], lo, sum/float64(n), hi, n)
		}
	}
	// Kept in the state, it comes back identical.
	p := newTestPlatform(t)
	if err := p.state.SaveOverview(context.Background(), run, srv.ovs.runs[run].ov); err != nil {
		t.Fatal(err)
	}
	back, ok, err := p.state.LoadOverview(context.Background(), run)
	if err != nil || !ok || !reflect.DeepEqual(back, srv.ovs.runs[run].ov) {
		t.Fatalf("kept overview: %v %v, equal %v", ok, err, reflect.DeepEqual(back, srv.ovs.runs[run].ov))
	}
	// A narrow view reads the samples themselves.
	narrow, err := srv.timeline(context.Background(), run, fmt.Sprint(tl.FromNS+100e9), fmt.Sprint(tl.FromNS+102e9), "2000")
	if err != nil || !narrow.Series[0].Raw {
		t.Fatalf("a 2 s view: %v, raw %v", err, narrow.Series[0].Raw)
	}
}
