package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/platform"
	pqstore "github.com/llm-energy-measure/lem/store/parquet"

	"github.com/rs/zerolog"

	"github.com/llm-energy-measure/lem/analytics"
	"github.com/llm-energy-measure/lem/experiment"
	"github.com/llm-energy-measure/lem/internal/testenv"
	"github.com/llm-energy-measure/lem/schemas"
	"github.com/llm-energy-measure/lem/store"
)

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runExperiment runs an experiment file through `lem run` in-process and
// returns its stdout and the results.
func runExperiment(t *testing.T, yaml string) (string, []*analytics.RunResult, *experiment.Config) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "exp.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, notes, err := loadExperiment(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	e := &experimentRun{cfg: cfg, notes: notes, log: zerolog.Nop(), quiet: true, out: &out}
	res, err := e.execute(context.Background())
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	return out.String(), res, cfg
}

// `lem run` launches lem's reference server (its protocol-test model: no
// torch here), runs a two-configuration sweep with the simulated GPU, and
// stores requests with the server's own timings, tokens and the server's
// scraped metrics; the results cover both configurations.
func TestRunReferenceServerSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	out, res, cfg := runExperiment(t, fmt.Sprintf(`
experiment: ref-sweep
out: %s
backend: {kind: pytorch, model: "toy:", port: %d, pytorch: {max_batch_size: 4, batching: dynamic}}
workload:
  requests: 10
  warmup: 2
  arrival: {concurrency: 4}
  dataset: {prompt_tokens: {dist: uniform, min: 10, max: 40}, output_tokens: {mean: 12}}
sweep:
  - name: closed4
  - name: open
    workload: {arrival: {process: poisson, rate: 40}}
measurement: {cycles: 2, baseline: 1s, settle: 500ms, cooldown: {min: 200ms, max: 1s}}
collectors: {gpu: sim, rapl: "off", scrape: {interval: 200ms}}
`, dir, freePort(t)))
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		// The server's own metrics, scraped during the cycles, give the
		// run's context: the reference server batches up to 4.
		if r.Context == nil || !(r.Context.Derived["mean_batch_size"] >= 1 && r.Context.Derived["mean_batch_size"] <= 4) {
			t.Errorf("%s: context %+v", r.RunID, r.Context)
		}
		if l := r.Latency["ttft_ms"]; len(l) != 3 || !(l[0].Low <= l[0].Value && l[0].Value <= l[0].High) {
			t.Errorf("%s: TTFT percentiles %+v", r.RunID, l)
		}
		if len(r.Cycles) != 2 || r.Cycles[0].Requests != 10 || r.Cycles[0].Failed != 0 || r.Cycles[0].OutputTokens != 120 || !(r.Cycles[0].EnergyJ > 0) {
			t.Fatalf("%s: %+v", r.RunID, r.Cycles)
		}
		if len(r.BaselineW) != 1 {
			t.Errorf("%s: no idle baseline", r.RunID)
		}
	}
	for _, want := range []string{"configurations (mean ± 95% CI over cycles)", "closed4", "open", "simulated"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The closing table of the sweep keeps the simulated mark on each line.
	if i := strings.Index(out, "configurations (mean"); i < 0 || strings.Count(out[i:], "simulated") < 2 {
		t.Errorf("the sweep table drops the simulated mark:\n%s", out[max(i, 0):])
	}
	// `lem analyze` of the sweep's store closes with the same table (it
	// once printed only the runs one by one).
	var errb bytes.Buffer
	aout := captureStdout(t, func() {
		if code := run([]string{"analyze", "-parquet", cfg.Output.Parquet}, os.Stdout, &errb); code != 0 {
			t.Fatalf("analyze: %s", errb.String())
		}
	})
	if i := strings.Index(aout, "configurations (mean"); i < 0 || !strings.Contains(aout[i:], "closed4") || !strings.Contains(aout[i:], "open") {
		t.Errorf("lem analyze of a sweep has no configurations table naming closed4 and open:\n%s", aout)
	}
	st := store.Parquet(cfg.Output.Parquet)
	reqs, err := st.Requests(context.Background(), res[0].RunID)
	if err != nil || len(reqs) != 20 {
		t.Fatalf("%d requests, %v", len(reqs), err)
	}
	for _, q := range reqs {
		if q.ServerDecode <= 0 || q.PromptTokens == 0 {
			t.Fatalf("request without the server's timings or usage: %+v", q)
		}
	}
	m := schemas.NewRows(schemas.KindMetric).(*schemas.MetricRows)
	if err := pqstore.ReadTable(cfg.Output.Parquet, m.Table()); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, name := range m.Name.V {
		if name == "lem_ref:generation_tokens_total" && m.Value.V[i] > 0 {
			seen[m.RunID.V[i]] = true
		}
	}
	if !seen[res[0].RunID] || !seen[res[1].RunID] {
		t.Fatalf("server metrics scraped for %v", seen)
	}
	if _, err := os.Stat(filepath.Join(dir, "lem-pyserver.py")); err != nil {
		t.Fatal(err)
	}
}

