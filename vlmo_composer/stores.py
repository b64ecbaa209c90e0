"""Object stores: the one place that reads, writes, lists and deletes objects outside training.

``data_prep`` (inputs through ``data_prep/inputs.py``, and outputs), weight sources (``init_from``,
``eval.py --weights``, ``from_pretrained``), ``classes.json`` and ``answer_vocab.json`` go through
:func:`open_store` / :func:`fetch`. Each store is reached with the client library
that Streaming and Composer use for it, configured from the same variables, so
a dataset or checkpoint this module can reach is one training can reach too:

=========  ==========================  =======================================================
``s3://``  boto3                       ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``S3_ENDPOINT_URL``
``gs://``  google-cloud-storage        ``GOOGLE_APPLICATION_CREDENTIALS`` (or any Google default
                                       credentials); ``STORAGE_EMULATOR_HOST`` for an emulator
``azure:`` azure-storage-blob          ``AZURE_ACCOUNT_NAME`` + ``AZURE_ACCOUNT_ACCESS_KEY`` (as Streaming),
                                       or ``AZURE_STORAGE_CONNECTION_STRING`` (any endpoint, e.g. Azurite)
``oci:``   Composer's OCIObjectStore   ``~/.oci/config`` or ``OCI_CONFIG_FILE``
``hf:``    huggingface_hub             ``HF_TOKEN``; ``HF_ENDPOINT`` (another Hub); ``HF_HUB_OFFLINE=1``
                                       reads the local cache only
``dbfs:``  Composer's UCObjectStore    ``DATABRICKS_HOST`` + ``DATABRICKS_TOKEN`` (databricks-sdk, the
                                       extra ``databricks``); ``dbfs:/Volumes/...`` only
=========  ==========================  =======================================================

(gcsfs, the fsspec GCS layer, needs google-cloud-storage>=3.11, which Streaming 0.13 forbids;
the clients above are the ones Streaming and Composer already install.)

Retry policy, the same for every store: ``AWS_MAX_ATTEMPTS`` attempts per request
(default 8; the name is botocore's, read for every store), exponential backoff
with jitter on connection errors, timeouts, 429/500/502/503/504 and throttling; a
request that receives no byte for ``VLMO_S3_READ_TIMEOUT`` seconds (default 60)
is abandoned and retried; connecting gives up after 10 s. Listing is paginated
on every store (any number of keys).

A missing bucket, rejected credentials or an unreachable endpoint is a
:class:`StoreError`: one line naming the URL and the variables to set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_MAX_ATTEMPTS = 8
READ_TIMEOUT_ENV = "VLMO_S3_READ_TIMEOUT"
CONNECT_TIMEOUT = 10.0
# Composer uploads ``latest-rank0.pt`` as ``latest-rank0.pt.symlink`` holding the real object key.
SYMLINK_SUFFIX = ".symlink"

VARIABLES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and S3_ENDPOINT_URL for a non-AWS endpoint)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (and STORAGE_EMULATOR_HOST for a local emulator)",
    "azure": "AZURE_ACCOUNT_NAME and AZURE_ACCOUNT_ACCESS_KEY, or AZURE_STORAGE_CONNECTION_STRING",
    # Reached through Composer's and huggingface_hub's objects (the last section of this module).
    "oci": "OCI_CONFIG_FILE (default ~/.oci/config, the only file Streaming reads)",
    "hf": "HF_TOKEN (HF_ENDPOINT for another Hub; HF_HUB_OFFLINE=1 reads the local cache only)",
    "dbfs": "DATABRICKS_HOST and DATABRICKS_TOKEN (or a ~/.databrickscfg profile)",
}
SCHEMES = tuple(VARIABLES)
ENDPOINT_VARIABLES = {"s3": "S3_ENDPOINT_URL", "gs": "STORAGE_EMULATOR_HOST",
                      "azure": "the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING", "hf": "HF_ENDPOINT"}
# How each store's URL is written (messages name these).
URL_FORMS = {"s3": "s3://", "gs": "gs://", "azure": "azure://", "oci": "oci://", "hf": "hf://datasets/",
             "dbfs": "dbfs:/Volumes/"}


class StoreError(PermissionError):
    """A store that cannot be used as asked (missing bucket, credentials, endpoint): one line naming the
    URL and what to set."""

    def __init__(self, url: str, reason: str, endpoint: bool = False) -> None:
        scheme = scheme_of(url)
        if endpoint and scheme in ENDPOINT_VARIABLES:
            hint = f"; check {ENDPOINT_VARIABLES[scheme]} (or unset it for the cloud's own endpoint)"
        else:
            hint = f"; set {VARIABLES[scheme]}" if scheme in VARIABLES else ""
        super().__init__(f"{url}: {reason}{hint}")
        self.url = url
        self.reason = reason
        self.endpoint = endpoint


def scheme_of(url: str) -> str:
    if str(url).startswith("dbfs:/"):  # Databricks writes dbfs:/Volumes/... (one slash)
        return "dbfs"
    return urllib.parse.urlparse(str(url)).scheme if "://" in str(url) else ""


def is_remote(url: Any) -> bool:
    """On one of the object stores above (not ``http(s)://``, which weight sources download themselves)."""
    return isinstance(url, str) and scheme_of(url) in SCHEMES


def has_scheme(path: Any) -> bool:
    """Not a local path: a store's URL (``dbfs:/Volumes/...`` too, which has no ``//``) or any other
    ``scheme://``, ``https://`` included."""
    return isinstance(path, str) and scheme_of(path) != ""


def url_path(url: str) -> str:
    """``url`` without its ``scheme:`` (``//bucket/key``, ``/Volumes/...``); a local path as it is."""
    return url.split(":", 1)[1] if has_scheme(url) else url


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of ``scheme://bucket/key``; the "bucket" of ``hf://datasets/ORG/NAME/key``
    is ``datasets/ORG/NAME`` and that of ``dbfs:/Volumes/CATALOG/SCHEMA/VOLUME/key`` is the volume."""
    if scheme_of(url) in ("hf", "dbfs"):
        return split_path_url(url)
    parsed = urllib.parse.urlparse(url)
    if not parsed.netloc:
        raise ValueError(f"{url!r} has no bucket")
    return parsed.scheme, parsed.netloc, parsed.path.lstrip("/")


def max_attempts() -> int:
    os.environ.setdefault("AWS_MAX_ATTEMPTS", str(DEFAULT_MAX_ATTEMPTS))  # Streaming's boto3 clients too
    return max(1, int(os.environ["AWS_MAX_ATTEMPTS"]))


def read_timeout() -> float:
    return float(os.environ.get(READ_TIMEOUT_ENV, 60))


def s3_client_config() -> Any:
    """The botocore config of every S3 client made here (see the module doc)."""
    from botocore.config import Config

    return Config(retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"), "total_max_attempts": max_attempts()},
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=read_timeout())


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: enough to tell, without reading it, that its content changed."""

    key: str
    size: int
    version: str
    """The store's entity tag (changes whenever the object is rewritten)."""


class Store(ABC):
    """One bucket (container) of one store; keys are relative to it. Safe to pickle: clients are
    made again in each process."""

    scheme: str

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._client: Any = None
        self._client_pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_client_pid": -1}

    @property
    def client(self) -> Any:
        if self._client is None or self._client_pid != os.getpid():
            self._client = self._make_client()
            self._client_pid = os.getpid()
        return self._client

    def url(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}" if key else f"{self.scheme}://{self.bucket}"

    @abstractmethod
    def _make_client(self) -> Any: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes | None:
        """The object, or None when it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """One PUT: readers see the old object or all of the new one."""

    @abstractmethod
    def upload_file(self, local: str, key: str) -> None: ...

    @abstractmethod
    def download_file(self, key: str, local: str) -> None:
        """Raises FileNotFoundError when the object does not exist."""

    @abstractmethod
    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """Every key starting with ``prefix`` (all pages; at most ``limit``)."""

    def list_top(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """The folder names and file names directly under ``prefix`` (``""`` or ending with ``/``),
        relative to it. s3/gs/azure ask for these with a ``/`` delimiter (one entry per folder, not
        per file under it); other stores derive them from every key."""
        folders: set[str] = set()
        files: list[str] = []
        for key in self.list(prefix):
            rel = key[len(prefix):] if key.startswith(prefix) else ""
            if "/" in rel:
                folders.add(rel.split("/", 1)[0])
            elif rel:
                files.append(rel)
        return sorted(folders), files

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` with its size and version (all pages)."""
        raise ValueError(f"{self.url(prefix)}: listing with sizes is not supported on {self.scheme}://")

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and version from one request, or None when it does not exist."""
        raise ValueError(f"{self.url(key)}: stat is not supported on {self.scheme}://")

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (one ranged GET); FileNotFoundError when it does not exist."""
        raise ValueError(f"{self.url(key)}: ranged reads are not supported on {self.scheme}://")

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove these keys (missing ones are not an error)."""

    @abstractmethod
    def check(self, url: str) -> None:
        """Raise :class:`StoreError` unless the bucket exists and the credentials reach it."""


# ------------------------------------------------------------------------------------------- S3
REFUSED_S3_CODES = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                    "InvalidToken", "AllAccessDisabled", "AccountProblem", "403", "401")


class S3Store(Store):
    scheme = "s3"

    def _make_client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None, config=s3_client_config())

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def upload_file(self, local: str, key: str) -> None:
        self.client.upload_file(local, self.bucket, key)

    def download_file(self, key: str, local: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, key, local)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(self.url(key)) from err
            raise

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        keys: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"MaxItems": limit} if limit else {})
        for page in pages:
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys[:limit] if limit else keys

    def list_top(self, prefix: str = "") -> tuple[list[str], list[str]]:
        folders: list[str] = []
        files: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                          Delimiter="/"):
            folders += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            files += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
        return sorted(folders), [f for f in files if f]

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [ObjectInfo(o["Key"], int(o["Size"]), str(o.get("ETag", "")).strip('"'))
                for page in pages for o in page.get("Contents", [])]

    def stat(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(key, int(head["ContentLength"]), str(head.get("ETag", "")).strip('"'))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read()
        except self.client.exceptions.NoSuchKey as err:
            raise FileNotFoundError(self.url(key)) from err

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i: i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def check(self, url: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except NoCredentialsError:
            raise StoreError(url, "no S3 credentials") from None
        except EndpointConnectionError as err:
            raise StoreError(url, f"cannot reach the endpoint ({err})", endpoint=True) from None
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise StoreError(url, f"bucket '{self.bucket}' does not exist") from None
            if code in REFUSED_S3_CODES:
                raise StoreError(url, f"access refused ({code})") from None
            # Anything else (an outage, throttling past the retries) is not a setting to change:
            # the operation that meets it reports it.
        except (BotoCoreError, ValueError) as err:
            raise StoreError(url, f"cannot use the store ({err})") from None


# ------------------------------------------------------------------------------------------ GCS
class GCSStore(Store):
    scheme = "gs"

    def _make_client(self) -> Any:
        from google.auth import default as default_auth
        from google.cloud.storage import Client

        # As Streaming and Composer: Google default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud,
        # the metadata server); google-cloud-storage sends requests to STORAGE_EMULATOR_HOST when set.
        credentials, project = default_auth()
        return Client(credentials=credentials, project=project)

    @property
    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Every request retried, uploads included (an upload rewrites the whole object: idempotent here).
        # google-api-core bounds retries by time: the backoff (1 s doubling, at most 32 s) of the attempts.
        return DEFAULT_RETRY.with_timeout(1.0 + sum(min(2.0 ** i, 32.0) for i in range(max_attempts() - 1)))

    @property
    def _timeout(self) -> tuple[float, float]:
        return (CONNECT_TIMEOUT, read_timeout())

    def _blob(self, key: str) -> Any:
        return self.client.bucket(self.bucket).blob(key)

    def read_bytes(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self._blob(key).download_as_bytes(retry=self._retry, timeout=self._timeout)
        except NotFound:
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        self._blob(key).upload_from_string(data, retry=self._retry, timeout=self._timeout)

    def upload_file(self, local: str, key: str) -> None:
        self._blob(key).upload_from_filename(local, retry=self._retry, timeout=self._timeout)

    def download_file(self, key: str, local: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            data = self._blob(key).download_as_bytes(retry=self._retry, timeout=self._timeout)
        except NotFound as err:
            raise FileNotFoundError(self.url(key)) from err
        Path(local).write_bytes(data)

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix or None, max_results=limit,
                                       retry=self._retry, timeout=self._timeout)
        return [b.name for b in blobs]  # the iterator follows every page token

    def list_top(self, prefix: str = "") -> tuple[list[str], list[str]]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix or None, delimiter="/",
                                       retry=self._retry, timeout=self._timeout)
        files = [b.name[len(prefix):] for b in blobs]  # prefixes are filled in while the pages are read
        return sorted(p[len(prefix):].rstrip("/") for p in blobs.prefixes), [f for f in files if f]

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix or None, retry=self._retry, timeout=self._timeout)
        return [ObjectInfo(b.name, int(b.size or 0), str(b.etag or b.generation)) for b in blobs]

    def stat(self, key: str) -> ObjectInfo | None:
        blob = self.client.bucket(self.bucket).get_blob(key, retry=self._retry, timeout=self._timeout)
        return None if blob is None else ObjectInfo(key, int(blob.size or 0), str(blob.etag or blob.generation))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        from google.api_core.exceptions import NotFound

        if end <= start:
            return b""
        try:  # ``end`` is inclusive here
            return self._blob(key).download_as_bytes(start=start, end=end - 1, retry=self._retry,
                                                     timeout=self._timeout)
        except NotFound as err:
            raise FileNotFoundError(self.url(key)) from err

    def delete(self, keys: list[str]) -> None:
        from google.api_core.exceptions import NotFound

        bucket = self.client.bucket(self.bucket)
        for key in keys:
            try:
                bucket.blob(key).delete(retry=self._retry, timeout=self._timeout)
            except NotFound:
                pass

    def check(self, url: str) -> None:
        from google.api_core.exceptions import Forbidden, NotFound, RetryError, Unauthorized
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
        from requests.exceptions import ConnectionError as RequestsConnectionError

        try:
            self.list(limit=1)
        except DefaultCredentialsError:
            raise StoreError(url, "no Google Cloud credentials") from None
        except NotFound:
            raise StoreError(url, f"bucket '{self.bucket}' does not exist") from None
        except (Forbidden, Unauthorized) as err:
            raise StoreError(url, f"access refused ({err.code})") from None
        except (TransportError, RequestsConnectionError) as err:
            raise StoreError(url, f"cannot reach the endpoint ({type(err).__name__})", endpoint=True) from None
        except RetryError as err:  # retried until the policy's time ran out
            if isinstance(err.cause, (TransportError, RequestsConnectionError)):
                reason = f"cannot reach the endpoint ({type(err.cause).__name__})"
                raise StoreError(url, reason, endpoint=True) from None
        except GoogleAuthError as err:
            raise StoreError(url, f"credentials refused ({str(err).splitlines()[0][:200]})") from None
        # Other API errors (an outage past the retries): the operation that meets it reports it.


# ---------------------------------------------------------------------------------------- Azure
class AzureStore(Store):
    """``azure://<container>/<key>`` (Streaming's form): the account comes from the environment."""

    scheme = "azure"

    def _make_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        policy = dict(retry_total=max_attempts() - 1, connection_timeout=CONNECT_TIMEOUT, read_timeout=read_timeout())
        connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if connection:
            service = BlobServiceClient.from_connection_string(connection, **policy)
        else:
            account = os.environ.get("AZURE_ACCOUNT_NAME")
            if not account:
                raise StoreError(self.url(), "no Azure account named")
            service = BlobServiceClient(account_url=f"https://{account}.blob.core.windows.net",
                                        credential=os.environ.get("AZURE_ACCOUNT_ACCESS_KEY"), **policy)
        return service.get_container_client(self.bucket)

    def read_bytes(self, key: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.client.download_blob(key).readall()
        except ResourceNotFoundError:
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.upload_blob(key, data, overwrite=True)

    def upload_file(self, local: str, key: str) -> None:
        with open(local, "rb") as fh:
            self.client.upload_blob(key, fh, overwrite=True)

    def download_file(self, key: str, local: str) -> None:
        data = self.read_bytes(key)
        if data is None:
            raise FileNotFoundError(self.url(key))
        Path(local).write_bytes(data)

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        keys = []
        for blob in self.client.list_blobs(name_starts_with=prefix or None):  # follows every page
            keys.append(blob.name)
            if limit and len(keys) >= limit:
                break
        return keys

    def list_top(self, prefix: str = "") -> tuple[list[str], list[str]]:
        folders: list[str] = []
        files: list[str] = []
        for item in self.client.walk_blobs(name_starts_with=prefix or None, delimiter="/"):
            rel = item.name[len(prefix):]  # a BlobPrefix's name ends with the delimiter
            (folders if rel.endswith("/") else files).append(rel.rstrip("/"))
        return sorted(folders), [f for f in files if f]

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        return [ObjectInfo(b.name, int(b.size), str(b.etag).strip('"'))
                for b in self.client.list_blobs(name_starts_with=prefix or None)]

    def stat(self, key: str) -> ObjectInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.client.get_blob_client(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return ObjectInfo(key, int(props.size), str(props.etag).strip('"'))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        if end <= start:
            return b""
        try:
            return self.client.download_blob(key, offset=start, length=end - start).readall()
        except ResourceNotFoundError as err:
            raise FileNotFoundError(self.url(key)) from err

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 256):  # a batch request holds at most 256
            self.client.delete_blobs(*keys[i: i + 256])

    def check(self, url: str) -> None:
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceNotFoundError,
                                           ServiceRequestError)

        try:
            self.list(limit=1)
        except ResourceNotFoundError:
            raise StoreError(url, f"container '{self.bucket}' does not exist") from None
        except ClientAuthenticationError:
            raise StoreError(url, "access refused (the account key does not match)") from None
        except ServiceRequestError as err:
            raise StoreError(url, f"cannot reach the endpoint ({type(err).__name__})", endpoint=True) from None
        except HttpResponseError as err:
            if err.status_code in (401, 403):
                raise StoreError(url, f"access refused ({err.error_code or err.status_code})") from None
        except ValueError as err:  # a malformed connection string or key
            raise StoreError(url, f"bad credentials ({err})") from None


STORES = {"s3": S3Store, "gs": GCSStore, "azure": AzureStore}


def split_path_url(url: str) -> tuple[str, str, str]:
    """``hf://datasets/ORG/NAME/key`` and ``dbfs:/Volumes/C/S/V/key``: the bucket is the first 3 (4) parts."""
    scheme = scheme_of(url)
    path = url.split(":", 1)[1].lstrip("/")
    parts = path.split("/")
    head, first, form = (3, "datasets", "hf://datasets/ORG/NAME/path") if scheme == "hf" else \
        (4, "Volumes", "dbfs:/Volumes/CATALOG/SCHEMA/VOLUME/path")
    if len(parts) < head or parts[0] != first or not all(parts[:head]):
        raise ValueError(f"{url!r}: write it as {form}")
    return scheme, "/".join(parts[:head]), "/".join(parts[head:])


def supported_stores() -> str:
    """``s3://, gs://, ...`` for messages."""
    return ", ".join(URL_FORMS.get(s, s + "://") for s in SCHEMES)


def store_class(scheme: str) -> type[Store]:
    return STORES[scheme] if scheme in STORES else LIBRARY_STORES[scheme]


def open_store(url: str) -> tuple[Store, str]:
    """``(store, key)`` of ``scheme://bucket/key``."""
    scheme, bucket, key = split_url(url)
    if scheme not in SCHEMES:
        raise ValueError(f"{url}: unsupported store; use one of {supported_stores()} or a local path")
    return store_class(scheme)(bucket), key


def check_access(url: str) -> None:
    """Raise :class:`StoreError` unless ``url``'s bucket exists and the credentials reach it."""
    store, _ = open_store(url)
    try:
        store.client  # noqa: B018 - built here: no credentials at all fails now
    except StoreError as err:
        raise StoreError(url, err.reason, err.endpoint) from None
    except Exception as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise StoreError(url, f"no usable credentials ({reason})") from None
    store.check(url)


@contextmanager
def named_errors(url: str) -> Iterator[None]:
    """A store failure inside the block becomes a one-line :class:`StoreError` when :func:`check_access`
    can name why (missing bucket, credentials, endpoint); other errors pass unchanged."""
    try:
        yield
    except (StoreError, FileNotFoundError):
        raise
    except Exception:
        check_access(url)
        raise


def fetch(url: str, destination: str | None = None) -> str:
    """A local copy of an object or a folder (every object under the prefix) at ``url``.

    A missing ``X`` with an ``X.symlink`` (Composer's remote ``latest`` pointer) is the object that
    pointer names. Raises FileNotFoundError when neither exists.
    """
    store, key = open_store(url)
    key = key.rstrip("/")
    target = Path(destination or tempfile.mkdtemp(prefix="vlmo_fetch_"))
    with named_errors(url):
        keys = store.list(key)
        if key in keys:  # one file
            local = target / os.path.basename(key)
            store.download_file(key, str(local))
            return str(local)
        if key + SYMLINK_SUFFIX in keys:
            pointed = (store.read_bytes(key + SYMLINK_SUFFIX) or b"").decode().strip()
            local = target / os.path.basename(key)
            store.download_file(pointed, str(local))
            return str(local)
        inside = [k for k in keys if k.startswith(key + "/")] if key else keys
        if not inside:
            if destination is None:
                shutil.rmtree(target, ignore_errors=True)
            raise FileNotFoundError(f"{url} not found (no object and no folder of that name)")
        for name in inside:
            local = target / name[len(key) + 1 if key else 0:]
            local.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(name, str(local))
        return str(target)


# ============================================================================================
# oci://, hf://datasets/..., dbfs:/Volumes/...: each through the object the training libraries
# use for it (Composer's OCIObjectStore and UCObjectStore, huggingface_hub as Streaming), so a
# dataset or checkpoint reached here is one Streaming and Composer reach with the same settings.
# None can be pointed at a local server (OCI builds https://objectstorage.<region>.oraclecloud.com
# from its config; databricks-sdk talks to a workspace; there is no Hub server to run), so the
# tests stop where each library refuses a missing or unusable configuration before any request;
# huggingface_hub reads its own cache offline, which the tests use for reads.
# ============================================================================================
# The extra ``databricks``: the version Streaming 0.13 pins and Composer 0.32 (>=0.50,<1) accepts.
DATABRICKS_PIN = "databricks-sdk==0.58.0"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


class FileTransferStore(Store):
    """A store whose library moves whole files: small objects go through a temporary file."""

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


class ComposerObjectStoreStore(FileTransferStore):
    """A store reached through a Composer ``ObjectStore`` (upload/download/list by object name)."""

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

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Composer's listing with sizes and etags (OCI's ``fields``), every page."""
        store, out, start = self.client, [], None
        while True:
            page = store.client.list_objects(namespace_name=store.namespace, bucket_name=self.bucket_name,
                                             prefix=prefix, start=start, fields="name,size,etag").data
            out += [ObjectInfo(o.name, int(o.size), str(o.etag)) for o in page.objects]
            start = page.next_start_with
            if not start:
                return out

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
class HFStore(FileTransferStore):
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

        try:  # offline: the cache only, asked for here (huggingface_hub's sessions may predate the setting)
            cached = hf_hub_download(self.repo_id, key, repo_type="dataset", token=os.environ.get("HF_TOKEN") or None,
                                     local_files_only=self.offline())
        except EntryNotFoundError as err:
            raise FileNotFoundError(self.url(key)) from err
        except LocalEntryNotFoundError as err:  # offline, or the Hub unreachable, and not in the cache
            raise FileNotFoundError(f"{self.url(key)}: not in the Hugging Face cache and the Hub is not reachable "
                                    "(HF_HUB_OFFLINE / HF_ENDPOINT)") from err
        shutil.copyfile(cached, local)

    def upload_file(self, local: str, key: str) -> None:
        self.client.upload_file(path_or_fileobj=local, path_in_repo=key, repo_id=self.repo_id, repo_type="dataset")

    def _cached_files(self) -> dict[str, Path]:
        """Offline: the files of the cached snapshot by key (huggingface_hub's own cache lookup)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            root = Path(snapshot_download(self.repo_id, repo_type="dataset", local_files_only=True))
        except LocalEntryNotFoundError:
            return {}
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        if self.offline():
            keys = sorted(self._cached_files())
        else:
            keys = self.client.list_repo_files(self.repo_id, repo_type="dataset")  # every page
        keys = [k for k in keys if k.startswith(prefix)]
        return keys[:limit] if limit else keys

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Sizes and versions: a file's blob id (its LFS sha256, else its git OID), the name
        huggingface_hub's cache gives the blob, so the cache offline and the Hub online agree."""
        if self.offline():
            return [ObjectInfo(key, path.stat().st_size, Path(os.path.realpath(path)).name)
                    for key, path in self._cached_files().items() if key.startswith(prefix)]
        from huggingface_hub.hf_api import RepoFile

        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else None  # the tree listing takes folders
        entries = self.client.list_repo_tree(self.repo_id, path_in_repo=folder, recursive=True, repo_type="dataset")
        return sorted((ObjectInfo(e.path, e.size, e.lfs.sha256 if e.lfs else e.blob_id) for e in entries
                       if isinstance(e, RepoFile) and e.path.startswith(prefix)), key=lambda info: info.key)

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

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Composer's walk of the volume's folders with each file's size and modification time (the
        Files API gives no etag), every page."""
        from databricks.sdk.errors import NotFound

        root = "/" + self.bucket + "/"
        folder = prefix if prefix.endswith("/") or not prefix else os.path.dirname(prefix)
        stack, out = [root + folder], []
        try:
            while stack:
                for entry in self.client.client.files.list_directory_contents(directory_path=stack.pop()):
                    if entry.is_directory:
                        stack.append(entry.path)
                    elif entry.path.startswith(root + prefix):
                        out.append(ObjectInfo(entry.path[len(root):], int(entry.file_size or 0),
                                              str(entry.last_modified)))
        except NotFound:
            return []
        return sorted(out, key=lambda info: info.key)

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
