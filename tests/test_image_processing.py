"""CLIPImageProcessor against transformers' PIL-backend CLIPImageProcessorPil (5.24), bit for bit.

npclip repeats the reference's arithmetic (same Pillow calls, same float64 rescale then float32
cast, same float32 normalisation), so every case here must be bit-identical; none needs the
TOLERANCES["pixels"] (1e-6) fallback that docs/preprocessing.md describes.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import reference
from PIL import Image

from tolerances import TOLERANCES

from npclip.image_processing import (
    CLIPImageProcessor,
    center_crop,
    convert_rgb,
    resize,
    rescale_and_normalize,
    resize_output_size,
    to_channels_first,
)

DATA = os.path.join(os.path.dirname(__file__), "data")




@pytest.fixture(scope="session")
def transformers():
    module = reference("transformers")
    module.logging.set_verbosity_error()
    return module


@pytest.fixture(scope="session")
def ref(transformers):
    return transformers.CLIPImageProcessorPil()


@pytest.fixture(scope="session")
def proc():
    return CLIPImageProcessor()


def photo(name) -> Image.Image:
    with Image.open(os.path.join(DATA, name)) as image:
        return image.copy()


CAT = photo("chelsea.png")  # 451 x 300 RGB
ASTRONAUT = photo("astronaut.png")  # 512 x 512 RGB


def rgba(image=CAT) -> Image.Image:
    """The photo with a noisy alpha channel, so that compositing onto white shows."""
    a = np.array(image.convert("RGBA"))
    a[..., 3] = np.random.default_rng(0).integers(0, 256, a.shape[:2])
    return Image.fromarray(a)


def assert_pixels_equal(ours, theirs, where="", exact=True):
    """Bit-identical arrays (or max abs error <= TOLERANCES["pixels"] where exact=False); report the worst pixel."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{where}: shape {ours.shape} != reference {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{where}: dtype {ours.dtype} != reference {theirs.dtype}"
    err = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    bad = (ours != theirs) if exact else (err > TOLERANCES["pixels"])
    if bad.any():
        i = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"{where}: {int(bad.sum())} of {bad.size} values differ, max abs error "
                             f"{err.max():.3e} (rel {err.max() / max(np.abs(theirs).max(), 1e-30):.3e}) at "
                             f"{tuple(int(j) for j in i)}: {ours[i]!r} vs reference {theirs[i]!r}")


def compare(proc, ref, images, where, **kwargs):
    ours = proc(images, return_tensors="np", **kwargs)["pixel_values"]
    theirs = ref(images, return_tensors="np", **kwargs)["pixel_values"]
    assert_pixels_equal(ours, theirs, where)
    return ours


# ----------------------------------------------------------------------------------------------
# Photographs, modes, arrays, shapes


def test_photographs(proc, ref):
    pixels = compare(proc, ref, [CAT, ASTRONAUT], "photographs")
    assert pixels.shape == (2, 3, 224, 224) and pixels.dtype == np.float32


MODES = {
    "RGB": lambda: CAT, "RGBA": rgba, "L": lambda: CAT.convert("L"), "LA": lambda: rgba().convert("LA"),
    "1": lambda: CAT.convert("1"), "P": lambda: CAT.convert("P"), "P+transparency": lambda: _transparent_p(),
    "PA": lambda: rgba().convert("PA"), "RGBa": lambda: rgba().convert("RGBa"), "CMYK": lambda: CAT.convert("CMYK"),
    "YCbCr": lambda: CAT.convert("YCbCr"), "HSV": lambda: CAT.convert("HSV"), "LAB": lambda: CAT.convert("LAB"),
    "I;16": lambda: Image.fromarray(np.array(CAT.convert("L")).astype(np.uint16) * 257),
    "I": lambda: Image.fromarray(np.array(CAT.convert("L")).astype(np.int32) * 1000),
    "F": lambda: Image.fromarray(np.array(CAT.convert("L")).astype(np.float32) / 3.7),
}


def _transparent_p() -> Image.Image:
    p = CAT.convert("P")
    p.info["transparency"] = 5  # palette index 5 is see-through
    return p


@pytest.mark.parametrize("mode", MODES)
def test_every_mode(proc, ref, mode):
    image = MODES[mode]()
    assert image.mode == mode.split("+")[0]
    compare(proc, ref, image, mode)


