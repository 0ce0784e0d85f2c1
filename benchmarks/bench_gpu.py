"""npclip on CuPy against transformers (SDPA attention) on the same GPU, the same weights and inputs.

Image features (CLIPVisionModelWithProjection) of ViT-B/32 at batch 256 and ViT-L/14 at batch 128, in
float16 and float32, both models built in one process from one random state dict. Each call is timed
from launch to a synchronised device, the two libraries alternating call by call, best of --repeat
(npclip.bench.alternating). Extra npclip rows show what the fused kernels buy: "readable" runs
npclip.ops on CuPy (NPCLIP_CUPY_DISABLE=all); "simt attention" disables only the tensor-core attention
(float16) and "one-kernel attention" the cuBLAS attention (float32); "residual apart" adds the skip
connections in their own pass.

    python benchmarks/bench_gpu.py                              # the four cells of the issue
    python benchmarks/bench_gpu.py --models b32 --dtypes float16 --json out.json
    python benchmarks/bench_gpu.py --breakdown                  # also where the time goes, stage by stage
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from npclip.bench import alternating, image_batch, machine_info  # noqa: E402

MODELS = {  # transformers CLIPVisionConfig keyword arguments, and the batch of the issue
    "b32": (dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 image_size=224, patch_size=32, projection_dim=512), 256),
    "l14": (dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=224, patch_size=14, projection_dim=768), 128),
}
ALL_FUSED = "layer_norm,bias_act,attention,attention_mma"


def build(model, dtype, seed=0):
    """(npclip model on CuPy, transformers model on CUDA with SDPA), the same weights."""
    import torch
    import transformers

    from npclip import CLIPVisionConfig, CLIPVisionModelWithProjection

    kwargs = MODELS[model][0]
    torch.manual_seed(seed)
    cfg = transformers.CLIPVisionConfig(**kwargs)
    with torch.device("cuda"):
        theirs = transformers.CLIPVisionModelWithProjection._from_config(cfg, attn_implementation="sdpa")
    theirs = theirs.to(getattr(torch, dtype)).eval()
    state = {k: v.detach().float().cpu().numpy() for k, v in theirs.state_dict().items()}
    ours = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(cfg.to_dict()), state, backend="cupy", dtype=dtype)
    return ours, theirs


def synced(fn):
    import cupy
    import torch

    def run():
        out = fn()
        cupy.cuda.Device().synchronize()
        torch.cuda.synchronize()
        return out

    return run


def measure(model, dtype, batch, repeat, ablations, breakdown=False):
    import cupy
    import torch

    ours, theirs = build(model, dtype)
    px = image_batch(batch)
    px_ours = cupy.asarray(px).astype(dtype)
    px_theirs = torch.from_numpy(px).cuda().to(getattr(torch, dtype))

    def npclip_fn():
        return ours(pixel_values=px_ours).image_embeds

    def torch_fn():
        with torch.inference_mode():
            return theirs(pixel_values=px_theirs).image_embeds

    # agreement of the two, relative to the largest reference value
    a = cupy.asnumpy(npclip_fn()).astype(np.float64)
    with torch.inference_mode():
        e = torch_fn().float().cpu().numpy().astype(np.float64)
    agreement = float(np.abs(a - e).max() / max(1.0, np.abs(e).max()))

    times = alternating({"npclip": synced(npclip_fn), "transformers": synced(torch_fn)}, repeat)
    rows = [dict(model=model, dtype=dtype, batch=batch, what="npclip (fused kernels)", seconds=times["npclip"]),
            dict(model=model, dtype=dtype, batch=batch, what="transformers (sdpa)", seconds=times["transformers"])]
    for label, disable in ablations:
        os.environ["NPCLIP_CUPY_DISABLE"] = disable
        try:
            t = alternating({"npclip": synced(npclip_fn)}, max(2, repeat // 2))["npclip"]
        finally:
            os.environ.pop("NPCLIP_CUPY_DISABLE", None)
        rows.append(dict(model=model, dtype=dtype, batch=batch, what=f"npclip ({label})", seconds=t))
    if breakdown:
        stage_times(ours, px_ours)
        torch_kernels(torch_fn)
    for r in rows:
        r["images_per_s"] = batch / r["seconds"]
        r["ratio_to_transformers"] = times["transformers"] / r["seconds"]
        r["max_rel_diff_vs_transformers"] = agreement
    return rows


def stage_times(ours, pixel_values, n_repeat=20):
    """Device time of each stage of one encoder layer (the first), alone, on the layer's real input,
    and host and device time of the whole forward: where npclip's time goes, and whether the host
    (Python launching kernels) or the device is the bound."""
    import cupy
    from cupyx.profiler import benchmark

    from npclip import backend_cupy
    from npclip.backend import kernels
    from npclip.encoder import encoder_layer
    from npclip.ops import merge_heads, split_heads
    from npclip.vision import vision_input

    cfg, w = ours.vision_config, ours.vision_layers[0]
    heads, eps, act = cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act
    x = vision_input(pixel_values, ours.params, cfg)  # [B, N, D]
    fn, D = kernels(x), x.shape[-1]
    h = fn.layer_norm(x, w["layer_norm1.weight"], w["layer_norm1.bias"], eps)  # [B, N, D]
    qkv = fn.linear(h, w["self_attn.qkv_proj.weight"], w["self_attn.qkv_proj.bias"])  # [B, N, 3D]
    q, k, v = (split_heads(qkv[..., i * D:(i + 1) * D], heads) for i in range(3))  # [B, H, N, Dh] views
    a = merge_heads(fn.attention(q, k, v, None, False)[0])  # [B, N, D]
    merged = cupy.empty(a.shape, a.dtype).reshape(*a.shape[:2], heads, -1).transpose(0, 2, 1, 3)  # [B, H, N, Dh]
    f = fn.linear_activation(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"], act)  # [B, N, F]
    h2, f2 = h.reshape(-1, D), f.reshape(-1, f.shape[-1])
    operands = {"qkv": (h2, w["self_attn.qkv_proj.weight"]), "fc1": (h2, w["mlp.fc1.weight"]),
                "fc2": (f2, w["mlp.fc2.weight"])}

    def alone(label):
        """The product alone, with the prepared (column-major) weight and with the checkpoint's row-major one."""
        rows, weight = operands[label]
        row_major = cupy.ascontiguousarray(weight)
        return {f"  {label} product alone": lambda: cupy.matmul(rows, weight.T),
                f"  {label} product, row-major weight": lambda: cupy.matmul(rows, row_major.T)}

    stages = {
        "layer_norm": lambda: fn.layer_norm(x, w["layer_norm1.weight"], w["layer_norm1.bias"], eps),
        "qkv linear (product + bias)": lambda: fn.linear(h, w["self_attn.qkv_proj.weight"],
                                                           w["self_attn.qkv_proj.bias"]),
        **alone("qkv"),
        "attention (no weights)": lambda: fn.attention(q, k, v, None, False),
        "  one-kernel attention": lambda: backend_cupy._attention_into(q, k, v, None, merged, None),
        "out_proj linear": lambda: fn.linear(a, w["self_attn.out_proj.weight"], w["self_attn.out_proj.bias"]),
        "residual add": lambda: h + x,
        "out_proj linear + residual": lambda: fn.linear(a, w["self_attn.out_proj.weight"],
                                                        w["self_attn.out_proj.bias"], x),
        "fc1 + activation": lambda: fn.linear_activation(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"], act),
        **alone("fc1"),
        "fc2 linear": lambda: fn.linear(f, w["mlp.fc2.weight"], w["mlp.fc2.bias"]),
        **alone("fc2"),
        "whole layer": lambda: encoder_layer(x, w, heads, eps, act, need_weights=False),
        "whole forward": lambda: ours(pixel_values=pixel_values).image_embeds,
    }
    print(f"## npclip stages, {tuple(x.shape)} {x.dtype}: device ms (host ms), median of {n_repeat}", flush=True)
    for name, stage in stages.items():
        r = benchmark(stage, n_repeat=n_repeat, n_warmup=3)
        print(f"   {name:<30} {float(np.median(r.gpu_times)) * 1e3:8.3f} ({float(np.median(r.cpu_times)) * 1e3:.3f})",
              flush=True)


def torch_kernels(torch_fn, calls=3, top=12):
    """transformers' own kernels over a few forwards (torch.profiler), the costliest first."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            torch_fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(f"## transformers kernels over {calls} forwards\n"
                  + events.table(sort_by=key, row_limit=top, max_name_column_width=60), flush=True)
            return
        except Exception as e:  # the key's name differs between torch versions
            err = e
    print(f"## torch profiler table failed: {err}", flush=True)


def free_device_memory():
    import cupy
    import torch

    cupy.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["b32", "l14"], choices=sorted(MODELS))
    parser.add_argument("--dtypes", nargs="+", default=["float16", "float32"], choices=["float16", "float32"])
    parser.add_argument("--batch", type=int, help="one batch for every model (default: 256 for b32, 128 for l14)")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per library, best kept (default 10)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the readable / simt-attention rows")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print npclip's stage times and transformers' costliest kernels per cell")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    import cupy
    import torch

    info = machine_info()
    info.update(gpu=torch.cuda.get_device_name(), cupy=cupy.__version__, torch=torch.__version__)
    import transformers

    info["transformers"] = transformers.__version__
    print(json.dumps(info))
    rows = []
    for model in args.models:
        for dtype in args.dtypes:
            batch = args.batch or MODELS[model][1]
            ablations = [] if args.no_ablations else [
                ("readable ops on CuPy", ALL_FUSED), ("residual apart", "residual"),
                ("simt attention", "attention_mma") if dtype == "float16" else ("one-kernel attention", "attention_gemm")]
            t0 = time.perf_counter()
            rows += measure(model, dtype, batch, args.repeat, ablations, args.breakdown)
            free_device_memory()
            print(f"# {model} {dtype} batch {batch}: measured in {time.perf_counter() - t0:.0f} s", flush=True)
            print(format_rows([r for r in rows if r["model"] == model and r["dtype"] == dtype]), flush=True)
    print("\n" + format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)
    return 0


def format_rows(rows):
    lines = [f"{'model':<5} {'dtype':<8} {'batch':>5} {'what':<36} {'images/s':>10} {'vs transformers':>16} "
             f"{'max rel diff':>12}"]
    for r in rows:
        lines.append(f"{r['model']:<5} {r['dtype']:<8} {r['batch']:>5} {r['what']:<36} {r['images_per_s']:>10.0f} "
                     f"{r['ratio_to_transformers']:>16.2f} {r['max_rel_diff_vs_transformers']:>12.2e}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
