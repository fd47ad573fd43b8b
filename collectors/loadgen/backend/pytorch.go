package backend

import (
	"fmt"
	"strconv"
)

// PyTorch is lem's reference PyTorch/transformers server
// (pyserver/server.py, written next to the run's logs).
const PyTorch = "pytorch"

func init() {
	register(&Plugin{Kind: PyTorch, Order: 60, Aliases: []string{"transformers", "hf", "torch"}, Block: "pytorch",
		HasBlock: func(c *Config) bool { return c.PyTorch != nil },
		Dtypes:   map[string]string{"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"},
		Args: func(a *Argv, c *Config, pyServer string) error {
			if tp := c.Parallelism.Tensor; tp > 1 {
				// transformers' tensor parallelism: one process per GPU,
				// started by torchrun (torch.distributed.run); rank 0 serves.
				a.Arg("python3", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", strconv.Itoa(tp),
					pyServer, "--tensor-parallel", strconv.Itoa(tp))
			} else {
				a.Arg("python3", pyServer)
			}
			a.Arg("--model", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
			a.Opt("--served-model-name", c.ServedName)
			if err := a.Dtype("--dtype", c.Precision); err != nil {
				return err
			}
			if q := c.Quantization; q != nil && q.Enabled {
				a.Arg("--quantization", q.Method, "--bits", strconv.Itoa(q.Bits))
			}
			a.Num("--max-model-len", c.MaxModelLen)
			a.Seed("--seed", c.Seed)
			if v := c.PyTorch; v != nil {
				if v.AttnImplementation != "" {
					a.Arg("--attn-implementation", v.AttnImplementation)
				}
				if v.TorchCompile {
					a.Arg("--torch-compile")
				}
				if v.AssistantModel != "" {
					a.Arg("--assistant-model", v.AssistantModel)
				}
				a.Num("--max-batch-size", v.MaxBatchSize)
				if v.Batching != "" {
					a.Arg("--batching", v.Batching)
				}
				if v.BatchTimeout.Duration > 0 {
					a.Arg("--batch-timeout-ms", strconv.FormatInt(v.BatchTimeout.Milliseconds(), 10))
				}
			}
			// A PEFT adapter folder, or random:RANK[:modules] for a random
			// adapter of that rank (pyserver/server.py).
			for _, lr := range c.LoRA {
				a.Arg("--lora", lr.Name+"="+lr.Path)
			}
			return nil
		},
		Validate: func(c *Config, bad func(param, why, instead string)) {
			v := c.PyTorch
			if v == nil {
				return
			}
			if v.AttnImplementation != "" && !contains([]string{"sdpa", "eager", "flash_attention_2"}, v.AttnImplementation) {
				bad("backend.pytorch.attn_implementation", fmt.Sprintf("unknown %q", v.AttnImplementation), "sdpa, eager or flash_attention_2")
			}
			if v.Batching != "" && !contains([]string{"static", "dynamic", "sorted-static", "sorted-dynamic"}, v.Batching) {
				bad("backend.pytorch.batching", fmt.Sprintf("unknown %q", v.Batching), "static, dynamic, sorted-static or sorted-dynamic")
			}
			if c.Parallelism.Tensor > 1 && (len(c.LoRA) > 0 || v.AssistantModel != "" || (c.Quantization != nil && c.Quantization.Enabled)) {
				bad("backend.parallelism.tensor", "the reference server shards plain models only",
					"drop lora, assistant_model and quantization, or use vllm/sglang for them with tensor parallelism")
			}
			if v.AssistantModel != "" && v.MaxBatchSize > 1 {
				bad("backend.pytorch.assistant_model", "assisted generation in transformers decodes one sequence at a time",
					"set max_batch_size: 1, or use vllm/sglang speculative decoding for batches")
			}
		},
		Unsupported: map[string][2]string{
			FeatureFP8:              {"transformers has no fp8 inference path", "vllm, sglang or tensorrt-llm with precision fp8"},
			FeaturePipelineParallel: {"the reference server runs one model copy on one GPU", "vllm, sglang or tensorrt-llm"},
			FeatureDataParallel:     {"one model copy", "vllm or sglang with parallelism.data"},
		},
	})
}
