"""The public models, with transformers' names and call signatures.

Each class holds a config and its weights (by their Hugging Face names) and calls the tower
functions of npclip.text and npclip.vision; the joint model adds the projections, the cosine
similarities and the contrastive loss.

    CLIPTextModel, CLIPTextModelWithProjection     text tower (+ text_projection)
    CLIPVisionModel, CLIPVisionModelWithProjection vision tower (+ visual_projection)
    CLIPModel                                      both, logit_scale, similarity logits, loss
    CLIPForImageClassification                     vision tower + a linear head on the mean patch token
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import backend as _backend
from .configuration import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .hub import resolve_dir
from .ops import linear
from .text import pooled_text, text_transformer
from .vision import pooled_image, vision_transformer
from .weights import check_and_convert, expected_shapes, layer_weights, load_checkpoint

# ----------------------------------------------------------------------------------------------
# Outputs: dataclasses read by attribute (outputs.logits_per_image) or key (outputs["logits_per_image"]).


class ModelOutput:
    """Attribute and key access, ``keys()``, ``to_dict()`` and ``to_tuple()`` (the non-None fields)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def keys(self):
        return [k for k, v in self.to_dict().items() if v is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None  # [B, L, D]
    pooler_output: Any = None  # [B, D]
    hidden_states: tuple | None = None  # num_layers + 1 arrays [B, L, D], embeddings first
    attentions: tuple | None = None  # num_layers arrays [B, H, L, L]


@dataclass
class CLIPTextModelOutput(ModelOutput):
    text_embeds: Any = None  # [B, E]
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CLIPVisionModelOutput(ModelOutput):
    image_embeds: Any = None  # [B, E]
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclass
class CLIPOutput(ModelOutput):
    loss: Any = None  # scalar
    logits_per_image: Any = None  # [B_image, B_text]
    logits_per_text: Any = None  # [B_text, B_image]
    text_embeds: Any = None  # [B_text, E], L2-normalised
    image_embeds: Any = None  # [B_image, E], L2-normalised
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None  # [B, num_labels]
    hidden_states: tuple | None = None
    attentions: tuple | None = None


# ----------------------------------------------------------------------------------------------
# Loading and holding weights

_DTYPES = {"float32": np.float32, "float16": np.float16, "fp32": np.float32, "fp16": np.float16}


def _compute_dtype(dtype):
    """'float32' (default) or 'float16', as a NumPy dtype."""
    if dtype is None or dtype == "auto":
        return np.dtype(np.float32)
    key = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if key not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: npclip computes in float32 or float16")
    return np.dtype(_DTYPES[key])


class CLIPPreTrainedModel:
    """Config + weights + the familiar loading surface. Subclasses set ``config_class`` and ``parts``."""

    config_class = CLIPConfig
    parts: tuple = ()

    def __init__(self, config, state_dict=None, *, backend=None, dtype=None, _source="<state_dict>"):
        if state_dict is None:
            raise TypeError(
                f"{type(self).__name__} needs its weights: use {type(self).__name__}.from_pretrained(path) or "
                f"{type(self).__name__}(config, state_dict). npclip has no random initialisation."
            )
        self.config = config
        self.dtype = _compute_dtype(dtype)
        self.backend = _backend.default_backend() if backend is None else backend
        self.xp = _backend.get_backend(self.backend)
        files = getattr(state_dict, "files", {})
        host = {k: _host_float(v, self.dtype) for k, v in state_dict.items()}
        params, self.ignored_weights = check_and_convert(host, files, self._shapes(), self.parts, _source)
        self.params = {k: self.xp.asarray(v) for k, v in params.items()}  # moved to the device once
        self._layers = {}  # tower prefix -> per-layer weight dicts, made on the tower's first use
        self._unprepared = {}  # tower prefix -> its layers' entries of params as loaded (see release_layers)

    # the configs of the parts, whichever class holds them
    @property
    def text_config(self) -> CLIPTextConfig:
        return self.config.text_config if isinstance(self.config, CLIPConfig) else self.config

    @property
    def vision_config(self) -> CLIPVisionConfig:
        return self.config.vision_config if isinstance(self.config, CLIPConfig) else self.config

    def _shapes(self):
        cfg = self.config
        projection_dim = cfg.projection_dim
        num_labels = cfg.num_labels if isinstance(cfg, CLIPConfig) else None
        return expected_shapes(self.parts, self.text_config if "text" in self.parts else None,
                               self.vision_config if "vision" in self.parts else None, projection_dim, num_labels)

    @property
    def text_layers(self) -> list[dict]:
        """The text encoder's weights, one dict per layer (weights.layer_weights)."""
        return self._tower_layers("text_model", self.text_config)

    @property
    def vision_layers(self) -> list[dict]:
        """The vision encoder's weights, one dict per layer (weights.layer_weights)."""
        return self._tower_layers("vision_model", self.vision_config)

    def _tower_layers(self, prefix, cfg):
        if prefix.split("_")[0] not in self.parts:
            raise AttributeError(f"{type(self).__name__} has no {prefix.split('_')[0]} tower")
        # Made on first use, not at load: a job that uses one tower never copies the other's
        # weights (q/k/v fused, matrices made column-major) out of the memory-mapped file.
        if prefix not in self._layers:
            layers = prefix + ".encoder.layers."
            self._unprepared[prefix] = {k: v for k, v in self.params.items() if k.startswith(layers)}
            self._layers[prefix] = layer_weights(self.params, prefix, cfg.num_hidden_layers)
        return self._layers[prefix]

    def release_layers(self, tower):
        """Free the memory of a tower's prepared layer weights ("text" or "vision"): the copies made on
        its first use (q/k/v fused, matrices column-major). The checkpoint stays mapped, so a later use
        of the tower prepares them again. For jobs done with a tower: ``npclip classify`` encodes its
        labels, then releases the text tower before it reads any image."""
        if tower not in ("text", "vision"):
            raise ValueError(f"tower must be 'text' or 'vision', not {tower!r}")
        prefix = f"{tower}_model"
        if prefix in self._layers:
            del self._layers[prefix]
            self.params.update(self._unprepared.pop(prefix))  # the mapped originals, not resident any more

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, backend=None, dtype=None, torch_dtype=None,
                        revision=None, cache_dir=None, local_files_only=False, token=None, config=None,
                        **kwargs):
        """Load a checkpoint: a local directory, a bundled name ("tiny-shapes") or a hub id.

        dtype: compute dtype, "float32" (default) or "float16"; weights stored in float16 or
        bfloat16 are converted on load. backend: "numpy" (default, or NPCLIP_BACKEND) or "cupy".
        """
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pretrained got unexpected arguments: {', '.join(kwargs)}")
        _backend.get_backend(backend)  # a missing CuPy or GPU is reported before anything is read
        directory = resolve_dir(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only, token=token)
        if config is None:
            config = cls.config_class.from_pretrained(directory)
        compute = _compute_dtype(dtype if dtype is not None else torch_dtype)
        tensors, files = load_checkpoint(directory, dtype=compute)
        return cls(config, _StateDict(tensors, files), backend=backend, dtype=compute, _source=directory)

    def state_dict(self) -> dict:
        """The weights by canonical Hugging Face name (fused q/k/v are not included)."""
        return dict(self.params)

    def save_pretrained(self, save_directory) -> None:
        """Write config.json and model.safetensors (float32 or the compute dtype)."""
        from safetensors.numpy import save_file

        os.makedirs(save_directory, exist_ok=True)
        self.config.save_pretrained(save_directory)
        arrays = {k: np.ascontiguousarray(_backend.to_numpy(v)) for k, v in self.params.items()}
        save_file(arrays, os.path.join(save_directory, "model.safetensors"), metadata={"format": "np"})

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- inputs ---------------------------------------------------------------------------

    def _input_ids(self, input_ids, attention_mask=None, position_ids=None):
        """Check and move text inputs. -> input_ids [B, T], attention_mask [B, T] | None, position_ids"""
        if input_ids is None:
            raise ValueError("You have to specify input_ids")
        ids = self.xp.asarray(_host(input_ids))
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"input_ids must be a [batch, tokens] integer array, got {ids.dtype} of shape {ids.shape}")
        cfg = self.text_config
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {cfg.vocab_size}), got values from {int(ids.min())} "
                             f"to {int(ids.max())}")
        if ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"Sequence length must be less than max_position_embeddings (got `sequence length`: "
                f"{ids.shape[1]} and max_position_embeddings: {cfg.max_position_embeddings}); "
                "tokenize with truncation=True, max_length=77"
            )
        if attention_mask is not None:
            attention_mask = self.xp.asarray(_host(attention_mask))
            if attention_mask.ndim == 1:
                attention_mask = attention_mask[None]
            if attention_mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {attention_mask.shape}, input_ids {ids.shape}")
        if position_ids is not None:
            position_ids = self.xp.asarray(_host(position_ids))
            if position_ids.ndim == 1:
                position_ids = position_ids[None]
            if position_ids.shape[-1] != ids.shape[1] or int(position_ids.max()) >= cfg.max_position_embeddings:
                raise ValueError(f"position_ids of shape {position_ids.shape} do not fit input_ids {ids.shape} "
                                 f"and {cfg.max_position_embeddings} positions")
        return ids, attention_mask, position_ids

    def _pixel_values(self, pixel_values, interpolate_pos_encoding=False):
        """Check and move image inputs, cast to the compute dtype. -> [B, C, H, W]"""
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        x = self.xp.asarray(_host(pixel_values))
        cfg = self.vision_config
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != cfg.num_channels:
            raise ValueError(f"pixel_values must be [batch, {cfg.num_channels}, height, width] (channels first), "
                             f"got shape {tuple(x.shape)}")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"pixel_values must be numeric, got {x.dtype}")
        H, W = x.shape[2:]
        if not interpolate_pos_encoding and (H != cfg.image_size or W != cfg.image_size):
            raise ValueError(f"Input image size ({H}*{W}) doesn't match model ({cfg.image_size}*{cfg.image_size}). "
                             "Resize with CLIPImageProcessor, or pass interpolate_pos_encoding=True")
        if H < cfg.patch_size or W < cfg.patch_size:
            raise ValueError(f"pixel_values of {H}x{W} are smaller than one {cfg.patch_size}x{cfg.patch_size} patch")
        return x.astype(self.dtype, copy=False)

    # --- towers ---------------------------------------------------------------------------

    def _text(self, input_ids, attention_mask=None, position_ids=None, output_attentions=False,
              output_hidden_states=False, record=None) -> BaseModelOutputWithPooling:
        ids, mask, pos = self._input_ids(input_ids, attention_mask, position_ids)
        last, pooled, hidden, attn = text_transformer(ids, mask, pos, self.params, self.text_layers,
                                                      self.text_config, bool(output_hidden_states),
                                                      bool(output_attentions), record)
        return BaseModelOutputWithPooling(last, pooled, hidden, attn)

    def _pooled_text(self, input_ids, attention_mask=None, position_ids=None):
        """The pooled text state only, computing only the tokens it depends on (text.pooled_text)."""
        ids, mask, pos = self._input_ids(input_ids, attention_mask, position_ids)
        return pooled_text(ids, mask, pos, self.params, self.text_layers, self.text_config)

    def _vision(self, pixel_values, interpolate_pos_encoding=False, output_attentions=False,
                output_hidden_states=False, record=None) -> BaseModelOutputWithPooling:
        x = self._pixel_values(pixel_values, interpolate_pos_encoding)
        last, pooled, hidden, attn = vision_transformer(x, self.params, self.vision_layers, self.vision_config,
                                                        bool(interpolate_pos_encoding), bool(output_hidden_states),
                                                        bool(output_attentions), record)
        return BaseModelOutputWithPooling(last, pooled, hidden, attn)

    def _project(self, name, pooled, record=None):
        """A projection without bias. pooled: [B, D] -> [B, E]"""
        out = linear(pooled, self.params[name + ".weight"])
        if record is not None:
            record(name, out)
        return out


