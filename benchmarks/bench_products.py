"""How close npclip's image features come to the bound set by their matrix products alone.

    python benchmarks/bench_products.py                  # random ViT-B/32 weights, batch 32, best of 5
    python benchmarks/bench_products.py --model DIR --batch 8 --repeat 7

Times, in one process and in alternating rounds, (a) ``get_image_features`` and (b) the same matrix
products on their own, with the model's own (column-major) weights and the shapes the forward pass
gives them: the patch embedding, the fused q/k/v product, the output projection, fc1 and fc2 of
every layer (the last layer's for the class token only, as vision.pooled_image computes it). (b) is
what a forward pass would cost if everything else (layer norms, attention, activations, bias adds,
copies) were free: the best any NumPy/BLAS implementation of the same arithmetic can do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from npclip import CLIPModel, bench  # noqa: E402


def products(model, batch):
    """A function running the forward pass's matrix products alone, and their count of FLOPs."""
    cfg = model.vision_config
    D, F, P, G = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.image_size // cfg.patch_size
    N = G * G + 1
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((batch * G * G, 3 * P * P), dtype=np.float32)  # [B*G*G, C*P*P]
    xd = rng.standard_normal((batch * N, D), dtype=np.float32)  # [B*N, D]
    xf = rng.standard_normal((batch * N, F), dtype=np.float32)  # [B*N, F]
    patch_weight = model.params["vision_model.embeddings.patch_embedding.weight"].reshape(D, -1)  # [D, C*P*P]
    layers = model.vision_layers
    rows = [batch * N] * (len(layers) - 1) + [batch]  # per layer; the last layer: class tokens only

    def run():
        patches @ patch_weight.T
        for w, m in zip(layers, rows):
            xd @ w["self_attn.qkv_proj.weight"].T
            xd[:m] @ w["self_attn.out_proj.weight"].T
            xd[:m] @ w["mlp.fc1.weight"].T
            xf[:m] @ w["mlp.fc2.weight"].T

    flops = 2 * batch * G * G * 3 * P * P * D + sum(2 * batch * N * D * 3 * D + 2 * m * (D * D + 2 * D * F) for m in rows)
    return run, flops


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local CLIP checkpoint directory (default: random ViT-B/32 weights)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="alternating rounds, best kept")
    args = parser.parse_args(argv)
    directory = args.model
    if directory is None:
        directory = os.path.join(tempfile.mkdtemp(prefix="npclip-products-"), "vit-b32")
        bench.random_checkpoint(directory)
    model = CLIPModel.from_pretrained(directory)
    pixels = bench.image_batch(args.batch, size=model.vision_config.image_size)
    only_products, flops = products(model, args.batch)
    forward = lambda: model.get_image_features(pixel_values=pixels)  # noqa: E731
    forward(), only_products()  # warm: layer weights prepared, pages read
    best = {"forward": float("inf"), "products": float("inf")}
    for _ in range(args.repeat):
        for name, fn in (("forward", forward), ("products", only_products)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print("machine:", bench.machine_info())
    print(f"image features, batch {args.batch}: {args.batch / best['forward']:.2f} images/s "
          f"({flops / best['forward'] / 1e9:.0f} GFLOP/s of matrix products)")
    print(f"matrix products alone:      {args.batch / best['products']:.2f} images/s "
          f"({flops / best['products'] / 1e9:.0f} GFLOP/s)")
    print(f"share of the forward pass spent in matrix products: {best['products'] / best['forward']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
