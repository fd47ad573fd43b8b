#!/usr/bin/env bash
# Runs on the GPU machine: one lem agent on GPU 0 reading the energy
# counter at every refresh (aligned) and the 20 ms driver buffer into a
# Parquet store, next to timebase.py's step loads with host-known edges.
# `go test ./analytics -run TimeBase -v` measures the buffer's and the
# counter's delay from the committed store (docs/validation/h200-timebase).
# Usage: timebase.sh LEM_BINARY OUT_DIR
set -uo pipefail
lem=$1 out=$2
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
"$lem" agent -parquet "$out/store" -devices 0 -aligned-counter -counter-interval 100ms -counter-cpu-budget -1 -duration 200s -quiet > "$out/agent.txt" 2>&1 & ag=$!
sleep 4
python3 "$(dirname "$0")/timebase.py" "$out/steps.csv" "${REPEATS:-8}" > "$out/workload.txt" 2>&1 || tail -20 "$out/workload.txt"
sleep 3
kill -INT $ag; wait $ag
tail -3 "$out/agent.txt"
tar czf "$out/store.tgz" -C "$out" store && rm -rf "$out/store" "$out"/*.nats lem-agent-spool
ls -la "$out"
