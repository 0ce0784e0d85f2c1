"""The command line, run for real: ``python -m npclip ...`` in a subprocess, on a whole random-weight
checkpoint (tests/_checkpoints.py) and the photographs of tests/data.

Every run gets HF_HUB_OFFLINE=1 and an empty HF_HUB_CACHE unless a test says otherwise, so nothing
can reach the network.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _fakehub import FakeHub
from conftest import DATA, assert_close

CHELSEA = os.path.join(DATA, "chelsea.png")
ASTRONAUT = os.path.join(DATA, "astronaut.png")
LABELS = ["cat", "dog", "a photo of an astronaut"]



@pytest.fixture(scope="module")
def parts(whole):
    """(model, tokenizer, image_processor) of the whole checkpoint, in this process."""
    from npclip.pipelines import load_model

    return load_model(whole)


@pytest.fixture
def npclip(tmp_path):
    """npclip(*args, env=None, stdin=None) -> CompletedProcess (text), offline with an empty cache."""

    def run(*args, env=None, stdin=None):
        full = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf-cache"), **(env or {})}
        return subprocess.run([sys.executable, "-m", "npclip", *args], capture_output=True, text=True, env=full,
                              input=stdin, timeout=120)

    return run


def one_error_line(result, code, message):
    """Exit code, and stderr one line 'npclip: error: ...' containing message, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("npclip: warning:")]
    assert len(lines) == 1 and lines[0].startswith("npclip: error: "), result.stderr
    assert message in lines[0], (message, lines[0])
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------
# classify


def test_classify_json_equals_the_pipeline(npclip, whole):
    from npclip.pipelines import pipeline

    r = npclip("classify", CHELSEA, ASTRONAUT, "--labels", *LABELS, "--model", whole, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    expected = pipeline(model=whole)([CHELSEA, ASTRONAUT], candidate_labels=LABELS)
    assert [g["image"] for g in got] == [CHELSEA, ASTRONAUT]
    for g, e in zip(got, expected):
        assert [s["label"] for s in g["scores"]] == [s["label"] for s in e]
        assert_close(np.array([s["score"] for s in g["scores"]]), np.array([s["score"] for s in e]), where="cli")


def test_classify_text_output_and_top_k(npclip, whole):
    r = npclip("classify", CHELSEA, "--labels", *LABELS, "-m", whole, "--top-k", "2", "--template", "{}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == CHELSEA and len(lines) == 3
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and all(line.startswith("  0.") for line in lines[1:])


def test_hub_id_downloads_once_then_works_offline(npclip, whole, tmp_path):
    hub = FakeHub()
    hub.add_directory("org/tiny", whole, extra={"pytorch_model.bin": b"never fetched"})
    try:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "shared")}
        online = npclip("classify", CHELSEA, "--labels", *LABELS, "--model", "org/tiny", "--json", env=env)
        assert online.returncode == 0, online.stderr
        assert "pytorch_model.bin" not in hub.downloads()
        unknown = npclip("classify", CHELSEA, "--labels", "cat", "--model", "org/unknown", env=env)
        one_error_line(unknown, 1, "org/unknown: no such local directory, and no such model on the Hugging Face hub")
    finally:
        hub.close()
    offline = npclip("classify", CHELSEA, "--labels", *LABELS, "--model", "org/tiny", "--json",
                     env={"HF_HUB_CACHE": str(tmp_path / "shared")})
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout) == json.loads(online.stdout)


def test_long_label_warns_and_still_classifies(npclip, whole):
    long = " ".join(["cat"] * 90)
    r = npclip("classify", CHELSEA, "--labels", long, "dog", "-m", whole)
    assert r.returncode == 0, r.stderr
    assert "npclip: warning: label 'cat cat" in r.stderr and "truncated to 77" in r.stderr


# ----------------------------------------------------------------------------------------------
# embed and similarity


def features(parts, kind, items):
    from npclip.cli import embed

    return embed(*parts, kind, items)