// A sweep over a LoRA adapter of the reference server: the adapter's
// configuration asks for it by name on every request (the server counts
// them per adapter in /metrics, which lem scrapes), the base's never; the
// stored configuration says which adapter a run measured, so the two are
// never pooled.
func TestRunLoRASweep(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	_, res, cfg := runExperiment(t, fmt.Sprintf(`
experiment: lora
out: %s
backend: {kind: pytorch, model: "toy:", port: %d, lora: [{name: sql, path: "random:8"}], pytorch: {max_batch_size: 4}}
workload:
  requests: 6
  warmup: 1
  arrival: {concurrency: 2}
  dataset: {prompt_tokens: {dist: uniform, min: 10, max: 40}, output_tokens: {mean: 8}}
sweep:
  - name: base
  - name: adapter
    workload: {adapter: sql}
measurement: {cycles: 1, baseline: 500ms, settle: 200ms, cooldown: {min: 100ms, max: 500ms}}
collectors: {gpu: sim, rapl: "off", scrape: {interval: 200ms}}
`, dir, freePort(t)))
	if len(res) != 2 {
		t.Fatalf("%d results", len(res))
	}
	if a := analytics.ConfigValue(res[1].Config, "adapter"); a != "sql" || analytics.ConfigValue(res[0].Config, "adapter") != "" {
		t.Errorf("stored adapters: base %q, adapter run %q", analytics.ConfigValue(res[0].Config, "adapter"), a)
	}
	m := schemas.NewRows(schemas.KindMetric).(*schemas.MetricRows)
	if err := pqstore.ReadTable(cfg.Output.Parquet, m.Table()); err != nil {
		t.Fatal(err)
	}
	// The server's cumulative count of adapter requests, over each run's
	// scrapes (the warm-ups of every configuration come first, so 1 before
	// any cycle): never above 1 during the base run's cycle, 7 (6 + the
	// warm-up) by the adapter run's last scrape.
	hi := map[string]float64{}
	for i, name := range m.Name.V {
		if name == "lem_ref:lora_requests_total" && m.Label.V[i] == `adapter="sql"` {
			hi[m.RunID.V[i]] = max(hi[m.RunID.V[i]], m.Value.V[i])
		}
	}
	if hi[res[0].RunID] > 1 || hi[res[1].RunID] != 7 {
		t.Fatalf("adapter requests seen by the server: at most %g during the base run (want ≤ 1), %g after the adapter's (want 7)", hi[res[0].RunID], hi[res[1].RunID])
	}
	if _, err := analytics.Aggregate("both", res); err == nil || !strings.Contains(err.Error(), "adapter") {
		t.Errorf("pooling the base and the adapter runs: %v (want a refusal naming the adapter)", err)
	}
}

// `lem run` launches llama.cpp's real llama-server (CPU, tiny model) from
// its native configuration and measures it: exact prompt lengths through
// its tokenizer, its per-request timings, its /metrics.
func TestRunLaunchesLlamaServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root, model := testenv.LlamaRoot(t)
	_, res, cfg := runExperiment(t, fmt.Sprintf(`
experiment: llamacpp
out: %s
backend:
  kind: llama.cpp
  model: %s
  served_model_name: tiny
  port: %d
  command: [chroot, %s, llama-server]
  llama_cpp: {ctx_size: 4096, parallel: 4}
workload:
  requests: 8
  arrival: {concurrency: 4}
  dataset: {prompt_tokens: {mean: 64}, output_tokens: {mean: 16}}
measurement: {cycles: 2, baseline: 1s, settle: 200ms, cooldown: {min: 200ms, max: 1s}}
collectors: {gpu: sim, rapl: "off"}
`, t.TempDir(), model, freePort(t), root))
	r := res[0]
	if len(r.Cycles) != 2 || r.Cycles[1].Requests != 8 || r.Cycles[1].Failed != 0 || r.Cycles[1].OutputTokens != 128 {
		t.Fatalf("%+v", r.Cycles)
	}
	reqs, _ := (store.Parquet(cfg.Output.Parquet)).Requests(context.Background(), r.RunID)
	for _, q := range reqs {
		// 64 tokens built with the server's tokenizer (it may add BOS).
		if q.PromptTokens < 64 || q.PromptTokens > 65 || q.ServerPrefill <= 0 || q.ServerDecode <= 0 {
			t.Fatalf("request %+v", q)
		}
	}
	// The model's parameter count, as the server reported it, travels with
	// the run (and sizes it on the platform's scatter).
	evs, err := store.Parquet(cfg.Output.Parquet).RunEvents(context.Background(), r.RunID)
	if err != nil || len(evs) == 0 {
		t.Fatal(err)
	}
	var inv struct {
		N   float64 `json:"model_parameters"`
		Src string  `json:"model_parameters_source"`
	}
	json.Unmarshal([]byte(evs[0].Inventory), &inv)
	if e := platform.NewEntry(r, evs[0], nil); inv.N < 1e6 || !strings.Contains(inv.Src, "/v1/models") || e.Parameters == nil || *e.Parameters != inv.N {
		t.Errorf("parameters %v from %q; leaderboard entry %v", inv.N, inv.Src, e.Parameters)
	}
}

