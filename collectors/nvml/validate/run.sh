#!/usr/bin/env bash
# Runs on the GPU machine: lem agent (NVML, buffer + instant + counter) next
# to a PyTorch workload with known phases, then compares per phase.
# Usage: run.sh LEM_BINARY OUT_DIR
set -uo pipefail
lem=$1 out=$2
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
"$lem" version > "$out/version.txt"
"$lem" agent -devices 0 -instant -duration 300s -parquet "$out/store" > "$out/agent.log" 2>&1 &
agent=$!
sleep 4
python3 "$(dirname "$0")/workload.py" "$out/phases.csv" > "$out/workload.log" 2>&1 || tail -20 "$out/workload.log"
sleep 2; kill -INT $agent; wait $agent
tail -3 "$out/agent.log"
"$lem" validate-power -parquet "$out/store" -phases "$out/phases.csv" > "$out/report.md" 2>&1
cat "$out/report.md"
