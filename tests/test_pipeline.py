"""The zero-shot pipeline against transformers' pipeline("zero-shot-image-classification"), and image loading.

Scores are compared on a whole random-weight checkpoint (tests/_checkpoints.py) and the real
photographs of tests/data; URLs are served by a local http.server on loopback.
"""

import http.server
import os
import threading
import time

import numpy as np
import pytest

from conftest import DATA, assert_close, reference
from npclip.pipelines import ImageLoadError, ZeroShotImageClassificationPipeline, load_image, pipeline

CHELSEA = os.path.join(DATA, "chelsea.png")
ASTRONAUT = os.path.join(DATA, "astronaut.png")
LABELS = ["cat", "dog", "car", "a photo of an astronaut", "rocket"]



@pytest.fixture(scope="module")
def ours(whole):
    return pipeline("zero-shot-image-classification", model=whole)


@pytest.fixture(scope="module")
def theirs(whole):
    transformers = reference("transformers")
    return transformers.pipeline("zero-shot-image-classification", model=whole)


def check_same(got, expected, where):
    """Same labels in the same order, scores within the float32 tolerance."""
    if got and isinstance(got[0], list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            check_same(g, e, f"{where}[{i}]")
        return
    assert [r["label"] for r in got] == [r["label"] for r in expected], f"{where}: {got} vs {expected}"
    assert all(isinstance(r["score"], float) for r in got), where
    assert_close(np.array([r["score"] for r in got]), np.array([r["score"] for r in expected]), where=where)


CASES = {
    "path": (CHELSEA, dict(candidate_labels=LABELS)),
    "two images": ([CHELSEA, ASTRONAUT], dict(candidate_labels=LABELS)),
    "template": (ASTRONAUT, dict(candidate_labels=LABELS, hypothesis_template="{}")),
    "one label": (CHELSEA, dict(candidate_labels=["cat"])),
    "equal scores keep the labels' order": (CHELSEA, dict(candidate_labels=["dog", "cat", "dog", "cat"])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_scores_equal_transformers(ours, theirs, case):
    image, kwargs = CASES[case]
    check_same(ours(image, **kwargs), theirs(image, **kwargs), case)


def test_pil_image_and_hwc_array(ours, theirs):
    from PIL import Image

    pil = Image.open(CHELSEA)
    expected = theirs(pil, candidate_labels=LABELS)
    check_same(ours(pil, candidate_labels=LABELS), expected, "PIL image")
    check_same(ours(np.asarray(pil.convert("RGB")), candidate_labels=LABELS), expected, "HWC uint8 array")
    check_same(ours(images=[pil], candidate_labels=LABELS), [expected], "images=")


def test_top_k_and_batch_size(ours):
    full = ours([CHELSEA, ASTRONAUT, CHELSEA], candidate_labels=LABELS)
    best = ours([CHELSEA, ASTRONAUT, CHELSEA], candidate_labels=LABELS, top_k=2, batch_size=2)
    check_same(best, [r[:2] for r in full], "top_k=2, batch_size=2")  # batch sizes change float32 sums a little
    check_same(full[2], full[0], "the same image twice")


def test_labels_are_encoded_once_and_scores_are_the_models_logits(whole, monkeypatch):
    """Two calls with the same labels, three batches of images each: one text forward. Each row of scores
    is the softmax of CLIPModel's logits_per_image."""
    from PIL import Image

    clip = pipeline("zero-shot-image-classification", model=whole)
    images = [Image.open(p) for p in (CHELSEA, ASTRONAUT, CHELSEA, ASTRONAUT, CHELSEA)]
    calls = []
    original = clip.model.get_text_features
    monkeypatch.setattr(clip.model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = clip(images, candidate_labels=LABELS, batch_size=2)
    assert clip(images, candidate_labels=LABELS, batch_size=2) == first and calls == [1]
    clip(images[:1], candidate_labels=LABELS[:2])
    assert calls == [1, 1]  # other labels are encoded
    scores = clip.scores(images, clip.label_features(LABELS), batch_size=2)
    assert scores.shape == (5, len(LABELS)) and calls == [1, 1, 1]
    ids, mask = clip.tokenizer([f"This is a photo of {label}." for label in LABELS], padding=True,
                               return_tensors="np").values()
    pixels = clip.image_processor(images, return_tensors="np")["pixel_values"]
    logits = np.asarray(clip.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits_per_image)
    want = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert_close(scores, want / want.sum(axis=1, keepdims=True), where="pipeline scores vs CLIPModel.forward")


def test_long_label_is_truncated_with_a_warning(ours):
    long = " ".join(["cat"] * 100)
    with pytest.warns(UserWarning, match=r"label 'cat cat .*\.\.\.' is 102 tokens long, more than the model's 77: "
                                         r"truncated to 77"):
        got = ours(CHELSEA, candidate_labels=[long, "dog"], hypothesis_template="{}")
    # truncation keeps the start and the end-of-text token: the same ids as 75 cats
    expected = ours(CHELSEA, candidate_labels=[" ".join(["cat"] * 75), "dog"], hypothesis_template="{}")
    assert_close(np.array([r["score"] for r in got]), np.array([r["score"] for r in expected]), where="truncated")


def test_model_object_needs_its_tokenizer_and_image_processor(ours, whole):
    clip = pipeline(model=ours.model, tokenizer=whole, image_processor=ours.image_processor)
    assert isinstance(clip, ZeroShotImageClassificationPipeline)
    assert clip(CHELSEA, candidate_labels=LABELS) == ours(CHELSEA, candidate_labels=LABELS)
    with pytest.raises(ValueError, match="also pass tokenizer= and image_processor="):
        pipeline(model=ours.model)


def test_importing_the_pipeline_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, npclip.pipelines; print(sorted(m for m in ('PIL', 'torch', 'transformers', "
            "'huggingface_hub', 'npclip.tokenizer', 'npclip.image_processing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_task_lists_the_supported_ones():
    with pytest.raises(ValueError, match="unknown task 'image-classification': npclip supports "
                                         "'zero-shot-image-classification'"):
        pipeline("image-classification", model="anything")
    with pytest.raises(TypeError, match="device.*backend='numpy' or 'cupy'"):
        pipeline("zero-shot-image-classification", model="anything", device=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(candidate_labels=[]), "candidate_labels must be a non-empty list"),
    (dict(candidate_labels=None), "candidate_labels must be a non-empty list"),
    (dict(candidate_labels=["cat", " "]), "every candidate label must be a non-empty string, not ' '"),
    (dict(candidate_labels=["cat", 3]), "every candidate label must be a non-empty string, not 3"),
    (dict(candidate_labels=["cat"], hypothesis_template="a photo"), "must contain {} where the label goes"),
    (dict(candidate_labels=["cat"], hypothesis_template="{} {label}"), "hypothesis_template '{} {label}'"),
    (dict(candidate_labels=["cat"], top_k=0), "top_k must be a positive integer"),
])
def test_bad_arguments_are_clear_errors(ours, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        ours(CHELSEA, **kwargs)


# ----------------------------------------------------------------------------------------------
# Images: files, arrays, URLs


def test_load_image_matches_transformers_with_exif_rotation(tmp_path):
    transformers = reference("transformers")
    from PIL import Image

    rotated = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.open(CHELSEA).convert("RGB").save(rotated, exif=exif)
    ours_img = load_image(rotated)
    assert ours_img.mode == "RGB" and ours_img.size == (300, 451)
    np.testing.assert_array_equal(np.asarray(ours_img), np.asarray(transformers.image_utils.load_image(rotated)))


def test_unreadable_images_are_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(open(CHELSEA, "rb").read()[:2000])
    for source, message in [(str(tmp_path / "nope.png"), "nope.png: no such file"),
                            (str(tmp_path), "a directory, not an image"),
                            (str(text), "notes.txt: not an image"),
                            (str(truncated), "cut.png: not a readable image")]:
        with pytest.raises(ImageLoadError, match=message):
            load_image(source)
    with pytest.raises(TypeError, match="an image must be a path, an http"):
        load_image(np.zeros((4, 4, 3), np.uint8))


class ImageServer(http.server.BaseHTTPRequestHandler):
    """/chelsea.png, /big (claims 10 GB), /endless (no length, 1 MB chunks), /slow (answers after 3 s), else 404."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/chelsea.png":
            data = open(CHELSEA, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 2**30))
            self.end_headers()
        elif self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\0" * 2**20)
            except OSError:
                pass
        elif self.path == "/slow":
            time.sleep(3)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_image_equals_the_file(server, ours):
    np.testing.assert_array_equal(np.asarray(load_image(server + "/chelsea.png")), np.asarray(load_image(CHELSEA)))
    assert ours(server + "/chelsea.png", candidate_labels=LABELS) == ours(CHELSEA, candidate_labels=LABELS)


@pytest.mark.parametrize("path, kwargs, message", [
    ("/missing.png", {}, r"missing.png: HTTP error 404 \(Not Found\)"),
    ("/big", {}, "/big: 10737418240 bytes, more than the limit of 52428800"),
    ("/endless", dict(max_bytes=3 * 2**20), "/endless: more than the limit of 3145728 bytes"),
    ("/slow", dict(timeout=0.5), "/slow: timed out after 0.5 s"),
])
def test_url_failures_are_clear_errors(server, path, kwargs, message):
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match=message):
        load_image(server + path, **kwargs)
    assert time.monotonic() - start < 2.5


def test_unreachable_url():
    import socket

    with socket.socket() as s:  # a port nobody listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageLoadError, match="cannot fetch"):
        load_image(f"http://127.0.0.1:{port}/x.png", timeout=2)
