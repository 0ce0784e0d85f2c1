"""Checkpoint files and their layout: the one place that knows how weights are stored.

* ``read_safetensors(path)`` reads a ``.safetensors`` file into NumPy arrays, memory-mapping
  float32 tensors (no copy, loading costs about the file size) and decoding float16 and
  bfloat16 (which NumPy cannot represent) to the compute dtype.
* ``load_checkpoint(directory)`` reads ``model.safetensors`` or a sharded
  ``model.safetensors.index.json`` checkpoint.
* ``expected_shapes(...)`` lists every tensor a model needs, by its Hugging Face name.
* ``check_and_convert(...)`` maps names to their canonical (``CLIPModel``) form, drops the
  buffers transformers does not use, and raises on anything missing, unknown or misshapen,
  naming the tensor and the file. Nothing ever falls back to random weights.
* ``fuse_qkv(layer)`` concatenates a layer's q/k/v projections for one matrix product.

Canonical names are those of a transformers ``CLIPModel`` checkpoint:
``text_model.encoder.layers.0.self_attn.q_proj.weight``, ``vision_model.pre_layrnorm.bias``,
``visual_projection.weight``, ``logit_scale``, ...
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

# safetensors dtype code -> (NumPy dtype as stored, bytes per element)
_DTYPES = {
    "F64": (np.dtype("<f8"), 8),
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # decoded by bfloat16_to_float32
    "I64": (np.dtype("<i8"), 8),
    "I32": (np.dtype("<i4"), 4),
    "I16": (np.dtype("<i2"), 2),
    "I8": (np.dtype("i1"), 1),
    "U8": (np.dtype("u1"), 1),
    "BOOL": (np.dtype("?"), 1),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is: the message names the file and the tensor."""


# ----------------------------------------------------------------------------------------------
# Reading files


def bfloat16_to_float32(bits):
    """bfloat16 is the top half of a float32: shift the 16 stored bits up. uint16 [...] -> float32 [...]"""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors_header(path):
    """The JSON header of a safetensors file and the byte offset where its data starts."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header, 8 + n


def read_safetensors(path, dtype=np.float32, mmap=True):
    """Read every tensor of a safetensors file: floating tensors as ``dtype``, others as stored.

    float32 tensors are memory-mapped when ``dtype`` is float32 (read-only views of the file).
    """
    path = os.fspath(path)
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    data = np.memmap(path, dtype=np.uint8, mode="r") if mmap else np.fromfile(path, dtype=np.uint8)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r}") from e
        if code not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {code}, which npclip does not read")
        stored, width = _DTYPES[code]
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * width or begin < 0 or start + end > size:
            raise CheckpointError(
                f"{path}: tensor {name!r} lies outside the file or has the wrong byte length "
                f"(truncated or corrupt file: {size} bytes)"
            )
        raw = data[start + begin : start + end].view(stored).reshape(shape)
        tensors[name] = _to_compute_dtype(raw, code, np.dtype(dtype))
    return tensors


def _to_compute_dtype(raw, code, dtype):
    """Floating tensors -> dtype (bfloat16 decoded); integer and bool tensors unchanged."""
    if code == "BF16":
        return bfloat16_to_float32(raw).astype(dtype, copy=False)
    if code in ("F64", "F32", "F16"):
        return raw.astype(dtype, copy=False)  # no copy when the stored dtype is already dtype
    return raw


def load_checkpoint(directory, dtype=np.float32):
    """Read a checkpoint directory: ``model.safetensors`` or a sharded index.

    -> (tensors by name, the file each tensor came from)
    """
    directory = os.fspath(directory)
    single = os.path.join(directory, SAFE_WEIGHTS_NAME)
    index = os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        tensors = read_safetensors(single, dtype)
        return tensors, dict.fromkeys(tensors, single)
    if os.path.isfile(index):
        return load_sharded(index, dtype)
    pickles = [n for n in PICKLE_WEIGHTS_NAMES if os.path.isfile(os.path.join(directory, n))]
    if pickles:
        raise CheckpointError(
            f"{directory} holds only PyTorch pickle weights ({pickles[0]}); npclip never unpickles. "
            "Use a revision with model.safetensors, or convert once with transformers: "
            "CLIPModel.from_pretrained(path).save_pretrained(out_dir)"
        )
    raise CheckpointError(f"{directory}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} found")


def load_sharded(index_path, dtype=np.float32):
    """Read the shards named by a ``model.safetensors.index.json``, each file once."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path}: not a valid safetensors index ({e})") from e
    directory = os.path.dirname(index_path)
    tensors, files = {}, {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):
            raise CheckpointError(f"{index_path}: shard {shard} is missing")
        for name, array in read_safetensors(path, dtype).items():
            if weight_map.get(name) != shard:
                raise CheckpointError(f"{path}: tensor {name!r} is not listed for this shard in {index_path}")
            tensors[name], files[name] = array, path
    for name, shard in weight_map.items():
        if name not in tensors:
            raise CheckpointError(f"{os.path.join(directory, shard)}: tensor {name!r} listed in the index is missing")
    return tensors, files


