"""Configs: transformers' defaults, config.json round trips, unknown keys kept, legacy layouts."""

import json

import pytest

from npclip import CLIPConfig, CLIPTextConfig, CLIPVisionConfig


def test_defaults_are_vit_b32():
    c = CLIPConfig()
    assert (c.text_config.hidden_size, c.text_config.num_hidden_layers, c.text_config.max_position_embeddings) == (
        512, 12, 77)
    assert (c.vision_config.hidden_size, c.vision_config.patch_size, c.vision_config.image_size) == (768, 32, 224)
    assert c.projection_dim == 512 and c.logit_scale_init_value == 2.6592
    assert c.text_config.eos_token_id == 49407 and c.text_config.hidden_act == "quick_gelu"


def test_matches_transformers_config_json(checkpoints):
    directory = checkpoints("tiny")
    raw = json.load(open(f"{directory}/config.json"))
    c = CLIPConfig.from_pretrained(directory)
    for key, value in raw["text_config"].items():
        if key not in ("dtype", "transformers_version"):
            assert getattr(c.text_config, key) == value, key
    assert c.vision_config.patch_size == raw["vision_config"]["patch_size"]
    assert CLIPTextConfig.from_pretrained(directory).hidden_size == raw["text_config"]["hidden_size"]
    assert CLIPVisionConfig.from_pretrained(directory).image_size == raw["vision_config"]["image_size"]


def test_unknown_keys_are_kept(tmp_path):
    c = CLIPTextConfig.from_dict({"hidden_size": 64, "num_attention_heads": 4, "my_key": [1, 2]})
    assert c.my_key == [1, 2]
    c.save_pretrained(tmp_path)
    assert CLIPTextConfig.from_pretrained(tmp_path).my_key == [1, 2]
    with pytest.raises(AttributeError):
        c.not_there


def test_legacy_config_dict_keys_win():
    c = CLIPConfig.from_dict({"text_config": {"hidden_size": 512}, "text_config_dict": {"hidden_size": 256,
                              "num_attention_heads": 4}, "vision_config_dict": {"patch_size": 16}})
    assert c.text_config.hidden_size == 256 and c.vision_config.patch_size == 16


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        CLIPTextConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        CLIPVisionConfig(image_size=30, patch_size=7)
