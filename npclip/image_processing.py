"""CLIP's image preprocessing, pixel for pixel as transformers' CLIPImageProcessorPil (5.24) does it.

    image: PIL image, file path, or array [H, W, C] / [C, H, W] / [H, W]
        -> RGB, channels first                     [3, H, W] uint8 (alpha composited onto white)
        -> resize, shortest edge -> 224, BICUBIC   [3, H', W']     (Pillow does the resampling)
        -> centre-crop 224 x 224                   [3, 224, 224]   (zero-padded if smaller)
        -> rescale: x * (1/255) in float64, then float32
        -> normalise: (x - mean) / std in float32, OpenAI's mean and std
        -> pixel_values                            [B, 3, 224, 224] float32

Each step is a function usable on its own (convert_rgb, resize, center_crop, rescale_and_normalize);
CLIPImageProcessor strings them together and reads preprocessor_config.json. The arithmetic is the
reference's own, in the same dtypes and order, so the results are bit-identical (docs/preprocessing.md).
Shapes: B images, C channels, H height, W width.
"""

from __future__ import annotations

import json
import os
from math import ceil

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .hub import read_json as _read_json
from .tokenizer import HUB_KWARGS, BatchEncoding, resolve

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = Image.Resampling.BICUBIC
CONFIG_FILES = ("preprocessor_config.json", "processor_config.json")
FIRST, LAST = "channels_first", "channels_last"


class BatchFeature(BatchEncoding):
    """{"pixel_values": ...} that also reads as attributes (transformers' BatchFeature)."""


# ----------------------------------------------------------------------------------------------
# 1. Loading and RGB


def load_image(path) -> Image.Image:
    """transformers.image_utils.load_image: open, apply the EXIF orientation, convert("RGB").

    A file's alpha is dropped here, not composited onto white (as transformers does for a path).
    Errors name the file, Pillow's decompression-bomb refusal included.
    """
    path = os.fspath(path)
    if path.startswith(("http://", "https://")):
        raise ValueError(f"{path}: npclip does not download images; open it yourself and pass the image")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: refused by Pillow's decompression-bomb guard ({e}); raise "
                         f"PIL.Image.MAX_IMAGE_PIXELS if you trust this file") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not an image Pillow can read") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot read this image ({e})") from e


def channel_layout(image: np.ndarray) -> str:
    """transformers' infer_channel_dimension_format(num_channels=(1, 3, 4)); ambiguous -> channels first."""
    if image.ndim != 3 or (image.shape[0] not in (1, 3, 4) and image.shape[-1] not in (1, 3, 4)):
        raise ValueError(f"an image array must be [H, W, C] or [C, H, W] with C = 1, 3 or 4 "
                         f"(or [H, W] grayscale), not of shape {image.shape}")
    return FIRST if image.shape[0] in (1, 3, 4) else LAST


def convert_rgb(image, input_data_format=None) -> np.ndarray:
    """transformers.image_transforms.convert_to_rgb(return_numpy=True).

    PIL image -> [H, W, 3] uint8, transparency composited onto white by Pillow.
    Array -> RGB in its own layout: 1 channel repeated, 4 channels blended onto white in NumPy.
    """
    if isinstance(image, Image.Image):
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(white, image.convert("RGBA")).convert("RGB"))
        return np.array(image.convert("RGB"))
    if image.ndim == 2:  # [H, W] grayscale
        image, input_data_format = image[..., None], LAST
    axis = -1 if (input_data_format or channel_layout(image)) == LAST else 0
    hwc = np.moveaxis(image, axis, -1)  # [H, W, C]
    if hwc.shape[-1] == 1:
        hwc = np.repeat(hwc, 3, axis=-1)
    elif hwc.shape[-1] == 4:
        hwc = _blend_onto_white(hwc)
    return np.moveaxis(hwc, -1, axis)


