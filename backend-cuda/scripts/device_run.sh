#!/usr/bin/env bash
# Run THERE (the H100/H200 machine), from the repository root, with the carry folder made by
# build_carry.sh. Results go to $OUT (the device tool's output folder).
#   usage: backend-cuda/scripts/device_run.sh [CARRY_DIR] [STAGES]
#   STAGES: comma list of env, tests, bench, torch, hf, model, resample
#           (default: env,tests,bench,torch)
#   AXPO_MODELS: the Qwen3-VL architectures of hf/model/resample (default 2B,8B)
#   AXPO_MODEL_DIR: where hf writes the random checkpoints that model reads (default /tmp)
# The machine needs no Rust toolchain and no network: the binaries are prebuilt, the Liger wheel
# is carried, and CUDA 13's libnvrtc / libcublas come from the toolkit or the pip wheels there.
set -uo pipefail
CARRY=${1:-.carry-cuda}
STAGES=${2:-env,tests,bench,torch}
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1 AXPO_REQUIRE_CUDA=1 AXPO_REQUIRE_NVRTC=1 RUST_BACKTRACE=1
has() { case ",$STAGES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# CUDA 13 libraries: the toolkit first, then the wheels of the image's Python.
libdirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
  [ -d "$d" ] && libdirs="$libdirs:$d"
done
pyroot=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
for d in "$pyroot"/nvidia/cu13/lib "$pyroot"/nvidia/cublas/lib "$pyroot"/nvidia/cuda_nvrtc/lib; do
  [ -d "$d" ] && libdirs="$libdirs:$d"
done
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

status=0
if has env; then
  {
    echo "== nvidia-smi"; nvidia-smi || true
    echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for lib in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13; do
      found=$( (ldconfig -p | grep -m1 " $lib " ; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d/$lib" 2>/dev/null; done) | head -1)
      echo "$lib: ${found:-MISSING}"
    done
    echo "== carried binaries"; ls -la "$CARRY/bin" || true
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
fi

if has tests; then
  : > "$OUT/tests.log"
  export AXPO_QWEN3VL_FIXTURES=${AXPO_QWEN3VL_FIXTURES:-$PWD/model-qwen3vl/fixtures}
  for t in nvrtc_compile no_device axpo_backend_cuda device qwen3vl_fixtures conformance_cuda; do
    if [ ! -x "$CARRY/bin/$t" ]; then
      echo "MISSING test binary $t" | tee -a "$OUT/tests.log"; status=1; continue
    fi
    echo "== $t" | tee -a "$OUT/tests.log"
    # Device tests are #[ignore]d where no GPU is; here they must run.
    if "$CARRY/bin/$t" --test-threads=1 --include-ignored >> "$OUT/tests.log" 2>&1; then
      echo "PASS $t" | tee -a "$OUT/tests.log"
    else
      echo "FAIL $t" | tee -a "$OUT/tests.log"; status=1
    fi
  done
  grep -E "^(test result|PASS|FAIL|MISSING)|rel err" "$OUT/tests.log" | tail -60
fi

if has bench; then
  for b in token_stats linear_token_stats; do
    if [ -x "$CARRY/bin/$b" ]; then
      "$CARRY/bin/$b" --bench 2>>"$OUT/bench_stderr.txt" | tee -a "$OUT/bench_rust.jsonl" || status=1
    else
      echo "{\"bench\":\"$b\",\"error\":\"binary missing\"}" | tee -a "$OUT/bench_rust.jsonl"; status=1
    fi
  done
fi

if has torch; then
  if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/axpo-site "$CARRY"/whl/*.whl && export PYTHONPATH=/tmp/axpo-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 "$HERE/bench_torch_liger.py" --out "$OUT/bench_torch_liger.jsonl" || status=1
fi

MODELS=${AXPO_MODELS:-2B,8B}
MODEL_DIR=${AXPO_MODEL_DIR:-/tmp/axpo-qwen3vl-bench}
if has hf; then
  # transformers prefill/decode, and the same random checkpoints and prompts saved for `model`.
  python3 "$HERE/bench_transformers_qwen3vl.py" --models "$MODELS" --save-dir "$MODEL_DIR" \
    --out "$OUT/bench_transformers.jsonl" || status=1
fi
if has model; then
  if [ -x "$CARRY/bin/qwen3vl" ]; then
    AXPO_QWEN3VL_BENCH_DIR="$MODEL_DIR" AXPO_QWEN3VL_BENCH_MODELS="$MODELS" \
      "$CARRY/bin/qwen3vl" --bench 2>>"$OUT/bench_stderr.txt" | tee -a "$OUT/bench_rust.jsonl" || status=1
  else
    echo '{"bench":"qwen3vl","error":"binary missing"}' | tee -a "$OUT/bench_rust.jsonl"; status=1
  fi
fi
if has resample; then
  python3 "$HERE/bench_transformers_qwen3vl.py" --models "$MODELS" --decode 16 --resample \
    --out "$OUT/bench_transformers.jsonl" || status=1
fi

python3 "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.txt"
exit $status
