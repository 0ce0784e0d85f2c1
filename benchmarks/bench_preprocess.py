"""Preprocessing throughput: npclip's tokenizer and image processor against transformers', in one run.

    python benchmarks/bench_preprocess.py                  # 4096 captions, 64 images, best of 3
    python benchmarks/bench_preprocess.py --texts 20000 --images 256 --repeat 5

Tokenising: batches of 256 captions, padded and truncated to 77, as NumPy arrays; "cold" starts each
timed pass with an empty word cache (a fresh tokenizer, its build not counted), "warm" reuses it.
Images: PIL photographs of several sizes, batches of 32, to pixel_values [32, 3, 224, 224].
npclip and transformers alternate pass by pass and the best pass is kept, so a noisy machine slows both
alike. The reference tokenizer is built offline from the merge file npclip ships.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from npclip.image_processing import CLIPImageProcessor  # noqa: E402
from npclip.tokenizer import CLIPTokenizer  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
TEXT_BATCH, IMAGE_BATCH = 256, 32

ADJECTIVES = "red small fluffy old shiny wooden blurry bright dark tiny huge striped".split()
NOUNS = "cat dog astronaut car bicycle tree house bird flower robot teapot mountain".split()
PLACES = "on the beach|in a forest|at night|under the sea|on the moon|in Paris|next to a café".split("|")


def captions(n: int, seed=0) -> list[str]:
    """Varied captions: templates, odd words from the vocabulary, numbers, some long ones."""
    rng = np.random.default_rng(seed)
    words = [w[:-4] for w in CLIPTokenizer().get_vocab() if w.endswith("</w>") and w[:-4].isalpha()]
    out = []
    for i in range(n):
        adj, noun, place = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(PLACES)
        odd = " ".join(rng.choice(words, size=rng.integers(0, 6)))
        text = f"A photo of a {adj} {noun} {place}, {odd} #{i}"
        out.append(text * 8 if i % 50 == 0 else text)  # every 50th far beyond 77 tokens
    return out


def images(n: int) -> list[Image.Image]:
    """The two test photographs at sizes from 300 to 1024 pixels, cycled."""
    photos = [Image.open(os.path.join(DATA, name)).convert("RGB") for name in ("chelsea.png", "astronaut.png")]
    sizes = [(451, 300), (512, 512), (640, 480), (1024, 768), (300, 451)]
    variants = [p.resize(s, Image.Resampling.BICUBIC) for p in photos for s in sizes]
    return [variants[i % len(variants)] for i in range(n)]


def reference():
    """transformers' CLIPTokenizer (from vocab.json + merges.txt written here) and CLIPImageProcessorPil."""
    try:
        import transformers
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()
    directory = tempfile.mkdtemp(prefix="npclip-bench-")
    CLIPTokenizer().save_pretrained(directory)
    return transformers.CLIPTokenizer.from_pretrained(directory), transformers.CLIPImageProcessorPil()


def timed(fn, setup) -> float:
    """Seconds for one call of fn on what setup (untimed) returns."""
    arg = setup()
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def best_of(fn, repeat: int, setups: dict) -> dict:
    """{name: fastest of `repeat` passes}, the libraries alternating pass by pass."""
    times = {name: [] for name in setups}
    for _ in range(repeat):
        for name, setup in setups.items():
            times[name].append(timed(fn, setup))
    return {name: min(t) for name, t in times.items()}


def tokenize_all(tok, texts):
    for i in range(0, len(texts), TEXT_BATCH):
        tok(texts[i : i + TEXT_BATCH], padding="max_length", truncation=True, max_length=77, return_tensors="np")


def process_all(proc, batch):
    for i in range(0, len(batch), IMAGE_BATCH):
        proc(batch[i : i + IMAGE_BATCH], return_tensors="np")


def measure(args, ref) -> list[dict]:
    texts, pictures = captions(args.texts), images(args.images)
    ours_tok, ours_proc = CLIPTokenizer(), CLIPImageProcessor()
    cells = [
        ("tokenize, cold cache (texts/s)", len(texts),
         lambda t: tokenize_all(t, texts), CLIPTokenizer, ref and (lambda: _fresh_reference_tokenizer(ref[0]))),
        ("tokenize, warm cache (texts/s)", len(texts),
         lambda t: tokenize_all(t, texts), lambda: ours_tok, ref and (lambda: ref[0])),
        ("preprocess images (images/s)", len(pictures),
         lambda p: process_all(p, pictures), lambda: ours_proc, ref and (lambda: ref[1])),
    ]
    tokenize_all(ours_tok, texts)  # fill the warm caches
    if ref:
        tokenize_all(ref[0], texts)
    rows = []
    for name, n, fn, ours, theirs in cells:
        seconds = best_of(fn, args.repeat, {"npclip": ours, **({"transformers": theirs} if theirs else {})})
        row = {"what": name, **{lib: n / s for lib, s in seconds.items()}}
        if theirs:
            row["ratio"] = row["npclip"] / row["transformers"]
        rows.append(row)
    return rows


def _fresh_reference_tokenizer(tok):
    """A new transformers tokenizer with an empty cache, from the same files."""
    return type(tok).from_pretrained(tok.name_or_path)


def machine() -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine()}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads, "
                        f"{p.get('architecture')})" for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = ["threadpoolctl not installed"]
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    ref = reference()
    results = {"machine": machine(), "rows": measure(args, ref)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["machine"]
    print(f"python {m['python']}, numpy {m['numpy']}, transformers {m['transformers']}, {m['cpus']} CPUs")
    print("BLAS (threadpoolctl): " + ("; ".join(m["blas"]) or "none loaded (preprocessing needs none)"))
    print(f"{'':34} {'npclip':>10} {'transformers':>13} {'npclip/transformers':>20}")
    for r in results["rows"]:
        theirs = f"{r['transformers']:13.0f}" if "transformers" in r else f"{'-':>13}"
        ratio = f"{r['ratio']:20.2f}" if "ratio" in r else f"{'-':>20}"
        print(f"{r['what']:34} {r['npclip']:10.0f} {theirs} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
