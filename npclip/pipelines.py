"""Zero-shot image classification: transformers' ``pipeline("zero-shot-image-classification")``.

    >>> from npclip import pipeline
    >>> clip = pipeline("zero-shot-image-classification", model="openai/clip-vit-base-patch32")
    >>> clip("cat.jpg", candidate_labels=["a photo of a cat", "a photo of a dog"])
    [{'score': 0.99..., 'label': 'a photo of a cat'}, {'score': 0.00..., 'label': 'a photo of a dog'}]

The scores are transformers' (pipelines/zero_shot_image_classification.py in 5.24): every label
goes through ``hypothesis_template``, the texts are padded to the longest, and the scores are the
softmax of ``logits_per_image`` over the labels, sorted by score (equal scores keep the labels'
order). Beyond transformers: texts longer than the model's positions (77) are truncated with a
warning instead of failing, images may also be arrays, ``top_k`` keeps the best k, and
several images go through the model in batches.

``load_image`` reads a path, an http(s) URL (standard library, with a timeout and a size limit)
or a PIL image as transformers' ``load_image`` does: EXIF orientation applied, converted to RGB.
"""

from __future__ import annotations

import io
import os
import time
import warnings

import numpy as np

from .backend import to_numpy
from .hub import DEFAULT_MODEL, resolve_dir

DEFAULT_TEMPLATE = "This is a photo of {}."
DEFAULT_TIMEOUT = 10.0  # seconds to fetch one image URL
MAX_IMAGE_BYTES = 50 * 2**20  # the largest image file a URL may send
URL_SCHEMES = ("http://", "https://")


class ImageLoadError(ValueError):
    """An image that cannot be read: a missing file, not an image, an unreachable or too large URL."""


# ----------------------------------------------------------------------------------------------
# Images


def fetch_url(url, timeout=DEFAULT_TIMEOUT, max_bytes=MAX_IMAGE_BYTES) -> bytes:
    """The bytes at an http(s) URL, within ``timeout`` seconds in all and ``max_bytes`` bytes."""
    import urllib.error
    import urllib.request

    from . import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"npclip/{__version__}"})
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            size = response.headers.get("Content-Length")
            if size and size.isdigit() and int(size) > max_bytes:
                raise ImageLoadError(f"{url}: {int(size)} bytes, more than the limit of {max_bytes}")
            return _read_within(response, url, deadline, timeout, max_bytes)
    except urllib.error.HTTPError as e:
        raise ImageLoadError(f"{url}: HTTP error {e.code} ({e.reason})") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise ImageLoadError(f"{url}: timed out after {timeout:g} s") from None
        raise ImageLoadError(f"{url}: cannot fetch ({e.reason})") from None
    except TimeoutError:
        raise ImageLoadError(f"{url}: timed out after {timeout:g} s") from None
    except OSError as e:  # connection reset, bad status line, ...
        raise ImageLoadError(f"{url}: cannot fetch ({e})") from None


def _read_within(response, url, deadline, timeout, max_bytes) -> bytes:
    chunks, n = [], 0
    while chunk := response.read(1 << 16):
        n += len(chunk)
        if n > max_bytes:
            raise ImageLoadError(f"{url}: more than the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise ImageLoadError(f"{url}: timed out after {timeout:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def load_image(image, timeout=DEFAULT_TIMEOUT, max_bytes=MAX_IMAGE_BYTES):
    """A path, http(s) URL or PIL image -> an RGB PIL image (transformers' load_image)."""
    from PIL import Image, ImageOps

    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image)
        if source.startswith(URL_SCHEMES):
            image = _decode(io.BytesIO(fetch_url(source, timeout, max_bytes)), source)
        else:
            image = _decode(_existing_file(source), source)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"an image must be a path, an http(s) URL or a PIL image, not {type(image).__name__}")
    return ImageOps.exif_transpose(image).convert("RGB")


def check_image_file(path) -> None:
    """Fail fast on a path that is missing or not an image, reading only the file's header."""
    _decode(_existing_file(path), path, header_only=True).close()


def _existing_file(path):
    if not os.path.isfile(path):
        raise ImageLoadError(f"{path}: {'a directory, not an image' if os.path.isdir(path) else 'no such file'}")
    return path