ARRAYS = {
    "HWC uint8": lambda: np.array(CAT),
    "CHW uint8": lambda: np.array(CAT).transpose(2, 0, 1).copy(),
    "HWC 1 channel": lambda: np.array(CAT.convert("L"))[..., None],
    "CHW 1 channel": lambda: np.array(CAT.convert("L"))[None],
    "HWC RGBA (NumPy blend)": lambda: np.array(rgba()),
    "CHW RGBA": lambda: np.array(rgba()).transpose(2, 0, 1),
    "HWC uint16 small values": lambda: np.array(CAT).astype(np.uint16),
    "float whole numbers": lambda: np.array(CAT).astype(np.float32),
    "ambiguous 4x4x3 (read as CHW)": lambda: np.array(CAT.resize((4, 4))),
    "batch [B, H, W, C]": lambda: np.stack([np.array(CAT), np.array(CAT)[::-1]]),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_arrays(proc, ref, name):
    compare(proc, ref, ARRAYS[name](), name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_input_without_rescale(proc, ref, dtype):
    """Floats in [0, 1] pass through Pillow as uint8 (x * 255 truncated) and come back * (1/255)."""
    compare(proc, ref, np.array(CAT).astype(dtype) / 255, f"float {dtype}", do_rescale=False)
    compare(proc, ref, np.array(rgba()).astype(dtype) / 255, f"float RGBA {dtype}", do_rescale=False)


def test_torch_tensor(proc, ref):
    torch = reference("torch")
    compare(proc, ref, torch.from_numpy(np.array(CAT).transpose(2, 0, 1).copy()), "torch CHW")
    batch = torch.from_numpy(np.stack([np.array(CAT), np.array(CAT)[::-1].copy()]))
    compare(proc, ref, batch, "torch [B, H, W, C]")


@pytest.mark.parametrize("size", [(1000, 3), (3, 1000), (1, 1), (2, 2), (7, 300), (300, 7), (225, 224), (224, 225)])
def test_extreme_sizes(proc, ref, size):
    compare(proc, ref, CAT.resize(size), f"{size[0]}x{size[1]}")


def test_lists_nested_and_mixed(proc, ref):
    batch = [CAT, np.array(ASTRONAUT), CAT.convert("L"), np.array(CAT).transpose(2, 0, 1)]
    assert compare(proc, ref, batch, "mixed list").shape == (4, 3, 224, 224)
    nested = proc([[CAT, ASTRONAUT], [CAT]])["pixel_values"]
    assert_pixels_equal(nested, ref([[CAT, ASTRONAUT], [CAT]], return_tensors="np")["pixel_values"], "nested")


def test_grayscale_2d_array_is_accepted(proc):
    """An [H, W] array (which transformers refuses) reads as the L image it is."""
    gray = CAT.convert("L")
    assert_pixels_equal(proc(np.array(gray))["pixel_values"], proc(gray)["pixel_values"], "[H, W]")


# ----------------------------------------------------------------------------------------------
# Options and configurations

OPTIONS = {
    "shortest edge smaller than the crop (zero padding)": dict(size={"shortest_edge": 20},
                                                                crop_size={"height": 32, "width": 40}),
    "odd sizes": dict(size={"shortest_edge": 101}, crop_size={"height": 99, "width": 77}),
    "height and width": dict(size={"height": 50, "width": 70}, crop_size={"height": 48, "width": 64}),
    "shortest and longest edge": dict(size={"shortest_edge": 200, "longest_edge": 250}, do_center_crop=False),
    "max height and width": dict(size={"max_height": 100, "max_width": 120}, do_center_crop=False),
    "ints as old configs write them": dict(size=256, crop_size=240),
    "other mean and std": dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.25, 0.125]),
    "bilinear": dict(resample=2),
    "no normalize": dict(do_normalize=False),
    "no rescale": dict(do_rescale=False),
    "no resize": dict(do_resize=False),
    "no crop": dict(do_center_crop=False),
    "no RGB conversion": dict(do_convert_rgb=False),
    "rescale factor": dict(rescale_factor=1 / 127.5),
}


@pytest.mark.parametrize("name", OPTIONS)
def test_call_options(proc, ref, name):
    compare(proc, ref, [CAT], name, **OPTIONS[name])


CONFIGS = {
    "openai's preprocessor_config.json": {
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224},
    "336 pixels (ViT-L/14@336)": {"crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
                                  "image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True},
    "small, rectangular, other mean": {"size": {"shortest_edge": 64}, "crop_size": {"height": 48, "width": 40},
                                       "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.3, 0.4],
                                       "rescale_factor": 0.00392156862745098, "processor_class": "CLIPProcessor",
                                       "some_future_key": {"nested": [1, 2]}},
    "square size (use_square_size)": {"use_square_size": True, "crop_size": 200},
    "null flags are false": {"do_convert_rgb": None, "do_resize": None},
    "one mean and std for all channels": {"image_mean": 0.5, "image_std": 0.25},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_preprocessor_config(transformers, tmp_path, name):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(CONFIGS[name]))
    ours = CLIPImageProcessor.from_pretrained(tmp_path)
    theirs = transformers.CLIPImageProcessorPil.from_pretrained(str(tmp_path))
    compare(ours, theirs, [CAT, ASTRONAUT, CAT.resize((20, 9))], name)


def test_processor_config_json_written_by_transformers(transformers, tmp_path):
    """transformers 5 saves a processor's image settings inside processor_config.json."""
    theirs = transformers.CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 48, "width": 40})
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": theirs.to_dict(),
                                                                "processor_class": "CLIPProcessor"}))
    compare(CLIPImageProcessor.from_pretrained(tmp_path), theirs, [CAT], "processor_config.json")


