package backend

import (
	"strconv"
	"strings"
)

// TGI is Hugging Face's text-generation-inference
// (`text-generation-launcher`).
const TGI = "tgi"

func init() {
	register(&Plugin{Kind: TGI, Order: 40, Aliases: []string{"text-generation-inference"}, Block: "tgi",
		HasBlock: func(c *Config) bool { return c.TGI != nil },
		Dtypes:   map[string]string{"fp16": "float16", "bf16": "bfloat16"},
		Args: func(a *Argv, c *Config, _ string) error {
			p := c.Parallelism
			a.Arg("text-generation-launcher", "--model-id", c.Model, "--hostname", c.Host, "--port", strconv.Itoa(c.Port))
			if err := a.Dtype("--dtype", c.Precision); err != nil {
				return err
			}
			if q := c.Quantization; q != nil && q.Enabled {
				m := q.Method
				if m == "bitsandbytes" && q.Bits == 4 {
					m = "bitsandbytes-nf4"
				}
				a.Arg("--quantize", m)
			}
			if p.Tensor > 1 {
				a.Arg("--num-shard", strconv.Itoa(p.Tensor))
			}
			a.Num("--max-total-tokens", c.MaxModelLen)
			if v := c.TGI; v != nil {
				a.Num("--max-batch-total-tokens", v.MaxBatchTotalTokens)
				a.Num("--max-concurrent-requests", v.MaxConcurrentRequests)
				a.Num("--max-input-tokens", v.MaxInputTokens)
				a.Num("--speculate", v.Speculate)
			}
			if len(c.LoRA) > 0 {
				a.Arg("--lora-adapters", strings.Join(loraPairs(c.LoRA), ","))
			}
			return nil
		},
		Unsupported: map[string][2]string{
			FeatureFP8:              {"fp8 is a quantisation in TGI", "quantization: {method: fp8}"},
			FeaturePipelineParallel: {"TGI shards tensors only", "parallelism.tensor, or vllm/sglang for pipeline parallelism"},
			FeatureDataParallel:     {"TGI runs one replica", "several servers behind a router"},
		},
	})
}
