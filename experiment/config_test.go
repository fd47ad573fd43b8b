package experiment

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/collectors/loadgen"
)

func parse(t *testing.T, y string) *Config {
	t.Helper()
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	return c
}

// Unknown keys are errors naming the key and its line, not ignored.
func TestStrictDecoding(t *testing.T) {
	_, err := Parse([]byte("experiment: x\nbackend:\n  kind: vllm\n  modle: m\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "modle") {
		t.Fatalf("got %v", err)
	}
	if _, err := Parse([]byte("experiment: x\n---\nexperiment: y\n")); err == nil {
		t.Fatal("two documents accepted")
	}
	if _, err := Parse(nil); err == nil {
		t.Fatal("empty file accepted")
	}
	if _, err := Parse([]byte("measurement: {baseline: 30}\n")); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestValidationNamesParameters(t *testing.T) {
	c := parse(t, `
backend: {kind: vllm, model: m, max_model_len: 1000}
workload:
  api: stream
  arrival: {process: gamma, rate: 5}
  dataset: {prompt_tokens: {dist: fixed, mean: 900}, output_tokens: {mean: 200}}
  sampling: {preset: wild, top_p: 1.5}
measurement: {cycles: -1}
collectors: {gpu: rocm, counter_cpu_budget: 4}
output: {store: sqlite}
`)
	var got []string
	for _, e := range c.Validate() {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		`workload.api: unknown "stream"`,
		"workload.arrival.burstiness: gamma arrivals need a positive coefficient",
		`workload.sampling.preset: unknown "wild"`,
		"workload.sampling.top_p: 1.5 outside [0, 1]",
		"workload.dataset: prompt plus output tokens can exceed backend.max_model_len 1000",
		"measurement.cycles: at least 1",
		`collectors.gpu: unknown "rocm"`,
		"collectors.counter_cpu_budget: 4 is a fraction of one core",
		`output.store: unknown "sqlite"`,
	} {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, want)
		}
		if !found {
			t.Errorf("missing %q in %q", want, got)
		}
	}
}

// A sweep variant overrides only what it names; an arrival override with a
// concurrency but no process becomes a closed loop.
func TestSweepOverrides(t *testing.T) {
	c := parse(t, `
backend: {kind: external, endpoint: "http://x", model: m}
workload:
  requests: 50
  arrival: {process: poisson, rate: 4}
  dataset: {prompt_tokens: {mean: 300}, output_tokens: {mean: 30}}
sweep:
  - name: closed
    workload: {arrival: {concurrency: 8}}
  - name: faster
    workload: {arrival: {rate: 16}, ignore_eos: false}
  - name: same
`)
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	runs, err := c.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("%d runs", len(runs))
	}
	if a := runs[0].Workload.Arrival; a.Process != loadgen.ArrivalConcurrency || a.Concurrency != 8 || runs[0].Workload.Requests != 50 {
		t.Fatalf("closed: %+v", runs[0].Workload)
	}
	if a := runs[1].Workload.Arrival; a.Process != loadgen.ArrivalPoisson || a.Rate != 16 || *runs[1].Workload.IgnoreEOS {
		t.Fatalf("faster: %+v", a)
	}
	if !*c.Workload.IgnoreEOS || !*runs[2].Workload.IgnoreEOS || runs[2].Workload.Dataset.PromptTokens.Mean != 300 {
		t.Fatal("an override wrote through to the base workload")
	}
	_, err = Parse([]byte("backend: {kind: external, endpoint: x, model: m}\nsweep:\n  - name: a\n    workload: {arival: {rate: 1}}\n"))
	if err == nil || !strings.Contains(err.Error(), "sweep[0].workload.arival: line 4: unknown setting (did you mean sweep[0].workload.arrival?)") {
		t.Fatalf("misspelt override: %v", err)
	}
}

