"""The CuPy backend: its module, its CUDA sources, its fused kernels against their readable twins.

Four layers, from what runs anywhere to what needs a GPU:
1. npclip.backend_cupy imports without CuPy; KERNELS offers every function of npclip.ops by name and
   signature.
2. Every kernel variant compiles: nvcc -ptx (skips without nvcc) and NVRTC, CuPy's compiler (skips
   without libnvrtc; NPCLIP_NVRTC names the library).
3. On the CPU, through tests/_cupy_emulator.py: the Python side of each fused function (strides, grids,
   argument types, variant choice, output layout) against its twin in npclip.ops.
4. On a GPU (skips without one): each fused kernel against its twin in npclip.ops, at odd sizes, with
   poisoned outputs; and float16 models against transformers.
The float16 bound itself is checked here on every backend, NumPy included (docs/backend.md).
"""

import ctypes
import ctypes.util
import glob
import inspect
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import _cupy_emulator
from conftest import BACKENDS, assert_close, gpu_usable, reference
from npclip import backend_cupy, ops, to_numpy

rng = np.random.default_rng(0)
# float16 kernels against a float32/float64 twin on the same float16 inputs (4e-3, 8 float16 ulp at 1)
FP16_OP = "op-float16"


def randn(*shape, scale=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ----------------------------------------------------------------------------------------------
# 1. The module


def test_module_imports_without_cupy():
    code = ("import sys; sys.modules['cupy'] = None; import npclip, npclip.backend_cupy as b; "
            "from npclip.backend import kernels; import numpy as np; "
            "assert kernels(np.zeros(1)) is npclip.ops; print(len(b.KERNEL_SOURCES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_kernels_offer_every_ops_function_with_its_signature():
    readable = {n for n, f in vars(ops).items() if callable(f) and not n.startswith("_")
                and getattr(f, "__module__", None) == ops.__name__}
    assert readable <= set(vars(backend_cupy.KERNELS))
    for name in ("layer_norm", "linear", "linear_activation", "attention"):  # what encoder.py calls
        fused, twin = getattr(backend_cupy.KERNELS, name), getattr(ops, name)
        assert fused is not twin, name
        p_fused = list(inspect.signature(fused).parameters.values())
        p_twin = list(inspect.signature(twin).parameters.values())
        assert [p.name for p in p_fused[: len(p_twin)]] == [p.name for p in p_twin], name
        assert all(p.default is not inspect.Parameter.empty for p in p_fused[len(p_twin):]), name


def test_cupy_has_every_array_function_npclip_calls():
    """The readable functions run on CuPy through xp.NAME: each NAME must exist there (CuPy imports
    without a GPU, so this runs wherever CuPy is installed)."""
    import re

    cupy = pytest.importorskip("cupy")
    root = os.path.join(os.path.dirname(__file__), "..", "npclip")
    names = set()
    for f in glob.glob(os.path.join(root, "*.py")):
        names |= set(re.findall(r"\bxp\.([a-zA-Z_][a-zA-Z_0-9]*)", open(f).read()))
    assert names and not sorted(n for n in names if not hasattr(cupy, n))


# ----------------------------------------------------------------------------------------------
# 2. The CUDA sources compile

VARIANTS = backend_cupy.variants()
IDS = [f"{n}-{dt}-" + "-".join(f"{k}{v}" for k, v in sorted(d.items())) for n, dt, d in VARIANTS]


@pytest.mark.parametrize("name,dtype,defines", VARIANTS, ids=IDS)
def test_kernel_source_compiles_with_nvcc(tmp_path, name, dtype, defines):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / f"{name}.cu"
    src.write_text(backend_cupy.source(name, dtype, **defines))
    out = subprocess.run([nvcc, "-ptx", "-arch=sm_90", "-o", str(tmp_path / "k.ptx"), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f".entry {name}(" in (tmp_path / "k.ptx").read_text()


def _nvrtc():
    """libnvrtc through ctypes: NPCLIP_NVRTC, the nvidia-cuda-nvrtc wheel, or the system's; None if absent."""
    candidates = [os.environ.get("NPCLIP_NVRTC", "")]
    for path in sys.path:
        candidates += sorted(glob.glob(os.path.join(path, "nvidia", "*", "lib", "libnvrtc.so*")))
        candidates += sorted(glob.glob(os.path.join(path, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    candidates.append(ctypes.util.find_library("nvrtc") or "")
    for c in candidates:
        if c and ".alt." not in c:
            try:
                for builtins in glob.glob(os.path.join(os.path.dirname(c), "libnvrtc-builtins.so*")):
                    if ".alt." not in builtins:  # NVRTC opens it by name at compile time
                        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(c)
            except OSError:
                continue
    return None


def nvrtc_compile(lib, source, name, arch="compute_90"):
    """Compile with NVRTC as CuPy does (no include path, no header). -> (ok, log)"""
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), f"{name}.cu".encode(), 0, None, None) == 0
    opts = (ctypes.c_char_p * 1)(f"--gpu-architecture={arch}".encode())
    status = lib.nvrtcCompileProgram(prog, 1, opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status == 0, log.value.decode(errors="replace")


def test_kernel_sources_compile_with_nvrtc():
    lib = _nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (pip install nvidia-cuda-nvrtc, or set NPCLIP_NVRTC)")
    failures = []
    for (name, dtype, defines), ident in zip(VARIANTS, IDS):
        ok, log = nvrtc_compile(lib, backend_cupy.source(name, dtype, **defines), name)
        if not ok:
            failures.append(f"{ident}:\n{log}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------------------------
# Cases shared by the emulated (CPU) and the real (GPU) checks


def qkv_views(xp, B, L, H, Dh, dtype, scale=1.0):
    """q, k, v as encoder.self_attention makes them: [B, H, L, Dh] views of one [B, L, 3D] buffer."""
    D = H * Dh
    qkv = xp.asarray(randn(B, L, 3 * D, scale=scale, dtype=dtype))
    return [ops.split_heads(qkv[..., j * D:(j + 1) * D], H) for j in range(3)]


def text_mask(xp, B, L, dtype):
    """The text tower's additive mask: causal and padding, [B, 1, L, L]."""
    from npclip.text import text_attention_mask

    lengths = rng.integers(1, L + 1, B)
    padding = (np.arange(L)[None] < lengths[:, None]).astype(np.int64)
    return text_attention_mask(xp.asarray(padding), L, np.dtype(dtype), xp)


ATTENTION_CASES = [  # B, L, H, Dh, masked
    (2, 7, 3, 14, True), (3, 50, 2, 64, False), (2, 77, 2, 64, True), (1, 257, 2, 64, False),
    (2, 1, 1, 16, False), (1, 65, 1, 80, True), (1, 33, 2, 128, False),
]


# ----------------------------------------------------------------------------------------------
# 3. The Python side, on the CPU through the emulator


@pytest.fixture
def emulated(monkeypatch):
    return _cupy_emulator.install(monkeypatch)


def _launched():
    return [name for name, _ in _cupy_emulator.LAUNCHES]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(2, 5, 42), (3, 768), (1, 4, 1024)])
def test_emulated_layer_norm_matches_twin(emulated, dtype, shape):
    x = randn(*shape, scale=20.0, dtype=dtype) + dtype(50)
    w, b = randn(shape[-1], dtype=dtype), randn(shape[-1], dtype=dtype)
    y = backend_cupy.layer_norm(emulated.asarray(x), emulated.asarray(w), emulated.asarray(b), 1e-5)
    assert type(y).__module__ == "cupy" and y.dtype == dtype and y.shape == x.shape
    assert _launched() == ["layer_norm"]
    assert_close(y, ops.layer_norm(x, w, b, 1e-5), "op" if dtype == np.float32 else FP16_OP, "layer_norm")


def test_emulated_layer_norm_reads_strided_rows(emulated):
    x = emulated.asarray(randn(3, 9, 64))
    w, b = emulated.asarray(randn(64)), emulated.asarray(randn(64))
    y = backend_cupy.layer_norm(x[:, 0], w, b, 1e-5)  # the class tokens: rows 9*64 elements apart
    assert_close(y, ops.layer_norm(to_numpy(x)[:, 0], to_numpy(w), to_numpy(b), 1e-5), "op", "strided rows")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("shape", [(2, 5, 21, 37), (4, 16, 64, 96)])
def test_emulated_linear_activation_matches_twin(emulated, dtype, act, shape):
    B, L, Din, Dout = shape
    x, w, b = randn(B, L, Din, dtype=dtype), randn(Dout, Din, scale=0.3, dtype=dtype), randn(Dout, dtype=dtype)
    y = backend_cupy.linear_activation(emulated.asarray(x), emulated.asarray(w), emulated.asarray(b), act)
    assert y.shape == (B, L, Dout) and y.dtype == dtype
    want = ops.linear_activation(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), act)
    assert_close(y, want, "op" if dtype == np.float32 else FP16_OP, act)
    y2 = backend_cupy.linear(emulated.asarray(x), emulated.asarray(w), emulated.asarray(b))
    assert_close(y2, ops.linear(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)),
                 "op" if dtype == np.float32 else FP16_OP, "linear")
    vec = 16 // np.dtype(dtype).itemsize
    assert [d["VEC"] for n, d in _cupy_emulator.LAUNCHES] == [str(vec if Dout % vec == 0 else 1)] * 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("B,L,H,Dh,masked", ATTENTION_CASES)
def test_emulated_attention_reads_qkv_in_place_and_writes_merged_heads(emulated, monkeypatch, dtype, B, L, H, Dh,
                                                                     masked):
    monkeypatch.setenv("NPCLIP_CUPY_DISABLE", "attention_gemm")  # float32: the one-kernel variant
    q, k, v = qkv_views(emulated, B, L, H, Dh, dtype)
    mask = text_mask(emulated, B, L, dtype) if masked else None
    out, weights = backend_cupy.attention(q, k, v, mask)
    want_out, want_w = ops.attention(*(to_numpy(a).astype(np.float32) for a in (q, k, v)),
                                     None if mask is None else to_numpy(mask).astype(np.float32))
    kind = "op" if dtype == np.float32 else FP16_OP
    assert_close(out, want_out, kind, "attention out")
    assert_close(weights, want_w, kind, "attention weights")
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous  # merge_heads is then a free reshape
    mma = dtype == np.float16 and Dh % 16 == 0
    assert _launched() == ["attention_mma" if mma else "attention_simt"]
    out2, none = backend_cupy.attention(q, k, v, mask, need_weights=False)
    assert none is None
    np.testing.assert_array_equal(to_numpy(out2), to_numpy(out))


@pytest.mark.parametrize("B,L,H,Dh,masked", ATTENTION_CASES)
def test_emulated_attention_gemm_matches_twin(emulated, B, L, H, Dh, masked):
    """float32 attention as two products around softmax_rows (the default for float32)."""
    q, k, v = qkv_views(emulated, B, L, H, Dh, np.float32)
    mask = text_mask(emulated, B, L, np.float32) if masked else None
    out, weights = backend_cupy.attention(q, k, v, mask)
    want_out, want_w = ops.attention(*(to_numpy(a).astype(np.float64) for a in (q, k, v)),
                                     None if mask is None else to_numpy(mask).astype(np.float64))
    assert_close(out, want_out, "op", "gemm attention out")
    assert_close(weights, want_w, "op", "gemm attention weights")
    assert _launched() == ["softmax_rows"]
    assert [d["SM_ITEMS"] for _, d in _cupy_emulator.LAUNCHES] == [str(-(-L // 32))]
    out2, none = backend_cupy.attention(q, k, v, mask, need_weights=False)
    assert none is None
    np.testing.assert_array_equal(to_numpy(out2), to_numpy(out))


def test_emulated_attention_variant_choice(emulated, monkeypatch):
    q, k, v = qkv_views(emulated, 2, 9, 2, 64, np.float16)
    backend_cupy.attention(q, k, v)
    monkeypatch.setattr(emulated.cuda.Device, "compute_capability", "75")  # no mma.m16n8k16 before sm_80
    backend_cupy.attention(q, k, v)
    monkeypatch.setenv("NPCLIP_CUPY_DISABLE", "attention_mma")
    monkeypatch.setattr(emulated.cuda.Device, "compute_capability", "90")
    backend_cupy.attention(q, k, v)
    qc, kc, vc = (emulated.asarray(to_numpy(a)[..., :56]) for a in (q, k, v))  # Dh 56: not a multiple of 16
    monkeypatch.delenv("NPCLIP_CUPY_DISABLE")
    backend_cupy.attention(qc, kc, vc)
    assert _launched() == ["attention_mma", "attention_simt", "attention_simt", "attention_simt"]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_emulated_linear_adds_the_residual_in_the_bias_pass(emulated, monkeypatch, dtype):
    x, w, b = randn(2, 6, 24, dtype=dtype), randn(40, 24, scale=0.3, dtype=dtype), randn(40, dtype=dtype)
    r = randn(2, 6, 40, dtype=dtype)
    want = ops.linear(*(a.astype(np.float64) for a in (x, w, b, r)))
    assert want.shape == (2, 6, 40)
    kind = "op" if dtype == np.float32 else FP16_OP
    xd, wd, bd, rd = (emulated.asarray(a) for a in (x, w, b, r))
    assert_close(backend_cupy.linear(xd, wd, bd, rd), want, kind, "fused residual")
    wide = np.zeros((2, 6, 80), dtype)
    wide[..., ::2] = r
    strided = emulated.asarray(wide)[..., ::2]  # r again, not contiguous: added apart
    assert_close(backend_cupy.linear(xd, wd, bd, strided), want, kind, "residual added apart")
    monkeypatch.setenv("NPCLIP_CUPY_DISABLE", "residual")
    assert_close(backend_cupy.linear(xd, wd, bd, rd), want, kind, "residual disabled")
    assert [d["RESIDUAL"] for _, d in _cupy_emulator.LAUNCHES] == ["1", "0", "0"]
    np.testing.assert_array_equal(to_numpy(rd), r)  # the residual is read, never written


def test_emulated_disable_sends_functions_to_their_twins(emulated, monkeypatch):
    monkeypatch.setenv("NPCLIP_CUPY_DISABLE", "layer_norm,bias_act,attention")
    x = emulated.asarray(randn(2, 5, 32))
    w = emulated.asarray(randn(32, 32))
    b = emulated.asarray(randn(32))
    backend_cupy.layer_norm(x, b, b, 1e-5)
    backend_cupy.linear_activation(x, w, b, "gelu")
    backend_cupy.attention(*qkv_views(emulated, 2, 5, 2, 16, np.float32))
    assert _launched() == []


def test_emulated_model_runs_the_fused_kernels(emulated, checkpoints):
    from npclip import CLIPModel
    from parity import VARIANTS, pixel_inputs, text_inputs

    model = CLIPModel.from_pretrained(checkpoints("tiny"), backend="cupy")
    ids, mask = text_inputs(VARIANTS["tiny"]["text"], batch=2)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_inputs(VARIANTS["tiny"]["vision"]))
    assert type(out.logits_per_image).__module__ == "cupy"
    assert set(_launched()) == {"layer_norm", "bias_act", "softmax_rows"}  # float32: attention_gemm


# ----------------------------------------------------------------------------------------------
# 4. On a GPU: the kernels themselves


@pytest.fixture
def cp(monkeypatch):
    """Real CuPy on a GPU; with NPCLIP_TEST_BACKENDS=cupy-emulated, the emulator (to check these tests)."""
    if "cupy-emulated" in BACKENDS:
        return _cupy_emulator.install(monkeypatch)
    if not gpu_usable():
        pytest.skip("needs CuPy and a CUDA GPU")
    import cupy

    return cupy


def poisoned(cp, shape, dtype):
    return cp.full(shape, np.nan, dtype=dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(2, 5, 42), (3, 7, 768), (1, 4, 1024), (5, 1280), (2, 3, 4100)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gpu_layer_norm_matches_twin(cp, dtype, shape):
    x = randn(*shape, scale=20.0, dtype=dtype) + dtype(50)  # a large mean: float32 statistics needed
    w, b = randn(shape[-1], dtype=dtype), randn(shape[-1], dtype=dtype)
    xd, wd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(b)
    y = poisoned(cp, x.shape, dtype)
    backend_cupy._layer_norm_into(xd.reshape(-1, shape[-1]), wd, bd, 1e-5, y)
    kind = "op" if dtype == np.float32 else FP16_OP
    assert_close(y, ops.layer_norm(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), 1e-5),
                 kind, "layer_norm vs float32 twin")
    assert_close(y, ops.layer_norm(xd, wd, bd, 1e-5), kind, "layer_norm vs twin on the GPU")
    assert_close(backend_cupy.layer_norm(xd[:, :1] if xd.ndim == 3 else xd, wd, bd, 1e-5),
                 ops.layer_norm(x[:, :1] if x.ndim == 3 else x, w, b, 1e-5), kind, "layer_norm strided")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("act", ["none", "quick_gelu", "gelu"])
@pytest.mark.parametrize("M,F", [(7, 37), (100, 3072), (4099, 64), (3, 4096), (16411, 256)])  # the last: rows walked in steps
@pytest.mark.parametrize("residual", [False, True], ids=["", "residual"])
def test_gpu_bias_act_matches_twin(cp, dtype, act, M, F, residual):
    h, b, r = randn(M, F, scale=4.0, dtype=dtype), randn(F, dtype=dtype), randn(M, F, scale=4.0, dtype=dtype)
    rd = cp.asarray(r) if residual else None
    y = backend_cupy.bias_act(cp.asarray(h.copy()), cp.asarray(b), act, rd)  # in place
    t = h.astype(np.float32) + b.astype(np.float32)
    want = t if act == "none" else ops.activation(act)(t)
    if residual:
        want = want + r.astype(np.float32)
        np.testing.assert_array_equal(to_numpy(rd), r)
    assert_close(y, want, "op" if dtype == np.float32 else FP16_OP, f"bias + {act}, residual {residual}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("B,L,H,Dh,masked", ATTENTION_CASES)
def test_gpu_attention_matches_twin(cp, dtype, B, L, H, Dh, masked):
    q, k, v = qkv_views(cp, B, L, H, Dh, dtype, scale=2.0)
    mask = text_mask(cp, B, L, dtype) if masked else None
    host = [to_numpy(a).astype(np.float64) for a in (q, k, v)]
    want_out, want_w = ops.attention(*host, None if mask is None else to_numpy(mask).astype(np.float64))
    kind = "op" if dtype == np.float32 else FP16_OP
    for need_weights in (True, False):
        merged = poisoned(cp, (B, L, H, Dh), dtype)
        out = merged.transpose(0, 2, 1, 3)
        weights = poisoned(cp, (B, H, L, L), dtype) if need_weights else None
        variant = backend_cupy._attention_into(q, k, v, mask, out, weights)
        assert variant == ("mma" if dtype == np.float16 and Dh % 16 == 0 else "simt")
        assert_close(out, want_out, kind, f"{variant} out (need_weights={need_weights})")
        if need_weights:
            assert_close(weights, want_w, kind, f"{variant} weights")
    ref_out, ref_w = ops.attention(q, k, v, mask)  # the readable function on the same device
    out, weights = backend_cupy.attention(q, k, v, mask)
    assert_close(out, ref_out, kind, "fused vs readable on the GPU")
    assert_close(weights, ref_w, kind, "fused vs readable weights on the GPU")


@pytest.mark.gpu
@pytest.mark.parametrize("B,L,H,Dh,masked", ATTENTION_CASES)
def test_gpu_attention_gemm_matches_twin(cp, B, L, H, Dh, masked):
    q, k, v = qkv_views(cp, B, L, H, Dh, np.float32, scale=2.0)
    mask = text_mask(cp, B, L, np.float32) if masked else None
    want_out, want_w = ops.attention(*(to_numpy(a).astype(np.float64) for a in (q, k, v)),
                                     None if mask is None else to_numpy(mask).astype(np.float64))
    out, weights = backend_cupy._attention_gemm(q, k, v, mask, True)
    assert_close(out, want_out, "op", "gemm attention out")
    assert_close(weights, want_w, "op", "gemm attention weights")
    out2, none = backend_cupy._attention_gemm(q, k, v, mask, False)
    assert none is None
    assert_close(out2, want_out, "op", "gemm attention out, no weights")


@pytest.mark.gpu
def test_gpu_attention_simt_fallback_for_float16(cp, monkeypatch):
    monkeypatch.setenv("NPCLIP_CUPY_DISABLE", "attention_mma")
    q, k, v = qkv_views(cp, 2, 77, 2, 64, np.float16)
    mask = text_mask(cp, 2, 77, np.float16)
    out, w = backend_cupy.attention(q, k, v, mask)
    want_out, want_w = ops.attention(*(to_numpy(a).astype(np.float64) for a in (q, k, v, mask)))
    assert_close(out, want_out, FP16_OP, "simt float16 out")
    assert_close(w, want_w, FP16_OP, "simt float16 weights")


# ----------------------------------------------------------------------------------------------
# float16 models against transformers (every backend; on NumPy this measures the bound on the CPU)

DH64 = dict(  # a small config with the real head width (64), so that the tensor-core attention runs
    text=dict(vocab_size=99, hidden_size=128, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
              max_position_embeddings=21, projection_dim=24, bos_token_id=97, eos_token_id=98, pad_token_id=1),
    vision=dict(hidden_size=128, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                patch_size=8, projection_dim=24),
)


def float16_errors(directory, backend, ref_dtype, text_cfg, vision_cfg):
    """Max errors of npclip in float16 against transformers in ref_dtype, relative to max(1, |ref|)."""
    import torch

    from checkpoints import load_reference
    from npclip import CLIPModel
    from parity import pixel_inputs, text_inputs

    ids, mask = text_inputs(text_cfg, batch=2)
    px = pixel_inputs(vision_cfg, batch=2)
    ref = load_reference(directory).to(getattr(torch, ref_dtype))
    with torch.no_grad():
        r = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                pixel_values=torch.from_numpy(px).to(getattr(torch, ref_dtype)), output_hidden_states=True)
    o = CLIPModel.from_pretrained(directory, backend=backend, dtype="float16")(
        input_ids=ids, attention_mask=mask, pixel_values=px, output_hidden_states=True)
    pairs = {"logits_per_image": (o.logits_per_image, r.logits_per_image),
             "text last_hidden_state": (o.text_model_output.last_hidden_state, r.text_model_output.last_hidden_state),
             "vision last_hidden_state": (o.vision_model_output.last_hidden_state,
                                          r.vision_model_output.last_hidden_state)}
    errors = {}
    for name, (a, e) in pairs.items():
        a, e = to_numpy(a).astype(np.float64), e.float().numpy().astype(np.float64)
        errors[name] = float(np.abs(a - e).max() / max(1.0, np.abs(e).max()))
    return pairs, errors


@pytest.fixture(scope="module")
def dh64_checkpoint(tmp_path_factory):
    reference("transformers")
    from checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("dh64") / "clip", **DH64)


@pytest.mark.parametrize("ref_dtype", ["float32", "float16"])
@pytest.mark.parametrize("config", ["tiny", "dh64"])
def test_float16_model_matches_transformers(checkpoints, dh64_checkpoint, backend, config, ref_dtype):
    from parity import VARIANTS

    cfg = VARIANTS["tiny"] if config == "tiny" else DH64
    directory = checkpoints("tiny") if config == "tiny" else dh64_checkpoint
    pairs, errors = float16_errors(directory, backend, ref_dtype, cfg["text"], cfg["vision"])
    print(f"\nfloat16 npclip ({backend}) vs transformers {ref_dtype}, {config}: "
          + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    for name, (a, e) in pairs.items():
        assert_close(a, e, "float16", f"{config} {name} vs transformers {ref_dtype}")


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_vit_b32_float16_full_size(cp, tmp_path):
    """The default config (ViT-B/32) in float16 on the GPU, head width 64: the tensor-core attention."""
    reference("transformers")
    from checkpoints import make_checkpoint

    directory = make_checkpoint(tmp_path / "vit-b32")
    pairs, errors = float16_errors(directory, "cupy", "float32", {}, {})
    print("\nViT-B/32 float16 on CuPy vs transformers float32: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    for name, (a, e) in pairs.items():
        assert_close(a, e, "float16", f"vit-b32 {name}")
