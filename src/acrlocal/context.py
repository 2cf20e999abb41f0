"""What the rooms of a running server share: settings, stores and services, made once by ``server.py``.

Handlers receive the :class:`Context` through ``request.app["ctx"]``; pure domain code never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from acrlocal.config import Settings
from acrlocal.listeners import Listeners
from acrlocal.lockout import Lockout, parse_lockout
from acrlocal.registry.auth_events import AuditSink, NullAudit, ScopedTokenPolicy
from acrlocal.registry.authz import Authorizer
from acrlocal.registry.throttle import Throttle, parse_policy
from acrlocal.storage.artifacts import ArtifactCatalog, SqlArtifacts
from acrlocal.storage.blobs import BlobStore
from acrlocal.storage.metadata import RegistryMetadata, SqlRegistryMetadata
from acrlocal.storage.sql import SqlThread
from acrlocal.tls import LocalCA

if TYPE_CHECKING:
    from acrlocal.arm.store import ArmStore
    from acrlocal.compute.runtime import ComputeRuntime
    from acrlocal.identity.bootstrap import AdminCredential
    from acrlocal.identity.directory import Directory
    from acrlocal.identity.keys import KeyRing
    from acrlocal.identity.tokens import TokenIssuer
    from acrlocal.registry.hosting import RegistryHosting
    from acrlocal.registry.token_service import TokenService


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
    # The registry data plane: its metadata, and the one authorization call every /v2/ request makes. There is no
    # default policy: whoever assembles a server chooses one (server.py: the token service, or the open policy only
    # when asked for by --insecure-open-registry).
    registry_meta: RegistryMetadata
    registry_auth: Authorizer
    # ACR's view of the same content (/acr/v1, changeable attributes); made from registry_meta when not given.
    registry_artifacts: ArtifactCatalog | None = None
    # Per-registry read/write rate limits of the data plane; made from settings.registry_rate_limit when not given.
    registry_throttle: Throttle | None = None
    # Failed passwords and secrets, per name and per caller, of Entra and the registries' token services; made from
    # settings.login_lockout.
    lockout: Lockout = field(init=False)
    # Where the data plane's store calls run: inline on SQLite, off the event loop on PostgreSQL.
    sql: SqlThread = field(init=False)
    # The token service's hooks: every login and authorization decision is recorded here, and repository-scoped
    # tokens (name + password) are checked and resolved to actions here (see registry.auth_events).
    registry_audit: AuditSink = field(default_factory=NullAudit)
    scoped_tokens: ScopedTokenPolicy | None = None
    token_service: TokenService | None = None
    # Services of the rooms, set by server.py as each room is assembled.
    extras: dict[str, Any] = field(default_factory=dict)
    compute: ComputeRuntime | None = None
    # The control plane's resource store, set when the ARM room is set up.
    arm_store: ArmStore | None = None

    def __post_init__(self) -> None:
        self.sql = SqlThread(self.engine)
        if self.registry_artifacts is None and isinstance(self.registry_meta, SqlRegistryMetadata):
            self.registry_artifacts = SqlArtifacts(self.registry_meta)
        if self.registry_throttle is None:
            self.registry_throttle = Throttle(parse_policy(self.settings.registry_rate_limit))
        self.lockout = Lockout(parse_lockout(self.settings.login_lockout))

    @property
    def artifacts(self) -> ArtifactCatalog:
        """The artifact catalog; raises ``RuntimeError`` if the server was assembled without one."""
        if self.registry_artifacts is None:
            raise RuntimeError("the context has no artifact catalog (registry_meta is not SQL)")
        return self.registry_artifacts

    @property
    def arm(self) -> ArmStore:
        """The control plane's resource store; raises ``RuntimeError`` before the ARM room is set up."""
        if self.arm_store is None:
            raise RuntimeError("the context has no ARM store (the control plane is not set up)")
        return self.arm_store
