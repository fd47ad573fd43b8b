#!/usr/bin/env python3
"""GPU workload with known phases for validating lem's NVML collector.

Writes phases.csv (name,start_unix_ns,end_unix_ns,details) on the host
clock. Phases: idle, matmul burst, idle, 10 Hz on/off load (it makes polled
instant power alias), idle, prefill-like forward passes of a random-weight
Llama-shaped model, idle, batched decode-like steps, idle.
"""
import csv
import sys
import time

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "phases.csv"
dev = torch.device("cuda")
rows = []


def phase(name, fn, details=""):
    torch.cuda.synchronize()
    a = time.time_ns()
    fn()
    torch.cuda.synchronize()
    b = time.time_ns()
    rows.append((name, a, b, details))
    print(f"{name}: {(b - a) / 1e9:.2f} s", flush=True)


def idle(sec):
    return lambda: time.sleep(sec)


x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)


def matmul_for(sec):
    def run():
        end = time.time() + sec
        while time.time() < end:
            for _ in range(8):
                x @ x
            torch.cuda.synchronize()
    return run


def onoff(sec, hz=10):
    def run():
        period = 1.0 / hz
        start = time.time()
        k = 0
        while time.time() - start < sec:
            on_until = start + k * period + period / 2
            while time.time() < on_until:
                x @ x
                torch.cuda.synchronize()
            off_until = start + (k + 1) * period
            time.sleep(max(0.0, off_until - time.time()))
            k += 1
    return run


from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                  num_key_value_heads=16, vocab_size=32000, max_position_embeddings=4096)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to(dev, dtype=torch.bfloat16).eval()
prompt = torch.randint(0, 32000, (16, 1024), device=dev)


def prefill_for(sec):
    def run():
        end = time.time() + sec
        with torch.no_grad():
            while time.time() < end:
                model(prompt)
                torch.cuda.synchronize()
    return run


def decode_for(sec):
    def run():
        with torch.no_grad():
            o = model(prompt[:, :128], use_cache=True)
            past, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
            end = time.time() + sec
            while time.time() < end:
                o = model(tok, past_key_values=past, use_cache=True)
                past, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
    return run


model(prompt[:, :8])  # warm-up outside the phases
torch.cuda.synchronize()
phase("idle", idle(5))
phase("matmul", matmul_for(4), "bf16 8192^3 loop")
phase("idle_after_load", idle(3))
phase("onoff_10hz", onoff(4), "50 ms on / 50 ms off")
phase("idle2", idle(2))
phase("prefill", prefill_for(4), "batch 16 x 1024 tokens, 0.9B random Llama")
phase("idle3", idle(2))
phase("decode", decode_for(6), "batch 16, one token per step")
phase("idle4", idle(3))

with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["name", "start_unix_ns", "end_unix_ns", "details"])
    w.writerows(rows)