def _blend_onto_white(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] -> [H, W, 3]: alpha * rgb + (1 - alpha) * white, rounded back for integer images."""
    integer = np.issubdtype(rgba.dtype, np.integer)
    if not integer and (rgba.min() < 0.0 or rgba.max() > 1.0):
        raise ValueError(f"a float RGBA image must lie in [0, 1], not [{rgba.min()}, {rgba.max()}]")
    white = 255 if integer else 1.0
    alpha = rgba[..., 3:4] / white
    blended = alpha * rgba[..., :3] + (1 - alpha) * white
    return np.round(blended).astype(rgba.dtype) if integer else blended.astype(rgba.dtype)


def to_channels_first(image, do_convert_rgb=True, input_data_format=None) -> np.ndarray:
    """PilBackend.process_image: a PIL image or array -> [C, H, W] (RGB when do_convert_rgb)."""
    if isinstance(image, Image.Image):
        hwc = convert_rgb(image) if do_convert_rgb else np.array(image)
        return hwc[None] if hwc.ndim == 2 else np.moveaxis(hwc, -1, 0)
    if image.ndim == 2:  # [H, W] grayscale (transformers refuses 2-D arrays)
        image, input_data_format = image[None], FIRST
    layout = input_data_format or channel_layout(image)
    if do_convert_rgb:
        image = convert_rgb(image, layout)
    return np.moveaxis(image, -1, 0) if layout == LAST else image


# ----------------------------------------------------------------------------------------------
# 2. Resize


def resize_output_size(height: int, width: int, size) -> tuple[int, int]:
    """The (height, width) PilBackend.resize asks Pillow for, from a size dict (or int: shortest edge)."""
    size = size_dict(size, default_to_square=False)
    if size.get("shortest_edge") and size.get("longest_edge"):
        return size_with_aspect_ratio(height, width, size["shortest_edge"], size["longest_edge"])
    if size.get("shortest_edge"):
        return shortest_edge_size(height, width, size["shortest_edge"])
    if size.get("max_height") and size.get("max_width"):
        scale = min(size["max_height"] / height, size["max_width"] / width)
        return int(height * scale), int(width * scale)
    if size.get("height") and size.get("width"):
        return size["height"], size["width"]
    raise ValueError(f"size must have 'shortest_edge' (and maybe 'longest_edge'), 'height' and 'width', "
                     f"or 'max_height' and 'max_width'; got {size}")


def shortest_edge_size(height: int, width: int, size: int) -> tuple[int, int]:
    """get_resize_output_image_size(default_to_square=False): short side -> size, long side truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def size_with_aspect_ratio(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """transformers.image_transforms.get_size_with_aspect_ratio: shortest edge, long edge capped."""
    raw_size = None
    short, long = float(min(height, width)), float(max(height, width))
    if long / short * size > max_size:
        raw_size = max_size * short / long
        size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale = raw_size if raw_size is not None else size
    if width < height:
        return int(scale * height / width), size
    return size, int(scale * width / height)


def resize(image: np.ndarray, size, resample=BICUBIC) -> np.ndarray:
    """[C, H, W] -> [C, H', W'] by Pillow (image_transforms.resize, as PilBackend.resize calls it).

    Float images in [0, 1] go through Pillow as uint8 (x * 255, truncated) and come back * (1/255).
    """
    height, width = resize_output_size(image.shape[-2], image.shape[-1], size)
    scaled = _needs_scaling_for_pil(image)
    hwc = np.moveaxis(image, 0, -1)  # [H, W, C]
    hwc = hwc[..., 0] if hwc.shape[-1] == 1 else hwc  # Pillow takes a 1-channel image as [H, W]
    if scaled:
        hwc = rescale(hwc, 255)
    resized = np.array(Image.fromarray(hwc.astype(np.uint8)).resize((width, height), resample=resample))
    resized = resized[..., None] if resized.ndim == 2 else resized
    resized = np.moveaxis(resized, -1, 0)  # [C, H', W']
    return rescale(resized, 1 / 255) if scaled else resized


def _needs_scaling_for_pil(image: np.ndarray) -> bool:
    """image_transforms._rescale_for_pil_conversion: True for floats in [0, 1] that are not whole."""
    if image.dtype == np.uint8:
        return False
    if np.allclose(image, image.astype(int)):
        if np.all(image >= 0) and np.all(image <= 255):
            return False
        raise ValueError(f"pixel values must lie in [0, 255] to go through Pillow, not "
                         f"[{image.min()}, {image.max()}]")
    if np.all(image >= 0) and np.all(image <= 1):
        return True
    raise ValueError(f"float pixel values must lie in [0, 1] (or be whole numbers in [0, 255]), not "
                     f"[{image.min()}, {image.max()}]")


# ----------------------------------------------------------------------------------------------
# 3. Centre crop


def center_crop(image: np.ndarray, size) -> np.ndarray:
    """image_transforms.center_crop: [C, H, W] -> [C, h, w], zero-padding an image smaller than the crop."""
    size = size_dict(size, default_to_square=True, name="crop_size")
    if "height" not in size or "width" not in size:
        raise ValueError(f"crop_size must have 'height' and 'width', not {size}")
    crop_h, crop_w = int(size["height"]), int(size["width"])
    height, width = image.shape[-2:]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return image[..., top : top + crop_h, left : left + crop_w]
    padded_h, padded_w = max(crop_h, height), max(crop_w, width)
    pad_top, pad_left = ceil((padded_h - height) / 2), ceil((padded_w - width) / 2)
    padded = np.zeros_like(image, shape=image.shape[:-2] + (padded_h, padded_w))
    padded[..., pad_top : pad_top + height, pad_left : pad_left + width] = image
    top, left = top + pad_top, left + pad_left
    return padded[..., max(0, top) : min(padded_h, top + crop_h), max(0, left) : min(padded_w, left + crop_w)]


# ----------------------------------------------------------------------------------------------
# 4. Rescale and normalise


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """image_transforms.rescale: x * scale computed in float64, then stored as float32."""
    return (image.astype(np.float64) * scale).astype(np.float32)


def normalize(image: np.ndarray, mean, std) -> np.ndarray:
    """image_transforms.normalize: (x - mean) / std per channel, in float32 (or the image's float dtype)."""
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    channels = image.shape[0]
    mean = np.array(_per_channel(mean, channels, "image_mean"), dtype=image.dtype)[:, None, None]  # [C, 1, 1]
    std = np.array(_per_channel(std, channels, "image_std"), dtype=image.dtype)[:, None, None]  # [C, 1, 1]
    return (image - mean) / std


def _per_channel(values, channels: int, name: str) -> list:
    values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values] * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for an image of {channels} channels")
    return values


