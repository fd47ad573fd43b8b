package backend

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func intp(v int) *int    { return &v }
func boolp(v bool) *bool { return &v }

// Each backend's command line from one shared configuration plus its own
// block: the flags are the backend's own spelling of the same settings.
func TestCommands(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Kind: "vllm", Model: "meta-llama/Llama-3.1-8B-Instruct", Precision: "bfloat16", Parallelism: Parallelism{Tensor: 2, Devices: []int{2, 3}},
			LoRA: []LoRA{{Name: "sql", Path: "/a/sql"}}, Seed: intp(7),
			VLLM: &VLLMConfig{GPUMemoryUtilization: 0.85, KVCacheDType: "fp8", BlockSize: 16, PrefixCaching: boolp(false), MaxNumSeqs: 64,
				Speculative: &Speculative{Model: "small", NumTokens: 4}}},
			`CUDA_VISIBLE_DEVICES=2,3 vllm serve meta-llama/Llama-3.1-8B-Instruct --host 127.0.0.1 --port 8000 --dtype bfloat16 ` +
				`--tensor-parallel-size 2 --seed 7 --gpu-memory-utilization 0.85 --kv-cache-dtype fp8 --block-size 16 ` +
				`--no-enable-prefix-caching --max-num-seqs 64 --speculative-config '{"model":"small","num_speculative_tokens":4}' ` +
				`--enable-lora --lora-modules sql=/a/sql`},
		{Config{Kind: "trtllm", Model: "/models/llama", Precision: "fp8", Parallelism: Parallelism{Tensor: 4, Pipeline: 2},
			TRTLLM: &TRTLLMConfig{MaxBatchSize: 128, KVCacheFreeMemFraction: 0.9}},
			`trtllm-serve /models/llama --host 127.0.0.1 --port 8000 --tp_size 4 --pp_size 2 --max_batch_size 128 ` +
				`--kv_cache_free_gpu_memory_fraction 0.9 --extra_llm_api_options trtllm-extra-options.yaml`},
		{Config{Kind: "sglang", Model: "Qwen/Qwen2.5-7B", Precision: "fp16", Quantization: &Quantization{Method: "awq", Bits: 4},
			Parallelism: Parallelism{Data: 2}, SGLang: &SGLangConfig{MemFractionStatic: 0.8, SchedulePolicy: "lpm", DisableRadixCache: true}},
			`python3 -m sglang.launch_server --model-path Qwen/Qwen2.5-7B --host 127.0.0.1 --port 8000 --enable-metrics --dtype float16 ` +
				`--quantization awq --dp-size 2 --mem-fraction-static 0.8 --schedule-policy lpm --disable-radix-cache`},
		{Config{Kind: "tgi", Model: "mistralai/Mistral-7B", Precision: "bf16", Quantization: &Quantization{Method: "bnb", Bits: 4},
			Parallelism: Parallelism{Tensor: 2}, TGI: &TGIConfig{MaxBatchTotalTokens: 32000, MaxConcurrentRequests: 256}},
			`text-generation-launcher --model-id mistralai/Mistral-7B --hostname 127.0.0.1 --port 8000 --dtype bfloat16 ` +
				`--quantize bitsandbytes-nf4 --num-shard 2 --max-batch-total-tokens 32000 --max-concurrent-requests 256`},
		{Config{Kind: "llama-server", Model: "/m/q4.gguf", Port: 18080, Command: []string{"chroot", "/srv/root", "llama-server"},
			LlamaCpp: &LlamaCppConfig{CtxSize: 4096, Parallel: 8, GPULayers: intp(99), FlashAttn: "on"}},
			`chroot /srv/root llama-server -m /m/q4.gguf --host 127.0.0.1 --port 18080 --metrics -c 4096 -np 8 -ngl 99 --flash-attn on`},
		{Config{Kind: "transformers", Model: "random:llama-0.9b", Precision: "bf16",
			PyTorch: &PyTorchConfig{AttnImplementation: "sdpa", TorchCompile: true, MaxBatchSize: 16, Batching: "sorted_static"}},
			`python3 /x/server.py --model random:llama-0.9b --host 127.0.0.1 --port 8000 --dtype bf16 --attn-implementation sdpa ` +
				`--torch-compile --max-batch-size 16 --batching sorted-static`},
		// Tensor parallelism in the reference server: torchrun, one
		// process per GPU, the GPUs made visible.
		{Config{Kind: "pytorch", Model: "random:llama-0.9b", Parallelism: Parallelism{Tensor: 2, Devices: []int{4, 5}},
			LoRA: nil, PyTorch: &PyTorchConfig{MaxBatchSize: 8}},
			`CUDA_VISIBLE_DEVICES=4,5 python3 -m torch.distributed.run --standalone --nproc-per-node 2 /x/server.py --tensor-parallel 2 ` +
				`--model random:llama-0.9b --host 127.0.0.1 --port 8000 --max-batch-size 8`},
		// LoRA adapters in the reference server.
		{Config{Kind: "pytorch", Model: "random:llama-0.9b", LoRA: []LoRA{{Name: "r16", Path: "random:16"}}},
			`python3 /x/server.py --model random:llama-0.9b --host 127.0.0.1 --port 8000 --lora r16=random:16`},
	}
	for _, tc := range cases {
		c := tc.cfg
		c.Normalize()
		if ps := c.Validate(); len(ps) > 0 {
			t.Fatalf("%s: %v", c.Kind, ps)
		}
		l, err := Command(&c, "/x/server.py")
		if err != nil {
			t.Fatal(err)
		}
		if got := l.String(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", c.Kind, got, tc.want)
		}
		if c.Kind == TRTLLM && !strings.Contains(string(l.Files["trtllm-extra-options.yaml"]), `"quant_algo": "FP8"`) {
			t.Errorf("trtllm options file: %s", l.Files["trtllm-extra-options.yaml"])
		}
	}
}

