"""Shared test helpers: the reference import rule, one comparison function, random checkpoints.

The reference (torch + transformers) is a test dependency. Without it the parity tests skip on a
developer's machine, but fail when the CI environment variable is set, so that CI can never go
green by skipping them.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from tolerances import TOLERANCES

IN_CI = bool(os.environ.get("CI"))
DATA = os.path.join(os.path.dirname(__file__), "data")
# The backends the parity tests run on (comma-separated): "numpy", "cupy" (skips where no GPU is usable),
# "cupy-emulated" (the CuPy code path on the CPU, kernels emulated: tests/_cupy_emulator.py).
BACKENDS = [b.strip() for b in os.environ.get("NPCLIP_TEST_BACKENDS", "numpy,cupy").split(",") if b.strip()]


def reference(module="transformers"):
    """Import a reference library: skip without it locally, fail without it under CI."""
    if IN_CI:
        return importlib.import_module(module)
    return pytest.importorskip(module)


def assert_close(actual, expected, kind="float32", where=""):
    """Compare arrays with the bound of TOLERANCES[kind]; report max abs/rel error and where."""
    from npclip import to_numpy

    actual = np.asarray(to_numpy(actual))
    expected = _numpy(expected)
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != reference {expected.shape}"
    assert actual.dtype.kind == "f" or actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype}"
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    err = np.abs(a - e)
    scale = max(1.0, float(np.abs(e).max()) if e.size else 1.0)
    bound = TOLERANCES[kind] * scale
    if err.size and not (err.max() <= bound):
        i = np.unravel_index(np.nanargmax(err), err.shape) if not np.isnan(err).all() else ()
        rel = err.max() / max(float(np.abs(e).max()), 1e-30)
        raise AssertionError(
            f"{where}: max abs error {err.max():.3e} > bound {bound:.3e} ({kind}: {TOLERANCES[kind]} x {scale:.3g}); "
            f"max rel {rel:.3e}; worst at {tuple(int(j) for j in i)}: {a[i]!r} vs reference {e[i]!r}"
        )
    return float(err.max()) if err.size else 0.0


def _numpy(x):
    from npclip import to_numpy

    if type(x).__module__.startswith("torch"):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(to_numpy(x))  # CuPy arrays refuse np.asarray


def gpu_usable() -> bool:
    """CuPy imports and sees a CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.gpu) if b == "cupy" else b for b in BACKENDS])
def backend(request, monkeypatch):
    """The backend name to pass to from_pretrained; cupy cases skip where no GPU is usable."""
    if request.param == "cupy-emulated":
        from _cupy_emulator import install

        install(monkeypatch)
        return "cupy"
    if request.param == "cupy" and not gpu_usable():
        pytest.skip("backend='cupy' needs CuPy and a CUDA GPU")
    return request.param


@pytest.fixture(scope="session")
def images_dir():
    return DATA


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """checkpoints(variant, cls_name) -> a directory with a random-weight transformers checkpoint."""
    reference("transformers")
    from parity import Checkpoints

    return Checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def whole(tmp_path_factory):
    """A whole random-weight checkpoint (model, tokenizer files, preprocessor config): tests/_checkpoints.py."""
    reference("transformers")
    from _checkpoints import whole_checkpoint

    return whole_checkpoint(tmp_path_factory)
