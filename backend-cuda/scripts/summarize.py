#!/usr/bin/env python3
"""Prints the closing table of a device run from the JSON lines under a folder."""
import json
import os
import sys


def load(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def main(folder):
    rust = load(os.path.join(folder, "bench_rust.jsonl"))
    base = load(os.path.join(folder, "bench_torch_liger.jsonl"))
    hf = load(os.path.join(folder, "bench_transformers.jsonl"))
    for r in rust:
        if r.get("bench") in ("d2d_copy", "token_stats"):
            print(r)
    floor = {r["n"]: r for r in rust if r.get("bench") == "cublas_floor"}
    ours = {(r["variant"], r["n"]): r for r in rust if r.get("bench") == "linear_objective"}
    theirs = {(r["variant"], r["n"]): r for r in base if r.get("bench") == "baseline" and "ms" in r}
    print(f"{'N':>6} {'variant':>24} {'ms':>9} {'peak GiB':>9} {'x floor':>8} {'liger/ours':>10}")
    for n in sorted({k[1] for k in list(ours) + list(theirs)}):
        fl = floor.get(n, {}).get("total_ms")
        lig = theirs.get(("liger_fused_linear_grpo", n), {}).get("ms")
        for key in sorted(k for k in list(ours) + list(theirs) if k[1] == n):
            r = ours.get(key) or theirs.get(key)
            ms = r["ms"]
            gib = r.get("peak_bytes_above_inputs", 0) / 2**30
            xf = f"{ms / fl:.2f}" if fl else "-"
            sp = f"{lig / ms:.2f}" if lig and key in ours else "-"
            print(f"{n:>6} {key[0]:>24} {ms:>9.2f} {gib:>9.2f} {xf:>8} {sp:>10}")
        if fl:
            print(f"{n:>6} {'cublas 3-GEMM floor':>24} {fl:>9.2f}")
    for r in hf:
        if r.get("bench", "").startswith("hf"):
            print(r)
    # Qwen3-VL: axpo over transformers, per model and phase.
    for phase in ("prefill", "decode"):
        for r in rust:
            if r.get("bench") != f"axpo_{phase}":
                continue
            print(r)
            peer = [h for h in hf if h.get("bench") == f"hf_{phase}" and h.get("model") == r["model"]]
            if peer and peer[-1].get("tokens_per_s"):
                ratio = r["tokens_per_s"] / peer[-1]["tokens_per_s"]
                print(f"  {r['model']} {phase}: axpo / transformers = {ratio:.2f}x")
    for r in rust:
        if r.get("bench") == "axpo_resample":
            print(r)
    errors = [r for r in rust + base + hf if "error" in r or "oom" in r or "skipped" in r]
    for e in errors:
        print("NOTE:", e)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
