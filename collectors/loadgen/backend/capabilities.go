package backend

import (
	"fmt"
	"io"
	"strings"
)

// A Capability is one feature and, per backend, whether it is supported,
// with the reason and the alternative when it is not. The table is the
// single source for validation and for docs/backends.md.
type Capability struct {
	Feature string
	// Unsupported maps a backend kind to why not and what instead; a kind
	// absent from the map supports the feature.
	Unsupported map[string][2]string
	// Used reports whether a configuration asks for the feature, and the
	// parameter that does.
	Used func(c *Config) (bool, string)
}

// Capabilities is the matrix, in documentation order.
var Capabilities = []Capability{
	{Feature: "precision fp32/fp16/bf16",
		Unsupported: map[string][2]string{
			LlamaCpp: {"precision is baked into the GGUF file", "pick a GGUF of that precision (F16, BF16, F32)"},
		},
		Used: func(c *Config) (bool, string) {
			return c.Precision != "" && c.Precision != "fp8", "backend.precision"
		}},
	{Feature: "precision fp8",
		Unsupported: map[string][2]string{
			LlamaCpp: {"no fp8 kernels", "a Q8_0 GGUF"},
			PyTorch:  {"transformers has no fp8 inference path", "vllm, sglang or tensorrt-llm with precision fp8"},
			TGI:      {"fp8 is a quantisation in TGI", "quantization: {method: fp8}"},
		},
		Used: func(c *Config) (bool, string) { return c.Precision == "fp8", "backend.precision" }},
	{Feature: "weight quantisation (awq, gptq, fp8, bitsandbytes …)",
		Unsupported: map[string][2]string{
			LlamaCpp: {"quantisation is baked into the GGUF file", "pick a quantised GGUF (Q4_K_M, Q8_0, …)"},
		},
		Used: func(c *Config) (bool, string) {
			return c.Quantization != nil && c.Quantization.Enabled, "backend.quantization"
		}},
	{Feature: "bitsandbytes 4/8-bit",
		Unsupported: map[string][2]string{
			TRTLLM: {"TensorRT-LLM quantises with ModelOpt, not bitsandbytes", "quantization method fp8, int4_awq or int8_sq"},
		},
		Used: func(c *Config) (bool, string) {
			return c.Quantization != nil && c.Quantization.Method == "bitsandbytes", "backend.quantization.method"
		}},
	{Feature: "tensor parallel",
		Unsupported: map[string][2]string{
			PyTorch: {"the reference server runs one model copy on one GPU", "vllm, sglang, tensorrt-llm or tgi"},
		},
		Used: func(c *Config) (bool, string) { return c.Parallelism.Tensor > 1, "backend.parallelism.tensor" }},
	{Feature: "pipeline parallel",
		Unsupported: map[string][2]string{
			TGI:     {"TGI shards tensors only", "parallelism.tensor, or vllm/sglang for pipeline parallelism"},
			PyTorch: {"the reference server runs one model copy on one GPU", "vllm, sglang or tensorrt-llm"},
		},
		Used: func(c *Config) (bool, string) { return c.Parallelism.Pipeline > 1, "backend.parallelism.pipeline" }},
	{Feature: "data parallel (replicas in one server)",
		Unsupported: map[string][2]string{
			TRTLLM:   {"trtllm-serve runs one replica", "several servers behind a router, one experiment each"},
			TGI:      {"TGI runs one replica", "several servers behind a router"},
			LlamaCpp: {"llama-server runs one model copy", "several servers; -np slots give concurrency within one"},
			PyTorch:  {"one model copy", "vllm or sglang with parallelism.data"},
		},
		Used: func(c *Config) (bool, string) { return c.Parallelism.Data > 1, "backend.parallelism.data" }},
	{Feature: "LoRA adapters",
		Unsupported: map[string][2]string{
			TRTLLM:  {"not wired for trtllm-serve here", "vllm, sglang, tgi or llama.cpp"},
			PyTorch: {"the reference server does not load adapters", "vllm, sglang, tgi or llama.cpp"},
		},
		Used: func(c *Config) (bool, string) { return len(c.LoRA) > 0, "backend.lora" }},
	{Feature: "speculative decoding",
		Unsupported: map[string][2]string{
			TRTLLM:   {"not wired for trtllm-serve here", "vllm or sglang speculative settings"},
			LlamaCpp: {"a draft model needs llama-server's -md, not wired here", "vllm or sglang"},
		},
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
		if why, ok := cp.Unsupported[c.Kind]; ok {
			ps = append(ps, Problem{Param: param, Why: fmt.Sprintf("%s is not supported by %s: %s", cp.Feature, c.Kind, why[0]), Instead: why[1]})
		}
	}
	return ps
}

// WriteMatrix writes the capability matrix as a markdown table.
func WriteMatrix(w io.Writer) {
	kinds := Kinds[:len(Kinds)-1] // external: whatever the server does
	fmt.Fprintf(w, "| feature | %s |\n", strings.Join(kinds, " | "))
	fmt.Fprintf(w, "|---|%s\n", strings.Repeat("---|", len(kinds)))
	for _, cp := range Capabilities {
		cells := make([]string, len(kinds))
		for i, k := range kinds {
			cells[i] = "yes"
			if _, ok := cp.Unsupported[k]; ok {
				cells[i] = "no¹"
			}
		}
		fmt.Fprintf(w, "| %s | %s |\n", cp.Feature, strings.Join(cells, " | "))
	}
	fmt.Fprintln(w, "\n¹ Why not, and what to use instead:")
	fmt.Fprintln(w)
	for _, cp := range Capabilities {
		for _, k := range kinds {
			if why, ok := cp.Unsupported[k]; ok {
				fmt.Fprintf(w, "- %s on %s: %s; instead: %s.\n", cp.Feature, k, why[0], why[1])
			}
		}
	}
}
