#!/usr/bin/env python3
"""transformers baseline for backend-cuda part 2: Qwen3-VL 2B and 8B architectures with random
bf16 weights, sdpa attention, on one GPU.

* prefill: one 1024x1024 image (64x64 patches of 16 -> 1024 merged image tokens) plus 2000 text
  tokens; tokens/s = prompt tokens / prefill time;
* decode: greedy incremental decoding after that prefill (KV cache); tokens/s =
  (--decode - 1) / (time to generate --decode tokens - time to generate 1);
* resample (AXPO): 8 continuations of 256 tokens from one 4096-token text prefix, (a)
  regenerating the prefix for each continuation, (b) prefilling once and decoding the 8
  continuations as a batch from the shared prefix cache.

One JSON object per line on stdout (and to --out). Needs no network: configs are written here
from the released architecture numbers.

--save-dir DIR also writes, per model, DIR/<name>/ with the random checkpoint
(`save_pretrained`, sharded safetensors) and `bench_inputs.safetensors`: the prompt
(`input_ids`, `pixel_values`, `image_grid_thw`), transformers' last-position prefill logits
(`hf_last_logits`, f32) and the resampling prefix (`resample_prefix`). `benches/qwen3vl.rs`
times axpo on exactly that checkpoint and prompt and compares its logits. `--models tiny`
and `--device cpu` make a small folder for checking that harness without a GPU.
"""
import argparse
import json
import sys
import time

import torch

ARCH = {
    "2B": dict(text=dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16,
                         num_key_value_heads=8, intermediate_size=6144),
               vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                           deepstack_visual_indexes=[5, 11, 17]),
               tie=True),
    # Not a released model: a small folder for checking the benchmark harness on a CPU.
    "tiny": dict(text=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=512),
                 vision=dict(depth=2, hidden_size=128, intermediate_size=256, out_hidden_size=256,
                             deepstack_visual_indexes=[0], num_heads=4),
                 tie=True),
    "8B": dict(text=dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=12288),
               vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
                           deepstack_visual_indexes=[8, 16, 24]),
               tie=False),
}

IMAGE_TOKEN, VISION_START, VISION_END = 151655, 151652, 151653


def emit(rec, fh):
    line = json.dumps(rec)
    print(line, flush=True)
    if fh:
        fh.write(line + "\n")
        fh.flush()


def build(name, device):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    a = ARCH[name]
    text = dict(vocab_size=151936, head_dim=128, hidden_act="silu", rms_norm_eps=1e-6,
                rope_theta=5000000.0, max_position_embeddings=262144, attention_bias=False,
                rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20],
                              "mrope_interleaved": True},
                tie_word_embeddings=a["tie"], **a["text"])
    vision = dict(patch_size=16, temporal_patch_size=2, spatial_merge_size=2, in_channels=3,
                  num_position_embeddings=2304, num_heads=16, hidden_act="gelu_pytorch_tanh")
    vision.update(a["vision"])
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
                        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                        tie_word_embeddings=a["tie"])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    return model


