"""The vision tower against transformers: every hidden state, every attention map, the pooled class token."""

import numpy as np
import pytest

from checkpoints import TINY_VISION, load_reference
from conftest import assert_close, reference
from parity import TOWER_FIELDS, VARIANTS, compare_outputs, pixel_inputs
from npclip import CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection
from npclip.encoder import encoder_layer

torch = reference("torch")
reference("transformers")


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "legacy-eos"])
def test_vision_model_matches_transformers(checkpoints, variant, backend):
    directory = checkpoints(variant, "CLIPVisionModel")
    ref, ours = load_reference(directory, "CLIPVisionModel"), CLIPVisionModel.from_pretrained(directory, backend=backend)
    px = pixel_inputs(VARIANTS[variant]["vision"])
    with torch.no_grad():
        r = ref(pixel_values=torch.from_numpy(px), output_hidden_states=True, output_attentions=True)
    o = ours(pixel_values=px, output_hidden_states=True, output_attentions=True)
    n = compare_outputs(o, r, f"{variant}.vision", TOWER_FIELDS)
    assert n == 2 + 2 * TINY_VISION["num_hidden_layers"] + 1


@pytest.mark.parametrize("size", [(30, 30), (42, 42), (36, 54), (24, 30)])
def test_interpolate_pos_encoding(checkpoints, size, backend):
    directory = checkpoints("tiny", "CLIPVisionModelWithProjection")
    ref = load_reference(directory, "CLIPVisionModelWithProjection")
    ours = CLIPVisionModelWithProjection.from_pretrained(directory, backend=backend)
    px = pixel_inputs(TINY_VISION, size=size)
    with torch.no_grad():
        r = ref(pixel_values=torch.from_numpy(px), interpolate_pos_encoding=True, output_hidden_states=True)
    o = ours(pixel_values=px, interpolate_pos_encoding=True, output_hidden_states=True)
    compare_outputs(o, r, f"interpolate {size}", ("image_embeds", "last_hidden_state", "hidden_states"))


def test_vision_input_errors_are_clear(checkpoints):
    model = CLIPVisionModel.from_pretrained(checkpoints("tiny", "CLIPVisionModel"))
    with pytest.raises(ValueError, match=r"channels first"):
        model(pixel_values=np.zeros((1, 30, 30, 3), np.float32))
    with pytest.raises(ValueError, match=r"channels first"):
        model(pixel_values=np.zeros((30, 30), np.float32))
    with pytest.raises(ValueError, match=r"Input image size \(32\*30\) doesn't match model \(30\*30\)"):
        model(pixel_values=np.zeros((1, 3, 32, 30), np.float32))
    with pytest.raises(ValueError, match="specify pixel_values"):
        model()


def test_float64_pixels_are_computed_in_float32(checkpoints):
    model = CLIPVisionModel.from_pretrained(checkpoints("tiny", "CLIPVisionModel"))
    px = pixel_inputs(TINY_VISION)
    out64 = model(pixel_values=px.astype(np.float64))
    assert out64.last_hidden_state.dtype == np.float32
    np.testing.assert_array_equal(out64.pooler_output, model(pixel_values=px).pooler_output)


@pytest.mark.parametrize("size", [(30, 30), (36, 54)])
def test_image_features_compute_the_last_layer_for_the_class_token_only(checkpoints, size, backend):
    """get_image_features runs the last layer's MLP for the class token alone (vision.pooled_image):
    it must still give transformers' image features, with and without interpolated positions."""
    directory = checkpoints("tiny")
    ref, ours = load_reference(directory), CLIPModel.from_pretrained(directory, backend=backend)
    px = pixel_inputs(TINY_VISION, batch=3, size=size)
    interpolate = size != (30, 30)
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=torch.from_numpy(px), interpolate_pos_encoding=interpolate)
    assert_close(ours.get_image_features(px, interpolate_pos_encoding=interpolate),
                 getattr(want, "pooler_output", want), where=f"image features {size}")


@pytest.mark.parametrize("rows", [slice(0, 1), slice(2, 5), slice(None)])
def test_encoder_layer_rows_are_those_of_the_whole_layer(checkpoints, rows):
    model = CLIPVisionModel.from_pretrained(checkpoints("tiny", "CLIPVisionModel"))
    cfg = model.config
    x = np.random.default_rng(0).standard_normal((2, 26, cfg.hidden_size)).astype(np.float32)
    mask = np.where(np.random.default_rng(1).random((2, 1, 26, 26)) < 0.3, np.float32(-1e9), np.float32(0))
    w = model.vision_layers[0]
    args = (w, cfg.num_attention_heads, cfg.layer_norm_eps, cfg.hidden_act, mask)
    whole, whole_weights = encoder_layer(x, *args)
    part, part_weights = encoder_layer(x, *args, rows=rows)
    assert_close(part, whole[:, rows], "op", where=f"rows {rows}")
    assert_close(part_weights, whole_weights[:, :, rows], "op", where=f"attention weights, rows {rows}")
