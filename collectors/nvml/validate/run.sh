#!/usr/bin/env bash
# Runs on the GPU machine: two lem agents on GPU 0 next to a PyTorch workload
# with known phases, each publishing to its own `lem serve` backbone:
#   A (validation): energy counter at its full 10 Hz resolution, instant power
#     field at 10 Hz beside the 20 ms driver buffer;
#   B (production cadence): defaults (counter and buffer once a second, state
#     at 2 Hz); its CPU time is the agent's own (ingest runs in `lem serve`).
# Then `lem validate-power` compares, per phase, counter vs each series.
# Usage: run.sh LEM_BINARY OUT_DIR   (writes at most 7 files into OUT_DIR)
set -uo pipefail
lem=$1 out=$2
mkdir -p "$out"
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
"$lem" version >> "$log"
"$lem" serve -listen 127.0.0.1:4331 -parquet "$out/storeA" -quiet >> "$log" 2>&1 & sa=$!
"$lem" serve -listen 127.0.0.1:4332 -parquet "$out/storeB" -quiet >> "$log" 2>&1 & sb=$!
sleep 2
"$lem" agent -nats nats://127.0.0.1:4331 -devices 0 -instant -counter-interval 100ms -counter-cpu-budget -1 -duration 300s -quiet > "$out/agentA.tmp" 2>&1 & aa=$!
"$lem" agent -nats nats://127.0.0.1:4332 -devices 0 -duration 300s -quiet > "$out/agentB.tmp" 2>&1 & ab=$!
sleep 4
python3 "$(dirname "$0")/workload.py" "$out/phases.csv" >> "$log" 2>&1 || tail -20 "$log"
sleep 2
kill -INT $aa $ab; wait $aa $ab
sleep 2
kill -INT $sa $sb; wait $sa $sb
{ echo "A (validation cadence): $(tail -1 "$out/agentA.tmp")"; echo "B (production cadence): $(tail -1 "$out/agentB.tmp")"; } | tee -a "$log"
rm -f "$out"/agent?.tmp
"$lem" validate-power -parquet "$out/storeA" -phases "$out/phases.csv" > "$out/reportA.md" 2>&1
"$lem" validate-power -parquet "$out/storeB" -phases "$out/phases.csv" > "$out/reportB.md" 2>&1
"$lem" validate-power -parquet "$out/storeB" -reference "$out/storeA" -phases "$out/phases.csv" > "$out/reportB-vs-A.md" 2>&1
cat "$out/reportA.md" "$out/reportB.md" "$out/reportB-vs-A.md"
tar czf "$out/stores.tgz" -C "$out" storeA storeB && rm -rf "$out"/store?  "$out"/store?.nats