def test_embed_images_with_progress(npclip, parts, whole, tmp_path):
    out = tmp_path / "images.npy"
    r = npclip("embed", "--images", CHELSEA, ASTRONAUT, "--output", str(out), "-m", whole, "--batch-size", "1",
               "--progress")
    assert r.returncode == 0, r.stderr
    assert "embedding images 1/2" in r.stderr and "embedding images 2/2" in r.stderr
    array = np.load(out)
    expected = features(parts, "image", [CHELSEA, ASTRONAUT])
    assert_close(array, expected / np.linalg.norm(expected, axis=-1, keepdims=True), where="embed --images")
    meta = json.loads((tmp_path / "images.json").read_text())
    assert meta["inputs"] == [CHELSEA, ASTRONAUT] and meta["kind"] == "image" and meta["normalized"] is True
    assert meta["shape"] == [2, 19] and f"wrote {out}" in r.stdout


def test_embed_image_dir_sorted_by_name(npclip, whole, tmp_path):
    r = npclip("embed", "--image-dir", DATA, "--output", str(tmp_path / "dir"), "-m", whole)
    assert r.returncode == 0, r.stderr
    assert "embedding" not in r.stderr  # no progress bar when stderr is not a terminal
    meta = json.loads((tmp_path / "dir.json").read_text())
    assert meta["inputs"] == [ASTRONAUT, CHELSEA]
    assert np.load(tmp_path / "dir.npy").shape == (2, 19)


def test_embed_texts_and_text_file(npclip, parts, whole, tmp_path):
    texts = ["a photo of a cat", "a diagram", "x" * 3]
    r = npclip("embed", "--texts", *texts, "--output", str(tmp_path / "t.npy"), "-m", whole, "--no-normalize")
    assert r.returncode == 0, r.stderr
    assert_close(np.load(tmp_path / "t.npy"), features(parts, "text", texts), where="embed --texts")
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    r = npclip("embed", "--text-file", str(tmp_path / "texts.txt"), "-o", str(tmp_path / "f.npy"), "-m", whole,
               "--no-normalize")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), np.load(tmp_path / "t.npy"))
    assert json.loads((tmp_path / "f.json").read_text())["inputs"] == texts
    r = npclip("embed", "--text-file", "-", "-o", str(tmp_path / "s.npy"), "-m", whole, "--no-normalize",
               stdin="\n".join(texts))
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "t.npy"))


def test_similarity_table_and_json(npclip, parts, whole):
    texts = ["a cat", "an astronaut"]
    r = npclip("similarity", "--images", CHELSEA, ASTRONAUT, "--texts", *texts, "-m", whole, "--softmax")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["cosine", "similarity"] and lines[0].endswith("an astronaut")
    cosine = np.array([[float(v) for v in line.split()[-2:]] for line in lines[1:3]])
    img, txt = features(parts, "image", [CHELSEA, ASTRONAUT]), features(parts, "text", texts)
    expected = (img / np.linalg.norm(img, axis=-1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=-1,
                                                                                          keepdims=True)).T
    np.testing.assert_allclose(cosine, expected, atol=6e-5)  # printed with 4 decimals
    assert lines[4].startswith("softmax over texts")
    r = npclip("similarity", "--images", CHELSEA, ASTRONAUT, "--texts", *texts, "-m", whole, "--softmax", "--json")
    out = json.loads(r.stdout)
    assert_close(np.array(out["cosine"]), expected, where="similarity --json")
    np.testing.assert_allclose(np.sum(out["softmax"], axis=1), 1.0)


# ----------------------------------------------------------------------------------------------
# Failures: one line, the right exit code


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "notes.png"
    path.write_text("not an image")
    return str(path)


@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory, whole):
    directory = tmp_path_factory.mktemp("pickle")
    (directory / "config.json").write_text(open(os.path.join(whole, "config.json")).read())
    (directory / "pytorch_model.bin").write_bytes(b"\x80\x02")
    return str(directory)


