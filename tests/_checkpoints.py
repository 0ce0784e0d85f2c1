"""Whole random-weight CLIP checkpoints for the pipeline, hub and command-line tests.

A whole checkpoint is what a hub repository holds: the model (``config.json`` and
``model.safetensors``, made by tests/checkpoints.py with trained-like weight scales), the tokenizer
(``vocab.json`` and ``merges.txt`` built from the bundled BPE file as openai/CLIP's
simple_tokenizer does, then saved by transformers' CLIPTokenizer) and ``preprocessor_config.json``
(saved by transformers' CLIPImageProcessorPil). Text uses the real 49,408-token vocabulary and 77
positions, so real words and the truncation rule behave as with a real checkpoint; the towers stay
tiny and odd-sized, so building one takes about a second.

    whole_checkpoint(tmp_path_factory)            built once per test session, then shared
"""

from __future__ import annotations

import gzip
import json
import os

from checkpoints import make_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPE = os.path.join(ROOT, "npclip", "data", "bpe_simple_vocab_16e6.txt.gz")

TEXT = dict(vocab_size=49408, hidden_size=42, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3,
            max_position_embeddings=77, projection_dim=19, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
VISION = dict(hidden_size=42, intermediate_size=37, num_hidden_layers=2, num_attention_heads=3, image_size=30,
              patch_size=6, projection_dim=19)

_MADE: dict[str, str] = {}


def openai_vocab(path=BPE):
    """openai/CLIP simple_tokenizer.py's vocabulary (49,408 tokens in id order) and merges ("a b"
    lines in rank order), re-typed here so that the reference never comes from the code under test."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_chars = [chr(c) for c in cs]
    merges = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]  # line 0: a header
    vocab = byte_chars + [v + "</w>" for v in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    return vocab, merges


def write_bpe_files(directory) -> None:
    """vocab.json and merges.txt, as the hub's openai/clip-vit-* checkpoints carry them."""
    vocab, merges = openai_vocab()
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({tok: i for i, tok in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def make_whole_checkpoint(directory, seed=0) -> str:
    """Model, tokenizer and image-processor files in one directory, as in a hub repository."""
    import transformers as T

    make_checkpoint(directory, "CLIPModel", text=TEXT, vision=VISION, seed=seed)
    write_bpe_files(directory)
    T.CLIPTokenizer.from_pretrained(directory, model_max_length=77).save_pretrained(directory)
    size = VISION["image_size"]
    T.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        directory)
    return os.fspath(directory)


def whole_checkpoint(tmp_path_factory, name="tiny-whole", seed=0) -> str:
    """The session's whole checkpoint of that name (built on first use)."""
    if name not in _MADE:
        _MADE[name] = make_whole_checkpoint(tmp_path_factory.mktemp(name), seed)
    return _MADE[name]
