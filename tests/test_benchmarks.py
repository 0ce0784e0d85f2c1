"""The benchmark scripts run, on a tiny checkpoint, and count what they claim to count."""

import importlib.util
import os

import pytest

from checkpoints import TINY_VISION
from npclip import CLIPModel

HERE = os.path.dirname(__file__)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "..", "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_products_counts_the_forward_pass_products(checkpoints, capsys):
    bench_products = _script("bench_products")
    directory = checkpoints("tiny")
    model = CLIPModel.from_pretrained(directory)
    _, flops = bench_products.products(model, batch=3)
    D, F, P, layers = (TINY_VISION[k] for k in ("hidden_size", "intermediate_size", "patch_size", "num_hidden_layers"))
    patches = (TINY_VISION["image_size"] // P) ** 2
    N = patches + 1
    per_token = 2 * (3 * D * D + D * D + 2 * D * F)  # q/k/v, out_proj, fc1, fc2
    want = 2 * 3 * patches * 3 * P * P * D + (layers - 1) * 3 * N * per_token
    want += 2 * 3 * N * 3 * D * D + 3 * (per_token - 2 * 3 * D * D)  # last layer: q/k/v for all, the rest for class tokens
    assert flops == want
    assert bench_products.main(["--model", str(directory), "--batch", "2", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "matrix products alone" in out and "share of the forward pass" in out


@pytest.mark.parametrize("name", ["bench_products", "bench_preprocess", "bench_gpu"])
def test_benchmark_scripts_import_without_a_gpu(name):
    assert callable(_script(name).main)


def test_bench_gpu_breakdown_runs_through_the_emulator(checkpoints, monkeypatch, capsys):
    """bench_gpu --breakdown's stage list runs npclip's CuPy path (here the emulator, with a stand-in for
    cupyx.profiler.benchmark) and prints one line per stage."""
    import sys
    import types

    import numpy as np

    import _cupy_emulator
    from npclip import CLIPVisionModelWithProjection
    from parity import pixel_inputs

    cupy = _cupy_emulator.install(monkeypatch)
    calls = []

    def benchmark(fn, n_repeat, n_warmup):
        calls.append(fn())
        return types.SimpleNamespace(gpu_times=np.full(n_repeat, 1e-3), cpu_times=np.full(n_repeat, 2e-3))

    profiler = types.ModuleType("cupyx.profiler")
    profiler.benchmark = benchmark
    monkeypatch.setitem(sys.modules, "cupyx", types.ModuleType("cupyx"))
    monkeypatch.setitem(sys.modules, "cupyx.profiler", profiler)
    model = CLIPVisionModelWithProjection.from_pretrained(checkpoints("tiny"), backend="cupy")
    _script("bench_gpu").stage_times(model, cupy.asarray(pixel_inputs(TINY_VISION)), n_repeat=4)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("## npclip stages") and len(out) == 1 + len(calls) == 18
    assert all(line.endswith("1.000 (2.000)") for line in out[1:])
    whole_layer, whole_forward = calls[-2], calls[-1]
    assert whole_layer[0].shape == calls[0].shape  # the layer keeps the input's shape
    assert whole_forward.shape == (pixel_inputs(TINY_VISION).shape[0], TINY_VISION["projection_dim"])