FAILURES = {
    "missing file": (1, ["classify", "nope.png", "--labels", "cat"], "nope.png: no such file"),
    "not an image": (1, ["classify", "{bad}", "--labels", "cat"], "notes.png: not an image"),
    "unknown model dir": (1, ["classify", CHELSEA, "--labels", "cat", "--model", "./no/such/dir"],
                          "./no/such/dir: no such checkpoint directory"),
    "offline without cache": (1, ["classify", CHELSEA, "--labels", "cat", "--model", "org/model"],
                              "org/model: offline (HF_HUB_OFFLINE or local_files_only) and it is not in the Hugging "
                              "Face cache"),
    "pickle weights": (1, ["classify", CHELSEA, "--labels", "cat", "--model", "{pickle}"], "never unpickles"),
    "empty label": (2, ["classify", CHELSEA, "--labels", "cat", " "], "empty label ' '"),
    "no labels": (2, ["classify", CHELSEA, "--labels"], "argument --labels/-l: expected at least one argument"),
    "template without {}": (2, ["classify", CHELSEA, "--labels", "cat", "--template", "a photo"], "has no {}"),
    "bad option": (2, ["classify", CHELSEA, "--labels", "cat", "--bogus"], "unrecognized arguments: --bogus"),
    "bad top-k": (2, ["classify", CHELSEA, "--labels", "cat", "--top-k", "0"], "must be at least 1, not 0"),
    "bad backend": (2, ["--backend", "jax", "classify", CHELSEA, "--labels", "cat"], "invalid choice: 'jax'"),
    "no command": (2, [], "no command given: choose one of classify, embed, similarity"),
    "unknown command": (2, ["classfy"], "invalid choice: 'classfy'"),
    "embed without input": (2, ["embed", "--output", "x.npy"], "one of the arguments --images --image-dir"),
    "embed two inputs": (2, ["embed", "--images", CHELSEA, "--texts", "a", "--output", "x.npy"], "not allowed with"),
    "embed empty dir": (1, ["embed", "--image-dir", "{empty}", "--output", "x.npy"], "no image files"),
    "embed missing text file": (1, ["embed", "--text-file", "nope.txt", "--output", "x.npy"],
                                "nope.txt: No such file or directory"),
    "embed output dir missing": (1, ["embed", "--texts", "a", "--output", "no/dir/x.npy", "-m", "{whole}"],
                                 "no/dir: no such directory"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_print_one_line_and_exit_non_zero(npclip, case, not_an_image, pickle_only, whole, tmp_path):
    code, args, message = FAILURES[case]
    args = [a.format(bad=not_an_image, pickle=pickle_only, whole=whole, empty=str(tmp_path)) if "{" in a and
            a != "{}" else a for a in args]
    one_error_line(npclip(*args), code, message)


def test_cupy_backend_without_cupy(npclip, whole):
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed")
    r = npclip("--backend", "cupy", "classify", CHELSEA, "--labels", "cat", "-m", whole)
    one_error_line(r, 1, "backend='cupy' needs CuPy")


def test_debug_shows_the_traceback(npclip):
    r = npclip("--debug", "classify", "nope.png", "--labels", "cat")
    assert r.returncode == 1 and "Traceback" in r.stderr and r.stderr.rstrip().endswith("nope.png: no such file")


# ----------------------------------------------------------------------------------------------
# Help, entry points, cold start


def test_help_has_examples(npclip):
    r = npclip("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "exit codes:" in r.stdout
    for command in ("classify", "embed", "similarity"):
        r = npclip(command, "--help")
        assert r.returncode == 0 and "examples:" in r.stdout and "--backend" in r.stdout, command


def test_console_script_and_global_options_after_the_command(whole):
    script = os.path.join(os.path.dirname(sys.executable), "npclip")
    if not os.path.exists(script):
        pytest.skip("npclip is not installed as a console script")
    r = subprocess.run([script, "classify", CHELSEA, "--labels", "cat", "-m", whole, "--dtype", "float16"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and r.stdout.splitlines()[1] == "  1.0000  cat", r.stderr


def test_cold_start_imports_nothing_heavy():
    code = ("import sys; from npclip import cli; cli.build_parser(['classify']); "
            "print(sorted(m for m in ('PIL', 'torch', 'transformers', 'huggingface_hub', 'safetensors', 'regex', "
            "'npclip.pipelines', 'npclip.tokenizer', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
