"""HTTP/1.1 written by hand on a TLS socket: for requests no client library would send (bytes that are not ASCII
in a header, a duplicate ``Host``, a body larger than it says) and for connections held open on purpose."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, ca: str, *, host: str = "localhost", timeout: float = 30.0) -> ssl.SSLSocket:
    """A TLS connection to ``127.0.0.1:port`` that checks the server's certificate for ``host``."""
    context = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def request_bytes(method: str, target: str, port: int, *, headers: list[tuple[bytes, bytes]] | None = None,
                  body: bytes = b"", host: str = "localhost") -> bytes:
    """A complete request with ``Connection: close``; header names and values are sent exactly as given."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n".encode()
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Length: {len(body)}\r\n".encode()
    for name, value in headers or []:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


def parse_response(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return Response(status, headers, body)


def send(port: int, ca: str, method: str, target: str, *, headers: list[tuple[bytes, bytes]] | None = None,
         body: bytes = b"", host: str = "localhost", timeout: float = 60.0) -> Response:
    """Send one request on a connection of its own and read the answer until the server closes. ``host`` is the
    ``Host`` header's name (the TLS connection is always to ``localhost``)."""
    with connect(port, ca, timeout=timeout) as sock:
        # The server may answer before reading the whole body (a 413); its answer is still to be read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            sock.sendall(request_bytes(method, target, port, headers=headers, body=body, host=host))
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not data:
                break
            chunks.append(data)
    return parse_response(b"".join(chunks))
