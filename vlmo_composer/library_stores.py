"""``oci://``, ``hf://datasets/...`` and ``dbfs:/Volumes/...`` as :class:`~vlmo_composer.stores.Store`\\ s.

Each is reached through the object the training libraries already use for it, so a dataset or
checkpoint this module can reach is one Streaming and Composer reach with the same settings:

==================  ======================================  =============================================
``oci://``          Composer's ``OCIObjectStore`` (oci)     ``~/.oci/config`` or ``OCI_CONFIG_FILE``
``hf://datasets/``  huggingface_hub (``HfApi``,             ``HF_TOKEN``; ``HF_ENDPOINT`` for another Hub;
                    ``hf_hub_download``), as Streaming      ``HF_HUB_OFFLINE=1`` reads the local cache only
``dbfs:/Volumes/``  Composer's ``UCObjectStore``            ``DATABRICKS_HOST`` + ``DATABRICKS_TOKEN``
                    (databricks-sdk)                        (or a ``~/.databrickscfg`` profile)
==================  ======================================  =============================================

Neither library can be pointed at a local server (OCI builds
``https://objectstorage.<region>.oraclecloud.com`` from the config's region; databricks-sdk talks
to a workspace), so the tests stop at what happens before a request: a missing config, file or
package is a one-line :class:`~vlmo_composer.stores.StoreError`. huggingface_hub reads its cache
offline, which the tests use for reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vlmo_composer.stores import Store, StoreError, max_attempts

# The extra ``databricks``: the version Streaming 0.13 pins and Composer 0.32 (>=0.50,<1) accepts.
DATABRICKS_PIN = "databricks-sdk==0.58.0"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


class ComposerObjectStoreStore(Store):
    """A store reached through a Composer ``ObjectStore`` (upload/download/list by object name)."""

    def read_bytes(self, key: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="vlmo_store_") as tmp:
            local = os.path.join(tmp, "object")
            try:
                self.download_file(key, local)
            except FileNotFoundError:
                return None
            return Path(local).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="vlmo_store_") as tmp:
            local = os.path.join(tmp, "object")
            Path(local).write_bytes(data)
            self.upload_file(local, key)

    def upload_file(self, local: str, key: str) -> None:
        self.client.upload_object(key, local)

    def download_file(self, key: str, local: str) -> None:
        self.client.download_object(key, local, overwrite=True)  # FileNotFoundError when missing


# ------------------------------------------------------------------------------------------ OCI
class OCIStore(ComposerObjectStoreStore):
    """``oci://<bucket>/<key>`` (``<bucket>@<namespace>`` accepted, as Streaming writes it)."""

    scheme = "oci"

    @property
    def bucket_name(self) -> str:
        return self.bucket.split("@")[0]

    def _make_client(self) -> Any:
        import oci
        from composer.utils.object_store import OCIObjectStore

        try:
            store = OCIObjectStore(bucket=self.bucket_name)  # reads the config, asks for the namespace
        except Exception as err:  # Composer wraps config errors in ValueError: the cause says which
            named = oci_client_error(self.url(), err.__cause__ or err)
            if named is None:
                raise
            raise named from None
        # The project's retry policy (Composer builds its client with OCI's default strategy).
        store.client.retry_strategy = oci.retry.RetryStrategyBuilder(
            max_attempts_check=True, max_attempts=max_attempts()).get_retry_strategy()
        return store

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        keys = self.client.list_objects(prefix)  # Composer follows every page
        return keys[:limit] if limit else keys

    def delete(self, keys: list[str]) -> None:
        from oci.exceptions import ServiceError

        for key in keys:
            try:
                self.client.client.delete_object(self.client.namespace, self.bucket_name, key)
            except ServiceError as err:
                if err.status != 404:
                    raise

    def check(self, url: str) -> None:
        from oci.exceptions import ServiceError

        try:
            self.client.client.head_bucket(namespace_name=self.client.namespace, bucket_name=self.bucket_name)
        except ServiceError as err:
            if err.status == 404:
                raise StoreError(url, f"bucket '{self.bucket_name}' does not exist (or is not visible to this "
                                      "user)") from None
            if err.status in (401, 403):
                raise StoreError(url, f"access refused ({err.code})") from None


def oci_client_error(url: str, err: BaseException) -> StoreError | None:
    """The one line for an OCI config that cannot make a client (before any request)."""
    try:
        import oci.exceptions as oci_errors
    except ImportError:
        return StoreError(url, "the oci package is not installed (pip install oci)")
    if isinstance(err, oci_errors.ConfigFileNotFound):
        return StoreError(url, f"no OCI config ({_first_line(err).split(',')[0]})")
    if isinstance(err, oci_errors.ClientError):  # a profile, key file or value the SDK refuses
        return StoreError(url, f"unusable OCI config ({type(err).__name__}: "
                               f"{_first_line(err).split(' For more info')[0]})")
    if isinstance(err, oci_errors.RequestException):
        return StoreError(url, f"cannot reach the endpoint ({type(err).__name__})", endpoint=True)
    if isinstance(err, oci_errors.ServiceError) and err.status in (401, 403):
        return StoreError(url, f"access refused ({err.code})")
    return None


