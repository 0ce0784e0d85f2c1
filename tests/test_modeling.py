"""The joint model and the classification head against transformers, including ViT-B/32 at full size."""

import numpy as np
import pytest

from checkpoints import TINY_TEXT, TINY_VISION, load_reference
from conftest import DATA, assert_close, reference
from parity import TOWER_FIELDS, VARIANTS, compare_outputs, pixel_inputs, text_inputs
from npclip.ops import linear
from npclip import CLIPForImageClassification, to_numpy, CLIPModel, CLIPTextModel, CLIPVisionModelWithProjection

torch = reference("torch")
transformers = reference("transformers")

CLIP_FIELDS = ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds", "loss")


def check_clip(directory, ids, mask, px, where, backend="numpy"):
    ref, ours = load_reference(directory), CLIPModel.from_pretrained(directory, backend=backend)
    with torch.no_grad():
        r = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                pixel_values=torch.from_numpy(px), return_loss=True, output_hidden_states=True,
                output_attentions=True)
        r_text = ref.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        r_image = ref.get_image_features(pixel_values=torch.from_numpy(px))
    o = ours(input_ids=ids, attention_mask=mask, pixel_values=px, return_loss=True, output_hidden_states=True,
             output_attentions=True)
    compare_outputs(o, r, where, CLIP_FIELDS)
    fields = tuple(f for f in TOWER_FIELDS if f != "pooler_output")
    compare_outputs(o.text_model_output, r.text_model_output, where + ".text_model_output", fields)
    compare_outputs(o.vision_model_output, r.vision_model_output, where + ".vision_model_output", fields)
    # npclip follows the seed document (transformers 4.56): text_model_output is the CLIPTextModel's output, its
    # pooler_output the pooled state. transformers 5 returns the *projected* pooled state there (its forward reuses
    # get_text_features), so compare ours after the projection (docs/tolerances.md, "Deviations").
    for tower, proj in (("text_model_output", "text_projection"), ("vision_model_output", "visual_projection")):
        pooled = getattr(o, tower).pooler_output
        hidden = (ours.text_config if tower == "text_model_output" else ours.vision_config).hidden_size
        assert pooled.shape[-1] == hidden, f"{tower}.pooler_output must be the unprojected pooled state"
        assert_close(linear(pooled, ours.params[proj + ".weight"]), getattr(r, tower).pooler_output,
                     where=f"{where}.{tower}.pooler_output (projected)")
    assert_close(ours.get_text_features(ids, mask), r_text.pooler_output, where=where + ".get_text_features")
    assert_close(ours.get_image_features(px), r_image.pooler_output, where=where + ".get_image_features")
    return ours, o


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_clip_model_matches_transformers(checkpoints, variant, backend):
    ids, mask = text_inputs(VARIANTS[variant]["text"], batch=2)
    px = pixel_inputs(VARIANTS[variant]["vision"], batch=2)
    _, o = check_clip(checkpoints(variant), ids, mask, px, variant, backend)
    o = to_numpy(o)
    assert np.isfinite(o.loss) and o.logits_per_image.shape == (2, 2)
    np.testing.assert_array_equal(o.logits_per_image, o.logits_per_text.T)


def test_text_features_of_padded_to_max_length_batch_equal_unpadded(checkpoints):
    model = CLIPModel.from_pretrained(checkpoints("tiny"))
    ids, mask = text_inputs(TINY_TEXT, batch=3)
    long_ids = np.concatenate([ids, np.full((3, 5), ids[0, -1])], axis=1)
    long_mask = np.concatenate([mask, np.zeros((3, 5), mask.dtype)], axis=1)
    full = CLIPTextModel.from_pretrained(checkpoints("tiny"))(input_ids=long_ids, attention_mask=long_mask)
    features = model.get_text_features(long_ids, long_mask)
    assert_close(features, model.get_text_features(ids, mask), where="padded vs unpadded")
    pooled_full = full.pooler_output @ model.params["text_projection.weight"].T
    assert_close(features, pooled_full, where="cut batch vs full forward")


