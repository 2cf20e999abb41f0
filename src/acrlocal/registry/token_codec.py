"""ACR-shaped refresh and access tokens: claims in, RS256 JWT out, and back. No HTTP, no policy.

Both kinds are JWTs signed with the token service's own key (:mod:`acrlocal.registry.token_keys`), with ACR's
claims (``jti``, ``sub``, ``nbf``, ``exp``, ``iat``, ``iss``, ``aud``, ``version``, ``grant_type``) plus what
acrlocal needs to tie a token to one registry and one kind of subject:

- both name the registry by name (``registry``) and by identity (``registry_uid``), so that a registry deleted
  and made again under the same name refuses the old one's tokens;
- a **refresh token** (``grant_type: refresh_token``) names an Entra principal (``sub`` = object id, ``tenant``)
  and the registry; it carries no permissions, which are computed anew whenever it is redeemed;
- an **access token** (``grant_type: access_token``) names its subject (``kind``: ``principal``, ``admin``,
  ``token`` or ``anonymous``), its registry and ``access: [{type, name, actions}]``, what it may do.

The payload is serialized so that its base64url form never contains ``-`` or ``_``: azure-containerregistry
decodes the middle segment of a refresh token with the standard base64 alphabet and fails on those characters.
JSON text is 7-bit ASCII, and a base64 group of three such bytes only yields index 62 or 63 when the third byte
is ``>``, ``?``, ``~`` or DEL; the encoder writes those characters as ``\\u`` escapes.

Verification trusts nothing in the header but ``kid``: RS256 only, the key only from our table, ``jwk``/``jku``/
``x5u``/``x5c``/``crit`` headers refused; issuer, audience (one of the caller's), expiry, not-before and the
grant type are required and checked, so a refresh token is never accepted as an access token and vice versa.
Every failure raises :class:`InvalidRegistryToken` saying why.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from acrlocal.errors import AcrLocalError
from acrlocal.identity.tokens import ALGORITHMS, pinned_header
from acrlocal.registry.scopes import ResourceScope
from acrlocal.registry.token_keys import TokenKey, TokenKeys

ISSUER = "Azure Container Registry"
CLOCK_SKEW_S = 30
REFRESH = "refresh_token"
ACCESS = "access_token"
REQUIRED = ["jti", "sub", "exp", "iat", "nbf", "iss", "aud", "grant_type", "registry", "registry_uid"]
#: ACR's lifetimes: refresh tokens about 3 hours, access tokens 75 minutes.
REFRESH_LIFETIME_S = 3 * 3600
ACCESS_LIFETIME_S = 75 * 60

_UNSAFE = {">": "\\u003e", "?": "\\u003f", "~": "\\u007e", "\x7f": "\\u007f"}


class InvalidRegistryToken(AcrLocalError, ValueError):
    """A token that is not one of the token service's, or not valid now, here, or for this use."""


class _Base64SafeJSON(json.JSONEncoder):
    """JSON whose base64 form uses neither ``-``/``_`` nor ``+``/``/`` (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["ensure_ascii"] = True
        super().__init__(**kwargs)

    def encode(self, o: Any) -> str:
        text = super().encode(o)
        for char, escaped in _UNSAFE.items():
            text = text.replace(char, escaped)
        return text


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a verified refresh token says."""

    principal: str
    tenant: str
    registry: str
    registry_uid: str
    service: str
    expires: int


@dataclass(frozen=True, slots=True)
class AccessGrant:
    """What a verified access token says. ``access`` maps ``(type, name)`` to the actions granted."""

    kind: str
    subject: str | None
    registry: str
    registry_uid: str
    service: str
    expires: int
    access: dict[tuple[str, str], frozenset[str]]
    claims: dict[str, Any]

    def allows(self, rtype: str, name: str, actions: Collection[str]) -> bool:
        granted = self.access.get((rtype, name))
        return granted is not None and (all(a in granted for a in actions) or "*" in granted)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires: int
    issued: int

    @property
    def expires_in(self) -> int:
        return max(0, self.expires - int(time.time()))


