#!/usr/bin/env bash
# CPU forward throughput of the ~0.5B Qwen3-VL text decoder: this crate (FastCpu) and
# transformers on PyTorch CPU (float32, 2 threads), same checkpoint, one run; prints both tables
# and the Rust/PyTorch ratios. Run by hand from anywhere inside the repository:
#
#   PYTHON=/path/to/venv/bin/python model-qwen3vl/scripts/bench_cpu.sh
#
# PYTHON: an interpreter with scripts/requirements-fixtures.txt installed (default: python3).
# AXPO_BENCH_DIR: where the 1 GB bench checkpoint is written once (default: $TMPDIR).
# AXPO_BENCH_TOKENS / AXPO_BENCH_DECODE / AXPO_BENCH_REPS: prompt length (512), decode steps
# (64), timed repetitions (3, best taken).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
export AXPO_BENCH_DIR="${AXPO_BENCH_DIR:-${TMPDIR:-/tmp}/axpo-qwen3vl-bench-0.5b}"
export AXPO_BENCH_TOKENS="${AXPO_BENCH_TOKENS:-512}"
export AXPO_BENCH_DECODE="${AXPO_BENCH_DECODE:-64}"
export AXPO_BENCH_REPS="${AXPO_BENCH_REPS:-3}"
tokens="$AXPO_BENCH_TOKENS"
steps="$AXPO_BENCH_DECODE"
reps="$AXPO_BENCH_REPS"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

(cd "$root" && cargo bench -p axpo-model-qwen3vl --bench forward) | tee "$log"
"$PYTHON" "$here/bench_transformers.py" --model "$AXPO_BENCH_DIR" --tokens "$tokens" \
    --decode "$steps" --reps "$reps" --threads 2 | tee -a "$log"

echo
echo "| phase | axpo tokens/s | transformers tokens/s | ratio (axpo / transformers) |"
echo "|---|---|---|---|"
awk '
/^RESULT rust/  { for (i = 3; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] } }
/^RESULT torch/ { for (i = 3; i <= NF; i++) { split($i, kv, "="); t[kv[1]] = kv[2] } }
END {
  n = split("score_tps prefill_tps decode_tps", keys, " ")
  for (i = 1; i <= n; i++) {
    k = keys[i]
    printf "| %s | %.2f | %.2f | %.2fx |\n", k, r[k], t[k], (t[k] > 0 ? r[k] / t[k] : 0)
  }
}' "$log"
