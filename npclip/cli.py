"""The ``npclip`` command line (also ``python -m npclip``).

    npclip classify cat.jpg --labels cat dog car
    npclip embed --images a.jpg b.jpg --output emb.npy
    npclip similarity --images a.jpg --texts "a cat" "a dog"

Every subcommand is one line of ``COMMANDS``: name -> (target, help). The target is a module, or
``module:Name`` for an object inside one, offering ``add_arguments(parser)`` and ``run(args) -> int``.
It is imported only when its subcommand runs, so ``npclip --help`` and the start of every command
stay fast (``import npclip`` imports NumPy and nothing heavier).

Exit codes: 0 ok, 1 a runtime failure, 2 a usage error. A failure prints one line
``npclip: error: ...`` on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import warnings

COMMANDS = {
    "classify": ("npclip.cli:Classify", "zero-shot classification of images against text labels"),
    "embed": ("npclip.cli:Embed", "write image or text embeddings to a .npy file"),
    "similarity": ("npclip.cli:Similarity", "print the cosine similarities of images and texts"),
    "verify": ("npclip.verify:Verify", "compare another CLIP implementation with npclip, stage by stage"),
    "export-reference": ("npclip.verify:ExportReference", "write every stage of npclip's CLIP to a golden file"),
    "bench": ("npclip.bench", "time npclip against transformers"),
}

DEFAULT_MODEL = "openai/clip-vit-base-patch32"  # the same as npclip.hub.DEFAULT_MODEL (not imported: cold start)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")

EPILOG = """\
examples:
  npclip classify cat.jpg --labels cat dog car
  npclip classify https://example.com/cat.jpg --labels cat dog --json
  npclip classify *.jpg --labels "a diagram" "a photo" --template "{}" --top-k 1
  npclip embed --image-dir photos/ --output photos.npy        (writes photos.npy and photos.json)
  npclip embed --text-file captions.txt --output captions.npy --no-normalize
  npclip similarity --images a.jpg b.jpg --texts "a cat" "a dog" --softmax
  HF_HUB_OFFLINE=1 npclip classify cat.jpg --labels cat dog   (only the local Hugging Face cache)

Models are hub ids (default %s), checkpoint directories or bundled names
(tiny-shapes). Run 'npclip COMMAND --help' for a command's options.
exit codes: 0 ok, 1 runtime failure, 2 usage error""" % DEFAULT_MODEL


class UsageError(Exception):
    """A bad command line found after parsing (exit code 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with usage errors as one line: 'npclip: error: ...' (exit code 2)."""

    def error(self, message):
        self.exit(2, f"npclip: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------------------------
# main


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        names = ", ".join(n for n, (target, _) in COMMANDS.items() if _installed(target))
        print(f"npclip: error: no command given: choose one of {names} (see 'npclip --help')", file=sys.stderr)
        return 2
    warnings.showwarning = _show_warning
    try:
        return int(_command(args.command).run(args) or 0)
    except UsageError as e:
        print(f"npclip: error: {e} (see 'npclip {args.command} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("npclip: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (npclip ... | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"npclip: error: {_one_line(e)}", file=sys.stderr)
        return 1


def build_parser(argv=()) -> ArgumentParser:
    """The parser; only the subcommand named in argv gets its arguments (and its module imported)."""
    parser = ArgumentParser(prog="npclip", description="CLIP in NumPy: zero-shot classification, embeddings and "
                            "similarities from the command line.", epilog=EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"npclip {__version__}")
    add_global_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (target, help) in COMMANDS.items():
        if not _installed(target):
            continue
        command = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=getattr(_command(name), "EPILOG", None) if name == chosen else None)
        if name == chosen:
            _command(name).add_arguments(command)
            add_global_arguments(command, defaults=False)
    return parser


def add_global_arguments(parser, defaults=True):
    """--backend, --dtype, --debug: before the subcommand, or after it (then they override)."""
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    group = parser.add_argument_group("global options")
    group.add_argument("--backend", choices=("numpy", "cupy"), default=d(None),
                       help="array backend (default: numpy, or $NPCLIP_BACKEND)")
    group.add_argument("--dtype", choices=("float32", "float16"), default=d(None), help="compute dtype "
                       "(default float32)")
    group.add_argument("--debug", action="store_true", default=d(False), help="show tracebacks of errors")


def add_model_arguments(parser, default=DEFAULT_MODEL):
    """--model and the hub options, for every command that loads a checkpoint."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", default=default, metavar="ID_OR_DIR",
                       help=f"hub id, checkpoint directory or bundled name (default {default})")
    group.add_argument("--revision", help="hub branch, tag or commit (default main)")
    group.add_argument("--cache-dir", metavar="DIR", help="Hugging Face cache (default $HF_HUB_CACHE)")
    group.add_argument("--local-files-only", action="store_true",
                       help="never use the network (as HF_HUB_OFFLINE=1)")


