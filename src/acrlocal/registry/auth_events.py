"""What the token service and the authorizer use besides their signer, handed in by ``server.py`` as one
:class:`AuthServices`: audit events, scoped tokens, the control plane's answers, who exists and the login servers.

- :class:`AuditSink`: ``record(event)`` is called once for every login at the token endpoints (a refresh token
  issued, an access token issued, a credential refused) and once for every authorization decision on the data
  plane (allowed or refused). :class:`NullAudit` drops them; the server hands in its audit log
  (:class:`acrlocal.registry.audit.AuditLog`). ``record`` runs on the request path, so it must be cheap and must not
  raise. A sink
  whose ``records_granted`` is ``False`` is not sent granted data-plane authorizations (every manifest HEAD of
  an authorized client is one); it still gets every login and every refusal.
- :class:`ScopedTokenPolicy`: repository-scoped tokens (ACR's ``tokens`` and ``scope maps``). The token endpoint
  asks it to check a Basic ``name:password`` that is neither the admin user nor an ACR refresh token, and asks it,
  at every token request and from current state, which actions the token's scope map grants on a resource.
  The control plane implements it (:class:`acrlocal.arm.tokens.RepositoryTokens`); ``None`` means the registry has
  no scoped tokens.
- :class:`ControlPlaneAccess`: what the token service asks the control plane at every token request: an Entra
  principal's role assignments at a registry's scope and above, the roles they name, and the admin user's
  password. The control plane implements it (:class:`acrlocal.arm.access.ArmAccess`) and ``server.py`` hands it
  to the token service and the authorizer when it assembles the server.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from acrlocal.rbac import RoleAssignment
from acrlocal.rbac.roles import RoleDefinition
from acrlocal.storage.registries import RegistryRecord
from acrlocal.storage.sql import SqlThread

if TYPE_CHECKING:
    from acrlocal.identity.directory import Directory
    from acrlocal.registry.hosting import RegistryHosting

EventKind = Literal["login", "authorization"]
SubjectKind = Literal["principal", "admin", "token", "anonymous"]


@dataclass(frozen=True, slots=True)
class AuthEvent:
    """One login or authorization decision. ``subject`` is an object id, the admin user name or a scoped
    token's name (``None`` when anonymous or unknown); ``outcome`` is ``granted``, ``partial`` (a token with less
    than was asked), ``denied`` or ``failed`` (bad credentials); ``detail`` says why, never a secret."""

    kind: EventKind
    registry: str
    subject_kind: SubjectKind | None
    subject: str | None
    outcome: str
    repository: str | None = None
    actions: tuple[str, ...] = ()
    granted: tuple[str, ...] = ()
    detail: str | None = None
    address: str | None = None
    time: float = field(default_factory=time.time)


class AuditSink(Protocol):
    def record(self, event: AuthEvent) -> None: ...


def records_granted(sink: AuditSink) -> bool:
    """Whether ``sink`` wants granted data-plane authorizations (``records_granted``, default ``True``)."""
    return bool(getattr(sink, "records_granted", True))


class NullAudit:
    """Drops every event."""

    records_granted = False

    def record(self, event: AuthEvent) -> None:
        return None


class ScopedTokenPolicy(Protocol):
    def check_password(self, registry: RegistryRecord, name: str, password: str) -> bool:
        """True if ``name`` is an enabled scoped token of ``registry`` and ``password`` one of its current
        passwords (constant-time comparison)."""
        ...

    def enabled(self, registry: RegistryRecord, name: str) -> bool:
        """True if ``name`` is a scoped token of ``registry`` and enabled now (whatever its passwords)."""
        ...

    def actions(self, registry: RegistryRecord, name: str, resource_type: str, resource: str) -> Collection[str]:
        """The Docker actions (``pull``, ``push``, ``delete``, ``metadata_read``, ``metadata_write``; ``*`` for
        ``registry:catalog``) the token's scope map grants now on ``resource_type:resource``; empty if the token
        is disabled, expired or gone."""
        ...


class ControlPlaneAccess(Protocol):
    def assignments_for(self, principal_ids: Iterable[str], scope: str) -> list[RoleAssignment]:
        """The role assignments of ``principal_ids`` that apply at ``scope`` (an ARM id: at it or any scope above
        it); raises :class:`~acrlocal.rbac.errors.InvalidScope` if ``scope`` is not one."""
        ...

    def role_definitions(self, tenant_id: str) -> dict[str, RoleDefinition]:
        """Built-in roles and ``tenant_id``'s custom roles by lower-case GUID."""
        ...

    def check_admin_password(self, registry_name: str, username: str, password: str) -> bool:
        """True if the registry's admin user is enabled and ``username``/``password`` are its credentials."""
        ...


@dataclass(frozen=True)
class AuthServices:
    """What the token service and the authorizer read: the registries' login servers (``hosting``), who exists
    (``directory``), the control plane's answers (``access``), the scoped-token policy (``scoped_tokens``), where
    every login and decision is reported (``audit``), and where the calls that read the database run (``sql``, the
    server's :class:`~acrlocal.storage.sql.SqlThread`: inline on SQLite, off the event loop on PostgreSQL; the token
    service and the authorizer call ``directory``, ``access`` and ``scoped_tokens`` through it, never directly)."""

    hosting: RegistryHosting
    directory: Directory
    access: ControlPlaneAccess
    scoped_tokens: ScopedTokenPolicy | None
    audit: AuditSink
    sql: SqlThread