// config show prints exactly what differs from the defaults.
func TestShowNonDefault(t *testing.T) {
	got := showYAML(t, "backend: {kind: vllm, model: m, precision: bfloat16}\nworkload: {requests: 100, arrival: {concurrency: 32}}\nmeasurement: {cycles: 3}\n")
	want := "backend.kind: vllm\nbackend.model: m\nbackend.precision: bf16\nworkload.arrival.concurrency: 32\n" +
		"# normalised backend.precision: \"bfloat16\" → \"bf16\"\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// showYAML is what config show prints for the experiment y: its values
// that differ from the defaults, after normalisation.
func showYAML(t *testing.T, y string) string {
	t.Helper()
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	notes := c.Normalize()
	var b strings.Builder
	if err := ShowNonDefault(&b, c, notes); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Every example experiment under deploy/experiments is valid.
func TestExamplesValid(t *testing.T) {
	files, _ := filepath.Glob("../deploy/experiments/*.yaml")
	if len(files) < 7 {
		t.Fatalf("%d example experiments", len(files))
	}
	kinds := map[string]bool{}
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		c.Normalize()
		if errs := c.ValidateStatic(); len(errs) > 0 { // their datasets are fetched by the user
			t.Errorf("%s: %v", f, errs)
		}
		kinds[c.Backend.Kind] = true
	}
	for _, k := range []string{"vllm", "tensorrt-llm", "sglang", "tgi", "llama.cpp", "pytorch", "external"} {
		if !kinds[k] {
			t.Errorf("no example for backend %s", k)
		}
	}
}

func TestShowRedactsSecrets(t *testing.T) {
	c := parse(t, "backend: {kind: vllm, model: m, env: {HF_TOKEN: hf_secret, CUDA_LAUNCH_BLOCKING: '1'}}\n")
	var b strings.Builder
	if err := ShowNonDefault(&b, c, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "hf_secret") || !strings.Contains(b.String(), "backend.env.HF_TOKEN: <redacted>") ||
		!strings.Contains(b.String(), "backend.env.CUDA_LAUNCH_BLOCKING: 1") {
		t.Fatalf("shown:\n%s", b.String())
	}
	if c.Backend.Env["HF_TOKEN"] != "hf_secret" {
		t.Fatal("the configuration itself was redacted")
	}
}

// TestRunDocument: the configuration stored with every run is versioned
// JSON whose keys are the experiment file's, so SQL over it finds fields
// by the names the YAML uses (Go field names used to be stored).
func TestRunDocument(t *testing.T) {
	c, err := Parse([]byte(`experiment: doc
backend: {kind: external, endpoint: "http://127.0.0.1:1", model: m, env: {HF_TOKEN: secret}}
workload:
  requests: 10
  arrival: {process: concurrency, concurrency: 4}
  dataset: {prompt_tokens: {mean: 32}, output_tokens: {mean: 8}}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	runs, err := c.Runs()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := c.RunDocument(runs[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	if m["version"] != float64(DocumentVersion) || m["run"] != "base" || m["experiment"] != "doc" {
		t.Errorf("document head: %v", m)
	}
	w, _ := m["workload"].(map[string]any)
	a, _ := w["arrival"].(map[string]any)
	if a["process"] != "concurrency" || a["concurrency"] != float64(4) {
		t.Errorf("workload.arrival: %v (document %s)", a, doc)
	}
	if strings.Contains(doc, `"Arrival"`) || strings.Contains(doc, `"Concurrency"`) {
		t.Errorf("Go field names in the stored configuration: %s", doc)
	}
	if strings.Contains(doc, "secret") {
		t.Errorf("a secret in the stored configuration: %s", doc)
	}
}

// TestShowListsWhole: a list of values differs from the default as a
// whole; element 0 being 0 does not hide it.
func TestShowListsWhole(t *testing.T) {
	got := showYAML(t, "backend: {kind: vllm, model: m}\ncollectors: {devices: [0, 1]}\n")
	if !strings.Contains(got, "collectors.devices: [0, 1]\n") || strings.Contains(got, "devices[1]") {
		t.Fatalf("shown:\n%s", got)
	}
}

// TestValidateChecksReferencedFiles: a missing dataset, trace or local LoRA
// path is a problem check-config reports (lem run used to fail 2 s in).
func TestValidateChecksReferencedFiles(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse([]byte(`backend: {kind: vllm, model: m, lora: [{name: a, path: ` + dir + `/no-adapter}]}
workload:
  requests: 4
  arrival: {process: trace, trace: ` + dir + `/no-trace.txt}
  dataset: {kind: jsonl, path: ` + dir + `/no-data.jsonl}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	var all []string
	for _, e := range c.Validate() {
		all = append(all, e.Error())
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{"backend.lora[0].path:", "workload.arrival.trace:", "workload.dataset.path:"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q among:\n%s", want, got)
		}
	}
}

// TestArrivalFieldsOfTheOtherProcess: an open-loop arrival with a
// concurrency (or a closed loop with a rate) is refused, naming the field;
// a Poisson variant of a closed-loop base drops the inherited concurrency
// (it used to be stored with the run as if it had shaped the load).
func TestArrivalFieldsOfTheOtherProcess(t *testing.T) {
	c, err := Parse([]byte("backend: {kind: vllm, model: m}\nworkload: {arrival: {process: poisson, rate: 3, concurrency: 4}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	var got []string
	for _, e := range c.Validate() {
		got = append(got, e.Error())
	}
	if !strings.Contains(strings.Join(got, "\n"), "workload.arrival.concurrency: only a closed loop") {
		t.Errorf("poisson with a concurrency: %v", got)
	}
	c, err = Parse([]byte(`backend: {kind: vllm, model: m}
workload: {arrival: {concurrency: 8}}
sweep:
  - name: closed
  - name: open
    workload: {arrival: {process: poisson, rate: 6}}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	runs, _ := c.Runs()
	if a := runs[1].Workload.Arrival; a.Concurrency != 0 || a.Rate != 6 || a.Process != "poisson" {
		t.Errorf("open variant: %+v", a)
	}
	if a := runs[0].Workload.Arrival; a.Concurrency != 8 || a.Process != "concurrency" {
		t.Errorf("closed variant: %+v", a)
	}
}

// TestParseNamesEveryProblem: unknown keys by dotted path with a
// suggestion, wrong types with the type wanted, all at once (the decoder
// stopped at the first and named Go types).
func TestParseNamesEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`backend:
  kind: vllm
  model: m
  vllm: {gpu_memory_utilisation: 0.9, max_num_seqs: lots}
workload:
  requests: many
  arrival: {concurrency: 4}
measurement: {cycles: 3, baseline: soon}
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"4 problem(s)",
		"measurement.baseline: line 8: want a duration (30s, 2m), got \"soon\"",
		"backend.vllm.gpu_memory_utilisation: line 4: unknown setting (did you mean backend.vllm.gpu_memory_utilization?)",
		"backend.vllm.max_num_seqs: line 4: want a whole number, got \"lots\"",
		"workload.requests: line 6: want a whole number, got \"many\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in:\n%v", want, err)
		}
	}
}

// TestSetOverrides: -set path=value overrides the file (creating groups
// where missing), is checked like the file (a wrong path or type names
// itself), and is what the runs store.
func TestSetOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "e.yaml")
	os.WriteFile(path, []byte("backend: {kind: vllm, model: m}\nworkload: {requests: 10, arrival: {concurrency: 4}}\n"), 0o644)
	c, err := LoadWith(path, []string{"backend.kind=sglang", "workload.arrival={process: poisson, rate: 4}", "measurement.cycles=5"})
	if err != nil {
		t.Fatal(err)
	}
	c.Normalize()
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if c.Backend.Kind != "sglang" || c.Workload.Arrival.Process != "poisson" || c.Workload.Arrival.Rate != 4 || c.Measurement.Cycles != 5 || c.Workload.Requests != 10 {
		t.Fatalf("%+v %+v %+v", c.Backend.Kind, c.Workload, c.Measurement.Cycles)
	}
	runs, _ := c.Runs()
	doc, _ := c.RunDocument(runs[0])
	if !strings.Contains(doc, `"kind":"sglang"`) || !strings.Contains(doc, `"rate":4`) {
		t.Errorf("stored configuration lacks the overrides: %s", doc)
	}
	for set, want := range map[string]string{
		"workload.arival.rate=4": "workload.arival: line",
		"workload.requests=many": "workload.requests: line",
		"backend.kind.x=1":       "backend.kind is a value in the file",
		"nonsense":               "want path=value",
	} {
		if _, err := LoadWith(path, []string{set}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("-set %s: %v, want %q", set, err, want)
		}
	}
}

// workload.adapter names an adapter of backend.lora; a misspelt one is
// refused with the adapters there are.
func TestAdapterMustBeServed(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"backend: {kind: pytorch, model: m, lora: [{name: a1, path: 'random:8'}]}\nworkload: {adapter: a2}\n", `workload.adapter: no adapter named "a2" in backend.lora (have a1)`},
		{"backend: {kind: vllm, model: m}\nworkload: {adapter: a1}\n", `workload.adapter: "a1", but backend.lora lists no adapter`},
		{"backend: {kind: pytorch, model: m, lora: [{name: a1, path: 'random:8'}]}\nworkload: {adapter: a1}\n", ""},
	} {
		cfg, err := Parse([]byte(c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Normalize()
		var msgs []string
		for _, e := range cfg.ValidateStatic() {
			msgs = append(msgs, e.Error())
		}
		got := strings.Join(msgs, "\n")
		if c.want == "" && strings.Contains(got, "adapter") || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.yaml, got, c.want)
		}
	}
}
