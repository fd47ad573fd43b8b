package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pqstore "github.com/llm-energy-measure/lem/store/parquet"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/llm-energy-measure/lem/deploy"
	"github.com/llm-energy-measure/lem/internal/bus"
	"github.com/llm-energy-measure/lem/internal/pacedserver"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
)

func TestMain(m *testing.M) {
	if os.Getenv(pacedserver.EnvAddrFile) != "" {
		// Run as the paced streaming server of BenchmarkRunAttachedStamps.
		os.Exit(pacedserver.Main())
	}
	code := testenv.Main(m)
	if lemBin.dir != "" {
		os.RemoveAll(lemBin.dir)
	}
	os.Exit(code)
}

// lemBin is the lem binary the tests that run real processes share,
// built once per test run, or the one named by LEM_TEST_BINARY (a compiled
// test binary run where Go is not installed, as on the GPU machine).
var lemBin struct {
	once     sync.Once
	dir, bin string
	err      error
}

func buildLem(t testing.TB) string {
	t.Helper()
	lemBin.once.Do(func() {
		if bin := os.Getenv("LEM_TEST_BINARY"); bin != "" {
			lemBin.bin, lemBin.err = filepath.Abs(bin)
			return
		}
		if lemBin.dir, lemBin.err = os.MkdirTemp("", "lem-bin-"); lemBin.err != nil {
			return
		}
		lemBin.bin = filepath.Join(lemBin.dir, "lem")
		if out, err := exec.Command("go", "build", "-o", lemBin.bin, ".").CombinedOutput(); err != nil {
			lemBin.err = fmt.Errorf("building lem: %v\n%s", err, out)
		}
	})
	if lemBin.err != nil {
		t.Fatal(lemBin.err)
	}
	return lemBin.bin
}

// The generated documents in docs/ must match what the binary produces;
// `make docs` refreshes them.
func TestGeneratedDocsUpToDate(t *testing.T) {
	for file, want := range map[string]string{"events.md": schemas.EventsMarkdown(), "cli.md": cliMarkdown(), "backends.md": backendsMarkdown(), "queries.md": deploy.QueriesMarkdown(), "experiment.schema.json": experimentSchema()} {
		got, err := os.ReadFile(filepath.Join("..", "..", "docs", file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("docs/%s is stale: run `make docs`", file)
		}
	}
}

func TestUnknownCommandAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("code %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run(nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "demo") {
		t.Fatalf("usage: %s", out.String())
	}
	errb.Reset()
	if code := run([]string{"ingest", "-bogus"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: code %d", code)
	}
}

// TestDemo drives the demo end to end on both stores with a short
// workload and checks that results and a dataset were produced.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	stores := map[string][]string{"parquet": {"-store", "parquet"}}
	if os.Getenv("LEM_E2E") != "0" {
		stores["clickhouse"] = []string{"-clickhouse", testenv.ClickHouse(t), "-database", "lem_demo_test"}
	}
	for name, extra := range stores {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"demo", "-out", dir, "-cycles", "2", "-requests", "8", "-output-tokens", "16",
				"-baseline", "1s", "-cooldown", "200ms", "-quiet", "-web", ""}, extra...)
			stdout := captureStdout(t, func() {
				var errb bytes.Buffer
				if code := run(args, os.Stdout, &errb); code != 0 {
					t.Fatalf("demo exited %d: %s", code, errb.String())
				}
			})
			for _, want := range []string{"J/token", "over 2 cycles", "simulated", "dataset:",
				// Through wire, ingest, store and analysis: the demo's chunks
				// carry the kernel's receive times, its requests the kernel's
				// transmit times (Linux).
				"carry the kernel's receive time", "send times: 16 of 16 requests the kernel's transmit time"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("demo output lacks %q:\n%s", want, stdout)
				}
			}
			for _, f := range []string{"README.md", "results.json", "data/requests/part-00000.parquet", "data/power_samples/part-00000.parquet"} {
				if _, err := os.Stat(filepath.Join(dir, "dataset", f)); err != nil {
					t.Error(err)
				}
			}
			card, _ := os.ReadFile(filepath.Join(dir, "dataset", "README.md"))
			if !strings.HasPrefix(string(card), "---\npretty_name:") || !strings.Contains(string(card), "config_name: requests") {
				t.Errorf("dataset card:\n%s", card)
			}
			if name != "parquet" {
				return
			}
			// Equal-share attribution on request, written back.
			var errb bytes.Buffer
			out := captureStdout(t, func() {
				if code := run([]string{"analyze", "-parquet", filepath.Join(dir, "store"), "-attribution", "equal-share", "-write"}, os.Stdout, &errb); code != 0 {
					t.Fatalf("analyze: %s", errb.String())
				}
			})
			if !strings.Contains(out, "over 2 cycles") {
				t.Errorf("analyze output:\n%s", out)
			}
			re := schemas.NewRequestEnergyRows()
			if err := pqstore.ReadTable(filepath.Join(dir, "store"), re.Table()); err != nil || re.Table().Rows() == 0 || re.Method.V[0] != "equal-share" {
				t.Errorf("request_energy after -attribution equal-share: %v, %d rows", err, re.Table().Rows())
			}
			// lem export, every format, from the demo's store.
			m := regexp.MustCompile(`run (lem-demo-\S+):`).FindStringSubmatch(stdout)
			if m == nil {
				t.Fatalf("no run id in:\n%s", stdout)
			}
			for format, want := range map[string]string{"parquet": "power_samples/part-00000.parquet", "arrow": "tokens.arrow",
				"csv": "requests.csv", "hf": "data/runs/part-00000.parquet"} {
				out := filepath.Join(dir, "export-"+format)
				var errb bytes.Buffer
				if code := run([]string{"export", "-parquet", filepath.Join(dir, "store"), "-run", m[1], "-format", format, "-out", out, "-quiet"},
					io.Discard, &errb); code != 0 {
					t.Fatalf("export %s: %s", format, errb.String())
				}
				if _, err := os.Stat(filepath.Join(out, want)); err != nil {
					t.Errorf("export %s: %v", format, err)
				}
			}
		})
	}
}

