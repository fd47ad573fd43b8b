#!/bin/bash
# Issue 16 on the GPU machine: the platform (lem web) and a worker (lem
# worker -profile auto: the profile from NVML) on the H200 host; a job
# submitted through the API (lem submit) runs the reference server on the
# GPU and must come back verified onto the leaderboard.
#   bash docs/validation/h200-jobs/run.sh LEM OUT
set -u
LEM=$1 OUT=$2
mkdir -p "$OUT"
W=$(mktemp -d)
nvidia-smi --query-gpu=name,power.limit --format=csv,noheader > "$OUT/gpu.txt"
"$LEM" web -listen 127.0.0.1:18080 -nats-listen 127.0.0.1:18081 -data "$OUT/web" -admin-token-file "$W/admin.token" \
  -worker-token-file "$W/worker.token" -publish-local=false > "$OUT/web.log" 2>&1 &
WEB=$!
for i in $(seq 50); do grep -q "results platform is at" "$OUT/web.log" && break; sleep 0.2; done
"$LEM" worker -nats nats://127.0.0.1:18081 -platform http://127.0.0.1:18080 -token-file "$W/worker.token" -profile auto \
  -data "$W/worker" -id h200-worker -log-format console > "$OUT/worker.log" 2>&1 &
WORKER=$!
sleep 3
cat > "$OUT/job.yaml" <<'YAML'
experiment: h200-remote-job
backend: {kind: pytorch, model: "random:llama-0.9b", port: 18090, precision: bf16, pytorch: {max_batch_size: 16, batching: dynamic}}
workload: {requests: 64, arrival: {concurrency: 16}, dataset: {prompt_tokens: {mean: 256}, output_tokens: {mean: 64}}}
measurement: {cycles: 3, baseline: 10s, settle: 2s, cooldown: {min: 2s, max: 10s}}
collectors: {gpu: nvml}
YAML
"$LEM" submit -to http://127.0.0.1:18080 -token-file "$W/admin.token" -profile h200-sxm -yes -wait "$OUT/job.yaml" 2>&1 | tee "$OUT/submit.txt"
echo "submit rc ${PIPESTATUS[0]}" >> "$OUT/submit.txt"
TOK=$(cat "$W/admin.token")
curl -s -H "Authorization: Bearer $TOK" "http://127.0.0.1:18080/api/jobs?all=1" > "$OUT/jobs.json"
curl -s "http://127.0.0.1:18080/api/leaderboard?workload=*" > "$OUT/leaderboard.json"
kill $WORKER; wait $WORKER
kill $WEB; wait $WEB
rm -rf "$W"
