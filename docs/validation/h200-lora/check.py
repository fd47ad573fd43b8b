#!/usr/bin/env python3
"""Checks the reference server's LoRA serving on a GPU: a PEFT-format
adapter folder and a random adapter load; greedy outputs of the base and
of each adapter, alone and in mixed batches; an unknown model is refused.
Usage: check.py SERVER_PY OUT_JSON"""
import json, os, subprocess, sys, tempfile, threading, time, urllib.request, urllib.error

server, out = sys.argv[1], sys.argv[2]
import torch
from safetensors.torch import save_file

folder = tempfile.mkdtemp()
g = torch.Generator().manual_seed(7)
w = {}
for i in range(16):  # random:llama-0.9b: 16 layers, hidden 2048
    for m in ("q_proj", "v_proj"):
        k = f"base_model.model.model.layers.{i}.self_attn.{m}"
        w[k + ".lora_A.weight"] = torch.randn(8, 2048, generator=g) / 45.25
        w[k + ".lora_B.weight"] = torch.randn(2048, 8, generator=g) * 0.05
save_file(w, os.path.join(folder, "adapter_model.safetensors"))
json.dump({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"},
          open(os.path.join(folder, "adapter_config.json"), "w"))

port = 18733
log = open(out + ".server.log", "w")
p = subprocess.Popen([sys.executable, server, "--model", "random:llama-0.9b", "--port", str(port), "--dtype", "bf16",
                      "--max-batch-size", "4", "--batching", "static", "--batch-timeout-ms", "300", "--seed", "1",
                      "--lora", "r16=random:16", "--lora", f"peft={folder}"], stdout=log, stderr=subprocess.STDOUT)
base = f"http://127.0.0.1:{port}"
t0 = time.time()
while time.time() - t0 < 300:
    try:
        urllib.request.urlopen(base + "/health", timeout=2).read()
        break
    except Exception:
        time.sleep(1)
report = {"startup_s": round(time.time() - t0, 1)}


def complete(model, prompt="The energy of a token is", n=24):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
    try:
        r = json.loads(urllib.request.urlopen(req, timeout=120).read())
        return r["choices"][0]["text"], r["model"]
    except urllib.error.HTTPError as e:
        return None, e.code


def batch(models):
    res = [None] * len(models)
    def run(i, m):
        res[i] = complete(m)[0]
    ts = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(models)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


try:
    report["models"] = [m["id"] for m in json.loads(urllib.request.urlopen(base + "/v1/models").read())["data"]]
    # Homogeneous batches of 4 (same kernels as the mixed one), then mixed.
    homo = {m: batch([m] * 4)[0] for m in ("random:llama-0.9b", "r16", "peft")}
    mixed = batch(["random:llama-0.9b", "r16", "peft", "random:llama-0.9b"])
    same = lambda a, b: sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
    report["adapter_differs_from_base"] = {"r16": 1 - same(homo["r16"], homo["random:llama-0.9b"]),
                                           "peft": 1 - same(homo["peft"], homo["random:llama-0.9b"])}
    report["mixed_batch_agrees_with_homogeneous"] = {"base": same(mixed[0], homo["random:llama-0.9b"]), "r16": same(mixed[1], homo["r16"]),
                                                     "peft": same(mixed[2], homo["peft"]), "base2": same(mixed[3], homo["random:llama-0.9b"])}
    report["unknown_model"] = complete("nope")[1]
    report["response_model"] = complete("r16", n=2)[1]
    # Cost: 8 requests of 128 tokens, base vs adapter, timed.
    for m in ("random:llama-0.9b", "r16"):
        t = time.time()
        batch([m] * 4)
        report[f"batch4_s_{m}"] = round(time.time() - t, 3)
    report["metrics"] = [l for l in urllib.request.urlopen(base + "/metrics").read().decode().splitlines() if "lora" in l]
finally:
    p.terminate()
    p.wait()
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
