#!/usr/bin/env python3
"""Step loads whose GPU start and stop are known on the host clock.

For lem's buffer time-base measurement (docs/methodology.md, "The driver
power buffer's time base"): bf16 matmul bursts of 0.1-2 s, each length
repeated, in shuffled order, separated by idle gaps of 0.8-1.6 s. For each
step, steps.csv gets the host time just before the first kernel was
enqueued on an idle GPU (the queue is empty: the kernel starts within
microseconds), the host time when the GPU finished (the start plus the
CUDA-event time between a start and an end event), and the host time after
the synchronisation returned.

Usage: timebase.py steps.csv [repeats]
"""
import csv
import random
import sys
import time

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "steps.csv"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 8
dev = torch.device("cuda")
x = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
# Warm up and time one matmul.
for _ in range(20):
    x @ x
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(50):
    x @ x
torch.cuda.synchronize()
per = (time.perf_counter() - t) / 50
print(f"one 8192^3 bf16 matmul: {per * 1e3:.3f} ms", flush=True)

lengths = [0.1, 0.2, 0.3, 0.5, 1.0, 2.0]
plan = [l for l in lengths for _ in range(reps)]
rng = random.Random(2026)
rng.shuffle(plan)
rows = []
time.sleep(3)
for i, sec in enumerate(plan):
    n = max(1, round(sec / per))
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    t0 = time.time_ns()
    s.record()
    for _ in range(n):
        x @ x
    e.record()
    e.synchronize()
    t2 = time.time_ns()
    gpu_ms = s.elapsed_time(e)
    rows.append((i, sec, n, t0, t0 + int(gpu_ms * 1e6), t2))
    time.sleep(rng.uniform(0.8, 1.6))
with open(out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["step", "nominal_s", "matmuls", "start_host_ns", "end_gpu_host_ns", "end_sync_host_ns"])
    w.writerows(rows)
print(f"{len(rows)} steps written to {out}", flush=True)
