"""Each array function of npclip.ops against its torch twin, at odd sizes (width 21, 3 heads)."""

import math

import numpy as np
import pytest

from conftest import assert_close, reference
from npclip import ops

torch = reference("torch")
F = torch.nn.functional
rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def test_linear_matches_torch_on_3d_input():
    x, w, b = randn(2, 5, 21), randn(13, 21), randn(13)
    out = ops.linear(x, w, b)
    assert out.dtype == np.float32 and out.shape == (2, 5, 13)
    assert_close(out, F.linear(t(x), t(w), t(b)), "op", "linear")
    assert_close(ops.linear(x, w), F.linear(t(x), t(w)), "op", "linear without bias")


def test_linear_adds_the_residual_after_the_bias():
    x, w, b, r = randn(2, 5, 21), randn(13, 21), randn(13), randn(2, 5, 13)
    out = ops.linear(x, w, b, r)
    np.testing.assert_array_equal(out, ops.linear(x, w, b) + r)  # the same operations, in the same order
    assert_close(out, F.linear(t(x), t(w), t(b)) + t(r), "op", "linear + residual")


def test_layer_norm_matches_torch_with_large_offsets():
    x = randn(3, 7, 21, scale=20.0) + 50.0  # a large mean, as in CLIP's residual stream
    w, b = randn(21), randn(21)
    out = ops.layer_norm(x, w, b, 1e-5)
    assert out.dtype == np.float32
    assert_close(out, F.layer_norm(t(x), (21,), t(w), t(b), 1e-5), "op", "layer_norm")
    assert not np.shares_memory(out, x)


def test_quick_gelu_and_gelu_match_torch():
    x = randn(4, 33, scale=4.0)
    assert_close(ops.quick_gelu(x), t(x) * torch.sigmoid(1.702 * t(x)), "op", "quick_gelu")
    assert_close(ops.gelu(x), F.gelu(t(x)), "op", "gelu")
    assert ops.gelu(x).dtype == ops.quick_gelu(x).dtype == np.float32


def test_erf_is_float32_accurate():
    x = np.linspace(-6, 6, 120001, dtype=np.float32)
    exact = np.array([math.erf(float(v)) for v in x])
    y = ops.erf(x)
    assert y.dtype == np.float32
    assert_close(y, exact, "erf", "erf vs math.erf")
    assert ops.erf(np.array([0.0, np.inf, -np.inf], np.float32)).tolist() == [0.0, 1.0, -1.0]
    assert ops.erf(x.astype(np.float16)).dtype == np.float16


def test_activations_do_not_modify_input():
    x = randn(5, 6)
    keep = x.copy()
    ops.quick_gelu(x), ops.gelu(x), ops.softmax(x)
    np.testing.assert_array_equal(x, keep)


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        ops.activation("relu")


def test_softmax_is_stable_and_matches_torch():
    x = randn(3, 11, scale=30.0) + 1000.0
    out = ops.softmax(x)
    assert np.isfinite(out).all()
    assert_close(out, torch.softmax(t(x), -1), "op", "softmax")


@pytest.mark.parametrize("masked", ["none", "causal", "causal+padding"])
def test_attention_matches_torch_eager(masked):
    B, H, L, Dh = 2, 3, 9, 7
    q, k, v = randn(B, H, L, Dh, scale=2), randn(B, H, L, Dh, scale=2), randn(B, H, L, Dh)
    mask = None
    if masked != "none":
        padding = None
        if masked == "causal+padding":
            padding = np.array([[1] * L, [1] * 5 + [0] * (L - 5)])
        from npclip.text import text_attention_mask

        mask = text_attention_mask(padding, L, np.dtype(np.float32), np)
    out, weights = ops.attention(q, k, v, mask)
    scores = t(q) @ t(k).transpose(-1, -2) * Dh**-0.5
    if mask is not None:
        scores = scores + t(mask)
    ref_w = torch.softmax(scores, -1)
    assert_close(weights, ref_w, "op", "attention weights")
    assert_close(out, ref_w @ t(v), "op", "attention output")
    if masked != "none":
        assert np.all(weights[0, :, 0, 1:] == 0), "the first query must see only itself"
    if masked == "causal+padding":
        assert np.all(weights[1, :, :, 5:] == 0), "padding keys must get no weight"


@pytest.mark.parametrize("size", [(30, 30), (36, 24), (31, 33)])
def test_patch_embedding_is_the_strided_convolution(size):
    x = randn(2, 3, *size)
    w = randn(21, 3, 6, 6, scale=0.3)
    ref = F.conv2d(t(x), t(w), stride=6).flatten(2).transpose(1, 2)
    assert_close(ops.patch_embedding(x, w), ref, "op", f"patch_embedding {size}")


@pytest.mark.parametrize("grid,out", [((7, 7), (7, 7)), ((7, 7), (10, 12)), ((7, 7), (3, 5)), ((5, 5), (16, 9)),
                                      ((1, 1), (4, 4))])
def test_bicubic_resize_matches_torch_interpolate(grid, out):
    g = randn(*grid, 21)
    ref = F.interpolate(t(g).permute(2, 0, 1)[None], size=out, mode="bicubic", align_corners=False)
    resized = ops.bicubic_resize(g, *out)
    assert resized.dtype == np.float32
    assert_close(resized, ref[0].permute(1, 2, 0), "op", f"bicubic {grid}->{out}")


def test_ops_keep_float16():
    x = randn(2, 4, 21).astype(np.float16)
    w = randn(21).astype(np.float16)
    assert ops.layer_norm(x, w, w, 1e-5).dtype == np.float16
    assert ops.softmax(x).dtype == np.float16
    assert ops.quick_gelu(x).dtype == np.float16


def test_activations_of_extreme_values_are_exact_and_silent():
    import warnings

    x = np.array([-1e4, -60.0, 0.0, 60.0, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, g = ops.quick_gelu(x), ops.gelu(x)
        q16 = ops.quick_gelu(x[1:4].astype(np.float16))
    np.testing.assert_array_equal(q[2:], [0.0, 60.0, 1e4])
    np.testing.assert_array_equal(g[2:], [0.0, 60.0, 1e4])
    assert abs(q[0]) < 1e-30 and abs(g[0]) < 1e-30 and np.isfinite(q16).all()


def test_float16_attention_masks_in_float32_silently():
    """A float16 score plus float16's most negative value overflows float16: the scores are scaled and
    masked in float32, so the result equals float32 attention on the same inputs, without a warning."""
    import warnings

    q, k, v = (randn(2, 3, 7, 8, scale=4.0).astype(np.float16) for _ in range(3))
    allowed = np.tril(np.ones((7, 7), dtype=bool))[None, None]
    mask16 = ops.additive_mask(allowed, np.dtype(np.float16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, weights = ops.attention(q, k, v, mask16)
    assert out.dtype == weights.dtype == np.float16
    want_out, want_w = ops.attention(*(a.astype(np.float32) for a in (q, k, v)), ops.additive_mask(allowed, np.dtype(np.float32)))
    assert_close(weights, want_w, "op-float16", "float16 weights")
    assert_close(out, want_out, "op-float16", "float16 output")
    assert (weights[..., ~allowed[0, 0]] == 0).all()
