"""``npclip bench`` (npclip/bench.py) on a tiny whole checkpoint: what it measures and prints.

Only what the numbers are and how they are derived is tested here, never how large they are:
speed goals live in docs/performance.md, measured on a quiet machine.
"""

import json

import numpy as np
import pytest

from npclip import bench
from npclip.cli import main


def _bench(capsys, *args):
    rc = main(["bench", *args, "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_bench_measures_both_libraries_on_the_checkpoints_own_shapes(whole, capsys):
    results = _bench(capsys, "--model", whole, "--repeat", "1", "--image-batches", "1", "2", "--text-batch", "3",
                     "--skip-subprocess")
    assert results["reference"].startswith("transformers ") and results["dtype"] == "float32"
    cells = {c["what"]: c for c in results["cells"]}
    longest = bench.text_batch(3)[0].shape[1]
    assert list(cells) == ["image features, batch 1", "image features, batch 2",
                           "text features, batch 3, padded to 77 (T=77)",
                           f"text features, batch 3, padded to longest (T={longest})"]
    for c in cells.values():
        assert c["npclip"] > 0 and c["transformers"] > 0
        assert c["ratio"] == pytest.approx(c["npclip"] / c["transformers"])
    assert "blas" in results["machine"]


def test_bench_alone_reports_cold_start_and_peak_memory(whole, capsys):
    results = _bench(capsys, "--model", whole, "--repeat", "1", "--image-batches", "1", "--text-batch", "2",
                     "--no-reference", "--dtype", "float16")
    assert results["reference"] is None and results["dtype"] == "float16"
    cells = {c["what"]: c for c in results["cells"]}
    cold = cells["cold start: classify 1 image, 3 labels (CLI vs pipeline)"]
    memory = cells["peak memory: image features, batch 32"]
    assert cold["unit"] == "s" and cold["npclip"] > 0 and "transformers" not in cold
    assert memory["unit"] == "MiB" and 10 < memory["npclip"] < 10_000


@pytest.mark.parametrize("how", ["option", "environment"])
def test_bench_refuses_the_cupy_backend_clearly(capsys, monkeypatch, how):
    args = ["bench", "--no-reference"]
    if how == "option":
        args += ["--backend", "cupy"]
    else:
        monkeypatch.setenv("NPCLIP_BACKEND", "cupy")
    assert main(args) == 2
    assert "bench_gpu.py" in capsys.readouterr().err


def test_bench_inputs_look_like_tokenizer_output():
    ids, mask = bench.text_batch(50, vocab=99, pad_to=16, max_length=16)
    assert ids.shape == mask.shape == (50, 16) and ids.max() < 99
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 7 and lengths.max() <= 16
    rows = np.arange(50)
    assert (ids[:, 0] == 97).all() and (ids[rows, lengths - 1] == 98).all()  # bos first, eos last
    assert ((ids == 98) == (np.arange(16)[None] >= lengths[:, None] - 1)).all()  # then eos padding only
