"""CLIP configurations: the sizes of the two towers, with transformers' defaults (ViT-B/32).

``CLIPTextConfig``, ``CLIPVisionConfig`` and ``CLIPConfig`` take the same keyword
arguments as transformers' classes and read a checkpoint's ``config.json``.
Keys npclip does not use are kept (in ``extra``) and written back by ``to_dict``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .hub import HUB_KWARGS as _HUB_KWARGS
from .hub import read_json as _read_json

CONFIG_NAME = "config.json"


class _Config:
    """Shared behaviour: from_dict keeps unknown keys, to_dict gives them back."""

    model_type = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> "_Config":
        d = {**d, **overrides}
        names = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k != "extra"}
        cfg = cls(**known)
        cfg.extra.update(extra)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for k, v in d.items():
            if isinstance(v, _Config):
                d[k] = v.to_dict()
        return {**self.extra, **d, "model_type": self.model_type}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "_Config":
        """Read ``config.json`` from a local directory (or the file itself, or a hub id)."""
        from .hub import resolve_file

        path = str(pretrained_model_name_or_path)
        if not path.endswith(".json"):
            path = resolve_file(path, CONFIG_NAME, **_hub_kwargs(kwargs))
        return cls.from_json_dict(_read_json(path), **kwargs)

    @classmethod
    def from_json_dict(cls, d: dict, **overrides) -> "_Config":
        return cls.from_dict(d, **{k: v for k, v in overrides.items() if k not in _HUB_KWARGS})

    def save_pretrained(self, save_directory) -> None:
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    def __getattr__(self, name):  # unknown config.json keys read like attributes, as in transformers
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")




def _hub_kwargs(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}


def _check_heads(cfg) -> None:
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(
            f"hidden_size ({cfg.hidden_size}) is not a multiple of num_attention_heads ({cfg.num_attention_heads})"
        )


@dataclass
class CLIPTextConfig(_Config):
    """The text tower: a causal transformer over byte-pair tokens."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int | None = 49407
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "clip_text_model"

    def __post_init__(self):
        _check_heads(self)

    @classmethod
    def from_json_dict(cls, d: dict, **overrides):
        if "text_config" in d or d.get("model_type") == "clip":  # a whole CLIPConfig: take its text part
            d = CLIPConfig.from_dict(d).text_config.to_dict()
        return super().from_json_dict(d, **overrides)


@dataclass
class CLIPVisionConfig(_Config):
    """The vision tower: a ViT over square patches."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "clip_vision_model"

    def __post_init__(self):
        _check_heads(self)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) is not a multiple of patch_size ({self.patch_size})")

    @classmethod
    def from_json_dict(cls, d: dict, **overrides):
        if "vision_config" in d or d.get("model_type") == "clip":  # a whole CLIPConfig: take its vision part
            d = CLIPConfig.from_dict(d).vision_config.to_dict()
        return super().from_json_dict(d, **overrides)


@dataclass
class CLIPConfig(_Config):
    """Both towers, the shared projection size and the initial logit scale."""

    text_config: CLIPTextConfig | dict | None = None
    vision_config: CLIPVisionConfig | dict | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    initializer_factor: float = 1.0
    id2label: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)

    model_type = "clip"

    def __post_init__(self):
        self.text_config = CLIPTextConfig.from_dict(_as_dict(self.text_config))
        self.vision_config = CLIPVisionConfig.from_dict(_as_dict(self.vision_config))
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides) -> "CLIPConfig":
        d = {**d, **overrides}
        # Older OpenAI config.json files carry `text_config_dict`/`vision_config_dict`, which win (as in transformers).
        for part in ("text_config", "vision_config"):
            legacy = d.pop(part + "_dict", None)
            if legacy:
                d[part] = {**_as_dict(d.get(part)), **legacy}
        return super().from_dict(d)

    @classmethod
    def from_text_vision_configs(cls, text_config, vision_config, **kwargs) -> "CLIPConfig":
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else int(self.extra.get("num_labels", 2))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d.get("id2label") is None:
            d.pop("id2label")
        else:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
        return d


def _as_dict(cfg) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, _Config):
        return cfg.to_dict()
    return dict(cfg)
