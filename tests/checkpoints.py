"""Random-weight CLIP checkpoints made with transformers at test time, with realistic scales.

transformers initialises CLIP with small weights (std 0.02), so every activation is tiny and a
wrong layer could hide under a loose absolute bound. ``realistic_`` redraws the weights at scales
like those of trained checkpoints: unit-variance embeddings, layer-norm gains around 1,
projections that let the residual stream grow through the layers, logit_scale = log(100).
"""

from __future__ import annotations

import math
import os

TINY_TEXT = dict(vocab_size=99, hidden_size=42, intermediate_size=37, num_hidden_layers=3, num_attention_heads=3,
                 max_position_embeddings=21, projection_dim=19, bos_token_id=97, eos_token_id=98, pad_token_id=1)
TINY_VISION = dict(hidden_size=42, intermediate_size=37, num_hidden_layers=3, num_attention_heads=3,
                   image_size=30, patch_size=6, projection_dim=19)


def realistic_(model, seed=0):
    """Redraw every weight of a transformers CLIP model in place at trained-like scales."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def normal_(t, mean, std):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
            normal_(p, 1.0 if leaf == "weight" else 0.0, 0.3 if leaf == "weight" else 0.2)
        elif name.endswith("logit_scale"):
            with torch.no_grad():
                p.fill_(math.log(100.0))
        elif "embedding" in name:
            fan_in = p[0].numel() if p.ndim == 4 else 1
            normal_(p, 0.0, 1.0 / math.sqrt(fan_in) if p.ndim == 4 else 1.0)
        elif leaf == "bias":
            normal_(p, 0.0, 0.2)
        elif p.ndim == 2:  # linear layers: [out, in]
            normal_(p, 0.0, 1.5 / math.sqrt(p.shape[1]))
        else:
            normal_(p, 0.0, 1.0)
    return model


def make_checkpoint(directory, cls_name="CLIPModel", text=None, vision=None, dtype="float32", shard_size=None,
                    seed=0, **clip_kwargs):
    """Build, scale and save a transformers CLIP model; return the directory.

    cls_name: a transformers class name; text/vision: config overrides; dtype: the storage dtype
    ("float32", "float16", "bfloat16"); shard_size: e.g. "200KB" for a sharded checkpoint.
    """
    import torch
    import transformers as T

    cls = getattr(T, cls_name)
    text_cfg = T.CLIPTextConfig(**(text or {}))
    vision_cfg = T.CLIPVisionConfig(**(vision or {}))
    if cls_name in ("CLIPModel", "CLIPForImageClassification"):
        clip_kwargs.setdefault("projection_dim", text_cfg.projection_dim)  # consistent with the towers' configs
        config = T.CLIPConfig(text_config=text_cfg.to_dict(), vision_config=vision_cfg.to_dict(), **clip_kwargs)
    elif "Text" in cls_name:
        config = text_cfg
    else:
        config = vision_cfg
    torch.manual_seed(seed)
    model = realistic_(cls(config).eval(), seed)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    return os.fspath(directory)


def load_reference(directory, cls_name="CLIPModel"):
    """The transformers model of a checkpoint, in float32 with eager attention (attention maps)."""
    import torch
    import transformers as T

    return getattr(T, cls_name).from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