def rescale_and_normalize(image: np.ndarray, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                          image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD) -> np.ndarray:
    """[C, H, W] -> [C, H, W] float32: rescale, then normalise, as PilBackend._preprocess does them."""
    if do_rescale:
        image = rescale(image, rescale_factor)
    if do_normalize:
        image = normalize(image, image_mean, image_std)
    return image


# ----------------------------------------------------------------------------------------------
# Sizes as transformers writes them in preprocessor_config.json


def size_dict(size, default_to_square=True, name="size") -> dict:
    """transformers' get_size_dict: an int, (height, width) or dict -> a dict of known keys."""
    if isinstance(size, dict):
        out = {k: v for k, v in size.items() if v is not None}
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        out = {"height": int(size), "width": int(size)} if default_to_square else {"shortest_edge": int(size)}
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        out = {"height": size[0], "width": size[1]}
    else:
        raise ValueError(f"{name} must be an int, (height, width) or a dict, not {size!r}")
    if set(out) not in VALID_SIZE_KEYS:
        raise ValueError(f"{name} must have one of the key sets {[sorted(k) for k in VALID_SIZE_KEYS]}, got {out}")
    return out


VALID_SIZE_KEYS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"},
                   {"max_height", "max_width"})


# ----------------------------------------------------------------------------------------------
# The processor


