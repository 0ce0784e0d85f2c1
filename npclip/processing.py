"""CLIPProcessor: the tokenizer and the image processor behind one call, as transformers' CLIPProcessor.

    processor(text=["a photo of a cat"], images=image, padding=True)
        -> BatchEncoding(input_ids [B_text, T], attention_mask [B_text, T], pixel_values [B_img, 3, 224, 224])
"""

from __future__ import annotations

import os

from .image_processing import CLIPImageProcessor
from .tokenizer import HUB_KWARGS, BatchEncoding, CLIPTokenizer

# from_pretrained keyword arguments meant for the tokenizer; the others go to the image processor.
TOKENIZER_KWARGS = ("model_max_length", "bos_token", "eos_token", "unk_token", "pad_token")


class CLIPProcessor:
    """Wraps a CLIPImageProcessor and a CLIPTokenizer (the defaults when none is given)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None):
        self.image_processor = image_processor if image_processor is not None else CLIPImageProcessor()
        self.tokenizer = tokenizer if tokenizer is not None else CLIPTokenizer()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "CLIPProcessor":
        """Both parts from one directory (tokenizer files, and preprocessor_config.json or processor_config.json)."""
        path = os.fspath(pretrained_model_name_or_path)
        hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        tokenizer_kwargs = {k: kwargs.pop(k) for k in TOKENIZER_KWARGS if k in kwargs}
        return cls(image_processor=CLIPImageProcessor.from_pretrained(path, **hub, **kwargs),
                   tokenizer=CLIPTokenizer.from_pretrained(path, **hub, **tokenizer_kwargs))

    def save_pretrained(self, save_directory) -> None:
        self.image_processor.save_pretrained(save_directory)
        self.tokenizer.save_pretrained(save_directory)

    def __call__(self, *args, text=None, images=None, return_tensors="np", padding=False, truncation=None,
                 max_length=None, **image_kwargs) -> BatchEncoding:
        """Token ids and masks for the text, pixel values for the images; either may be left out.

        text= and images= are passed by name: transformers 4 took (text, images), 5 takes (images, text).
        """
        if args:
            raise TypeError("pass text= and images= by name: processor(text=..., images=...)")
        if text is None and images is None:
            raise ValueError("CLIPProcessor needs text, images, or both")
        out = BatchEncoding()
        if text is not None:
            out.update(self.tokenizer(text, padding=padding, truncation=truncation, max_length=max_length,
                                      return_tensors=return_tensors))
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors, **image_kwargs))
        return out

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """The tokenizer's batch_decode."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        """The tokenizer's decode."""
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return self.image_processor.model_input_names + self.tokenizer.model_input_names

    def __repr__(self) -> str:
        return f"CLIPProcessor(\n  image_processor={self.image_processor!r},\n  tokenizer={self.tokenizer!r})"
