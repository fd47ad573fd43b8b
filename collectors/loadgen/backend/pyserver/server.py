#!/usr/bin/env python3
"""lem's reference PyTorch/transformers inference server.

A small OpenAI-compatible streaming server (stdlib HTTP, no web framework),
so that lem's whole path runs where only torch and transformers exist:

  POST /v1/completions, /v1/chat/completions   (stream or not; SSE with
       stream_options.include_usage and continuous_usage_stats; a role-only
       first chunk for chat; per-request `timings` in the last chunk)
  GET  /health, /v1/models, /metrics (Prometheus text)
  POST /tokenize  {"content": "..."} -> {"tokens": [...]}

Batching (--batching): static (wait for --max-batch-size requests or
--batch-timeout-ms), dynamic (take what is queued), sorted-static /
sorted-dynamic (the same, queued prompts sorted by length). A batch runs a
manual decode loop over the KV cache and streams each step's token to its
request; new requests wait for the next batch (no continuous batching:
that is what vLLM/SGLang are for).

LoRA (--lora NAME=PATH, repeatable): adapters beside the base model, chosen
per request by the request's "model" field (as vLLM does: the adapter's
name; the base model's name or none for the base). PATH is a PEFT adapter
folder (adapter_config.json with r, lora_alpha and target_modules;
adapter_model.safetensors or .bin) or "random:R[:modules]" for a random
rank-R adapter (default modules q_proj,v_proj), to measure the cost of
serving one without downloading it. A batch may mix adapters: each row's
adapter is added to the base layer's output for that row only (no peft
needed). Unknown model names are refused with 404.

Tensor parallelism (--tensor-parallel N, started by torchrun with N
processes, one per GPU): transformers' own tensor parallelism (tp_plan
"auto") shards the model over the processes; rank 0 serves HTTP and, for
each batch, broadcasts the batch's requests and then each step's tokens, so
every rank runs the same forward passes. Random weights are built on rank 0,
saved once to a temporary folder and loaded sharded by every rank.

Models: a Hugging Face id or path; "random:<preset or config.json>" for
random weights built from a config (no download: presets llama-0.9b,
llama-tiny); "toy:" is a pure-Python stand-in with no torch at all, for
testing the protocol only — it does no inference and says so in /v1/models.
"""
import argparse
import json
import math
import queue
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRESETS = {
    "llama-0.9b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                       num_attention_heads=16, num_key_value_heads=16, vocab_size=32000,
                       max_position_embeddings=4096),
    "llama-tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, vocab_size=32000,
                       max_position_embeddings=2048),
}


class ByteTokenizer:
    """Tokenizer for random-weight and toy models (no tokenizer files):
    one token per UTF-8 byte; generated ids decode to printable characters."""
    eos_token_id = None

    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text):
        return [b + 3 for b in text.encode("utf-8")] or [3]

    def decode_one(self, tid):
        return chr(33 + tid % 94)


class Request:
    def __init__(self, rid, prompt_ids, max_tokens, temperature, top_p, top_k, seed, ignore_eos, adapter=None):
        self.id = rid
        self.adapter = adapter  # a LoRA adapter's name, or None for the base model
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.seed = seed
        self.ignore_eos = ignore_eos
        self.out = queue.Queue()  # token ids, then None
        self.arrived = time.time()
        self.started = self.first = self.done = None
        self.generated = 0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.requests = 0
        self.prompt_tokens = 0
        self.gen_tokens = 0
        self.batches = 0
        self.batch_size_sum = 0
        self.queue_seconds = 0.0
        self.adapter_requests = {}  # LoRA adapter name -> requests served


def parse_lora(specs):
    """--lora NAME=PATH options as [(name, path)], names unique."""
    out, seen = [], set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            sys.exit(f"--lora {spec!r}: want NAME=PATH")
        if name in seen:
            sys.exit(f"--lora {name}: given twice")
        seen.add(name)
        out.append((name, path))
    return out