class _StateDict(dict):
    """Tensors by name, with the file each came from (for error messages)."""

    def __init__(self, tensors, files):
        super().__init__(tensors)
        self.files = files


def _host(x):
    """Inputs as arrays: NumPy, CuPy, lists, or CPU torch tensors."""
    if _backend.backend_name(x) == "cupy":
        return x
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _host_float(v, dtype):
    """A weight as a host array; floating weights in the compute dtype (an explicit conversion)."""
    a = _backend.to_numpy(v) if _backend.backend_name(v) == "cupy" else _host(v)
    return a.astype(dtype, copy=False) if np.issubdtype(a.dtype, np.floating) else a


# ----------------------------------------------------------------------------------------------
# The towers alone


class CLIPTextModel(CLIPPreTrainedModel):
    """The text tower without projection (pooler_output is the end-of-text token's state)."""

    config_class = CLIPTextConfig
    parts = ("text",)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                output_hidden_states=None, return_dict=True, record=None) -> BaseModelOutputWithPooling:
        return self._text(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, record)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    """The text tower and text_projection: text_embeds [B, E]."""

    config_class = CLIPTextConfig
    parts = ("text", "text_projection")

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                output_hidden_states=None, return_dict=True, record=None) -> CLIPTextModelOutput:
        out = self._text(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, record)
        embeds = self._project("text_projection", out.pooler_output, record)
        return CLIPTextModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


