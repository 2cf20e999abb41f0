"""IMDS's real address (``169.254.169.254``) is used only inside an acrlocal VM's own network namespace.

acrlocal sends nothing to that address from any other network namespace: from a host it would leave the machine (or
reach a real Azure VM's IMDS, which is not acrlocal's to use). Every client of IMDS in acrlocal asks
:func:`imds_is_local` before it would use the address and refuses otherwise (fail closed): the CLI's
``login --identity`` (:mod:`acrlocal.cli.credentials`) and the server's own managed identity for Blob Storage
(:mod:`acrlocal.storage.azure_blobs`). Nothing here sends anything.
"""

from __future__ import annotations

import socket

from acrlocal.publiccloud import IMDS_ADDRESS


def imds_is_local() -> bool:
    """True in a network namespace that holds only ``lo`` with ``169.254.169.254`` on it (an acrlocal VM's):
    there, and only there, IMDS's real address may be used. Sends nothing."""
    try:
        if [name for _, name in socket.if_nameindex()] != ["lo"]:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((IMDS_ADDRESS, 0))
        return True
    except OSError:
        return False