func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		done <- b.String()
	}()
	defer func() { os.Stdout = old }()
	f()
	w.Close()
	os.Stdout = old
	return <-done
}

// TestAgentPublishesAndServesMetrics runs `lem agent -sim` against a NATS
// server and reads its /metrics while it runs.
func TestAgentPublishesAndServesMetrics(t *testing.T) {
	emb, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	nc, _ := emb.Connect("check")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := bus.EnsureStreams(context.Background(), js, bus.StreamConfig{}); err != nil { // the backbone's job
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	maddr := l.Addr().String()
	l.Close()
	done := make(chan int, 1)
	go func() {
		var out, errb bytes.Buffer
		done <- run([]string{"agent", "-sim", "-nats", emb.ClientURL(), "-duration", "2500ms", "-publish-interval", "200ms",
			"-metrics", maddr, "-spool", t.TempDir(), "-quiet"}, &out, &errb)
	}()
	var body string
	for i := 0; i < 40 && !strings.Contains(body, "lem_agent_published_messages_total "); i++ {
		time.Sleep(100 * time.Millisecond)
		if resp, err := http.Get("http://" + maddr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
	}
	for _, m := range []string{"lem_agent_published_messages_total", "lem_agent_spool_events 0", "process_cpu_seconds_total"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("agent exited %d", code)
	}
	s, err := js.Stream(context.Background(), bus.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(context.Background())
	if info.State.Msgs < 10 {
		t.Fatalf("stream holds %d messages after a 2.5 s agent run", info.State.Msgs)
	}
}

// TestDemoStartsThePlatform: make demo ends with the results platform
// running (a process of its own, here the built binary), the demo run on
// its leaderboard marked simulated and recomputed, its page and timeline
// served; a second demo in the same directory replaces it.
func TestDemoStartsThePlatform(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	bin := buildLem(t)
	out := filepath.Join(dir, "demo")
	demo := func() (string, string) {
		t.Helper()
		cmd := exec.Command(bin, "demo", "-out", out, "-store", "parquet", "-cycles", "1", "-requests", "8", "-output-tokens", "16",
			"-baseline", "1s", "-cooldown", "200ms", "-quiet", "-web", "127.0.0.1:0")
		res, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("demo: %v\n%s", err, res)
		}
		m := regexp.MustCompile(`the results platform is at (http://\S+/) `).FindSubmatch(res)
		run := regexp.MustCompile(`run (lem-demo-\S+):`).FindSubmatch(res)
		if m == nil || run == nil {
			t.Fatalf("no platform address or run in:\n%s", res)
		}
		return string(m[1]), string(run[1])
	}
	pidFile := filepath.Join(out, "web", "pid")
	defer func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			var pid int
			fmt.Sscan(string(b), &pid)
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}()
	url, run := demo()
	check := func(url, run string) {
		t.Helper()
		var lb struct {
			Total int
			Rows  []struct {
				RunID        string `json:"run_id"`
				Simulated    bool
				Verification string
				JPerToken    *float64 `json:"j_per_token"`
			}
		}
		getJSONURL(t, url+"api/leaderboard?workload=*", &lb)
		if lb.Total != 1 || lb.Rows[0].RunID != run || !lb.Rows[0].Simulated || lb.Rows[0].Verification != "recomputed" || lb.Rows[0].JPerToken == nil {
			t.Fatalf("leaderboard: %+v", lb)
		}
		var tl struct{ Series []struct{ N int } }
		getJSONURL(t, url+"api/runs/"+run+"/timeline", &tl)
		if len(tl.Series) != 1 || tl.Series[0].N == 0 {
			t.Fatalf("timeline: %+v", tl)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), "<script type=\"module\" src=\"/assets/app-") {
			t.Fatalf("the front end is not served (built into the binary?): %s", page)
		}
	}
	check(url, run)
	first, _ := os.ReadFile(pidFile)
	// Again: the earlier platform is stopped, the new one shows only the new run.
	url2, run2 := demo()
	check(url2, run2)
	var pid int
	fmt.Sscan(string(first), &pid)
	if syscall.Kill(pid, 0) == nil {
		t.Fatalf("the first demo's platform (pid %d) still runs", pid)
	}
}

func getJSONURL(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