# ----------------------------------------------------------------------------------------------
# Layout: which tensors a model needs, by name and shape


def _encoder_shapes(prefix, cfg):
    D, F = cfg.hidden_size, cfg.intermediate_size
    shapes = {}
    for i in range(cfg.num_hidden_layers):
        p = f"{prefix}.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (D, D)  # [Dout, Din]
            shapes[p + f"self_attn.{proj}.bias"] = (D,)
        for ln in ("layer_norm1", "layer_norm2"):
            shapes[p + f"{ln}.weight"] = (D,)
            shapes[p + f"{ln}.bias"] = (D,)
        shapes[p + "mlp.fc1.weight"] = (F, D)
        shapes[p + "mlp.fc1.bias"] = (F,)
        shapes[p + "mlp.fc2.weight"] = (D, F)
        shapes[p + "mlp.fc2.bias"] = (D,)
    return shapes


def text_shapes(cfg):
    """Every tensor of the text tower: ``text_model.*``."""
    D = cfg.hidden_size
    shapes = {
        "text_model.embeddings.token_embedding.weight": (cfg.vocab_size, D),
        "text_model.embeddings.position_embedding.weight": (cfg.max_position_embeddings, D),
        "text_model.final_layer_norm.weight": (D,),
        "text_model.final_layer_norm.bias": (D,),
    }
    return {**shapes, **_encoder_shapes("text_model", cfg)}


