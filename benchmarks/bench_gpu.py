"""npclip on CuPy against transformers (SDPA attention) on the same GPU, the same weights and inputs.

Image features (CLIPVisionModelWithProjection) of ViT-B/32 at batch 256 and ViT-L/14 at batch 128, in
float16 and float32, both models built in one process from one random state dict. Each call is timed
from launch to a synchronised device, the two libraries alternating call by call, best of --repeat
(npclip.bench.alternating). Extra npclip rows show what the fused kernels buy: "readable" runs
npclip.ops on CuPy (NPCLIP_CUPY_DISABLE=all), "simt attention" disables only the tensor-core attention.

    python benchmarks/bench_gpu.py                              # the four cells of the issue
    python benchmarks/bench_gpu.py --models b32 --dtypes float16 --json out.json
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


def measure(model, dtype, batch, repeat, ablations):
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
    for r in rows:
        r["images_per_s"] = batch / r["seconds"]
        r["ratio_to_transformers"] = times["transformers"] / r["seconds"]
        r["max_rel_diff_vs_transformers"] = agreement
    return rows


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
            ablations = [] if args.no_ablations else [("readable ops on CuPy", ALL_FUSED)]
            if dtype == "float16" and not args.no_ablations:
                ablations.append(("simt attention", "attention_mma"))
            t0 = time.perf_counter()
            rows += measure(model, dtype, batch, args.repeat, ablations)
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
