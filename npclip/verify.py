"""Verify another CLIP implementation against npclip, stage by stage (docs/verification.md).

* ``capture(model, **inputs)`` runs any npclip model and returns every intermediate array by its
  stable name (the Hugging Face module name; ``stage_names(model)`` lists them), in data-flow order.
* ``export_reference(model, inputs, path)`` writes a golden file: the inputs and every stage in one
  ``.npz``, with a JSON manifest inside it (``__manifest__``, UTF-8 bytes) and beside it (``.json``).
* ``run_transformers``, ``run_open_clip``, ``run_onnx`` compute the same stages with another
  implementation (imported only when called); ``read_golden`` reads a file written by anyone.
* ``compare(reference, candidate)`` -> ``Report``: one row per stage with the max absolute and
  relative error, the bound and pass/FAIL, and the first stage that fails.

The command line: ``npclip export-reference`` and ``npclip verify`` (add_*_arguments / run_*).
"""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .backend import to_numpy

FORMAT = "npclip-reference"
FORMAT_VERSION = 1
MANIFEST_KEY = "__manifest__"
INPUT_NAMES = ("input_ids", "attention_mask", "pixel_values")
TOLERANCES = {"float32": 1e-4, "float16": 2e-2}  # the default tol by reference dtype (docs/verification.md)
RULE = "max|candidate - reference| <= max(atol, rtol * max|reference|), atol = rtol = tol unless set"
DEFAULT_TEXTS = ("a photo of a cat", "a photo of an astronaut", "a diagram")

LAYER_STAGES = ("layer_norm1", "self_attn", "layer_norm2", "mlp.fc1", "mlp.activation_fn", "mlp", "")


class VerifyError(ValueError):
    """A reference or candidate that cannot be compared (missing inputs, unknown spec, bad file)."""


# ----------------------------------------------------------------------------------------------
# Named intermediate activations


def capture(model, **inputs) -> dict[str, np.ndarray]:
    """Run an npclip model once and return every recorded stage, in data-flow order.

    inputs: input_ids [B, T], attention_mask [B, T], pixel_values [B, C, H, W] (those the model's
    forward does not take are ignored). Each array is a host copy.
    """
    stages: dict[str, np.ndarray] = {}

    def record(name, array):
        stages[name] = np.array(to_numpy(array), copy=True)

    model.forward(**_accepted(model.forward, inputs), record=record)
    return stages


def stage_names(model) -> list[str]:
    """The names ``capture(model)`` returns, in the same order, without running the model."""

    def tower(name, cfg, head, tail):
        layers = [f"{name}.encoder.layers.{i}" + (f".{s}" if s else "")
                  for i in range(cfg.num_hidden_layers) for s in LAYER_STAGES]
        return [*head, *layers, *tail]

    names = []
    if "vision" in model.parts:
        names += tower("vision_model", model.vision_config, ["vision_model.embeddings", "vision_model.pre_layrnorm"],
                       ["vision_model.post_layernorm"])
    if "text" in model.parts:
        names += tower("text_model", model.text_config, ["text_model.embeddings"],
                       ["text_model.final_layer_norm", "text_model.pooler_output"])
    names += [p for p in ("visual_projection", "text_projection", "classifier") if p in model.parts]
    return names + (["logits_per_image", "logits_per_text"] if "logit_scale" in model.parts else [])


def _accepted(function, inputs) -> dict:
    """The inputs a forward takes, by name."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in inputs.items() if k in names and v is not None}


# ----------------------------------------------------------------------------------------------
# Golden files


@dataclass
class Golden:
    """A golden (or candidate) file: arrays by name in manifest order, and the manifest if any."""

    arrays: dict
    manifest: dict | None = None
    path: str = ""

    @property
    def inputs(self) -> dict:
        return {k: v for k, v in self.arrays.items() if k in INPUT_NAMES}

    @property
    def stages(self) -> dict:
        return {k: v for k, v in self.arrays.items() if k not in INPUT_NAMES}


def manifest_for(model, inputs, stages, model_name=None, texts=None, images=None) -> dict:
    """The JSON manifest of a golden file: what made it, the inputs, every stage's shape in order."""
    from . import __version__

    def entry(name, a):
        return {"name": name, "shape": list(a.shape), "dtype": str(a.dtype)}

    dtype = str(model.dtype)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": None if model_name is None else os.fspath(model_name), "model_class": type(model).__name__,
        "config": model.config.to_dict(), "dtype": dtype,
        "npclip_version": __version__, "numpy_version": np.__version__,
        "texts": list(texts or []), "images": list(images or []),
        "inputs": [entry(k, v) for k, v in inputs.items()],
        "stages": [entry(k, v) for k, v in stages.items()],
        "tolerance": {"rule": RULE, "tol": TOLERANCES.get(dtype, TOLERANCES["float32"])},
    }