def load_model(args):
    """The model, tokenizer and image processor named by --model. -> (model, tokenizer, image_processor)"""
    from .pipelines import load_model

    return load_model(args.model, args.backend, args.dtype, revision=args.revision,
                      cache_dir=args.cache_dir, local_files_only=args.local_files_only)


def _installed(target) -> bool:
    return importlib.util.find_spec(target.partition(":")[0]) is not None


def _command(name):
    module, _, attr = COMMANDS[name][0].partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attr) if attr else loaded


def _one_line(e) -> str:
    """An exception as one line: its message, or (for an unexpected kind) its type too."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        return f"{e.filename}: {e.strerror}"
    message = " ".join(str(e).split())
    if isinstance(e, (ValueError, OSError, RuntimeError)) and message:
        return message
    return f"{type(e).__name__}: {message} (run with --debug for the traceback)"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"npclip: warning: {message}", file=sys.stderr)


def positive_int(text) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Shared pieces of the commands


def check_images(paths) -> list[str]:
    """Fail early, before loading a model, on image files that are missing or not images (URLs pass)."""
    from .pipelines import URL_SCHEMES, check_image_file

    for p in paths:
        if not p.startswith(URL_SCHEMES):
            check_image_file(p)
    return list(paths)


def image_dir(directory) -> list[str]:
    """The image files of a directory (by extension), sorted by name."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, "no such directory", directory)
    files = sorted(f for f in os.listdir(directory) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"{directory}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(directory, f) for f in files]


def text_file(path) -> list[str]:
    """The non-empty lines of a UTF-8 text file ('-': standard input)."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"{path}: no text (every line is empty)")
    return texts


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total, what, enabled=None):
        self.total, self.what, self.done = total, what, 0
        self.tty = sys.stderr.isatty()
        self.enabled = self.tty if enabled is None else enabled

    def update(self, n):
        self.done += n
        if not self.enabled:
            return
        filled = int(30 * self.done / max(self.total, 1))
        line = f"{self.what} {self.done}/{self.total} [{'=' * filled}{' ' * (30 - filled)}]"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print(file=sys.stderr)


def batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------------------------------
# npclip classify


class Classify:
    """npclip classify IMAGE... --labels L...: the zero-shot pipeline on each image."""

    EPILOG = """\
examples:
  npclip classify cat.jpg --labels cat dog car
  npclip classify cat.jpg dog.jpg --labels cat dog --top-k 1 --json
  npclip classify scan.png --labels "a diagram" "a photo of a person" --template "{}"

Each label is put into the template ("This is a photo of {}." by default); the scores are the
softmax over the labels of the model's logits_per_image, as transformers'
pipeline("zero-shot-image-classification") computes them."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or http(s) URLs")
        parser.add_argument("--labels", "-l", nargs="+", required=True, metavar="LABEL", help="candidate labels")
        parser.add_argument("--template", "-t", default="This is a photo of {}.",
                            help='where each label goes ({}); default "This is a photo of {}."')
        parser.add_argument("--top-k", "-k", type=positive_int, metavar="K", help="print only the best K labels")
        parser.add_argument("--json", action="store_true", help="print JSON: [{image, scores: [{label, score}]}]")
        parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per batch")
        parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per image URL")
        add_model_arguments(parser)

    @staticmethod
    def run(args) -> int:
        blank = [label for label in args.labels if not label.strip()]
        if blank:
            raise UsageError(f"empty label {blank[0]!r}: every label needs some text")
        if "{}" not in args.template:
            raise UsageError(f"--template {args.template!r} has no {{}} for the label")
        images = check_images(args.images)
        from .pipelines import ZeroShotImageClassificationPipeline

        clip = ZeroShotImageClassificationPipeline(*load_model(args), batch_size=args.batch_size)
        clip.label_features(args.labels, args.template)  # the labels once, for every image
        clip.model.release_layers("text")  # nothing reads the text tower again: its memory goes before the images'
        results = []
        for chunk in batches(images, args.batch_size):
            scored = clip(chunk, candidate_labels=args.labels, hypothesis_template=args.template,
                          top_k=args.top_k, timeout=args.timeout)
            for image, scores in zip(chunk, scored):
                results.append({"image": image, "scores": scores})
                if not args.json:
                    print(image)
                    print("\n".join(f"  {s['score']:.4f}  {s['label']}" for s in scores), flush=True)
        if args.json:
            print(json.dumps(results, indent=2))
        return 0