def _decode(file, source, header_only=False):
    """Open (and decode) an image file; ImageLoadError naming the source if PIL cannot."""
    from PIL import Image

    try:
        image = Image.open(file)
        if not header_only:
            image.load()
        return image
    except PermissionError as e:
        raise ImageLoadError(f"{source}: cannot read ({e.strerror})") from None
    except (Image.UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"{source}: not an image ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt files
        raise ImageLoadError(f"{source}: not a readable image ({e})") from None


# ----------------------------------------------------------------------------------------------
# Text


def tokenize(tokenizer, texts, max_length, names=None, what="text"):
    """Tokenize padded to the longest; truncate texts longer than ``max_length`` with a warning naming them.

    names: how the warning names each text (default: the text itself). -> (input_ids [B, T], attention_mask [B, T])
    """
    enc = tokenizer(list(texts), padding=True, return_tensors="np")
    lengths = np.asarray(enc["attention_mask"]).sum(-1)  # [B] tokens with bos and eos
    for i in np.flatnonzero(lengths > max_length):
        name = (names or texts)[i]
        shown = name if len(name) <= 60 else name[:57] + "..."
        warnings.warn(f"{what} {shown!r} is {int(lengths[i])} tokens long, more than the model's {max_length}: "
                      f"truncated to {max_length}", stacklevel=3)
    if (lengths > max_length).any():
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])


def softmax(logits):
    """Softmax over the last axis, in float64. [..., L] -> [..., L]"""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# The pipeline


class ZeroShotImageClassificationPipeline:
    """Scores candidate labels for images: ``clip(image, candidate_labels=[...])``."""

    task = "zero-shot-image-classification"

    def __init__(self, model, tokenizer, image_processor, batch_size=8):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.batch_size = batch_size
        self._labels = None  # (hypotheses, their features [L, E]) of the last call: see label_features

    def __call__(self, image=None, candidate_labels=None, hypothesis_template=DEFAULT_TEMPLATE, top_k=None,
                 timeout=DEFAULT_TIMEOUT, batch_size=None, images=None):
        """-> [{"score", "label"}] sorted by score, or a list of those for a list of images."""
        image = images if image is None else image
        if image is None:
            raise ValueError("zero-shot-image-classification needs an image (a path, URL, PIL image or array)")
        labels = _check_labels(candidate_labels)
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer, not {top_k!r}")
        texts = self.label_features(labels, hypothesis_template)  # [L, E]
        batch = list(image) if isinstance(image, (list, tuple)) else [image]
        scores = self.scores(batch, texts, timeout, batch_size or self.batch_size)  # [B_img, L]
        results = [_ranked(row, labels, top_k) for row in scores]
        return results if isinstance(image, (list, tuple)) else results[0]

    def label_features(self, candidate_labels, hypothesis_template=DEFAULT_TEMPLATE):
        """The labels put into the template, as L2-normalised text features [L, E].

        The last labels' features are kept, so that calls with the same labels (many images, in
        batches) encode them once. transformers' pipeline encodes them again with every image.
        """
        from .modeling import l2_normalize

        labels = _check_labels(candidate_labels)
        texts = _hypotheses(labels, hypothesis_template)
        if self._labels is None or self._labels[0] != texts:
            ids, mask = tokenize(self.tokenizer, texts, self.model.text_config.max_position_embeddings, labels,
                                 what="label")
            self._labels = (texts, l2_normalize(self.model.get_text_features(ids, mask)))
        return self._labels[1]

    def scores(self, images, label_features, timeout=DEFAULT_TIMEOUT, batch_size=8):
        """Softmax over the labels of logits_per_image, images in batches. -> [B_img, L] float64

        label_features: [L, E] from label_features. Each batch of images goes through
        get_image_features; the logits are those of CLIPModel.forward (modeling.clip_logits).
        """
        from .modeling import clip_logits, l2_normalize

        model, texts = self.model, label_features
        rows = []
        for start in range(0, len(images), batch_size):
            loaded = [_load(im, timeout) for im in images[start : start + batch_size]]
            pixels = self.image_processor(loaded, return_tensors="np")["pixel_values"]  # [b, 3, S, S]
            embeds = l2_normalize(model.get_image_features(pixels))  # [b, E]
            logits_per_image = clip_logits(texts, embeds, model.params["logit_scale"]).T  # [b, L]
            rows.append(softmax(to_numpy(logits_per_image)))  # [b, L]
        return np.concatenate(rows) if rows else np.zeros((0, len(texts)))


