"""The backend shim: NumPy by default, CuPy only when asked, never imported by `import npclip`."""

import subprocess
import sys

import numpy as np
import pytest

from npclip import backend, to_numpy


def test_import_does_not_import_optional_libraries():
    code = "import sys, npclip; bad = [m for m in ('cupy', 'torch', 'transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_numpy_is_the_default(monkeypatch):
    monkeypatch.delenv("NPCLIP_BACKEND", raising=False)
    assert backend.get_backend() is np
    assert backend.array_namespace(np.zeros(2)) is np


def test_unknown_backend_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        backend.get_backend("jax")
    monkeypatch.setenv("NPCLIP_BACKEND", "tpu")
    with pytest.raises(ValueError, match="NPCLIP_BACKEND='tpu'"):
        backend.get_backend()


def test_cupy_without_cupy_or_gpu_is_a_clear_error():
    try:
        import cupy  # noqa: F401
        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a GPU is present")
    except Exception:
        pass
    with pytest.raises(RuntimeError, match="backend='cupy' needs"):
        backend.get_backend("cupy")


def test_to_numpy_walks_containers():
    out = to_numpy({"a": [np.ones(2), (np.zeros(1), None)], "b": 3})
    assert isinstance(out["a"][0], np.ndarray) and out["a"][1][1] is None and out["b"] == 3
