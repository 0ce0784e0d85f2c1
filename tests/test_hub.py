"""Hub loading without the network: a fake hub on loopback (tests/_fakehub.py) and hand-made caches.

huggingface_hub is pointed at the fake hub by patching its endpoint constants; every test gets its
own empty cache directory, and the hub's request log shows what was downloaded.
"""

import os

import numpy as np
import pytest

from _checkpoints import TEXT, VISION
from _fakehub import FakeHub
from checkpoints import make_checkpoint
from conftest import assert_close, reference
from parity import pixel_inputs
from npclip import CLIPModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection, CheckpointError
from npclip import hub
from npclip.hub import ModelNotFoundError, resolve_dir

FORBIDDEN = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "README.md", "open_clip_model.safetensors")



@pytest.fixture(scope="module")
def fake_hub(whole, tmp_path_factory):
    """org/tiny (main: the whole checkpoint plus files npclip must not fetch; v1: other weights),
    org/pickle (pickle weights only), org/sharded (a sharded safetensors checkpoint)."""
    fake = FakeHub()
    junk = {name: b"must not be downloaded" for name in FORBIDDEN}
    fake.add_directory("org/tiny", whole, extra=junk)
    v1 = make_checkpoint(tmp_path_factory.mktemp("v1"), text=TEXT, vision=VISION, seed=1)
    fake.add_directory("org/tiny", v1, revision="v1")
    fake.add("org/pickle", {"config.json": open(os.path.join(whole, "config.json"), "rb").read(),
                            "pytorch_model.bin": b"\x80\x02pickle"})
    sharded = make_checkpoint(tmp_path_factory.mktemp("sharded"), text=TEXT, vision=VISION, shard_size="2MB")
    fake.add_directory("org/sharded", sharded, extra={"pytorch_model.bin": b"x"})
    yield fake
    fake.close()


