"""npclip: OpenAI's CLIP in plain NumPy, with transformers' names, and an optional CuPy backend.

    >>> from npclip import CLIPModel, CLIPProcessor
    >>> model = CLIPModel.from_pretrained("tiny-shapes")

Importing npclip imports NumPy only: CuPy is imported when a CuPy backend is asked for.
"""

from .backend import array_namespace, get_backend, to_numpy
from .configuration import CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from .modeling import (
    BaseModelOutputWithPooling,
    CLIPForImageClassification,
    CLIPModel,
    CLIPOutput,
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPTextModelOutput,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelOutput,
    CLIPVisionModelWithProjection,
    ImageClassifierOutput,
)
from .weights import CheckpointError

# Imported on first use, so that `import npclip` costs NumPy only (PEP 562).
_LAZY = {
    "CLIPTokenizer": "tokenizer",
    "CLIPImageProcessor": "image_processing",
    "CLIPProcessor": "processing",
    "pipeline": "pipelines",
    "ZeroShotImageClassificationPipeline": "pipelines",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'npclip' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "CLIPConfig", "CLIPTextConfig", "CLIPVisionConfig",
    "CLIPModel", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModel",
    "CLIPVisionModelWithProjection", "CLIPForImageClassification", "CLIPPreTrainedModel",
    "CLIPOutput", "BaseModelOutputWithPooling", "CLIPTextModelOutput", "CLIPVisionModelOutput",
    "ImageClassifierOutput", "CheckpointError", "to_numpy", "get_backend", "array_namespace",
    "CLIPTokenizer", "CLIPImageProcessor", "CLIPProcessor", "pipeline", "ZeroShotImageClassificationPipeline",
]
