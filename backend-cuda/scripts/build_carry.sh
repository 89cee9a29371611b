#!/usr/bin/env bash
# Run HERE (the Rust machine, no GPU), from the repository root. Builds the release test and
# bench binaries of backend-cuda (plus the CUDA conformance suite when axpo-tests has it),
# copies them into a carry folder ignored by git, and downloads the Liger-Kernel wheel into
# it. Then hand the folder to the device tool's `carry`.
#   usage: backend-cuda/scripts/build_carry.sh [CARRY_DIR] [LIGER_VERSION]
set -euo pipefail
CARRY=${1:-.carry-cuda}
LIGER=${2:-0.8.5}
mkdir -p "$CARRY/bin" "$CARRY/whl"
if [ -d .git ] && [ "${CARRY#/}" = "$CARRY" ] && ! grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null; then
  echo "/$CARRY/" >> .git/info/exclude
fi
copy_executables() {
  # stdin: cargo --message-format=json; copies each test/bench executable as bin/<target name>
  python3 -c '
import json, shutil, subprocess, sys
dest = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe:
        name = m["target"]["name"].replace("-", "_")
        shutil.copy2(exe, f"{dest}/{name}")
        # Debug info would take the carry past the device tool's 64 MiB; symbols stay.
        subprocess.run(["strip", "--strip-debug", f"{dest}/{name}"], check=False)
        print(f"  {dest}/{name}")
' "$CARRY/bin"
}
echo "building backend-cuda tests (release)"
cargo test -p axpo-backend-cuda --release --no-run --message-format=json | copy_executables
echo "building backend-cuda benches"
cargo bench -p axpo-backend-cuda --no-run --message-format=json | copy_executables
echo "building the CUDA conformance suite (needs tests/src to define conformance_suite!)"
if ! cargo test -p axpo-tests --features cuda --release --no-run --test conformance_cuda \
    --message-format=json | copy_executables; then
  echo "  conformance_cuda did not build: the device run will report it missing"
fi
echo "downloading liger-kernel==$LIGER (pure Python) into $CARRY/whl"
python3 -m pip download --no-deps --only-binary=:all: -d "$CARRY/whl" "liger-kernel==$LIGER"
du -sh "$CARRY"