class CLIPVisionModel(CLIPPreTrainedModel):
    """The vision tower without projection (pooler_output is the normed class token)."""

    config_class = CLIPVisionConfig
    parts = ("vision",)

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=True, record=None) -> BaseModelOutputWithPooling:
        return self._vision(pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states,
                            record)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    """The vision tower and visual_projection: image_embeds [B, E]."""

    config_class = CLIPVisionConfig
    parts = ("vision", "visual_projection")

    def forward(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=True, record=None) -> CLIPVisionModelOutput:
        out = self._vision(pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states,
                           record)
        embeds = self._project("visual_projection", out.pooler_output, record)
        return CLIPVisionModelOutput(embeds, out.last_hidden_state, out.hidden_states, out.attentions)


# ----------------------------------------------------------------------------------------------
# The two towers together


def l2_normalize(x):
    """x / ||x|| along the last axis. x: [B, E] -> [B, E]"""
    xp = _backend.array_namespace(x)
    return x / xp.sqrt(xp.sum(xp.square(x), axis=-1, keepdims=True))


def clip_logits(text_embeds, image_embeds, logit_scale):
    """Cosine similarities scaled by the learned temperature: exp(logit_scale) · text_embeds @ image_embedsᵀ.

    text_embeds: [Bt, E], image_embeds: [Bi, E] (both L2-normalised), logit_scale: [] -> logits_per_text [Bt, Bi]
    """
    xp = _backend.array_namespace(text_embeds)
    return xp.matmul(text_embeds, image_embeds.T) * xp.exp(logit_scale)


