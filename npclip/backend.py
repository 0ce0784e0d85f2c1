"""The backend shim: the one module that knows about NumPy and CuPy.

Every array function in npclip asks this module for its namespace with
``xp = array_namespace(x)`` and then writes ``xp.exp``, ``xp.matmul``, ...
It never imports NumPy or CuPy itself and never branches on the backend.

* ``array_namespace(*arrays)`` -> ``numpy`` or ``cupy``, from the arrays' own type.
* ``get_backend(name)`` -> the namespace for a backend name ("numpy" or "cupy"),
  with a clear error when CuPy or a GPU is missing.
* ``default_backend()`` reads ``NPCLIP_BACKEND`` (default "numpy").
* ``to_numpy(x)`` brings any array (or nested output) back to host NumPy.

CuPy is imported lazily, only when asked for: ``import npclip`` never imports it.
"""

from __future__ import annotations

import os

import numpy

BACKENDS = ("numpy", "cupy")
ENV_VAR = "NPCLIP_BACKEND"


def _cupy():
    """Import CuPy and check that a CUDA device is usable; raise a clear error if not."""
    try:
        import cupy
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "backend='cupy' needs CuPy: pip install 'npclip[gpu]' (cupy-cuda12x) "
            "or cupy-cuda13x on CUDA 13 machines"
        ) from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing, or no device
        raise RuntimeError(f"backend='cupy' needs a CUDA GPU, but CuPy cannot reach one: {e}") from e
    if n < 1:
        raise RuntimeError("backend='cupy' needs a CUDA GPU, but none was found")
    return cupy


def default_backend() -> str:
    """The backend named by the NPCLIP_BACKEND environment variable, or 'numpy'."""
    name = os.environ.get(ENV_VAR, "numpy").strip().lower() or "numpy"
    if name not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={name!r}: expected one of {', '.join(BACKENDS)}")
    return name


def get_backend(name: str | None = None):
    """The array namespace (module) for a backend name; None means the default."""
    name = default_backend() if name is None else str(name).lower()
    if name == "numpy":
        return numpy
    if name == "cupy":
        return _cupy()
    raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def backend_name(x) -> str:
    """'cupy' for a CuPy array, else 'numpy'."""
    return "cupy" if type(x).__module__.split(".")[0] == "cupy" else "numpy"


def array_namespace(*arrays):
    """The namespace of the given arrays: cupy if any is a CuPy array, else numpy."""
    for a in arrays:
        if backend_name(a) == "cupy":
            import cupy

            return cupy
    return numpy


def kernels(x):
    """The array functions to run on x's backend: ``npclip.ops`` itself for NumPy; for CuPy, the same
    functions with the hot ones (layer norm, bias + activation, attention) replaced by fused kernels
    from ``npclip.backend_cupy``, each tested against its readable twin in ``npclip.ops``."""
    if backend_name(x) == "cupy":
        from . import backend_cupy

        return backend_cupy.KERNELS
    from . import ops

    return ops


def to_numpy(x):
    """Bring an array, or a tuple/list/dict/output of arrays, back to host NumPy."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if hasattr(x, "to_dict") and callable(x.to_dict):  # npclip output objects
        return type(x)(**{k: to_numpy(v) for k, v in x.to_dict().items()})
    if backend_name(x) == "cupy":
        return x.get()
    return numpy.asarray(x)
