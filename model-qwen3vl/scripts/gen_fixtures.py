#!/usr/bin/env python3
"""Golden fixtures for the Rust Qwen3-VL forward pass, made with Hugging Face transformers.

Run by hand (never by CI), on a CPU, from the crate directory:

    python3 -m venv "$VENV" && "$VENV/bin/pip" install -r scripts/requirements-fixtures.txt
    "$VENV/bin/python" scripts/gen_fixtures.py --out fixtures

Pinned versions (the ones the committed fixtures were made with; see requirements-fixtures.txt):
    python 3.11, torch 2.15.0, transformers 5.23.0, safetensors 0.8.0, pillow 13.0.0, numpy 2.4.x

What it writes, under --out:
    qwen3vl-tiny-a/   deepstack [0, 1], untied head (like 8B/32B); cases image1 (one image) and text_only
    qwen3vl-tiny-b/   deepstack [1] (catches "inject after layer deepstack_visual_indexes[k]"),
                      tied head (like 2B/4B); case image2 (two images of different shapes)
    preprocess.safetensors   raw images and the processor's pixel_values / image_grid_thw for
                             images that need an up- and a down-scaling bicubic resize
Each model folder: config.json (hub form: rope_theta + rope_scaling), config.saved_by_transformers5.json
(rope_parameters form), model.safetensors (BF16), manifest.json, and per case inputs.safetensors /
expected.safetensors with named intermediates (see `capture` below for the names).

Every weight is seeded and non-trivial (norm weights 1 + 0.2 N, biases 0.1 N, matrices N / sqrt(fan_in),
embeddings N or 0.25 N when tied, pos_embed 0.5 N) and rounded to bf16 before the f32 eager forward, so the
f32 reference sees exactly the values stored in the BF16 file. One thread, so reruns are bit-identical.
"""

import argparse
import copy
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.vision_utils import (
    get_vision_interpolation_indices_and_weights,
    get_vision_position_ids,
)

VOCAB = 1000
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = 992, 993, 995, 996
ROPE_THETA = 100.0  # small on purpose: every frequency turns within ~30 positions
MROPE_SECTION = [4, 2, 2]


def text_config(tie):
    return dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
        rms_norm_eps=1e-6, max_position_embeddings=4096, attention_bias=False,
        tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA,
                         "mrope_section": MROPE_SECTION, "mrope_interleaved": True},
    )


def vision_config(deepstack):
    return dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
        temporal_patch_size=2, spatial_merge_size=2, in_channels=3, out_hidden_size=64,
        num_position_embeddings=64, deepstack_visual_indexes=deepstack,
        hidden_act="gelu_pytorch_tanh", initializer_range=0.02,
    )


def hub_config(variant, deepstack, tie):
    """config.json as the published checkpoints write it (transformers 4.57 era)."""
    t = text_config(tie)
    t.pop("rope_parameters")
    t.update(model_type="qwen3_vl_text", rope_theta=ROPE_THETA, dtype="bfloat16",
             rope_scaling={"rope_type": "default", "mrope_section": MROPE_SECTION,
                           "mrope_interleaved": True},
             attention_dropout=0.0, initializer_range=0.02, use_cache=True,
             bos_token_id=0, eos_token_id=1)
    v = vision_config(deepstack)
    v["model_type"] = "qwen3_vl"
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "image_token_id": IMAGE_PAD, "video_token_id": VIDEO_PAD,
        "vision_start_token_id": VISION_START, "vision_end_token_id": VISION_END,
        "tie_word_embeddings": tie, "text_config": t, "vision_config": v,
        "transformers_version": "4.57.0.dev0", "_fixture_variant": variant,
    }


def seeded_init(model, tie, seed=1234):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            n = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("embed_tokens.weight"):
                val = n * (0.25 if tie else 1.0)
            elif name.endswith("pos_embed.weight"):
                val = 0.5 * n
            elif name.endswith(".bias"):
                val = 0.1 * n
            elif p.dim() == 1:  # RMSNorm / LayerNorm weights
                val = 1.0 + 0.2 * n
            else:
                fan_in = int(np.prod(p.shape[1:]))
                val = n / fan_in ** 0.5
            p.copy_(val.to(torch.bfloat16).to(torch.float32))


