"""Where checkpoints come from: a local directory, a bundled short name, or a Hugging Face hub id.

    resolve_dir("openai/clip-vit-base-patch32")          -> the snapshot directory in the HF cache
    resolve_dir("tiny-shapes")                           -> npclip/data/tiny-shapes
    resolve_dir("path/to/dir")                           -> path/to/dir
    resolve_dir("openai/clip-vit-base-patch32", weights=False)   configs and tokenizer files only

Hub downloads go through ``huggingface_hub.snapshot_download``, so the cache (``HF_HUB_CACHE``,
``~/.cache/huggingface/hub`` by default) is the one transformers reads and writes. Only JSON and
text files and the safetensors weights npclip reads are fetched: never ``pytorch_model.bin``,
``tf_model.h5`` or other formats. ``revision``, ``cache_dir``, ``local_files_only``, ``token`` and
the ``HF_HUB_OFFLINE`` setting are honoured. A repository with only pickle weights is refused
(npclip never unpickles), and every failure raises ``ModelNotFoundError`` or ``CheckpointError``
with a message that says what to do.
"""

from __future__ import annotations

import json
import os

from .weights import PICKLE_WEIGHTS_NAMES, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, CheckpointError

# Checkpoints shipped inside the package, by short name.
BUNDLED = {"tiny-shapes": os.path.join(os.path.dirname(__file__), "data", "tiny-shapes")}

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

# The from_pretrained arguments that say where files come from, passed on to resolve_dir.
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")

# What a download fetches: configs and tokenizer files, plus (for a model) its safetensors weights.
CONFIG_PATTERNS = ["*.json", "*.txt"]
WEIGHT_PATTERNS = [SAFE_WEIGHTS_NAME]  # the shards of a sharded checkpoint are read off its index

_TRUE = ("1", "true", "yes", "on")


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a directory, a bundled name, nor a reachable hub repository."""


def is_offline(local_files_only=False) -> bool:
    """True when only the local cache may be used: the argument, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE."""
    env = (os.environ.get(k, "").strip().lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(local_files_only) or any(v in _TRUE for v in env)


def looks_like_hub_id(name: str) -> bool:
    """'name' or 'org/name', as the hub spells repository ids (not a path like './x' or 'a/b/c')."""
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def resolve_dir(name_or_path, revision=None, cache_dir=None, local_files_only=False, token=None,
                force_download=False, weights=True) -> str:
    """A local directory holding the checkpoint's files, downloading them from the hub if needed.

    weights: also fetch the safetensors weights (False: configs and tokenizer files only, as a
    tokenizer or processor needs). Raises ModelNotFoundError or CheckpointError.
    """
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if name in BUNDLED:
        if not os.path.isdir(BUNDLED[name]):
            raise ModelNotFoundError(f"{name}: the bundled checkpoint is not installed (no {BUNDLED[name]})")
        return BUNDLED[name]
    if os.path.exists(name):
        raise ModelNotFoundError(f"{name}: a file, not a checkpoint directory")
    if not looks_like_hub_id(name):
        raise ModelNotFoundError(f"{name}: no such checkpoint directory")
    hub = dict(revision=revision, cache_dir=cache_dir, offline=is_offline(local_files_only), token=token,
               force_download=force_download)
    directory = _download(name, CONFIG_PATTERNS + (WEIGHT_PATTERNS if weights else []), **hub)
    if weights:
        _download_shards(name, directory, **hub)
        _check_weights(name, directory, **hub)
    return directory


def read_json(path) -> dict:
    """A checkpoint's JSON file (config.json, preprocessor_config.json, ...), with an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def resolve_file(name_or_path, filename, **kwargs) -> str:
    """The local path of one file of a checkpoint (see resolve_dir); a clear error if it is absent."""
    kwargs.setdefault("weights", filename.endswith(".safetensors"))
    directory = resolve_dir(name_or_path, **kwargs)
    path = os.path.join(directory, filename)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"{name_or_path}: no {filename} (in {directory})")
    return path


