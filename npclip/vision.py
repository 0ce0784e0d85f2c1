"""The vision tower: patches, class token and positions, a pre-norm, the encoder, the pooled class token.

Reproduces transformers' CLIPVisionEmbeddings and CLIPVisionModel.forward.
"""

from __future__ import annotations

from .backend import array_namespace, kernels
from .encoder import encoder, encoder_layer
from .ops import bicubic_resize, patch_embedding


def position_embeddings(position_embedding, grid_h, grid_w, interpolate):
    """The position table for a grid_h x grid_w patch grid, resized bicubically when it differs
    from the trained square grid (transformers' interpolate_pos_encoding).

    position_embedding: [1 + G*G, D] -> [1 + grid_h*grid_w, D]
    """
    xp = array_namespace(position_embedding)
    n, D = position_embedding.shape
    G = int(round((n - 1) ** 0.5))
    if not interpolate or (grid_h * grid_w == n - 1 and grid_h == grid_w):
        return position_embedding
    grid = position_embedding[1:].reshape(G, G, D)  # [G, G, D]
    patches = bicubic_resize(grid, grid_h, grid_w).reshape(grid_h * grid_w, D)  # [grid_h*grid_w, D]
    return xp.concatenate([position_embedding[:1], patches])  # [1 + grid_h*grid_w, D]


def vision_embeddings(pixel_values, class_embedding, patch_weight, position_embedding, interpolate=False):
    """Patch embedding, the class token in front, positions added.

    pixel_values: [B, C, Hi, Wi], class_embedding: [D], patch_weight: [D, C, P, P],
    position_embedding: [1 + G*G, D] -> [B, N, D] with N = 1 + (Hi // P) * (Wi // P)
    """
    xp = array_namespace(pixel_values)
    B, _, Hi, Wi = pixel_values.shape
    D, _, P, _ = patch_weight.shape
    patches = patch_embedding(pixel_values, patch_weight)  # [B, N-1, D]
    x = xp.empty((B, patches.shape[1] + 1, D), dtype=patches.dtype)  # [B, N, D]
    x[:, 0] = class_embedding
    x[:, 1:] = patches
    x += position_embeddings(position_embedding, Hi // P, Wi // P, interpolate)  # [N, D] broadcast
    return x


def vision_input(pixel_values, params, cfg, interpolate_pos_encoding=False, record=None):
    """Embeddings and the pre-encoder layer norm. pixel_values: [B, C, Hi, Wi] -> [B, N, D]"""
    x = vision_embeddings(pixel_values, params["vision_model.embeddings.class_embedding"],
                          params["vision_model.embeddings.patch_embedding.weight"],
                          params["vision_model.embeddings.position_embedding.weight"],
                          interpolate_pos_encoding)  # [B, N, D]
    if record is not None:
        record("vision_model.embeddings", x)
    x = kernels(x).layer_norm(x, params["vision_model.pre_layrnorm.weight"],
                              params["vision_model.pre_layrnorm.bias"], cfg.layer_norm_eps)  # [B, N, D]
    if record is not None:
        record("vision_model.pre_layrnorm", x)
    return x


def vision_transformer(pixel_values, params, layers, cfg, interpolate_pos_encoding=False,
                       output_hidden_states=False, output_attentions=False, record=None):
    """The whole vision tower (transformers' CLIPVisionModel.forward).

    pixel_values: [B, C, Hi, Wi] -> last_hidden_state [B, N, D], pooled [B, D], hidden states, attentions
    """
    x = vision_input(pixel_values, params, cfg, interpolate_pos_encoding, record)  # [B, N, D]
    last, hidden_states, attentions = encoder(
        x, layers, cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, None,
        output_hidden_states, output_attentions, record, "vision_model.")  # [B, N, D]
    pooled = post_layernorm(last[:, 0], params, cfg)  # [B, D], the class token
    if record is not None:
        record("vision_model.post_layernorm", pooled)
    return last, pooled, hidden_states, attentions


def pooled_image(pixel_values, params, layers, cfg, interpolate_pos_encoding=False):
    """The pooled state alone (vision_transformer's second output), computing only what it depends on.

    The pooled state is the class token's. In the last layer every patch is still a key and a value
    for the class token, but nothing reads the patches' own outputs, so that layer's attention
    output, projection and MLP are computed for the class token only (a twelfth less work for
    ViT-B/32). pixel_values: [B, C, Hi, Wi] -> [B, D]
    """
    x = vision_input(pixel_values, params, cfg, interpolate_pos_encoding)  # [B, N, D]
    if not layers:
        return post_layernorm(x[:, 0], params, cfg)
    heads, eps, act = cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act
    x, _, _ = encoder(x, layers[:-1], heads, eps, act)  # [B, N, D]
    x, _ = encoder_layer(x, layers[-1], heads, eps, act, need_weights=False, rows=slice(0, 1))  # [B, 1, D]
    return post_layernorm(x[:, 0], params, cfg)  # [B, D]


def post_layernorm(class_token, params, cfg):
    """The layer norm on the class token's last state. [B, D] -> [B, D]"""
    return kernels(class_token).layer_norm(class_token, params["vision_model.post_layernorm.weight"],
                                           params["vision_model.post_layernorm.bias"], cfg.layer_norm_eps)
