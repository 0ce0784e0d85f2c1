"""CLIPProcessor against transformers' CLIPProcessor (with its PIL-backend image processor)."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from conftest import reference
from PIL import Image

from npclip.image_processing import CLIPImageProcessor
from npclip.processing import CLIPProcessor
from npclip.tokenizer import BPE_PATH, BatchEncoding, CLIPTokenizer

DATA = os.path.join(os.path.dirname(__file__), "data")
TEXTS = ["a photo of a cat", "a photo of an astronaut", "DON'T PANIC <|endoftext|> 🚀", "word " * 100]




def photo(name) -> Image.Image:
    with Image.open(os.path.join(DATA, name)) as image:
        return image.copy()


CAT, ASTRONAUT = photo("chelsea.png"), photo("astronaut.png")


@pytest.fixture(scope="session")
def ref_dir(tmp_path_factory):
    """vocab.json + merges.txt + preprocessor_config.json, the files of openai's hub checkpoints."""
    d = tmp_path_factory.mktemp("clip-processor")
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in bs] + [chr(256 + n) for n in range(256 - len(bs))]
    merges = gzip.open(BPE_PATH).read().decode("utf-8").split("\n")[1:48895]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    (d / "preprocessor_config.json").write_text(json.dumps({"size": 224, "crop_size": 224, "resample": 3,
                                                            "feature_extractor_type": "CLIPFeatureExtractor"}))
    return d


@pytest.fixture(scope="session")
def ref(ref_dir):
    transformers = reference("transformers")
    transformers.logging.set_verbosity_error()
    return transformers.CLIPProcessor(image_processor=transformers.CLIPImageProcessorPil.from_pretrained(str(ref_dir)),
                                      tokenizer=transformers.CLIPTokenizer.from_pretrained(str(ref_dir)))


def assert_same(ours, theirs):
    assert set(ours) == set(theirs), f"keys {sorted(ours)} != reference {sorted(theirs)}"
    for key in theirs:
        a, b = ours[key], theirs[key]
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), key
        else:
            assert a == b, key


@pytest.mark.parametrize("kwargs", [
    dict(text=TEXTS, images=[CAT, ASTRONAUT], padding=True),
    dict(text=TEXTS, images=CAT, padding="max_length", truncation=True),
    dict(text=TEXTS[0], images=ASTRONAUT),
    dict(text=TEXTS, padding=True, truncation=True, max_length=8),
    dict(images=[CAT, ASTRONAUT, CAT.convert("L")]),
])
def test_matches_transformers(ref_dir, ref, kwargs):
    ours = CLIPProcessor.from_pretrained(ref_dir)(return_tensors="np", **kwargs)
    theirs = ref(return_tensors="np", **kwargs)
    assert_same(ours, theirs)


def test_default_parts_and_lists(ref):
    """CLIPProcessor() uses the shipped vocabulary; without return_tensors="np" the text gives lists."""
    processor = CLIPProcessor()
    assert_same(processor(text="a cat", return_tensors=None), ref(text="a cat"))
    out = processor(text=["a cat", "a dog"], images=CAT, padding=True)
    assert isinstance(out, BatchEncoding) and out.input_ids.dtype == np.int64 and out.pixel_values.shape == (1, 3, 224, 224)
    assert processor.model_input_names == ["pixel_values", "input_ids", "attention_mask"]


def test_from_pretrained_of_a_transformers_save(ref, tmp_path):
    """transformers 5 writes processor_config.json (image settings inside) and tokenizer.json."""
    ref.save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").exists() and not (tmp_path / "preprocessor_config.json").exists()
    ours = CLIPProcessor.from_pretrained(tmp_path)
    assert_same(ours(text=TEXTS, images=[CAT], padding=True), ref(text=TEXTS, images=[CAT], padding=True,
                                                                  return_tensors="np"))


def test_save_pretrained_round_trip(tmp_path):
    processor = CLIPProcessor(CLIPImageProcessor(size=64, crop_size=48), CLIPTokenizer(model_max_length=16))
    processor.save_pretrained(tmp_path)
    loaded = CLIPProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    assert loaded.tokenizer.model_max_length == 16
    assert_same(loaded(text=TEXTS, images=CAT, padding=True, truncation=True),
                processor(text=TEXTS, images=CAT, padding=True, truncation=True))


def test_decode(ref):
    processor = CLIPProcessor()
    ids = ref(text=TEXTS, padding=True)["input_ids"]
    for skip in (False, True):
        assert processor.batch_decode(ids, skip_special_tokens=skip) == ref.batch_decode(ids, skip_special_tokens=skip)
        assert processor.decode(ids[0], skip_special_tokens=skip) == ref.decode(ids[0], skip_special_tokens=skip)


def test_inputs_unpack_into_a_model_call():
    out = CLIPProcessor()(text=["a cat"], images=CAT, padding=True)
    seen = (lambda input_ids, attention_mask, pixel_values: (input_ids.shape, pixel_values.shape))(**out)
    assert seen == ((1, 4), (1, 3, 224, 224))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="needs text, images, or both"):
        CLIPProcessor()()
    with pytest.raises(TypeError, match="by name"):
        CLIPProcessor()("a photo of a cat", CAT)
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        CLIPProcessor.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="unknown image processor option"):
        CLIPProcessor()(images=CAT, do_magic=True)