def image_u8(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 / max(w - 1, 1)), (yy * 255 / max(h - 1, 1)), ((xx + yy) * 3) % 256], -1)
    noise = rng.integers(-40, 41, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def processor(min_pixels=1024, max_pixels=16777216):
    return Qwen2VLImageProcessorPil(
        patch_size=16, temporal_patch_size=2, merge_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
    )


def manual_patchify(img):
    """The documented layout, to cross-check the processor on unresized images."""
    h, w, _ = img.shape
    x = (img.astype(np.float32) / 255.0 - 0.5) / 0.5
    x = x.transpose(2, 0, 1)  # C, H, W
    gh, gw = h // 16, w // 16
    x = x.reshape(3, gh // 2, 2, 16, gw // 2, 2, 16).transpose(1, 4, 2, 5, 0, 3, 6)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], 2, 16, 16))
    return x.reshape(gh * gw, 3 * 2 * 16 * 16)


def build_ids(parts, grids):
    """parts: list of ints (text ids) or ('img', k); returns ids and mm_token_type_ids."""
    ids, types = [], []
    for p in parts:
        if isinstance(p, tuple):
            t, h, w = grids[p[1]]
            n = t * h * w // 4
            ids += [VISION_START] + [IMAGE_PAD] * n + [VISION_END]
            types += [0] + [1] * n + [0]
        else:
            ids.append(p)
            types.append(0)
    return torch.tensor([ids]), torch.tensor([types])


def capture(model):
    """Forward hooks that record named intermediates. Hooks return None (never replace outputs)."""
    rec, handles = {}, []
    vis, lm = model.model.visual, model.model.language_model

    def out_hook(name):
        def f(_m, _a, out):
            rec[name] = out[0] if isinstance(out, tuple) else out
        return f

    def in_out_hook(prefix):
        def f(_m, args, kwargs, out):
            x = args[0] if args else kwargs["hidden_states"]
            rec[prefix + ".in"] = x
            rec[prefix + ".out"] = out[0] if isinstance(out, tuple) else out
        return f

    handles.append(vis.patch_embed.register_forward_hook(out_hook("vision.patch_embed.out")))

    def rot(_m, _a, out):
        rec["vision.rotary.cos"], rec["vision.rotary.sin"] = out[0], out[1]
    handles.append(vis.rotary_pos_emb.register_forward_hook(rot))
    for i, blk in enumerate(vis.blocks):
        handles.append(blk.register_forward_hook(in_out_hook(f"vision.blocks.{i}"), with_kwargs=True))
    handles.append(vis.merger.register_forward_hook(out_hook("vision.merger.out")))
    for k, m in enumerate(vis.deepstack_merger_list):
        handles.append(m.register_forward_hook(out_hook(f"vision.deepstack.{k}.out")))

    def embeds(_m, _a, kwargs):
        rec["text.inputs_embeds"] = kwargs["inputs_embeds"]
    handles.append(lm.register_forward_pre_hook(embeds, with_kwargs=True))

    def trot(_m, _a, out):
        rec["text.rotary.cos"], rec["text.rotary.sin"] = out[0], out[1]
    handles.append(lm.rotary_emb.register_forward_hook(trot))
    for i, layer in enumerate(lm.layers):
        handles.append(layer.register_forward_hook(in_out_hook(f"text.layers.{i}"), with_kwargs=True))

    def norm(_m, args, out):
        rec["text.norm.in"], rec["text.norm.out"] = args[0], out
    handles.append(lm.norm.register_forward_hook(norm))
    return rec, handles


def squeeze_batch(t):
    t = t.detach().to(torch.float32) if t.is_floating_point() else t.detach()
    return t[0] if t.dim() >= 2 and t.shape[0] == 1 and t.dim() == 3 else t


def run_case(model, cfg, out_dir, name, parts, images, decode_ids):
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    proc = processor()
    grids, pixel_values = [], None
    inputs = {}
    if images:
        feats = proc(images=[torch.from_numpy(im).permute(2, 0, 1) for im in images], return_tensors="pt")
        pixel_values = feats["pixel_values"].to(torch.float32)
        grid = feats["image_grid_thw"]
        grids = grid.tolist()
        manual = np.concatenate([manual_patchify(im) for im in images], 0)
        assert np.array_equal(manual, pixel_values.numpy()), "processor layout differs from the manual patchify"
        for k, im in enumerate(images):
            inputs[f"images_u8_{k}"] = torch.from_numpy(im.copy())
    ids, types = build_ids(parts, grids)
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types)
    if images:
        inputs.update(pixel_values=pixel_values, image_grid_thw=grid)
        kw.update(pixel_values=pixel_values, image_grid_thw=grid)

    model.model.rope_deltas = None
    rec, handles = capture(model)
    with torch.no_grad():
        out = model(**kw, use_cache=True)
    for h in handles:
        h.remove()

    expected = {}
    for k, v in rec.items():
        v = v.detach()
        if v.dim() == 3 and v.shape[0] == 1:
            v = v[0]
        expected[k] = v.to(torch.float32).clone().contiguous()
    logits = out.logits[0].to(torch.float32)
    logp = torch.log_softmax(logits.double(), -1).to(torch.float32)
    expected["logits"] = logits.contiguous()
    expected["log_softmax"] = logp.contiguous()
    expected["next_token_logprobs"] = logp[:-1].gather(1, ids[0, 1:, None])[:, 0].contiguous()
    if images:
        pos, delta = model.model.get_rope_index(ids, types, grid)
    else:
        pos = torch.arange(ids.shape[1]).view(1, 1, -1).expand(3, 1, -1).contiguous()
        delta = torch.zeros(1, 1, dtype=torch.long)
    expected["position_ids"] = pos.contiguous()
    expected["rope_deltas"] = delta.reshape(1, 1).contiguous()
    if images:
        vcfg = model.model.visual.config
        side = int(vcfg.num_position_embeddings ** 0.5)
        idx, w = get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=side, mode="bilinear", align_corners=True,
            spatial_merge_size=vcfg.spatial_merge_size)
        with torch.no_grad():
            pe = (model.model.visual.pos_embed(idx) * w[:, :, None]).sum(1)
        expected["vision.pos_embed.indices"] = idx.contiguous()
        expected["vision.pos_embed.weights"] = w.to(torch.float32).contiguous()
        expected["vision.pos_embed.out"] = pe.to(torch.float32).contiguous()
        expected["vision.rotary.position_ids"] = get_vision_position_ids(grid, vcfg.spatial_merge_size).contiguous()

    # Incremental decoding: a few steps after the prefill, through HF's cache and rope deltas.
    if decode_ids:
        pkv = out.past_key_values
        step_logits = []
        with torch.no_grad():
            for t in decode_ids:
                o = model(input_ids=torch.tensor([[t]]), past_key_values=pkv, use_cache=True)
                pkv = o.past_key_values
                step_logits.append(o.logits[0, -1].to(torch.float32))
        expected["decode.input_ids"] = torch.tensor(decode_ids, dtype=torch.long)
        expected["decode.logits"] = torch.stack(step_logits).contiguous()

    save_file(inputs, os.path.join(out_dir, name, "inputs.safetensors"))
    save_file(expected, os.path.join(out_dir, name, "expected.safetensors"))
    return {"tokens": ids.shape[1], "grids": grids, "logits_std": float(logits.std())}