@pytest.mark.slow
def test_vit_b32_full_size_on_real_photographs(tmp_path, backend):
    """The default config (ViT-B/32, 151M parameters) once, on the reference's pixel values."""
    from PIL import Image

    from checkpoints import make_checkpoint

    directory = make_checkpoint(tmp_path / "vit-b32")
    processor = transformers.CLIPImageProcessorPil()
    images = [Image.open(f"{DATA}/{name}.png") for name in ("chelsea", "astronaut")]
    px = processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)
    ids, mask = text_inputs({}, batch=2)
    check_clip(directory, ids, mask, px, "vit-b32", backend)


def test_loss_needs_matching_batches(checkpoints):
    model = CLIPModel.from_pretrained(checkpoints("tiny"))
    ids, mask = text_inputs(TINY_TEXT, batch=3)
    with pytest.raises(ValueError, match="as many texts as images"):
        model(input_ids=ids, attention_mask=mask, pixel_values=pixel_inputs(TINY_VISION, batch=2), return_loss=True)


@pytest.mark.parametrize("labels", ["int", "none"])
def test_image_classification_head(checkpoints, labels, backend):
    directory = checkpoints("tiny", "CLIPForImageClassification", num_labels=5)
    ref = load_reference(directory, "CLIPForImageClassification")
    ours = CLIPForImageClassification.from_pretrained(directory, backend=backend)
    px = pixel_inputs(TINY_VISION, batch=3)
    y = np.array([0, 4, 2]) if labels == "int" else None
    with torch.no_grad():
        r = ref(pixel_values=torch.from_numpy(px), labels=None if y is None else torch.from_numpy(y),
                output_hidden_states=True, output_attentions=True)
    o = ours(pixel_values=px, labels=y, output_hidden_states=True, output_attentions=True)
    fields = ("logits", "hidden_states", "attentions") + (("loss",) if labels == "int" else ())
    compare_outputs(o, r, "classification", fields)
    assert o.logits.shape == (3, 5)


def test_tower_from_whole_clip_checkpoint_ignores_the_other_tower(checkpoints):
    directory = checkpoints("tiny")
    ref = load_reference(directory)
    vision = CLIPVisionModelWithProjection.from_pretrained(directory)
    assert any(k.startswith("text_model.") for k in vision.ignored_weights)
    px = pixel_inputs(TINY_VISION)
    with torch.no_grad():
        r = ref.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output
    assert_close(vision(pixel_values=px).image_embeds, r, where="vision tower from CLIPModel checkpoint")


def test_model_from_in_memory_state_dict(checkpoints):
    directory = checkpoints("tiny")
    ref = load_reference(directory)
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    ours = CLIPModel(CLIPModel.config_class.from_pretrained(directory), state)
    ids, mask = text_inputs(TINY_TEXT, batch=2)
    with torch.no_grad():
        r = ref.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    assert_close(ours.get_text_features(ids, mask), r.pooler_output, where="from state_dict")


def test_no_random_initialisation(checkpoints):
    from npclip import CLIPConfig

    with pytest.raises(TypeError, match="no random initialisation"):
        CLIPModel(CLIPConfig())


def test_outputs_read_by_key_and_index(checkpoints):
    model = CLIPModel.from_pretrained(checkpoints("tiny"))
    ids, mask = text_inputs(TINY_TEXT, batch=2)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixel_inputs(TINY_VISION))
    assert out["logits_per_image"] is out.logits_per_image
    assert out[0] is out.logits_per_image  # loss is None, so the first field is logits_per_image
    assert "loss" not in out.keys()


def test_release_layers_frees_the_prepared_copies_and_a_later_use_prepares_them_again(checkpoints):
    import gc
    import weakref

    model = CLIPModel.from_pretrained(checkpoints("tiny"))
    ids, mask = text_inputs(TINY_TEXT, batch=3)
    before = np.asarray(model.get_text_features(ids, mask))
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    prepared = weakref.ref(model.text_layers[0]["mlp.fc1.weight"])
    assert model.params[name] is prepared() and prepared().flags.f_contiguous
    model.release_layers("vision")  # never prepared: nothing to do
    model.release_layers("text")
    gc.collect()
    assert prepared() is None, "the prepared copy is still referenced"
    assert model.params[name].flags.c_contiguous and "text_model.encoder.layers.0.self_attn.q_proj.weight" in model.params
    np.testing.assert_array_equal(model.get_text_features(ids, mask), before)  # prepared again, the same
    with pytest.raises(ValueError, match="'text' or 'vision'"):
        model.release_layers("audio")
