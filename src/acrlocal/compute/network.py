"""What a VM sees of the server's network: the endpoint, the registries' host names and login servers (pure).

A VM's shell and run-command scripts run in a private mount namespace where ``/etc/hosts`` lists every registry
host name (``<name>.<suffix>``) as 127.0.0.1, and ``/etc/containers/certs.d`` and ``/etc/docker/certs.d`` hold
the local CA for every login server. :class:`VMNetwork` is that view; the runtime rewrites every sandbox's files
from it when the server starts (ports may change) and whenever a registry is added or deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from acrlocal.config import LOOPBACK
from acrlocal.errors import ConfigError

HOSTS_MARKER = "# acrlocal: the registries of this server (kept current by acrlocal; do not edit)"
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOGIN_SERVER = re.compile(r"^(\[[0-9a-f:]+\]|[a-z0-9.-]+):[0-9]{1,5}$")


@dataclass(frozen=True)
class VMNetwork:
    """``endpoint`` is the shared https endpoint (``ACRLOCAL_ENDPOINT``); ``host_names`` the names that must
    resolve to loopback inside a VM; ``login_servers`` every ``host:port`` a registry answers on."""

    endpoint: str
    host_names: tuple[str, ...] = ()
    login_servers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in self.host_names:
            if not _HOST_NAME.match(name):
                raise ConfigError(f"registry host name {name!r} is not a DNS name (letters, digits, '-' and '.')")
        for server in self.login_servers:
            if not _LOGIN_SERVER.match(server):
                raise ConfigError(f"login server {server!r} is not host:port")

    @classmethod
    def of(cls, endpoint: str, host_names: Iterable[str], login_servers: Iterable[str]) -> VMNetwork:
        """Sorted, lower-cased and without duplicates, so equal views compare equal."""
        return cls(endpoint, tuple(sorted({h.lower() for h in host_names})),
                   tuple(sorted({s.lower() for s in login_servers})))


def hosts_file(base: str, network: VMNetwork) -> str:
    """The VM's ``/etc/hosts``: the host's own lines (an earlier acrlocal block dropped), then every registry
    host name on 127.0.0.1."""
    lines = []
    for line in base.splitlines():
        if line.strip() == HOSTS_MARKER:
            break
        lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    text = "\n".join(lines) + ("\n" if lines else "")
    if network.host_names:
        text += f"\n{HOSTS_MARKER}\n"
        text += "".join(f"{LOOPBACK} {name}\n" for name in network.host_names)
    return text


def resolves_locally(hosts_text: str, host: str) -> bool:
    """True if a hosts file maps ``host`` (ignoring case) to a loopback address: no DNS is asked."""
    host = host.lower()
    for line in hosts_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and (fields[0].startswith("127.") or fields[0] == "::1") and \
                host in (f.lower() for f in fields[1:]):
            return True
    return False
