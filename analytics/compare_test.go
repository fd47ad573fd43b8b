package analytics

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestAggregateRejectsMixedBackends(t *testing.T) {
	mk := func(id, backend string, jpt ...float64) *RunResult {
		r := &RunResult{RunID: id, Backend: backend, Model: "m", Summary: map[string]Stat{}, Quality: QualityOK}
		for _, v := range jpt {
			r.Cycles = append(r.Cycles, CycleResult{JPerToken: v, EnergyJ: 100 * v, OutputTokens: 100, DurationS: 1, Quality: QualityOK})
		}
		summarise(r)
		return r
	}
	a, b, c := mk("a", "vllm", 1, 2), mk("b", "vllm", 3), mk("c", "pytorch", 9)
	_, err := Aggregate("x", []*RunResult{a, b, c})
	var mixed ErrMixedBackends
	if !errors.As(err, &mixed) || !strings.Contains(err.Error(), "pytorch: c") || !strings.Contains(err.Error(), "vllm: a, b") {
		t.Fatalf("got %v", err)
	}
	agg, err := Aggregate("vllm", []*RunResult{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if s := agg.Summary["j_per_token"]; s.N != 3 || math.Abs(s.Mean-2) > 1e-12 {
		t.Fatalf("pooled %+v", s)
	}
	b.Model = "other"
	if _, err := Aggregate("x", []*RunResult{a, b}); err == nil {
		t.Fatal("different models pooled")
	}
}

func TestConfigValueAndModelSize(t *testing.T) {
	cfg := `{"backend":{"Kind":"vllm","Precision":"bf16"},"workload":{"Arrival":{"Process":"concurrency","Concurrency":16}}}`
	if ConfigValue(cfg, "precision") != "bf16" || ConfigValue(cfg, "concurrency") != "16" || ConfigValue(cfg, "missing") != "" {
		t.Fatal(ConfigValue(cfg, "precision"), ConfigValue(cfg, "concurrency"))
	}
	for name, want := range map[string]float64{"meta-llama/Llama-3.1-8B-Instruct": 8, "random:llama-0.9b": 0.9, "Qwen2.5-500M": 0.5, "toy:": 0} {
		if got := ModelSize(name); got != want {
			t.Errorf("%s: %v, want %v", name, got, want)
		}
	}
}

// TestAggregateRefusesDifferentWorkloads: runs of one backend and model
// that measured different things (a closed loop of 8 and one of 2; a
// closed loop and a Poisson run) are not pooled: the error names the field.
// Names, seeds and the protocol's timing may differ.
func TestAggregateRefusesDifferentWorkloads(t *testing.T) {
	mk := func(id, cfg string) *RunResult {
		r := &RunResult{RunID: id, Backend: "vllm", Model: "m", Config: cfg, Devices: []string{"g"}, Summary: map[string]Stat{}, Quality: QualityOK}
		r.Cycles = []CycleResult{{JPerToken: 1, EnergyJ: 100, OutputTokens: 100, DurationS: 1, Quality: QualityOK}}
		summarise(r)
		return r
	}
	doc := func(run, arrival string, cycles int) string {
		return `{"version":1,"experiment":"e","run":"` + run + `","backend":{"kind":"vllm","model":"m","port":800` + fmt.Sprint(cycles) +
			`},"workload":{"requests":32,"arrival":` + arrival + `},"measurement":{"cycles":` + fmt.Sprint(cycles) + `,"seed":` + fmt.Sprint(cycles) + `}}`
	}
	c8 := mk("a", doc("x", `{"process":"concurrency","concurrency":8}`, 3))
	c8b := mk("b", doc("y", `{"process":"concurrency","concurrency":8}`, 5))
	c2 := mk("c", doc("z", `{"process":"concurrency","concurrency":2}`, 3))
	poisson := mk("d", doc("w", `{"process":"poisson","rate":6}`, 3))
	if _, err := Aggregate("ok", []*RunResult{c8, c8b}); err != nil {
		t.Fatalf("same workload, other names, seeds, ports and cycles: %v", err)
	}
	if _, err := Aggregate("x", []*RunResult{c8, c2}); err == nil || !strings.Contains(err.Error(), "workload.arrival.concurrency differs (8 against 2)") {
		t.Errorf("concurrency 8 and 2 pooled: %v", err)
	}
	if _, err := Aggregate("x", []*RunResult{c8, poisson}); err == nil || !strings.Contains(err.Error(), "workload.arrival.") {
		t.Errorf("closed loop and Poisson pooled: %v", err)
	}
	two := mk("e", doc("x", `{"process":"concurrency","concurrency":8}`, 3))
	two.Devices = []string{"g", "h"}
	if _, err := Aggregate("x", []*RunResult{c8, two}); err == nil || !strings.Contains(err.Error(), "devices differs") {
		t.Errorf("one GPU and two pooled: %v", err)
	}
}
