"""The array functions CLIP is made of, each small, each written against ``xp``.

Shape symbols used in every module of npclip:

    B batch    T text tokens    N image patches + 1 (class token)    L either T or N
    D width    H heads          Dh head width (D / H)                F MLP width
    E projection width          C channels      P patch size        G patch-grid side

All functions keep the dtype of their input (float32 unless asked otherwise), build
their constants in that dtype, never modify their inputs, and work element-wise in
place on their own temporaries only.
"""

from __future__ import annotations

import math

from .backend import array_namespace


def linear(x, weight, bias=None, residual=None):
    """``x @ weight.T + bias`` (torch.nn.Linear), as one 2-D matrix product, then ``+ residual`` if given
    (a layer's skip connection, taken here so that a backend can add it in the same pass as the bias).

    x: [..., Din], weight: [Dout, Din], bias: [Dout], residual: [..., Dout] -> [..., Dout]
    """
    xp = array_namespace(x)
    lead = x.shape[:-1]
    y = xp.matmul(x.reshape(-1, x.shape[-1]), weight.T)  # [M, Din] @ [Din, Dout] -> [M, Dout]
    if bias is not None:
        y += bias
    y = y.reshape(*lead, weight.shape[0])
    if residual is not None:
        y += residual
    return y


def layer_norm(x, weight, bias, eps):
    """Layer normalisation over the last axis (torch.nn.LayerNorm), statistics in float32.

    x: [..., D], weight, bias: [D] -> [..., D], dtype of x
    """
    xp = array_namespace(x)
    xf = x.astype(xp.float32, copy=False)
    mean = xf.mean(axis=-1, keepdims=True)  # [..., 1]
    y = xf - mean  # [..., D], a new array
    var = xp.einsum("...d,...d->...", y, y)[..., None] / xp.float32(x.shape[-1])  # [..., 1], biased, as torch
    var += xp.float32(eps)
    y *= 1 / xp.sqrt(var)  # the reciprocal is taken on [..., 1] only
    y = y.astype(x.dtype, copy=False)
    y *= weight
    y += bias
    return y


def quick_gelu(x):
    """``x * sigmoid(1.702 * x)``, the activation of the OpenAI CLIP checkpoints, in float32.

    Written as ``x/2 * (1 + tanh(0.851 x))``, the same function (sigmoid(z) = (1 + tanh(z/2)) / 2),
    because tanh cannot overflow and is one pass cheaper than exp and a division; the result is
    within 7e-7 of the exact value, as the exp form is (docs/tolerances.md).
    x: [...] -> [...]
    """
    xp = array_namespace(x)
    t = x.astype(xp.float32, copy=False) * xp.float32(0.851)  # 1.702 x / 2, a new float32 array
    xp.tanh(t, out=t)
    t += 1
    t *= x
    t *= xp.float32(0.5)  # x/2 * (1 + tanh(0.851 x))
    return t.astype(x.dtype, copy=False)


# erf(x) = x * P(x^2) / Q(x^2) on |x| < 1: Eigen's (and XLA's) float32 rational approximation.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)
# erfc(z) = t * exp(-z^2 + C(t)), t = 1 / (1 + z/2), z >= 0: the Chebyshev fit of Numerical Recipes
# (fractional error < 1.2e-7), used where erf is close to +-1 and the rational form loses digits.
_ERFC_C = (0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
           0.37409196, 1.00002368, -1.26551223)


def _polyval(coefficients, z):
    """Horner's rule, highest power first, in the dtype of z."""
    xp = array_namespace(z)
    acc = xp.full_like(z, coefficients[0])
    for c in coefficients[1:]:
        acc *= z
        acc += z.dtype.type(c)
    return acc