# ------------------------------------------------------------------------------- Hugging Face
class HFStore(Store):
    """``hf://datasets/<org>/<name>/<key>`` (Streaming's form): one dataset repository, main revision."""

    scheme = "hf"

    @property
    def repo_id(self) -> str:
        return self.bucket.split("/", 1)[1]

    def _make_client(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(token=os.environ.get("HF_TOKEN") or None)

    @staticmethod
    def offline() -> bool:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)

    def download_file(self, key: str, local: str) -> None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            cached = hf_hub_download(self.repo_id, key, repo_type="dataset", token=os.environ.get("HF_TOKEN") or None)
        except EntryNotFoundError as err:
            raise FileNotFoundError(self.url(key)) from err
        except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and not in the cache
            raise FileNotFoundError(f"{self.url(key)}: not in the Hugging Face cache and the Hub is not reachable "
                                    "(HF_HUB_OFFLINE / HF_ENDPOINT)") from err
        shutil.copyfile(cached, local)

    def read_bytes(self, key: str) -> bytes | None:
        with tempfile.TemporaryDirectory(prefix="vlmo_store_") as tmp:
            local = os.path.join(tmp, "object")
            try:
                self.download_file(key, local)
            except FileNotFoundError:
                return None
            return Path(local).read_bytes()

    def upload_file(self, local: str, key: str) -> None:
        self.client.upload_file(path_or_fileobj=local, path_in_repo=key, repo_id=self.repo_id, repo_type="dataset")

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.upload_file(path_or_fileobj=data, path_in_repo=key, repo_id=self.repo_id, repo_type="dataset")

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        if self.offline():  # the files of the cached snapshot (huggingface_hub's own cache lookup)
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import LocalEntryNotFoundError

            try:
                root = Path(snapshot_download(self.repo_id, repo_type="dataset", local_files_only=True))
            except LocalEntryNotFoundError:
                return []
            keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        else:
            keys = self.client.list_repo_files(self.repo_id, repo_type="dataset")  # every page
        keys = [k for k in keys if k.startswith(prefix)]
        return keys[:limit] if limit else keys

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.client.delete_files(self.repo_id, keys, repo_type="dataset")

    def check(self, url: str) -> None:
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                            RepositoryNotFoundError)
        from requests.exceptions import ConnectionError as RequestsConnectionError

        try:
            if self.offline():  # huggingface_hub's own setting (its sessions may predate it)
                raise OfflineModeIsEnabled(url)
            self.client.repo_info(self.repo_id, repo_type="dataset")
        except OfflineModeIsEnabled:
            raise StoreError(url, "HF_HUB_OFFLINE is set: only reads, from the local cache (unset it to write "
                                  "or to list the Hub)") from None
        except GatedRepoError:
            raise StoreError(url, "access refused (gated dataset)") from None
        except RepositoryNotFoundError:
            raise StoreError(url, f"dataset repository '{self.repo_id}' does not exist (or is private)") from None
        except RequestsConnectionError as err:
            raise StoreError(url, f"cannot reach the endpoint ({type(err).__name__})", endpoint=True) from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status in (401, 403):
                raise StoreError(url, f"access refused ({status})") from None


# ------------------------------------------------------------------- Databricks Unity Catalog
class UCVolumeStore(ComposerObjectStoreStore):
    """``dbfs:/Volumes/<catalog>/<schema>/<volume>/<key>``; the bucket is the volume."""

    scheme = "dbfs"

    def url(self, key: str = "") -> str:
        return f"dbfs:/{self.bucket}/{key}" if key else f"dbfs:/{self.bucket}"

    def _make_client(self) -> Any:
        try:
            import databricks.sdk  # noqa: F401
        except ImportError:
            raise StoreError(self.url(), f"needs databricks-sdk (pip install '{DATABRICKS_PIN}', the extra "
                                        "vlmo-composer[databricks])") from None
        from composer.utils.object_store import UCObjectStore

        try:
            return UCObjectStore(path=self.bucket)
        except ValueError as err:  # Composer's wrapper of the SDK's configuration error
            raise StoreError(self.url(), f"no Databricks credentials ({_first_line(err.__cause__ or err)})") from None

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        folder = prefix if prefix.endswith("/") or not prefix else os.path.dirname(prefix)
        try:
            paths = self.client.list_objects(os.path.join(self.bucket, folder) if folder else None)
        except FileNotFoundError:
            return []
        root = "/" + self.bucket + "/"
        keys = sorted(p[len(root):] for p in paths if p.startswith(root))
        keys = [k for k in keys if k.startswith(prefix)]
        return keys[:limit] if limit else keys

    def delete(self, keys: list[str]) -> None:
        from databricks.sdk.errors import NotFound

        for key in keys:
            try:
                self.client.client.files.delete(f"/{self.bucket}/{key}")
            except NotFound:
                pass

    def check(self, url: str) -> None:
        from databricks.sdk.errors import NotFound, PermissionDenied, Unauthenticated

        try:
            self.client.client.files.get_directory_metadata(f"/{self.bucket}")
        except NotFound:
            raise StoreError(url, f"volume '{self.bucket}' does not exist") from None
        except (PermissionDenied, Unauthenticated) as err:
            raise StoreError(url, f"access refused ({type(err).__name__})") from None


LIBRARY_STORES: dict[str, type[Store]] = {"oci": OCIStore, "hf": HFStore, "dbfs": UCVolumeStore}
