"""Per-tenant RS256 signing keys, their rotation, and the JWKS that publishes them.

Each tenant has one active key (the newest) and keeps a retired key in its JWKS until every token it signed has
expired (``retired + max_token_lifetime``). Keys live in the database so that several server processes sign
with the same keys; private keys are loaded once and cached in memory.
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


def _published_at(retired: float | None, now: float) -> bool:
    """Whether a key retired at ``retired`` (``None``: active) still verifies at ``now``."""
    return retired is None or retired + MAX_TOKEN_LIFETIME_S > now


def _published(keys: Iterable[SigningKey]) -> list[SigningKey]:
    now = time.time()
    return [k for k in keys if _published_at(k.retired, now)]


class KeyRing:
    """Signing keys of every tenant. Thread-safe; reads are served from memory after the first load.

    Loading reads the database, which an event loop must never wait for: a verifier on the loop takes a key from
    :meth:`cached` and, when that has none, runs :meth:`find` in the server's ``SqlThread``
    (:meth:`acrlocal.identity.tokens.TokenIssuer.verify_async`); signing runs in a thread anyway (RSA)."""

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._keys: dict[str, list[SigningKey]] = {}  # tenant -> newest first
        # A rotation by another process of the same server changes this slot: the keys are read again.
        self._generations = generations or Generations()
        self._stamp = self._generations.current(GENERATION)

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
        does not exist. Never makes a key, and only tenants that have keys are remembered. Reads the database (one
        query) unless the tenant's keys are in memory: call it in a thread (``SqlThread``, the executor), never on
        the event loop; database errors propagate."""
        tenant_id = tenant_id.lower()
        self._fresh()
        keys = self._keys.get(tenant_id)
        if keys is None:
            loaded = self._load(tenant_id)
            if not loaded:
                return []
            with self._lock:
                keys = self._keys.setdefault(tenant_id, loaded)
        return _published(keys)

    def active(self, tenant_id: str) -> SigningKey:
        """The key that signs the tenant's tokens. A tenant that has none gets one here, and only here: the
        caller is issuing a token, so it has authenticated someone of this (existing) tenant. May read and write
        the database, and makes an RSA key: call it in a thread."""
        keys = self.keys(tenant_id)
        if keys:
            return keys[0]
        tenant_id = tenant_id.lower()
        with self._lock:
            if not self._load(tenant_id):
                self._create(tenant_id)
            self._keys[tenant_id] = self._load(tenant_id)
        return self.keys(tenant_id)[0]

    def cached(self, tenant_id: str, kid: str) -> SigningKey | None:
        """The tenant's published key ``kid`` if this process holds it in memory (no rotation signalled since its
        keys were read), else ``None``: then only :meth:`find` can say. Never reads the database, so an event loop
        may call it; what :meth:`find` reads must go to a thread (``SqlThread.run``)."""
        self._fresh()
        return next((k for k in _published(self._keys.get(tenant_id.lower(), ())) if k.kid == kid), None)

    def find(self, tenant_id: str, kid: str) -> SigningKey | None:
        """The tenant's published key ``kid``, or ``None``. From memory (:meth:`cached`) if this process holds it;
        otherwise one primary-key query for ``kid``, and only if that names a published key of this tenant (its
        first token here, or another process rotated) the tenant's keys are read again and kept. So a token
        naming any tenant and kid (an unauthenticated caller chooses both) costs at most that one indexed query,
        and nothing is remembered for it. Call it in a thread when :meth:`cached` has no answer; database errors
        propagate (the HTTP layers answer them with their 503)."""
        key = self.cached(tenant_id, kid)
        if key is not None:
            return key
        tenant_id = tenant_id.lower()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.signing_keys.c.tenant_id, t.signing_keys.c.retired)
                               .where(t.signing_keys.c.kid == kid)).first()
        if row is None or row.tenant_id != tenant_id or not _published_at(row.retired, time.time()):
            return None
        loaded = self._load(tenant_id)
        with self._lock:
            self._keys[tenant_id] = loaded
        return next((k for k in _published(loaded) if k.kid == kid), None)

    def jwks(self, tenant_id: str) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys(tenant_id)]}

    def rotate(self, tenant_id: str) -> SigningKey:
        """Make a new active key; the previous one stays published until its tokens have expired."""
        tenant_id = tenant_id.lower()
        with self._lock:
            now = time.time()
            with self.engine.begin() as conn:
                conn.execute(sa.update(t.signing_keys).where(t.signing_keys.c.tenant_id == tenant_id,
                                                             t.signing_keys.c.retired.is_(None)).values(retired=now))
            self._create(tenant_id)
            self._keys[tenant_id] = self._load(tenant_id)
        self._generations.bump(GENERATION)
        self._stamp = self._generations.current(GENERATION)
        return self.active(tenant_id)

    def _create(self, tenant_id: str) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(t.signing_keys).values(kid=_kid_for(key), tenant_id=tenant_id, private_pem=pem,
                                                          created=time.time(), retired=None))

    def forget(self) -> None:
        """Drop the in-memory cache (after another process rotated keys)."""
        with self._lock:
            self._keys.clear()
