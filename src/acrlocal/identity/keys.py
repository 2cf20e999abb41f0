"""Per-tenant RS256 signing keys, their rotation, and the JWKS that publishes them.

Each tenant has one active key (the newest) and keeps a retired key in its JWKS until every token it signed has
expired (``retired + max_token_lifetime``). Keys live in the database so that several server processes sign
with the same keys; private keys are loaded once and cached in memory.

Every process also keeps the ids of every tenant's published keys (a few per tenant), read in one query and again
only after keys changed somewhere (a tenant's first key, a rotation: each bumps a slot of the server's
:class:`~acrlocal.generations.Generations`, which reaches the other processes of this machine through the shared
file and other replicas through PostgreSQL's notifications, applied at the start of their next request). A token
naming a key id that set lacks, or one of another tenant's, is refused from memory: an unauthenticated caller, who
chooses both the tenant and the key id of a token it forges, costs the database nothing while keys are unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine

from acrlocal.generations import Generations
from acrlocal.identity import store as t
from acrlocal.storage.sql import add_active, replace_active

# Longest lifetime of a token we sign (IMDS hands out 24 h tokens); a retired key outlives it.
MAX_TOKEN_LIFETIME_S = 25 * 3600


def _b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    tenant_id: str
    private_key: rsa.RSAPrivateKey
    created: float
    retired: float | None

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        return {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e), "alg": "RS256"}


def _kid_for(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:20]).rstrip(b"=").decode()


GENERATION = "signing-keys"
#: Bumped when a tenant's first key is made (a rotation bumps :data:`GENERATION`): the published key ids are read
#: again, while every tenant's keys already in memory stay good.
KIDS_GENERATION = "signing-key-ids"


def _new_key(tenant_id: str) -> dict[str, Any]:
    """The row of a new signing key of the tenant (an RSA key made now, tens of milliseconds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"kid": _kid_for(key), "tenant_id": tenant_id, "private_pem": pem, "created": time.time(), "retired": None}


def _published_at(retired: float | None, now: float) -> bool:
    """Whether a key retired at ``retired`` (``None``: active) still verifies at ``now``."""
    return retired is None or retired + MAX_TOKEN_LIFETIME_S > now


def _published(keys: Iterable[SigningKey]) -> list[SigningKey]:
    now = time.time()
    return [k for k in keys if _published_at(k.retired, now)]


