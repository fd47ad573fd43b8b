#!/usr/bin/env bash
# The counter-spacing table of ../h200-issue12.md: spacing of one run's
# NVML energy-counter reads, from the committed stores, exported by lem.
# Usage (from the repository root, after make build):
#   docs/validation/h200-issue12/spacing.sh bin/lem
set -euo pipefail
lem=$(realpath "$1") here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xzf "$here/stores.tgz"
mkdir -p "$work/old" && tar -C "$work/old" -xzf "$here/../h200-lem-run/store.tgz"
for spec in "old:h200-pytorch-reference-20261127T091424Z-c16" cudnn default; do
  dir=${spec%%:*} run=${spec#*:}
  if [ "$run" = "$spec" ]; then # the run id from the store: its only run
    run=$("$lem" runs -quiet -parquet "$work/$dir/store" | awk 'NR == 2 {print $1}')
  fi
  "$lem" export -quiet -parquet "$work/$dir/store" -run "$run" -format csv -tables energy_readings -out "$work/csv-$dir" >/dev/null
  python3 - "$dir" "$work/csv-$dir/energy_readings.csv" <<'PY'
import csv, sys
ts = sorted(int(r["ts_before_ns"]) for r in csv.DictReader(open(sys.argv[2])) if r["source"].startswith("nvml.counter"))
gaps = sorted((b - a) / 1e9 for a, b in zip(ts, ts[1:]))
def pct(p):
    h = p / 100 * (len(gaps) - 1)
    lo = int(h)
    return gaps[-1] if lo >= len(gaps) - 1 else gaps[lo] + (h - lo) * (gaps[lo + 1] - gaps[lo])
print(f"{sys.argv[1]}: {len(ts)} counter reads, spacing p10/p50/p90/max {pct(10):.2f} / {pct(50):.2f} / {pct(90):.2f} / {gaps[-1]:.2f} s")
PY
done