def export_reference(model, inputs, path, model_name=None, texts=None, images=None, compress=False) -> dict:
    """Capture every stage of ``model`` on ``inputs`` and write ``path`` (.npz) and its .json manifest.

    inputs: any of input_ids, attention_mask, pixel_values (NumPy arrays); texts, images: what they
    were made from (recorded in the manifest; images as {"name", "sha256"}). Returns the manifest.
    """
    inputs = {k: np.asarray(to_numpy(v)) for k, v in _accepted(model.forward, inputs).items()}
    stages = capture(model, **inputs)
    manifest = manifest_for(model, inputs, stages, model_name, texts, images)
    write_golden(path, {**inputs, **stages}, manifest, compress)
    return manifest


def write_golden(path, arrays, manifest, compress=False) -> None:
    """Write arrays and the manifest into ``path`` exactly (no .npz appended) and ``<stem>.json``."""
    text = json.dumps(manifest, indent=1)
    payload = {MANIFEST_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}
    with open(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **payload)
    with open(manifest_path(path), "w", encoding="utf-8") as f:
        f.write(text + "\n")


def manifest_path(path) -> str:
    """ref.npz -> ref.json"""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def read_golden(path) -> Golden:
    """Read a golden file, or any .npz of arrays named by stage (then without a manifest)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise VerifyError(f"{path}: not a readable .npz file ({e})") from None
    raw = arrays.pop(MANIFEST_KEY, None)
    manifest = None if raw is None else json.loads(raw.tobytes().decode("utf-8"))
    if manifest is not None:
        order = [e["name"] for e in manifest.get("inputs", []) + manifest.get("stages", [])]
        arrays = {**{k: arrays[k] for k in order if k in arrays}, **arrays}
    return Golden(arrays, manifest, os.fspath(path))


# ----------------------------------------------------------------------------------------------
# Candidates: other implementations, computing the same stages (imported only when asked for)

_TRANSFORMERS_STAGE = re.compile(
    r"^(vision_model\.(embeddings|pre_layrnorm|post_layernorm)|text_model\.(embeddings|final_layer_norm)"
    r"|(text|vision)_model\.encoder\.layers\.\d+(\.(layer_norm1|self_attn|layer_norm2|mlp|mlp\.fc1"
    r"|mlp\.activation_fn))?|text_projection|visual_projection|classifier)$")


def run_transformers(model, inputs, cls_name="CLIPModel") -> dict[str, np.ndarray]:
    """Every stage of a transformers CLIP model (a loaded model or a checkpoint directory), by
    forward hooks on its modules, whose names are the stage names.

    inputs: input_ids, attention_mask, pixel_values as NumPy arrays.
    """
    import torch

    if isinstance(model, (str, os.PathLike)):
        import transformers

        model = getattr(transformers, cls_name).from_pretrained(
            model, dtype=torch.float32, attn_implementation="eager").eval()
    stages, handles = {}, []
    prefix = _tower_prefix(model)
    for name, module in model.named_modules():
        full = prefix + name if name else prefix.rstrip(".")
        if _TRANSFORMERS_STAGE.match(full):
            handles.append(module.register_forward_hook(_torch_hook(stages, full)))
        if full == "text_model":  # the pooled state is a field of the tower's output, not a module's
            handles.append(module.register_forward_hook(_torch_hook(stages, "text_model.pooler_output", True)))
    try:
        with torch.no_grad():
            out = model(**_torch_inputs(model, inputs))
    finally:
        for h in handles:
            h.remove()
    for name in ("logits_per_image", "logits_per_text"):
        if getattr(out, name, None) is not None:
            stages[name] = _torch_numpy(getattr(out, name))
    return stages


def _tower_prefix(model) -> str:
    """'' for models holding text_model/vision_model, else the tower's own name."""
    if hasattr(model, "text_model") or hasattr(model, "vision_model"):
        return ""
    return "text_model." if hasattr(model, "final_layer_norm") else "vision_model."


