#!/usr/bin/env python3
"""Baselines for the fused linear GRPO/AXPO objective, forward + backward, bf16:

* `torch_eager`: materialised logits (hidden @ W.T), float32 log-softmax, gather, PPO-clip
  (DAPO clip-higher 0.2/0.28, token mean), autograd backward;
* `liger`: Liger-Kernel's `LigerFusedLinearGRPOLoss` (chunked, torch.compile'd), same loss
  (`loss_type="dapo"`, beta 0, no reference model).

Same sizes as the Rust bench (H=4096, V=151936, N in 2048..16384; 16 sequences per batch).
Time: median of CUDA-event timings after warm-up; memory: torch.cuda.max_memory_allocated
above the inputs. One JSON object per line on stdout (and to --out).
"""
import argparse
import inspect
import json
import sys

import torch


def emit(rec, fh):
    line = json.dumps(rec)
    print(line, flush=True)
    if fh:
        fh.write(line + "\n")
        fh.flush()


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def peak(fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def torch_eager(hidden, weight, targets, old, adv, eps_low, eps_high):
    h = hidden.detach().requires_grad_(True)
    w = weight.detach().requires_grad_(True)
    logits = h @ w.t()
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old)
    a = adv
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a).mean()
    loss.backward()
    return loss


def make_liger(eps_low, eps_high):
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    kwargs = dict(beta=0.0, use_ref_model=False, epsilon_low=eps_low, epsilon_high=eps_high,
                  loss_type="dapo", compiled=True, chunk_size=1)
    sig = inspect.signature(LigerFusedLinearGRPOLoss.__init__).parameters
    return LigerFusedLinearGRPOLoss(**{k: v for k, v in kwargs.items() if k in sig})


def liger_step(loss_mod, hidden, weight, targets, old, adv_seq, seqs):
    n, hd = hidden.shape
    t = n // seqs
    h = hidden.detach().view(seqs, t, hd).requires_grad_(True)
    w = weight.detach().requires_grad_(True)
    ids = targets.view(seqs, t)
    mask = torch.ones(seqs, t, device=hidden.device, dtype=torch.long)
    out = loss_mod(h, w, ids, mask, adv_seq, old_per_token_logps=old.view(seqs, t))
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", default="2048,4096,8192,16384")
    ap.add_argument("--h", type=int, default=4096)
    ap.add_argument("--v", type=int, default=151936)
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-eager-above", type=int, default=1 << 30)
    args = ap.parse_args()
    fh = open(args.out, "a") if args.out else None
    dev = torch.device("cuda")
    emit({"bench": "env", "torch": torch.__version__, "device": torch.cuda.get_device_name()}, fh)
    try:
        import liger_kernel  # noqa: F401
        from importlib.metadata import version
        emit({"bench": "env", "liger_kernel": version("liger-kernel")}, fh)
        have_liger = True
    except Exception as e:  # missing wheel: report and go on with the eager baseline
        emit({"bench": "liger", "skipped": repr(e)}, fh)
        have_liger = False
    g = torch.Generator(device=dev).manual_seed(0)
    weight = (torch.rand(args.v, args.h, device=dev, generator=g, dtype=torch.float32) * 0.04 - 0.02).to(torch.bfloat16)
    eps_low, eps_high = 0.2, 0.28
    for n in [int(x) for x in args.n.split(",")]:
        hidden = (torch.rand(n, args.h, device=dev, generator=g) * 2 - 1).to(torch.bfloat16)
        targets = torch.randint(0, args.v, (n,), device=dev, generator=g)
        old = -12.0 + torch.rand(n, device=dev, generator=g)
        adv_seq = torch.rand(args.seqs, device=dev, generator=g) * 2 - 1
        adv_tok = adv_seq.repeat_interleave(n // args.seqs)
        reps = 5 if n >= 8192 else 10
        flops = 6.0 * n * args.h * args.v
        if n <= args.skip_eager_above:
            try:
                f = lambda: torch_eager(hidden, weight, targets, old, adv_tok, eps_low, eps_high)
                ms = timed(f, 1, reps)
                mem = peak(f)
                emit({"bench": "baseline", "variant": "torch_eager", "n": n, "h": args.h, "v": args.v,
                      "ms": round(ms, 3), "tflops_3gemm": round(flops / (ms * 1e-3) / 1e12, 1),
                      "peak_bytes_above_inputs": mem}, fh)
            except torch.cuda.OutOfMemoryError as e:
                emit({"bench": "baseline", "variant": "torch_eager", "n": n, "oom": str(e)[:200]}, fh)
            torch.cuda.empty_cache()
        if have_liger:
            try:
                mod = make_liger(eps_low, eps_high)
                f = lambda: liger_step(mod, hidden, weight, targets, old, adv_seq, args.seqs)
                ms = timed(f, 2, reps)
                mem = peak(f)
                emit({"bench": "baseline", "variant": "liger_fused_linear_grpo", "n": n, "h": args.h,
                      "v": args.v, "ms": round(ms, 3),
                      "tflops_3gemm": round(flops / (ms * 1e-3) / 1e12, 1),
                      "peak_bytes_above_inputs": mem}, fh)
            except Exception as e:
                emit({"bench": "baseline", "variant": "liger_fused_linear_grpo", "n": n,
                      "error": repr(e)[:300]}, fh)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
