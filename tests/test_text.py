"""The text tower against transformers: every hidden state, every attention map, the pooled token."""

import numpy as np
import pytest

from checkpoints import TINY_TEXT, load_reference
from conftest import reference
from parity import TOWER_FIELDS, VARIANTS, compare_outputs, text_inputs
from npclip import CLIPTextModel, CLIPTextModelWithProjection
from npclip.text import pooled_positions

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