# ----------------------------------------------------------------------------------------------
# npclip embed


class Embed:
    """npclip embed (--images | --image-dir | --texts | --text-file) --output OUT.npy"""

    EPILOG = """\
examples:
  npclip embed --images a.jpg b.jpg --output images.npy
  npclip embed --image-dir photos/ --output photos.npy --batch-size 64
  npclip embed --texts "a cat" "a dog" --output texts.npy --no-normalize
  cat captions.txt | npclip embed --text-file - --output captions.npy

Writes OUT.npy (float32, one row per input, in input order) and OUT.json beside it: the model,
the kind of input, whether rows are L2-normalised, the shape and the inputs in row order."""

    @staticmethod
    def add_arguments(parser):
        source = parser.add_argument_group("inputs (one of)").add_mutually_exclusive_group(required=True)
        source.add_argument("--images", nargs="+", metavar="IMAGE", help="image files or http(s) URLs")
        source.add_argument("--image-dir", metavar="DIR", help="every image file of a directory, by name")
        source.add_argument("--texts", nargs="+", metavar="TEXT", help="texts")
        source.add_argument("--text-file", metavar="FILE", help="one text per line ('-': standard input)")
        parser.add_argument("--output", "-o", required=True, metavar="OUT.npy", help="the array to write")
        parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="inputs per batch")
        parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                            help="L2-normalise each embedding (default: yes)")
        parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                            help="progress bar on stderr (default: when stderr is a terminal)")
        parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per image URL")
        add_model_arguments(parser)

    @staticmethod
    def run(args) -> int:
        kind, inputs = Embed.inputs(args)
        output = args.output if args.output.endswith(".npy") else args.output + ".npy"
        if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
            raise FileNotFoundError(2, "no such directory", os.path.dirname(output))
        model, tokenizer, image_processor = load_model(args)
        progress = Progress(len(inputs), f"embedding {kind}s", args.progress)
        rows = []
        for chunk in batches(inputs, args.batch_size):
            rows.append(embed(model, tokenizer, image_processor, kind, chunk, args.timeout))
            progress.update(len(chunk))
        progress.close()
        import numpy as np

        array = np.concatenate(rows).astype(np.float32)  # [N, E]
        if args.normalize:
            array /= np.linalg.norm(array, axis=-1, keepdims=True)
        np.save(output, array)
        meta = {"model": args.model, "revision": args.revision, "kind": kind, "normalized": args.normalize,
                "shape": list(array.shape), "inputs": inputs}
        sidecar = output[: -len(".npy")] + ".json"
        with open(sidecar, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {output} ({array.shape[0]} x {array.shape[1]} float32"
              f"{', L2-normalised' if args.normalize else ''}) and {sidecar}")
        return 0

    @staticmethod
    def inputs(args):
        """-> ("image" | "text", the inputs in order)"""
        if args.images:
            return "image", check_images(args.images)
        if args.image_dir:
            return "image", image_dir(args.image_dir)
        if args.texts:
            return "text", list(args.texts)
        return "text", text_file(args.text_file)


def embed(model, tokenizer, image_processor, kind, items, timeout=10.0):
    """Projected features of a batch of images or texts (not normalised). -> [b, E] NumPy"""
    from .backend import to_numpy
    from .pipelines import load_image, tokenize

    if kind == "text":
        ids, mask = tokenize(tokenizer, items, model.text_config.max_position_embeddings)
        return to_numpy(model.get_text_features(ids, mask))
    pixels = image_processor([load_image(p, timeout) for p in items], return_tensors="np")["pixel_values"]
    return to_numpy(model.get_image_features(pixels))


# ----------------------------------------------------------------------------------------------
# npclip similarity


class Similarity:
    """npclip similarity --images ... --texts ...: a table of cosine similarities."""

    EPILOG = """\
examples:
  npclip similarity --images cat.jpg dog.jpg --texts "a cat" "a dog"
  npclip similarity --images cat.jpg --texts "a cat" "a dog" --softmax --json

Rows are images, columns texts; each cell is the cosine similarity of their embeddings. With
--softmax, also the probabilities over the texts for each image (softmax of logits_per_image,
the cosine scaled by the model's logit_scale), as zero-shot classification computes them."""

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--images", nargs="+", required=True, metavar="IMAGE", help="image files or URLs")
        parser.add_argument("--texts", nargs="+", required=True, metavar="TEXT", help="texts")
        parser.add_argument("--softmax", action="store_true", help="also print probabilities over the texts")
        parser.add_argument("--json", action="store_true", help="print JSON: images, texts, cosine (, softmax)")
        parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="images per batch")
        parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per image URL")
        add_model_arguments(parser)

    @staticmethod
    def run(args) -> int:
        images = check_images(args.images)
        model, tokenizer, image_processor = load_model(args)
        cosine, probs = similarities(model, tokenizer, image_processor, images, args.texts, args.batch_size,
                                     args.timeout)
        if args.json:
            out = {"images": images, "texts": args.texts, "cosine": cosine.tolist()}
            if args.softmax:
                out["softmax"] = probs.tolist()
            print(json.dumps(out, indent=2))
            return 0
        print(table("cosine similarity", images, args.texts, cosine))
        if args.softmax:
            print()
            print(table("softmax over texts", images, args.texts, probs))
        return 0