func TestCheckConfigAndShow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: llama.cpp, model: m.gguf, precision: bfloat16, quantization: {enabled: true}}\n"), 0o644)
	var errb bytes.Buffer
	if code := run([]string{"check-config", path}, os.Stdout, &errb); code != 1 ||
		!strings.Contains(errb.String(), "backend.quantization.bits: quantisation is enabled without a bit width") ||
		!strings.Contains(errb.String(), "backend.precision: precision fp32/fp16/bf16 is not supported by llama.cpp") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m, precision: bfloat16}\n"), 0o644)
	outs := captureStdout(t, func() {
		if code := run([]string{"config", "show", path}, os.Stdout, &errb); code != 0 {
			t.Fatalf("config show: %s", errb.String())
		}
	})
	if outs != "backend.kind: vllm\nbackend.model: m\nbackend.precision: bf16\n# normalised backend.precision: \"bfloat16\" → \"bf16\"\n" {
		t.Fatalf("config show:\n%s", outs)
	}
}

// TestCheckConfigWarnsTooFewCycles: fewer than three cycles pass (the file
// is valid) with a warning that no interval will be stated.
func TestCheckConfigWarnsTooFewCycles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m}\nmeasurement: {cycles: 1}\n"), 0o644)
	var errb bytes.Buffer
	out := captureStdout(t, func() {
		if code := run([]string{"check-config", path}, os.Stdout, &errb); code != 0 {
			t.Fatalf("check-config: %s", errb.String())
		}
	})
	if !strings.Contains(out, "warning: measurement.cycles: 1 cycle(s) give no confidence interval (too_few_cycles)") {
		t.Fatalf("no warning:\n%s", out)
	}
}

// TestRunWithoutPower: `collectors.gpu: none` (documented) is a
// latency-only run: it completes, every energy figure is absent (— in the
// table) and flagged no_power; it used to panic in attribution.
func TestRunWithoutPower(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	out, res, _ := runExperiment(t, fmt.Sprintf(`
experiment: no-power
out: %s
backend: {kind: pytorch, model: "toy:", port: %d}
workload: {requests: 4, arrival: {concurrency: 2}, dataset: {prompt_tokens: {mean: 8}, output_tokens: {mean: 4}}}
measurement: {cycles: 3, baseline: 200ms, settle: 100ms, cooldown: {min: 50ms, max: 100ms}}
collectors: {gpu: none, rapl: "off", scrape: {enabled: false}}
`, t.TempDir(), freePort(t)))
	if len(res) != 1 || len(res[0].Cycles) != 3 {
		t.Fatalf("results %+v", res)
	}
	for _, c := range res[0].Cycles {
		if !math.IsNaN(c.EnergyJ) || c.Quality != analytics.QualityNoPower || c.Requests != 4 || !(c.TTFTp50 > 0) {
			t.Errorf("cycle %d: energy %v, quality %s, %d requests, TTFT %v", c.Cycle, c.EnergyJ, c.Quality, c.Requests, c.TTFTp50)
		}
	}
	if !strings.Contains(out, "no_power") {
		t.Errorf("output does not say there is no power:\n%s", out)
	}
}

// TestFlagsAfterArguments: `lem run FILE -dry-run` works as `lem run
// -dry-run FILE` (it used to print the usage with exit code 2).
func TestFlagsAfterArguments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m}\n"), 0o644)
	var errb bytes.Buffer
	out := captureStdout(t, func() {
		if code := run([]string{"run", path, "-dry-run"}, os.Stdout, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	})
	if !strings.Contains(out, "launch: vllm serve m") {
		t.Fatalf("no plan:\n%s", out)
	}
}

