"""Loaded by client processes that tests start (this directory is put first on their PYTHONPATH): every socket
connection to an address other than loopback fails, so no client can reach 169.254.169.254 or the internet even
if an environment override were missing."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            raise OSError(f"loopback-only test client: refusing to connect to unresolved host {host!r}") from None
        if not ip.is_loopback:
            raise OSError(f"loopback-only test client: refusing to connect to {host}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(address)
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
