"""The token service's RS256 signing keys: one table, loaded once and cached.

The registry signs its refresh and access tokens with a key of its own (never a tenant's Entra key), kept in the
database so that a restart, or a second process on the same database, signs and verifies with the same key. The
newest key signs; older keys stay accepted for :data:`RETIRED_KEY_GRACE_S` after a rotation so that tokens in
flight keep working until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine

from acrlocal.generations import Generations
from acrlocal.storage.sql import SqlThread, add_active, metadata, replace_active

#: A retired key verifies for this long after the rotation (longer than any token it signed lives).
RETIRED_KEY_GRACE_S = 4 * 3600

token_keys = sa.Table(
    "registry_token_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("retired", sa.Float, nullable=True),
)
# One unretired key (the one that signs) at a time, whoever writes: a second is refused (see ``after_the_winner``).
sa.Index("ux_registry_token_keys_active", token_keys.c.retired.is_(None), unique=True,
         sqlite_where=token_keys.c.retired.is_(None), postgresql_where=token_keys.c.retired.is_(None))


@dataclass(frozen=True)
class TokenKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    public_key: rsa.RSAPublicKey
    created: float
    retired: float | None


def _kid(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b32encode(hashlib.sha256(der).digest()[:20]).decode().rstrip("=")


GENERATION = "registry-token-keys"


def _new_key() -> dict[str, Any]:
    """The row of a new signing key (an RSA key made now, tens of milliseconds)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"kid": _kid(key), "private_pem": pem, "created": time.time(), "retired": None}


class TokenKeys:
    """The signing keys. Thread-safe; the database is read once, then on :meth:`rotate` (here or, signalled through
    the generations, in another process).

    Reading the database is for a thread: a caller on the event loop takes the keys from :meth:`current`, which
    reads them through the server's ``SqlThread`` when they are not in memory, and hands them to
    :meth:`find` (the verifiers of :class:`~acrlocal.registry.token_codec.RegistryTokens` take them as ``keys``)."""

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._keys: list[TokenKey] | None = None
        # A rotation by another process of the same server changes this slot: the keys are read again.
        self._generations = generations or Generations()
        self._stamp = self._generations.current(GENERATION)

    def _load(self) -> list[TokenKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(token_keys).order_by(token_keys.c.created.desc())).all()
        keys = []
        for r in rows:
            key = serialization.load_pem_private_key(r.private_pem.encode(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            keys.append(TokenKey(r.kid, key, key.public_key(), r.created, r.retired))
        return keys

    def _create(self) -> None:
        """A key when none is unretired, unless another process made one meanwhile (then that one signs)."""
        add_active(self.engine, token_keys, _new_key())

    def cached(self) -> list[TokenKey] | None:
        """The keys from memory alone, or ``None`` when only :meth:`keys` (which reads the database) can answer:
        before the first load, and after another process rotated them. Never reads the database."""
        return self._keys if self._generations.current(GENERATION) == self._stamp else None

    async def current(self, sql: SqlThread) -> list[TokenKey]:
        """:meth:`keys` for a caller on the event loop: from memory, or read through ``sql`` (off the loop on
        PostgreSQL) when they must be. Database errors propagate (the HTTP layers answer them with their 503)."""
        keys = self.cached()
        return keys if keys is not None else await sql.run(self.keys)

    def keys(self) -> list[TokenKey]:
        """Keys that verify, newest (the signing key) first. Reads the database unless they are in memory (see
        :meth:`cached`; makes the first key if there is none, and a new one if every key is retired, as a rotation
        cut off between its two writes left before they were one transaction): call it in a thread, or
        :meth:`current` on the event loop. Database errors propagate."""
        stamp = self._generations.current(GENERATION)
        if stamp != self._stamp:
            with self._lock:
                self._keys, self._stamp = None, stamp
        keys = self._keys
        if keys is None:
            with self._lock:
                keys = self._keys
                if keys is None:
                    keys = self._load()
                    if not keys or keys[0].retired is not None:
                        self._create()
                        if keys:  # the other processes hold the retired ones: they read the new one
                            self._generations.bump(GENERATION)
                            self._stamp = self._generations.current(GENERATION)
                        keys = self._load()
                    self._keys = keys
        return keys

    def active(self) -> TokenKey:
        return self.keys()[0]

    def find(self, kid: str, now: float | None = None, *, keys: Sequence[TokenKey] | None = None) -> TokenKey | None:
        """The key ``kid`` if it still verifies at ``now``, among ``keys`` (what :meth:`current` gave a caller on
        the event loop; ``None``: :meth:`keys`, which may read the database)."""
        now = time.time() if now is None else now
        for key in self.keys() if keys is None else keys:
            if key.kid == kid and (key.retired is None or key.retired + RETIRED_KEY_GRACE_S > now):
                return key
        return None

    def rotate(self) -> TokenKey:
        """A new signing key; the previous one keeps verifying for :data:`RETIRED_KEY_GRACE_S`. One transaction
        (never a moment without a signing key), and one unretired key at a time (a unique index): a rotation that
        raced another process's is done again after it. Database errors propagate, with nothing written."""
        row = _new_key()
        with self._lock:
            replace_active(self.engine, token_keys, row)
            self._keys = self._load()
            self._generations.bump(GENERATION)
            self._stamp = self._generations.current(GENERATION)
        return self._keys[0]
