"""Real local servers of Google Cloud Storage and Azure Blob for tests, one per pytest session.

* GCS: ``gcp-storage-emulator`` (PyPI) in a thread, reached through ``STORAGE_EMULATOR_HOST``
  as google-cloud-storage reads it. Streaming and Composer build their GCS clients from
  Google default credentials, so the tests give them what a user gives them: a service
  account file in ``GOOGLE_APPLICATION_CREDENTIALS``. Its ``token_uri`` points to a
  local OAuth token endpoint (the second server here), which answers every token
  request; nothing in the libraries is patched.
* Azure: Azurite (npm), started with node when it is installed (``make install``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from distributed import free_port

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / ".tools" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
# Azurite's well-known development account (published in its README).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class _TokenHandler(BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, as far as a service account needs it."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"access_token": "local-test-token", "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def service_account_file(path: Path, token_uri: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test-project", "private_key_id": "local", "private_key": pem,
        "client_email": "tests@test-project.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}))
    return path


@contextlib.contextmanager
def gcs_emulator(workdir: Path, bucket: str = "test-bucket") -> Iterator[dict[str, str]]:
    """Yields the environment that points every client at the emulator (one bucket made)."""
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # "not found" is an answer here
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    tokens = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=tokens.serve_forever, daemon=True)
    thread.start()
    try:
        token_uri = f"http://127.0.0.1:{tokens.server_address[1]}/token"
        yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
               "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_file(workdir / "service_account.json", token_uri)),
               "GOOGLE_CLOUD_PROJECT": "test-project"}
    finally:
        tokens.shutdown()
        server.stop()


def azurite_missing() -> str | None:
    """Why Azurite cannot run here (None when it can)."""
    if shutil.which("node") is None:
        return "node is not installed (Azurite runs on node; install node, then `make install`)"
    if not AZURITE.exists():
        return f"Azurite is not installed at {AZURITE.parent} (run `make install`)"
    return None


@contextlib.contextmanager
def azurite(workdir: Path, container: str = "test-container") -> Iterator[dict[str, str]]:
    """Azurite's blob service on 127.0.0.1 with one container; yields the environment to reach it."""
    port = free_port()
    log = open(workdir / "azurite.log", "wb")
    process = subprocess.Popen(["node", str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                "--location", str(workdir / "azurite"), "--skipApiVersionCheck", "--loose"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not start: {(workdir / 'azurite.log').read_text()[-2000:]}")
            time.sleep(0.2)
        connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                      f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(connection).create_container(container)
        yield {"AZURE_STORAGE_CONNECTION_STRING": connection, "AZURE_ACCOUNT_NAME": AZURITE_ACCOUNT,
               "AZURE_ACCOUNT_ACCESS_KEY": AZURITE_KEY}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
