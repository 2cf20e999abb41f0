"""What the rooms of a running server share: settings, stores and services, made once by ``server.py``.

Handlers receive the :class:`Context` through ``request.app["ctx"]``; pure domain code never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from acrlocal.config import Settings
from acrlocal.listeners import Listeners
from acrlocal.registry.authz import Authorizer, OpenAuthorizer
from acrlocal.storage.blobs import BlobStore
from acrlocal.storage.metadata import RegistryMetadata
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
    blobs: BlobStore
    listeners: Listeners
    registries: RegistryHosting
    directory: Directory
    keys: KeyRing
    tokens: TokenIssuer
    admin: AdminCredential
    # The registry data plane: its metadata, and the one authorization call every /v2/ request makes.
    registry_meta: RegistryMetadata
    registry_auth: Authorizer = field(default_factory=OpenAuthorizer)
    # Services of the rooms, set by server.py as each room is assembled.
    extras: dict[str, Any] = field(default_factory=dict)
    compute: ComputeRuntime | None = None
