"""The text tower: token and position embeddings, a causal encoder, the pooled end-of-text token.

Reproduces transformers' CLIPTextEmbeddings and CLIPTextModel.forward.
"""

from __future__ import annotations

from .backend import array_namespace, kernels
from .encoder import encoder
from .ops import additive_mask, causal_mask

PACK_WIDTH = 64  # tokens per packed row (at least the longest text): see pooled_text


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


# ----------------------------------------------------------------------------------------------
# Pooled states only: each text cut after its pooled token, the texts packed into rows


def pack_rows(lengths, capacity):
    """Place sequences end to end in rows of at most ``capacity`` tokens, longest first, each into
    the first row with room for it (first-fit decreasing bin packing).

    lengths: B ints, none over capacity -> row [B], start [B] (each sequence's first column), rows, width
    """
    fill = []  # tokens used in each row so far
    row, start = [0] * len(lengths), [0] * len(lengths)
    shortest, first = min(lengths, default=0), 0  # rows before `first` have no room left for any sequence
    for b in sorted(range(len(lengths)), key=lambda b: -lengths[b]):
        while first < len(fill) and fill[first] + shortest > capacity:
            first += 1
        r = next((r for r in range(first, len(fill)) if fill[r] + lengths[b] <= capacity), len(fill))
        if r == len(fill):
            fill.append(0)
        row[b], start[b] = r, fill[r]
        fill[r] += lengths[b]
    return row, start, len(fill), max(fill, default=0)


def pooled_text(input_ids, attention_mask, position_ids, params, layers, cfg):
    """The pooled state of each text, computing only the tokens it depends on: [B, D].

    Under the causal mask nothing after a text's pooled (end-of-text) token can change that token's
    state, so each text is cut after it, and the cut texts are packed end to end into rows of
    ``PACK_WIDTH`` tokens (pack_rows). A mask that is block-diagonal (a token sees only earlier tokens
    of its own text) and position ids that start again for each text make every packed text compute
    what it computes alone. A batch padded to 77 tokens, or texts of very different lengths, then
    cost only their real tokens; the result equals text_transformer's pooled output to rounding.

    input_ids, attention_mask (or None), position_ids (or None): [B, T] -> [B, D]
    """
    xp = array_namespace(params["text_model.final_layer_norm.weight"])
    B, T = input_ids.shape
    keys = xp.ones((B, T), dtype=bool) if attention_mask is None else attention_mask != 0  # [B, T]
    pos = xp.broadcast_to(xp.arange(T) if position_ids is None else position_ids, (B, T))  # [B, T]
    pooled = pooled_positions(input_ids, cfg.eos_token_id)  # [B]
    seen = keys & (xp.arange(T)[None] <= pooled[:, None])  # [B, T]: keys at or before the pooled token
    if B == 0 or not bool(seen.any(axis=1).all()):
        # a pooled token that may attend to nothing gets uniform weights over its whole row in
        # text_transformer, which a cut text cannot reproduce: compute the batch as it is
        return text_transformer(input_ids, attention_mask, position_ids, params, layers, cfg)[1]
    lengths = [p + 1 for p in pooled.tolist()]  # tokens kept of each text
    row, start, G, W = pack_rows(lengths, max(PACK_WIDTH, max(lengths)))
    b = xp.repeat(xp.arange(B), lengths)  # [N]: the text of each kept token, N = sum(lengths)
    first = xp.cumsum(xp.asarray([0] + lengths[:-1]))  # [B]: where each text starts in the N tokens
    t = xp.arange(b.shape[0]) - xp.repeat(first, lengths)  # [N]: each token's position in its text
    r, c = xp.asarray(row)[b], xp.asarray(start)[b] + t  # [N]: its slot in the packed rows

    def packed(values, fill):  # [N] -> [G, W], fill in the empty slots
        out = xp.full((G, W), fill, dtype=values.dtype)
        out[r, c] = values
        return out

    text, index, key = packed(b, -1), packed(t, 0), packed(keys[b, t], False)  # [G, W] each
    allowed = ((text[:, :, None] == text[:, None, :]) & (index[:, None, :] <= index[:, :, None])
               & key[:, None, :])  # [G, W, W]: query i sees key j of its own text, j <= i
    x = text_embeddings(packed(input_ids[b, t], 0), packed(pos[b, t], 0),
                        params["text_model.embeddings.token_embedding.weight"],
                        params["text_model.embeddings.position_embedding.weight"])  # [G, W, D]
    mask = additive_mask(allowed[:, None], x.dtype)  # [G, 1, W, W]
    x, _, _ = encoder(x, layers, cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, mask)
    rows = x[xp.asarray(row), xp.asarray(start) + pooled]  # [B, D]: each text's pooled token
    return kernels(rows).layer_norm(rows, params["text_model.final_layer_norm.weight"],
                                    params["text_model.final_layer_norm.bias"], cfg.layer_norm_eps)  # [B, D]
