"""The directory: tenants, subscriptions and principals (service principals, managed identities, users, groups,
the local administrator), their client secrets, certificates and federated credentials; users' passwords and
refresh tokens, group members, owners, directory roles, and application objects.

Every method is one transaction. Lookups raise :class:`~acrlocal.errors.NotFound`; secrets are returned once, at
creation, and only their sha256 is kept; users' passwords are kept as salted scrypt hashes
(:mod:`.passwords`). Deleting a principal deletes its credentials, memberships and ownerships; role assignments
that name it then match nothing (the RBAC evaluation only sees principals that exist).

Users and groups are principals too (``kind`` ``User`` / ``Group``), so role assignments and the token checks
find them like any other; they have no application, and their ``app_id`` is their object id (an internal value,
never rendered; the token endpoints only authenticate service principals and managed identities as clients).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.engine import Connection, Engine

from acrlocal.errors import AcrLocalError, AlreadyExists, NotFound
from acrlocal.generations import Generations
from acrlocal.identity import store as t
from acrlocal.storage.sql import unique_violation, write_transaction

PrincipalKind = Literal["ServicePrincipal", "ManagedIdentity", "User", "Group"]
#: Entra's role template id of Global Administrator: may write every directory object of its tenant.
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
#: How long a user's refresh token lives (Entra: 90 days).
REFRESH_TOKEN_LIFETIME_S = 90 * 24 * 3600
#: Group nesting followed when resolving a principal's groups (Entra allows nesting; cycles are cut).
MAX_GROUP_DEPTH = 32
ManagedIdentityKind = Literal["system", "user"]


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    is_default: bool


@dataclass(frozen=True)
class Subscription:
    id: str
    tenant_id: str
    display_name: str
    state: str
    is_default: bool


@dataclass(frozen=True)
class Principal:
    """Anything that can hold a token. ``app_id`` is the client id; for managed identities ``resource_id`` is
    the ARM id the token carries as ``xms_mirid``."""

    object_id: str
    tenant_id: str
    kind: PrincipalKind
    app_id: str
    display_name: str
    resource_id: str | None = None
    mi_kind: ManagedIdentityKind | None = None

    @property
    def principal_type(self) -> str:
        """The ``principalType`` ARM role assignments use."""
        return self.kind if self.kind in ("User", "Group") else "ServicePrincipal"


@dataclass(frozen=True)
class User:
    """A person of the directory. ``properties`` are the other Graph properties (``givenName``, ``mail``...)."""

    object_id: str
    tenant_id: str
    user_principal_name: str
    display_name: str
    account_enabled: bool
    force_change: bool
    properties: dict[str, Any]


@dataclass(frozen=True)
class Group:
    object_id: str
    tenant_id: str
    display_name: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class Application:
    """An application object; ``app_id`` names its principal (the service principal, once created)."""

    id: str
    app_id: str
    tenant_id: str
    display_name: str
    service_principal: bool
    properties: dict[str, Any]
    created: str


@dataclass(frozen=True)
class PasswordCredential:
    key_id: str
    display_name: str
    hint: str
    created: float
    expires: float | None
    listed_on: str


@dataclass(frozen=True)
class FederatedCredential:
    id: str
    object_id: str
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]


@dataclass(frozen=True)
class Certificate:
    """A registered certificate (Graph's keyCredential). ``starts``/``expires`` bound when it authenticates:
    the credential's own dates, else the certificate's."""

    key_id: str
    object_id: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    certificate: x509.Certificate
    display_name: str = ""
    starts: float | None = None
    expires: float | None = None
    listed_on: str = "application"
    created: float = 0.0

    def valid_at(self, now: float) -> bool:
        start = self.starts if self.starts is not None else self.certificate.not_valid_before_utc.timestamp()
        end = self.expires if self.expires is not None else self.certificate.not_valid_after_utc.timestamp()
        return start <= now < end


@dataclass(frozen=True)
class NewCertificate:
    """A certificate to register (Graph's keyCredential as given), checked already: ``certificate_pem`` is a PEM
    certificate, ``key_id`` ``None`` or a GUID, the dates in order."""

    certificate_pem: str
    key_id: str | None = None
    display_name: str = ""
    starts: float | None = None
    expires: float | None = None


@dataclass(frozen=True)
class Client:
    """What a client-credentials request with a client secret checks: the principal, whether its service principal
    is enabled (Graph's ``accountEnabled``), its client secrets as kept (sha256, expiry or ``None``), and whether it
    has a service principal at all (``service_principal`` false: an application object whose service principal was
    never made through Graph, or was deleted there; every other principal is one)."""

    principal: Principal
    enabled: bool
    secrets: tuple[tuple[str, float | None], ...]
    service_principal: bool = True

    def accepts(self, secret: str, now: float) -> bool:
        """True if ``secret`` is one of the client's secrets and not expired at ``now``; every stored secret is
        compared, each in constant time."""
        return _accepts(self.secrets, secret, now)


def _accepts(kept: tuple[tuple[str, float | None], ...], secret: str, now: float) -> bool:
    digest = _secret_hash(secret)
    ok = False
    for stored, expires in kept:
        if hmac.compare_digest(stored, digest) and (expires is None or expires > now):
            ok = True
    return ok


@dataclass(frozen=True)
class ProvisionedTenant:
    """What :meth:`Directory.create_tenant_with_administrator` made: the tenant, its default subscription, its
    administrator (a service principal, Global Administrator of the tenant) and the administrator's client secret
    (returned once; only its sha256 is kept)."""

    tenant: Tenant
    subscription: Subscription
    administrator: Principal
    secret: str = field(repr=False)


#: How many of what a tenant still holds a refused deletion names (each check reads one more, to say "and more").
HELD_SHOWN = 5


@dataclass(frozen=True)
class TenantDeletion:
    """A tenant :meth:`Directory.delete_tenant` is deleting, as its callbacks see it (in its transaction):
    ``subscription_ids`` and ``principal_ids`` are all the tenant's (lower case); ``administrator_ids`` the
    principals createTenant made, which a deletion may take along (service principals without an application
    object: Graph can neither make, rename nor delete one)."""

    tenant: Tenant
    subscription_ids: tuple[str, ...]
    principal_ids: tuple[str, ...]
    administrator_ids: tuple[str, ...]


class DefaultTenantKept(AcrLocalError, PermissionError):
    """A deletion of the server's default tenant, which is never deleted."""


class TenantNotEmpty(AcrLocalError, PermissionError):
    """A tenant deletion refused: the tenant still holds more than createTenant made. ``held`` describes the first
    few things (at most :data:`HELD_SHOWN` of each kind, and one more when there are more), in a form for a
    message (``user 'alice@contoso.localhost'``)."""

    def __init__(self, tenant: Tenant, held: list[str]) -> None:
        shown = ", ".join(held[:HELD_SHOWN]) + (" and more" if len(held) > HELD_SHOWN else "")
        super().__init__(f"tenant {tenant.display_name!r} ({tenant.id}) still holds {shown}")
        self.tenant, self.held = tenant, held


class IssuerAndSubjectTaken(AlreadyExists):
    """A federated credential's issuer and subject are those of another credential of the same principal (Entra
    keeps the pair unique per application or managed identity, so a token exchange matches one credential)."""

    def __init__(self, issuer: str, subject: str, taken_by: str) -> None:
        super().__init__(f"issuer {issuer!r} and subject {subject!r} are those of federated credential {taken_by!r}")
        self.issuer, self.subject, self.taken_by = issuer, subject, taken_by


def new_guid() -> str:
    return str(uuid.uuid4())


def _new_secret() -> str:
    """A client secret: 240 random bits, URL-safe, in the alphabet of Entra's secrets."""
    return base64.urlsafe_b64encode(secrets.token_bytes(30)).decode().replace("-", "~").replace("_", ".")


def _refuse_taken_issuer(credentials: Sequence[Any], issuer: str, subject: str, own_id: str | None) -> None:
    """:class:`IssuerAndSubjectTaken` if one of ``credentials`` (rows), other than ``own_id``, federates the same
    issuer and subject."""
    taken = next((r for r in credentials if r.issuer == issuer and r.subject == subject and r.id != own_id), None)
    if taken is not None:
        raise IssuerAndSubjectTaken(issuer, subject, taken.name)


def _insert_tenant(conn: Connection, tenant: Tenant, now: float) -> None:
    """Insert ``tenant`` in ``conn``'s transaction; :class:`AlreadyExists` (the transaction then rolls back) if a
    tenant has its name in any case: the unique key on ``name_key``, which holds even when two writers both
    looked first."""
    try:
        conn.execute(sa.insert(t.tenants).values(id=tenant.id, display_name=tenant.display_name,
                                                 name_key=tenant.display_name.lower(), is_default=tenant.is_default,
                                                 created=now))
    except sa.exc.IntegrityError as exc:
        if unique_violation(exc):
            raise AlreadyExists(f"a tenant named {tenant.display_name!r} exists") from None
        raise


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(row: Any) -> Principal:
    return Principal(row.object_id, row.tenant_id, row.kind, row.app_id, row.display_name, row.resource_id,
                     row.mi_kind)


def _user(row: Any) -> User:
    return User(row.object_id, row.tenant_id, row.user_principal_name, row.display_name, bool(row.account_enabled),
                bool(row.force_change), json.loads(row.properties or "{}"))


def _group(row: Any) -> Group:
    return Group(row.object_id, row.tenant_id, row.display_name, json.loads(row.properties or "{}"))


def _application(row: Any) -> Application:
    return Application(row.id, row.app_id, row.tenant_id, row.display_name, bool(row.service_principal),
                       json.loads(row.properties or "{}"), row.created)


def _certificate(r: Any) -> Certificate:
    return Certificate(r.key_id, r.object_id, r.thumbprint_sha1, r.thumbprint_sha256,
                       x509.load_pem_x509_certificate(r.certificate_pem.encode()), r.display_name or "", r.starts,
                       r.expires, r.listed_on or "application", r.created)


class Directory:
    """``generation`` changes with every principal creation and deletion, by this process or another of the same
    server (a slot of the server's :class:`~acrlocal.generations.Generations`), so that in-memory caches of
    principals (IMDS) know when to look again."""

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self.generations = generations or Generations()

    @property
    def generation(self) -> int:
        return self.generations.current("directory")

    # -- tenants and subscriptions -----------------------------------------------------------------

    def create_tenant(self, display_name: str, *, tenant_id: str | None = None, default: bool = False) -> Tenant:
        """A tenant with no subscription or principal (the default one, which ``bootstrap`` fills);
        :class:`AlreadyExists` if a tenant of this name exists in any case."""
        tenant = Tenant(tenant_id or new_guid(), display_name, default)
        with self.engine.begin() as conn:
            _insert_tenant(conn, tenant, time.time())
        return tenant

    def create_tenant_with_administrator(
            self, display_name: str, administrator_name: str, *,
            also: Callable[[Connection, ProvisionedTenant], None] | None = None) -> ProvisionedTenant:
        """A new tenant (not the default), its default subscription (named as the tenant), and its administrator: a
        service principal named ``administrator_name`` with a client secret and the Global Administrator role. All
        in one transaction, with ``also(conn, made)`` (the caller's own writes in that transaction, e.g. the
        administrator's Owner assignment on the subscription): if anything raises, nothing is made, and the error
        propagates. :class:`AlreadyExists` if a tenant of this name exists in any case (the tenants' unique key on
        the name, its first insert)."""
        now = time.time()
        tenant = Tenant(new_guid(), display_name, False)
        sub = Subscription(new_guid(), tenant.id, display_name, "Enabled", False)
        admin = Principal(new_guid(), tenant.id, "ServicePrincipal", new_guid(), administrator_name)
        made = ProvisionedTenant(tenant, sub, admin, _new_secret())
        with self.engine.begin() as conn:
            _insert_tenant(conn, tenant, now)
            conn.execute(sa.insert(t.subscriptions).values(
                id=sub.id, tenant_id=tenant.id, display_name=display_name, state="Enabled", is_default=False,
                created=now))
            self._insert_principal(conn, admin)
            conn.execute(sa.insert(t.principal_secrets).values(
                key_id=new_guid(), object_id=admin.object_id, display_name="acrlocal tenant administrator",
                secret_sha256=_secret_hash(made.secret), hint=made.secret[:3], created=now, expires=None,
                listed_on="application"))
            conn.execute(sa.insert(t.directory_roles).values(role_template_id=GLOBAL_ADMINISTRATOR,
                                                             principal_id=admin.object_id))
            if also is not None:
                also(conn, made)
        self.generations.bump("directory")
        return made

    def delete_tenant(
            self, tenant_id: str, *, held: Callable[[Connection, TenantDeletion], list[str]] | None = None,
            also: Callable[[Connection, TenantDeletion], None] | None = None) -> Tenant:
        """Delete a tenant createTenant made, with everything it made and everything derived: its subscriptions,
        its administrator with its secrets, certificates, federated credentials, directory roles, memberships and
        ownerships, and the tenant's signing keys. All in one transaction, which first locks the tenant's row, with
        ``held(conn, deleting)`` (what the caller's tables still hold: descriptions, as :class:`TenantNotEmpty`
        names them) and then ``also(conn, deleting)`` (the caller's own deletes, e.g. the control plane's role
        assignments): if anything raises, nothing is deleted and the error propagates.

        :class:`~acrlocal.errors.NotFound` if no tenant has this id, :class:`DefaultTenantKept` for the server's
        default tenant, :class:`TenantNotEmpty` while the tenant holds anything but its subscriptions and its
        administrators (a user, a group, an application, a managed identity...) or ``held`` names something. The
        caller drops what it keeps of the tenant in memory (its signing keys) afterwards."""
        tid = tenant_id.lower()
        c = t.principals.c
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.tenants).where(t.tenants.c.id == tid).with_for_update()).first()
            if row is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            tenant = Tenant(row.id, row.display_name, bool(row.is_default))
            if tenant.is_default:
                raise DefaultTenantKept(f"tenant {tenant.display_name!r} ({tenant.id}) is the server's default tenant")
            subs = conn.execute(sa.select(t.subscriptions.c.id).where(t.subscriptions.c.tenant_id == tid)
                                .order_by(t.subscriptions.c.created)).scalars().all()
            with_application = sa.select(t.applications.c.app_id)
            principals = conn.execute(sa.select(c.object_id, c.kind, c.app_id.in_(with_application).label("app"))
                                      .where(c.tenant_id == tid).order_by(c.created, c.object_id)).all()
            admins = tuple(p.object_id for p in principals if p.kind == "ServicePrincipal" and not p.app)
            deleting = TenantDeletion(tenant, tuple(subs), tuple(p.object_id for p in principals), admins)
            left = self._held(conn, deleting) + (held(conn, deleting) if held is not None else [])
            if left:
                raise TenantNotEmpty(tenant, left)
            if also is not None:
                also(conn, deleting)
            of_tenant = sa.select(c.object_id).where(c.tenant_id == tid).scalar_subquery()
            apps = sa.select(t.applications.c.id).where(t.applications.c.tenant_id == tid).scalar_subquery()
            conn.execute(sa.delete(t.owners).where(sa.or_(t.owners.c.owner_id.in_(of_tenant),
                                                          t.owners.c.object_id.in_(of_tenant),
                                                          t.owners.c.object_id.in_(apps))))
            conn.execute(sa.delete(t.group_members).where(sa.or_(t.group_members.c.group_id.in_(of_tenant),
                                                                 t.group_members.c.member_id.in_(of_tenant))))
            conn.execute(sa.delete(t.directory_roles).where(t.directory_roles.c.principal_id.in_(of_tenant)))
            for table in (t.principal_secrets, t.principal_certificates, t.federated_credentials, t.refresh_tokens,
                          t.users, t.groups, t.service_principals):
                conn.execute(sa.delete(table).where(table.c.object_id.in_(of_tenant)))
            for table in (t.applications, t.principals, t.signing_keys, t.subscriptions):
                conn.execute(sa.delete(table).where(table.c.tenant_id == tid))
            conn.execute(sa.delete(t.tenants).where(t.tenants.c.id == tid))
        self.generations.bump("directory")
        return tenant

    @staticmethod
    def _held(conn: Connection, deleting: TenantDeletion) -> list[str]:
        """The directory objects of the tenant being deleted that createTenant did not make: every principal but
        its administrators (oldest first), and any application object left without one."""
        c = t.principals.c
        tid = deleting.tenant.id
        rows = conn.execute(
            sa.select(c.kind, c.display_name, c.app_id, t.users.c.user_principal_name, t.applications.c.id)
            .select_from(t.principals.outerjoin(t.users, t.users.c.object_id == c.object_id)
                         .outerjoin(t.applications, t.applications.c.app_id == c.app_id))
            .where(c.tenant_id == tid, c.object_id.not_in(deleting.administrator_ids))
            .order_by(c.created, c.object_id).limit(HELD_SHOWN + 1)).all()
        left = []
        for r in rows:
            if r.kind == "User":
                left.append(f"user '{r.user_principal_name}'")
            elif r.kind == "Group":
                left.append(f"group '{r.display_name}'")
            elif r.kind == "ManagedIdentity":
                left.append(f"managed identity '{r.display_name}'")
            elif r.id is not None:
                left.append(f"application '{r.display_name}' (appId {r.app_id})")
            else:
                left.append(f"service principal '{r.display_name}' (appId {r.app_id})")
        a = t.applications.c
        apps = conn.execute(sa.select(a.display_name, a.app_id).where(
            a.tenant_id == tid, a.app_id.not_in(sa.select(c.app_id))).order_by(a.created, a.id)
            .limit(HELD_SHOWN + 1)).all()
        return left + [f"application '{r.display_name}' (appId {r.app_id})" for r in apps]

    def tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.tenants).order_by(t.tenants.c.created)).all()
        return [Tenant(r.id, r.display_name, bool(r.is_default)) for r in rows]

    def tenant(self, tenant_id: str) -> Tenant:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.tenants).where(t.tenants.c.id == tenant_id.lower())).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return Tenant(row.id, row.display_name, bool(row.is_default))

    def default_tenant(self) -> Tenant:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.tenants).where(t.tenants.c.is_default.is_(True))).first()
        if row is None:
            raise NotFound("there is no default tenant yet")
        return Tenant(row.id, row.display_name, True)

    def create_subscription(self, tenant_id: str, display_name: str, *, subscription_id: str | None = None,
                            default: bool = False) -> Subscription:
        self.tenant(tenant_id)
        sub = Subscription(subscription_id or new_guid(), tenant_id, display_name, "Enabled", default)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.subscriptions).values(
                id=sub.id, tenant_id=tenant_id, display_name=display_name, state="Enabled", is_default=default,
                created=time.time()))
        return sub

    def subscriptions(self, tenant_id: str | None = None) -> list[Subscription]:
        q = sa.select(t.subscriptions).order_by(t.subscriptions.c.created)
        if tenant_id:
            q = q.where(t.subscriptions.c.tenant_id == tenant_id.lower())
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [Subscription(r.id, r.tenant_id, r.display_name, r.state, bool(r.is_default)) for r in rows]

    def subscription(self, subscription_id: str) -> Subscription:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(t.subscriptions).where(t.subscriptions.c.id == subscription_id.lower())).first()
        if r is None:
            raise NotFound(f"subscription {subscription_id!r} does not exist")
        return Subscription(r.id, r.tenant_id, r.display_name, r.state, bool(r.is_default))

    # -- principals --------------------------------------------------------------------------------

    def _insert_principal(self, conn: Connection, p: Principal) -> None:
        conn.execute(sa.insert(t.principals).values(
            object_id=p.object_id, tenant_id=p.tenant_id, kind=p.kind, app_id=p.app_id,
            display_name=p.display_name, resource_id=p.resource_id, mi_kind=p.mi_kind, created=time.time()))

    def create_service_principal(self, tenant_id: str, display_name: str, *, kind: PrincipalKind = "ServicePrincipal",
                                 object_id: str | None = None, app_id: str | None = None) -> Principal:
        self.tenant(tenant_id)
        p = Principal(object_id or new_guid(), tenant_id, kind, app_id or new_guid(), display_name)
        with self.engine.begin() as conn:
            self._insert_principal(conn, p)
        self.generations.bump("directory")
        return p

    def create_managed_identity(self, tenant_id: str, resource_id: str, display_name: str,
                                mi_kind: ManagedIdentityKind) -> Principal:
        """A managed identity's service principal. ``resource_id`` is the UAMI's ARM id (user-assigned) or the
        owning resource's ARM id (system-assigned); :class:`AlreadyExists` if it already has one."""
        self.tenant(tenant_id)
        p = Principal(new_guid(), tenant_id, "ManagedIdentity", new_guid(), display_name, resource_id, mi_kind)
        with self.engine.begin() as conn:
            clash = conn.execute(sa.select(t.principals.c.object_id).where(
                sa.func.lower(t.principals.c.resource_id) == resource_id.lower())).first()
            if clash:
                raise AlreadyExists(f"resource {resource_id!r} already has a managed identity")
            self._insert_principal(conn, p)
        self.generations.bump("directory")
        return p

    def principal(self, object_id: str) -> Principal:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.principals).where(t.principals.c.object_id == object_id.lower())).first()
        if row is None:
            raise NotFound(f"principal {object_id!r} does not exist")
        return _principal(row)

    def find_principal(self, *, object_id: str | None = None, app_id: str | None = None,
                       resource_id: str | None = None) -> Principal | None:
        """The principal matching exactly one given selector (case-insensitive), or ``None``."""
        c = t.principals.c
        if object_id:
            cond = c.object_id == object_id.lower()
        elif app_id:
            cond = c.app_id == app_id.lower()
        elif resource_id:
            cond = sa.func.lower(c.resource_id) == resource_id.lower()
        else:
            raise ValueError("find_principal needs object_id, app_id or resource_id")
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.principals).where(cond)).first()
        return _principal(row) if row else None

    def principals(self, tenant_id: str | None = None) -> list[Principal]:
        q = sa.select(t.principals).order_by(t.principals.c.created)
        if tenant_id:
            q = q.where(t.principals.c.tenant_id == tenant_id.lower())
        with self.engine.connect() as conn:
            return [_principal(r) for r in conn.execute(q)]

    def delete_principal(self, object_id: str) -> None:
        with self.engine.begin() as conn:
            self._delete_principal(conn, object_id)
        self.generations.bump("directory")

    @staticmethod
    def _delete_principal(conn: sa.Connection, object_id: str) -> None:
        """The principal's row and its owner rows (credentials and memberships go with the row's cascade)."""
        conn.execute(sa.delete(t.owners).where(t.owners.c.object_id == object_id.lower()))
        conn.execute(sa.delete(t.principals).where(t.principals.c.object_id == object_id.lower()))

    # -- client secrets ----------------------------------------------------------------------------

    def add_secret(self, object_id: str, display_name: str = "", lifetime_s: float | None = None, *,
                   listed_on: str = "application") -> tuple[str, str]:
        """A new client secret for the principal: returns ``(key_id, secret)``; the secret is not kept.
        ``listed_on`` is the Graph object that lists it (``application`` or ``servicePrincipal``)."""
        self.principal(object_id)
        secret = _new_secret()
        key_id = new_guid()
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.principal_secrets).values(
                key_id=key_id, object_id=object_id.lower(), display_name=display_name,
                secret_sha256=_secret_hash(secret), hint=secret[:3], created=now,
                expires=now + lifetime_s if lifetime_s else None, listed_on=listed_on))
        return key_id, secret

    def secrets(self, object_id: str) -> list[PasswordCredential]:
        """The principal's client secrets (never their values), newest first."""
        c = t.principal_secrets.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principal_secrets).where(c.object_id == object_id.lower())
                                .order_by(c.created.desc())).all()
        return [PasswordCredential(r.key_id, r.display_name, r.hint, r.created, r.expires,
                                   r.listed_on or "application") for r in rows]

    def check_secret(self, object_id: str, secret: str) -> bool:
        """True if ``secret`` is a current client secret of the principal (constant-time comparison)."""
        with self.engine.connect() as conn:
            kept = self._secrets_of(conn, object_id.lower())
        return _accepts(kept, secret, time.time())

    def _secrets_of(self, conn: Connection, object_id: str) -> tuple[tuple[str, float | None], ...]:
        c = t.principal_secrets.c
        rows = conn.execute(sa.select(c.secret_sha256, c.expires).where(c.object_id == object_id)).all()
        return tuple((r.secret_sha256, r.expires) for r in rows)

    def client(self, app_id: str) -> Client | None:
        """The principal whose client id is ``app_id`` with what a client secret is checked against, read in one
        transaction; ``None`` if there is no such principal."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.principals).where(t.principals.c.app_id == app_id.lower())).first()
            if row is None:
                return None
            principal = _principal(row)
            props = conn.execute(sa.select(t.service_principals.c.properties).where(
                t.service_principals.c.object_id == principal.object_id)).first()
            enabled = (json.loads(props.properties) if props else {}).get("accountEnabled") is not False
            app = conn.execute(sa.select(t.applications.c.service_principal).where(
                t.applications.c.app_id == principal.app_id)).first()
            return Client(principal, enabled, self._secrets_of(conn, principal.object_id),
                          app is None or bool(app.service_principal))

    def remove_secret(self, object_id: str, key_id: str) -> None:
        """Remove one client secret of the principal; :class:`NotFound` if it has none with ``key_id``."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.principal_secrets).where(
                t.principal_secrets.c.object_id == object_id.lower(), t.principal_secrets.c.key_id == key_id.lower()))
        if result.rowcount == 0:
            raise NotFound(f"principal {object_id!r} has no client secret with key id {key_id!r}")

    def remove_secrets(self, object_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t.principal_secrets).where(t.principal_secrets.c.object_id == object_id.lower()))

    # -- certificates ------------------------------------------------------------------------------

    def add_certificate(self, object_id: str, certificate_pem: str, *, key_id: str | None = None,
                        display_name: str = "", starts: float | None = None, expires: float | None = None,
                        listed_on: str = "application") -> Certificate:
        """Register a certificate whose key may sign client assertions (RS256/PS256, matched by ``x5t``), valid
        from ``starts`` to ``expires`` (``None``: the certificate's own dates). Raises ``ValueError`` for text
        that is no PEM certificate, :class:`AlreadyExists` for a key id the principal already has."""
        self.principal(object_id)
        new = NewCertificate(certificate_pem, key_id, display_name, starts, expires)
        with self.engine.begin() as conn:
            return self._insert_certificate(conn, object_id, new, listed_on)

    def _insert_certificate(self, conn: Connection, object_id: str, new: NewCertificate,
                            listed_on: str) -> Certificate:
        """``new`` registered in ``conn``'s transaction; :class:`AlreadyExists` for a key id that is taken,
        ``ValueError`` for text that is no PEM certificate."""
        cert = x509.load_pem_x509_certificate(new.certificate_pem.encode())
        entry = Certificate((new.key_id or new_guid()).lower(), object_id.lower(),
                            cert.fingerprint(hashes.SHA1()).hex(), cert.fingerprint(hashes.SHA256()).hex(), cert,
                            new.display_name, new.starts, new.expires, listed_on, time.time())
        clash = conn.execute(sa.select(t.principal_certificates.c.key_id).where(
            t.principal_certificates.c.key_id == entry.key_id)).first()
        if clash:
            raise AlreadyExists(f"a key credential with key id {entry.key_id} already exists")
        conn.execute(sa.insert(t.principal_certificates).values(
            key_id=entry.key_id, object_id=entry.object_id, thumbprint_sha1=entry.thumbprint_sha1,
            thumbprint_sha256=entry.thumbprint_sha256, certificate_pem=new.certificate_pem, created=entry.created,
            display_name=new.display_name, starts=new.starts, expires=new.expires, listed_on=listed_on))
        return entry

    def replace_certificates(self, object_id: str, listed_on: str, keep: set[str],
                             new: list[NewCertificate]) -> None:
        """In one transaction: the principal's certificates listed on ``listed_on`` become those of ``keep`` (key
        ids) and ``new``. :class:`AlreadyExists` for a new key id that is taken (one of ``keep``'s too): then
        nothing changed."""
        c = t.principal_certificates.c
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t.principal_certificates).where(
                c.object_id == object_id.lower(), c.listed_on == listed_on,
                c.key_id.not_in([k.lower() for k in keep])))
            for certificate in new:
                self._insert_certificate(conn, object_id, certificate, listed_on)

    def certificates(self, object_id: str) -> list[Certificate]:
        """The principal's certificates, newest first."""
        c = t.principal_certificates.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principal_certificates).where(c.object_id == object_id.lower())
                                .order_by(c.created.desc())).all()
        return [_certificate(r) for r in rows]

    def remove_certificate(self, object_id: str, key_id: str) -> None:
        """Remove one certificate of the principal; :class:`NotFound` if it has none with ``key_id``."""
        c = t.principal_certificates.c
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.principal_certificates).where(
                c.object_id == object_id.lower(), c.key_id == key_id.lower()))
        if result.rowcount == 0:
            raise NotFound(f"principal {object_id!r} has no key credential with key id {key_id!r}")

    # -- federated credentials ---------------------------------------------------------------------

    def add_federated_credential(self, object_id: str, name: str, issuer: str, subject: str,
                                 audiences: list[str], *, replace: bool = False) -> FederatedCredential:
        """A new federated credential of the principal, or with ``replace`` the one named ``name`` changed in place
        (it keeps its id), in one write transaction: the other credentials never see a moment without it, and a
        refusal changes nothing. :class:`NotFound` for an unknown principal; :class:`AlreadyExists` if another
        credential of the principal has ``name`` (unless ``replace``), :class:`IssuerAndSubjectTaken` if one has
        the same ``issuer`` and ``subject``, as Entra refuses. The checks and the write hold the principal's row
        (on SQLite the database's write lock), so two writers never both pass them."""
        c = t.federated_credentials.c
        with self.engine.begin() as conn:
            current = self._lock_credentials(conn, object_id)
            same_name = next((r for r in current if r.name == name), None)
            if same_name is not None and not replace:
                raise AlreadyExists(f"FederatedIdentityCredential with name {name} already exists.")
            _refuse_taken_issuer(current, issuer, subject, same_name.id if same_name else None)
            values = {"issuer": issuer, "subject": subject, "audiences": json.dumps(list(audiences))}
            if same_name is not None:
                conn.execute(sa.update(t.federated_credentials).where(c.id == same_name.id).values(**values))
                fc_id = same_name.id
            else:
                fc_id = new_guid()
                conn.execute(sa.insert(t.federated_credentials).values(
                    id=fc_id, object_id=object_id.lower(), name=name, created=time.time(), **values))
        return FederatedCredential(fc_id, object_id.lower(), name, issuer, subject, tuple(audiences))

    def _lock_credentials(self, conn: Connection, object_id: str) -> list[Any]:
        """The principal's federated credential rows, its own row locked for the rest of ``conn``'s transaction
        (``FOR UPDATE`` on PostgreSQL, the write lock on SQLite); :class:`NotFound` for an unknown principal."""
        write_transaction(conn)
        if conn.execute(sa.select(t.principals.c.object_id).where(t.principals.c.object_id == object_id.lower())
                        .with_for_update()).first() is None:
            raise NotFound(f"principal {object_id!r} does not exist")
        return list(conn.execute(sa.select(t.federated_credentials).where(
            t.federated_credentials.c.object_id == object_id.lower())).all())

    def federated_credentials(self, object_id: str) -> list[FederatedCredential]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.federated_credentials).where(
                t.federated_credentials.c.object_id == object_id.lower()).order_by(
                t.federated_credentials.c.created)).all()
        return [FederatedCredential(r.id, r.object_id, r.name, r.issuer, r.subject, tuple(json.loads(r.audiences)))
                for r in rows]

    def update_federated_credential(self, object_id: str, credential_id: str, issuer: str, subject: str,
                                    audiences: list[str]) -> None:
        """Change the issuer, subject and audiences of one federated credential in place (its id, name and place
        in the list stay); :class:`NotFound` if the principal has none with ``credential_id``,
        :class:`IssuerAndSubjectTaken` if another of its credentials has that issuer and subject (checked and written in
        one transaction holding the principal's row, as :meth:`add_federated_credential`)."""
        c = t.federated_credentials.c
        with self.engine.begin() as conn:
            current = self._lock_credentials(conn, object_id)
            if not any(r.id == credential_id.lower() for r in current):
                raise NotFound(f"federated credential {credential_id!r} does not exist")
            _refuse_taken_issuer(current, issuer, subject, credential_id.lower())
            conn.execute(sa.update(t.federated_credentials).where(c.id == credential_id.lower()).values(
                issuer=issuer, subject=subject, audiences=json.dumps(list(audiences))))

    def delete_federated_credential(self, object_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.federated_credentials).where(
                t.federated_credentials.c.object_id == object_id.lower(), t.federated_credentials.c.name == name))
        if result.rowcount == 0:
            raise NotFound(f"federated credential {name!r} does not exist")

    # -- users -------------------------------------------------------------------------------------

    def create_user(self, tenant_id: str, user_principal_name: str, display_name: str, password_hash: str | None,
                    *, account_enabled: bool = True, force_change: bool = False,
                    properties: dict[str, Any] | None = None) -> User:
        """A user; :class:`AlreadyExists` if the user principal name is taken (in any tenant). The password is
        given hashed (:func:`~acrlocal.identity.passwords.hash_password`, which callers run off the event loop)."""
        self.tenant(tenant_id)
        object_id = new_guid()
        now = time.time()
        taken = AlreadyExists(f"a user with user principal name {user_principal_name!r} already exists")
        try:
            with self.engine.begin() as conn:
                if conn.execute(sa.select(t.users.c.object_id).where(
                        t.users.c.upn_key == user_principal_name.lower())).first():
                    raise taken
                self._insert_principal(conn, Principal(object_id, tenant_id, "User", object_id, display_name))
                conn.execute(sa.insert(t.users).values(
                    object_id=object_id, upn_key=user_principal_name.lower(), user_principal_name=user_principal_name,
                    password_hash=password_hash, password_changed=now, force_change=force_change,
                    account_enabled=account_enabled, properties=json.dumps(properties or {})))
        except sa.exc.IntegrityError as exc:  # another replica made the same user meanwhile
            if not unique_violation(exc):
                raise
            raise taken from None
        self.generations.bump("directory")
        return self.user(object_id)

    def _users_query(self) -> sa.Select[Any]:
        p, u = t.principals.c, t.users.c
        return sa.select(p.object_id, p.tenant_id, p.display_name, u.user_principal_name, u.account_enabled,
                         u.force_change, u.properties).select_from(t.principals.join(t.users))

    def user(self, object_id: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(self._users_query().where(t.principals.c.object_id == object_id.lower())).first()
        if row is None:
            raise NotFound(f"user {object_id!r} does not exist")
        return _user(row)

    def find_user(self, user_principal_name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._users_query().where(t.users.c.upn_key == user_principal_name.lower())).first()
        return _user(row) if row else None

    def domain_tenants(self, domain: str) -> set[str]:
        """The tenants that have users whose user principal names are in ``domain`` (``alias@domain``, any case).
        A scan of the users' names (no index serves a suffix): called when a user is named, not per request."""
        suffix = "@" + domain.lower()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principals.c.tenant_id).distinct()
                                .select_from(t.principals.join(t.users))
                                .where(t.users.c.upn_key.endswith(suffix, autoescape=True))).all()
        return {r.tenant_id for r in rows}

    def users(self, tenant_id: str) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._users_query().where(t.principals.c.tenant_id == tenant_id.lower())
                                .order_by(t.principals.c.created)).all()
        return [_user(r) for r in rows]

    def password_hash(self, object_id: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.users.c.password_hash).where(
                t.users.c.object_id == object_id.lower())).first()
        return row.password_hash if row else None

    def update_user(self, object_id: str, *, display_name: str | None = None, user_principal_name: str | None = None,
                    account_enabled: bool | None = None, password_hash: str | None = None,
                    force_change: bool | None = None, properties: dict[str, Any] | None = None) -> User:
        """Change what is given; a new password or a disabled account also revokes the user's refresh tokens.
        :class:`AlreadyExists` for a user principal name another user has."""
        user = self.user(object_id)
        values: dict[str, Any] = {}
        if user_principal_name is not None and user_principal_name.lower() != user.user_principal_name.lower():
            values.update(upn_key=user_principal_name.lower(), user_principal_name=user_principal_name)
        elif user_principal_name is not None:
            values.update(user_principal_name=user_principal_name)
        if account_enabled is not None:
            values["account_enabled"] = account_enabled
        if password_hash is not None:
            values.update(password_hash=password_hash, password_changed=time.time())
        if force_change is not None:
            values["force_change"] = force_change
        if properties is not None:
            values["properties"] = json.dumps(properties)
        with self.engine.begin() as conn:
            if "upn_key" in values and conn.execute(sa.select(t.users.c.object_id).where(
                    t.users.c.upn_key == values["upn_key"])).first():
                raise AlreadyExists(f"a user with user principal name {user_principal_name!r} already exists")
            if values:
                conn.execute(sa.update(t.users).where(t.users.c.object_id == user.object_id).values(**values))
            if display_name is not None:
                conn.execute(sa.update(t.principals).where(t.principals.c.object_id == user.object_id).values(
                    display_name=display_name))
            if password_hash is not None or account_enabled is False:
                conn.execute(sa.delete(t.refresh_tokens).where(t.refresh_tokens.c.object_id == user.object_id))
        return self.user(object_id)

    # -- users' refresh tokens ---------------------------------------------------------------------

    def issue_refresh_token(self, object_id: str, client_id: str) -> str:
        token = secrets.token_urlsafe(48)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.refresh_tokens).values(
                token_sha256=_secret_hash(token), object_id=object_id.lower(), client_id=client_id.lower(),
                created=now, expires=now + REFRESH_TOKEN_LIFETIME_S))
        return token

    def redeem_refresh_token(self, token: str, client_id: str) -> User | None:
        """The enabled user a current refresh token of ``client_id`` belongs to, else ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.refresh_tokens).where(
                t.refresh_tokens.c.token_sha256 == _secret_hash(token))).first()
        if row is None or row.expires <= time.time() or row.client_id != client_id.lower():
            return None
        try:
            user = self.user(row.object_id)
        except NotFound:
            return None
        return user if user.account_enabled else None

    # -- groups ------------------------------------------------------------------------------------

    def create_group(self, tenant_id: str, display_name: str, properties: dict[str, Any] | None = None, *,
                     owner_id: str | None = None) -> Group:
        """A security group, owned by ``owner_id`` (a principal) if given: in one transaction."""
        self.tenant(tenant_id)
        object_id = new_guid()
        with self.engine.begin() as conn:
            self._insert_principal(conn, Principal(object_id, tenant_id, "Group", object_id, display_name))
            conn.execute(sa.insert(t.groups).values(object_id=object_id, properties=json.dumps(properties or {})))
            if owner_id is not None:
                conn.execute(sa.insert(t.owners).values(object_id=object_id, owner_id=owner_id.lower()))
        self.generations.bump("directory")
        return self.group(object_id)

    def _groups_query(self) -> sa.Select[Any]:
        p = t.principals.c
        return sa.select(p.object_id, p.tenant_id, p.display_name, t.groups.c.properties).select_from(
            t.principals.join(t.groups))

    def group(self, object_id: str) -> Group:
        with self.engine.connect() as conn:
            row = conn.execute(self._groups_query().where(t.principals.c.object_id == object_id.lower())).first()
        if row is None:
            raise NotFound(f"group {object_id!r} does not exist")
        return _group(row)

    def groups(self, tenant_id: str) -> list[Group]:
        with self.engine.connect() as conn:
            rows = conn.execute(self._groups_query().where(t.principals.c.tenant_id == tenant_id.lower())
                                .order_by(t.principals.c.created)).all()
        return [_group(r) for r in rows]

    def update_group(self, object_id: str, *, display_name: str | None = None,
                     properties: dict[str, Any] | None = None) -> Group:
        group = self.group(object_id)
        with self.engine.begin() as conn:
            if display_name is not None:
                conn.execute(sa.update(t.principals).where(t.principals.c.object_id == group.object_id).values(
                    display_name=display_name))
            if properties is not None:
                conn.execute(sa.update(t.groups).where(t.groups.c.object_id == group.object_id).values(
                    properties=json.dumps(properties)))
        return self.group(object_id)

    def add_member(self, group_id: str, member_id: str) -> bool:
        """Add ``member_id`` (a user, group or service principal of the group's tenant) to the group; False if it
        was a member already. :class:`NotFound` for a group or member that does not exist there."""
        group = self.group(group_id)
        member = self.principal(member_id)
        if member.tenant_id != group.tenant_id:
            raise NotFound(f"principal {member_id!r} does not exist in tenant {group.tenant_id}")
        with self.engine.begin() as conn:
            c = t.group_members.c
            if conn.execute(sa.select(c.member_id).where(c.group_id == group.object_id,
                                                         c.member_id == member.object_id)).first():
                return False
            conn.execute(sa.insert(t.group_members).values(group_id=group.object_id, member_id=member.object_id))
        return True

    def remove_member(self, group_id: str, member_id: str) -> None:
        c = t.group_members.c
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.group_members).where(c.group_id == group_id.lower(),
                                                                   c.member_id == member_id.lower()))
        if result.rowcount == 0:
            raise NotFound(f"{member_id!r} is not a member of group {group_id!r}")

    def members(self, group_id: str) -> list[Principal]:
        """The direct members of a group."""
        c = t.group_members.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principals).join(t.group_members, c.member_id == t.principals.c.object_id)
                                .where(c.group_id == group_id.lower()).order_by(t.principals.c.created)).all()
        return [_principal(r) for r in rows]

    def member_of(self, object_id: str) -> list[str]:
        """The object ids of every group ``object_id`` belongs to, directly or through nested groups (one query a
        level of nesting, at most :data:`MAX_GROUP_DEPTH` levels)."""
        found: list[str] = []
        seen = {object_id.lower()}
        frontier = [object_id.lower()]
        c = t.group_members.c
        with self.engine.connect() as conn:
            for _ in range(MAX_GROUP_DEPTH):
                if not frontier:
                    break
                rows = conn.execute(sa.select(c.group_id).where(c.member_id.in_(frontier))).all()
                frontier = [r.group_id for r in rows if r.group_id not in seen]
                seen.update(frontier)
                found.extend(frontier)
        return found

    # -- owners and directory roles ----------------------------------------------------------------

    def add_owner(self, object_id: str, owner_id: str) -> bool:
        """``owner_id`` (a principal) owns the application, service principal or group ``object_id``; False if it
        did already."""
        self.principal(owner_id)
        with self.engine.begin() as conn:
            return self._add_owner(conn, object_id, owner_id)

    @staticmethod
    def _add_owner(conn: sa.Connection, object_id: str, owner_id: str) -> bool:
        c = t.owners.c
        if conn.execute(sa.select(c.owner_id).where(c.object_id == object_id.lower(),
                                                    c.owner_id == owner_id.lower())).first():
            return False
        conn.execute(sa.insert(t.owners).values(object_id=object_id.lower(), owner_id=owner_id.lower()))
        return True

    def remove_owner(self, object_id: str, owner_id: str) -> None:
        c = t.owners.c
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.owners).where(c.object_id == object_id.lower(),
                                                            c.owner_id == owner_id.lower()))
        if result.rowcount == 0:
            raise NotFound(f"{owner_id!r} is not an owner of {object_id!r}")

    def owners(self, object_id: str) -> list[Principal]:
        c = t.owners.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principals).join(t.owners, c.owner_id == t.principals.c.object_id)
                                .where(c.object_id == object_id.lower()).order_by(t.principals.c.created)).all()
        return [_principal(r) for r in rows]

    def owned_objects(self, owner_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return [r.object_id for r in conn.execute(sa.select(t.owners.c.object_id).where(
                t.owners.c.owner_id == owner_id.lower()))]

    def is_owner(self, object_id: str, owner_id: str) -> bool:
        c = t.owners.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(c.owner_id).where(c.object_id == object_id.lower(),
                                                            c.owner_id == owner_id.lower())).first() is not None

    def add_directory_role(self, principal_id: str, role_template_id: str = GLOBAL_ADMINISTRATOR) -> None:
        self.principal(principal_id)
        c = t.directory_roles.c
        with self.engine.begin() as conn:
            if conn.execute(sa.select(c.principal_id).where(c.role_template_id == role_template_id,
                                                            c.principal_id == principal_id.lower())).first():
                return
            conn.execute(sa.insert(t.directory_roles).values(role_template_id=role_template_id,
                                                             principal_id=principal_id.lower()))

    def has_directory_role(self, principal_id: str, role_template_id: str = GLOBAL_ADMINISTRATOR) -> bool:
        c = t.directory_roles.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(c.principal_id).where(c.role_template_id == role_template_id,
                                                                c.principal_id == principal_id.lower())
                                ).first() is not None

    # -- application objects -----------------------------------------------------------------------

    def create_application(self, tenant_id: str, display_name: str, properties: dict[str, Any], created: str,
                           *, app_id: str | None = None, owner_id: str | None = None,
                           certificates: Sequence[NewCertificate] = ()) -> Application:
        """An application object and its principal (same app id; the service principal object comes later), owned
        by ``owner_id`` (a principal) if given, with ``certificates`` listed on the application: all in one
        transaction (:class:`AlreadyExists` for a certificate's key id that is taken, and nothing is made)."""
        self.tenant(tenant_id)
        principal = Principal(new_guid(), tenant_id, "ServicePrincipal", app_id or new_guid(), display_name)
        app_object_id = new_guid()
        with self.engine.begin() as conn:
            self._insert_principal(conn, principal)
            conn.execute(sa.insert(t.applications).values(
                id=app_object_id, app_id=principal.app_id, tenant_id=tenant_id.lower(), display_name=display_name,
                service_principal=False, properties=json.dumps(properties), created=created))
            if owner_id is not None:
                conn.execute(sa.insert(t.owners).values(object_id=app_object_id, owner_id=owner_id.lower()))
            for certificate in certificates:
                self._insert_certificate(conn, principal.object_id, certificate, "application")
        self.generations.bump("directory")
        return self.application(app_object_id)

    def application(self, object_id: str) -> Application:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.applications).where(t.applications.c.id == object_id.lower())).first()
        if row is None:
            raise NotFound(f"application {object_id!r} does not exist")
        return _application(row)

    def find_application(self, *, app_id: str) -> Application | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.applications).where(t.applications.c.app_id == app_id.lower())).first()
        return _application(row) if row else None

    def applications(self, tenant_id: str) -> list[Application]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.applications).where(t.applications.c.tenant_id == tenant_id.lower())
                                .order_by(t.applications.c.created, t.applications.c.id)).all()
        return [_application(r) for r in rows]

    def update_application(self, object_id: str, *, display_name: str | None = None,
                           properties: dict[str, Any] | None = None, service_principal: bool | None = None
                           ) -> Application:
        app = self.application(object_id)
        values: dict[str, Any] = {}
        if display_name is not None:
            values["display_name"] = display_name
        if properties is not None:
            values["properties"] = json.dumps(properties)
        if service_principal is not None:
            values["service_principal"] = service_principal
        with self.engine.begin() as conn:
            if values:
                conn.execute(sa.update(t.applications).where(t.applications.c.id == app.id).values(**values))
            if display_name is not None:
                conn.execute(sa.update(t.principals).where(t.principals.c.app_id == app.app_id).values(
                    display_name=display_name))
        return self.application(object_id)

    def delete_application(self, object_id: str) -> None:
        """Delete the application object, its principal (credentials, memberships) and their owner rows, in one
        transaction."""
        app = self.application(object_id)
        principal = self.find_principal(app_id=app.app_id)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(t.owners).where(t.owners.c.object_id == app.id))
            conn.execute(sa.delete(t.applications).where(t.applications.c.id == app.id))
            if principal is not None:
                self._delete_principal(conn, principal.object_id)
        self.generations.bump("directory")

    def service_principal_properties(self, object_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.service_principals.c.properties).where(
                t.service_principals.c.object_id == object_id.lower())).first()
        return json.loads(row.properties) if row else {}

    def set_service_principal_properties(self, object_id: str, properties: dict[str, Any]) -> None:
        self.principal(object_id)
        with self.engine.begin() as conn:
            self._set_sp_properties(conn, object_id, properties)

    @staticmethod
    def _set_sp_properties(conn: sa.Connection, object_id: str, properties: dict[str, Any]) -> None:
        c = t.service_principals.c
        if conn.execute(sa.select(c.object_id).where(c.object_id == object_id.lower())).first():
            conn.execute(sa.update(t.service_principals).where(c.object_id == object_id.lower()).values(
                properties=json.dumps(properties)))
        else:
            conn.execute(sa.insert(t.service_principals).values(object_id=object_id.lower(),
                                                                properties=json.dumps(properties)))

    def add_service_principal(self, app_object_id: str, properties: dict[str, Any], *,
                              owner_id: str | None = None) -> Principal:
        """The application's service principal object, with its Graph ``properties``, owned by ``owner_id`` (a
        principal) if given: in one transaction. :class:`AlreadyExists` if the application has one already."""
        app = self.application(app_object_id)
        principal = self.find_principal(app_id=app.app_id)
        if principal is None:
            raise NotFound(f"application {app_object_id!r} has no principal")
        with self.engine.begin() as conn:
            made = conn.execute(sa.update(t.applications).where(
                t.applications.c.id == app.id, t.applications.c.service_principal.is_(False)).values(
                service_principal=True))
            if made.rowcount != 1:
                raise AlreadyExists(f"application {app_object_id!r} has a service principal already")
            self._set_sp_properties(conn, principal.object_id, properties)
            if owner_id is not None:
                self._add_owner(conn, principal.object_id, owner_id)
        self.generations.bump("directory")
        return principal