def cross_entropy(logits, labels):
    """Mean cross-entropy of rows of logits against integer labels, in float32.

    logits: [B, K], labels: [B] -> scalar
    """
    xp = _backend.array_namespace(logits)
    z = logits.astype(xp.float32, copy=True)
    z -= z.max(axis=-1, keepdims=True)
    log_probs = z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))  # [B, K]
    return -log_probs[xp.arange(len(labels)), labels].mean()


def clip_loss(logits_per_text):
    """The symmetric contrastive loss: text i belongs with image i. [B, B] -> scalar"""
    xp = _backend.array_namespace(logits_per_text)
    n, m = logits_per_text.shape
    if n != m:
        raise ValueError(f"return_loss needs as many texts as images (text i matches image i), got {n} texts "
                         f"and {m} images")
    labels = xp.arange(n)
    return (cross_entropy(logits_per_text, labels) + cross_entropy(logits_per_text.T, labels)) / 2


class CLIPModel(CLIPPreTrainedModel):
    """Both towers, their projections and the learned temperature (transformers' CLIPModel)."""

    config_class = CLIPConfig
    parts = ("text", "vision", "text_projection", "visual_projection", "logit_scale")

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None):
        """Projected text features (not normalised). -> [B, E]"""
        return self._project("text_projection", self._pooled_text(input_ids, attention_mask, position_ids))

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False):
        """Projected image features (not normalised). -> [B, E]"""
        x = self._pixel_values(pixel_values, interpolate_pos_encoding)
        pooled = pooled_image(x, self.params, self.vision_layers, self.vision_config, bool(interpolate_pos_encoding))
        return self._project("visual_projection", pooled)

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                return_loss=None, output_attentions=None, output_hidden_states=None,
                interpolate_pos_encoding=False, return_dict=True, record=None) -> CLIPOutput:
        vision = self._vision(pixel_values, interpolate_pos_encoding, output_attentions, output_hidden_states,
                              record)
        text = self._text(input_ids, attention_mask, position_ids, output_attentions, output_hidden_states,
                          record)
        image_embeds = l2_normalize(self._project("visual_projection", vision.pooler_output, record))  # [Bi, E]
        text_embeds = l2_normalize(self._project("text_projection", text.pooler_output, record))  # [Bt, E]
        logits_per_text = clip_logits(text_embeds, image_embeds, self.params["logit_scale"])  # [Bt, Bi]
        logits_per_image = logits_per_text.T  # [Bi, Bt]
        if record is not None:
            record("logits_per_image", logits_per_image)
            record("logits_per_text", logits_per_text)
        loss = clip_loss(logits_per_text) if return_loss else None
        return CLIPOutput(loss, logits_per_image, logits_per_text, text_embeds, image_embeds, text, vision)


