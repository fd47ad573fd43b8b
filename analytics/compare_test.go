package analytics

import (
	"errors"
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
