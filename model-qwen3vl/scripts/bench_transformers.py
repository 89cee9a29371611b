#!/usr/bin/env python3
"""transformers-on-PyTorch-CPU side of the Qwen3-VL throughput benchmark (run by hand, not by CI).

Loads the same model folder the Rust bench writes (benches/forward.rs: ~0.5B parameters, BF16
on disk) in float32, on 2 torch threads, SDPA attention, and times the same three phases:
score (full forward, logits of every position), prefill (KV cache + last logits) and decode
(one token per step). Pinned versions: scripts/requirements-fixtures.txt.

    python scripts/bench_transformers.py --model "$AXPO_BENCH_DIR" --tokens 512 --decode 64
"""

import argparse
import time

import torch
from transformers import Qwen3VLForConditionalGeneration


def best(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn).eval()
    load_s = time.perf_counter() - t
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 150000, (1, args.tokens), generator=g)

    @torch.inference_mode()
    def score():
        model(input_ids=ids, use_cache=False).logits.shape

    @torch.inference_mode()
    def prefill():
        return model(input_ids=ids, use_cache=True, logits_to_keep=1)

    score_s = best(args.reps, score)
    prefill_s = best(args.reps, prefill)
    decode_s = float("inf")
    with torch.inference_mode():
        for _ in range(min(args.reps, 2)):
            out = prefill()
            pkv = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t = time.perf_counter()
            for _ in range(args.decode):
                out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                pkv = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            decode_s = min(decode_s, time.perf_counter() - t)
    print()
    print(f"transformers {__import__('transformers').__version__} / torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32, {args.attn}, load {load_s:.1f} s")
    print("| phase | tokens | seconds | tokens/s |")
    print("|---|---|---|---|")
    print(f"| score (full forward, logits of every position) | {args.tokens} | {score_s:.3f} | {args.tokens / score_s:.1f} |")
    print(f"| prefill (fill KV cache, last logits) | {args.tokens} | {prefill_s:.3f} | {args.tokens / prefill_s:.1f} |")
    print(f"| decode (1 token/step after the prompt) | {args.decode} | {decode_s:.3f} | {args.decode / decode_s:.2f} |")
    print(f"RESULT torch score_tps={args.tokens / score_s:.3f} prefill_tps={args.tokens / prefill_s:.3f} "
          f"decode_tps={args.decode / decode_s:.3f}")


if __name__ == "__main__":
    main()
