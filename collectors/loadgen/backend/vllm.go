package backend

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// VLLM is vLLM's OpenAI-compatible server (`vllm serve`).
const VLLM = "vllm"

func init() {
	register(&Plugin{Kind: VLLM, Order: 10, Block: "vllm", HasBlock: func(c *Config) bool { return c.VLLM != nil },
		Dtypes: map[string]string{"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"},
		Args: func(a *Argv, c *Config, _ string) error {
			a.Arg("vllm", "serve", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
			a.Opt("--served-model-name", c.ServedName)
			if err := a.PrecisionQuant("--dtype", "--quantization", c); err != nil {
				return err
			}
			a.Parallel("--tensor-parallel-size", "--pipeline-parallel-size", "--data-parallel-size", c.Parallelism)
			a.Num("--max-model-len", c.MaxModelLen)
			a.Seed("--seed", c.Seed)
			if v := c.VLLM; v != nil {
				a.Frac("--gpu-memory-utilization", v.GPUMemoryUtilization)
				if v.KVCacheDType != "" {
					a.Arg("--kv-cache-dtype", v.KVCacheDType)
				}
				a.Num("--block-size", v.BlockSize)
				if v.PrefixCaching != nil {
					if *v.PrefixCaching {
						a.Arg("--enable-prefix-caching")
					} else {
						a.Arg("--no-enable-prefix-caching")
					}
				}
				a.Num("--max-num-seqs", v.MaxNumSeqs)
				a.Num("--max-num-batched-tokens", v.MaxNumBatchedTokens)
				if v.EnforceEager {
					a.Arg("--enforce-eager")
				}
				if s := v.Speculative; s != nil {
					spec := map[string]any{"num_speculative_tokens": s.NumTokens}
					if s.Model != "" {
						spec["model"] = s.Model
					}
					if s.Method != "" {
						spec["method"] = s.Method
					}
					js, _ := json.Marshal(spec)
					a.Arg("--speculative-config", string(js))
				}
			}
			if len(c.LoRA) > 0 {
				a.Arg("--enable-lora", "--lora-modules")
				a.Arg(loraPairs(c.LoRA)...)
			}
			return nil
		},
		Validate: func(c *Config, bad func(param, why, instead string)) {
			v := c.VLLM
			if v == nil {
				return
			}
			if v.GPUMemoryUtilization < 0 || v.GPUMemoryUtilization > 1 {
				bad("backend.vllm.gpu_memory_utilization", fmt.Sprintf("%g is not a fraction", v.GPUMemoryUtilization), "0 < x ≤ 1, e.g. 0.9")
			}
			if v.KVCacheDType != "" && !contains([]string{"auto", "fp8", "fp8_e4m3", "fp8_e5m2"}, v.KVCacheDType) {
				bad("backend.vllm.kv_cache_dtype", fmt.Sprintf("unknown %q", v.KVCacheDType), "auto, fp8, fp8_e4m3 or fp8_e5m2")
			}
			if v.BlockSize != 0 && !contains([]int{8, 16, 32, 64, 128}, v.BlockSize) {
				bad("backend.vllm.block_size", fmt.Sprintf("%d", v.BlockSize), "8, 16, 32, 64 or 128")
			}
			if s := v.Speculative; s != nil && s.Model == "" && s.Method == "" {
				bad("backend.vllm.speculative", "needs a draft model or a method", "")
			}
			if s := v.Speculative; s != nil && s.NumTokens < 1 {
				bad("backend.vllm.speculative.num_speculative_tokens", "must be at least 1", "")
			}
		},
	})
}