class LoRALayer:
    """Wraps a torch Linear: y = W x (+ scale * B A x for the rows whose
    request uses an adapter). Installed by LoRA.attach; the batch's rows
    are set once per batch (LoRA.select)."""

    def __init__(self, torch, base, state):
        self.torch, self.base, self.state = torch, base, state
        self.adapters = {}  # name -> (A [r, in], B [out, r], scale)
        self.forward = base.forward
        base.forward = self.__call__

    def __call__(self, x):
        y = self.forward(x)
        rows = self.state.rows
        if not rows:
            return y
        for name, idx in rows.items():
            ad = self.adapters.get(name)
            if ad is None:
                continue
            a, b, scale = ad
            xs = x.index_select(0, idx)
            delta = (xs.to(a.dtype) @ a.t()) @ b.t()
            y.index_add_(0, idx, (delta * scale).to(y.dtype))
        return y


class LoRA:
    """The adapters of a model: name -> per-module weights."""

    def __init__(self):
        self.names = []
        self.rows = {}  # adapter name -> row indices of the batch being run
        self.layers = {}

    def layer(self, torch, model, path):
        if path not in self.layers:
            mod = model.get_submodule(path)
            if not isinstance(mod, torch.nn.Linear):
                sys.exit(f"LoRA target {path} is a {type(mod).__name__}, not a Linear layer")
            self.layers[path] = LoRALayer(torch, mod, self)
        return self.layers[path]

    def add_random(self, torch, model, name, spec, dev, dtype, seed):
        rank, _, mods = spec.partition(":")
        try:
            r = int(rank)
        except ValueError:
            sys.exit(f"--lora {name}=random:{spec}: want random:RANK[:module,module]")
        targets = (mods or "q_proj,v_proj").split(",")
        g = torch.Generator(device="cpu").manual_seed(seed)
        n = 0
        for path, mod in model.named_modules():
            if path.rsplit(".", 1)[-1] in targets and isinstance(mod, torch.nn.Linear):
                a = torch.randn(r, mod.in_features, generator=g) / math.sqrt(mod.in_features)
                b = torch.randn(mod.out_features, r, generator=g) * 0.02
                self.layer(torch, model, path).adapters[name] = (a.to(dev, dtype), b.to(dev, dtype), 2.0)
                n += 1
        if n == 0:
            sys.exit(f"--lora {name}: no Linear layer named {targets} in the model")
        self.names.append(name)
        return n

    def add_peft(self, torch, model, name, folder, dev, dtype):
        import os
        with open(os.path.join(folder, "adapter_config.json")) as f:
            cfg = json.load(f)
        r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
        st = os.path.join(folder, "adapter_model.safetensors")
        if os.path.exists(st):
            from safetensors.torch import load_file
            w = load_file(st)
        else:
            w = torch.load(os.path.join(folder, "adapter_model.bin"), map_location="cpu")
        pairs = {}
        for k, v in w.items():
            for part in ("lora_A", "lora_B"):
                tag = f".{part}."
                if tag in k:
                    mod = k.split(tag)[0]
                    for prefix in ("base_model.model.", "base_model."):
                        if mod.startswith(prefix):
                            mod = mod[len(prefix):]
                            break
                    pairs.setdefault(mod, {})[part] = v
        if not pairs:
            sys.exit(f"--lora {name}={folder}: no lora_A/lora_B weights")
        for mod, ab in pairs.items():
            if "lora_A" not in ab or "lora_B" not in ab:
                sys.exit(f"--lora {name}: {mod} lacks lora_A or lora_B")
            self.layer(torch, model, mod).adapters[name] = (ab["lora_A"].to(dev, dtype), ab["lora_B"].to(dev, dtype), alpha / r)
        self.names.append(name)
        return len(pairs)

    def select(self, torch, reqs, dev):
        """Sets the batch's rows per adapter (None: base model only)."""
        by = {}
        for i, r in enumerate(reqs):
            if r.adapter:
                by.setdefault(r.adapter, []).append(i)
        self.rows = {n: torch.tensor(ix, device=dev) for n, ix in by.items()}


