#!/usr/bin/env python3
"""Per-step decode times of the reference server's --step-log files
(lines: batch size, KV length, seconds): the first table of
../h200-issue12.md. Usage: python3 steps.py steps-cudnn.txt steps-default.txt"""
import sys


def pct(xs, p):
    """Percentile with linear interpolation between order statistics."""
    s = sorted(xs)
    h = p / 100 * (len(s) - 1)
    lo = int(h)
    if lo >= len(s) - 1:
        return s[-1]
    return s[lo] + (h - lo) * (s[lo + 1] - s[lo])


for path in sys.argv[1:]:
    seen, first, repeat, all_ms = set(), [], [], []
    for line in open(path):
        b, kv, sec = line.split()
        ms = float(sec) * 1e3
        all_ms.append(ms)
        shape = (b, kv)
        (repeat if shape in seen else first).append(ms)
        seen.add(shape)
    over = sum(1 for x in all_ms if x > 40) / len(all_ms)
    print(f"{path}: {len(all_ms)} decode steps, p10/p50/p90/max "
          f"{pct(all_ms, 10):.1f} / {pct(all_ms, 50):.1f} / {pct(all_ms, 90):.1f} / {max(all_ms):.0f} ms; "
          f"first step of an unseen shape p50 {pct(first, 50):.1f} ms ({len(first)}), "
          f"repeated shape p50 {pct(repeat, 50):.1f} ms ({len(repeat)}); over 40 ms {over:.0%}")
