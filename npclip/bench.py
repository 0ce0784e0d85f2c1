"""``npclip bench``: npclip against transformers on the same checkpoint and inputs, in one process.

Throughput is measured alternating npclip and transformers call by call (best of N), so that a
noisy machine slows both alike. Peak memory and cold start are measured in fresh subprocesses,
one per library. Without torch/transformers installed, npclip is measured alone. Inputs are
shaped by the checkpoint's config (image size, vocabulary, positions); ``--dtype float16`` runs
both libraries in float16. This command measures the CPU; benchmarks/bench_gpu.py measures the
CuPy backend against transformers on a GPU.

    npclip bench                     # a random-weight ViT-B/32 checkpoint made on the fly
    npclip bench --model DIR --repeat 5 --json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

IMAGE_BATCHES = (1, 8, 32)
TEXT_BATCH = 32


def add_arguments(parser):
    parser.add_argument("--model", help="a local CLIP checkpoint directory (default: random ViT-B/32 weights)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per cell, best kept (default 3)")
    parser.add_argument("--image-batches", type=int, nargs="+", default=list(IMAGE_BATCHES))
    parser.add_argument("--text-batch", type=int, default=TEXT_BATCH)
    parser.add_argument("--no-reference", action="store_true", help="measure npclip only")
    parser.add_argument("--skip-subprocess", action="store_true", help="skip peak memory and cold start")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args) -> int:
    from .backend import default_backend
    from .cli import UsageError

    if (args.backend or default_backend()) != "numpy":
        raise UsageError("npclip bench measures the NumPy backend on the CPU; for CuPy on a GPU run "
                         "benchmarks/bench_gpu.py from a checkout (docs/backend.md)")
    dtype = args.dtype or "float32"
    directory = args.model or random_checkpoint(os.path.join(tempfile.mkdtemp(prefix="npclip-bench-"), "vit-b32"))
    ref = None if args.no_reference else _reference_available()
    results = {"machine": machine_info(), "model": directory, "dtype": dtype, "reference": ref, "cells": []}
    if not args.skip_subprocess:  # first, while this process is still small
        results["cells"] += subprocess_cells(directory, ref, dtype)
    results["cells"] += throughput(directory, ref, args.image_batches, args.text_batch, args.repeat, dtype)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


# ----------------------------------------------------------------------------------------------
# Inputs and checkpoints


def random_checkpoint(directory, seed=0):
    """A ViT-B/32-sized CLIP checkpoint with random weights at trained-like scales, made with NumPy only."""
    from safetensors.numpy import save_file

    from .configuration import CLIPConfig
    from .weights import expected_shapes

    cfg = CLIPConfig()
    rng = np.random.default_rng(seed)
    parts = ("text", "vision", "text_projection", "visual_projection", "logit_scale")
    tensors = {}
    for name, shape in expected_shapes(parts, cfg.text_config, cfg.vision_config, cfg.projection_dim).items():
        if name == "logit_scale":
            value = np.array(np.log(100.0))
        elif "norm" in name or "layrnorm" in name:
            value = (1.0 if name.endswith("weight") else 0.0) + rng.standard_normal(shape) * 0.2
        elif name.endswith("bias"):
            value = rng.standard_normal(shape) * 0.1
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 and "embedding" not in name else 1
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        tensors[name] = value.astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    d = cfg.to_dict()
    d["architectures"] = ["CLIPModel"]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
    from .image_processing import CLIPImageProcessor
    from .tokenizer import CLIPTokenizer

    CLIPTokenizer().save_pretrained(directory)  # OpenAI's vocabulary, shipped with npclip
    CLIPImageProcessor().save_pretrained(directory)
    return directory


def text_batch(batch, vocab=49408, pad_to=None, seed=0, max_length=77):
    """Token ids shaped like tokenizer output: bos, 5-20 words, eos, eos padding (CLIP's vocabulary
    ends with bos, eos). Lengths are capped at max_length. -> ids, mask [B, T]"""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.integers(7, 23, batch), max_length)  # bos + words + eos
    T = pad_to or int(lengths.max())
    ids = np.full((batch, T), vocab - 1, dtype=np.int64)
    mask = np.zeros((batch, T), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, 0] = vocab - 2
        ids[b, 1 : n - 1] = rng.integers(256 if vocab > 258 else 0, vocab - 2, n - 2)  # not the specials
        mask[b, :n] = 1
    return ids, mask


def image_batch(batch, size=224, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Measurements


def _reference_available():
    try:
        import torch
        import transformers
    except ImportError:
        return None
    return f"transformers {transformers.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def alternating(fns, repeat, rounds=2):
    """Best time of each function, in rounds that take the libraries in turn, so that machine noise
    hits all alike. Within a round each library gets one untimed call, then ``repeat`` timed ones:
    the thread pools of the other library (OpenMP, OpenBLAS) keep spinning for a while after its
    last call, and would otherwise be timed too."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            fn()
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def throughput(directory, ref, image_batches, text_batch_size, repeat, dtype="float32"):
    from .modeling import CLIPModel

    ours = CLIPModel.from_pretrained(directory, backend="numpy", dtype=dtype)
    size, text = ours.vision_config.image_size, ours.text_config
    theirs = None
    if ref:
        import torch
        import transformers

        theirs = transformers.CLIPModel.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()
    cells = []
    for b in image_batches:
        px = image_batch(b, size).astype(dtype)
        fns = {"npclip": lambda px=px: ours.get_image_features(px)}
        if theirs is not None:
            tp = torch.from_numpy(px)
            fns["transformers"] = lambda tp=tp: _no_grad(theirs.get_image_features, pixel_values=tp)
        cells.append(_cell(f"image features, batch {b}", "images/s", b, alternating(fns, repeat)))
    longest = min(text.max_position_embeddings, 77)
    for label, pad_to in ((f"padded to {longest}", longest), ("padded to longest", None)):
        ids, mask = text_batch(text_batch_size, text.vocab_size, pad_to, max_length=longest)
        fns = {"npclip": lambda ids=ids, mask=mask: ours.get_text_features(ids, mask)}
        if theirs is not None:
            ti, tm = torch.from_numpy(ids), torch.from_numpy(mask)
            fns["transformers"] = lambda ti=ti, tm=tm: _no_grad(theirs.get_text_features, input_ids=ti,
                                                                attention_mask=tm)
        cells.append(_cell(f"text features, batch {text_batch_size}, {label} (T={ids.shape[1]})", "texts/s",
                           text_batch_size, alternating(fns, repeat)))
    return cells


