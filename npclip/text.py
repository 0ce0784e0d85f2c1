"""The text tower: token and position embeddings, a causal encoder, the pooled end-of-text token.

Reproduces transformers' CLIPTextEmbeddings and CLIPTextModel.forward.
"""

from __future__ import annotations

from .backend import array_namespace, kernels
from .encoder import encoder
from .ops import additive_mask, causal_mask


def text_embeddings(input_ids, position_ids, token_embedding, position_embedding):
    """Look up tokens and add positions.

    input_ids: [B, T] int, position_ids: [B or 1, T] int, token_embedding: [V, D],
    position_embedding: [Tmax, D] -> [B, T, D]
    """
    x = token_embedding[input_ids]  # [B, T, D], a new array
    x += position_embedding[position_ids]  # [B or 1, T, D] broadcast
    return x


def text_attention_mask(attention_mask, T, dtype, xp):
    """The causal mask, combined with the padding mask when given, as an additive mask.

    attention_mask: [B, T] of 0/1 or None -> [B or 1, 1, T, T] (0 where allowed, most negative elsewhere)
    """
    allowed = causal_mask(T, xp)[None, None]  # [1, 1, T, T]: query i sees keys j <= i
    if attention_mask is not None:
        allowed = allowed & (attention_mask[:, None, None, :] != 0)  # [B, 1, T, T]: and only real keys
    return additive_mask(allowed, dtype)


def pooled_positions(input_ids, eos_token_id):
    """Which token's state is the sentence's: the first end-of-text token.

    Configs saved before transformers PR #24773 have eos_token_id == 2; for them, as openai/CLIP
    does, take the highest id in each row (the end-of-text token has the highest id in the vocabulary).
    input_ids: [B, T] -> [B] int
    """
    xp = array_namespace(input_ids)
    if eos_token_id == 2:
        return xp.argmax(input_ids, axis=-1)  # [B]: first position of the largest id
    return xp.argmax(input_ids == eos_token_id, axis=-1)  # [B]: first eos (0 if none, as transformers)


def text_transformer(input_ids, attention_mask, position_ids, params, layers, cfg,
                     output_hidden_states=False, output_attentions=False, record=None):
    """The whole text tower (transformers' CLIPTextModel.forward).

    input_ids: [B, T] -> last_hidden_state [B, T, D], pooled [B, D], hidden states, attentions
    """
    xp = array_namespace(params["text_model.final_layer_norm.weight"])
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = xp.arange(T)[None]  # [1, T]
    x = text_embeddings(input_ids, position_ids, params["text_model.embeddings.token_embedding.weight"],
                        params["text_model.embeddings.position_embedding.weight"])  # [B, T, D]
    if record is not None:
        record("text_model.embeddings", x)
    mask = text_attention_mask(attention_mask, T, x.dtype, xp)  # [B or 1, 1, T, T]
    x, hidden_states, attentions = encoder(
        x, layers, cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, mask,
        output_hidden_states, output_attentions, record, "text_model.")
    last = kernels(x).layer_norm(x, params["text_model.final_layer_norm.weight"],
                                 params["text_model.final_layer_norm.bias"], cfg.layer_norm_eps)  # [B, T, D]
    pooled = last[xp.arange(B), pooled_positions(input_ids, cfg.eos_token_id)]  # [B, D]
    if record is not None:
        record("text_model.final_layer_norm", last)
        record("text_model.pooler_output", pooled)
    return last, pooled, hidden_states, attentions
