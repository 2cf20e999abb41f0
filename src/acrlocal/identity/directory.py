"""The directory: tenants, subscriptions and principals (service principals, managed identities, the local
administrator), their client secrets, certificates and federated credentials.

Every method is one transaction. Lookups raise :class:`~acrlocal.errors.NotFound`; secrets are returned once, at
creation, and only their sha256 is kept. Deleting a principal deletes its credentials; role assignments that name
it then match nothing (the RBAC evaluation only sees principals that exist).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.engine import Connection, Engine

from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity import store as t

PrincipalKind = Literal["ServicePrincipal", "ManagedIdentity", "User"]
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
        return "User" if self.kind == "User" else "ServicePrincipal"


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
    key_id: str
    object_id: str
    thumbprint_sha1: str
    thumbprint_sha256: str
    certificate: x509.Certificate


def new_guid() -> str:
    return str(uuid.uuid4())


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(row: Any) -> Principal:
    return Principal(row.object_id, row.tenant_id, row.kind, row.app_id, row.display_name, row.resource_id,
                     row.mi_kind)


class Directory:
    """``generation`` counts the principal creations and deletions this process made, so that in-memory
    caches of principals (IMDS) know when to look again."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.generation = 0

    # -- tenants and subscriptions -----------------------------------------------------------------

    def create_tenant(self, display_name: str, *, tenant_id: str | None = None, default: bool = False) -> Tenant:
        tenant = Tenant(tenant_id or new_guid(), display_name, default)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.tenants).values(id=tenant.id, display_name=display_name, is_default=default,
                                                     created=time.time()))
        return tenant

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
        self.generation += 1
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
        self.generation += 1
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
            conn.execute(sa.delete(t.principals).where(t.principals.c.object_id == object_id.lower()))
        self.generation += 1

    # -- client secrets ----------------------------------------------------------------------------

    def add_secret(self, object_id: str, display_name: str = "", lifetime_s: float | None = None) -> tuple[str, str]:
        """A new client secret for the principal: returns ``(key_id, secret)``; the secret is not kept."""
        self.principal(object_id)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(30)).decode().replace("-", "~").replace("_", ".")
        key_id = new_guid()
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.principal_secrets).values(
                key_id=key_id, object_id=object_id.lower(), display_name=display_name,
                secret_sha256=_secret_hash(secret), hint=secret[:3], created=now,
                expires=now + lifetime_s if lifetime_s else None))
        return key_id, secret

    def check_secret(self, object_id: str, secret: str) -> bool:
        """True if ``secret`` is a current client secret of the principal (constant-time comparison)."""
        digest = _secret_hash(secret)
        now = time.time()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principal_secrets).where(
                t.principal_secrets.c.object_id == object_id.lower())).all()
        ok = False
        for r in rows:
            if hmac.compare_digest(r.secret_sha256, digest) and (r.expires is None or r.expires > now):
                ok = True
        return ok

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

    def add_certificate(self, object_id: str, certificate_pem: str) -> Certificate:
        """Register a certificate whose key may sign client assertions (RS256/PS256, matched by ``x5t``)."""
        self.principal(object_id)
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        entry = Certificate(new_guid(), object_id.lower(), cert.fingerprint(hashes.SHA1()).hex(),
                            cert.fingerprint(hashes.SHA256()).hex(), cert)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.principal_certificates).values(
                key_id=entry.key_id, object_id=entry.object_id, thumbprint_sha1=entry.thumbprint_sha1,
                thumbprint_sha256=entry.thumbprint_sha256, certificate_pem=certificate_pem, created=time.time()))
        return entry

    def certificates(self, object_id: str) -> list[Certificate]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.principal_certificates).where(
                t.principal_certificates.c.object_id == object_id.lower())).all()
        return [Certificate(r.key_id, r.object_id, r.thumbprint_sha1, r.thumbprint_sha256,
                            x509.load_pem_x509_certificate(r.certificate_pem.encode())) for r in rows]

    # -- federated credentials ---------------------------------------------------------------------

    def add_federated_credential(self, object_id: str, name: str, issuer: str, subject: str,
                                 audiences: list[str]) -> FederatedCredential:
        self.principal(object_id)
        fc = FederatedCredential(new_guid(), object_id.lower(), name, issuer, subject, tuple(audiences))
        with self.engine.begin() as conn:
            clash = conn.execute(sa.select(t.federated_credentials.c.id).where(
                t.federated_credentials.c.object_id == fc.object_id,
                t.federated_credentials.c.name == name)).first()
            if clash:
                raise AlreadyExists(f"federated credential {name!r} already exists")
            conn.execute(sa.insert(t.federated_credentials).values(
                id=fc.id, object_id=fc.object_id, name=name, issuer=issuer, subject=subject,
                audiences=json.dumps(list(audiences)), created=time.time()))
        return fc

    def federated_credentials(self, object_id: str) -> list[FederatedCredential]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.federated_credentials).where(
                t.federated_credentials.c.object_id == object_id.lower()).order_by(
                t.federated_credentials.c.created)).all()
        return [FederatedCredential(r.id, r.object_id, r.name, r.issuer, r.subject, tuple(json.loads(r.audiences)))
                for r in rows]

    def delete_federated_credential(self, object_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(sa.delete(t.federated_credentials).where(
                t.federated_credentials.c.object_id == object_id.lower(), t.federated_credentials.c.name == name))
        if result.rowcount == 0:
            raise NotFound(f"federated credential {name!r} does not exist")
