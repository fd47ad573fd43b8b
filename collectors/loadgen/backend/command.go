package backend

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Launch is how to start one backend: the command line, extra
// environment, the health path to poll, and files to write before start
// (name → content, relative to the run's directory; argv refers to them
// by that name).
type Launch struct {
	Argv   []string
	Env    []string
	Health string
	Files  map[string][]byte
}

// String renders the launch as a shell-like line (for logs and `lem
// config show`), secrets in the environment redacted.
func (l Launch) String() string {
	var b strings.Builder
	for _, e := range l.Env {
		k, v, _ := strings.Cut(e, "=")
		b.WriteString(k + "=" + RedactValue(k, v) + " ")
	}
	for i, a := range l.Argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t'\"{}$") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// secretKey matches names whose values are secrets (HF_TOKEN,
// AWS_SECRET_ACCESS_KEY, *_PASSWORD, API keys).
var secretKey = regexp.MustCompile(`(?i)(token|secret|password|passwd|api[_-]?key|credential|private[_-]?key)`)

// RedactValue returns v, or "<redacted>" when name says it holds a secret.
func RedactValue(name, v string) string {
	if v != "" && secretKey.MatchString(name) {
		return "<redacted>"
	}
	return v
}

// Redacted returns a copy of c whose secret environment values are
// replaced: what logs, `lem config show` and the stored run configuration
// see. The launch itself uses c.
func (c Config) Redacted() Config {
	if len(c.Env) == 0 {
		return c
	}
	env := make(map[string]string, len(c.Env))
	for k, v := range c.Env {
		env[k] = RedactValue(k, v)
	}
	c.Env = env
	return c
}

// dtypeNames maps canonical precisions to each backend's spelling.
var dtypeNames = map[string]map[string]string{
	VLLM:    {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"},
	SGLang:  {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"},
	TGI:     {"fp16": "float16", "bf16": "bfloat16"},
	TRTLLM:  {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"},
	PyTorch: {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"},
}

// Command builds the launch of a normalised, valid configuration. The
// Python server of kind pytorch is referred to as pyServer (a path written
// by the caller).
func Command(c *Config, pyServer string) (Launch, error) {
	if c.Kind == External {
		return Launch{}, fmt.Errorf("backend kind external is attached to, not launched")
	}
	l := Launch{Health: "/health"}
	var a []string
	arg := func(xs ...string) { a = append(a, xs...) }
	num := func(flag string, v int) {
		if v != 0 {
			arg(flag, strconv.Itoa(v))
		}
	}
	frac := func(flag string, v float64) {
		if v != 0 {
			arg(flag, strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	p := c.Parallelism
	dtype := func(flag string) error {
		if c.Precision == "" || c.Precision == "fp8" {
			return nil
		}
		n, ok := dtypeNames[c.Kind][c.Precision]
		if !ok {
			return fmt.Errorf("backend.precision: %s has no %s", c.Kind, c.Precision)
		}
		arg(flag, n)
		return nil
	}
	switch c.Kind {
	case VLLM:
		arg("vllm", "serve", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
		if c.ServedName != "" {
			arg("--served-model-name", c.ServedName)
		}
		if err := dtype("--dtype"); err != nil {
			return l, err
		}
		if c.Precision == "fp8" {
			arg("--quantization", "fp8")
		} else if q := c.Quantization; q != nil && q.Enabled {
			arg("--quantization", q.Method)
		}
		num("--tensor-parallel-size", oneIsZero(p.Tensor))
		num("--pipeline-parallel-size", oneIsZero(p.Pipeline))
		num("--data-parallel-size", oneIsZero(p.Data))
		num("--max-model-len", c.MaxModelLen)
		if c.Seed != nil {
			arg("--seed", strconv.Itoa(*c.Seed))
		}
		if v := c.VLLM; v != nil {
			frac("--gpu-memory-utilization", v.GPUMemoryUtilization)
			if v.KVCacheDType != "" {
				arg("--kv-cache-dtype", v.KVCacheDType)
			}
			num("--block-size", v.BlockSize)
			if v.PrefixCaching != nil {
				if *v.PrefixCaching {
					arg("--enable-prefix-caching")
				} else {
					arg("--no-enable-prefix-caching")
				}
			}
			num("--max-num-seqs", v.MaxNumSeqs)
			num("--max-num-batched-tokens", v.MaxNumBatchedTokens)
			if v.EnforceEager {
				arg("--enforce-eager")
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
				arg("--speculative-config", string(js))
			}
		}
		if len(c.LoRA) > 0 {
			arg("--enable-lora", "--lora-modules")
			for _, lr := range c.LoRA {
				arg(lr.Name + "=" + lr.Path)
			}
		}
	case TRTLLM:
		arg("trtllm-serve", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
		num("--tp_size", oneIsZero(p.Tensor))
		num("--pp_size", oneIsZero(p.Pipeline))
		num("--max_seq_len", c.MaxModelLen)
		opts := map[string]any{}
		if v := c.TRTLLM; v != nil {
			if v.Backend != "" {
				arg("--backend", v.Backend)
			}
			num("--max_batch_size", v.MaxBatchSize)
			num("--max_num_tokens", v.MaxNumTokens)
			frac("--kv_cache_free_gpu_memory_fraction", v.KVCacheFreeMemFraction)
		}
		// dtype and quantisation go through the LLM API options file.
		if n, ok := dtypeNames[TRTLLM][c.Precision]; ok {
			opts["dtype"] = n
		}
		if c.Precision == "fp8" {
			opts["quant_config"] = map[string]any{"quant_algo": "FP8"}
		} else if q := c.Quantization; q != nil && q.Enabled {
			opts["quant_config"] = map[string]any{"quant_algo": trtQuantAlgo(q)}
		}
		if len(opts) > 0 {
			js, _ := json.MarshalIndent(opts, "", "  ") // JSON is YAML
			l.Files = map[string][]byte{"trtllm-extra-options.yaml": js}
			arg("--extra_llm_api_options", "trtllm-extra-options.yaml")
		}
	case SGLang:
		arg("python3", "-m", "sglang.launch_server", "--model-path", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port),
			"--enable-metrics")
		if c.ServedName != "" {
			arg("--served-model-name", c.ServedName)
		}
		if err := dtype("--dtype"); err != nil {
			return l, err
		}
		if c.Precision == "fp8" {
			arg("--quantization", "fp8")
		} else if q := c.Quantization; q != nil && q.Enabled {
			m := q.Method
			if m == "bitsandbytes" {
				m = "bitsandbytes"
			}
			arg("--quantization", m)
		}
		num("--tp-size", oneIsZero(p.Tensor))
		num("--pp-size", oneIsZero(p.Pipeline))
		num("--dp-size", oneIsZero(p.Data))
		num("--context-length", c.MaxModelLen)
		if c.Seed != nil {
			arg("--random-seed", strconv.Itoa(*c.Seed))
		}
		if v := c.SGLang; v != nil {
			frac("--mem-fraction-static", v.MemFractionStatic)
			num("--chunked-prefill-size", v.ChunkedPrefillSize)
			if v.SchedulePolicy != "" {
				arg("--schedule-policy", v.SchedulePolicy)
			}
			if v.EnableTorchCompile {
				arg("--enable-torch-compile")
			}
			if v.DisableRadixCache {
				arg("--disable-radix-cache")
			}
			num("--max-running-requests", v.MaxRunningRequests)
			if v.SpeculativeAlgo != "" {
				arg("--speculative-algorithm", v.SpeculativeAlgo)
				if v.SpeculativeDraft != "" {
					arg("--speculative-draft-model-path", v.SpeculativeDraft)
				}
				num("--speculative-num-steps", v.SpeculativeNumSteps)
			}
		}
		if len(c.LoRA) > 0 {
			arg("--lora-paths")
			for _, lr := range c.LoRA {
				arg(lr.Name + "=" + lr.Path)
			}
		}
	case TGI:
		arg("text-generation-launcher", "--model-id", c.Model, "--hostname", c.Host, "--port", strconv.Itoa(c.Port))
		if err := dtype("--dtype"); err != nil {
			return l, err
		}
		if q := c.Quantization; q != nil && q.Enabled {
			m := q.Method
			if m == "bitsandbytes" && q.Bits == 4 {
				m = "bitsandbytes-nf4"
			}
			arg("--quantize", m)
		}
		if p.Tensor > 1 {
			arg("--num-shard", strconv.Itoa(p.Tensor))
		}
		num("--max-total-tokens", c.MaxModelLen)
		if v := c.TGI; v != nil {
			num("--max-batch-total-tokens", v.MaxBatchTotalTokens)
			num("--max-concurrent-requests", v.MaxConcurrentRequests)
			num("--max-input-tokens", v.MaxInputTokens)
			num("--speculate", v.Speculate)
		}
		if len(c.LoRA) > 0 {
			var ls []string
			for _, lr := range c.LoRA {
				ls = append(ls, lr.Name+"="+lr.Path)
			}
			arg("--lora-adapters", strings.Join(ls, ","))
		}
	case LlamaCpp:
		arg("llama-server", "-m", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port), "--metrics")
		if c.ServedName != "" {
			arg("--alias", c.ServedName)
		}
		switch {
		case p.Tensor > 1:
			arg("--split-mode", "row")
		case p.Pipeline > 1:
			arg("--split-mode", "layer")
		}
		if c.Seed != nil {
			arg("--seed", strconv.Itoa(*c.Seed))
		}
		if v := c.LlamaCpp; v != nil {
			num("-c", v.CtxSize)
			num("-np", v.Parallel)
			if v.GPULayers != nil {
				arg("-ngl", strconv.Itoa(*v.GPULayers))
			}
			if v.FlashAttn != "" {
				arg("--flash-attn", v.FlashAttn)
			}
			num("-t", v.Threads)
			num("-b", v.BatchSize)
		}
		for _, lr := range c.LoRA {
			arg("--lora", lr.Path)
		}
	case PyTorch:
		arg("python3", pyServer, "--model", c.Model, "--host", c.Host, "--port", strconv.Itoa(c.Port))
		if c.ServedName != "" {
			arg("--served-model-name", c.ServedName)
		}
		if err := dtype("--dtype"); err != nil {
			return l, err
		}
		if q := c.Quantization; q != nil && q.Enabled {
			arg("--quantization", q.Method, "--bits", strconv.Itoa(q.Bits))
		}
		num("--max-model-len", c.MaxModelLen)
		if c.Seed != nil {
			arg("--seed", strconv.Itoa(*c.Seed))
		}
		if v := c.PyTorch; v != nil {
			if v.AttnImplementation != "" {
				arg("--attn-implementation", v.AttnImplementation)
			}
			if v.TorchCompile {
				arg("--torch-compile")
			}
			if v.AssistantModel != "" {
				arg("--assistant-model", v.AssistantModel)
			}
			num("--max-batch-size", v.MaxBatchSize)
			if v.Batching != "" {
				arg("--batching", v.Batching)
			}
			if v.BatchTimeout.Duration > 0 {
				arg("--batch-timeout-ms", strconv.FormatInt(v.BatchTimeout.Milliseconds(), 10))
			}
		}
		for _, lr := range c.LoRA {
			arg("--lora", lr.Name+"="+lr.Path)
		}
	}
	if len(c.Command) > 0 {
		// Replace the executable (first element; python3 -m X counts as one
		// executable for sglang, "python3 server.py" for pytorch).
		skip := 1
		if c.Kind == SGLang {
			skip = 3
		}
		a = append(append([]string{}, c.Command...), a[skip:]...)
	}
	a = append(a, c.ExtraArgs...)
	l.Argv = a
	if len(p.Devices) > 0 {
		ds := make([]string, len(p.Devices))
		for i, d := range p.Devices {
			ds[i] = strconv.Itoa(d)
		}
		l.Env = append(l.Env, "CUDA_VISIBLE_DEVICES="+strings.Join(ds, ","))
	}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l.Env = append(l.Env, k+"="+c.Env[k])
	}
	return l, nil
}

// oneIsZero leaves a degree of 1 off the command line (the default).
func oneIsZero(v int) int {
	if v == 1 {
		return 0
	}
	return v
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
