#!/usr/bin/env bash
# Runs on the GPU machine: three lem agents on GPU 0 next to a PyTorch
# workload with known phases, each publishing to its own `lem serve` backbone:
#   A (validation): energy counter read at every refresh (10 Hz, aligned),
#     instant power field at 10 Hz beside the 20 ms driver buffer;
#   B (production cadence): defaults (counter reads aligned to its refresh,
#     period set by the CPU budget, buffer once a second, state at 2 Hz);
#     its CPU time is the agent's own (ingest runs in `lem serve`);
#   C (production cadence, C_FLAGS: plain counter reads by default,
#     e.g. C_FLAGS="-counter-cpu-budget 0.003" for aligned at 0.3%);
#   D (only with D_FLAGS set: a fourth production agent with those flags).
# Then `lem validate-power` compares, per phase, counter vs each series, and
# B and C calibrated against A's counter.
# Usage: run.sh LEM_BINARY OUT_DIR   (writes at most 10 files into OUT_DIR)
set -uo pipefail
lem=$1 out=$2
mkdir -p "$out"
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,power.limit,pci.bus_id --format=csv > "$out/gpu.csv" 2>&1
"$lem" version >> "$log"
"$lem" serve -listen 127.0.0.1:4331 -parquet "$out/storeA" -quiet >> "$log" 2>&1 & sa=$!
"$lem" serve -listen 127.0.0.1:4332 -parquet "$out/storeB" -quiet >> "$log" 2>&1 & sb=$!
"$lem" serve -listen 127.0.0.1:4333 -parquet "$out/storeC" -quiet >> "$log" 2>&1 & sc=$!
sd=; [ -n "${D_FLAGS:-}" ] && { "$lem" serve -listen 127.0.0.1:4334 -parquet "$out/storeD" -quiet >> "$log" 2>&1 & sd=$!; }
sleep 2
"$lem" agent -nats nats://127.0.0.1:4331 -devices 0 -instant -aligned-counter -counter-interval 100ms -counter-cpu-budget -1 -duration 300s -quiet > "$out/agentA.tmp" 2>&1 & aa=$!
"$lem" agent -nats nats://127.0.0.1:4332 -devices 0 -duration 300s -quiet -metrics 127.0.0.1:9466 -spool "$out/spoolB" > "$out/agentB.tmp" 2>&1 & ab=$!
"$lem" agent -nats nats://127.0.0.1:4333 -devices 0 -duration 300s -quiet -metrics 127.0.0.1:9467 -spool "$out/spoolC" ${C_FLAGS:--aligned-counter=false} > "$out/agentC.tmp" 2>&1 & ac=$!
ad=; [ -n "$sd" ] && { sleep 1; "$lem" agent -nats nats://127.0.0.1:4334 -devices 0 -duration 300s -quiet -metrics 127.0.0.1:9468 -spool "$out/spoolD" $D_FLAGS > "$out/agentD.tmp" 2>&1 & ad=$!; }
sleep 4
python3 "$(dirname "$0")/workload.py" "$out/phases.csv" >> "$log" 2>&1 || tail -20 "$log"
sleep 2
kill -INT $aa $ab $ac $ad; wait $aa $ab $ac $ad
sleep 2
kill -INT $sa $sb $sc $sd; wait $sa $sb $sc $sd
{ echo "A (validation cadence):"; tail -2 "$out/agentA.tmp"; echo "B (production cadence, defaults):"; tail -2 "$out/agentB.tmp"
  echo "C (${C_FLAGS:--aligned-counter=false}):"; tail -2 "$out/agentC.tmp"
  [ -n "$ad" ] && { echo "D ($D_FLAGS):"; tail -2 "$out/agentD.tmp"; }; } | tee -a "$log"
rm -rf "$out"/agent?.tmp "$out"/spool? lem-agent-spool
"$lem" validate-power -parquet "$out/storeA" -phases "$out/phases.csv" > "$out/reportA.md" 2>&1
"$lem" validate-power -parquet "$out/storeB" -phases "$out/phases.csv" > "$out/reportB.md" 2>&1
"$lem" validate-power -parquet "$out/storeB" -reference "$out/storeA" -phases "$out/phases.csv" > "$out/reportB-vs-A.md" 2>&1
"$lem" validate-power -parquet "$out/storeC" -reference "$out/storeA" -phases "$out/phases.csv" > "$out/reportC-vs-A.md" 2>&1
"$lem" validate-power -parquet "$out/storeC" -phases "$out/phases.csv" > "$out/reportC.md" 2>&1
[ -n "$ad" ] && "$lem" validate-power -parquet "$out/storeD" -reference "$out/storeA" -phases "$out/phases.csv" > "$out/reportD-vs-A.md" 2>&1
cat "$out/reportA.md" "$out/reportB.md" "$out/reportC.md" "$out/reportB-vs-A.md" "$out/reportC-vs-A.md"
[ -n "$ad" ] && cat "$out/reportD-vs-A.md"
tar czf "$out/stores.tgz" -C "$out" storeA storeB storeC $([ -n "$ad" ] && echo storeD) && rm -rf "$out"/store?  "$out"/store?.nats
