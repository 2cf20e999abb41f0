"""HTTP: ACR's token service on every login server of a registry, and the challenge that points clients to it.

- ``POST /oauth2/exchange`` (form ``grant_type=access_token``, ``service``, optional ``tenant``,
  ``access_token``; ``api-version`` ignored): an Entra access token in, ``{"refresh_token": ...}`` out. The Entra
  token is verified by the Entra token issuer (``TokenIssuer.verify``) for the audience
  ``https://containerregistry.azure.net`` (with or without the trailing slash) or, unless the registry's
  ``azureADAuthenticationAsArmPolicy`` is disabled, the ARM audiences; its principal must still exist, and the
  registry's subscription must belong to its tenant.
- ``/oauth2/token``: ``POST`` form ``grant_type=refresh_token`` (``refresh_token``), ``grant_type=password``
  (``username``/``password``, or nothing for an anonymous token), and ``GET`` with or without ``Authorization:
  Basic``. The user name says what the password is (:func:`credential_kind`): the all-zero GUID
  ``00000000-0000-0000-0000-000000000000`` → an ACR refresh token; any other GUID → a service principal's app id
  with one of its current client secrets (as ``docker login -u <appId> -p <secret>`` against ACR); the registry's
  name → the admin user; anything else → a repository-scoped token. A service principal so logged in is the same
  subject as behind a refresh token, granted by the same role assignments. It answers ``{"access_token", "token",
  "expires_in", "issued_at"}`` with a token that grants the *intersection* of the requested scopes (several
  ``scope`` parameters, each possibly holding several space-separated scopes) and what the subject may do now
  (:mod:`acrlocal.registry.permissions`); a partial or empty grant is not an error. No ``refresh_token`` is
  returned, even for docker's ``offline_token=true``: docker would then store an identity token instead of the
  password, which other readers of its config (oras-py) cannot use, and ACR's own answer to these requests
  carries only the access token.

Errors are OCI error bodies: 400 ``INVALID_REQUEST`` for a malformed request (a bad grant type, scope or
service), 401 ``UNAUTHORIZED`` for credentials or tokens that are not accepted (for a service principal with ACR's
own messages: ``Application not registered with AAD.`` when the app id is no service principal of the tenant
that owns the registry (an application whose service principal was never made or was deleted too, which Entra
refuses, AADSTS7000229), a managed identity or a deleted principal; ``Invalid clientid or client secret.`` when the
secret is wrong, expired or removed; ``Application '<appId>' is disabled`` when the secret is right but the
service principal's ``accountEnabled`` is false, which Entra refuses, AADSTS7000112: ACR's wording for it is not
known). Secrets are never logged or echoed. Every login is reported to the audit sink of
:class:`~acrlocal.registry.auth_events.AuthServices`.

The challenge (:func:`challenge`) is ``Bearer realm="https://<login server>/oauth2/token",service="<login
server>"[,scope="..."][,error="..."]`` with no space after the commas (azure-containerregistry splits on ``,``
and ``=``), the login server being the one the client used if it is one of the registry's, so that clients send
credentials only to a realm of this registry.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from aiohttp import web
from multidict import MultiDictProxy

from acrlocal import inbound
from acrlocal.identity.tokens import InvalidToken, TokenIssuer
from acrlocal.inbound import MalformedRequest, RequestTooLarge
from acrlocal.lockout import Lockout
from acrlocal.publiccloud import ARM_AUDIENCES
from acrlocal.registry.auth_events import AuthEvent, AuthServices
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.hosting import RegistryHosting
from acrlocal.registry.permissions import ANONYMOUS, CurrentPermissions, Subject, SubjectRefused, check_principal
from acrlocal.registry.scopes import ALL, InvalidScope, ResourceScope, parse_scopes
from acrlocal.registry.token_codec import (
    ACCESS_LIFETIME_S,
    CLOCK_SKEW_S,
    InvalidRegistryToken,
    IssuedToken,
    RefreshGrant,
    RegistryTokens,
)
from acrlocal.registry.wire import error_response
from acrlocal.storage.registries import RegistryRecord
from acrlocal.storage.sql import DataVersion

T = TypeVar("T")
#: Where a request keeps the database version read for it (:meth:`TokenService._version`).
_VERSION = "acrlocal.token_service.version"

ACR_AUDIENCES = ("https://containerregistry.azure.net", "https://containerregistry.azure.net/")
#: The user name that says "the password is an ACR refresh token" (what ``az acr login`` hands to docker).
REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"
#: Largest form body the token endpoints read (an Entra token is a few KiB).
MAX_FORM_BYTES = 64 * 1024
ACR_HELP = "visit https://aka.ms/acr/authorization for more information."
#: ACR's answers to a service principal's Basic login it does not accept.
APP_NOT_REGISTERED = "Application not registered with AAD."
INVALID_CLIENT_SECRET = "Invalid clientid or client secret."
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

CredentialKind = Literal["refresh_token", "client_secret", "admin", "scoped_token"]


def credential_kind(user: str, registry_name: str) -> CredentialKind:
    """What the password of a Basic login as ``user`` is, decided by the user name alone.

    A registry name is 5 to 50 letters and digits, so it is never a GUID; a scoped token whose name has the form
    of a GUID cannot be created (:mod:`acrlocal.arm.tokens`), so a GUID never reaches the scoped-token policy."""
    if _GUID.fullmatch(user):
        return "refresh_token" if user == REFRESH_TOKEN_USER else "client_secret"
    if user.lower() == registry_name.lower():
        return "admin"
    return "scoped_token"


# -- login servers and the challenge -------------------------------------------------------------------


def login_servers(hosting: RegistryHosting, registry: RegistryRecord) -> frozenset[str]:
    """Every ``host:port`` the registry answers as, lower-cased; tokens are valid on all of them."""
    return frozenset(s.lower() for s in hosting.login_servers(registry))


def login_server_of(request: web.Request, hosting: RegistryHosting, registry: RegistryRecord) -> str:
    """The login server the client used, if it is one of the registry's; the registry's own otherwise."""
    host = (request.host or "").lower()
    if host in login_servers(hosting, registry):
        return host
    return hosting.login_server(registry).lower()


def challenge(login_server: str, scope: str | None = None, error: str | None = None) -> str:
    value = f'Bearer realm="https://{login_server}/oauth2/token",service="{login_server}"'
    if scope:
        value += f',scope="{scope}"'
    if error:
        value += f',error="{error}"'
    return value


def _unauthorized(message: str) -> RegistryError:
    return RegistryError("UNAUTHORIZED", message)


def _bad_request(message: str) -> RegistryError:
    return RegistryError("INVALID_REQUEST", message)


# -- the service ---------------------------------------------------------------------------------------


def _arm_audiences_allowed(registry: RegistryRecord) -> bool:
    status = str(registry.properties.get("azureADAuthenticationAsArmPolicy") or "enabled")
    return status.lower() != "disabled"


def _basic(request: web.Request) -> tuple[str, str] | None:
    """``(user, password)`` of an ``Authorization: Basic`` header; ``None`` without one. 401 if malformed."""
    try:
        found = inbound.authorization(request)
    except MalformedRequest as exc:
        raise _unauthorized(str(exc)) from None
    if found is None:
        return None
    scheme, value = found
    if scheme != "basic":
        raise _unauthorized(f"the token endpoint takes Basic credentials, not {scheme[:20]!r}; {ACR_HELP}")
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("the Basic credentials are not base64 of user:password") from None
    if not sep:
        raise _unauthorized("the Basic credentials are not base64 of user:password")
    return user, password


class TokenService:
    """The token endpoints of every registry this server hosts.

    Every answer reflects the database as it is when the request arrives. Three things make that cheap:

    - a verified refresh token is remembered until it expires (its signature cannot change);
    - a principal check and a grant computed from the database are kept together with the database's
      :class:`~acrlocal.storage.sql.DataVersion` and used again only while no connection has committed anything
      since (any write, by this process or another, discards them); without such a version nothing is kept;
    - an RS256 signature costs about 0.4 ms, so a token whose claims (subject, service, grant) equal those of one
      signed recently, with at least half its lifetime left, is handed out again.
    """

    REUSE_ENTRIES = 4096
    MEMO_ENTRIES = 10_000

    def __init__(self, signer: RegistryTokens, auth: AuthServices, entra: TokenIssuer, lockout: Lockout,
                 version: DataVersion | None = None) -> None:
        self.signer = signer
        self.auth = auth
        self.entra = entra  # verifies the Entra tokens /oauth2/exchange takes
        self.lockout = lockout
        self.version = version
        self._reuse: OrderedDict[tuple[Any, ...], IssuedToken] = OrderedDict()
        self._refresh: dict[str, RefreshGrant] = {}
        self._memo: dict[tuple[Any, ...], tuple[int, Any]] = {}

    def _version(self, request: web.Request) -> int | None:
        """The database's version, read once per request: read after the request arrived, it is as good for
        everything the request computes afterwards (on PostgreSQL the request's first round trip read it already:
        ``storage.sql.request_version``)."""
        try:
            return cast("int | None", request[_VERSION])
        except KeyError:
            version = request[_VERSION] = self.version.current() if self.version is not None else None
            return version

    async def _current(self, request: web.Request, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()`` (which reads the database: it runs through ``auth.sql``), or its result from an earlier call
        if the database has not changed since."""
        version = self._version(request)
        if version is not None:
            hit = self._memo.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
        value = await self.auth.sql.run(compute)
        if version is not None:
            if len(self._memo) >= self.MEMO_ENTRIES:
                self._memo.clear()
            self._memo[key] = (version, value)
        return value

    async def _verify_refresh(self, token: str, servers: frozenset[str]) -> RefreshGrant:
        """The grant of refresh token ``token`` (:class:`InvalidRegistryToken`), verified once and then remembered;
        the keys are read through ``auth.sql`` when this process does not hold them."""
        grant = self._refresh.get(token)
        if grant is None:
            keys = await self.signer.keys.current(self.auth.sql)
            grant = self.signer.verify_refresh(token, servers, keys=keys)
            if len(self._refresh) >= self.MEMO_ENTRIES:
                self._refresh.clear()
            self._refresh[token] = grant
        elif grant.expires + CLOCK_SKEW_S <= time.time():
            del self._refresh[token]
            raise InvalidRegistryToken("refresh token has expired")
        if grant.service not in servers:
            raise InvalidRegistryToken(f"refresh token was issued for {grant.service}")
        return grant

    # -- HTTP --------------------------------------------------------------------------------------

    async def handle(self, request: web.Request, registry: RegistryRecord) -> web.StreamResponse:
        path = request.path.rstrip("/")
        try:
            if path == "/oauth2/exchange" and request.method == "POST":
                return await self.exchange(request, registry)
            if path == "/oauth2/token" and request.method in ("GET", "POST"):
                return await self.token(request, registry)
            if path in ("/oauth2/exchange", "/oauth2/token"):
                raise RegistryError("UNSUPPORTED", f"{request.method} is not supported on {path}")
            raise RegistryError("NAME_UNKNOWN", f"no such endpoint {path[:100]!r}", status=404)
        except RegistryError as err:
            return error_response(err)
        except MalformedRequest as exc:
            code = "SIZE_INVALID" if isinstance(exc, RequestTooLarge) else "INVALID_REQUEST"
            return error_response(RegistryError(code, str(exc), status=exc.status))

    async def _form(self, request: web.Request) -> MultiDictProxy[Any]:
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise _bad_request(f"the form is larger than {MAX_FORM_BYTES} bytes")
        ctype = request.content_type
        if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise _bad_request(f"expected an application/x-www-form-urlencoded body, not {ctype[:80]!r}")
        return await inbound.read_form(request)

    def _service(self, request: web.Request, registry: RegistryRecord, given: str | None) -> str:
        if not given:
            return login_server_of(request, self.auth.hosting, registry)
        servers = login_servers(self.auth.hosting, registry)
        if given.lower() not in servers:
            raise _bad_request(f"service {given[:100]!r} is not a login server of registry {registry.name} "
                               f"(expected one of {', '.join(sorted(servers))})")
        return given.lower()

    def _guard(self, request: web.Request, registry: RegistryRecord, name: Hashable | None, what: str) -> None:
        """Refuse a credential unchecked while its name (``None``: a token, which has none) or the caller is locked
        out after failures (:mod:`acrlocal.lockout`): ``429 TOOMANYREQUESTS`` with ``Retry-After``, audited."""
        locked = self.lockout.locked(request.remote, name)
        if locked is None:
            return
        self._audit(request, registry, None, "failed",
                    detail=f"{what}: refused unchecked, {locked.what} locked for {locked.retry_after} s")
        whom = "this user name" if locked.what == "name" else "this address"
        raise RegistryError("TOOMANYREQUESTS", f"too many failed logins for {whom}; try again in "
                            f"{locked.retry_after} seconds; {ACR_HELP}",
                            headers={"Retry-After": str(locked.retry_after)})

    def _failed(self, request: web.Request, name: Hashable | None, tried: str | None = None) -> str:
        """Count a failed credential (``tried``: the wrong password or secret, see :mod:`acrlocal.lockout`); what to
        add to its audit detail."""
        started = self.lockout.failed(request.remote, name, tried=tried)
        return f"; {started.what} locked for {started.retry_after} s" if started else ""

    def _audit(self, request: web.Request, registry: RegistryRecord, subject: Subject | None,
               outcome: str, **kw: Any) -> None:
        self.auth.audit.record(AuthEvent("login", registry.name, subject.kind if subject else None,
                                         subject.id if subject else None, outcome, address=request.remote, **kw))

    async def exchange(self, request: web.Request, registry: RegistryRecord) -> web.Response:
        form = await self._form(request)
        grant = form.get("grant_type")
        if grant != "access_token":
            raise _bad_request(f"grant_type {str(grant)[:40]!r} is not supported; expected 'access_token'")
        service = self._service(request, registry, _text(form, "service"))
        aad_token = _text(form, "access_token")
        if not aad_token:
            raise _bad_request("the form must contain 'access_token' (an Entra ID access token)")
        audiences = list(ACR_AUDIENCES) + (list(ARM_AUDIENCES) if _arm_audiences_allowed(registry) else [])
        self._guard(request, registry, None, "exchange")
        try:
            claims = await self.entra.verify_async(self.auth.sql, aad_token, audiences)
        except InvalidToken as exc:
            self._audit(request, registry, None, "failed",
                        detail=f"exchange: {exc}{self._failed(request, None)}")
            raise _unauthorized(f"the Entra ID access token was not accepted: {exc}; {ACR_HELP}") from None
        tenant, oid = str(claims["tid"]).lower(), str(claims["oid"]).lower()
        subject = Subject("principal", oid, tenant)
        asked_tenant = _text(form, "tenant")
        if asked_tenant and asked_tenant.lower() != tenant:
            self._audit(request, registry, subject, "failed", detail="exchange: tenant mismatch")
            raise _unauthorized(f"the access token was issued by tenant {tenant}, not {asked_tenant[:40]}")
        try:
            await self.auth.sql.run(check_principal, self.auth.directory, registry, oid, tenant)
        except SubjectRefused as exc:
            self._audit(request, registry, subject, "failed", detail=f"exchange: {exc}")
            raise _unauthorized(f"{exc}; {ACR_HELP}") from None
        # RS256 signing releases the GIL: in the executor, both cores sign.
        issued = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            self.signer.issue_refresh, principal=oid, tenant=tenant, registry=registry.name,
            registry_uid=registry.uid, service=service))
        self._audit(request, registry, subject, "granted", detail="refresh token issued")
        return web.json_response({"refresh_token": issued.token})

    async def token(self, request: web.Request, registry: RegistryRecord) -> web.Response:
        if request.method == "GET":
            params: Mapping[str, Any] = request.query
            scopes_text = request.query.getall("scope", [])
            subject = await self._from_basic(request, registry, _basic(request))
        else:
            form = await self._form(request)
            params = form
            scopes_text = [str(s) for s in form.getall("scope", [])]
            subject = await self._from_form(request, registry, form)
        service = self._service(request, registry, _text(params, "service"))
        try:
            asked = parse_scopes(scopes_text)
        except InvalidScope as exc:
            raise _bad_request(str(exc)) from None

        def compute() -> list[ResourceScope]:
            auth = self.auth
            perms = CurrentPermissions(auth.directory, auth.access, auth.scoped_tokens, registry, subject)
            return [g for g in (grant(perms, s) for s in asked) if g.actions]

        granted = await self._current(request, ("grant", subject, registry.uid, tuple(asked)), compute)
        issued = await self._access_token(subject, registry, service, granted)
        outcome = "granted" if _covers(granted, asked) else "partial"
        self._audit(request, registry, subject, outcome, actions=tuple(s.render() for s in asked),
                    granted=tuple(s.render() for s in granted))
        issued_at = dt.datetime.fromtimestamp(issued.issued, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {"access_token": issued.token, "expires_in": max(60, issued.expires_in),
                                "issued_at": issued_at}
        if request.method == "GET":
            body["token"] = issued.token
        return web.json_response(body)

    # -- who is asking -----------------------------------------------------------------------------

    async def _from_form(self, request: web.Request, registry: RegistryRecord,
                   form: MultiDictProxy[Any]) -> Subject:
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            token = _text(form, "refresh_token")
            if not token:
                raise _bad_request("grant_type refresh_token needs 'refresh_token'")
            return await self._from_refresh(request, registry, token)
        if grant_type == "password":
            username, password = _text(form, "username"), _text(form, "password")
            if username or password:
                return await self._from_basic(request, registry, (username or "", password or ""))
            return await self._from_basic(request, registry, _basic(request))
        raise _bad_request(f"grant_type {str(grant_type)[:40]!r} is not supported; expected 'refresh_token' or "
                           "'password'")

    async def _from_basic(self, request: web.Request, registry: RegistryRecord,
                          credentials: tuple[str, str] | None) -> Subject:
        if credentials is None:
            return ANONYMOUS
        user, password = credentials
        kind = credential_kind(user, registry.name)
        if kind == "refresh_token":
            return await self._from_refresh(request, registry, password)
        if kind == "client_secret":
            return await self._from_client_secret(request, registry, user, password)
        name = ("registry", registry.uid, user.lower()[:256])
        self._guard(request, registry, name, f"{kind} login as {user[:60]!r}")
        if kind == "admin":
            if await self.auth.sql.run(self.auth.access.check_admin_password, registry.name, user, password):
                self.lockout.succeeded(name)
                return Subject("admin", registry.name)
            self._audit(request, registry, Subject("admin", registry.name), "failed",
                        detail=f"admin user disabled or wrong password{self._failed(request, name, password)}")
            raise _unauthorized(f"the admin user of registry {registry.name} is disabled or the password is wrong; "
                                f"{ACR_HELP}")
        policy = self.auth.scoped_tokens
        if policy is not None and await self.auth.sql.run(policy.check_password, registry, user, password):
            self.lockout.succeeded(name)
            return Subject("token", user)
        self._audit(request, registry, None, "failed",
                    detail=f"unknown user {user[:60]!r} or wrong password{self._failed(request, name, password)}")
        raise _unauthorized(f"user name or password is not valid for registry {registry.name}; {ACR_HELP}")

    async def _from_client_secret(self, request: web.Request, registry: RegistryRecord, app_id: str,
                                  secret: str) -> Subject:
        """The service principal whose app id is ``app_id``, if ``secret`` is one of its current client secrets, it
        is enabled (Graph's ``accountEnabled``: ACR checks the secret with Entra, which refuses a disabled
        application) and it belongs to the tenant that owns the registry; the subject is then the principal, exactly
        as behind a refresh token. Read from the directory at every call, never remembered: a secret expires with
        time, which no database version tells. A refusal is audited with the app id and the reason, never the
        secret."""
        # One answer for every "not registered" case, so that it tells a caller nothing about other tenants.
        not_registered = _unauthorized(f"{APP_NOT_REGISTERED} No service principal with client secrets has the app "
                                       f"id {app_id.lower()} in the tenant that owns registry {registry.name}; "
                                       f"{ACR_HELP}")
        directory = self.auth.directory
        client = await self.auth.sql.run(directory.client, app_id)
        if client is None or client.principal.kind != "ServicePrincipal" or not client.service_principal:
            what = ("no principal" if client is None else
                    f"a {client.principal.kind}, which has no client secrets" if client.service_principal else
                    "an application without its service principal")
            self._audit(request, registry, None, "failed",
                        detail=f"client secret login: app id {app_id.lower()} is {what}")
            raise not_registered
        principal = client.principal
        subject = Subject("principal", principal.object_id, principal.tenant_id)
        try:
            await self.auth.sql.run(check_principal, directory, registry, principal.object_id, principal.tenant_id)
        except SubjectRefused as exc:
            self._audit(request, registry, subject, "failed",
                        detail=f"client secret login: app id {principal.app_id}: {exc}")
            raise not_registered from None
        name = ("client", principal.app_id.lower())  # the same count as Entra's token endpoint keeps
        self._guard(request, registry, name, f"client secret login: app id {principal.app_id}")
        if not client.accepts(secret, time.time()):
            self._audit(request, registry, subject, "failed",
                        detail=f"client secret login: app id {principal.app_id}: not a current client secret"
                               f"{self._failed(request, name, secret)}")
            raise _unauthorized(f"{INVALID_CLIENT_SECRET} The password is not a current client secret of the "
                                f"service principal with app id {principal.app_id}; {ACR_HELP}")
        if not client.enabled:  # said only to a caller who knows a current secret
            self._audit(request, registry, subject, "failed",
                        detail=f"client secret login: app id {principal.app_id}: the service principal is disabled")
            raise _unauthorized(f"Application '{principal.app_id}' is disabled: its service principal's "
                                f"accountEnabled is false; {ACR_HELP}")
        self.lockout.succeeded(name)
        return subject

    async def _from_refresh(self, request: web.Request, registry: RegistryRecord, token: str) -> Subject:
        self._guard(request, registry, None, "refresh token")
        try:
            refresh = await self._verify_refresh(token, login_servers(self.auth.hosting, registry))
            if refresh.registry != registry.name or refresh.registry_uid != registry.uid:
                raise InvalidRegistryToken(f"the refresh token is for another registry {refresh.registry}"
                                           f"{' (since deleted)' if refresh.registry == registry.name else ''}")
            await self._current(request, ("principal", refresh.principal, refresh.tenant, registry.uid),
                                functools.partial(check_principal, self.auth.directory, registry, refresh.principal,
                                                  refresh.tenant))
        except (InvalidRegistryToken, SubjectRefused) as exc:
            self._audit(request, registry, None, "failed",
                        detail=f"refresh token: {exc}{self._failed(request, None)}")
            raise _unauthorized(f"the refresh token was not accepted: {exc}; {ACR_HELP}") from None
        return Subject("principal", refresh.principal, refresh.tenant)

    # -- signing -----------------------------------------------------------------------------------

    async def _access_token(self, subject: Subject, registry: RegistryRecord, service: str,
                            granted: Sequence[ResourceScope]) -> IssuedToken:
        # The signing key is part of the key: after a rotation, tokens are signed anew with the new one.
        signing = (await self.signer.keys.current(self.auth.sql))[0]
        key = (subject.kind, subject.id, subject.tenant, registry.uid, service,
               tuple(sorted((g.type, g.name, g.actions) for g in granted)), signing.kid)
        reuse = self._reuse.get(key)
        if reuse is not None and reuse.expires_in > ACCESS_LIFETIME_S // 2:
            self._reuse.move_to_end(key)
            return reuse
        issued = await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            self.signer.issue_access, kind=subject.kind, subject=subject.id, registry=registry.name,
            registry_uid=registry.uid,
            service=service, access=tuple(granted), tenant=subject.tenant))
        self._reuse[key] = issued
        if len(self._reuse) > self.REUSE_ENTRIES:
            self._reuse.popitem(last=False)
        return issued


def grant(perms: CurrentPermissions, asked: ResourceScope) -> ResourceScope:
    """The part of ``asked`` the subject may have now (``*`` on a repository: every action it may perform)."""
    allowed = perms.actions(asked.type, asked.name)
    if asked.type == "repository" and ALL in asked.actions:
        actions = tuple(sorted(allowed))
    else:
        actions = tuple(a for a in asked.actions if a in allowed)
    return ResourceScope(asked.type, asked.name, actions)


def _covers(granted: Sequence[ResourceScope], asked: Sequence[ResourceScope]) -> bool:
    have = {g.key: set(g.actions) for g in granted}
    return all(a.key in have and (set(a.actions) - {ALL}) <= have[a.key] for a in asked)


def _text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    return value if isinstance(value, str) and value else None