// TestLoggingFlagsEverywhere: -quiet, -verbose and -log-format are taken
// by every command, also before the command's name (lem --verbose run …
// was "unknown command").
func TestLoggingFlagsEverywhere(t *testing.T) {
	for _, n := range names() {
		fs := flag.NewFlagSet(n, flag.ContinueOnError)
		setupCommand(commands[n], fs)
		for _, f := range []string{"quiet", "verbose", "log-format"} {
			if fs.Lookup(f) == nil {
				t.Errorf("lem %s has no -%s", n, f)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m}\n"), 0o644)
	var errb bytes.Buffer
	captureStdout(t, func() {
		for _, args := range [][]string{{"--verbose", "check-config", path}, {"-log-format", "json", "check-config", path},
			{"--log-format=console", "check-config", path, "-quiet"}} {
			if code := run(args, os.Stdout, &errb); code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, errb.String())
			}
		}
	})
}

// TestRunsList: `lem runs` lists the runs of a store with their written
// results, filters them, and `lem runs show` prints one; an unknown id is
// an error naming it.
func TestRunsList(t *testing.T) {
	dir := t.TempDir()
	var errb bytes.Buffer
	captureStdout(t, func() {
		if code := run([]string{"demo", "-out", dir, "-store", "parquet", "-web", "", "-cycles", "3", "-requests", "4", "-baseline", "500ms",
			"-cooldown", "100ms", "-quiet"}, os.Stdout, &errb); code != 0 {
			t.Fatalf("demo: %s", errb.String())
		}
	})
	store := filepath.Join(dir, "store")
	out := captureStdout(t, func() {
		if code := run([]string{"runs", "-parquet", store}, os.Stdout, &errb); code != 0 {
			t.Fatalf("runs: %s", errb.String())
		}
	})
	if !strings.Contains(out, "lem-demo-") || !strings.Contains(out, "simulated") || !strings.Contains(out, "1 run(s)") ||
		!strings.Contains(out, " ± ") {
		t.Fatalf("runs:\n%s", out)
	}
	out = captureStdout(t, func() {
		if code := run([]string{"runs", "-parquet", store, "-backend", "vllm"}, os.Stdout, &errb); code != 0 {
			t.Fatalf("runs: %s", errb.String())
		}
	})
	if !strings.Contains(out, "0 run(s)") {
		t.Errorf("filter:\n%s", out)
	}
	id := regexp.MustCompile(`lem-demo-\S+`).FindString(captureStdout(t, func() { run([]string{"runs", "-parquet", store}, os.Stdout, &errb) }))
	out = captureStdout(t, func() {
		if code := run([]string{"runs", "show", id, "-parquet", store}, os.Stdout, &errb); code != 0 {
			t.Fatalf("runs show: %s", errb.String())
		}
	})
	if !strings.Contains(out, `"version": 1`) || !strings.Contains(out, "cycle 2  end") {
		t.Errorf("runs show:\n%s", out)
	}
	errb.Reset()
	if code := run([]string{"runs", "show", "nope", "-parquet", store}, os.Stdout, &errb); code != 1 || !strings.Contains(errb.String(), "no run nope") {
		t.Errorf("unknown id: %d %s", code, errb.String())
	}
}

// TestSetAndBackendFlags: -set and -backend override the file for run,
// check-config and config show, checked like the file.
func TestSetAndBackendFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m}\nworkload: {arrival: {concurrency: 4}}\n"), 0o644)
	var errb bytes.Buffer
	out := captureStdout(t, func() {
		if code := run([]string{"check-config", "-backend", "sglang", "-set", "workload.arrival.concurrency=9", path}, os.Stdout, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if code := run([]string{"config", "show", path, "-set", "workload.arrival.concurrency=9"}, os.Stdout, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		if code := run([]string{"run", "-dry-run", "-backend", "sglang", path}, os.Stdout, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	})
	for _, want := range []string{"ok (sglang,", "workload.arrival.concurrency: 9", "launch: python3 -m sglang.launch_server"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	errb.Reset()
	if code := run([]string{"check-config", "-set", "workload.arival.rate=4", path}, os.Stdout, &errb); code != 1 ||
		!strings.Contains(errb.String(), "workload.arival: line") {
		t.Errorf("a misspelt -set: exit %d, %s", code, errb.String())
	}
}
