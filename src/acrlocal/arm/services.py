"""What the control plane (ARM and Graph) uses of the other rooms, handed in by ``server.py`` when it assembles the
server; the control plane reads nothing else of the server."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from acrlocal.arm.runners import DeploymentRunners
from acrlocal.compute.runtime import ComputeRuntime
from acrlocal.config import Settings
from acrlocal.identity.bootstrap import AdminCredential
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import TokenIssuer
from acrlocal.registry.hosting import RegistryHosting
from acrlocal.registry.services import RegistryServices
from acrlocal.storage.sql import SqlThread


@dataclass(frozen=True)
class ArmServices:
    """The server's settings (host name suffix, ports, limits), who exists (``directory``), the tenants' signing keys
    (``keys``) and the token issuer that checks callers' tokens (``tokens``), the administrator made at the first
    start (``admin``), the registries served (``registries``) and their data plane (``data_plane``: garbage
    collection, the audit log, the registry token signer), the VMs (``compute``; see :attr:`runtime`), and where the
    control plane's SQL runs (``sql``: the server's one :class:`~acrlocal.storage.sql.SqlThread`, inline on SQLite,
    off the event loop on PostgreSQL). Every call of :class:`~acrlocal.arm.store.ArmStore`, of ``directory`` and of
    the VMs' table that a request or a task on the event loop makes goes through ``sql.run``; a check and the write
    it guards go in one call. ``runners``: which process runs a template deployment (:mod:`acrlocal.arm.runners`)."""

    @property
    def runtime(self) -> ComputeRuntime:
        """The VMs; raises ``RuntimeError`` in a secondary process (which never runs an ARM call)."""
        if self.compute is None:
            raise RuntimeError("this process runs no VMs: ARM calls go to the primary process")
        return self.compute

    settings: Settings
    directory: Directory
    keys: KeyRing
    tokens: TokenIssuer
    admin: AdminCredential
    registries: RegistryHosting
    data_plane: RegistryServices
    compute: ComputeRuntime | None  # None in a secondary process, which forwards every ARM call to the primary
    sql: SqlThread
    runners: DeploymentRunners


#: Where :func:`acrlocal.arm.routes.setup` keeps them on the application.
ARM = web.AppKey("arm.services", ArmServices)
