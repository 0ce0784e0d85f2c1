"""A stand-in for CuPy on machines without a GPU, so that npclip's whole CuPy code path runs on the CPU.

* Arrays are NumPy arrays dressed as CuPy arrays (their type's module is "cupy", they have ``.get()``
  and ``.data.ptr``), so npclip.backend dispatches them to npclip.backend_cupy.KERNELS.
* ``RawModule(code).get_function(name)`` returns an emulated kernel. A launch first checks what a real
  one needs: the arguments against the C signature in the source (count, pointer element types, int /
  long long / float scalars as np.int32 / np.int64 / np.float32), 16-byte alignment where the variant
  loads 16 bytes, the block size, and a grid that covers the work. Then it computes the kernel's
  documented contract in NumPy (float32 arithmetic, one rounding), reading and writing the arrays through
  the strides it was given.

It proves the Python side (backend selection, strides, grids, dtypes, the shim); the CUDA code itself is
only compiled (nvcc, NVRTC) here and runs for real only on a GPU (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import re
import sys
import types

import numpy as np
from numpy.lib.stride_tricks import as_strided


class ndarray(np.ndarray):
    """A NumPy array that says it is a CuPy array."""

    __module__ = "cupy"

    def get(self):
        return np.array(self.view(np.ndarray))

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.view(np.ndarray).ctypes.data)


def _dress(x):
    if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
        return x.view(ndarray)
    if isinstance(x, tuple):
        return tuple(_dress(v) for v in x)
    if isinstance(x, list):
        return [_dress(v) for v in x]
    return x


def _plain(a):
    return a.view(np.ndarray) if isinstance(a, np.ndarray) else a


def _wrap(f):
    def wrapped(*args, **kwargs):
        return _dress(f(*args, **kwargs))

    wrapped.__name__ = getattr(f, "__name__", "f")
    return wrapped


class _Device:
    compute_capability = "90"

    def __init__(self, index=0):
        self.id = index

    def synchronize(self):
        pass


def make_module(compute_capability="90"):
    """A fresh ``cupy`` module object backed by NumPy."""
    mod = types.ModuleType("cupy")
    mod.__file__ = __file__
    mod.ndarray = ndarray
    mod.asarray = lambda x, dtype=None: _dress(np.asarray(_plain(x), dtype=dtype))
    mod.asnumpy = lambda x: np.array(_plain(x))
    mod.RawModule = RawModule
    device = type("Device", (_Device,), {"compute_capability": compute_capability})
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), Device=device)

    def __getattr__(name):
        f = getattr(np, name)
        return f if isinstance(f, type) or not callable(f) else _wrap(f)

    mod.__getattr__ = __getattr__
    return mod


def install(monkeypatch, compute_capability="90"):
    """Put the emulator in sys.modules as ``cupy`` for one test (monkeypatch undoes it)."""
    from npclip import backend_cupy

    mod = make_module(compute_capability)
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.setattr(backend_cupy, "_FUNCTIONS", {})
    LAUNCHES.clear()
    return mod


# ----------------------------------------------------------------------------------------------
# Kernels

LAUNCHES = []  # (kernel name, defines) of every emulated launch, for tests to inspect


class RawModule:
    def __init__(self, code, options=(), **kwargs):
        self.code = code

    def get_function(self, name):
        return EmulatedKernel(self.code, name)


_C_SCALARS = {"int": np.int32, "long long": np.int64, "float": np.float32}


class EmulatedKernel:
    def __init__(self, code, name):
        self.code, self.name = code, name
        sig = re.search(r'extern "C" __global__ void\s+(?:__launch_bounds__\((\w+)\)\s*)?' + name + r"\s*\(([^)]*)\)",
                        code)
        assert sig, f"no kernel {name} in the source"
        self.defines = {k: v for k, v in re.findall(r"^#define (\w+) (\S+)$", code, re.M)}
        bound = sig.group(1)
        self.max_threads = int(self.defines.get(bound, bound)) if bound else 1024
        self.params = [p.strip() for p in sig.group(2).split(",")]
        self.T = {"float": np.float32, "half_bits": np.float16}[re.search(r"typedef (\w+) T;", code).group(1)]
        self.vec = int(self.defines.get("VEC", 1))

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)} parameters"
        for p, a in zip(self.params, args):
            if "*" in p:
                assert isinstance(a, ndarray), f"{self.name}: parameter {p!r} got {type(a).__name__}"
                ctype = p.replace("const", "").split("*")[0].strip()
                want = self.T if ctype == "T" else {"float": np.float32, "half_bits": np.float16}[ctype]
                assert a.dtype == want, f"{self.name}: parameter {p!r} got {a.dtype}"
                if self.vec > 1:
                    assert a.data.ptr % 16 == 0, f"{self.name}: parameter {p!r} is not 16-byte aligned for VEC"
            else:
                ctype = p.rsplit(" ", 1)[0].strip()
                assert type(a) is _C_SCALARS[ctype], f"{self.name}: parameter {p!r} got {type(a).__name__}"
        assert np.prod(block) <= self.max_threads, f"{self.name}: block {block} over __launch_bounds__"
        LAUNCHES.append((self.name, dict(self.defines)))
        getattr(self, "_" + self.name)(grid, block, *[_plain(a) for a in args])

    # each method below is the kernel's contract, in NumPy

    def _view(self, a, shape, strides):
        return as_strided(a, shape, tuple(int(s) * a.itemsize for s in strides))

    def _layer_norm(self, grid, block, x, w, b, y, D, row_stride, eps):
        assert block[0] == int(self.defines["LN_THREADS"])
        assert int(self.defines["NITER"]) * block[0] * self.vec >= D, "layer_norm: NITER too small for D"
        if self.vec > 1:
            assert D % self.vec == 0 and row_stride % self.vec == 0
        R = grid[0]
        xs = self._view(x, (R, D), (row_stride, 1)).astype(np.float32)
        mean = xs.mean(-1, keepdims=True)
        var = np.square(xs - mean).mean(-1, keepdims=True)
        out = (xs - mean) / np.sqrt(var + np.float32(eps)) * w[:D].astype(np.float32) + b[:D].astype(np.float32)
        self._view(y, (R, D), (D, 1))[...] = out.astype(self.T)

    def _bias_act(self, grid, block, y, bias, residual, rows, f_vectors):
        assert grid[0] * block[0] >= f_vectors, "bias_act: the grid misses columns"
        F = int(f_vectors) * self.vec
        ys = self._view(y, (int(rows), F), (F, 1))
        a = ys.astype(np.float32) + bias[:F].astype(np.float32)
        act = int(self.defines["ACT"])
        if act == 1:
            a = a / (1 + np.exp(np.minimum(-1.702 * a, 88)))
        elif act == 2:
            from math import erf

            a = 0.5 * a * (1 + np.vectorize(erf)(a / np.sqrt(2)))
        if int(self.defines["RESIDUAL"]):
            a = a + self._view(residual, (int(rows), F), (F, 1)).astype(np.float32)
        ys[...] = a.astype(self.T)

    def _softmax_rows(self, grid, block, s, mask, R, L, H, msb, msh, msq, msk, scale, has_mask):
        assert block[0] == 128 and grid[0] * 4 >= R, "softmax_rows: the grid misses rows"
        assert int(self.defines["SM_ITEMS"]) * 32 >= L, "softmax_rows: SM_ITEMS too small for L"
        B = int(R) // (int(H) * int(L))
        x = self._view(s, (B, int(H), int(L), int(L)), (H * L * L, L * L, L, 1))
        t = x.astype(np.float32) * scale
        if has_mask:
            m = self._view(mask, (B, int(H), int(L), int(L)), (msb, msh, msq, msk)).astype(np.float32)
            t = np.maximum(t + m, np.float32(-3.402823466e38))
        p = np.exp(t - t.max(-1, keepdims=True))
        x[...] = (p / p.sum(-1, keepdims=True)).astype(self.T)

    def _attention(self, grid, block, rows_per_block, q, k, v, mask, out, weights, L, *rest):
        qs, ks, vs, ms, os_ = rest[0:3], rest[3:6], rest[6:9], rest[9:13], rest[13:16]
        scale, has_mask, need_weights = rest[16:]
        B, H, Dh = grid[2], grid[1], int(self.defines["DH"])
        assert grid[0] * rows_per_block >= L, f"{self.name}: the grid misses query rows"
        Q = self._view(q, (B, H, L, Dh), (*qs, 1)).astype(np.float32)
        K = self._view(k, (B, H, L, Dh), (*ks, 1)).astype(np.float32)
        V = self._view(v, (B, H, L, Dh), (*vs, 1)).astype(np.float32)
        s = Q @ K.transpose(0, 1, 3, 2) * scale  # [B, H, L, L]
        if has_mask:
            s = np.maximum(s + self._view(mask, (B, H, L, L), ms).astype(np.float32), np.float32(-3.402823466e38))
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        self._view(out, (B, H, L, Dh), (*os_, 1))[...] = (p @ V).astype(self.T)
        if need_weights:
            self._view(weights, (B, H, L, L), (H * L * L, L * L, L, 1))[...] = p.astype(self.T)

    def _attention_simt(self, grid, block, *args):
        assert block[0] == int(self.defines["SIMT_Q"])
        self._attention(grid, block, block[0], *args)

    def _attention_mma(self, grid, block, *args):
        assert block[0] == 128 and self.T == np.float16 and int(self.defines["DH"]) % 16 == 0
        q, k, v, out = args[0], args[1], args[2], args[4]
        strides = args[7:16]
        assert all(int(s) % 8 == 0 for s in strides), "attention_mma: q/k/v strides must be multiples of 8"
        assert all(a.ctypes.data % 16 == 0 for a in (q, k, v)), "attention_mma: q/k/v rows must be 16-byte aligned"
        assert all(int(s) % 2 == 0 for s in args[20:23]) and out.ctypes.data % 4 == 0
        self._attention(grid, block, 64, *args)
