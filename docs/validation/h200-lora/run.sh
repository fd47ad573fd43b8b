#!/usr/bin/env bash
# Runs on the GPU machine: the reference server's LoRA check (check.py),
# then `lem run` of lora.yaml (base vs a rank-16 adapter).
# Usage: run.sh LEM_BINARY OUT_DIR
set -uo pipefail
lem=$(realpath "$1") out=$(realpath -m "$2") here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" > "$out/versions.txt" 2>&1
work=$(mktemp -d)
cd "$work"
cp "$(dirname "$here")/../../collectors/loadgen/backend/pyserver/server.py" "$work/server.py" 2>/dev/null
timeout 400 python3 "$here/check.py" "$work/server.py" "$out/check.json" > "$out/check.txt" 2>&1; echo "check rc $?" >> "$out/check.txt"
tail -5 "$out/check.json.server.log" >> "$out/check.txt" 2>/dev/null; rm -f "$out/check.json.server.log"
start=$(date +%s)
"$lem" run -out "$work/lora" -log-format json "$here/lora.yaml" > "$out/run-stdout.txt" 2> "$work/stderr.txt"
echo "rc $? in $(( $(date +%s) - start )) s" >> "$out/run-stdout.txt"
grep -v '"cycle ' "$work/stderr.txt" | grep -i 'phase done\|error\|warn' | tail -20 >> "$out/run-stdout.txt"
tar -C "$work" -czf "$out/store.tgz" lora/store
