"""The Hugging Face Hub: ``hf-hub:org/name`` sources and uploading an exported folder.

An exported folder (``model.safetensors`` + ``config.json`` + tokenizer files +
``README.md``, see :func:`vlmo_composer.inference.factory.export_model`) is a Hub model
repository as it is: :func:`push_folder` uploads it, and ``hf-hub:org/name`` (optionally
``hf-hub:org/name@revision``) names it wherever weights are named (open_clip's spelling).
Files come through ``huggingface_hub`` into its own cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``); ``HF_HUB_OFFLINE=1`` or ``VLMO_OFFLINE=1`` reads that cache
only, and a repository that is not there fails in one line.
"""

from __future__ import annotations

import os
from typing import Optional, Union

HUB_PREFIX = "hf-hub:"
# The files of an exported folder (weights, configs, tokenizer, model card): nothing else is fetched.
HUB_PATTERNS = ["*.safetensors", "*.json", "*.txt", "README.md"]


def is_hub_name(source: Union[str, os.PathLike, None]) -> bool:
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def parse_hub_name(source: str) -> tuple[str, Optional[str]]:
    """``(repo_id, revision)`` of ``hf-hub:org/name[@revision]``."""
    repo_id, _, revision = source[len(HUB_PREFIX):].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{source}: a Hub model is named hf-hub:ORG/NAME (optionally @REVISION)")
    return repo_id, revision or None


def hub_snapshot(source: str) -> str:
    """The local folder of ``hf-hub:org/name``: downloaded once into the Hub cache, or read from it offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, revision = parse_hub_name(source)
    offline = os.environ.get("VLMO_OFFLINE", "") not in ("", "0")
    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=offline)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{source}: not in the Hugging Face cache ({_cache_dir()}) and downloads are off "
                                "(HF_HUB_OFFLINE / VLMO_OFFLINE) or the Hub cannot be reached") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{source}: no such model repository on the Hub (or it is private: set HF_TOKEN)") \
            from None
    except HfHubHTTPError as err:
        raise FileNotFoundError(f"{source}: {str(err).splitlines()[0]}") from None


def push_folder(folder: Union[str, os.PathLike], repo_id: str, private: bool = False,
                message: str = "Upload VLMo export") -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` to it as one commit; returns the commit URL.

    The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth login``); it is never written anywhere.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), repo_type="model",
                             commit_message=message)
    return str(getattr(info, "commit_url", info))


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