def _load(image, timeout):
    """Arrays go to the image processor as they are (HWC, CHW or HW, as transformers' processor takes them)."""
    return image if isinstance(image, np.ndarray) else load_image(image, timeout)


def _check_labels(candidate_labels) -> list[str]:
    if isinstance(candidate_labels, str):
        candidate_labels = [candidate_labels]
    labels = list(candidate_labels or [])
    if not labels:
        raise ValueError("candidate_labels must be a non-empty list of strings")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"every candidate label must be a non-empty string, not {label!r}")
    return labels


def _hypotheses(labels, template) -> list[str]:
    """Each label put into the template (transformers: hypothesis_template.format(label))."""
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(f"hypothesis_template must contain {{}} where the label goes, not {template!r}")
    try:
        return [template.format(label) for label in labels]
    except (IndexError, KeyError, ValueError) as e:
        raise ValueError(f"hypothesis_template {template!r}: {e} (use {{}} once, and {{{{ }}}} for braces)") from None


def _ranked(scores, labels, top_k=None) -> list[dict]:
    """[{"score", "label"}] by decreasing score; equal scores keep the labels' order (a stable sort)."""
    ranked = sorted(zip(scores.tolist(), labels), key=lambda x: -x[0])
    return [{"score": score, "label": label} for score, label in ranked[:top_k]]


SUPPORTED_TASKS = {"zero-shot-image-classification": ZeroShotImageClassificationPipeline}


def pipeline(task=None, model=None, *, tokenizer=None, image_processor=None, backend=None, dtype=None,
             revision=None, cache_dir=None, local_files_only=False, token=None, batch_size=8, **kwargs):
    """Build a pipeline, as transformers' ``pipeline(task, model=...)``.

    task: "zero-shot-image-classification" (the default; the only task). model: a hub id (default
    openai/clip-vit-base-patch32), a directory, a bundled name, or a loaded CLIPModel together with
    ``tokenizer`` and ``image_processor``. backend: "numpy" or "cupy"; dtype: "float32" or "float16".
    """
    task = "zero-shot-image-classification" if task is None else task
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"unknown task {task!r}: npclip supports {', '.join(repr(t) for t in SUPPORTED_TASKS)}")
    if kwargs:
        hint = " (npclip picks the device with backend='numpy' or 'cupy')" if "device" in kwargs else ""
        raise TypeError(f"pipeline() got unexpected arguments: {', '.join(kwargs)}{hint}")
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    model = DEFAULT_MODEL if model is None else model
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer, image_processor = load_model(model, backend, dtype, tokenizer, image_processor, **hub)
    elif tokenizer is None or image_processor is None:
        raise ValueError("with a model object, also pass tokenizer= and image_processor= (or pass the model's "
                         "name or directory instead)")
    else:
        tokenizer, image_processor = _load_parts(tokenizer, image_processor, hub)
    return SUPPORTED_TASKS[task](model, tokenizer, image_processor, batch_size)


def load_model(name, backend=None, dtype=None, tokenizer=None, image_processor=None, **hub):
    """CLIPModel, tokenizer and image processor of one checkpoint, downloaded once.

    tokenizer, image_processor: objects or names to use instead of the checkpoint's own.
    -> (model, tokenizer, image_processor)
    """
    from .modeling import CLIPModel

    directory = resolve_dir(name, **hub)
    model = CLIPModel.from_pretrained(directory, backend=backend, dtype=dtype)
    return (model, *_load_parts(tokenizer or directory, image_processor or directory, hub))


def _load_parts(tokenizer, image_processor, hub):
    """Load a tokenizer and an image processor given by name or directory (objects pass through)."""
    from .image_processing import CLIPImageProcessor
    from .tokenizer import CLIPTokenizer

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = CLIPTokenizer.from_pretrained(resolve_dir(tokenizer, weights=False, **hub))
    if isinstance(image_processor, (str, os.PathLike)):
        image_processor = CLIPImageProcessor.from_pretrained(resolve_dir(image_processor, weights=False, **hub))
    return tokenizer, image_processor