def _torch_hook(stages, name, pooled=False):
    def hook(module, args, output):
        if pooled:
            output = getattr(output, "pooler_output", None)
        elif isinstance(output, (tuple, list)):
            output = output[0]
        if output is not None:
            stages[name] = _torch_numpy(output)
    return hook


def _torch_numpy(t):
    """A torch tensor as a NumPy copy (bfloat16, which NumPy lacks, as float32)."""
    import torch

    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def _torch_inputs(model, inputs) -> dict:
    """The inputs a transformers CLIP class takes, as torch tensors."""
    import torch

    kind = type(model).__name__
    names = ("pixel_values",) if "Vision" in kind or "Classification" in kind else \
        ("input_ids", "attention_mask") if "Text" in kind else INPUT_NAMES
    dtype = next(model.parameters()).dtype
    out = {k: torch.from_numpy(np.asarray(inputs[k])) for k in names if inputs.get(k) is not None}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


# open_clip's CLIP module names -> stage names (resblocks are the encoder layers).
_OPEN_CLIP_LAYER = {"ln_1": "layer_norm1", "attn": "self_attn", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                    "mlp.gelu": "mlp.activation_fn", "mlp": "mlp", "": ""}


def run_open_clip(model, inputs) -> dict[str, np.ndarray]:
    """The stages of an open_clip ``CLIP`` model (openai-style ViT towers) by forward hooks.

    Text runs with open_clip's causal mask only (it has no padding mask): compare with
    ``ignore_padding=True``. Token ids shorter than open_clip's context are padded with 0 and its
    text stages cut back (under the causal mask, later tokens change nothing before them). The
    pooled text state, projections and logits are computed as open_clip computes them.
    """
    import torch

    stages = {}
    handles = _open_clip_hooks(model, stages)
    ids = np.asarray(inputs["input_ids"])
    T, context = ids.shape[1], model.positional_embedding.shape[0]
    padded = np.concatenate([ids, np.zeros((len(ids), max(context - T, 0)), ids.dtype)], axis=1)
    try:
        with torch.no_grad():
            ids_t = torch.from_numpy(padded)
            image = model.encode_image(torch.from_numpy(np.asarray(inputs["pixel_values"], np.float32)))
            text = model.encode_text(ids_t)
            last = torch.from_numpy(stages["text_model.final_layer_norm"])
            pooled = _open_clip_pool(model, last, ids_t)
            img, txt = (torch.nn.functional.normalize(f, dim=-1) for f in (image, text))
            logits = model.logit_scale.exp() * img @ txt.T  # [Bi, Bt]
    finally:
        for h in handles:
            h.remove()
    for name, a in stages.items():
        if name.startswith("text_model.") and a.ndim >= 2 and a.shape[1] == context:
            stages[name] = a[:, :T].copy()
    post = stages["vision_model.post_layernorm"]
    if post.ndim == 3:  # ln_post on every token, then the class token is taken
        stages["vision_model.post_layernorm"] = post[:, 0].copy()
    stages.update({"text_model.pooler_output": _torch_numpy(pooled), "visual_projection": _torch_numpy(image),
                   "text_projection": _torch_numpy(text), "logits_per_image": _torch_numpy(logits),
                   "logits_per_text": _torch_numpy(logits.T)})
    return stages


def _open_clip_hooks(model, stages) -> list:
    """Forward hooks that write open_clip's module outputs into ``stages`` under our names."""
    handles = []
    for tower, transformer in (("vision_model", model.visual.transformer), ("text_model", model.transformer)):
        lnd = not getattr(transformer, "batch_first", False)  # older open_clip runs the encoder [L, B, D]
        for i, block in enumerate(transformer.resblocks):
            for oc, ours in _OPEN_CLIP_LAYER.items():
                name = f"{tower}.encoder.layers.{i}" + (f".{ours}" if ours else "")
                module = block.get_submodule(oc) if oc else block
                handles.append(module.register_forward_hook(_oc_hook(stages, name, lnd)))
    for module, name, pre in ((model.visual.ln_pre, "vision_model.embeddings", True),
                              (model.visual.ln_pre, "vision_model.pre_layrnorm", False),
                              (model.visual.ln_post, "vision_model.post_layernorm", False),
                              (model.transformer, "text_model.embeddings", True),
                              (model.ln_final, "text_model.final_layer_norm", False)):
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        handles.append(register(_oc_hook(stages, name, False, pre)))
    return handles


