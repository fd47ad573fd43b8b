// Package backend describes inference servers natively — vLLM,
// TensorRT-LLM (trtllm-serve), SGLang, TGI, llama.cpp and lem's reference
// PyTorch/transformers server — builds each one's launch command from one
// configuration, checks it against a capability matrix, and starts, health-
// checks and stops the server (or attaches to one already running).
package backend

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Config is one backend, as written under `backend:` in an experiment.
// Fields shared by every backend come first; each backend's own knobs are
// in its block. Zero values mean "the backend's default".
type Config struct {
	Kind string `yaml:"kind"`
	// Model is what the server loads: a Hugging Face id or local path (a
	// GGUF file for llama.cpp, or "random:<config.json>" for the reference
	// PyTorch server's random-weight models).
	Model string `yaml:"model"`
	// ServedName is the model name clients send (default: Model).
	ServedName string `yaml:"served_model_name"`
	// Endpoint attaches to a running server instead of launching one.
	Endpoint string `yaml:"endpoint"`
	Host     string `yaml:"host"` // listen host when launched (127.0.0.1)
	Port     int    `yaml:"port"` // listen port when launched (8000)
	// Command replaces the executable (and any wrapper), e.g.
	// ["chroot", "/srv/root", "llama-server"] or ["python3", "-m", "vllm.entrypoints.openai.api_server"].
	Command        []string          `yaml:"command"`
	ExtraArgs      []string          `yaml:"extra_args"`
	Env            map[string]string `yaml:"env"`
	StartupTimeout Duration          `yaml:"startup_timeout"` // 10m
	LogFile        string            `yaml:"log_file"`        // server output (default: <out>/<run>-server.log)

	Precision    string        `yaml:"precision"` // fp32, fp16, bf16, fp8 (normalised)
	Quantization *Quantization `yaml:"quantization"`
	Parallelism  Parallelism   `yaml:"parallelism"`
	LoRA         []LoRA        `yaml:"lora"`
	MaxModelLen  int           `yaml:"max_model_len"`
	// ModelParameters declares the model's parameter count (8.03e9) for
	// servers that do not report it and weights not on this host; lem
	// records it with the run (the platform sizes its scatter by it).
	ModelParameters float64 `yaml:"model_parameters"`
	Seed            *int    `yaml:"seed"`

	VLLM     *VLLMConfig     `yaml:"vllm"`
	TRTLLM   *TRTLLMConfig   `yaml:"tensorrt_llm"`
	SGLang   *SGLangConfig   `yaml:"sglang"`
	TGI      *TGIConfig      `yaml:"tgi"`
	LlamaCpp *LlamaCppConfig `yaml:"llama_cpp"`
	PyTorch  *PyTorchConfig  `yaml:"pytorch"`
}

// Quantization of the weights.
type Quantization struct {
	Enabled bool   `yaml:"enabled"`
	Method  string `yaml:"method"` // awq, gptq, fp8, bitsandbytes, ...
	Bits    int    `yaml:"bits"`   // 4 or 8
}

// Parallelism is the one block every backend's own flags are derived from.
type Parallelism struct {
	Tensor   int   `yaml:"tensor"`   // tensor-parallel degree (1)
	Pipeline int   `yaml:"pipeline"` // pipeline-parallel degree (1)
	Data     int   `yaml:"data"`     // data-parallel replicas (1)
	Devices  []int `yaml:"devices"`  // GPU indices (CUDA_VISIBLE_DEVICES); default: the first tensor×pipeline×data
}

// GPUs is the number of devices the configuration uses.
func (p Parallelism) GPUs() int { return max(p.Tensor, 1) * max(p.Pipeline, 1) * max(p.Data, 1) }

// LoRA is one adapter served beside the base model.
type LoRA struct {
	Name string `yaml:"name"`
	Path string `yaml:"path"`
}

// VLLMConfig holds vLLM's own knobs.
type VLLMConfig struct {
	GPUMemoryUtilization float64      `yaml:"gpu_memory_utilization"`
	KVCacheDType         string       `yaml:"kv_cache_dtype"` // auto, fp8, fp8_e4m3, fp8_e5m2
	BlockSize            int          `yaml:"block_size"`     // 8, 16, 32
	PrefixCaching        *bool        `yaml:"enable_prefix_caching"`
	MaxNumSeqs           int          `yaml:"max_num_seqs"`
	MaxNumBatchedTokens  int          `yaml:"max_num_batched_tokens"`
	EnforceEager         bool         `yaml:"enforce_eager"`
	Speculative          *Speculative `yaml:"speculative"`
}

// Speculative decoding with a draft model (or a method such as ngram).
type Speculative struct {
	Model     string `yaml:"model"`
	Method    string `yaml:"method"` // draft model (default), ngram, eagle, ...
	NumTokens int    `yaml:"num_speculative_tokens"`
}

