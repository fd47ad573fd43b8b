package plots

import (
	"encoding/xml"
	"image/png"
	"math"
	"os"
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
	if strings.Join(g.xs, ",") != "16,64" || strings.Join(g.ys, ",") != "bf16,fp8" ||
		math.Abs(g.Z(0, 0)-want16bf) > 1e-9 || math.Abs(g.Z(1, 1)-0.11) > 1e-9 || !math.IsNaN(g.Z(0, 1)) || !math.IsNaN(g.Z(1, 0)) {
		t.Fatalf("grid %v × %v: %v", g.xs, g.ys, g.z)
	}
}
