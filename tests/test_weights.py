"""Reading checkpoints: dtypes decoded exactly, shards, and errors that name the tensor and the file."""

import json
import os
import shutil

import numpy as np
import pytest

from checkpoints import TINY_TEXT
from conftest import reference
from npclip import CheckpointError, CLIPModel, CLIPTextModel
from npclip.weights import bfloat16_to_float32, load_checkpoint, read_safetensors

torch = reference("torch")


def test_float16_and_bfloat16_decode_exactly(tmp_path):
    from safetensors.torch import save_file

    x = torch.randn(7, 5) * 30
    save_file({"h": x.half(), "b": x.bfloat16(), "f": x}, str(tmp_path / "w.safetensors"))
    t = read_safetensors(tmp_path / "w.safetensors")
    assert all(v.dtype == np.float32 for v in t.values())
    np.testing.assert_array_equal(t["h"], x.half().float().numpy())
    np.testing.assert_array_equal(t["b"], x.bfloat16().float().numpy())
    np.testing.assert_array_equal(t["f"], x.numpy())
    assert isinstance(t["f"].base, np.memmap) or isinstance(t["f"], np.memmap) or not t["f"].flags.owndata


def test_bfloat16_special_values():
    bits = np.array([0x0000, 0x8000, 0x3F80, 0x7F80, 0xFF80, 0x7FC0], dtype=np.uint16)
    out = bfloat16_to_float32(bits)
    assert out[:5].tolist() == [0.0, -0.0, 1.0, np.inf, -np.inf] and np.isnan(out[5])


def test_float32_weights_are_memory_mapped(checkpoints):
    tensors, _ = load_checkpoint(checkpoints("tiny"))
    w = tensors["text_model.embeddings.token_embedding.weight"]
    assert not w.flags.writeable and not w.flags.owndata  # a read-only view of the mapped file


def test_sharded_checkpoint_has_several_shards(checkpoints):
    directory = checkpoints("sharded")
    index = json.load(open(os.path.join(directory, "model.safetensors.index.json")))
    assert len(set(index["weight_map"].values())) > 1
    tensors, files = load_checkpoint(directory)
    assert len(set(files.values())) > 1 and set(tensors) == set(index["weight_map"])


def copy(directory, tmp_path):
    return shutil.copytree(directory, tmp_path / "copy")


def test_truncated_file_is_named(checkpoints, tmp_path):
    d = copy(checkpoints("tiny", "CLIPTextModel"), tmp_path)
    path = d / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor .* \(truncated or corrupt file"):
        CLIPTextModel.from_pretrained(d)
    path.write_bytes(data[:4])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated safetensors file"):
        CLIPTextModel.from_pretrained(d)
    path.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors header"):
        CLIPTextModel.from_pretrained(d)


def rewrite(d, change):
    from safetensors.numpy import save_file

    t = {k: np.array(v) for k, v in read_safetensors(d / "model.safetensors").items()}
    change(t)
    save_file(t, str(d / "model.safetensors"))


def test_missing_unexpected_and_misshapen_tensors_are_named(checkpoints, tmp_path):
    d = copy(checkpoints("tiny", "CLIPTextModel"), tmp_path)
    name = "encoder.layers.1.mlp.fc2.bias"
    rewrite(d, lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=r"missing tensors text_model\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        CLIPTextModel.from_pretrained(d)
    rewrite(d, lambda t: t.update({name: np.zeros(TINY_TEXT["hidden_size"], np.float32), "extra.weight": np.ones(3)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unexpected tensor 'extra\.weight'"):
        CLIPTextModel.from_pretrained(d)
    rewrite(d, lambda t: (t.pop("extra.weight"), t.update({name: np.zeros(5, np.float32)})))
    with pytest.raises(CheckpointError, match=r"'encoder\.layers\.1\.mlp\.fc2\.bias' has shape \(5,\), the config needs \(42,\)"):
        CLIPTextModel.from_pretrained(d)


def test_old_position_ids_buffers_are_dropped(checkpoints, tmp_path):
    d = copy(checkpoints("tiny", "CLIPTextModel"), tmp_path)
    rewrite(d, lambda t: t.update({"text_model.embeddings.position_ids": np.arange(21)[None]}))
    CLIPTextModel.from_pretrained(d)


def test_pickle_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="never unpickles"):
        CLIPModel.from_pretrained(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="no such checkpoint directory"):
        CLIPModel.from_pretrained(tmp_path / "nope" / "deeper" / "still")


def test_state_dict_round_trip(checkpoints, tmp_path):
    model = CLIPTextModel.from_pretrained(checkpoints("tiny", "CLIPTextModel"))
    model.save_pretrained(tmp_path / "again")
    again = CLIPTextModel.from_pretrained(tmp_path / "again")
    ids = np.array([[97, 5, 6, 98]])
    np.testing.assert_array_equal(model(input_ids=ids).pooler_output, again(input_ids=ids).pooler_output)