def similarities(model, tokenizer, image_processor, images, texts, batch_size=8, timeout=10.0):
    """-> (cosine [B_img, B_text], softmax of logits_per_image over the texts [B_img, B_text])"""
    import numpy as np

    from .backend import to_numpy
    from .pipelines import load_image, softmax, tokenize

    ids, mask = tokenize(tokenizer, texts, model.text_config.max_position_embeddings)
    cosine, probs = [], []
    for chunk in batches(images, batch_size):
        pixels = image_processor([load_image(p, timeout) for p in chunk], return_tensors="np")["pixel_values"]
        out = to_numpy(model(input_ids=ids, attention_mask=mask, pixel_values=pixels))
        cosine.append(out.image_embeds.astype(np.float64) @ out.text_embeds.astype(np.float64).T)  # [b, B_text]
        probs.append(softmax(out.logits_per_image))
    return np.concatenate(cosine), np.concatenate(probs)


def table(title, rows, columns, values, width=24) -> str:
    """A plain-text table: one row per image, one column per text, 4 decimals."""
    heads = [c if len(c) <= width else c[: width - 3] + "..." for c in columns]
    widths = [max(len(h), 7) for h in heads]
    first = max(len(title), *(len(r) for r in rows))
    lines = ["  ".join([title.ljust(first)] + [h.rjust(w) for h, w in zip(heads, widths)])]
    for name, row in zip(rows, values):
        lines.append("  ".join([name.ljust(first)] + [f"{v:.4f}".rjust(w) for v, w in zip(row, widths)]))
    return "\n".join(lines)
