package backend

import (
	"fmt"
	"strconv"
)

// LlamaCpp is llama.cpp's server (`llama-server`).
const LlamaCpp = "llama.cpp"

func init() {
	register(&Plugin{Kind: LlamaCpp, Order: 50, Aliases: []string{"llamacpp", "llama-cpp", "llama_cpp", "llama-server"},
		Block: "llama_cpp", HasBlock: func(c *Config) bool { return c.LlamaCpp != nil },
		Args: func(a *Argv, c *Config, _ string) error {
			p := c.Parallelism
			a.Arg("llama-server", "-m", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port), "--metrics")
			a.Opt("--alias", c.ServedName)
			switch {
			case p.Tensor > 1:
				a.Arg("--split-mode", "row")
			case p.Pipeline > 1:
				a.Arg("--split-mode", "layer")
			}
			a.Seed("--seed", c.Seed)
			if v := c.LlamaCpp; v != nil {
				a.Num("-c", v.CtxSize)
				a.Num("-np", v.Parallel)
				if v.GPULayers != nil {
					a.Arg("-ngl", strconv.Itoa(*v.GPULayers))
				}
				if v.FlashAttn != "" {
					a.Arg("--flash-attn", v.FlashAttn)
				}
				a.Num("-t", v.Threads)
				a.Num("-b", v.BatchSize)
			}
			for _, lr := range c.LoRA {
				a.Arg("--lora", lr.Path)
			}
			return nil
		},
		Validate: func(c *Config, bad func(param, why, instead string)) {
			if v := c.LlamaCpp; v != nil && v.FlashAttn != "" && !contains([]string{"on", "off", "auto"}, v.FlashAttn) {
				bad("backend.llama_cpp.flash_attn", fmt.Sprintf("unknown %q", v.FlashAttn), "on, off or auto")
			}
		},
		Unsupported: map[string][2]string{
			FeaturePrecision:    {"precision is baked into the GGUF file", "pick a GGUF of that precision (F16, BF16, F32)"},
			FeatureFP8:          {"no fp8 kernels", "a Q8_0 GGUF"},
			FeatureQuantization: {"quantisation is baked into the GGUF file", "pick a quantised GGUF (Q4_K_M, Q8_0, …)"},
			FeatureDataParallel: {"llama-server runs one model copy", "several servers; -np slots give concurrency within one"},
			FeatureSpeculative:  {"a draft model needs llama-server's -md, not wired here", "vllm or sglang"},
		},
	})
}