@pytest.fixture
def online(fake_hub, monkeypatch, tmp_path):
    """huggingface_hub talks to the fake hub; returns an empty cache directory."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    template = fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    fake_hub.log.clear()
    return str(tmp_path / "cache")


def image_features(model_or_dir):
    model = CLIPModel.from_pretrained(model_or_dir) if isinstance(model_or_dir, str) else model_or_dir
    return model.get_image_features(pixel_inputs(VISION, batch=2))


def test_download_fetches_only_json_text_and_safetensors(online, fake_hub, whole):
    model = CLIPModel.from_pretrained("org/tiny", cache_dir=online)
    assert_close(image_features(model), image_features(whole), where="hub vs local")
    fetched = fake_hub.downloads()
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not set(fetched) & set(FORBIDDEN), fetched
    snapshot = resolve_dir("org/tiny", cache_dir=online)
    assert snapshot.startswith(os.path.join(online, "models--org--tiny", "snapshots"))
    assert not set(os.listdir(snapshot)) & set(FORBIDDEN)


def test_transformers_reads_the_cache_npclip_filled(online, whole):
    torch = reference("torch")
    transformers = reference("transformers")
    ours = CLIPModel.from_pretrained("org/tiny", cache_dir=online)
    ref = transformers.CLIPModel.from_pretrained("org/tiny", cache_dir=online, local_files_only=True).eval()
    px = pixel_inputs(VISION, batch=2)
    with torch.no_grad():
        expected = ref.get_image_features(pixel_values=torch.from_numpy(px)).pooler_output
    assert_close(ours.get_image_features(px), expected, where="transformers from npclip's cache")


def test_revision_is_honoured(online, fake_hub):
    main = image_features(CLIPModel.from_pretrained("org/tiny", cache_dir=online))
    v1 = image_features(CLIPModel.from_pretrained("org/tiny", revision="v1", cache_dir=online))
    assert not np.allclose(main, v1)
    sha = fake_hub.repos["org/tiny"]["v1"][0]
    directory = resolve_dir("org/tiny", revision=sha, cache_dir=online)
    assert os.path.basename(directory) == sha
    assert_close(image_features(directory), v1, where="revision by commit")


def test_offline_loads_from_the_cache_without_a_request(online, fake_hub, monkeypatch):
    expected = image_features(CLIPModel.from_pretrained("org/tiny", revision="v1", cache_dir=online))
    fake_hub.log.clear()
    got = CLIPModel.from_pretrained("org/tiny", revision="v1", cache_dir=online, local_files_only=True)
    assert_close(image_features(got), expected, where="local_files_only")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = CLIPModel.from_pretrained("org/tiny", revision="v1", cache_dir=online)
    assert_close(image_features(got), expected, where="HF_HUB_OFFLINE=1")
    assert fake_hub.log == []


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_without_cache_is_a_clear_error(online, fake_hub, monkeypatch, how):
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"org/tiny: offline .* not in the Hugging Face cache"):
        CLIPModel.from_pretrained("org/tiny", cache_dir=online, local_files_only=how == "local_files_only")
    assert fake_hub.log == []


def test_pickle_only_repository_is_refused(online, fake_hub):
    with pytest.raises(CheckpointError, match=r"org/pickle holds only PyTorch pickle weights \(pytorch_model.bin\); "
                       r"npclip never unpickles. Use a revision with model.safetensors.* convert"):
        CLIPModel.from_pretrained("org/pickle", cache_dir=online)
    assert "pytorch_model.bin" not in fake_hub.downloads()


def test_pickle_only_snapshot_in_the_cache_is_refused_offline(tmp_path, monkeypatch, whole):
    """transformers may have put pytorch_model.bin into the shared cache: npclip still refuses it."""
    snapshot = fill_cache(tmp_path, "org/old", {"config.json": os.path.join(whole, "config.json")})
    (snapshot / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="org/old holds only PyTorch pickle weights.*never unpickles"):
        CLIPModel.from_pretrained("org/old", cache_dir=str(tmp_path))


def test_unknown_repository_and_revision(online):
    with pytest.raises(ModelNotFoundError, match="org/nope: no such local directory, and no such model on the "
                                                 "Hugging Face hub"):
        CLIPModel.from_pretrained("org/nope", cache_dir=online)
    with pytest.raises(ModelNotFoundError, match="org/tiny: revision 'v9' not found on the hub"):
        CLIPModel.from_pretrained("org/tiny", revision="v9", cache_dir=online)
    with pytest.raises(ModelNotFoundError, match="not a valid hub model id"):
        resolve_dir("org/has space", cache_dir=online)


def test_sharded_repository_fetches_index_and_shards(online, fake_hub):
    model = CLIPModel.from_pretrained("org/sharded", cache_dir=online)
    fetched = fake_hub.downloads()
    shards = [f for f in fetched if f.startswith("model-")]
    assert "model.safetensors.index.json" in fetched and len(shards) >= 2, fetched
    assert "pytorch_model.bin" not in fetched
    assert image_features(model).shape == (2, 19)


def test_configs_only_fetch_no_weights(online, fake_hub):
    directory = resolve_dir("org/tiny", cache_dir=online, weights=False)
    assert "vocab.json" in os.listdir(directory) and "preprocessor_config.json" in os.listdir(directory)
    assert not [f for f in fake_hub.downloads() if f.endswith((".safetensors", ".bin"))]


@pytest.mark.parametrize("cls", [CLIPTextModelWithProjection, CLIPVisionModelWithProjection])
def test_every_model_class_loads_a_hub_id(online, cls):
    model = cls.from_pretrained("org/tiny", cache_dir=online)
    assert model.config.hidden_size == 42


def test_processor_and_tokenizer_load_a_hub_id(online, whole):
    from npclip.processing import CLIPProcessor
    from npclip.tokenizer import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained("org/tiny", cache_dir=online)
    assert list(tokenizer(["a cat"])["input_ids"][0]) == [49406, 320, 2368, 49407]
    processor = CLIPProcessor.from_pretrained("org/tiny", cache_dir=online)
    assert processor(text=["a cat"], return_tensors="np")["input_ids"].shape == (1, 4)


def fill_cache(cache, repo, files, revision="main", sha="0123456789abcdef0123456789abcdef01234567"):
    """Lay files out as huggingface_hub does: blobs, snapshots/<sha>/ links, refs/<revision>."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / sha
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = root / "blobs" / f"{abs(hash((repo, name))):x}"
        blob.write_bytes(open(source, "rb").read())
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(sha)
    return snapshot


def test_hand_made_cache_loads_offline(tmp_path, monkeypatch, whole):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fill_cache(tmp_path, "org/hand", {n: os.path.join(whole, n) for n in os.listdir(whole)})
    model = CLIPModel.from_pretrained("org/hand", cache_dir=str(tmp_path), local_files_only=True)
    assert_close(image_features(model), image_features(whole), where="hand-made cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = CLIPModel.from_pretrained("org/hand", cache_dir=str(tmp_path))
    assert_close(image_features(model), image_features(whole), where="hand-made cache, HF_HUB_OFFLINE")


def test_local_names(tmp_path, monkeypatch, whole):
    assert resolve_dir(whole) == whole
    with pytest.raises(ModelNotFoundError, match="no such checkpoint directory"):
        resolve_dir(str(tmp_path / "missing" / "dir"))
    with pytest.raises(ModelNotFoundError, match="no such checkpoint directory"):
        resolve_dir("./missing")
    with pytest.raises(ModelNotFoundError, match="a file, not a checkpoint directory"):
        resolve_dir(os.path.join(whole, "config.json"))
    monkeypatch.setitem(hub.BUNDLED, "tiny-shapes", str(tmp_path / "not-there"))
    with pytest.raises(ModelNotFoundError, match="tiny-shapes: the bundled checkpoint is not installed"):
        CLIPModel.from_pretrained("tiny-shapes")
    monkeypatch.setitem(hub.BUNDLED, "tiny-shapes", whole)
    assert CLIPModel.from_pretrained("tiny-shapes").config.projection_dim == 19
