#!/usr/bin/env python3
"""Checks the reference server's tensor-parallel path on the GPUs there
are: the same random-weight model served plainly and under torchrun with
--tensor-parallel N (N = the GPUs visible; 1 exercises the path — process
group, sharded loading through transformers' tp_plan, rank 0's broadcasts —
without sharding). Greedy outputs must be equal.
Usage: check.py SERVER_PY OUT_JSON"""
import json, os, subprocess, sys, time, urllib.error, urllib.request
import torch

server, out = sys.argv[1], sys.argv[2]
n = torch.cuda.device_count()
report = {"gpus": n}


def serve(argv, port, log):
    p = subprocess.Popen(argv + ["--model", "random:llama-0.9b", "--port", str(port), "--dtype", "bf16", "--seed", "3",
                                 "--max-batch-size", "4"], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    t0 = time.time()
    while time.time() - t0 < 300:
        if p.poll() is not None:
            raise SystemExit(open(log).read()[-3000:])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return p, round(time.time() - t0, 1)
        except Exception:
            time.sleep(1)
    raise SystemExit("not healthy")


def complete(port, prompt):
    body = json.dumps({"prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}).encode()
    r = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
    try:
        return json.loads(urllib.request.urlopen(r, timeout=120).read())["choices"][0]["text"]
    except urllib.error.HTTPError as e:
        raise SystemExit(f"HTTP {e.code}: {e.read().decode()[:2000]}")


prompts = ["The energy of a token is", "Tensor parallel shards every layer", "x" * 300]
p, s = serve([sys.executable, server], 18751, out + ".plain.log")
try:
    report["plain_startup_s"] = s
    plain = [complete(18751, q) for q in prompts]
    t = time.time(); [complete(18751, q) for q in prompts]; report["plain_3req_s"] = round(time.time() - t, 3)
finally:
    p.terminate(); p.wait()
p, s = serve([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), server,
              "--tensor-parallel", str(n)], 18752, out + ".tp.log")
try:
    report["tp_startup_s"] = s
    report["tp_note"] = json.loads(urllib.request.urlopen("http://127.0.0.1:18752/v1/models").read())["data"][0]["note"]
    tp = [complete(18752, q) for q in prompts]
    t = time.time(); [complete(18752, q) for q in prompts]; report["tp_3req_s"] = round(time.time() - t, 3)
finally:
    p.terminate(); p.wait()
report["equal_outputs"] = [a == b for a, b in zip(plain, tp)]
report["token_agreement"] = [round(sum(x == y for x, y in zip(a, b)) / max(len(a), 1), 3) for a, b in zip(plain, tp)]
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
for f in (out + ".plain.log", out + ".tp.log"):
    print("==", f); print(open(f).read()[-1500:])
