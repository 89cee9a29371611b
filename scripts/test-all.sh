#!/usr/bin/env bash
# Runs every check of the workspace on a fresh Debian/Ubuntu machine with a Rust toolchain,
# installing what the checks need first:
#   - Mesa's software Vulkan (lavapipe), for the wgpu backend's tests;
#   - NVIDIA's NVRTC from PyPI (a wheel, no GPU or driver needed), so the CUDA kernels compile;
#   - the thumbv7em-none-eabihf target, to prove axpo-core builds without std;
#   - cargo-fuzz, for a bounded run of every fuzz target.
# Then: rustfmt, clippy, the workspace's tests, the wgpu conformance suite, the no_std build and
# the fuzz smoke run. Set AXPO_FUZZ_SECONDS to change the per-target fuzz time (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Build outputs outside the clone, so a reused machine rebuilds incrementally.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/axpo/target}
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never
# Software Vulkan: pick the Vulkan adapter, not the GL one.
export WGPU_BACKEND=vulkan
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR"

step() { printf '\n==== %s (%ss)\n' "$1" "$SECONDS"; }

step "install: system packages"
# lavapipe for wgpu; python3 with venv (Debian ships ensurepip separately) for the NVRTC wheel.
packages=""
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  packages="mesa-vulkan-drivers libvulkan1"
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages="$packages python3 python3-venv"
fi
if [ -n "$packages" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # a word list
  $SUDO apt-get install -y -qq --no-install-recommends $packages
fi

step "install: NVRTC (pip wheel)"
NVRTC_VENV=${AXPO_NVRTC_VENV:-$HOME/.cache/axpo/venv-nvrtc}
if [ ! -x "$NVRTC_VENV/bin/python" ]; then
  python3 -m venv "$NVRTC_VENV"
fi
"$NVRTC_VENV/bin/pip" install -q --disable-pip-version-check "nvidia-cuda-nvrtc==13.0.88"
NVRTC_LIB=$(ls -d "$NVRTC_VENV"/lib/python3*/site-packages/nvidia/cu13/lib)
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AXPO_REQUIRE_NVRTC=1

step "install: rust components and targets"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
NOSTD_TARGET=thumbv7em-none-eabihf
if ! rustup target add "$NOSTD_TARGET" >/dev/null 2>&1; then
  NOSTD_TARGET=""
  echo "note: could not install $NOSTD_TARGET; falling back to the cargo-tree std check"
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked -q
fi

step "rustfmt"
cargo fmt --all -- --check
(cd fuzz && cargo fmt --all -- --check)

step "clippy"
cargo clippy --workspace --all-targets --all-features -q -- -D warnings
(cd fuzz && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" cargo clippy --all-targets -q -- -D warnings)

step "rustdoc (broken links denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps -q

step "tests (workspace: core, CPU conformance, model fixtures on CPU and wgpu, CUDA NVRTC compile, demo)"
cargo test --workspace -q

step "tests (the conformance suite on the wgpu backend, lavapipe)"
cargo test -q -p axpo-tests --features wgpu --test conformance_wgpu

step "no_std build of axpo-core"
if [ -n "$NOSTD_TARGET" ]; then
  cargo build -q -p axpo-core --no-default-features --target "$NOSTD_TARGET"
else
  if cargo tree -p axpo-core --no-default-features -e normal,features --prefix none | grep -q 'feature "std"'; then
    echo "axpo-core pulls in std without its std feature"; exit 1
  fi
fi

step "fuzz (bounded)"
# Every target for AXPO_FUZZ_SECONDS on its seeds and the regression inputs of past findings;
# any crash, timeout or out-of-memory artifact, or a failing build, fails the run.
FUZZ_SECONDS=${AXPO_FUZZ_SECONDS:-30}
(
  cd fuzz
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
  cargo test -q
  cargo fuzz build --sanitizer none
  for target in $(cargo fuzz list); do
    echo "fuzz target $target for ${FUZZ_SECONDS}s"
    mkdir -p "corpus/$target"
    dirs=("corpus/$target" "seeds/$target")
    if [ -d "regressions/$target" ]; then dirs+=("regressions/$target"); fi
    log=$(mktemp)
    status=0
    cargo fuzz run --sanitizer none "$target" "${dirs[@]}" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E 'stat::number_of_executed_units|Done|ERROR|panicked' "$log" || true
    if [ "$status" != 0 ] || ls "artifacts/$target"/* >/dev/null 2>&1; then
      tail -n 40 "$log"; rm -f "$log"
      echo "fuzz target $target failed (exit $status)"; exit 1
    fi
    rm -f "$log"
  done
)

step "all checks passed"