def erf(x):
    """The error function in float32 (NumPy has none): within 2e-7 (3.3 ulp) of the exact value.

    x: [...] -> [...]; float16 input is computed in float32 and rounded once.
    """
    xp = array_namespace(x)
    xf = x.astype(xp.float32, copy=False)
    a = xp.abs(xf)
    z = xp.minimum(a, xp.float32(1)) ** 2
    inner = xf * _polyval(_ERF_P, z) / _polyval(_ERF_Q, z)  # accurate for |x| < 1
    t = 1 / (1 + xp.float32(0.5) * a)
    erfc = t * xp.exp(_polyval(_ERFC_C, t) - a * a)  # accurate for all x >= 0
    outer = xp.copysign(1 - erfc, xf)  # for |x| >= 1
    return xp.where(a < 1, inner, outer).astype(x.dtype, copy=False)


def gelu(x):
    """Exact GELU, ``x/2 * (1 + erf(x / sqrt(2)))`` (torch.nn.functional.gelu, approximate='none').

    x: [...] -> [...]
    """
    t = erf(x * x.dtype.type(1 / math.sqrt(2)))
    t += 1
    t *= x
    t *= x.dtype.type(0.5)
    return t


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": gelu}


def activation(name):
    """The activation function for a config's ``hidden_act``."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"hidden_act={name!r} is not supported: expected one of {sorted(ACTIVATIONS)}") from None


BLOCK_ROWS = 256  # rows of an MLP activation handled at a time by linear_activation


def linear_activation(x, weight, bias, name):
    """``activation(linear(x))`` in one call, so that a backend can fuse the bias and the activation.

    The bias and the activation are applied in place to blocks of BLOCK_ROWS rows of the product in
    turn, so that their passes run in cache and their temporaries stay small.
    x: [..., Din], weight: [Dout, Din], bias: [Dout] -> [..., Dout]
    """
    act = activation(name)
    y = linear(x, weight)  # [..., Dout], the product without its bias
    rows = y.reshape(-1, y.shape[-1])  # [M, Dout], a view
    for start in range(0, rows.shape[0], BLOCK_ROWS):
        block = rows[start : start + BLOCK_ROWS]  # [BLOCK_ROWS, Dout], a view
        block += bias
        block[...] = act(block)
    return y


def softmax(x, axis=-1, overwrite_input=False):
    """Numerically stable softmax, computed in float32 and returned in the dtype of x.

    overwrite_input: a float32 x may be used as the work array (and returned).
    x: [...] -> [...]
    """
    xp = array_namespace(x)
    e = x.astype(xp.float32, copy=not overwrite_input)
    e -= e.max(axis=axis, keepdims=True)
    xp.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def split_heads(x, num_heads):
    """[B, L, D] -> [B, H, L, Dh] (a view)."""
    B, L, D = x.shape
    return x.reshape(B, L, num_heads, D // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, H, L, Dh] -> [B, L, D] (one copy)."""
    B, H, L, Dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, H * Dh)


def attention(q, k, v, mask=None, need_weights=True):
    """Scaled dot-product attention with an additive mask; returns the output and the weights.

    q, k, v: [B, H, L, Dh], mask: broadcastable to [B, H, L, L] (0 or a large negative)
    -> out [B, H, L, Dh], weights [B, H, L, L] (None when need_weights is False).
    out is a view of a [B, L, H*Dh] array, so that merge_heads(out) is a free reshape.
    """
    xp = array_namespace(q)
    B, H, L, Dh = q.shape
    scores = xp.matmul(q, k.transpose(0, 1, 3, 2))  # [B, H, L, Dh] @ [B, H, Dh, L] -> [B, H, L, L]
    scores = scores.astype(xp.promote_types(scores.dtype, xp.float32), copy=False)  # float32 at least from here
    scores *= scores.dtype.type(Dh ** -0.5)
    if mask is not None:
        scores += mask  # in float16, a score plus float16's most negative value would overflow
    weights = softmax(scores, overwrite_input=True).astype(q.dtype, copy=False)  # [B, H, L, L]
    out = xp.empty((B, L, H, Dh), dtype=q.dtype).transpose(0, 2, 1, 3)  # [B, H, L, Dh], merged-head memory
    xp.matmul(weights, v, out=out)  # [B, H, L, L] @ [B, H, L, Dh] -> [B, H, L, Dh]
    return out, (weights if need_weights else None)