// Validation names the parameter, why, and the alternative.
func TestValidationNamesTheParameter(t *testing.T) {
	cases := []struct {
		cfg  Config
		want []string // substrings of the problems, in order
	}{
		{Config{Kind: "vllm", Model: "m", Quantization: &Quantization{Enabled: true, Method: "bitsandbytes"}},
			[]string{"backend.quantization.bits: quantisation is enabled without a bit width (set bits: 4 or 8)"}},
		{Config{Kind: "llama.cpp", Model: "m.gguf", Precision: "bfloat16"},
			[]string{"backend.precision: precision fp32/fp16/bf16 is not supported by llama.cpp: precision is baked into the GGUF file (pick a GGUF"}},
		{Config{Kind: "tgi", Model: "m", Parallelism: Parallelism{Pipeline: 2}},
			[]string{"backend.parallelism.pipeline: pipeline parallel is not supported by tgi"}},
		{Config{Kind: "pytorch", Model: "m", Parallelism: Parallelism{Tensor: 2, Devices: []int{0}}},
			[]string{"backend.parallelism.devices: 1 devices listed for tensor 2"}},
		{Config{Kind: "pytorch", Model: "m", Parallelism: Parallelism{Pipeline: 2}},
			[]string{"backend.parallelism.pipeline: pipeline parallel is not supported by pytorch"}},
		{Config{Kind: "vllm", Model: "m", PyTorch: &PyTorchConfig{}}, []string{"backend.pytorch: settings for pytorch, but backend.kind is vllm"}},
		{Config{Kind: "vllm", Model: "m", VLLM: &VLLMConfig{GPUMemoryUtilization: 1.5}}, []string{"backend.vllm.gpu_memory_utilization: 1.5 is not a fraction"}},
		{Config{Kind: "pytorch", Model: "m", PyTorch: &PyTorchConfig{AssistantModel: "d", MaxBatchSize: 8}},
			[]string{"backend.pytorch.assistant_model: assisted generation in transformers decodes one sequence at a time"}},
		{Config{Kind: "deepspeed", Model: "m"}, []string{`backend.kind: unknown backend "deepspeed"`}},
		{Config{Kind: "external"}, []string{"backend.endpoint: required", "backend.model: required"}},
	}
	for _, tc := range cases {
		c := tc.cfg
		c.Normalize()
		ps := c.Validate()
		if len(ps) != len(tc.want) {
			t.Errorf("%+v: %d problems %v, want %d", tc.cfg.Kind, len(ps), ps, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(ps[i].Error(), w) {
				t.Errorf("problem %d: %q, want it to contain %q", i, ps[i].Error(), w)
			}
		}
	}
}

func TestNormalizeSpellings(t *testing.T) {
	c := Config{Kind: "TRT-LLM", Precision: "BFloat16", Quantization: &Quantization{Method: "BNB", Bits: 8}}
	notes := c.Normalize()
	if c.Kind != TRTLLM || c.Precision != "bf16" || c.Quantization.Method != "bitsandbytes" || !c.Quantization.Enabled || len(notes) != 4 {
		t.Fatalf("%+v %+v %v", c, c.Quantization, notes)
	}
}

// The launcher starts the reference server (its protocol-test model, no
// torch needed), waits for health, and stops it; a server that dies at
// start is reported with its log's tail.
func TestStartAndStopReferenceServer(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is required for the reference server test")
	}
	dir := t.TempDir()
	py := filepath.Join(dir, "server.py")
	if err := os.WriteFile(py, PyServer, 0o644); err != nil {
		t.Fatal(err)
	}
	c := Config{Kind: PyTorch, Model: "toy:", Port: freePort(t)}
	c.Normalize()
	l, err := Command(&c, py)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	srv, err := Start(ctx, l, c.BaseURL(), dir, filepath.Join(dir, "server.log"), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if exited, _ := srv.Exited(); exited {
		t.Fatal("server exited")
	}
	if err := srv.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if exited, _ := srv.Exited(); !exited {
		t.Fatal("server still running after Stop")
	}
	// A bad option: the server exits, and the error says why.
	l, _ = Command(&c, py)
	l.Argv = append(l.Argv, "--lora", "nameonly")
	_, err = Start(ctx, l, c.BaseURL(), dir, filepath.Join(dir, "bad.log"), 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "want NAME=PATH") {
		t.Fatalf("want the server's own message, got %v", err)
	}
}

// The reference server shards plain models only: tensor parallelism with
// adapters is refused by name.
func TestPyTorchTensorParallelRefusesAdapters(t *testing.T) {
	c := Config{Kind: "pytorch", Model: "m", Parallelism: Parallelism{Tensor: 2}, LoRA: []LoRA{{Name: "a", Path: "random:8"}}, PyTorch: &PyTorchConfig{}}
	c.Normalize()
	var msgs []string
	for _, p := range c.Validate() {
		msgs = append(msgs, p.Error())
	}
	if got := strings.Join(msgs, "\n"); !strings.Contains(got, "backend.parallelism.tensor: the reference server shards plain models only") {
		t.Fatalf("got %q", got)
	}
}

func TestWriteMatrix(t *testing.T) {
	var b strings.Builder
	WriteMatrix(&b)
	if !strings.Contains(b.String(), "| pipeline parallel | yes | yes | yes | no¹ | yes | no¹ |") {
		t.Fatalf("matrix:\n%s", b.String())
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// Secrets in the backend's environment never reach logs or stored
// configurations; the launch itself gets them.
func TestSecretsRedacted(t *testing.T) {
	c := Config{Kind: VLLM, Model: "m", Env: map[string]string{"HF_TOKEN": "hf_abc123", "VLLM_API_KEY": "k", "OMP_NUM_THREADS": "4"}}
	c.Normalize()
	l, _ := Command(&c, "")
	s := l.String()
	if strings.Contains(s, "hf_abc123") || !strings.Contains(s, "HF_TOKEN=<redacted>") || !strings.Contains(s, "OMP_NUM_THREADS=4") {
		t.Fatalf("launch line: %s", s)
	}
	found := false
	for _, e := range l.Env {
		found = found || e == "HF_TOKEN=hf_abc123"
	}
	if !found {
		t.Fatal("the launch lost the real token")
	}
	r := c.Redacted()
	if r.Env["HF_TOKEN"] != "<redacted>" || r.Env["OMP_NUM_THREADS"] != "4" || c.Env["HF_TOKEN"] != "hf_abc123" {
		t.Fatalf("redacted %v, original %v", r.Env, c.Env)
	}
}