class KeyRing:
    """Signing keys of every tenant. Thread-safe; reads are served from memory after the first load.

    Loading reads the database, which an event loop must never wait for: a verifier on the loop takes a key from
    :meth:`cached`, refuses a key id :meth:`unpublished` rules out, and only otherwise runs :meth:`find` in the
    server's ``SqlThread`` (:meth:`acrlocal.identity.tokens.TokenIssuer.verify_async`); signing runs in a thread
    anyway (RSA)."""

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._keys: dict[str, list[SigningKey]] = {}  # tenant -> newest first
        # A rotation by another process of the same server changes this slot: the keys are read again.
        self._generations = generations or Generations()
        self._stamp = self._generations.current(GENERATION)
        # Every published key id -> (its tenant, when it retired), under the stamps read before the query that
        # found them (:meth:`_kid_stamp`); one tuple, replaced whole, so that readers need no lock.
        self._kids: tuple[tuple[int, int], dict[str, tuple[str, float | None]]] | None = None
        self._unannounced: set[str] = set()  # tenants whose first key this process made and has not announced

    def _kid_stamp(self) -> tuple[int, int]:
        return self._generations.current(GENERATION), self._generations.current(KIDS_GENERATION)

    def _known_kids(self) -> dict[str, tuple[str, float | None]] | None:
        """The published key ids if memory holds them and no key changed since they were read; never reads the
        database."""
        kids = self._kids
        return kids[1] if kids is not None and kids[0] == self._kid_stamp() else None

    def _published_kids(self) -> dict[str, tuple[str, float | None]]:
        """The published key ids, from memory or read again (one query over every tenant's few keys, the private
        keys left out) when keys changed since; database errors propagate."""
        kids = self._known_kids()
        if kids is not None:
            return kids
        stamp = self._kid_stamp()  # before the query: a change committed meanwhile reads them again next time
        now = time.time()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.signing_keys.c.kid, t.signing_keys.c.tenant_id,
                                          t.signing_keys.c.retired)).all()
        kids = {r.kid: (r.tenant_id, r.retired) for r in rows if _published_at(r.retired, now)}
        self._kids = (stamp, kids)
        return kids

    @staticmethod
    def _names(kids: dict[str, tuple[str, float | None]], tenant_id: str, kid: str) -> bool:
        """Whether ``kids`` has ``kid`` as a key of ``tenant_id`` (lower case) that still verifies."""
        found = kids.get(kid)
        return found is not None and found[0] == tenant_id and _published_at(found[1], time.time())

    def _fresh(self) -> None:
        stamp = self._generations.current(GENERATION)
        if stamp != self._stamp:
            with self._lock:
                self._keys.clear()
                self._stamp = stamp

    def _load(self, tenant_id: str) -> list[SigningKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.signing_keys).where(t.signing_keys.c.tenant_id == tenant_id)
                                .order_by(t.signing_keys.c.created.desc())).all()
        keys = []
        for r in rows:
            key = serialization.load_pem_private_key(r.private_pem.encode(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            keys.append(SigningKey(r.kid, r.tenant_id, key, r.created, r.retired))
        return keys

    def keys(self, tenant_id: str) -> list[SigningKey]:
        """The tenant's published keys, newest first (the first one signs); empty for a tenant that has none or
        does not exist. Never makes a key, and only tenants that have keys are remembered; that a tenant has none
        is known from the published key ids (:meth:`find`), so asking again about such a tenant (its JWKS, which
        anyone may fetch) reads nothing while keys are unchanged. Reads the database (one query) unless the answer
        is in memory: call it in a thread (``SqlThread``, the executor), never on the event loop; database errors
        propagate."""
        tenant_id = tenant_id.lower()
        self._fresh()
        keys = self._keys.get(tenant_id)
        if keys is None:
            if all(owner != tenant_id for owner, _ in self._published_kids().values()):
                return []
            loaded = self._load(tenant_id)
            if not loaded:
                return []
            with self._lock:
                keys = self._keys.setdefault(tenant_id, loaded)
        return _published(keys)

    def active(self, tenant_id: str) -> SigningKey:
        """The key that signs the tenant's tokens. A tenant that has none gets one here, and only here: the
        caller is issuing a token, so it has authenticated someone of this (existing) tenant. A key made here is
        announced (:data:`KIDS_GENERATION`) after its commit and before it signs anything, so every other process
        and replica knows its id by the time a token it signed can reach them. May read and write the database, and
        makes an RSA key: call it in a thread; database errors propagate (a key committed whose announcement failed
        is announced by this process's next call for the tenant; one whose process stopped between the two, before
        it signed anything, is announced by whichever process finds it first here, and everywhere when that
        process's successor starts: see ``Generations.bump_all``). A tenant whose keys are all retired (a database
        where a rotation was cut off between its two writes, before they were one transaction) gets a new one,
        announced the same way."""
        keys = self.keys(tenant_id)
        tenant_id = tenant_id.lower()
        if keys and keys[0].retired is None and tenant_id not in self._unannounced:
            return keys[0]
        with self._lock:
            loaded = self._load(tenant_id)
            if not loaded or loaded[0].retired is not None:
                self._create(tenant_id)
                self._unannounced.add(tenant_id)
            if not keys:
                # The key ids known here, current as far as anyone announced, lacked the tenant's key: it was
                # made here, or by a process that announces it any moment, or that stopped before it could.
                self._unannounced.add(tenant_id)
            self._keys[tenant_id] = self._load(tenant_id)
        if tenant_id in self._unannounced:
            self._generations.bump(KIDS_GENERATION)
            self._unannounced.discard(tenant_id)
        return self.keys(tenant_id)[0]

    def cached(self, tenant_id: str, kid: str) -> SigningKey | None:
        """The tenant's published key ``kid`` if this process holds it in memory (no rotation signalled since its
        keys were read), else ``None``: then :meth:`unpublished` may rule it out, and otherwise only :meth:`find`
        can say. Never reads the database, so an event loop may call it; what :meth:`find` reads must go to a
        thread (``SqlThread.run``)."""
        self._fresh()
        return next((k for k in _published(self._keys.get(tenant_id.lower(), ())) if k.kid == kid), None)

    def unpublished(self, tenant_id: str, kid: str) -> bool:
        """Whether memory alone shows that ``kid`` is no published key of the tenant (an unknown kid, or another
        tenant's): the published key ids are in memory and no key changed anywhere since they were read. ``False``
        says only that memory cannot rule it out. Never reads the database, so an event loop may call it: a token
        it rules out is refused there, with no hop to the ``SqlThread``."""
        kids = self._known_kids()
        return kids is not None and not self._names(kids, tenant_id.lower(), kid)

    def find(self, tenant_id: str, kid: str) -> SigningKey | None:
        """The tenant's published key ``kid``, or ``None``. From memory (:meth:`cached`) if this process holds it;
        ``None`` from memory when the published key ids (read once, and again only after keys changed somewhere)
        do not name ``kid`` as this tenant's. Only a kid they name, of this tenant, not yet in memory (its first
        token here, a rotation elsewhere) reads the tenant's keys, which are kept. So a token naming any tenant and
        kid (an unauthenticated caller chooses both) costs no query while keys are unchanged, and nothing is
        remembered for it. Reads the database only then, or to read the key ids again after a change: call it in
        a thread when :meth:`cached` and :meth:`unpublished` have no answer; database errors propagate (the HTTP
        layers answer them with their 503)."""
        key = self.cached(tenant_id, kid)
        if key is not None:
            return key
        tenant_id = tenant_id.lower()
        if not self._names(self._published_kids(), tenant_id, kid):
            return None
        loaded = self._load(tenant_id)
        with self._lock:
            self._keys[tenant_id] = loaded
        return next((k for k in _published(loaded) if k.kid == kid), None)

    def jwks(self, tenant_id: str) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys(tenant_id)]}

    def rotate(self, tenant_id: str) -> SigningKey:
        """Make a new active key; the previous one stays published until its tokens have expired. The retirement
        and the new key are one transaction (never a tenant whose every key is retired), and a tenant has one
        unretired key at a time (a unique index): a rotation that raced another process's is done again after it,
        so the two end as the rotations in turn. Database errors propagate, with nothing written."""
        tenant_id = tenant_id.lower()
        row = _new_key(tenant_id)
        with self._lock:
            replace_active(self.engine, t.signing_keys, row, t.signing_keys.c.tenant_id == tenant_id)
            self._keys[tenant_id] = self._load(tenant_id)
        self._generations.bump(GENERATION)
        self._stamp = self._generations.current(GENERATION)
        return self.active(tenant_id)

    def _create(self, tenant_id: str) -> None:
        """A key for a tenant that has no unretired key, unless another process made one meanwhile."""
        add_active(self.engine, t.signing_keys, _new_key(tenant_id), t.signing_keys.c.tenant_id == tenant_id)

    def tenant_deleted(self, tenant_id: str) -> None:
        """After a tenant's deletion committed (its keys' rows with it): drop its keys here, and tell the server's
        other processes and replicas to read keys and key ids again (the generation), so that no token of it
        verifies anywhere."""
        tenant_id = tenant_id.lower()
        with self._lock:
            self._keys.pop(tenant_id, None)
            self._unannounced.discard(tenant_id)
        self._generations.bump(GENERATION)
        self._stamp = self._generations.current(GENERATION)

    def forget(self) -> None:
        """Drop the in-memory cache (after another process rotated keys)."""
        with self._lock:
            self._keys.clear()
            self._kids = None
