package backend

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// TRTLLM is TensorRT-LLM's OpenAI-compatible server (`trtllm-serve`).
const TRTLLM = "tensorrt-llm"

func init() {
	dtypes := map[string]string{"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
	register(&Plugin{Kind: TRTLLM, Order: 20, Aliases: []string{"trtllm", "trt-llm", "tensorrt_llm", "trtllm-serve"},
		Block: "tensorrt_llm", HasBlock: func(c *Config) bool { return c.TRTLLM != nil }, Dtypes: dtypes,
		Args: func(a *Argv, c *Config, _ string) error {
			a.Arg("trtllm-serve", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
			a.Parallel("--tp_size", "--pp_size", "", c.Parallelism)
			a.Num("--max_seq_len", c.MaxModelLen)
			if v := c.TRTLLM; v != nil {
				if v.Backend != "" {
					a.Arg("--backend", v.Backend)
				}
				a.Num("--max_batch_size", v.MaxBatchSize)
				a.Num("--max_num_tokens", v.MaxNumTokens)
				a.Frac("--kv_cache_free_gpu_memory_fraction", v.KVCacheFreeMemFraction)
			}
			// dtype and quantisation go through the LLM API options file.
			opts := map[string]any{}
			if n, ok := dtypes[c.Precision]; ok {
				opts["dtype"] = n
			}
			if c.Precision == "fp8" {
				opts["quant_config"] = map[string]any{"quant_algo": "FP8"}
			} else if q := c.Quantization; q != nil && q.Enabled {
				opts["quant_config"] = map[string]any{"quant_algo": trtQuantAlgo(q)}
			}
			if len(opts) > 0 {
				js, _ := json.MarshalIndent(opts, "", "  ") // JSON is YAML
				a.File("trtllm-extra-options.yaml", js)
				a.Arg("--extra_llm_api_options", "trtllm-extra-options.yaml")
			}
			return nil
		},
		Validate: func(c *Config, bad func(param, why, instead string)) {
			v := c.TRTLLM
			if v == nil {
				return
			}
			if v.Backend != "" && v.Backend != "pytorch" && v.Backend != "trt" {
				bad("backend.tensorrt_llm.backend", fmt.Sprintf("unknown %q", v.Backend), "pytorch or trt")
			}
			if v.KVCacheFreeMemFraction < 0 || v.KVCacheFreeMemFraction > 1 {
				bad("backend.tensorrt_llm.kv_cache_free_gpu_memory_fraction", "not a fraction", "0 < x ≤ 1")
			}
		},
		Unsupported: map[string][2]string{
			FeatureBitsAndBytes: {"TensorRT-LLM quantises with ModelOpt, not bitsandbytes", "quantization method fp8, int4_awq or int8_sq"},
			FeatureDataParallel: {"trtllm-serve runs one replica", "several servers behind a router, one experiment each"},
			FeatureLoRA:         {"not wired for trtllm-serve here", "vllm, sglang, tgi or llama.cpp"},
			FeatureSpeculative:  {"not wired for trtllm-serve here", "vllm or sglang speculative settings"},
		},
	})
}

func trtQuantAlgo(q *Quantization) string {
	switch {
	case q.Method == "awq" || (q.Method == "int4_awq"):
		return "W4A16_AWQ"
	case q.Method == "gptq":
		return "W4A16_GPTQ"
	case q.Method == "int8_sq" || q.Method == "smoothquant":
		return "W8A8_SQ_PER_CHANNEL"
	case q.Method == "w4a8_awq":
		return "W4A8_AWQ"
	case q.Method == "nvfp4":
		return "NVFP4"
	}
	return strings.ToUpper(q.Method)
}
