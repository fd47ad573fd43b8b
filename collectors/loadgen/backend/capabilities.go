package backend

import (
	"fmt"
	"io"
	"strings"
)

// A Capability is one feature a configuration can ask for. Which backends
// lack it, why and what instead, each backend's Plugin says
// (Plugin.Unsupported); the two are the single source for validation and
// for docs/backends.md.
type Capability struct {
	Feature string
	// Used reports whether a configuration asks for the feature, and the
	// parameter that does.
	Used func(c *Config) (bool, string)
}

// Features, by the names plugins refer to them.
const (
	FeaturePrecision        = "precision fp32/fp16/bf16"
	FeatureFP8              = "precision fp8"
	FeatureQuantization     = "weight quantisation (awq, gptq, fp8, bitsandbytes …)"
	FeatureBitsAndBytes     = "bitsandbytes 4/8-bit"
	FeatureTensorParallel   = "tensor parallel"
	FeaturePipelineParallel = "pipeline parallel"
	FeatureDataParallel     = "data parallel (replicas in one server)"
	FeatureLoRA             = "LoRA adapters"
	FeatureSpeculative      = "speculative decoding"
)

// Capabilities is the matrix, in documentation order.
var Capabilities = []Capability{
	{Feature: FeaturePrecision,
		Used: func(c *Config) (bool, string) {
			return c.Precision != "" && c.Precision != "fp8", "backend.precision"
		}},
	{Feature: FeatureFP8,
		Used: func(c *Config) (bool, string) { return c.Precision == "fp8", "backend.precision" }},
	{Feature: FeatureQuantization,
		Used: func(c *Config) (bool, string) {
			return c.Quantization != nil && c.Quantization.Enabled, "backend.quantization"
		}},
	{Feature: FeatureBitsAndBytes,
		Used: func(c *Config) (bool, string) {
			return c.Quantization != nil && c.Quantization.Method == "bitsandbytes", "backend.quantization.method"
		}},
	{Feature: FeatureTensorParallel,
		Used: func(c *Config) (bool, string) { return c.Parallelism.Tensor > 1, "backend.parallelism.tensor" }},
	{Feature: FeaturePipelineParallel,
		Used: func(c *Config) (bool, string) { return c.Parallelism.Pipeline > 1, "backend.parallelism.pipeline" }},
	{Feature: FeatureDataParallel,
		Used: func(c *Config) (bool, string) { return c.Parallelism.Data > 1, "backend.parallelism.data" }},
	{Feature: FeatureLoRA,
		Used: func(c *Config) (bool, string) { return len(c.LoRA) > 0, "backend.lora" }},
	{Feature: FeatureSpeculative,
		Used: func(c *Config) (bool, string) {
			return (c.VLLM != nil && c.VLLM.Speculative != nil) || (c.SGLang != nil && c.SGLang.SpeculativeAlgo != "") ||
				(c.TGI != nil && c.TGI.Speculate > 0) || (c.PyTorch != nil && c.PyTorch.AssistantModel != ""), "speculative settings"
		}},
}

// checkCapabilities returns a problem for each feature the configuration
// uses that its backend does not support.
func checkCapabilities(c *Config) Problems {
	var ps Problems
	for _, cp := range Capabilities {
		used, param := cp.Used(c)
		if !used {
			continue
		}
		if why, ok := plugins[c.Kind].Unsupported[cp.Feature]; ok {
			ps = append(ps, Problem{Param: param, Why: fmt.Sprintf("%s is not supported by %s: %s", cp.Feature, c.Kind, why[0]), Instead: why[1]})
		}
	}
	return ps
}

// WriteMatrix writes the capability matrix as a markdown table.
func WriteMatrix(w io.Writer) {
	var kinds []string // external: whatever the server does
	for _, k := range Kinds {
		if plugins[k].Args != nil {
			kinds = append(kinds, k)
		}
	}
	fmt.Fprintf(w, "| feature | %s |\n", strings.Join(kinds, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---|", len(kinds)))
	for _, cp := range Capabilities {
		cells := make([]string, len(kinds))
		for i, k := range kinds {
			cells[i] = "yes"
			if _, ok := plugins[k].Unsupported[cp.Feature]; ok {
				cells[i] = "no¹"
			}
		}
		fmt.Fprintf(w, "| %s | %s |\n", cp.Feature, strings.Join(cells, " | "))
	}
	fmt.Fprintln(w, "\n¹ Why not, and what to use instead:")
	fmt.Fprintln(w)
	for _, cp := range Capabilities {
		for _, k := range kinds {
			if why, ok := plugins[k].Unsupported[cp.Feature]; ok {
				fmt.Fprintf(w, "- %s on %s: %s; instead: %s.\n", cp.Feature, k, why[0], why[1])
			}
		}
	}
}
