#!/usr/bin/env bash
# Runs framegate's codec bench (1 KiB lines) and the same work in Mercurial's
# wireprotoframing, back to back, and prints throughput ratios.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=$(bench/peer/setup-venv.sh)
cargo bench --locked -p framegate-wire --bench codec -- 1kib/ >&2
"$python" bench/peer/hg_framing.py 5 > target/hg_framing.json
python3 - <<'PY'
import json
hg = json.load(open("target/hg_framing.json"))
print(f"{'line':42} {'framegate':>12} {'mercurial':>12} {'ratio':>8}")
worst = None
for line, hg_s in hg.items():
    est = json.load(open(f"target/criterion/{line}/new/estimates.json"))
    fg_s = est["median"]["point_estimate"] / 1e9
    ratio = hg_s / fg_s
    worst = ratio if worst is None else min(worst, ratio)
    mib = 100_000 * 1024 / 2**20
    print(f"{line:42} {mib/fg_s:9.0f} MiB/s {mib/hg_s:9.1f} MiB/s {ratio:7.1f}x")
print(f"lowest ratio: {worst:.1f}x (target: at least 10x)")
PY