// TRTLLMConfig holds trtllm-serve's own knobs.
type TRTLLMConfig struct {
	Backend                string  `yaml:"backend"` // pytorch (default) or trt (a prebuilt engine)
	MaxBatchSize           int     `yaml:"max_batch_size"`
	MaxNumTokens           int     `yaml:"max_num_tokens"`
	KVCacheFreeMemFraction float64 `yaml:"kv_cache_free_gpu_memory_fraction"`
}

// SGLangConfig holds SGLang's own knobs.
type SGLangConfig struct {
	MemFractionStatic   float64 `yaml:"mem_fraction_static"`
	ChunkedPrefillSize  int     `yaml:"chunked_prefill_size"`
	SchedulePolicy      string  `yaml:"schedule_policy"` // lpm, fcfs, random, dfs-weight
	EnableTorchCompile  bool    `yaml:"enable_torch_compile"`
	DisableRadixCache   bool    `yaml:"disable_radix_cache"`
	MaxRunningRequests  int     `yaml:"max_running_requests"`
	SpeculativeAlgo     string  `yaml:"speculative_algorithm"` // EAGLE, EAGLE3, NEXTN
	SpeculativeDraft    string  `yaml:"speculative_draft_model_path"`
	SpeculativeNumSteps int     `yaml:"speculative_num_steps"`
}

// TGIConfig holds text-generation-inference's own knobs.
type TGIConfig struct {
	MaxBatchTotalTokens   int `yaml:"max_batch_total_tokens"`
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	MaxInputTokens        int `yaml:"max_input_tokens"`
	Speculate             int `yaml:"speculate"`
}

// LlamaCppConfig holds llama-server's own knobs.
type LlamaCppConfig struct {
	CtxSize   int    `yaml:"ctx_size"`     // -c
	Parallel  int    `yaml:"parallel"`     // -np, decoding slots
	GPULayers *int   `yaml:"n_gpu_layers"` // -ngl
	FlashAttn string `yaml:"flash_attn"`   // on, off, auto
	Threads   int    `yaml:"threads"`      // -t
	BatchSize int    `yaml:"batch_size"`   // -b
}

// PyTorchConfig holds the reference PyTorch/transformers server's knobs.
type PyTorchConfig struct {
	AttnImplementation string `yaml:"attn_implementation"` // sdpa, eager, flash_attention_2
	TorchCompile       bool   `yaml:"torch_compile"`
	AssistantModel     string `yaml:"assistant_model"` // assisted (speculative) generation
	MaxBatchSize       int    `yaml:"max_batch_size"`
	// Batching: static (wait for a full batch or the timeout), dynamic
	// (take what is queued), sorted-static / sorted-dynamic (the same,
	// queued prompts sorted by length first).
	Batching     string   `yaml:"batching"`
	BatchTimeout Duration `yaml:"batch_timeout"` // static batching's wait (50ms)
}

// Duration is a time.Duration written as "30s", "2m" in YAML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (e.g. 30s, 2m): %q", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Problem is one thing wrong with a configuration: the parameter's path,
// why, and (from the capability matrix) what to do instead.
type Problem struct {
	Param, Why, Instead string
}

func (p Problem) Error() string {
	s := p.Param + ": " + p.Why
	if p.Instead != "" {
		s += " (" + p.Instead + ")"
	}
	return s
}

// Problems is a list of problems; as an error it lists them all.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// precisionAliases normalises precision spellings.
var precisionAliases = map[string]string{
	"fp32": "fp32", "float32": "fp32", "float": "fp32", "32": "fp32",
	"fp16": "fp16", "float16": "fp16", "half": "fp16", "16": "fp16",
	"bf16": "bf16", "bfloat16": "bf16",
	"fp8": "fp8", "float8": "fp8", "e4m3": "fp8",
	"auto": "",
}

// Normalize rewrites spellings to canonical ones (bfloat16 → bf16, kind
// aliases) and fills defaults that every backend shares. It returns the
// rewrites it made, as "param: old → new", for the config display.
func (c *Config) Normalize() []string {
	var notes []string
	set := func(param string, p *string, v string) {
		if *p != v {
			notes = append(notes, fmt.Sprintf("%s: %q → %q", param, *p, v))
			*p = v
		}
	}
	set("backend.kind", &c.Kind, canonical(c.Kind))
	if p, ok := precisionAliases[strings.ToLower(strings.TrimSpace(c.Precision))]; ok {
		set("backend.precision", &c.Precision, p)
	}
	if q := c.Quantization; q != nil {
		m := strings.ToLower(strings.TrimSpace(q.Method))
		switch m {
		case "bnb", "bitsandbytes-4bit", "bitsandbytes-8bit":
			m = "bitsandbytes"
		}
		set("backend.quantization.method", &q.Method, m)
		if q.Method != "" && !q.Enabled {
			notes = append(notes, "backend.quantization.enabled: false → true (a method is set)")
			q.Enabled = true
		}
	}
	if c.Parallelism.Tensor == 0 {
		c.Parallelism.Tensor = 1
	}
	if c.Parallelism.Pipeline == 0 {
		c.Parallelism.Pipeline = 1
	}
	if c.Parallelism.Data == 0 {
		c.Parallelism.Data = 1
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 8000
	}
	if c.StartupTimeout.Duration == 0 {
		c.StartupTimeout.Duration = 10 * time.Minute
	}
	if c.PyTorch != nil {
		set("backend.pytorch.batching", &c.PyTorch.Batching, strings.ToLower(strings.ReplaceAll(c.PyTorch.Batching, "_", "-")))
	}
	return notes
}