def test_save_pretrained_round_trip(transformers, tmp_path):
    ours = CLIPImageProcessor(size=64, crop_size={"height": 48, "width": 40}, image_mean=[0.5, 0.5, 0.5])
    ours.save_pretrained(tmp_path)
    assert CLIPImageProcessor.from_pretrained(tmp_path).to_dict() == ours.to_dict()
    compare(ours, transformers.CLIPImageProcessorPil.from_pretrained(str(tmp_path)), [CAT], "saved by npclip")


def test_return_tensors_none_gives_a_list(proc, ref):
    ours, theirs = proc([CAT, ASTRONAUT], return_tensors=None), ref([CAT, ASTRONAUT])
    assert isinstance(ours.pixel_values, list) and len(ours.pixel_values) == 2
    for a, b in zip(ours.pixel_values, theirs["pixel_values"]):
        assert_pixels_equal(a, b, "list")


# ----------------------------------------------------------------------------------------------
# Files


def test_paths_as_transformers_loads_them(proc, ref, tmp_path):
    """A path is opened, turned by its EXIF orientation, and converted to RGB (alpha dropped)."""
    png = tmp_path / "rgba.png"
    rgba().save(png)
    jpeg = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    CAT.save(jpeg, exif=exif, quality=90)
    paths = [os.path.join(DATA, "chelsea.png"), str(png), str(jpeg)]
    compare(proc, ref, paths, "paths")
    assert proc(jpeg)["pixel_values"].shape == (1, 3, 224, 224)  # pathlib.Path works too


# ----------------------------------------------------------------------------------------------
# The steps, each usable alone


def test_steps_compose_to_the_processor(proc):
    image = to_channels_first(rgba())  # [3, H, W] uint8
    assert image.shape == (3, 300, 451) and image.dtype == np.uint8
    assert np.array_equal(convert_rgb(rgba()), np.moveaxis(image, 0, -1))
    assert resize_output_size(300, 451, 224) == (224, 336)
    resized = resize(image, 224)  # [3, 224, 336]
    cropped = center_crop(resized, 224)  # [3, 224, 224]
    pixels = rescale_and_normalize(cropped)
    assert resized.shape == (3, 224, 336) and cropped.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert_pixels_equal(pixels[None], proc(rgba())["pixel_values"], "steps")


def test_center_crop_pads_small_images_with_zeros():
    image = np.full((3, 2, 3), 7, dtype=np.uint8)
    out = center_crop(image, {"height": 4, "width": 4})
    assert out.shape == (3, 4, 4) and out.sum() == 7 * 3 * 6
    assert np.array_equal(out[0], [[0, 0, 0, 0], [0, 7, 7, 7], [0, 7, 7, 7], [0, 0, 0, 0]])


# ----------------------------------------------------------------------------------------------
# Errors a user can act on


def test_path_that_is_not_an_image(proc, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt: not an image"):
        proc(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        proc(str(tmp_path / "missing.png"))


def test_decompression_bomb_names_the_file(proc, tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2 x 1000: Pillow refuses
    with pytest.raises(ValueError, match="big.png: refused by Pillow's decompression-bomb guard"):
        proc(str(path))


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "empty batch"),
    (None, ValueError, "images is None"),
    (np.zeros((5, 7, 2), np.uint8), ValueError, r"shape \(5, 7, 2\)"),
    (np.zeros((2, 5, 7, 9, 3), np.uint8), ValueError, "shape"),
    ([CAT, np.zeros(5, np.uint8)], ValueError, r"images\[1\] has shape \(5,\)"),
    ([CAT, 3.5], TypeError, r"images\[1\] is a float"),
    (np.zeros((4, 4, 3), dtype=bool), TypeError, "dtype bool"),
    (np.full((8, 8, 3), 3.5), ValueError, r"images\[0\]: float pixel values must lie in \[0, 1\]"),
])
def test_bad_images(proc, bad, error, match):
    with pytest.raises(error, match=match):
        proc(bad)


def test_bad_options(proc, tmp_path):
    with pytest.raises(TypeError, match="unknown image processor option"):
        proc(CAT, do_magic=True)
    with pytest.raises(ValueError, match="return_tensors='pt'"):
        proc(CAT, return_tensors="pt")
    with pytest.raises(ValueError, match="different shapes"):
        proc([CAT, ASTRONAUT], do_center_crop=False)
    with pytest.raises(ValueError, match="size must have"):
        proc(CAT, size={"longest_edge": 3})
    with pytest.raises(ValueError, match="image_mean has 2 values"):
        proc(CAT, image_mean=[0.5, 0.5])
    with pytest.raises(FileNotFoundError, match="no preprocessor_config.json"):
        CLIPImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        CLIPImageProcessor.from_pretrained(tmp_path / "missing")