class CLIPImageProcessor:
    """CLIP's image processor, called like transformers' CLIPImageProcessorPil.

    proc(images, return_tensors="np", **overrides) -> BatchFeature(pixel_values [B, 3, h, w] float32);
    return_tensors=None gives a list of [3, h, w] arrays. images: a PIL image, a path, an array, a
    [B, H, W, C] / [B, C, H, W] array, or a list of these.
    """

    model_input_names = ["pixel_values"]
    OPTIONS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
               "do_normalize", "image_mean", "image_std", "do_convert_rgb")

    def __init__(self, do_resize=True, size=None, resample=BICUBIC, do_center_crop=True, crop_size=None,
                 do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=None, image_std=None,
                 do_convert_rgb=True, use_square_size=False, **kwargs):
        size = {"shortest_edge": 224} if size is None else size
        if use_square_size:  # transformers, for KOSMOS-2: a square of the class default
            size = {"height": 224, "width": 224}
        self.do_resize, self.do_center_crop = do_resize, do_center_crop
        self.size = size_dict(size, default_to_square=False)
        self.resample = Image.Resampling(BICUBIC if resample is None else resample)
        self.crop_size = size_dict(224 if crop_size is None else crop_size, name="crop_size")
        self.do_rescale, self.rescale_factor = do_rescale, rescale_factor
        self.do_normalize, self.do_convert_rgb = do_normalize, do_convert_rgb
        self.image_mean = _mean_or_std(OPENAI_CLIP_MEAN if image_mean is None else image_mean)
        self.image_std = _mean_or_std(OPENAI_CLIP_STD if image_std is None else image_std)
        self.extra = kwargs  # other preprocessor_config.json keys, kept but unused

    @classmethod
    def from_dict(cls, config: dict, **kwargs) -> "CLIPImageProcessor":
        """From a preprocessor_config.json dict (a null do_* is false, as in transformers)."""
        return cls(**{**config, **kwargs})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "CLIPImageProcessor":
        """Read preprocessor_config.json (or the image_processor part of processor_config.json)."""
        hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        files = resolve(pretrained_model_name_or_path, CONFIG_FILES, **hub)
        if files["preprocessor_config.json"]:
            config = _read_json(files["preprocessor_config.json"])
        elif files["processor_config.json"] and "image_processor" in _read_json(files["processor_config.json"]):
            config = _read_json(files["processor_config.json"])["image_processor"]
        else:
            raise FileNotFoundError(f"{os.fspath(pretrained_model_name_or_path)}: no preprocessor_config.json "
                                    f"(nor processor_config.json with an image_processor)")
        return cls.from_dict(config, **kwargs)

    def to_dict(self) -> dict:
        options = {name: getattr(self, name) for name in self.OPTIONS}
        options["resample"] = int(self.resample)
        return {**self.extra, **options, "image_processor_type": "CLIPImageProcessor"}

    def save_pretrained(self, save_directory) -> None:
        """Write preprocessor_config.json."""
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_FILES[0]), "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)

    def __call__(self, images, *, return_tensors="np", input_data_format=None, **overrides) -> BatchFeature:
        """Preprocess an image or a batch: -> BatchFeature(pixel_values [B, 3, h, w]).

        overrides: any of OPTIONS for this call. input_data_format: "channels_first" or
        "channels_last" where an array's layout is ambiguous (None: guessed as transformers does).
        """
        options = self._options(overrides)
        batch = make_image_list(images)
        pixels = [self._one(image, i, input_data_format, **options) for i, image in enumerate(batch)]
        return BatchFeature(pixel_values=_stack(pixels, return_tensors))

    preprocess = __call__

    def _options(self, overrides: dict) -> dict:
        unknown = set(overrides) - set(self.OPTIONS)
        if unknown:
            raise TypeError(f"unknown image processor option(s) {sorted(unknown)}; known: {', '.join(self.OPTIONS)}")
        options = {name: getattr(self, name) for name in self.OPTIONS}
        options.update(overrides)
        options["size"] = size_dict(options["size"] or self.size, default_to_square=False)
        options["crop_size"] = size_dict(options["crop_size"] or self.crop_size, name="crop_size")
        return options

    def _one(self, image, index, input_data_format, do_resize, size, resample, do_center_crop, crop_size,
             do_rescale, rescale_factor, do_normalize, image_mean, image_std, do_convert_rgb) -> np.ndarray:
        """One image through every step: -> [C, h, w]. Errors say which image of the batch."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        try:
            image = to_channels_first(image, do_convert_rgb, input_data_format)  # [C, H, W]
            if do_resize:
                image = resize(image, size, resample)  # [C, H', W']
            if do_center_crop:
                image = center_crop(image, crop_size)  # [C, h, w]
            return rescale_and_normalize(image, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
        except ValueError as e:
            raise ValueError(f"images[{index}]: {e}") from e

    def __repr__(self) -> str:
        return f"CLIPImageProcessor({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def _mean_or_std(values):
    """A tuple per channel, or one float for every channel."""
    return tuple(float(v) for v in values) if isinstance(values, (list, tuple, np.ndarray)) else float(values)


def make_image_list(images) -> list:
    """One image, a list (nested one level) or a 4-D array -> a flat list of images, each checked."""
    if images is None:
        raise ValueError("images is None: pass a PIL image, a path, an array, or a list of these")
    flat = [image for item in _unbatch(images) for image in _unbatch(item)]
    if not flat:
        raise ValueError("images is an empty batch: pass at least one image")
    return [_check_image(image, i) for i, image in enumerate(flat)]


def _unbatch(item) -> list:
    """A list or a 4-D array (or tensor) -> its images; anything else -> [it]."""
    if type(item).__module__.startswith("torch"):
        item = item.detach().cpu().numpy()
    if isinstance(item, (list, tuple)) or (isinstance(item, np.ndarray) and item.ndim == 4):
        return list(item)
    return [item]


def _check_image(image, index):
    """A PIL image or path as it is; a tensor or array as a NumPy array of a usable shape and dtype."""
    if isinstance(image, (Image.Image, str, os.PathLike)):
        return image
    if not isinstance(image, np.ndarray):
        raise TypeError(f"images[{index}] is a {type(image).__name__}: expected a PIL image, a path or an array")
    if image.dtype.kind not in "uif":
        raise TypeError(f"images[{index}] has dtype {image.dtype}: expected integers or floats")
    if image.ndim not in (2, 3) or (image.ndim == 3 and not {image.shape[0], image.shape[-1]} & {1, 3, 4}):
        raise ValueError(f"images[{index}] has shape {image.shape}: expected [H, W, C] or [C, H, W] with "
                         f"C = 1, 3 or 4, [H, W] grayscale, or a batch [B, H, W, C]")
    return image


def _stack(pixels: list, return_tensors):
    if return_tensors is None:
        return pixels
    if return_tensors != "np":
        raise ValueError(f"return_tensors={return_tensors!r}: npclip returns NumPy ('np') or a list (None)")
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        raise ValueError(f"images of different shapes {sorted(shapes)} cannot make one array: "
                         f"keep do_center_crop=True, or pass return_tensors=None for a list")
    return np.stack(pixels)  # [B, C, h, w]


