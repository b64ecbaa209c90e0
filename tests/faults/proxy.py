"""A fault-injecting HTTP proxy for a local S3 server (moto), started by tests on 127.0.0.1.

Clients (boto3 in training ranks, Streaming workers, Composer's uploader processes,
data_prep workers) point ``S3_ENDPOINT_URL`` at the proxy. Every request is rewritten
to ``Connection: close``, so one TCP connection carries one request and each request
gets its own decision, drawn from a seeded generator in arrival order:

- ``reset``: the connection is closed with a TCP RST after the request head arrived;
- ``slowdown``: ``503 SlowDown`` (S3's throttling answer, XML body as S3 sends it);
- ``internal``: ``500 InternalError``;
- ``stall``: nothing is answered for ``stall_seconds`` (longer than the client's read
  timeout), then the connection is closed;
- ``pass``: forwarded to the server unchanged, both ways.

``rate`` is the probability of a fault; ``outage()`` fails every request until
``restore()``. A transient fault never hits the same request (method + path + query)
more than ``max_consecutive`` times in a row, as real transient faults are spread
out; an outage has no such limit. ``counts`` says what was injected.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections import Counter
from typing import Optional

FAULTS = ("reset", "slowdown", "internal", "stall")
ERROR_BODIES = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "internal": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
}
HEAD_LIMIT = 64 * 1024


class FaultProxy:
    def __init__(self, upstream_port: int, *, seed: int = 0, rate: float = 0.0,
                 faults: tuple[str, ...] = FAULTS, stall_seconds: float = 4.0, max_consecutive: int = 2) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.upstream = ("127.0.0.1", upstream_port)
        self.rate, self.faults, self.stall_seconds = rate, tuple(faults), stall_seconds
        self.max_consecutive = max_consecutive
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str]] = []  # (method, target, outcome) in arrival order
        self._random = random.Random(seed)
        self._outage = False
        self._outage_fault: Optional[str] = None
        self._streak: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    # ---- control
    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        try:  # wakes the accept() in _serve (on Linux close() alone does not: stop() waited 5 s)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)

    def outage(self, fault: Optional[str] = None) -> None:
        """Fail every request until :meth:`restore`: with ``fault``, or the configured faults drawn
        as usual (the generator advances the same either way, so the schedule after it is unchanged)."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {FAULTS}")
        with self._lock:
            self._outage = True
            self._outage_fault = fault

    def restore(self, rate: Optional[float] = None) -> None:
        with self._lock:
            self._outage = False
            if rate is not None:
                self.rate = rate

    def injected(self) -> int:
        return sum(self.counts[f] for f in FAULTS)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the schedule
    def _decide(self, method: str, target: str) -> str:
        key = f"{method} {target}"
        with self._lock:
            draw, kind = self._random.random(), self._random.choice(self.faults)
            if self._outage:
                outcome = self._outage_fault or kind
            elif draw < self.rate and self._streak[key] < self.max_consecutive:
                outcome = kind
            else:
                outcome = "pass"
            self._streak[key] = 0 if outcome == "pass" else self._streak[key] + 1
            self.counts[outcome] += 1
            self.counts["requests"] += 1
            self.requests.append((method, target, outcome))
        return outcome

    # ---- serving
    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            outcome = self._decide(method, target)
            if outcome == "pass":
                self._forward(client, request_line, header_lines, rest)
            elif outcome == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif outcome == "stall":
                self._stopped.wait(self.stall_seconds)
            else:
                _drain_body(client, header_lines, rest)
                status, reason, code, message = ERROR_BODIES[outcome]
                body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>").encode()
                client.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        except OSError:
            pass
        finally:
            client.close()

    def _forward(self, client: socket.socket, request_line: str, header_lines: list[str], rest: bytes) -> None:
        headers = [h for h in header_lines if h and not h.lower().startswith(("connection:", "keep-alive:"))]
        head = "\r\n".join([request_line, *headers, "Connection: close", "", ""]).encode("latin-1")
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(head + rest)
            pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
            pump.start()
            _pipe(upstream, client)
            pump.join(timeout=1)


def _read_head(sock: socket.socket) -> tuple[Optional[bytes], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > HEAD_LIMIT:
            raise OSError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _drain_body(client: socket.socket, header_lines: list[str], rest: bytes) -> None:
    """Read the request body (unless the client waits for ``100 Continue``) so the error
    answer is read by the client rather than lost in a broken pipe."""
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if headers.get("expect", "").lower() == "100-continue":
        return
    remaining = int(headers.get("content-length", "0")) - len(rest)
    client.settimeout(5)
    while remaining > 0:
        chunk = client.recv(min(remaining, 1 << 20))
        if not chunk:
            return
        remaining -= len(chunk)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` closes, then half-close ``sink``."""
    try:
        while True:
            chunk = source.recv(1 << 16)
            if not chunk:
                break
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