class ToyModel:
    """No inference: deterministic pseudo-tokens with a fixed per-step time."""
    name_note = "toy (protocol test model, no inference)"

    def __init__(self, args):
        self.tok = ByteTokenizer(32000)
        self.step_s = 0.002
        # Adapters are routed and counted; the toy model has no weights to
        # adapt, and its tokens say which adapter served them.
        self.adapters = [name for name, _ in parse_lora(args.lora)]

    def run_batch(self, reqs, emit, finish):
        time.sleep(0.001 * sum(len(r.prompt_ids) for r in reqs) / 100)
        for r in reqs:
            r.first = time.time()
        alive = list(reqs)
        step = 0
        while alive:
            for r in list(alive):
                shift = 1 + self.adapters.index(r.adapter) if r.adapter in self.adapters else 0
                emit(r, (len(r.prompt_ids) * 31 + step * 7 + shift * 1000) % 32000)
                if r.generated >= r.max_tokens:
                    alive.remove(r)
                    finish(r)
            time.sleep(self.step_s)
            step += 1


class TorchModel:
    def __init__(self, args):
        import torch
        import transformers
        self.torch = torch
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        self.dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.dev.type == "cuda" and not args.cudnn_sdp:
            # cuDNN attention builds an execution plan for every new (batch,
            # KV length) shape, so each unseen shape's first step is slow
            # (13-20 ms against 55-95 ms on an H200, in regimes of seconds):
            # measured cycles would then trend with their position in the
            # run. The flash and memory-efficient SDPA kernels have no such
            # per-shape cost.
            torch.backends.cuda.enable_cudnn_sdp(False)
        self.step_log = open(args.step_log, "a", buffering=1) if args.step_log else None
        self.rank = 0
        kw = dict(torch_dtype=dtype)
        if args.attn_implementation:
            kw["attn_implementation"] = args.attn_implementation
        if args.quantization:
            if args.quantization != "bitsandbytes":
                sys.exit(f"quantization {args.quantization}: the reference server supports bitsandbytes only")
            kw["quantization_config"] = transformers.BitsAndBytesConfig(
                load_in_4bit=args.bits == 4, load_in_8bit=args.bits == 8)
        # Under torchrun (WORLD_SIZE set) the model is sharded over its
        # processes, also with one (which checks the path on one GPU).
        self.tp = args.tensor_parallel > 1 or "WORLD_SIZE" in __import__("os").environ
        if self.tp:
            self.init_tp(args, torch, transformers, kw)
        elif args.model.startswith("random:"):
            spec = args.model[len("random:"):]
            if spec in PRESETS:
                cfg = transformers.LlamaConfig(**PRESETS[spec])
            else:
                cfg = transformers.AutoConfig.from_pretrained(spec)
            torch.manual_seed(args.seed or 0)
            # Random weights are initialised where they will run: on the
            # GPU (about 10 s for 0.9 B parameters, against 42 s on the CPU).
            with torch.device(self.dev if not args.quantization else "cpu"):
                self.model = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
            self.tok = ByteTokenizer(cfg.vocab_size)
            self.name_note = f"random weights from {spec}"
        else:
            self.model = transformers.AutoModelForCausalLM.from_pretrained(args.model, **kw)
            self.tok = transformers.AutoTokenizer.from_pretrained(args.model)
            self.name_note = args.model
        if not args.quantization and not self.tp:
            self.model.to(self.dev)
        self.model.eval()
        # Reported in /v1/models as llama.cpp does (meta.n_params); lem
        # records it with the run. num_parameters counts 4-bit weights
        # unpacked.
        self.n_params = int(self.model.num_parameters())
        if args.torch_compile:
            self.model.forward = torch.compile(self.model.forward)
        self.lora = LoRA()
        self.adapters = []
        for name, path in parse_lora(args.lora):
            if args.quantization:
                sys.exit("--lora with --quantization: the reference server adapts full-precision layers only")
            if path.startswith("random:"):
                n = self.lora.add_random(torch, self.model, name, path[len("random:"):], self.dev, dtype, args.seed or 0)
            else:
                n = self.lora.add_peft(torch, self.model, name, path, self.dev, dtype)
            print(f"LoRA adapter {name}: {n} layers from {path}", flush=True)
        self.adapters = list(self.lora.names)
        self.assistant = None
        if args.assistant_model:
            self.assistant = transformers.AutoModelForCausalLM.from_pretrained(args.assistant_model, torch_dtype=dtype).to(self.dev)

    def init_tp(self, args, torch, transformers, kw):
        """Shards the model over the torchrun processes (tp_plan "auto")."""
        import os
        import tempfile
        import torch.distributed as dist
        if args.quantization or args.lora or args.assistant_model:
            sys.exit("--tensor-parallel: not with --quantization, --lora or --assistant-model in the reference server")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != args.tensor_parallel:
            sys.exit(f"--tensor-parallel {args.tensor_parallel}: started with {world} processes; start it with "
                     f"torchrun --nproc-per-node {args.tensor_parallel}")
        self.rank = int(os.environ.get("RANK", "0"))
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.dev = torch.device("cuda", torch.cuda.current_device())
        if not dist.is_initialized():
            dist.init_process_group("nccl")
        self.dist = dist
        path = args.model
        if args.model.startswith("random:"):
            spec = args.model[len("random:"):]
            holder = [None]
            if self.rank == 0:
                cfg = transformers.LlamaConfig(**PRESETS[spec]) if spec in PRESETS else transformers.AutoConfig.from_pretrained(spec)
                torch.manual_seed(args.seed or 0)
                with torch.device(self.dev):
                    m = transformers.AutoModelForCausalLM.from_config(cfg, **kw)
                holder[0] = tempfile.mkdtemp(prefix="lem-tp-")
                m.save_pretrained(holder[0])
                del m
                torch.cuda.empty_cache()
            dist.broadcast_object_list(holder, src=0)
            path = holder[0]
            self.tok = ByteTokenizer(transformers.AutoConfig.from_pretrained(path).vocab_size)
            self.name_note = f"random weights from {spec}, tensor parallel {args.tensor_parallel}"
        else:
            self.tok = transformers.AutoTokenizer.from_pretrained(args.model)
            self.name_note = f"{args.model}, tensor parallel {args.tensor_parallel}"
        self.model = transformers.AutoModelForCausalLM.from_pretrained(path, tp_plan="auto", **kw)
        if world == 1:
            # With one process transformers shards nothing and leaves the
            # weights where they loaded (the CPU): they go to this GPU.
            self.model.to(self.dev)
        dist.barrier()

    def broadcast_tokens(self, nxt):
        """Rank 0's sampled tokens to every rank (identical steps)."""
        if not self.tp:
            return nxt
        t = self.torch.tensor(nxt, device=self.dev, dtype=self.torch.long)
        self.dist.broadcast(t, 0)
        return t.tolist()

    def follow(self):
        """Ranks > 0: run every batch rank 0 broadcasts, forever."""
        while True:
            box = [None]
            self.dist.broadcast_object_list(box, src=0)
            reqs = [Request(*spec) for spec in box[0]]
            self.run_batch(reqs, lambda r, t: setattr(r, "generated", r.generated + 1), lambda r: None)

    def sample(self, logits, reqs, gens):
        torch = self.torch
        out = []
        for i, r in enumerate(reqs):
            lg = logits[i].float()
            if r.temperature <= 0:
                out.append(int(lg.argmax()))
                continue
            lg = lg / r.temperature
            if r.top_k and r.top_k > 0:
                v, _ = torch.topk(lg, r.top_k)
                lg[lg < v[-1]] = -math.inf
            probs = torch.softmax(lg, -1)
            if r.top_p and r.top_p < 1:
                sp, si = torch.sort(probs, descending=True)
                keep = torch.cumsum(sp, -1) - sp <= r.top_p
                mask = torch.zeros_like(probs, dtype=torch.bool)
                mask[si[keep]] = True
                probs = probs * mask
                probs = probs / probs.sum()
            out.append(int(torch.multinomial(probs, 1, generator=gens[i])))
        return out

    def run_batch(self, reqs, emit, finish):
        torch = self.torch
        eos = getattr(self.tok, "eos_token_id", None)
        gens = []
        for r in reqs:
            g = torch.Generator(device=self.dev)
            g.manual_seed(r.seed if r.seed is not None else random.randrange(1 << 31))
            gens.append(g)
        self.lora.select(torch, reqs, self.dev)
        if self.tp and self.rank == 0:
            # Every rank runs the same batch: its requests, as they came.
            self.dist.broadcast_object_list([[(r.id, r.prompt_ids, r.max_tokens, r.temperature, r.top_p, r.top_k, r.seed,
                                               r.ignore_eos, r.adapter) for r in reqs]], src=0)
        with torch.inference_mode():
            n = max(len(r.prompt_ids) for r in reqs)
            pad = 0
            ids = torch.tensor([[pad] * (n - len(r.prompt_ids)) + r.prompt_ids for r in reqs], device=self.dev)
            mask = torch.tensor([[0] * (n - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in reqs], device=self.dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            past = out.past_key_values
            nxt = self.broadcast_tokens(self.sample(out.logits[:, -1, :], reqs, gens))
            if self.dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.time()
            for r in reqs:
                r.first = now
            alive = [True] * len(reqs)
            step_t = time.time()
            while True:
                for i, r in enumerate(reqs):
                    if alive[i]:
                        emit(r, nxt[i])
                        if r.generated >= r.max_tokens or (not r.ignore_eos and eos is not None and nxt[i] == eos):
                            alive[i] = False
                            finish(r)
                if not any(alive):
                    break
                mask = torch.cat([mask, torch.ones((len(reqs), 1), dtype=mask.dtype, device=self.dev)], -1)
                pos = pos[:, -1:] + 1
                out = self.model(input_ids=torch.tensor([[t] for t in nxt], device=self.dev), attention_mask=mask,
                                 position_ids=pos, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = self.broadcast_tokens(self.sample(out.logits[:, -1, :], reqs, gens))  # syncs: argmax/multinomial to host
                if self.step_log:
                    t = time.time()
                    # batch size, KV length, seconds of this decode step
                    self.step_log.write(f"{len(reqs)} {mask.shape[1]} {t - step_t:.6f}\n")
                    step_t = t


class Engine:
    def __init__(self, args, model):
        self.args = args
        self.model = model
        self.q = []
        self.cv = threading.Condition()
        self.stats = Stats()
        threading.Thread(target=self.loop, daemon=True).start()

    def submit(self, r):
        with self.cv:
            self.q.append(r)
            self.stats.waiting = len(self.q)
            self.cv.notify()

    def take(self):
        a = self.args
        with self.cv:
            while not self.q:
                self.cv.wait()
            if a.batching in ("static", "sorted-static"):
                deadline = time.time() + a.batch_timeout_ms / 1000
                while len(self.q) < a.max_batch_size and time.time() < deadline:
                    self.cv.wait(max(0.0, deadline - time.time()))
            q = self.q
            if a.batching.startswith("sorted"):
                q.sort(key=lambda r: len(r.prompt_ids))
            batch, self.q = q[:a.max_batch_size], q[a.max_batch_size:]
            self.stats.waiting = len(self.q)
            return batch

    def loop(self):
        while True:
            batch = self.take()
            now = time.time()
            st = self.stats
            with st.lock:
                st.running = len(batch)
                st.batches += 1
                st.batch_size_sum += len(batch)
                for r in batch:
                    r.started = now
                    st.queue_seconds += now - r.arrived
                    if r.adapter:
                        st.adapter_requests[r.adapter] = st.adapter_requests.get(r.adapter, 0) + 1
                    st.prompt_tokens += len(r.prompt_ids)

            def emit(r, tid):
                r.generated += 1
                with st.lock:
                    st.gen_tokens += 1
                r.out.put(tid)

            def finish(r):
                if r.done is None:
                    r.done = time.time()
                    r.out.put(None)

            try:
                self.model.run_batch(batch, emit, finish)
            except Exception as e:  # report to every waiting client, and log it
                import traceback
                traceback.print_exc()
                sys.stderr.flush()
                for r in batch:
                    if r.done is None:
                        r.out.put(e)
            for r in batch:
                finish(r)
            with st.lock:
                st.running = 0
                st.requests += len(batch)


def make_handler(args, engine, tok, served):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # Each SSE chunk must leave at once: without TCP_NODELAY,
            # Nagle's algorithm holds small writes until the client's
            # delayed ACK (~40 ms), and tokens arrive in bursts.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *a):
            pass

        def send_json(self, code, obj):
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def do_GET(self):
            if self.path == "/health":
                return self.send_json(200, {"status": "ok"})
            if self.path == "/v1/models":
                data = [{"id": served, "object": "model", "owned_by": "lem-reference", "note": engine.model.name_note}]
                if getattr(engine.model, "n_params", 0):
                    data[0]["meta"] = {"n_params": engine.model.n_params}
                for a in engine.model.adapters:
                    data.append({"id": a, "object": "model", "owned_by": "lem-reference", "parent": served, "note": "LoRA adapter"})
                return self.send_json(200, {"object": "list", "data": data})
            if self.path == "/metrics":
                st = engine.stats
                with st.lock:
                    lines = [
                        "# TYPE lem_ref:requests_running gauge", f"lem_ref:requests_running {st.running}",
                        "# TYPE lem_ref:requests_waiting gauge", f"lem_ref:requests_waiting {st.waiting}",
                        "# TYPE lem_ref:requests_total counter", f"lem_ref:requests_total {st.requests}",
                        "# TYPE lem_ref:prompt_tokens_total counter", f"lem_ref:prompt_tokens_total {st.prompt_tokens}",
                        "# TYPE lem_ref:generation_tokens_total counter", f"lem_ref:generation_tokens_total {st.gen_tokens}",
                        "# TYPE lem_ref:batches_total counter", f"lem_ref:batches_total {st.batches}",
                        "# TYPE lem_ref:batch_size_sum counter", f"lem_ref:batch_size_sum {st.batch_size_sum}",
                        "# TYPE lem_ref:queue_seconds_total counter", f"lem_ref:queue_seconds_total {st.queue_seconds:.6f}",
                        "# TYPE lem_ref:lora_requests_total counter",
                    ] + [f'lem_ref:lora_requests_total{{adapter="{a}"}} {st.adapter_requests.get(a, 0)}' for a in engine.model.adapters]
                b = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
                return
            self.send_json(404, {"error": "not found"})

        def body(self):
            n = int(self.headers.get("Content-Length", "0"))
            return json.loads(self.rfile.read(n) or b"{}")

        def do_POST(self):
            try:
                req = self.body()
            except Exception as e:
                return self.send_json(400, {"error": f"bad JSON: {e}"})
            if self.path == "/tokenize":
                return self.send_json(200, {"tokens": tok.encode(req.get("content", ""))})
            chat = self.path == "/v1/chat/completions"
            if not chat and self.path != "/v1/completions":
                return self.send_json(404, {"error": "not found"})
            if chat:
                text = "\n".join(str(m.get("content", "")) for m in req.get("messages", []))
            else:
                text = req.get("prompt", "")
                if isinstance(text, list):
                    text = text[0] if text else ""
            model = req.get("model")
            adapter = None
            if model in engine.model.adapters:
                adapter = model
            elif model not in (None, "", served, args.model):
                return self.send_json(404, {"error": {"message": f"model {model!r} does not exist (serving {served!r} and adapters {engine.model.adapters})",
                                                      "type": "NotFoundError", "code": 404}})
            ids = tok.encode(text)
            if args.max_model_len and len(ids) >= args.max_model_len:
                return self.send_json(400, {"error": f"prompt of {len(ids)} tokens exceeds max_model_len {args.max_model_len}"})
            r = Request(f"cmpl-{id(self):x}-{time.time_ns()}", ids, int(req.get("max_tokens") or 16),
                        float(req.get("temperature", 1.0) if req.get("temperature") is not None else 1.0),
                        float(req.get("top_p") or 1.0), int(req.get("top_k") or 0), req.get("seed"),
                        bool(req.get("ignore_eos", False)), adapter)
            engine.submit(r)
            if req.get("stream"):
                self.stream(r, chat, req.get("stream_options") or {})
            else:
                self.whole(r, chat)

        def chunk(self, obj):
            data = b"data: " + json.dumps(obj).encode() + b"\n\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def timings(self, r):
            return {"queue_ms": 1000 * (r.started - r.arrived), "prompt_ms": 1000 * (r.first - r.started),
                    "predicted_ms": 1000 * ((r.done or time.time()) - r.first), "prompt_n": len(r.prompt_ids),
                    "predicted_n": r.generated}

        def stream(self, r, chat, opts):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            obj = "chat.completion.chunk" if chat else "text_completion"
            base = {"id": r.id, "object": obj, "created": int(r.arrived), "model": r.adapter or served}
            usage_each = opts.get("continuous_usage_stats")
            if chat:
                self.chunk({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
            n = 0
            while True:
                t = r.out.get()
                if t is None:
                    break
                if isinstance(t, Exception):
                    self.chunk({"error": {"message": str(t)}})
                    break
                n += 1
                piece = tok.decode_one(t) if isinstance(tok, ByteTokenizer) else tok.decode([t])
                choice = {"index": 0, "finish_reason": None}
                if chat:
                    choice["delta"] = {"content": piece}
                else:
                    choice["text"] = piece
                c = {**base, "choices": [choice]}
                if usage_each:
                    c["usage"] = {"prompt_tokens": len(r.prompt_ids), "completion_tokens": n,
                                  "total_tokens": len(r.prompt_ids) + n}
                self.chunk(c)
            fin = {"index": 0, "finish_reason": "length" if n >= r.max_tokens else "stop"}
            fin["delta" if chat else "text"] = {} if chat else ""
            self.chunk({**base, "choices": [fin], "timings": self.timings(r)})
            if opts.get("include_usage"):
                self.chunk({**base, "choices": [], "usage": {"prompt_tokens": len(r.prompt_ids), "completion_tokens": n,
                                                            "total_tokens": len(r.prompt_ids) + n}})
            done = b"data: [DONE]\n\n"
            self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
            self.wfile.flush()

        def whole(self, r, chat):
            toks = []
            while True:
                t = r.out.get()
                if t is None:
                    break
                if isinstance(t, Exception):
                    return self.send_json(500, {"error": str(t)})
                toks.append(t)
            text = "".join(tok.decode_one(t) for t in toks) if isinstance(tok, ByteTokenizer) else tok.decode(toks)
            choice = {"index": 0, "finish_reason": "length"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            self.send_json(200, {"id": r.id, "object": "chat.completion" if chat else "text_completion", "model": r.adapter or served,
                                 "choices": [choice], "timings": self.timings(r),
                                 "usage": {"prompt_tokens": len(r.prompt_ids), "completion_tokens": len(toks),
                                           "total_tokens": len(r.prompt_ids) + len(toks)}})
    return H


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--served-model-name")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--attn-implementation")
    p.add_argument("--torch-compile", action="store_true")
    p.add_argument("--assistant-model")
    p.add_argument("--quantization")
    p.add_argument("--bits", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--batching", default="dynamic", choices=["static", "dynamic", "sorted-static", "sorted-dynamic"])
    p.add_argument("--batch-timeout-ms", type=float, default=50)
    p.add_argument("--max-model-len", type=int, default=0)
    p.add_argument("--seed", type=int)
    p.add_argument("--lora", action="append", default=[], help="NAME=PATH (a PEFT adapter folder, or random:RANK[:modules]); repeatable")
    p.add_argument("--cudnn-sdp", action="store_true", help="keep cuDNN scaled-dot-product attention (off by default: per-shape plan building)")
    p.add_argument("--step-log", help="append one line per decode step: batch size, KV length, seconds")
    p.add_argument("--tensor-parallel", type=int, default=1, help="shard the model over N GPUs (start with torchrun --nproc-per-node N)")
    args = p.parse_args()
    if args.assistant_model and args.max_batch_size > 1:
        sys.exit("--assistant-model decodes one sequence at a time: set --max-batch-size 1")
    if args.tensor_parallel > 1 and args.model.startswith("toy:"):
        sys.exit("--tensor-parallel: the toy model has nothing to shard")
    model = ToyModel(args) if args.model.startswith("toy:") else TorchModel(args)
    if getattr(model, "rank", 0) > 0:
        model.follow()  # ranks > 0 serve no HTTP: they run what rank 0 runs
        return
    engine = Engine(args, model)
    srv = ThreadingHTTPServer((args.host, args.port), make_handler(args, engine, model.tok, args.served_model_name or args.model))
    srv.daemon_threads = True
    print(f"lem reference server: {model.name_note} on http://{args.host}:{args.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    main()