class CLIPForImageClassification(CLIPPreTrainedModel):
    """The vision tower with a linear head on the mean of the patch tokens (not the class token)."""

    config_class = CLIPConfig
    parts = ("vision", "classifier")

    def forward(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=True, record=None) -> ImageClassifierOutput:
        out = self._vision(pixel_values, False, output_attentions, output_hidden_states, record)
        features = out.last_hidden_state[:, 1:].mean(axis=1)  # [B, D]: the mean patch token
        if self.config.num_labels > 0:
            logits = linear(features, self.params["classifier.weight"], self.params["classifier.bias"])  # [B, K]
        else:
            logits = features  # transformers' nn.Identity head
        if record is not None:
            record("classifier", logits)
        loss = None if labels is None else self._loss(logits, labels)
        return ImageClassifierOutput(loss, logits, out.hidden_states, out.attentions)

    def _loss(self, logits, labels):
        """transformers' problem types: regression (1 label), single-label (int labels), else multi-label."""
        xp = self.xp
        labels = xp.asarray(_host(labels))
        if self.config.num_labels == 1:
            return xp.mean(xp.square(logits.reshape(-1) - labels.reshape(-1).astype(logits.dtype)))
        if labels.dtype.kind in "iu":
            return cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
        y = labels.astype(xp.float32)
        z = logits.astype(xp.float32)
        return xp.mean(xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z))))  # BCE with logits


__all__ = [
    "CLIPPreTrainedModel", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModel",
    "CLIPVisionModelWithProjection", "CLIPModel", "CLIPForImageClassification", "CLIPOutput",
    "BaseModelOutputWithPooling", "CLIPTextModelOutput", "CLIPVisionModelOutput", "ImageClassifierOutput",
]