// BaseURL is where clients reach the server.
func (c *Config) BaseURL() string {
	if c.Endpoint != "" {
		return strings.TrimRight(c.Endpoint, "/")
	}
	return fmt.Sprintf("http://%s:%d", c.Host, c.Port)
}

// Name is the model name clients send.
func (c *Config) Name() string {
	if c.ServedName != "" {
		return c.ServedName
	}
	return c.Model
}

// Validate checks a normalised configuration against the capability matrix
// and each field's range, returning every problem found.
func (c *Config) Validate() Problems {
	var ps Problems
	bad := func(param, why, instead string) { ps = append(ps, Problem{param, why, instead}) }
	if !contains(Kinds, c.Kind) {
		bad("backend.kind", fmt.Sprintf("unknown backend %q", c.Kind), "one of "+strings.Join(Kinds, ", "))
		return ps
	}
	if m := c.ModelParameters; m < 0 || math.IsNaN(m) || math.IsInf(m, 0) {
		bad("backend.model_parameters", fmt.Sprintf("%v is no parameter count", m), "the model's parameter count, e.g. 8.03e9, or leave it out")
	}
	if c.Kind == External {
		if c.Endpoint == "" {
			bad("backend.endpoint", "required with kind external (lem attaches to a running server)", "")
		}
		if c.Name() == "" {
			bad("backend.model", "required: the model name clients send", "")
		}
		return ps
	}
	if c.Model == "" && c.Endpoint == "" {
		bad("backend.model", "required: what the server loads", "")
	}
	if c.Precision != "" && !contains([]string{"fp32", "fp16", "bf16", "fp8"}, c.Precision) {
		bad("backend.precision", fmt.Sprintf("unknown precision %q", c.Precision), "fp32, fp16, bf16 or fp8")
	}
	if q := c.Quantization; q != nil && q.Enabled {
		if q.Bits == 0 && q.Method != "fp8" && q.Method != "awq" && q.Method != "gptq" {
			bad("backend.quantization.bits", "quantisation is enabled without a bit width", "set bits: 4 or 8")
		}
		if q.Bits != 0 && q.Bits != 4 && q.Bits != 8 {
			bad("backend.quantization.bits", fmt.Sprintf("%d bits is not supported", q.Bits), "4 or 8")
		}
	}
	p := c.Parallelism
	if p.Tensor < 1 || p.Pipeline < 1 || p.Data < 1 {
		bad("backend.parallelism", "degrees must be at least 1", "")
	}
	if len(p.Devices) > 0 && len(p.Devices) != p.GPUs() {
		bad("backend.parallelism.devices", fmt.Sprintf("%d devices listed for tensor %d × pipeline %d × data %d = %d GPUs",
			len(p.Devices), p.Tensor, p.Pipeline, p.Data, p.GPUs()), "list exactly that many, or none")
	}
	seen := map[int]bool{}
	for _, d := range p.Devices {
		if d < 0 || seen[d] {
			bad("backend.parallelism.devices", fmt.Sprintf("device %d negative or listed twice", d), "")
		}
		seen[d] = true
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("backend.port", fmt.Sprintf("%d out of range", c.Port), "1–65535")
	}
	for i, l := range c.LoRA {
		if l.Name == "" || l.Path == "" {
			bad(fmt.Sprintf("backend.lora[%d]", i), "needs name and path", "")
		}
	}
	// Blocks of other backends are a mistake, not a silent no-op.
	for _, k := range Kinds {
		if p := plugins[k]; p.HasBlock != nil && p.HasBlock(c) && k != c.Kind {
			bad("backend."+p.Block, fmt.Sprintf("settings for %s, but backend.kind is %s", k, c.Kind), "remove the block or change the kind")
		}
	}
	if p := plugins[c.Kind]; p != nil {
		ps = append(ps, checkCapabilities(c)...)
		if p.Validate != nil {
			p.Validate(c, bad)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Param < ps[j].Param })
	return ps
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
