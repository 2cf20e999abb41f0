"""What the control plane's handlers still read of a running server, made once by ``server.py``.

ARM and Graph receive the :class:`Context` through ``request.app["ctx"]``; the rooms below them receive what they
use instead (the Entra endpoints their ``EntraServices``, IMDS its ``VirtualMachines``, the registry's data plane
its ``RegistryServices``), and pure domain code never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from acrlocal.config import Settings
from acrlocal.listeners import Listeners
from acrlocal.lockout import Lockout
from acrlocal.registry.services import RegistryServices
from acrlocal.tls import LocalCA

if TYPE_CHECKING:
    from acrlocal.compute.runtime import ComputeRuntime
    from acrlocal.identity.bootstrap import AdminCredential
    from acrlocal.identity.directory import Directory
    from acrlocal.identity.keys import KeyRing
    from acrlocal.identity.tokens import TokenIssuer
    from acrlocal.registry.hosting import RegistryHosting


@dataclass
class Context:
    settings: Settings
    ca: LocalCA
    engine: Engine
    listeners: Listeners
    registries: RegistryHosting
    directory: Directory
    keys: KeyRing
    tokens: TokenIssuer
    admin: AdminCredential
    # Failed passwords and secrets, per name and per caller, of Entra and the registries' token services.
    lockout: Lockout
    # What the registry's data plane uses (its content, authorizer, audit log and token service).
    data_plane: RegistryServices
    compute: ComputeRuntime | None = None  # None in a secondary process (acrlocal.workers)