class RegistryTokens:
    """Signs and verifies the token service's tokens with the keys of :class:`TokenKeys`."""

    def __init__(self, keys: TokenKeys) -> None:
        self.keys = keys

    # -- issuing -----------------------------------------------------------------------------------

    def _sign(self, claims: dict[str, Any]) -> str:
        key = self.keys.active()
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid},
                          json_encoder=_Base64SafeJSON)

    def _base(self, grant_type: str, subject: str, service: str, registry: str, registry_uid: str,
              lifetime_s: int, now: float | None) -> dict[str, Any]:
        issued = int(time.time() if now is None else now)
        return {"jti": secrets.token_hex(16), "sub": subject, "nbf": issued, "exp": issued + lifetime_s,
                "iat": issued, "iss": ISSUER, "aud": service, "version": "1.0", "grant_type": grant_type,
                "registry": registry, "registry_uid": registry_uid}

    def issue_refresh(self, *, principal: str, tenant: str, registry: str, registry_uid: str, service: str,
                      lifetime_s: int = REFRESH_LIFETIME_S, now: float | None = None) -> IssuedToken:
        claims = self._base(REFRESH, principal, service, registry, registry_uid, lifetime_s, now)
        claims.update(tenant=tenant, permissions={"actions": ["*"], "notActions": []}, roles=[])
        return IssuedToken(self._sign(claims), claims["exp"], claims["iat"])

    def issue_access(self, *, kind: str, subject: str | None, registry: str, registry_uid: str, service: str,
                     access: Sequence[ResourceScope], tenant: str | None = None,
                     lifetime_s: int = ACCESS_LIFETIME_S, now: float | None = None) -> IssuedToken:
        claims = self._base(ACCESS, subject or "", service, registry, registry_uid, lifetime_s, now)
        claims.update(kind=kind, access=[scope.claim() for scope in access], roles=[])
        if tenant:
            claims["tenant"] = tenant
        return IssuedToken(self._sign(claims), claims["exp"], claims["iat"])

    # -- verifying ---------------------------------------------------------------------------------

    def _verify(self, token: str, grant_type: str, services: Collection[str],
                keys: Sequence[TokenKey] | None) -> dict[str, Any]:
        header = pinned_header(token, InvalidRegistryToken)
        kid = header.get("kid")
        key = self.keys.find(kid, keys=keys) if isinstance(kid, str) else None
        if key is None:
            raise InvalidRegistryToken(f"token key {str(kid)[:80]!r} is not a key of this token service")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.public_key, algorithms=ALGORITHMS, audience=list(services), issuer=ISSUER,
                leeway=CLOCK_SKEW_S, options={"require": REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise InvalidRegistryToken(f"token rejected: {exc}") from exc
        if claims.get("grant_type") != grant_type:
            raise InvalidRegistryToken(f"a {claims.get('grant_type')!r} token cannot be used as a {grant_type}")
        return claims

    def verify_refresh(self, token: str, services: Collection[str], *,
                       keys: Sequence[TokenKey] | None = None) -> RefreshGrant:
        """The grant of a valid refresh token issued for one of ``services``; :class:`InvalidRegistryToken`.
        ``keys``: the keys to verify with, as :meth:`TokenKeys.current` gave them to a caller on the event loop;
        ``None`` (a caller in a thread) reads them here, from the database if they are not in memory."""
        claims = self._verify(token, REFRESH, services, keys)
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not isinstance(claims["sub"], str) or not claims["sub"]:
            raise InvalidRegistryToken("refresh token names no principal or tenant")
        return RefreshGrant(claims["sub"], tenant, str(claims["registry"]), str(claims["registry_uid"]),
                            str(claims["aud"]), int(claims["exp"]))

    def verify_access(self, token: str, services: Collection[str], *,
                      keys: Sequence[TokenKey] | None = None) -> AccessGrant:
        """The grant of a valid access token issued for one of ``services``; :class:`InvalidRegistryToken`.
        ``keys`` as for :meth:`verify_refresh`."""
        claims = self._verify(token, ACCESS, services, keys)
        raw = claims.get("access")
        if not isinstance(raw, list):
            raise InvalidRegistryToken("access token has no access list")
        access: dict[tuple[str, str], frozenset[str]] = {}
        for entry in raw:
            if not (isinstance(entry, dict) and isinstance(entry.get("type"), str)
                    and isinstance(entry.get("name"), str) and isinstance(entry.get("actions"), list)):
                raise InvalidRegistryToken("access token has a malformed access entry")
            key = (entry["type"], entry["name"])
            access[key] = access.get(key, frozenset()) | frozenset(str(a) for a in entry["actions"])
        kind = claims.get("kind")
        if kind not in ("principal", "admin", "token", "anonymous"):
            raise InvalidRegistryToken(f"access token has unknown subject kind {str(kind)[:40]!r}")
        return AccessGrant(str(kind), claims["sub"] or None, str(claims["registry"]), str(claims["registry_uid"]),
                           str(claims["aud"]),
                           int(claims["exp"]), access, claims)
