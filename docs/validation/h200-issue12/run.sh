#!/usr/bin/env bash
# Runs on the GPU machine (python3 + torch + transformers, no Go): `lem run`
# twice with the reference server, cuDNN SDPA on (the server as it was)
# then off (its default now), logging every decode step's time; then
# analyses both stores. Usage: run.sh LEM_BINARY OUT_DIR (≤ 8 files).
set -uo pipefail
lem=$(realpath "$1") out=$(realpath -m "$2") here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
work=$(mktemp -d)
cd "$work"
for v in cudnn default; do
  start=$(date +%s)
  "$lem" run -out "$work/$v" -log-format json "$here/$v.yaml" > "$work/$v-stdout.txt" 2> "$work/$v-stderr.txt"
  echo "== $v: rc $? in $(( $(date +%s) - start )) s" >> "$out/run.txt"
  cat "$work/$v-stdout.txt" >> "$out/run.txt"
  grep -v '"cycle ' "$work/$v-stderr.txt" | grep -i 'phase done\|error\|warn' | tail -20 >> "$out/run.txt"
  cp "$work/steps-$v.txt" "$out/steps-$v.txt" 2>/dev/null || cp "$work/$v/steps-$v.txt" "$out/steps-$v.txt" 2>/dev/null
done
tar -C "$work" -czf "$out/stores.tgz" cudnn/store default/store
ls -la "$out" >> "$out/run.txt"
