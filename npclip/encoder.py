"""The transformer encoder both towers share: pre-norm layers of attention and an MLP.

Each function takes its weights as a dict keyed like the checkpoint inside one layer
(``layer_norm1.weight``, ``self_attn.qkv_proj.weight``, ``mlp.fc1.bias``, ...; q/k/v are
stacked by weights.fuse_qkv). ``record(name, array)``, when given, receives every
intermediate array under its Hugging Face module name (see npclip.verify); recording costs
copies, and nothing when ``record`` is None.
"""

from __future__ import annotations

from .backend import kernels
from .ops import activation, linear, merge_heads, split_heads


def self_attention(x, w, num_heads, mask=None, need_weights=True, rows=slice(None), residual=None):
    """Multi-head self-attention (transformers' CLIPAttention) with one fused q/k/v product.

    rows: the positions whose outputs are wanted (all by default); every position is still a key.
    residual: [B, Q, D] or None, added to the output by the output projection (on the GPU in the same
    pass as its bias).
    x: [B, L, D] -> out [B, Q, D], weights [B, H, Q, L] (None when need_weights is False), Q = rows taken
    """
    fn = kernels(x)
    D = x.shape[-1]
    qkv = fn.linear(x, w["self_attn.qkv_proj.weight"], w["self_attn.qkv_proj.bias"])  # [B, L, 3D]
    q = split_heads(qkv[:, rows, :D], num_heads)  # [B, H, Q, Dh], a view
    k = split_heads(qkv[..., D : 2 * D], num_heads)  # [B, H, L, Dh], a view
    v = split_heads(qkv[..., 2 * D :], num_heads)  # [B, H, L, Dh], a view
    if mask is not None:
        mask = mask[..., rows, :]  # [B or 1, 1, Q, L]
    out, weights = fn.attention(q, k, v, mask, need_weights)  # [B, H, Q, Dh], [B, H, Q, L] or None
    out = fn.linear(merge_heads(out), w["self_attn.out_proj.weight"], w["self_attn.out_proj.bias"],
                    residual)  # [B, Q, D]
    return out, weights


def mlp(x, w, act, record=None, name="", residual=None):
    """fc1, activation, fc2 (transformers' CLIPMLP), plus residual [B, L, D] if given (added by fc2).
    act: "quick_gelu" or "gelu". x: [B, L, D] -> [B, L, D]"""
    if record is None:
        h = kernels(x).linear_activation(x, w["mlp.fc1.weight"], w["mlp.fc1.bias"], act)  # [B, L, F]
    else:  # step by step, so that the pre-activation can be recorded too
        h = linear(x, w["mlp.fc1.weight"], w["mlp.fc1.bias"])  # [B, L, F]
        record(name + "mlp.fc1", h)
        h = activation(act)(h)  # [B, L, F], a new array
        record(name + "mlp.activation_fn", h)
    return kernels(x).linear(h, w["mlp.fc2.weight"], w["mlp.fc2.bias"], residual)  # [B, L, D]


def encoder_layer(x, w, num_heads, eps, act, mask=None, record=None, name="", need_weights=True, rows=slice(None)):
    """x + attention(LN1(x)), then + mlp(LN2(.)) (transformers' CLIPEncoderLayer).

    rows: the positions whose outputs are wanted (all by default): a layer whose other outputs
    nothing reads (the last, under a pooled output) computes the MLP for those rows only.
    x: [B, L, D] -> [B, Q, D] (Q = rows taken), attention weights [B, H, Q, L]
    """
    k = kernels(x)
    # The skip connections are added by the output projections (one pass with their biases on the GPU),
    # except when recording: transformers' module outputs come before them.
    fuse = record is None
    skip = x[:, rows]  # [B, Q, D], read only: the residuals go into fresh arrays, so x is never modified
    h = k.layer_norm(x, w["layer_norm1.weight"], w["layer_norm1.bias"], eps)  # [B, L, D]
    _record(record, name + "layer_norm1", h)
    h, weights = self_attention(h, w, num_heads, mask, need_weights, rows,
                                skip if fuse else None)  # [B, Q, D], [B, H, Q, L] or None
    if not fuse:
        _record(record, name + "self_attn", h)
        h += skip
    x = h
    h = k.layer_norm(x, w["layer_norm2.weight"], w["layer_norm2.bias"], eps)  # [B, Q, D]
    _record(record, name + "layer_norm2", h)
    h = mlp(h, w, act, record, name, x if fuse else None)  # [B, Q, D]
    if not fuse:
        _record(record, name + "mlp", h)
        h += x  # residual
    _record(record, name[:-1], h)
    return h, weights


def encoder(x, layers, num_heads, eps, act, mask=None, output_hidden_states=False,
            output_attentions=False, record=None, prefix=""):
    """All layers in turn (transformers' CLIPEncoder).

    x: [B, L, D] -> last [B, L, D], hidden states (L+1 arrays, input first) or None,
    attention weights (one [B, H, L, L] per layer) or None
    """
    hidden_states = [x] if output_hidden_states else None
    attentions = [] if output_attentions else None
    for i, w in enumerate(layers):
        x, weights = encoder_layer(x, w, num_heads, eps, act, mask, record, f"{prefix}encoder.layers.{i}.",
                                   need_weights=output_attentions)
        if output_hidden_states:
            hidden_states.append(x)
        if output_attentions:
            attentions.append(weights)
    return x, _tuple(hidden_states), _tuple(attentions)


def _record(record, name, array):
    if record is not None:
        record(name, array.copy())  # a copy: the layer goes on to add the residual into its own array


def _tuple(items):
    return None if items is None else tuple(items)
