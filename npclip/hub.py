"""Where checkpoints come from: a local directory, a bundled short name, or a Hugging Face hub id.

Hub downloads go through ``huggingface_hub`` (so its cache is shared with transformers) and fetch
only safetensors, JSON and text files; ``revision``, ``cache_dir``, ``local_files_only`` and the
``HF_HUB_OFFLINE`` setting are honoured. npclip never downloads or reads pickle weights.
"""

from __future__ import annotations

import os

# Checkpoints shipped inside the package, by short name.
BUNDLED = {"tiny-shapes": os.path.join(os.path.dirname(__file__), "data", "tiny-shapes")}

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt"]


class ModelNotFoundError(OSError):
    """A model name that is neither a directory, a bundled name, nor a reachable hub repository."""


def is_offline(local_files_only=False) -> bool:
    """True when only the local cache may be used (argument or the HF_HUB_OFFLINE variable)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(local_files_only) or flag in ("1", "true", "yes", "on")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def resolve_dir(name_or_path, revision=None, cache_dir=None, local_files_only=False, token=None,
                force_download=False) -> str:
    """A local directory holding the checkpoint's files, downloading them from the hub if needed."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        return name
    if name in BUNDLED:
        return BUNDLED[name]
    if os.path.exists(name) or not _looks_like_hub_id(name):
        raise ModelNotFoundError(f"{name}: no such checkpoint directory")
    return _download(name, revision, cache_dir, is_offline(local_files_only), token, force_download)


def _download(repo_id, revision, cache_dir, offline, token, force_download) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                                 allow_patterns=ALLOW_PATTERNS, token=token, force_download=force_download)
    except LocalEntryNotFoundError as e:
        how = "offline (HF_HUB_OFFLINE or local_files_only)" if offline else "the hub cannot be reached"
        raise ModelNotFoundError(
            f"{repo_id}: no such local directory, and not in the Hugging Face cache while {how}") from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: no such model on the Hugging Face hub (or it is private)") from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id}: revision {revision!r} not found") from e


def resolve_file(name_or_path, filename, **kwargs) -> str:
    """The local path of one file of a checkpoint (see resolve_dir); a clear error if it is absent."""
    directory = resolve_dir(name_or_path, **kwargs)
    path = os.path.join(directory, filename)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"{directory}: no {filename}")
    return path