def _no_grad(fn, **kwargs):
    import torch

    with torch.inference_mode():
        return fn(**kwargs)


def _cell(name, unit, count, times):
    cell = {"what": name, "unit": unit, "npclip": count / times["npclip"]}
    if "transformers" in times:
        cell["transformers"] = count / times["transformers"]
        cell["ratio"] = cell["npclip"] / cell["transformers"]
    return cell


# The same job in a fresh process for each library: zero-shot classification of one photograph
# against three labels, from a cold start (npclip: the `npclip classify` command; transformers: its
# pipeline). The child prints its own peak resident memory (VmHWM, MiB) last; ru_maxrss would
# include the parent's, inherited over exec.
_LABELS = ["a photo of a cat", "a photo of a dog", "a photo of a car"]
_JOB = r"""
import json, sys
lib, job, directory, image, dtype, size = sys.argv[1:7]
labels = json.loads(sys.argv[7])
rc = 0
if job == "features":  # image features of a batch of 32
    import numpy as np
    px = np.random.default_rng(0).standard_normal((32, 3, int(size), int(size))).astype(dtype)
if lib == "npclip" and job == "classify":
    from npclip.cli import main
    rc = main(["classify", image, "--labels", *labels, "--model", directory, "--dtype", dtype])
elif lib == "npclip":
    from npclip import CLIPModel
    CLIPModel.from_pretrained(directory, dtype=dtype).get_image_features(px)
elif job == "classify":
    import torch, transformers
    clip = transformers.pipeline("zero-shot-image-classification", model=directory, dtype=getattr(torch, dtype))
    print(clip(image, candidate_labels=labels))
else:
    import torch, transformers
    model = transformers.CLIPModel.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()
    with torch.inference_mode():
        model.get_image_features(pixel_values=torch.from_numpy(px))
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
print("VmHWM", int(hwm[0].split()[1]) / 1024 if hwm else float("nan"))
sys.exit(rc)
"""


def subprocess_cells(directory, ref, dtype="float32", repeat=2):
    """Cold start (seconds from process start to the printed result) and peak memory of two jobs."""
    from PIL import Image

    from .configuration import CLIPConfig

    size = CLIPConfig.from_pretrained(directory).vision_config.image_size
    image = os.path.join(tempfile.mkdtemp(prefix="npclip-bench-"), "photo.png")
    Image.fromarray((np.random.default_rng(0).random((300, 451, 3)) * 255).astype(np.uint8)).save(image)
    libs = ["npclip"] + (["transformers"] if ref else [])
    cells = []
    for job, what in (("classify", "classify 1 image, 3 labels (CLI vs pipeline)"),
                      ("features", "image features, batch 32")):
        seconds, peak = {lib: [] for lib in libs}, {}
        for _ in range(repeat):  # alternating; the first round also warms the file cache for both
            for lib in libs:
                t0 = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", _JOB, lib, job, directory, image, dtype, str(size),
                                      json.dumps(_LABELS)],
                                     capture_output=True, text=True)
                seconds[lib].append(time.perf_counter() - t0)
                if out.returncode:
                    raise RuntimeError(f"the {lib} {job} job failed: {out.stderr.strip().splitlines()[-1:]}")
                peak[lib] = float(out.stdout.split()[-1])
        if job == "classify":
            cells.append(_ratio_cell(f"cold start: {what}", "s", {k: min(v) for k, v in seconds.items()}))
        cells.append(_ratio_cell(f"peak memory: {what}", "MiB", peak))
    return cells


def _ratio_cell(what, unit, values):
    cell = {"what": what, "unit": unit, "npclip": values["npclip"]}
    if "transformers" in values:
        cell["transformers"] = values["transformers"]
        cell["ratio"] = values["npclip"] / values["transformers"]
    return cell


def machine_info():
    info = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine()}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{p['internal_api']} {p.get('version')} {p.get('architecture')} x{p['num_threads']}"
                        for p in threadpool_info()]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    return info


def format_table(results):
    lines = [f"machine: {json.dumps(results['machine'])}", f"model: {results['model']} ({results['dtype']})",
             f"reference: {results['reference'] or 'not installed (npclip alone)'}", "",
             f"{'what':<58} {'unit':>9} {'npclip':>10} {'transformers':>13} {'ratio':>7}"]
    for c in results["cells"]:
        ref = f"{c['transformers']:13.2f}" if "transformers" in c else f"{'-':>13}"
        ratio = f"{c['ratio']:7.2f}" if "ratio" in c else f"{'-':>7}"
        lines.append(f"{c['what']:<58} {c['unit']:>9} {c['npclip']:10.2f} {ref} {ratio}")
    lines.append("")
    lines.append("ratio: npclip / transformers (throughput: higher is better; seconds and MiB: lower is better)")
    return "\n".join(lines)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="npclip bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