def sync_time(fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def save(model, name, args, ids, pix, grid, types):
    """The checkpoint, the prompt, transformers' last prefill logits and the resampling prefix,
    for benches/qwen3vl.rs."""
    import os
    from safetensors.torch import save_file

    d = os.path.join(args.save_dir, name)
    model.save_pretrained(d, safe_serialization=True)
    logits = model(input_ids=ids, pixel_values=pix, image_grid_thw=grid,
                   mm_token_type_ids=types).logits[0, -1]
    g = torch.Generator(device="cpu").manual_seed(2)
    prefix = torch.randint(0, 150000, (1, args.prefix), generator=g)
    save_file({"input_ids": ids.cpu().to(torch.int64).contiguous(),
               "pixel_values": pix.float().cpu().contiguous(),
               "image_grid_thw": grid.cpu().to(torch.int64).contiguous(),
               "hf_last_logits": logits.float().cpu().contiguous(),
               "resample_prefix": prefix.to(torch.int64).contiguous()},
              os.path.join(d, "bench_inputs.safetensors"))
    return d


def image_prompt(text_tokens, dev):
    grid = torch.tensor([[1, 64, 64]], device=dev)
    patches = 64 * 64
    pixel_values = torch.randn(patches, 3 * 2 * 16 * 16, device=dev, dtype=torch.bfloat16)
    g = torch.Generator(device="cpu").manual_seed(1)
    text = torch.randint(0, 150000, (text_tokens,), generator=g)
    ids = torch.cat([torch.tensor([VISION_START]), torch.full((patches // 4,), IMAGE_TOKEN),
                     torch.tensor([VISION_END]), text]).unsqueeze(0).to(dev)
    # transformers 5 wants the processor's mm_token_type_ids (1 on image tokens) for M-RoPE.
    types = (ids == IMAGE_TOKEN).to(torch.int64)
    return ids, pixel_values, grid, types


@torch.inference_mode()
def bench_model(name, args, fh):
    dev = torch.device(args.device)
    model = build(name, dev)
    ids, pix, grid, types = image_prompt(args.text_tokens, dev)
    if args.save_dir:
        d = save(model, name, args, ids, pix, grid, types)
        emit({"bench": "hf_saved", "model": name, "dir": d}, fh)
        if args.save_only:
            return
    mask = torch.ones_like(ids)
    prompt = ids.shape[1]
    fwd = lambda: model(input_ids=ids, attention_mask=mask, pixel_values=pix,
                        image_grid_thw=grid, mm_token_type_ids=types, use_cache=True,
                        logits_to_keep=1)
    for _ in range(2):
        sync_time(fwd)
    ts = sorted(sync_time(fwd)[0] for _ in range(args.reps))
    t_prefill = ts[len(ts) // 2]
    emit({"bench": "hf_prefill", "model": name, "prompt_tokens": prompt,
          "s": round(t_prefill, 4), "tokens_per_s": round(prompt / t_prefill, 1)}, fh)
    def gen(n):
        return model.generate(input_ids=ids, attention_mask=mask, pixel_values=pix,
                              image_grid_thw=grid, mm_token_type_ids=types, max_new_tokens=n,
                              min_new_tokens=n, do_sample=False)

    # Decode alone: generating N tokens minus generating 1 (the prefill and its first token).
    sync_time(lambda: gen(2))
    t_one, _ = sync_time(lambda: gen(1))
    t_gen, out = sync_time(lambda: gen(args.decode))
    new = out.shape[1] - prompt - 1
    emit({"bench": "hf_decode", "model": name, "prompt_tokens": prompt, "new_tokens": new,
          "s": round(t_gen - t_one, 4),
          "tokens_per_s": round(new / max(t_gen - t_one, 1e-9), 1)}, fh)
    if args.resample:
        g = torch.Generator(device="cpu").manual_seed(2)
        prefix = torch.randint(0, 150000, (1, args.prefix), generator=g).to(dev)
        pm = torch.ones_like(prefix)
        k, L = args.branches, args.branch_tokens

        def regen():
            for _ in range(k):
                model.generate(input_ids=prefix, attention_mask=pm, max_new_tokens=L,
                               min_new_tokens=L, do_sample=True, top_k=0, temperature=1.0)

        def shared():
            from transformers import DynamicCache
            cache = DynamicCache()
            out = model(input_ids=prefix[:, :-1], attention_mask=pm[:, :-1],
                        past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            cache.batch_repeat_interleave(k)
            model.generate(input_ids=prefix.expand(k, -1), attention_mask=pm.expand(k, -1),
                           past_key_values=cache, max_new_tokens=L, min_new_tokens=L,
                           do_sample=True, top_k=0, temperature=1.0)

        t_regen, _ = sync_time(regen)
        emit({"bench": "hf_resample", "model": name, "mode": "regenerate_prefix", "prefix": args.prefix,
              "branches": k, "branch_tokens": L, "s": round(t_regen, 3)}, fh)
        try:
            sync_time(shared)
            t_shared, _ = sync_time(shared)
            emit({"bench": "hf_resample", "model": name, "mode": "shared_prefix_batched",
                  "prefix": args.prefix, "branches": k, "branch_tokens": L,
                  "s": round(t_shared, 3)}, fh)
        except Exception as e:
            emit({"bench": "hf_resample", "model": name, "mode": "shared_prefix_batched",
                  "error": repr(e)[:300]}, fh)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="2B,8B")
    ap.add_argument("--text-tokens", type=int, default=2000)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--resample", action="store_true")
    ap.add_argument("--prefix", type=int, default=4096)
    ap.add_argument("--branches", type=int, default=8)
    ap.add_argument("--branch-tokens", type=int, default=256)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--save-dir", default=None)
    ap.add_argument("--save-only", action="store_true")
    args = ap.parse_args()
    fh = open(args.out, "a") if args.out else None
    import transformers
    emit({"bench": "env", "torch": torch.__version__, "transformers": transformers.__version__,
          "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device}, fh)
    for name in args.models.split(","):
        try:
            bench_model(name, args, fh)
        except Exception as e:
            emit({"bench": "hf", "model": name, "error": repr(e)[:400]}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
