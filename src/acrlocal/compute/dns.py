"""The DNS stub of every VM (``127.0.0.53:53`` in the VM, answered by the server): Azure's names, and nothing else.

A VM's ``/etc/resolv.conf`` names only this stub. It answers ``A`` for the names in :class:`Names` (Azure's
service names and ``<registry>.azurecr.io`` for every registry the server hosts now) with the VM's front door,
``NOERROR`` with no records for their other types (``AAAA``...), and ``NXDOMAIN`` for every other name at once:
nothing is ever asked of a DNS server off this machine. Registries are looked up when asked, so a registry made
after a VM started resolves there with no work per VM. Malformed queries get no answer (as a server drops them),
queries that are not a standard query ``FORMERR`` or ``NOTIMP``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from acrlocal import publiccloud

log = logging.getLogger(__name__)
TTL = 60


@dataclass(frozen=True)
class Names:
    """Which names a VM resolves: Azure's service names, and ``<name>.azurecr.io`` when ``registry_exists``."""

    registry_exists: Callable[[str], bool]
    address: str = publiccloud.FRONT_DOOR

    def resolves(self, name: str) -> bool:
        host = name.rstrip(".").lower()
        if host in publiccloud.SERVICE_HOSTS:
            return True
        registry = publiccloud.registry_of(host)
        return registry is not None and self.registry_exists(registry)


def answer(query: bytes, names: Names) -> bytes | None:
    """The response to one query (wire format), or ``None`` for what is not a DNS message at all."""
    try:
        message = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError):
        return None
    response = dns.message.make_response(message)
    response.flags |= dns.flags.RA
    if message.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response.to_wire()
    if len(message.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = message.question[0]
    if question.rdclass != dns.rdataclass.IN or not names.resolves(question.name.to_text()):
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    response.flags |= dns.flags.AA
    if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        response.answer.append(dns.rrset.from_text(question.name, TTL, dns.rdataclass.IN, dns.rdatatype.A,
                                                   names.address))
    return response.to_wire()


class Stub(asyncio.DatagramProtocol):
    """Serves :func:`answer` on one VM's UDP socket."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.transport: Any = None  # a DatagramTransport (uvloop's is not a subclass of asyncio's)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer(data, self.names)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS stub: %s", exc)