def vision_shapes(cfg):
    """Every tensor of the vision tower: ``vision_model.*``."""
    D, P = cfg.hidden_size, cfg.patch_size
    shapes = {
        "vision_model.embeddings.class_embedding": (D,),
        "vision_model.embeddings.patch_embedding.weight": (D, cfg.num_channels, P, P),
        "vision_model.embeddings.position_embedding.weight": ((cfg.image_size // P) ** 2 + 1, D),
        "vision_model.pre_layrnorm.weight": (D,),
        "vision_model.pre_layrnorm.bias": (D,),
        "vision_model.post_layernorm.weight": (D,),
        "vision_model.post_layernorm.bias": (D,),
    }
    return {**shapes, **_encoder_shapes("vision_model", cfg)}


def expected_shapes(parts, text_cfg=None, vision_cfg=None, projection_dim=None, num_labels=None):
    """The tensors a model made of ``parts`` needs, by canonical name.

    parts: a subset of {"text", "vision", "text_projection", "visual_projection", "logit_scale", "classifier"}
    """
    shapes = {}
    if "text" in parts:
        shapes.update(text_shapes(text_cfg))
    if "vision" in parts:
        shapes.update(vision_shapes(vision_cfg))
    if "text_projection" in parts:
        shapes["text_projection.weight"] = (projection_dim, text_cfg.hidden_size)
    if "visual_projection" in parts:
        shapes["visual_projection.weight"] = (projection_dim, vision_cfg.hidden_size)
    if "logit_scale" in parts:
        shapes["logit_scale"] = ()
    if "classifier" in parts and num_labels:
        shapes["classifier.weight"] = (num_labels, vision_cfg.hidden_size)
        shapes["classifier.bias"] = (num_labels,)
    return shapes


# Tensors of a CLIP checkpoint that a model made of fewer parts leaves unused, by name prefix:
# loading CLIPTextModel from a whole CLIPModel checkpoint is the seed document's own example.
_CLIP_PREFIXES = ("text_model.", "vision_model.", "text_projection.", "visual_projection.", "logit_scale",
                  "classifier.")
# Buffers that older transformers versions saved and that hold nothing to learn.
_DROPPED_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")

# transformers 5 saves a bare CLIPTextModel / CLIPVisionModel without the tower prefix.
_BARE_TOWER_KEYS = {
    "text": ("embeddings.token_embedding", "embeddings.position_embedding", "encoder.", "final_layer_norm."),
    "vision": ("embeddings.class_embedding", "embeddings.patch_embedding", "embeddings.position_embedding",
               "encoder.", "pre_layrnorm.", "post_layernorm."),
}


def canonical_name(name, parts):
    """Map a checkpoint name to its ``CLIPModel`` form (adds the tower prefix to bare tower keys)."""
    towers = [t for t in ("text", "vision") if t in parts]
    if len(towers) == 1 and (name.startswith(_BARE_TOWER_KEYS[towers[0]]) or name == "embeddings.position_ids"):
        return f"{towers[0]}_model.{name}"
    return name


def check_and_convert(tensors, files, shapes, parts, source="<state_dict>"):
    """Rename to canonical names, drop unused buffers, check names and shapes.

    -> (params by canonical name, names of tensors that belong to parts this model does not use)
    Raises CheckpointError on a missing, unknown or misshapen tensor, naming it and its file.
    """
    params, ignored = {}, []
    for name, array in tensors.items():
        key = canonical_name(name, parts)
        where = files.get(name, source)
        if key in _DROPPED_BUFFERS:
            continue
        if key in shapes:
            if key in params:
                raise CheckpointError(f"{where}: tensor {name!r} appears twice (as {key!r})")
            if tuple(array.shape) != shapes[key]:
                raise CheckpointError(
                    f"{where}: tensor {name!r} has shape {tuple(array.shape)}, the config needs {shapes[key]}"
                )
            if not np.issubdtype(array.dtype, np.floating):
                raise CheckpointError(f"{where}: tensor {name!r} has dtype {array.dtype}, expected floating point")
            params[key] = array
        elif key.startswith(_CLIP_PREFIXES) and not _belongs_to(key, parts):
            ignored.append(name)
        else:
            raise CheckpointError(f"{where}: unexpected tensor {name!r} (not part of this model's layout)")
    missing = [k for k in shapes if k not in params]
    if missing:
        where = source if not files else os.path.dirname(next(iter(files.values()))) or source
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"{where}: missing tensors {', '.join(missing[:5])}{more}")
    return params, ignored


def _belongs_to(key, parts):
    owner = {"text_model.": "text", "vision_model.": "vision", "text_projection.": "text_projection",
             "visual_projection.": "visual_projection", "logit_scale": "logit_scale", "classifier.": "classifier"}
    return any(key.startswith(prefix) and part in parts for prefix, part in owner.items())


# ----------------------------------------------------------------------------------------------
# Per-layer weight bundles


def release_mapped_pages(array):
    """If ``array`` is a view of a memory-mapped file, drop its pages from this process's resident
    memory (the kernel keeps them in its file cache). Used once a mapped tensor has been copied."""
    import mmap

    root = array
    while isinstance(getattr(root, "base", None), np.ndarray):  # up to the array that owns the mapping
        root = root.base
    raw = getattr(root, "_mmap", None)
    if not isinstance(root, np.memmap) or raw is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = array.ctypes.data - root.ctypes.data + root.offset  # byte offset in the file
    page = mmap.PAGESIZE
    first = -(-start // page) * page  # whole pages inside the tensor only
    last = (start + array.nbytes) // page * page
    if last > first:
        raw.madvise(mmap.MADV_DONTNEED, first, last - first)


def layer_weights(params, prefix, num_layers):
    """Per-layer dicts of weights named as inside the layer (``self_attn.q_proj.weight``, ...),
    with q/k/v fused (see fuse_qkv) and every matrix stored column-major (see column_major).
    prefix: "text_model" or "vision_model" -> list of dicts. The entries of ``params`` become the
    layer's arrays (q/k/v as views of the fused ones): no second copy.

    The layers are prepared on a few threads: the copies release the GIL, and two cores read the
    memory-mapped file and fill fresh memory about twice as fast as one (ViT-B/32: 0.25 s, not 0.5-1.4).
    """
    from concurrent.futures import ThreadPoolExecutor

    def prepare(i):
        p = f"{prefix}.encoder.layers.{i}."
        layer = fuse_qkv({k[len(p):]: v for k, v in params.items() if k.startswith(p)})
        for name in LINEAR_WEIGHTS:
            layer[name] = column_major(layer[name])
        return p, layer

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        prepared = list(pool.map(prepare, range(num_layers)))
    for p, layer in prepared:
        params.update({p + k: v for k, v in layer.items() if not k.startswith("self_attn.qkv_proj")})
    return [layer for _, layer in prepared]


# The matrices of a layer that go through ops.linear (q/k/v are views of the fused one).
LINEAR_WEIGHTS = ("self_attn.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def column_major(weight):
    """The same [Dout, Din] matrix stored column-major (Fortran order), so that ``weight.T``, the
    [Din, Dout] operand of ``x @ weight.T``, is row-major. OpenBLAS multiplies a few rows (one image,
    short texts) by a row-major right operand up to 1.5x faster than by a transposed one (see
    docs/performance.md). A memory-mapped original is released once copied."""
    from .backend import array_namespace

    if weight.ndim != 2 or weight.flags.f_contiguous:
        return weight
    out = array_namespace(weight).empty(weight.shape, dtype=weight.dtype, order="F")  # [Dout, Din]
    copy_rows(out, weight)
    release_mapped_pages(weight)
    return out


def copy_rows(out, source, block=8):
    """``out[...] = source`` for a column-major out and a row-major source, ``block`` rows at a time:
    the transposing copy then stays in cache, twice as fast as one whole-array assignment."""
    if source.ndim < 2:  # nothing to transpose (a bias)
        out[...] = source
        return
    for start in range(0, source.shape[0], block):
        out[start : start + block] = source[start : start + block]


def fuse_qkv(layer):
    """Add ``self_attn.qkv_proj.weight`` [3D, D] (column-major, see column_major) and ``.bias`` [3D],
    q, k and v stacked, so that the three projections are one matrix product; q/k/v become views of
    the stacked arrays."""
    from .backend import array_namespace

    xp = array_namespace(layer["self_attn.q_proj.weight"])
    D = layer["self_attn.q_proj.weight"].shape[0]
    for kind in ("weight", "bias"):
        parts = [layer[f"self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
        fused = xp.empty((3 * D,) + parts[0].shape[1:], dtype=parts[0].dtype, order="F")  # [3D, D] or [3D]
        for j, part in enumerate(parts):
            copy_rows(fused[j * D : (j + 1) * D], part)
            release_mapped_pages(part)  # the copy is what we keep: let the mapped original leave our memory
        layer[f"self_attn.qkv_proj.{kind}"] = fused
        for j, n in enumerate(("q_proj", "k_proj", "v_proj")):
            layer[f"self_attn.{n}.{kind}"] = fused[j * D : (j + 1) * D]
    return layer
