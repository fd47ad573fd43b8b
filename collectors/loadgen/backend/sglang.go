package backend

import (
	"fmt"
	"strconv"
)

// SGLang is SGLang's server (`python3 -m sglang.launch_server`).
const SGLang = "sglang"

func init() {
	register(&Plugin{Kind: SGLang, Order: 30, Block: "sglang", HasBlock: func(c *Config) bool { return c.SGLang != nil },
		Dtypes: map[string]string{"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}, ExeArgs: 3,
		Args: func(a *Argv, c *Config, _ string) error {
			a.Arg("python3", "-m", "sglang.launch_server", "--model-path", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port),
				"--enable-metrics")
			a.Opt("--served-model-name", c.ServedName)
			if err := a.PrecisionQuant("--dtype", "--quantization", c); err != nil {
				return err
			}
			a.Parallel("--tp-size", "--pp-size", "--dp-size", c.Parallelism)
			a.Num("--context-length", c.MaxModelLen)
			a.Seed("--random-seed", c.Seed)
			if v := c.SGLang; v != nil {
				a.Frac("--mem-fraction-static", v.MemFractionStatic)
				a.Num("--chunked-prefill-size", v.ChunkedPrefillSize)
				if v.SchedulePolicy != "" {
					a.Arg("--schedule-policy", v.SchedulePolicy)
				}
				if v.EnableTorchCompile {
					a.Arg("--enable-torch-compile")
				}
				if v.DisableRadixCache {
					a.Arg("--disable-radix-cache")
				}
				a.Num("--max-running-requests", v.MaxRunningRequests)
				if v.SpeculativeAlgo != "" {
					a.Arg("--speculative-algorithm", v.SpeculativeAlgo)
					if v.SpeculativeDraft != "" {
						a.Arg("--speculative-draft-model-path", v.SpeculativeDraft)
					}
					a.Num("--speculative-num-steps", v.SpeculativeNumSteps)
				}
			}
			if len(c.LoRA) > 0 {
				a.Arg("--lora-paths")
				a.Arg(loraPairs(c.LoRA)...)
			}
			return nil
		},
		Validate: func(c *Config, bad func(param, why, instead string)) {
			v := c.SGLang
			if v == nil {
				return
			}
			if v.MemFractionStatic < 0 || v.MemFractionStatic > 1 {
				bad("backend.sglang.mem_fraction_static", "not a fraction", "0 < x ≤ 1")
			}
			if v.SchedulePolicy != "" && !contains([]string{"lpm", "fcfs", "random", "dfs-weight", "lof"}, v.SchedulePolicy) {
				bad("backend.sglang.schedule_policy", fmt.Sprintf("unknown %q", v.SchedulePolicy), "lpm, fcfs, random, dfs-weight or lof")
			}
		},
	})
}
