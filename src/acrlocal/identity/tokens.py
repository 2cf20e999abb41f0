"""Entra-shaped access tokens: issue (claims in, RS256 JWT out) and verify (JWT in, claims out).

Verification trusts nothing in the token's header but ``kid``: the algorithm is pinned to RS256, the key comes only
from the issuing tenant's keys in our own :class:`~acrlocal.identity.keys.KeyRing` (never from ``jwk``, ``jku``,
``x5u`` or ``x5c`` headers), ``crit`` headers are refused, and issuer, audience, expiry and not-before are
required and checked. Every failure raises :class:`InvalidToken` with the reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from acrlocal import publiccloud
from acrlocal.errors import AcrLocalError
from acrlocal.identity.directory import Principal
from acrlocal.identity.keys import KeyRing, SigningKey
from acrlocal.storage.sql import SqlThread

ALGORITHMS = ["RS256"]
CLOCK_SKEW_S = 60
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "tid", "oid", "sub"]
FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c", "crit")


class InvalidToken(AcrLocalError, ValueError):
    """A token that is not one of ours, or not valid now, or not for this audience."""


def pinned_header(token: str, error: type[AcrLocalError]) -> dict[str, Any]:
    """The unverified header of ``token`` if it asks for RS256 and brings no key or ``crit`` of its own; raises
    ``error`` saying which header was refused otherwise. Both token services (Entra's and the registry's) start
    verification here."""
    if not token.isascii():  # a JWT is base64url; PyJWT would fail to encode a header's undecodable bytes
        raise error("token is not a JWT: it holds characters that are not ASCII")
    try:
        header: dict[str, Any] = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise error(f"token is not a JWT: {exc}") from exc
    if header.get("alg") not in ALGORITHMS:
        raise error(f"token algorithm {header.get('alg')!r} is not allowed (expected RS256)")
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise error(f"token header {name!r} is not accepted")
    return header


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_on: int
    not_before: int
    claims: dict[str, Any]

    @property
    def expires_in(self) -> int:
        return max(0, self.expires_on - int(time.time()))


class TokenIssuer:
    """Signs and verifies tokens for every tenant. ``authority`` is the Entra base URL, e.g.
    ``https://localhost:8443``; a tenant's issuer is ``{authority}/{tenant}/v2.0``. Tokens for Azure Storage are v1
    tokens, as Entra's are (``iss`` ``https://sts.windows.net/{tenant}/``, ``ver`` 1.0, no ``azp``): acrlocal serves
    no storage and never verifies them."""

    def __init__(self, keys: KeyRing, authority: str) -> None:
        self.keys = keys
        self.authority = authority.rstrip("/")

    def issuer(self, tenant_id: str) -> str:
        return f"{self.authority}/{tenant_id}/v2.0"

    def issue(self, principal: Principal, audience: str, lifetime_s: int, *, auth_method: str = "2",
              now: float | None = None, extra: dict[str, Any] | None = None) -> AccessToken:
        """A token for ``principal`` to present to ``audience`` (kept exactly as asked, trailing slash and all).

        ``auth_method`` is Entra's ``appidacr``: ``"1"`` client secret, ``"2"`` certificate or managed identity.
        """
        issued = int(now if now is not None else time.time())
        v1 = publiccloud.STORAGE_AUDIENCE.match(audience) is not None
        issuer = publiccloud.V1_ISSUER.format(tenant=principal.tenant_id) if v1 else self.issuer(principal.tenant_id)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime_s,
            "aio": uuid.uuid4().hex,
            "appid": principal.app_id,
            "appidacr": auth_method,
            "azp": principal.app_id,
            "azpacr": auth_method,
            "idp": issuer,
            "idtyp": "user" if principal.kind == "User" else "app",
            "oid": principal.object_id,
            "rh": uuid.uuid4().hex,
            "sub": principal.object_id,
            "tid": principal.tenant_id,
            "uti": uuid.uuid4().hex,
            "ver": "1.0" if v1 else "2.0",
        }
        if v1:
            del claims["azp"], claims["azpacr"]
        if principal.resource_id and principal.kind == "ManagedIdentity":
            claims["xms_mirid"] = principal.resource_id
        if extra:
            claims.update(extra)
        key = self.keys.active(principal.tenant_id)
        token = jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid, "x5t": key.kid})
        return AccessToken(token, claims["exp"], claims["nbf"], claims)

    def verify(self, token: str, audiences: Iterable[str] | None, *, tenant_id: str | None = None) -> dict[str, Any]:
        """The claims of a valid token of ours for one of ``audiences`` (``None``: any audience).

        ``tenant_id`` restricts which tenant may have issued it. Raises :class:`InvalidToken`. Reads the database
        when the key is not in memory (:meth:`KeyRing.find`): for a caller in a thread; the event loop calls
        :meth:`verify_async`. Database errors are not refusals; they propagate.
        """
        tid, kid = self._signer(token, tenant_id)
        return self._claims(token, tid, kid, self.keys.find(tid, kid), audiences)

    async def verify_async(self, sql: SqlThread, token: str, audiences: Iterable[str] | None, *,
                           tenant_id: str | None = None) -> dict[str, Any]:
        """:meth:`verify` for a caller on the event loop: the key comes from memory when this process holds it; a
        kid that memory shows is no published key of the tenant (:meth:`KeyRing.unpublished`: a forged token's,
        while keys are unchanged) is refused there, with no hop to ``sql``; otherwise :meth:`KeyRing.find` runs
        through ``sql`` (off the loop on PostgreSQL) to read what it must (the tenant's first token here, a key
        made or rotated by another process). Raises :class:`InvalidToken`; database errors propagate (the
        caller's HTTP layer answers its 503)."""
        tid, kid = self._signer(token, tenant_id)
        key = self.keys.cached(tid, kid)
        if key is None and not self.keys.unpublished(tid, kid):
            key = await sql.run(self.keys.find, tid, kid)
        return self._claims(token, tid, kid, key, audiences)

    @staticmethod
    def _signer(token: str, tenant_id: str | None) -> tuple[str, str]:
        """The tenant (``tid``) and key (``kid``) ``token`` says signed it, read without checking anything else;
        :class:`InvalidToken` if the header is refused, either is missing, or the tenant is not ``tenant_id``."""
        header = pinned_header(token, InvalidToken)
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token is not a JWT: {exc}") from exc
        tid = unverified.get("tid")
        kid = header.get("kid")
        if not isinstance(tid, str) or not isinstance(kid, str):
            raise InvalidToken("token has no tenant (tid) or key id (kid)")
        if tenant_id is not None and tid.lower() != tenant_id.lower():
            raise InvalidToken(f"token was issued by tenant {tid}, not {tenant_id}")
        return tid, kid

    def _claims(self, token: str, tid: str, kid: str, key: SigningKey | None,
                audiences: Iterable[str] | None) -> dict[str, Any]:
        """The claims of ``token`` checked against ``key`` (``None``: no such key of the tenant's, a refusal)."""
        if key is None:
            raise InvalidToken(f"token key {kid[:64]!r} is not a key of tenant {tid[:64]!r}")
        audience_list = list(audiences) if audiences is not None else None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=ALGORITHMS,
                audience=audience_list,
                issuer=self.issuer(tid),
                leeway=CLOCK_SKEW_S,
                options={"require": REQUIRED_CLAIMS, "verify_aud": audience_list is not None},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from exc
        return claims
