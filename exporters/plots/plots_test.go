package plots

import (
	"encoding/xml"
	"flag"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llm-energy-measure/lem/analytics"
)

// Every figure is written as a PNG that decodes and an SVG that parses,
// also with a missing value (NaN CI of a one-cycle run).
func TestWriteFigures(t *testing.T) {
	mk := func(id, backend, model, cfg string, jpt ...float64) analytics.Comparison {
		r := &analytics.RunResult{RunID: id, Backend: backend, Model: model, Config: cfg, Summary: map[string]analytics.Stat{}}
		for _, v := range jpt {
			r.Cycles = append(r.Cycles, analytics.CycleResult{JPerToken: v, TokensPerJ: 1 / v, OutputTokens: 1000, DurationS: 2})
		}
		a, err := analytics.Aggregate(id, []*analytics.RunResult{r})
		if err != nil {
			t.Fatal(err)
		}
		a.RunID = id
		return analytics.NewComparison(a)
	}
	cs := []analytics.Comparison{
		mk("v16", "vllm", "Llama-8B", `{"precision":"bf16","concurrency":16}`, 0.2, 0.25, 0.22),
		mk("v64", "vllm", "Llama-8B", `{"precision":"fp8","concurrency":64}`, 0.1, 0.12),
		mk("p16", "pytorch", "Llama-8B", `{"precision":"bf16","concurrency":16}`, 0.9),
	}
	dir := t.TempDir()
	files, err := Write(dir, cs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2*len(Files) {
		t.Fatalf("%d files", len(files))
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".png") {
			img, err := png.Decode(fh)
			if err != nil || img.Bounds().Dx() < 300 {
				t.Errorf("%s: %v", f, err)
			}
		} else {
			var doc struct {
				XMLName xml.Name
			}
			if err := xml.NewDecoder(fh).Decode(&doc); err != nil || doc.XMLName.Local != "svg" {
				t.Errorf("%s: %v (%s)", f, err, doc.XMLName.Local)
			}
		}
		fh.Close()
	}
	// The heat map's cells: concurrency 16 × bf16 averages the two runs
	// there; empty cells are NaN (drawn blank).
	g := newGrid(cs)
	want16bf := (0.67/3 + 0.9) / 2
	if strings.Join(g.xs, ",") != "16 in flight,64 in flight" || strings.Join(g.ys, ",") != "bf16,fp8" ||
		math.Abs(g.Z(0, 0)-want16bf) > 1e-9 || math.Abs(g.Z(1, 1)-0.11) > 1e-9 || !math.IsNaN(g.Z(0, 1)) || !math.IsNaN(g.Z(1, 0)) {
		t.Fatalf("grid %v × %v: %v", g.xs, g.ys, g.z)
	}
}

var update = flag.Bool("update", false, "rewrite the example figures in docs/figures")

// comparisons of a plausible study: two backends, three loads (two closed
// loops and a Poisson open loop), two precisions, a run of two cycles (no
// interval) and a run without energy (no power collected).
func exampleComparisons(t *testing.T, simulated bool) []analytics.Comparison {
	mk := func(id, backend, model, cfg string, tokS float64, jpt ...float64) analytics.Comparison {
		r := &analytics.RunResult{RunID: id, Backend: backend, Model: model, Config: cfg, Summary: map[string]analytics.Stat{}, Simulated: simulated}
		for i, v := range jpt {
			d := 20 + float64(i%2)
			c := analytics.CycleResult{Cycle: uint32(i), JPerToken: v, TokensPerJ: 1 / v, OutputTokens: uint64(tokS * d * (1 + 0.02*float64(i))), DurationS: d}
			if math.IsNaN(v) {
				c.TokensPerJ = math.NaN()
			}
			r.Cycles = append(r.Cycles, c)
		}
		a, err := analytics.Aggregate(id, []*analytics.RunResult{r})
		if err != nil {
			t.Fatal(err)
		}
		a.RunID, a.Simulated = id, simulated
		return analytics.NewComparison(a)
	}
	return []analytics.Comparison{
		mk("vllm-c8-bf16", "vllm", "Llama-3.1-8B", `{"precision":"bf16","concurrency":8}`, 610, 0.31, 0.29, 0.30, 0.32),
		mk("vllm-c32-bf16", "vllm", "Llama-3.1-8B", `{"precision":"bf16","concurrency":32}`, 1850, 0.12, 0.13, 0.125),
		mk("vllm-c32-fp8", "vllm", "Llama-3.1-8B", `{"precision":"fp8","concurrency":32}`, 2400, 0.09, 0.095, 0.092),
		mk("vllm-poisson6-bf16", "vllm", "Llama-3.1-8B", `{"precision":"bf16","process":"poisson","rate":6}`, 390, 0.42, 0.47, 0.40),
		mk("pytorch-c8-bf16", "pytorch", "Llama-3.1-8B", `{"precision":"bf16","concurrency":8}`, 180, 0.95, 1.05),
		mk("sglang-c32-bf16", "sglang", "Qwen2.5-1.5B", `{"precision":"bf16","concurrency":32}`, 5200, 0.05, 0.052, 0.049),
		mk("tgi-c8-nopower", "tgi", "Llama-3.1-8B", `{"precision":"bf16","concurrency":8}`, 600, math.NaN(), math.NaN(), math.NaN()),
	}
}

// The example figures of docs/figures, drawn from the same code; a run
// without energy is "no data" (never a bar or a box at 0), an open loop is
// labelled by its process and rate (never as a concurrency), and
// simulated data carry the watermark. `go test ./exporters/plots -run
// Example -update` rewrites them.
func TestExampleFigures(t *testing.T) {
	for _, sim := range []bool{false, true} {
		dir := t.TempDir()
		cs := exampleComparisons(t, sim)
		files, err := Write(dir, cs)
		if err != nil {
			t.Fatal(err)
		}
		svg, _ := os.ReadFile(filepath.Join(dir, Files[1]+".svg"))
		if strings.Count(string(svg), "no data") != 1 {
			t.Errorf("bars: the run without energy is not marked \"no data\" once")
		}
		hm, _ := os.ReadFile(filepath.Join(dir, Files[3]+".svg"))
		for _, want := range []string{"poisson 6/s", "8 in flight", "J per output token", "0.0923 J"} {
			if !strings.Contains(string(hm), want) {
				t.Errorf("heat map lacks %q", want)
			}
		}
		for _, f := range Files {
			b, _ := os.ReadFile(filepath.Join(dir, f+".svg"))
			if got := strings.Contains(string(b), "SIMULATED"); got != sim {
				t.Errorf("%s: watermark %v for simulated=%v", f, got, sim)
			}
		}
		if *update {
			out := "../../docs/figures"
			if sim {
				out = filepath.Join(out, "simulated")
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				if strings.HasSuffix(f, ".png") {
					b, _ := os.ReadFile(f)
					if err := os.WriteFile(filepath.Join(out, filepath.Base(f)), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}