def _open_clip_pool(model, last, ids):
    """open_clip's pooled text state: text_global_pool (open_clip >= 2.24), else the highest id."""
    try:
        from open_clip.transformer import text_global_pool
    except ImportError:
        return last[np.arange(len(ids)), ids.argmax(dim=-1)]
    return text_global_pool(last, ids, model.text_pool_type, getattr(model, "text_eos_id", None))


def _oc_hook(stages, name, lnd=False, pre=False):
    def hook(module, args, output=None):
        x = args[0] if pre else (output[0] if isinstance(output, (tuple, list)) else output)
        x = _torch_numpy(x)
        stages[name] = np.ascontiguousarray(x.swapaxes(0, 1)) if lnd else x
    if pre:
        return lambda module, args: hook(module, args)
    return hook


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def run_onnx(model, inputs) -> dict[str, np.ndarray]:
    """Run an ONNX model with onnxruntime on the CPU: inputs by name (cast to the graph's types),
    every graph output returned under its output name (name outputs by stage to compare them).

    model: a path or an onnxruntime.InferenceSession.
    """
    if isinstance(model, (str, os.PathLike)):
        import onnxruntime

        model = onnxruntime.InferenceSession(os.fspath(model), providers=["CPUExecutionProvider"])
    feeds = {}
    for i in model.get_inputs():
        if inputs.get(i.name) is None:
            raise VerifyError(f"the ONNX model needs input {i.name!r}; the reference has {', '.join(inputs)}")
        feeds[i.name] = np.asarray(inputs[i.name]).astype(_ORT_DTYPES.get(i.type, np.float32), copy=False)
    names = [o.name for o in model.get_outputs()]
    return dict(zip(names, model.run(names, feeds)))


# ----------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Row:
    """One stage: its errors, the bound and the result ("pass", "FAIL" or "missing")."""

    name: str
    shape: tuple
    status: str
    max_abs: float | None = None
    max_rel: float | None = None  # max_abs / max|reference|
    bound: float | None = None
    worst: tuple | None = None  # index of the largest error
    value: float | None = None  # candidate there
    expected: float | None = None  # reference there
    note: str = ""


@dataclass
class Report:
    """The comparison of a candidate with a reference, stage by stage in data-flow order."""

    rows: list
    reference: str = "reference"
    candidate: str = "candidate"
    tol: float = TOLERANCES["float32"]
    extra: list = field(default_factory=list)  # candidate names the reference does not have
    require_all: bool = False
    ignore_padding: bool = False

    @property
    def failures(self) -> list:
        bad = ("FAIL", "missing") if self.require_all else ("FAIL",)
        return [r for r in self.rows if r.status in bad]

    @property
    def passed(self) -> bool:
        return not self.failures and any(r.status == "pass" for r in self.rows)

    @property
    def first_failure(self) -> str | None:
        """The name of the first stage, in data-flow order, that fails (None if none)."""
        return self.failures[0].name if self.failures else None

    @property
    def missing(self) -> list:
        return [r.name for r in self.rows if r.status == "missing"]

    def row(self, name) -> Row:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict:
        counts = {s: sum(r.status == s for r in self.rows) for s in ("pass", "FAIL", "missing")}
        return {"passed": self.passed, "first_failure": self.first_failure, "reference": self.reference,
                "candidate": self.candidate, "rule": RULE, "tol": self.tol, "counts": counts,
                "ignore_padding": self.ignore_padding, "require_all": self.require_all,
                "rows": [{k: _strict(v) for k, v in asdict(r).items()} for r in self.rows],
                "extra": list(self.extra)}

    def to_json(self, indent=1) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    def __str__(self) -> str:
        return format_report(self)


def _strict(x):
    """Infinity and NaN as the strings "inf" and "nan" (strict JSON has no such numbers)."""
    return str(x) if isinstance(x, float) and not np.isfinite(x) else x