def make_variant(out, variant, deepstack, tie, cases):
    d = os.path.join(out, f"qwen3vl-tiny-{variant}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    cfg = Qwen3VLConfig(text_config=text_config(tie), vision_config=vision_config(deepstack),
                        image_token_id=IMAGE_PAD, video_token_id=VIDEO_PAD,
                        vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
                        tie_word_embeddings=tie)
    model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="eager",
                                                         dtype=torch.float32).eval()
    seeded_init(model, tie)
    if tie:
        model.tie_weights()
    with tempfile.TemporaryDirectory() as tmp:
        # Convert a copy: `.to(bfloat16)` would also round the rotary `inv_freq` buffers.
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        shutil.copy(os.path.join(tmp, "model.safetensors"), os.path.join(d, "model.safetensors"))
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(d, "config.saved_by_transformers5.json"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hub_config(variant, deepstack, tie), f, indent=2)
    info = {}
    for name, parts, images, decode_ids in cases:
        info[name] = run_case(model, cfg, d, name, parts, images, decode_ids)
    state = {k: [str(v.dtype), list(v.shape)] for k, v in model.state_dict().items()}
    files = {}
    for root, _, fs in os.walk(d):
        for fn in sorted(fs):
            p = os.path.join(root, fn)
            files[os.path.relpath(p, d)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    manifest = {"variant": variant, "deepstack_visual_indexes": deepstack, "tie_word_embeddings": tie,
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "cases": info, "state_dict": state, "sha256": files}
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def make_preprocess(out):
    """Images that need resizing: an upscale (min_pixels) and a downscale (max_pixels, antialiased)."""
    tensors = {}
    cases = [("up", image_u8(37, 50, 11), 96 * 96, 16777216),
             ("down", image_u8(150, 113, 12), 1024, 64 * 64 * 2),
             ("exact", image_u8(64, 96, 13), 1024, 16777216)]
    for name, img, lo, hi in cases:
        feats = processor(lo, hi)(images=[torch.from_numpy(img).permute(2, 0, 1)], return_tensors="pt")
        tensors[f"{name}.image_u8"] = torch.from_numpy(img.copy())
        tensors[f"{name}.min_max_pixels"] = torch.tensor([lo, hi], dtype=torch.long)
        tensors[f"{name}.pixel_values"] = feats["pixel_values"].to(torch.float32).contiguous()
        tensors[f"{name}.image_grid_thw"] = feats["image_grid_thw"].contiguous()
    save_file(tensors, os.path.join(out, "preprocess.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    im_a, im_b = image_u8(64, 96, 1), image_u8(96, 64, 2)
    make_variant(args.out, "a", [0, 1], False, [
        ("image1", [5, 17, 250, 3, 9, ("img", 0), 40, 41, 42, 600, 7, 8, 900], [im_a], [17, 250, 731]),
        ("text_only", [5, 17, 250, 3, 9, 40, 41, 42, 600, 7, 8, 900, 12, 13], [], [88, 89]),
    ])
    make_variant(args.out, "b", [1], True, [
        ("image2", [5, 17, 250, ("img", 0), 40, 41, 42, ("img", 1), 600, 7, 8], [im_a, im_b], [17, 250]),
    ])
    make_preprocess(args.out)


if __name__ == "__main__":
    main()