def additive_mask(allowed, dtype):
    """Boolean "may attend" mask -> 0 where allowed, the dtype's most negative value elsewhere.

    A fully masked row then softmaxes to uniform weights, as in transformers' eager attention.
    """
    xp = array_namespace(allowed)
    return xp.where(allowed, dtype.type(0), xp.finfo(dtype).min).astype(dtype, copy=False)


def causal_mask(T, xp):
    """[T, T] boolean: query i may attend to keys j <= i."""
    return xp.tril(xp.ones((T, T), dtype=bool))


def patch_embedding(pixel_values, weight):
    """A convolution with stride = kernel = P, written as one reshape and one matrix product.

    pixel_values: [B, C, G*P, G'*P], weight: [D, C, P, P] -> [B, G*G', D]
    """
    xp = array_namespace(pixel_values)
    B, C, Hi, Wi = pixel_values.shape
    D, _, P, _ = weight.shape
    gh, gw = Hi // P, Wi // P
    x = pixel_values[:, :, : gh * P, : gw * P]  # a strided conv ignores the leftover border
    x = x.reshape(B, C, gh, P, gw, P).transpose(0, 2, 4, 1, 3, 5)  # [B, gh, gw, C, P, P]
    x = x.reshape(B * gh * gw, C * P * P)  # [B*G*G', C*P*P], one copy
    y = xp.matmul(x, weight.reshape(D, C * P * P).T)  # [B*G*G', C*P*P] @ [C*P*P, D] -> [B*G*G', D]
    return y.reshape(B, gh * gw, D)


def _cubic_weights(t, A):
    """The four Keys cubic-convolution weights for fractional offsets t, as torch computes them
    (aten/src/ATen/native/UpSample.h: get_cubic_upsample_coefficients).
    t: [n] -> four arrays [n]
    """
    def near(s):  # |s| <= 1: cubic_convolution1
        return ((A + 2) * s - (A + 3)) * s * s + 1

    def far(s):  # 1 < |s| < 2: cubic_convolution2
        return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A

    return far(t + 1), near(t), near(1 - t), far((1 - t) + 1)


def bicubic_matrix(n_in, n_out, xp, dtype):
    """[n_out, n_in] matrix M such that ``M @ x`` resizes x along one axis exactly as torch's
    ``interpolate(mode="bicubic", align_corners=False)`` does (indices clamped at the borders).
    The weights are computed in float32, as torch computes them for float32 tensors.
    """
    f32 = xp.float32
    scale = f32(n_in / n_out)
    src = scale * (xp.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5)  # [n_out] source coordinates
    i0 = xp.floor(src)
    t = src - i0  # [n_out] fractional offsets
    columns = xp.arange(n_in)
    M = xp.zeros((n_out, n_in), dtype=f32)
    for k, w in enumerate(_cubic_weights(t, f32(-0.75))):
        idx = xp.clip(i0.astype(xp.int64) + (k - 1), 0, n_in - 1)  # [n_out], clamped at the borders
        M += (idx[:, None] == columns[None, :]) * w[:, None]  # one-hot rows scaled by the weight
    return M.astype(dtype, copy=False)


def bicubic_resize(grid, out_h, out_w):
    """Resize a [Gh, Gw, D] grid to [out_h, out_w, D] with torch's bicubic (align_corners=False).

    grid: [Gh, Gw, D] -> [out_h, out_w, D]
    """
    xp = array_namespace(grid)
    Gh, Gw, D = grid.shape
    Mh = bicubic_matrix(Gh, out_h, xp, grid.dtype)  # [out_h, Gh]
    Mw = bicubic_matrix(Gw, out_w, xp, grid.dtype)  # [out_w, Gw]
    rows = xp.matmul(Mh, grid.reshape(Gh, Gw * D)).reshape(out_h, Gw, D)  # along the height
    return xp.matmul(Mw, rows)  # [out_w, Gw] @ [out_h, Gw, D] -> [out_h, out_w, D], along the width
