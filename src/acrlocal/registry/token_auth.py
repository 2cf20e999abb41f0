"""The data plane's policy: ACR bearer tokens, verified once and cached, checked against what each request needs.

:meth:`TokenAuthorizer.authorize` reads ``Authorization: Bearer <access token>``:

- no bearer token (none, or Basic): **401** ``UNAUTHORIZED`` with the challenge naming the scope the request needs
  (none for ``/v2/``, ``registry:catalog:*`` for the catalog, ``repository:<name>:<actions>`` otherwise);
- a token that is not valid here (bad signature, expired, another registry, a refresh token, ``alg`` other than
  RS256, header keys): **401** with the challenge and ``error="invalid_token"``;
- a valid token that grants the actions: the caller;
- a valid token that does not grant them (insufficient scope): **401** ``UNAUTHORIZED`` with the challenge and
  ``error="insufficient_scope"``, as ACR answers, when the subject may not do it now either; but **403**
  ``DENIED`` with the same challenge when the subject *may* do it now and merely holds a token that did not ask for
  it. Clients that ask a token per operation never see the 403 (they ask for all they need); clients that keep a
  narrower token and upgrade it only on 403 (oras-py) get a token for the challenged scope and succeed, where a 401
  would make them resend the same token. See docs/decisions.md.

``overwrite`` (a manifest PUT over an existing tag) is covered by ``push``; locks are enforced elsewhere.

A verified token is cached until it expires: RS256 verification costs about 50 µs and the manifest HEAD path is
measured. A granted decision is remembered too, keyed by the ``Authorization`` header, the registry (its uid and
port, so a registry deleted and made again under the same name shares nothing) and the request's repository and
actions, until the token expires: a repeated request costs one dictionary lookup. Both caches key by the SHA-256
of the token or header (32 bytes, not the token's kilobyte or two) and keep only what later decisions read (the
grant without the token's other claims), and each holds at most :data:`CACHE_ENTRIES`; when full, the verified
tokens first drop the expired ones, then the oldest, and the decisions start again. Measured by
``benchmarks/scale.py`` (``grants``).

An admin user's or a scoped token's access token is also checked against :class:`~acrlocal.registry.revocation.
Revocations` on every request, cached decision or not: disabled or deleted, it is refused with ``invalid_token``
on the next request.

Every decision is reported to the audit sink of :class:`~acrlocal.registry.auth_events.AuthServices`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from aiohttp import web

from acrlocal import inbound
from acrlocal.inbound import MalformedRequest
from acrlocal.registry.auth_events import AuthEvent, AuthServices, records_granted
from acrlocal.registry.authz import CATALOG, OVERWRITE, Caller
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.permissions import CurrentPermissions, Subject, SubjectRefused, check_principal
from acrlocal.registry.revocation import Revocations
from acrlocal.registry.scopes import ALL, REGISTRY, REPOSITORY
from acrlocal.registry.scopes import CATALOG as CATALOG_NAME
from acrlocal.registry.token_codec import CLOCK_SKEW_S, AccessGrant, InvalidRegistryToken, RegistryTokens
from acrlocal.registry.token_service import ACR_HELP, challenge, login_server_of, login_servers
from acrlocal.storage.registries import RegistryRecord

CACHE_ENTRIES = 20_000
#: The claims a cached grant keeps (beyond its fields): what :meth:`TokenAuthorizer._may_now` reads.
KEPT_CLAIMS = ("tenant",)
AUTHENTICATION_REQUIRED = f"authentication required, {ACR_HELP}"


def _needed(repository: str | None, actions: Sequence[str]) -> tuple[str, str, tuple[str, ...]] | None:
    """``(type, name, token actions)`` a request needs, or ``None`` for ``/v2/`` (only "who is calling")."""
    if CATALOG in actions:
        return (REGISTRY, CATALOG_NAME, (ALL,))
    if repository is None:
        return None
    needed: list[str] = []
    for action in actions:
        token_action = "push" if action == OVERWRITE else action
        if token_action not in needed:
            needed.append(token_action)
    return (REPOSITORY, repository, tuple(needed))


def _scope(needed: tuple[str, str, tuple[str, ...]] | None) -> str | None:
    if needed is None:
        return None
    rtype, name, actions = needed
    return f"{rtype}:{name}:{','.join(actions)}"


class TokenAuthorizer:
    def __init__(self, signer: RegistryTokens, auth: AuthServices, revocations: Revocations) -> None:
        self.signer = signer
        self.auth = auth
        self.revocations = revocations
        # sha256(token) -> its grant (with only the claims decisions read)
        self._verified: dict[bytes, AccessGrant] = {}
        self._servers: dict[tuple[str, int | None], frozenset[str]] = {}
        # (sha256(Authorization header), registry uid, port, repository, actions)
        #   -> (expiry, principal, kind, subject, sha256(token))
        self._granted: dict[tuple[object, ...], tuple[float, str | None, str, str | None, bytes]] = {}

    # -- token verification ------------------------------------------------------------------------

    def _login_servers(self, registry: RegistryRecord) -> frozenset[str]:
        key = (registry.name, registry.port)
        servers = self._servers.get(key)
        if servers is None:
            servers = self._servers[key] = login_servers(self.auth.hosting, registry)
        return servers

    async def _grant(self, registry: RegistryRecord, token: str, now: float) -> AccessGrant:
        """The verified grant of ``token`` for ``registry``; :class:`InvalidRegistryToken` otherwise. The token
        service's keys are read through ``auth.sql`` when this process does not hold them (a rotation by another
        one); database errors propagate."""
        key = _digest(token)
        grant = self._verified.get(key)
        if grant is None:
            keys = await self.signer.keys.current(self.auth.sql)
            grant = self.signer.verify_access(token, self._login_servers(registry), keys=keys)
            grant = replace(grant, claims={k: grant.claims[k] for k in KEPT_CLAIMS if k in grant.claims})
            self._remember(key, grant, now)
        elif grant.expires + CLOCK_SKEW_S <= now:
            self._verified.pop(key, None)
            raise InvalidRegistryToken("token has expired")
        if grant.registry_uid != registry.uid:
            raise InvalidRegistryToken(f"token was issued for another registry {grant.registry}"
                                       f"{' (since deleted)' if grant.registry == registry.name else ''}")
        if grant.service not in self._login_servers(registry):
            raise InvalidRegistryToken(f"token was issued for {grant.service}, not for registry {registry.name}")
        return grant

    def _remember(self, key: bytes, grant: AccessGrant, now: float) -> None:
        cache = self._verified
        if len(cache) >= CACHE_ENTRIES:
            for key in [k for k, g in cache.items() if g.expires + CLOCK_SKEW_S <= now]:
                del cache[key]
            while len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
        cache[key] = grant

    def _bearer(self, request: web.Request) -> str | None:
        """The bearer token of ``request``; ``None`` without one (another scheme, or no header).
        :class:`~acrlocal.inbound.MalformedRequest` for a header that is not ASCII."""
        found = inbound.authorization(request)
        if found is None or found[0] != "bearer":
            return None
        return found[1] or None

    # -- decisions ---------------------------------------------------------------------------------

    def _audit(self, request: web.Request, registry: RegistryRecord, grant: AccessGrant | None,
               outcome: str, repository: str | None, actions: Sequence[str], detail: str | None = None) -> None:
        self.auth.audit.record(AuthEvent(
            "authorization", registry.name, grant.kind if grant else None,  # type: ignore[arg-type]
            grant.subject if grant else None, outcome, repository, tuple(actions), detail=detail,
            address=request.remote))

    def _challenge_error(self, request: web.Request, registry: RegistryRecord,
                         needed: tuple[str, str, tuple[str, ...]] | None, error: str | None,
                         message: str = AUTHENTICATION_REQUIRED, status_code: str = "UNAUTHORIZED") -> RegistryError:
        header = challenge(login_server_of(request, self.auth.hosting, registry), _scope(needed), error)
        detail = None
        if needed is not None:
            detail = [{"Type": needed[0], "Name": needed[1], "Action": a} for a in needed[2]]
        return RegistryError(status_code, message, detail, headers={"WWW-Authenticate": header})

    async def authorize(
        self, request: web.Request, registry: RegistryRecord, repository: str | None, actions: Sequence[str]
    ) -> Caller:
        header = request.headers.get("Authorization")
        key = (_digest(header) if header else None, registry.uid, registry.port, repository, tuple(actions))
        remembered = self._granted.get(key)
        if remembered is not None:
            if remembered[0] > time.time():
                revoked = await self.revocations.refused(registry, remembered[2], remembered[3])
                if revoked is not None:
                    del self._granted[key]
                    raise self._revoked(request, registry, self._verified.get(remembered[4]), repository,
                                        actions, revoked)
                if records_granted(self.auth.audit):
                    self._audit(request, registry, self._verified.get(remembered[4]), "granted", repository,
                                actions)
                return Caller(remembered[1], request.remote, remembered[2])
            del self._granted[key]
        needed = _needed(repository, actions)
        found = await self._request_grant(request, registry)
        if isinstance(found, _Refusal):
            self._audit(request, registry, found.grant, "denied", repository, actions, found.detail)
            raise self._challenge_error(request, registry, needed, found.error, found.message)
        grant, token_key = found
        if needed is None or grant.allows(*needed):
            if records_granted(self.auth.audit):
                self._audit(request, registry, grant, "granted", repository, actions)
            caller = _caller(grant, request)
            if len(self._granted) >= CACHE_ENTRIES:
                self._granted.clear()
            self._granted[key] = (grant.expires + CLOCK_SKEW_S, caller.principal, caller.kind, grant.subject,
                                  token_key)
            return caller
        upgrade = await self.auth.sql.run(self._may_now, registry, grant, needed)
        self._audit(request, registry, grant, "denied", repository, actions,
                    "insufficient scope" + ("; the subject may ask for it" if upgrade else ""))
        if upgrade:
            raise self._challenge_error(
                request, registry, needed, "insufficient_scope",
                f"requested access to the resource is denied: the access token does not grant "
                f"{_scope(needed)}; request a token for that scope", "DENIED")
        raise self._challenge_error(request, registry, needed, "insufficient_scope")

    async def _request_grant(self, request: web.Request,
                             registry: RegistryRecord) -> tuple[AccessGrant, bytes] | _Refusal:
        """The verified grant of the request's bearer token for ``registry``, not revoked, and the token's cache
        key (:func:`_digest`); a :class:`_Refusal` (what to audit, how to challenge) for a malformed header, no
        bearer token, a token not valid here or one revoked. Database errors propagate."""
        try:
            token = self._bearer(request)
        except MalformedRequest as exc:
            return _Refusal(str(exc), "invalid_token", f"{AUTHENTICATION_REQUIRED} {exc}")
        if token is None:
            return _Refusal("no bearer token", None)
        try:
            grant = await self._grant(registry, token, time.time())
        except InvalidRegistryToken as exc:
            return _Refusal(f"invalid token: {exc}", "invalid_token", _not_accepted(str(exc)))
        revoked = await self.revocations.refused(registry, grant.kind, grant.subject)
        if revoked is not None:
            return _Refusal(f"revoked: {revoked}", "invalid_token", _not_accepted(revoked), grant)
        return grant, _digest(token)

    def _revoked(self, request: web.Request, registry: RegistryRecord, grant: AccessGrant | None,
                 repository: str | None, actions: Sequence[str], reason: str) -> RegistryError:
        self._audit(request, registry, grant, "denied", repository, actions, f"revoked: {reason}")
        return self._challenge_error(request, registry, _needed(repository, actions), "invalid_token",
                                     _not_accepted(reason))

    def _may_now(self, registry: RegistryRecord, grant: AccessGrant,
                 needed: tuple[str, str, tuple[str, ...]]) -> bool:
        """Whether the token's subject may perform ``needed`` now (so that asking for it would succeed). Reads the
        database: call it through ``auth.sql``."""
        tenant = grant.claims.get("tenant")
        subject = Subject(grant.kind, grant.subject, tenant if isinstance(tenant, str) else None)  # type: ignore[arg-type]
        if subject.kind == "principal":
            if subject.id is None or subject.tenant is None:
                return False
            try:
                check_principal(self.auth.directory, registry, subject.id, subject.tenant)
            except SubjectRefused:
                return False
        auth = self.auth
        permissions = CurrentPermissions(auth.directory, auth.access, auth.scoped_tokens, registry, subject)
        allowed = permissions.actions(needed[0], needed[1])
        return all(a in allowed for a in needed[2])

    async def permits(
        self,
        request: web.Request,
        caller: Caller,
        registry: RegistryRecord,
        repository: str,
        actions: Sequence[str],
    ) -> bool:
        found = await self._request_grant(request, registry)
        if isinstance(found, _Refusal):
            return False
        grant, _ = found
        needed = _needed(repository, actions)
        allowed = needed is not None and grant.allows(*needed)
        self._audit(request, registry, grant, "granted" if allowed else "denied", repository, actions,
                    None if allowed else "insufficient scope on a second repository")
        return allowed


@dataclass(frozen=True)
class _Refusal:
    """Why the request's credentials are not accepted: ``detail`` for the audit, ``error`` and ``message`` for the
    challenge (``error`` ``None`` when there were none), ``grant`` when the token was valid but revoked."""

    detail: str
    error: str | None
    message: str = AUTHENTICATION_REQUIRED
    grant: AccessGrant | None = None


def _not_accepted(reason: str) -> str:
    return f"{AUTHENTICATION_REQUIRED} The access token was not accepted: {reason}"


def _digest(text: str) -> bytes:
    """The cache key of a token or header: its SHA-256 (``surrogatepass`` keeps any header text encodable)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _caller(grant: AccessGrant, request: web.Request) -> Caller:
    if grant.kind == "principal":
        principal = grant.subject
    elif grant.kind == "admin":
        principal = f"admin/{grant.registry}"
    elif grant.kind == "token":
        principal = f"token/{grant.subject}"
    else:
        principal = None
    return Caller(principal, request.remote, grant.kind)