def _json_default(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def compare(reference, candidate, tol=None, atol=None, rtol=None, stage_tol=None, require_all=False,
            ignore_padding=False, rename=None, reference_name="reference",
            candidate_name="candidate") -> Report:
    """Compare a candidate's stages with the reference's, in the reference's order.

    reference, candidate: dicts of arrays by stage name, Golden objects or .npz paths.
    tol: default bound factor (default: 1e-4 for a float32 reference, 2e-2 for float16);
    atol/rtol: override either side of ``max(atol, rtol * max|reference|)``; stage_tol: {glob: tol}
    for some stages (last match wins); integer arrays must be equal. require_all: a stage missing
    from the candidate fails (inputs the candidate lacks are skipped). ignore_padding: compare
    text stages [B, T, ...] only where the reference's attention_mask is 1. rename: {candidate
    name: stage name}.
    """
    ref, cand = _arrays(reference), _arrays(candidate)
    cand = {(rename or {}).get(k, k): v for k, v in cand.items()}
    tol = default_tol(ref) if tol is None else float(tol)
    mask = ref.get("attention_mask") if ignore_padding else None
    rows = []
    for name, r in ref.items():
        if name in INPUT_NAMES and name not in cand:
            continue  # a candidate run on the reference's inputs need not hand them back
        t = _stage_tol(name, tol, stage_tol)
        a_tol, r_tol = (t if atol is None else atol), (t if rtol is None else rtol)
        rows.append(compare_stage(name, r, cand.get(name), a_tol, r_tol, _valid(name, r, mask)))
    extra = [k for k in cand if k not in ref]
    return Report(rows, reference_name, candidate_name, tol, extra, require_all, ignore_padding)


def _arrays(x) -> dict:
    if isinstance(x, (str, os.PathLike)):
        x = read_golden(x)
    if isinstance(x, Golden):
        return dict(x.arrays)
    return {k: np.asarray(to_numpy(v)) for k, v in x.items()}


def default_tol(reference) -> float:
    """1e-4 for a float32 reference, 2e-2 for a float16 one (its first floating stage decides)."""
    for a in reference.values():
        if np.asarray(a).dtype.kind == "f":
            return TOLERANCES.get(str(np.asarray(a).dtype), TOLERANCES["float32"])
    return TOLERANCES["float32"]


def parse_tol(value) -> float:
    """A number, or a preset name ("float32", "float16")."""
    if isinstance(value, str) and value in TOLERANCES:
        return TOLERANCES[value]
    return float(value)


def _stage_tol(name, tol, stage_tol) -> float:
    for pattern, t in (stage_tol or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            tol = parse_tol(t)
    return tol


def _valid(name, r, mask):
    """The positions to compare: all (None), or the text tokens the attention mask keeps."""
    if mask is None or not name.startswith("text_model.") or name.endswith("pooler_output"):
        return None
    mask = np.asarray(mask) != 0
    return mask if r.shape[: mask.ndim] == mask.shape else None


def compare_stage(name, reference, candidate, atol, rtol, valid=None) -> Row:
    """One row: max |candidate - reference| against max(atol, rtol * max|reference|).

    Both are compared in float64; an integer stage must be equal; NaN where the reference has a
    number is an infinite error. valid: a boolean mask of the leading axes to compare, or None.
    """
    r = np.asarray(reference)
    shape = tuple(r.shape)
    if candidate is None:
        return Row(name, shape, "missing")
    c = np.asarray(candidate)
    if c.shape != r.shape:
        return Row(name, shape, "FAIL", note=f"shape {tuple(c.shape)} != reference {shape}")
    if r.dtype.kind in "iub":
        atol = rtol = 0.0
    rf, cf = np.atleast_1d(r.astype(np.float64)), np.atleast_1d(c.astype(np.float64))  # scalars (a loss) too
    if valid is not None:
        rf, cf = rf[valid], cf[valid]
    err = np.abs(cf - rf)
    err[cf == rf] = 0.0  # equal infinities
    err[np.isnan(err)] = np.inf
    scale = float(np.abs(rf).max()) if rf.size else 0.0
    bound = max(float(atol), float(rtol) * scale)
    if not err.size:
        return Row(name, shape, "pass", 0.0, 0.0, bound)
    i = np.unravel_index(int(np.argmax(err)), err.shape)
    worst = float(err[i])
    status = "pass" if worst <= bound else "FAIL"
    note = "" if valid is None else "valid tokens only"
    return Row(name, shape, status, worst, worst / scale if scale else worst, bound,
               tuple(int(j) for j in i), float(cf[i]), float(rf[i]), note)


def format_report(report) -> str:
    """The table: one row per stage, then the first failure with its worst element, then counts."""
    w = max([len(r.name) for r in report.rows] + [5])
    lines = [f"reference: {report.reference}", f"candidate: {report.candidate}",
             f"rule: {RULE} (tol {report.tol:g})", "",
             f"{'stage':<{w}}  {'shape':<14} {'max abs':>9} {'max rel':>9} {'bound':>9}  result"]
    for r in report.rows:
        lines.append(f"{r.name:<{w}}  {'x'.join(map(str, r.shape)):<14} {_num(r.max_abs)} {_num(r.max_rel)} "
                     f"{_num(r.bound)}  {r.status}{'  ' + r.note if r.note else ''}")
    lines.append("")
    first = next((r for r in report.failures), None)
    if first is not None:
        where = f" at {list(first.worst)}: {first.value:.6g} vs reference {first.expected:.6g}" \
            if first.worst is not None else ""
        detail = first.note or f"max abs {first.max_abs:.3e} > bound {first.bound:.3e}{where}"
        lines.append(f"first failure: {first.name} ({detail if first.status == 'FAIL' else 'missing'})")
    counts = report.to_dict()["counts"]
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: {counts['pass']} passed, {counts['FAIL']} failed, "
                 f"{counts['missing']} missing from the candidate" +
                 (f", {len(report.extra)} candidate arrays not in the reference" if report.extra else ""))
    return "\n".join(lines)


def _num(x) -> str:
    return f"{'-':>9}" if x is None else f"{x:9.2e}"


# ----------------------------------------------------------------------------------------------
# Command line: npclip export-reference, npclip verify


def add_export_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint: a directory, a bundled name or a hub id")
    parser.add_argument("--out", required=True, help="the golden .npz to write (its manifest goes to .json beside)")
    parser.add_argument("--texts", nargs="+", default=list(DEFAULT_TEXTS),
                        help=f"texts to encode (default: {', '.join(map(repr, DEFAULT_TEXTS))})")
    parser.add_argument("--images", nargs="+", default=None,
                        help="image files (required for models with a vision tower: no image ships with npclip)")
    parser.add_argument("--model-class", default=None, help="npclip class (default: config.json architectures)")
    parser.add_argument("--compress", action="store_true", help="deflate the arrays (np.savez_compressed)")


def run_export(args) -> int:
    try:
        model = load_npclip(args.model, args.model_class, _dtype(args), _backend(args))
        inputs, images = make_inputs(args.model, model, args.texts, args.images)
        manifest = export_reference(model, inputs, args.out, args.model, _texts_used(model, args.texts), images,
                                    args.compress)
    except (VerifyError, OSError) as e:
        print(f"npclip export-reference: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} and {manifest_path(args.out)}: {len(manifest['stages'])} stages of "
          f"{manifest['model_class']} ({manifest['dtype']})")
    return 0


def add_verify_arguments(parser) -> None:
    parser.add_argument("--candidate", required=True,
                        help="FILE.npz | FILE.onnx | transformers[:DIR] | open_clip:ARCH[:PRETRAINED] | npclip[:DIR]")
    parser.add_argument("--reference", default="npclip",
                        help="a golden FILE.npz, or npclip[:DIR] (default: npclip running --model)")
    parser.add_argument("--model", default=None, help="checkpoint for npclip and transformers (default: the "
                        "golden file's manifest)")
    parser.add_argument("--model-class", default=None, help="class name (default: manifest or config.json)")
    parser.add_argument("--texts", nargs="+", default=list(DEFAULT_TEXTS), help="texts, when no golden file")
    parser.add_argument("--images", nargs="+", default=None, help="image files, when no golden file")
    parser.add_argument("--candidate-dtype", default="float32", choices=["float32", "float16"],
                        help="compute dtype of an npclip candidate")
    parser.add_argument("--tol", default=None, help="bound factor or preset float32|float16 (default: by the "
                        "reference's dtype, 1e-4 for float32)")
    parser.add_argument("--atol", type=float, default=None, help="absolute bound (default: tol)")
    parser.add_argument("--rtol", type=float, default=None, help="bound per unit of max|reference| (default: tol)")
    parser.add_argument("--stage-tol", action="append", default=[], metavar="GLOB=TOL",
                        help="tol for the stages matching GLOB (repeatable, last match wins)")
    parser.add_argument("--rename", action="append", default=[], metavar="CANDIDATE=STAGE",
                        help="read a candidate array under a stage name (repeatable)")
    parser.add_argument("--require-all", action="store_true", help="a stage missing from the candidate fails")
    parser.add_argument("--ignore-padding", action="store_true",
                        help="compare text stages on real tokens only (automatic for open_clip)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_verify(args) -> int:
    try:
        report = verify(args)
    except (VerifyError, OSError, ImportError) as e:
        print(f"npclip verify: {e}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report)
    return 0 if report.passed else 1


def verify(args) -> Report:
    """The work of ``npclip verify``: inputs, reference, candidate, comparison."""
    ref_file, cand_file = _golden_file(args.reference), _golden_file(args.candidate)
    manifest = (ref_file and ref_file.manifest) or (cand_file and cand_file.manifest) or {}
    model_name = args.model or _spec_path(args.reference) or manifest.get("model")
    cls_name = args.model_class or manifest.get("model_class") or (model_name and _class_of(model_name))
    model = None if ref_file else load_npclip(_need(model_name, "--model"), cls_name, _dtype(args), _backend(args))
    inputs = (ref_file and ref_file.inputs) or (cand_file and cand_file.inputs)
    if not inputs:
        parts_of = model or load_npclip(_need(model_name, "--model"), cls_name)
        inputs = make_inputs(model_name, parts_of, args.texts, args.images)[0]
    if ref_file:
        reference = ref_file.arrays
    else:
        reference = {**_accepted(model.forward, inputs), **capture(model, **inputs)}
    candidate = cand_file.arrays if cand_file else \
        run_candidate(args.candidate, inputs, model_name, cls_name, args.candidate_dtype, _backend(args))
    return compare(reference, candidate, parse_tol(args.tol) if args.tol else None, args.atol, args.rtol,
                   _pairs(args.stage_tol, "--stage-tol"), args.require_all,
                   args.ignore_padding or args.candidate.startswith("open_clip:"),
                   _pairs(args.rename, "--rename"), _describe(args.reference, model_name, _dtype(args)),
                   _describe(args.candidate, model_name, args.candidate_dtype))


def _golden_file(spec) -> Golden | None:
    return read_golden(spec) if spec.endswith(".npz") else None


def run_candidate(spec, inputs, model_name=None, cls_name=None, dtype="float32", backend=None) -> dict:
    """The stages of the candidate named by a --candidate spec."""
    kind, _, rest = spec.partition(":")
    if spec.endswith(".onnx"):
        return run_onnx(spec, inputs)
    if kind == "transformers":
        directory = _need(rest or model_name, "transformers:DIR or --model")
        from .hub import resolve_dir

        return run_transformers(resolve_dir(directory), inputs, cls_name or _class_of(directory))
    if kind == "npclip":
        model = load_npclip(_need(rest or model_name, "npclip:DIR or --model"), cls_name, dtype, backend)
        return capture(model, **inputs)
    if kind == "open_clip":
        import open_clip

        arch, _, pretrained = rest.partition(":")
        model = open_clip.create_model(arch, pretrained=pretrained or None).eval()
        return run_open_clip(model, inputs)
    raise VerifyError(f"--candidate {spec!r}: expected FILE.npz, FILE.onnx, transformers[:DIR], "
                      "open_clip:ARCH[:PRETRAINED] or npclip[:DIR]")


def load_npclip(name, cls_name=None, dtype="float32", backend=None):
    """An npclip model of a checkpoint; the class from the argument, else config.json, else CLIPModel."""
    from . import modeling

    cls_name = cls_name or _class_of(name)
    cls = getattr(modeling, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, modeling.CLIPPreTrainedModel)):
        raise VerifyError(f"model class {cls_name!r} is not an npclip model class")
    return cls.from_pretrained(name, dtype=dtype, backend=backend)


def _class_of(name) -> str:
    """The first npclip class named in a checkpoint's config.json ``architectures`` (else CLIPModel)."""
    from . import modeling
    from .hub import resolve_dir

    try:
        with open(os.path.join(resolve_dir(name), "config.json"), encoding="utf-8") as f:
            names = json.load(f).get("architectures") or []
    except (OSError, ValueError, TypeError):
        names = []
    return next((n for n in names if hasattr(modeling, n)), "CLIPModel")


def make_inputs(model_name, model, texts, images):
    """Tokenise the texts and preprocess the images with the checkpoint's own tokenizer and image
    processor (npclip's), for the towers the model has. -> (inputs, image records for the manifest)"""
    from .hub import resolve_dir

    directory = resolve_dir(model_name)
    inputs, records = {}, []
    if "text" in model.parts:
        from .tokenizer import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(directory)
        tok = tokenizer(list(texts), padding=True, truncation=True,
                        max_length=model.text_config.max_position_embeddings, return_tensors="np")
        inputs.update(input_ids=np.asarray(tok["input_ids"]), attention_mask=np.asarray(tok["attention_mask"]))
    if "vision" in model.parts:
        if not images:
            raise VerifyError("--images is required for a model with a vision tower (npclip ships no photograph; "
                              "in a source tree: --images tests/data/chelsea.png tests/data/astronaut.png)")
        from .image_processing import CLIPImageProcessor
        from .pipelines import load_image

        pixels = CLIPImageProcessor.from_pretrained(directory)(images=[load_image(p) for p in images],
                                                                return_tensors="np")["pixel_values"]
        inputs["pixel_values"] = np.asarray(pixels, dtype=np.float32)
        records = [_image_record(p) for p in images]
    return inputs, records


def _image_record(path) -> dict:
    if not os.path.isfile(path):
        return {"name": os.fspath(path)}
    with open(path, "rb") as f:
        return {"name": os.path.basename(path), "sha256": hashlib.sha256(f.read()).hexdigest()}


def _texts_used(model, texts):
    return list(texts) if "text" in model.parts else []


def _dtype(args) -> str:
    """The global --dtype of npclip's command line (None there means float32)."""
    return getattr(args, "dtype", None) or "float32"


def _backend(args):
    return getattr(args, "backend", None)


def _need(value, what):
    if not value:
        raise VerifyError(f"which checkpoint? pass {what}")
    return value


def _spec_path(spec) -> str | None:
    kind, _, rest = spec.partition(":")
    return rest or None if kind == "npclip" else None


def _describe(spec, model_name, dtype) -> str:
    if spec.endswith((".npz", ".onnx")) or ":" in spec:
        return spec
    return f"{spec}:{model_name} ({dtype})" if spec in ("npclip", "transformers") else spec


def _pairs(items, option) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key:
            raise VerifyError(f"{option} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


class ExportReference:
    """``npclip export-reference`` for npclip.cli's COMMANDS ("npclip.verify:ExportReference")."""

    EPILOG = """\
examples:
  npclip export-reference --model DIR --out ref.npz --images cat.png dog.png
  npclip export-reference --model DIR --out ref.npz --images a.jpg --texts "a cat" "a dog" --compress

Writes ref.npz (the inputs and every stage, members <name>.npy, and __manifest__: UTF-8 JSON
bytes) and ref.json (the same manifest). See docs/verification.md for the format."""

    add_arguments = staticmethod(add_export_arguments)
    run = staticmethod(run_export)


class Verify:
    """``npclip verify`` for npclip.cli's COMMANDS ("npclip.verify:Verify", or the module itself)."""

    EPILOG = """\
examples:
  npclip verify --candidate port.npz --reference ref.npz
  npclip verify --candidate model.onnx --reference ref.npz --json
  npclip verify --candidate transformers --model DIR --images cat.png
  npclip verify --candidate npclip --dtype float32 --candidate-dtype float16 --model DIR --images cat.png --tol float16

One row per stage in data-flow order: max abs and max rel error, the bound, pass/FAIL; then the
first failing stage. A stage passes when max|candidate - reference| <= tol * max(1, max|reference|)
(tol 1e-4 for a float32 reference). Exit code 0 pass, 1 a stage failed, 2 usage error."""

    add_arguments = staticmethod(add_verify_arguments)
    run = staticmethod(run_verify)


add_arguments, run = add_verify_arguments, run_verify  # the module as the "verify" command


def main(argv=None) -> int:
    """``python -m npclip.verify export-reference|verify ...``: the npclip commands, without npclip.cli."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m npclip.verify")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in (("export-reference", ExportReference), ("verify", Verify)):
        p = sub.add_parser(name, help=(command.__doc__ or "").split(":")[0])
        command.add_arguments(p)
        p.add_argument("--dtype", choices=("float32", "float16"), default=None, help="compute dtype of npclip")
        p.add_argument("--backend", choices=("numpy", "cupy"), default=None, help="array backend of npclip")
    args = parser.parse_args(argv)
    return run_export(args) if args.command == "export-reference" else run_verify(args)


if __name__ == "__main__":
    sys.exit(main())
