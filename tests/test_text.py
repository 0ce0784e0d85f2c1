"""The text tower against transformers: every hidden state, every attention map, the pooled token."""

import numpy as np
import pytest

from checkpoints import TINY_TEXT, load_reference
from conftest import assert_close, reference
from parity import TOWER_FIELDS, VARIANTS, compare_outputs, text_inputs
from npclip import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, text
from npclip.text import pack_rows, pooled_positions

torch = reference("torch")
reference("transformers")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_text_model_matches_transformers(checkpoints, variant, backend):
    directory = checkpoints(variant, "CLIPTextModel")
    ref = load_reference(directory, "CLIPTextModel")
    ours = CLIPTextModel.from_pretrained(directory, backend=backend)
    ids, mask = text_inputs(VARIANTS[variant]["text"])
    with torch.no_grad():
        r = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True,
                output_attentions=True)
    o = ours(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    n = compare_outputs(o, r, f"{variant}.text", TOWER_FIELDS)
    assert n == 2 + 2 * TINY_TEXT["num_hidden_layers"] + 1


def test_text_model_without_mask_and_with_position_ids(checkpoints, backend):
    directory = checkpoints("tiny", "CLIPTextModel")
    ref, ours = load_reference(directory, "CLIPTextModel"), CLIPTextModel.from_pretrained(directory, backend=backend)
    ids, _ = text_inputs(TINY_TEXT, seed=3)
    pos = np.tile(np.arange(ids.shape[1])[::-1].copy(), (ids.shape[0], 1))
    with torch.no_grad():
        r0 = ref(input_ids=torch.from_numpy(ids))
        r1 = ref(input_ids=torch.from_numpy(ids), position_ids=torch.from_numpy(pos))
    compare_outputs(ours(input_ids=ids), r0, "no mask", ("last_hidden_state", "pooler_output"))
    compare_outputs(ours(input_ids=ids, position_ids=pos), r1, "position_ids", ("last_hidden_state", "pooler_output"))


@pytest.mark.parametrize("variant", ["tiny", "legacy-eos"])
def test_text_model_with_projection(checkpoints, variant, backend):
    directory = checkpoints(variant, "CLIPTextModelWithProjection")
    ref = load_reference(directory, "CLIPTextModelWithProjection")
    ours = CLIPTextModelWithProjection.from_pretrained(directory, backend=backend)
    ids, mask = text_inputs(VARIANTS[variant]["text"], seed=1)
    with torch.no_grad():
        r = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    compare_outputs(ours(input_ids=ids, attention_mask=mask, output_hidden_states=True), r, variant,
                    ("text_embeds", "last_hidden_state", "hidden_states"))


def test_pooled_position_rules():
    ids = np.array([[9, 5, 7, 7, 3], [9, 8, 2, 7, 7]])
    np.testing.assert_array_equal(pooled_positions(ids, 7), [2, 3])  # the first eos
    np.testing.assert_array_equal(pooled_positions(ids, 2), [0, 0])  # legacy: the highest id, first of them
    np.testing.assert_array_equal(pooled_positions(np.array([[1, 2, 3]]), 7), [0])  # no eos: position 0


def test_text_errors_are_clear(checkpoints):
    model = CLIPTextModel.from_pretrained(checkpoints("tiny", "CLIPTextModel"))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 99\)"):
        model(input_ids=np.array([[1, 99]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=np.ones((1, 22), dtype=np.int64))
    with pytest.raises(ValueError, match="integer"):
        model(input_ids=np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(input_ids=np.ones((2, 3), dtype=np.int64), attention_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="specify input_ids"):
        model()


@pytest.mark.parametrize("seed", range(20))
def test_pack_rows_places_every_sequence_once_without_overlap(seed):
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(1, 40))
    lengths = [int(n) for n in rng.integers(1, capacity + 1, int(rng.integers(0, 30)))]
    row, start, rows, width = pack_rows(lengths, capacity)
    slots = {}
    for b, n in enumerate(lengths):
        assert 0 <= row[b] < rows and 0 <= start[b] and start[b] + n <= width <= capacity
        for c in range(start[b], start[b] + n):
            assert slots.setdefault((row[b], c), b) == b, f"sequences {slots[(row[b], c)]} and {b} overlap"
    assert len(slots) == sum(lengths)
    assert rows <= max(1, 2 * -(-sum(lengths) // capacity)) if lengths else rows == 0  # first fit: < half empty


def _pooled_inputs(seed=5):
    """Texts of many lengths, a mask with holes and left padding, and unusual position ids."""
    ids, mask = text_inputs(TINY_TEXT, batch=7, seed=seed)
    mask[1, 2] = 0  # a hole before the end-of-text token
    mask[2, :1] = 0  # left padding
    pos = np.tile(np.arange(ids.shape[1])[::-1].copy(), (ids.shape[0], 1))
    return ids, mask, pos


@pytest.mark.parametrize("width", [1, 5, 64])
@pytest.mark.parametrize("variant", ["tiny", "legacy-eos"])
def test_packed_text_features_equal_the_whole_forward(checkpoints, monkeypatch, variant, width, backend):
    """get_text_features cuts each text after its pooled token and packs the texts into rows (text.pooled_text):
    it must give transformers' text features, for every row width (1: one text per row, longer than the width)."""
    directory = checkpoints(variant)
    ref, ours = load_reference(directory), CLIPModel.from_pretrained(directory, backend=backend)
    monkeypatch.setattr(text, "PACK_WIDTH", width)
    ids, mask, pos = _pooled_inputs()
    for kwargs in (dict(attention_mask=mask), dict(attention_mask=mask, position_ids=pos), {}):
        with torch.no_grad():
            want = ref.get_text_features(input_ids=torch.from_numpy(ids),
                                         **{k: torch.from_numpy(v) for k, v in kwargs.items()})
        assert_close(ours.get_text_features(ids, **kwargs), getattr(want, "pooler_output", want),
                     where=f"{variant} width {width} {sorted(kwargs)}")


def test_pooled_token_that_sees_nothing_falls_back_to_the_whole_batch(checkpoints, monkeypatch):
    """A pooled token whose every key is masked gets uniform weights over its whole row, as in transformers:
    a cut text cannot reproduce that, so the batch is computed uncut."""
    directory = checkpoints("tiny")
    ref, ours = load_reference(directory), CLIPModel.from_pretrained(directory)
    ids, mask, _ = _pooled_inputs()
    mask[3, : int(pooled_positions(ids, TINY_TEXT["eos_token_id"])[3]) + 1] = 0
    calls, whole = [], text.text_transformer
    monkeypatch.setattr(text, "text_transformer", lambda *a, **k: calls.append(1) or whole(*a, **k))
    with torch.no_grad():
        want = ref.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert_close(ours.get_text_features(ids, mask), getattr(want, "pooler_output", want), where="fallback")
    assert calls == [1]

