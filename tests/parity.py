"""Shared pieces of the parity tests: checkpoint variants, inputs, and output-by-output comparison."""

from __future__ import annotations

import numpy as np

from checkpoints import TINY_TEXT, TINY_VISION, make_checkpoint
from conftest import assert_close

# Checkpoint variants every parity test runs on (name -> make_checkpoint arguments).
VARIANTS = {
    "tiny": dict(text=TINY_TEXT, vision=TINY_VISION),
    "gelu": dict(text={**TINY_TEXT, "hidden_act": "gelu"}, vision={**TINY_VISION, "hidden_act": "gelu"}),
    "legacy-eos": dict(text={**TINY_TEXT, "eos_token_id": 2}, vision=TINY_VISION),
    "float16": dict(text=TINY_TEXT, vision=TINY_VISION, dtype="float16"),
    "bfloat16": dict(text=TINY_TEXT, vision=TINY_VISION, dtype="bfloat16"),
    "sharded": dict(text=TINY_TEXT, vision=TINY_VISION, shard_size="40KB"),
}


class Checkpoints:
    """Session cache: one directory per (variant, class)."""

    def __init__(self, root):
        self.root = root
        self.made = {}

    def __call__(self, variant, cls_name="CLIPModel", **extra):
        key = (variant, cls_name, tuple(sorted(extra.items())))
        if key not in self.made:
            directory = self.root / f"{variant}-{cls_name}-{len(self.made)}"
            args = dict(VARIANTS[variant]) if variant in VARIANTS else {}
            args.update(extra)
            self.made[key] = make_checkpoint(directory, cls_name, **args)
        return self.made[key]


def text_inputs(cfg, batch=3, seed=0):
    """Token ids as the tokenizer makes them: bos, words, eos, then eos padding; and the mask.

    cfg: a text config dict (vocab_size, max_position_embeddings, bos/eos ids).
    """
    rng = np.random.default_rng(seed)
    vocab, T = cfg.get("vocab_size", 49408), min(cfg.get("max_position_embeddings", 77), 16)
    bos, eos = vocab - 2, vocab - 1  # as in CLIP's vocabulary: the two specials come last
    ids = np.full((batch, T), eos, dtype=np.int64)
    mask = np.zeros((batch, T), dtype=np.int64)
    for b in range(batch):
        n = int(rng.integers(1, T - 1)) if b else T - 2  # the first row fills the sequence
        ids[b, 0] = bos
        ids[b, 1 : n + 1] = rng.integers(3, vocab - 2, n)
        mask[b, : n + 2] = 1
    return ids, mask


def pixel_inputs(cfg, batch=2, seed=0, size=None):
    """Pixel values with the spread of CLIP-normalised images. -> [B, C, S, S] float32"""
    rng = np.random.default_rng(seed)
    s = size or (cfg.get("image_size", 224),) * 2
    return rng.standard_normal((batch, cfg.get("num_channels", 3), *s)).astype(np.float32) * 1.2


def compare_outputs(ours, ref, where, fields, kind="float32"):
    """Compare the named fields of two model outputs, including every hidden state and attention map."""
    compared = 0
    for f in fields:
        a, b = getattr(ours, f), getattr(ref, f)
        if f in ("hidden_states", "attentions"):
            assert a is not None and b is not None and len(a) == len(b), f"{where}.{f}: {a is None} {b is None}"
            for i, (x, y) in enumerate(zip(a, b)):
                assert_close(x, y, kind, f"{where}.{f}[{i}]")
                compared += 1
        else:
            assert_close(a, b, kind, f"{where}.{f}")
            compared += 1
    return compared


TOWER_FIELDS = ("last_hidden_state", "pooler_output", "hidden_states", "attentions")
