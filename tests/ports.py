"""Ports that tests choose first and something binds later: the services tests start (PostgreSQL, Azurite,
HAProxy), the registries of a database a test writes before its server starts.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range (32768-60999), from which every outgoing
connection also takes its local port: between the choice and the service's bind, or while a service is stopped to be
started again on the same port, a connection of anything else on the machine may hold it, and the service cannot
listen. Ports here come from below that range and below the ports test servers give their registries (from a random
``--registry-port-base`` between 10000 and 30000 upward), checked free when chosen, and above the ports that
browsers and fetch() refuse to connect to (the highest below 10000 is 6697).
"""

from __future__ import annotations

import random
import socket

LOW, HIGH = 7000, 10000


def free_port(low: int = LOW, high: int = HIGH) -> int:
    """A port of 127.0.0.1 from ``low`` up to ``high`` (excluded) that nothing listens on or uses now."""
    for _ in range(500):
        port = random.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high} on 127.0.0.1")