# ----------------------------------------------------------------------------------------------
# Downloading


def _download(repo_id, patterns, revision, cache_dir, offline, token, force_download) -> str:
    """snapshot_download with npclip's error messages. -> the snapshot directory"""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = repo_id if revision is None else f"{repo_id} (revision {revision!r})"
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                 allow_patterns=patterns, token=token, force_download=force_download)
    except HFValidationError as e:
        raise ModelNotFoundError(f"{repo_id}: no such directory, and not a valid hub model id") from e
    except GatedRepoError as e:
        raise ModelNotFoundError(f"{repo_id}: a gated repository; accept its terms on the hub and pass a token "
                                 "(token=... or `hf auth login`)") from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: no such local directory, and no such model on the Hugging Face hub "
                                 "(or it is private: pass a token)") from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: revision {revision!r} not found on the hub") from e
    except LocalEntryNotFoundError as e:
        why = ("offline (HF_HUB_OFFLINE or local_files_only) and it is not in the Hugging Face cache"
               if offline else "not in the Hugging Face cache, and the hub cannot be reached")
        if "incomplete" in str(e):
            why = "only partly in the Hugging Face cache; download it once with network access"
        raise ModelNotFoundError(f"{where}: {why}") from e
    except HfHubHTTPError as e:
        raise ModelNotFoundError(f"{where}: the hub refused the download ({' '.join(str(e).split()[:12])})") from e


def _download_shards(repo_id, directory, **hub):
    """Fetch the shards named by model.safetensors.index.json (when there is no model.safetensors)."""
    index = os.path.join(directory, SAFE_WEIGHTS_INDEX_NAME)
    if os.path.isfile(os.path.join(directory, SAFE_WEIGHTS_NAME)) or not os.path.isfile(index):
        return
    try:
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
    if any(not s.endswith(".safetensors") for s in shards):
        raise CheckpointError(f"{index}: names shards that are not safetensors files")
    if not all(os.path.isfile(os.path.join(directory, s)) for s in shards):
        _download(repo_id, shards, **hub)


def _check_weights(repo_id, directory, revision, offline, cache_dir, token, **_):
    """Refuse a repository without safetensors weights, saying so plainly when it holds pickles."""
    if any(os.path.isfile(os.path.join(directory, n)) for n in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME)):
        return
    listing = _repo_files(repo_id, os.path.basename(os.path.normpath(directory)), cache_dir, offline, token)
    where = repo_id if revision is None else f"{repo_id} at revision {revision!r}"
    pickles = [f for f in PICKLE_WEIGHTS_NAMES if f in listing or os.path.isfile(os.path.join(directory, f))]
    if pickles:
        raise CheckpointError(
            f"{where} holds only PyTorch pickle weights ({pickles[0]}); npclip never unpickles. "
            "Use a revision with model.safetensors (often a 'refs/pr/N' conversion pull request on the hub), "
            "or convert once with transformers: CLIPModel.from_pretrained(id).save_pretrained(out_dir)")
    if not listing and offline:
        raise ModelNotFoundError(f"{where}: the cached snapshot has no {SAFE_WEIGHTS_NAME}; download it once "
                                 "with network access")
    raise CheckpointError(f"{where}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME} in the repository")


def _repo_files(repo_id, commit, cache_dir, offline, token) -> list[str]:
    """The repository's file listing at a commit: the one huggingface_hub cached while downloading,
    else (online) asked from the hub; [] when unknown."""
    try:
        from huggingface_hub import get_cached_repo_tree

        return [f.path for f in get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)]
    except Exception:  # an older huggingface_hub, or no cached listing
        pass
    if offline:
        return []
    try:
        from huggingface_hub import HfApi

        return HfApi(token=token).list_repo_files(repo_id, revision=commit)
    except Exception:
        return []
