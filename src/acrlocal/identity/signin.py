"""Signing in as a person: the OAuth grants for users, and the pages a person signs in on.

Grants on the token endpoints (``/{tenant}/oauth2/v2.0/token``, also ``organizations`` and ``common``, where the
user's own tenant issues the tokens):

- ``password`` (resource owner password, as msal sends it for ``az login -u -p``);
- ``urn:ietf:params:oauth:grant-type:device_code`` (``az login --use-device-code``), after a person approved the
  code on ``/devicelogin``;
- ``authorization_code`` with PKCE (plain ``az login``): ``/{tenant}/oauth2/v2.0/authorize`` shows the sign-in
  page and redirects to the client's loopback address with a one-time code; the code is redeemed once, with the
  ``code_verifier`` whose S256 hash was the ``code_challenge``, by the same client and redirect URI;
- ``refresh_token``: a refresh token issued by one of the above, for any resource.

The clients are Microsoft's public first-party clients (Azure CLI, Azure PowerShell, Visual Studio Code, ...), or
an application of the user's tenant registered as a public client (on ``organizations``/``common`` only a
multi-tenant one, as in Entra: a single-tenant application there is AADSTS50194). A user grant answers an
access token with Entra's user claims (``idtyp=user``, ``upn``, ``name``, ``scp``, ``amr``), an ID token for the
client, an opaque refresh token (kept hashed in the directory, revoked with a new password or a disabled account) and
``client_info``.

Passwords are checked with scrypt in the default executor, at most two at a time (:data:`CHECKING`); an unknown
user name costs the same as a known one, and both get the same AADSTS50126 answer. Device flows and
authorization codes live in the database (15 and 10 minutes), bounded in number, so that every process and
replica continues a flow any of them started (:class:`PendingSignIns`). The handlers call the directory and
:class:`PendingSignIns` through ``entra.sql`` (inline on SQLite, off the event loop on PostgreSQL), one call per
transaction as the stores define them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from aiohttp import web
from multidict import MultiDictProxy

from acrlocal import inbound
from acrlocal.errors import NotFound
from acrlocal.identity import store
from acrlocal.identity.directory import Application, Directory, Principal, User
from acrlocal.identity.errors import OAuthError
from acrlocal.identity.passwords import verify_password
from acrlocal.identity.services import EntraServices
from acrlocal.inbound import MalformedRequest
from acrlocal.lockout import Locked

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_GRANTS = ("password", "refresh_token", "authorization_code", DEVICE_CODE_GRANT)
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}
USER_TOKEN_LIFETIME_S = 3599
DEVICE_FLOW_LIFETIME_S = 900
DEVICE_POLL_INTERVAL_S = 5
AUTH_CODE_LIFETIME_S = 600
MAX_PENDING = 1000
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_SCOPES = ("Application.ReadWrite.All AuditLog.Read.All DelegatedPermissionGrant.ReadWrite.All "
                "Directory.AccessAsUser.All email Group.ReadWrite.All openid profile User.ReadWrite.All")
#: Microsoft's public first-party clients a person signs in with (app id -> name shown on the pages).
FIRST_PARTY_CLIENTS = {
    "04b07795-8ddb-461a-bbee-02f9e1bf7b46": "Microsoft Azure CLI",
    "1950a258-227b-4e31-a9cf-717495945fc2": "Microsoft Azure PowerShell",
    "aebc6443-996d-45c2-90f0-388ff96faa56": "Visual Studio Code",
    "872cd9fa-d31f-45e0-9eab-6e460a02d1f1": "Visual Studio",
    "1b730954-1685-4b74-9bfd-dac224a7b894": "Azure Active Directory PowerShell",
}
#: Password checks at once, at most (each takes a core for about 50 ms and 16 MiB).
CHECKING = asyncio.Semaphore(2)
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _b64url_json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).rstrip(b"=").decode()


def _invalid_credentials() -> OAuthError:
    return OAuthError("invalid_grant", "Error validating credentials due to invalid username or password.", 50126)


def locked_out(locked: Locked) -> OAuthError:
    """Entra's AADSTS50053: too many failed sign-ins for this name (IdsLocked) or from this address."""
    if locked.what == "caller":
        return OAuthError("invalid_grant", "Sign-in was blocked: too many failed sign-ins came from this address. "
                          f"Try again in {locked.retry_after} seconds.", 50053)
    return OAuthError("invalid_grant", "The account is locked, you've tried to sign in too many times with an "
                      f"incorrect user ID or password. Try again in {locked.retry_after} seconds.", 50053)


async def authenticate_user(entra: EntraServices, username: str, password: str, tenant_id: str | None,
                            caller: str | None) -> User:
    """The user whose credentials these are (in ``tenant_id``, if given); :class:`OAuthError` otherwise. The one
    place a password is checked. Failures count towards ``entra.lockout`` for the user name and for ``caller`` (the
    client's address); a locked name or caller gets AADSTS50053 with the password unchecked. Failures and lockouts
    are logged (never the password)."""
    name = ("user", username.strip().lower()[:256])
    locked = entra.lockout.locked(caller, name)
    if locked is not None:
        log.warning("sign-in refused unchecked for %r from %s: %s locked for %d s", name[1], caller, locked.what,
                    locked.retry_after)
        raise locked_out(locked)
    user, stored = await entra.sql.run(_credentials, entra.directory, username)
    async with CHECKING:
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)
    if not ok or user is None or (tenant_id is not None and user.tenant_id != tenant_id):
        started = entra.lockout.failed(caller, name, tried=password)
        log.warning("sign-in failed for %r from %s: invalid user name or password%s", name[1], caller,
                    f"; {started.what} locked for {started.retry_after} s" if started else "")
        raise _invalid_credentials()
    entra.lockout.succeeded(name)
    if not user.account_enabled:
        raise OAuthError("invalid_grant", "The user account is disabled.", 50057)
    if user.force_change:
        raise OAuthError("invalid_grant", "The password is expired: the user must change it at the next sign-in "
                         "(forceChangePasswordNextSignIn). An administrator can set a new one with `az ad user "
                         "update --password`.", 50055)
    return user


def _credentials(directory: Directory, username: str) -> tuple[User | None, str | None]:
    """The user named ``username`` and their password hash; ``(None, None)`` for an unknown or empty name."""
    user = directory.find_user(username) if username else None
    return user, directory.password_hash(user.object_id) if user is not None else None


#: ``signInAudience`` values of applications people of any tenant may sign in to (on ``organizations``/``common``).
MULTI_TENANT_AUDIENCES = frozenset({"AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount"})


async def client_name(entra: EntraServices, client_id: str, tenant_id: str | None) -> str:
    """The name of a client a person may sign in to; :class:`OAuthError` for any other: AADSTS700016 for an id
    that is no public client of ``tenant_id`` (``None``: ``organizations``/``common``), AADSTS50194 for a
    single-tenant application (``signInAudience`` ``AzureADMyOrg``, the default) on ``organizations``/``common``,
    as Entra answers, so that a person of another tenant cannot sign in to it or read its name there, and
    AADSTS7000112 for an application whose service principal is disabled (``accountEnabled`` false: no one signs
    in to it and it gets no tokens)."""
    name = FIRST_PARTY_CLIENTS.get(client_id.lower())
    if name is not None:
        return name
    app: Application | None = await entra.sql.run(entra.directory.find_application, app_id=client_id)
    public = app is not None and (app.properties.get("isFallbackPublicClient") or
                                  (app.properties.get("publicClient") or {}).get("redirectUris"))
    if app is None or not public or (tenant_id is not None and app.tenant_id != tenant_id):
        raise OAuthError("unauthorized_client", f"Application with identifier '{client_id[:60]}' was not found in "
                         "the directory, or is not a public client a person can sign in to.", 700016)
    if tenant_id is None and app.properties.get("signInAudience", "AzureADMyOrg") not in MULTI_TENANT_AUDIENCES:
        raise OAuthError("invalid_request", f"Application '{app.app_id}' is not configured as a multi-tenant "
                         "application. Usage of the /common endpoint is not supported for such applications. Use "
                         "a tenant-specific endpoint or configure the application to be multi-tenant.", 50194)
    client = await entra.lookups.client(app.app_id)
    if client is not None and not client.enabled:
        raise OAuthError("unauthorized_client", f"Application '{app.app_id}'({app.display_name}) is disabled.",
                         7000112)
    return app.display_name


def user_resource(scope: str) -> tuple[str, str]:
    """``(audience, scopes granted)`` for a user grant's ``scope``: one resource (``https://x/.default`` or
    ``https://x/Permission``); OpenID scopes alone mean Microsoft Graph."""
    resources = [s for s in scope.split() if s not in OIDC_SCOPES]
    if not resources:
        return GRAPH_RESOURCE, f"{GRAPH_RESOURCE}/User.Read"
    audiences = set()
    for item in resources:
        if item.endswith("/.default"):
            audiences.add(item[: -len("/.default")])
        elif "://" in item and item.rstrip("/").count("/") >= 3:
            audiences.add(item.rsplit("/", 1)[0])
        else:
            audiences.add(GRAPH_RESOURCE)  # a bare Graph permission name, e.g. User.Read
    if len(audiences) != 1:
        raise OAuthError("invalid_scope", f"The provided value for the input parameter 'scope' is not valid because "
                         f"it contains more than one resource: {scope[:200]!r}.", 28000)
    return audiences.pop(), " ".join(resources)


async def user_tokens(entra: EntraServices, user: User, client_id: str, scope: str, *, nonce: str | None = None,
                      refresh_token: str | None = None, v1_resource: str | None = None) -> dict[str, Any]:
    """The token response for a signed-in user: access token, ID token, refresh token, client_info."""
    if v1_resource is not None:
        audience, granted = v1_resource, v1_resource
    else:
        audience, granted = user_resource(scope)
    principal = Principal(user.object_id, user.tenant_id, "User", user.object_id, user.display_name)
    names = user.properties
    scp = GRAPH_SCOPES if audience.rstrip("/") in (GRAPH_RESOURCE, entra.tokens.authority) else "user_impersonation"
    claims: dict[str, Any] = {
        "appid": client_id.lower(), "azp": client_id.lower(), "appidacr": "0", "azpacr": "0", "amr": ["pwd"],
        "upn": user.user_principal_name, "unique_name": user.user_principal_name, "name": user.display_name,
        "scp": scp, "idtyp": "user",
    }
    for claim, prop in (("given_name", "givenName"), ("family_name", "surname")):
        if names.get(prop):
            claims[claim] = names[prop]
    loop = asyncio.get_running_loop()
    token = await loop.run_in_executor(None, lambda: entra.tokens.issue(principal, audience, USER_TOKEN_LIFETIME_S,
                                                                      extra=claims))
    id_claims: dict[str, Any] = {"preferred_username": user.user_principal_name, "name": user.display_name,
                                 "idtyp": "user", "appid": client_id.lower(), "azp": client_id.lower()}
    if nonce:
        id_claims["nonce"] = nonce
    id_token = await loop.run_in_executor(None, lambda: entra.tokens.issue(principal, client_id.lower(),
                                                                         USER_TOKEN_LIFETIME_S, extra=id_claims))
    refresh = refresh_token or await entra.sql.run(entra.directory.issue_refresh_token, user.object_id, client_id)
    body: dict[str, Any] = {"token_type": "Bearer", "scope": granted, "expires_in": USER_TOKEN_LIFETIME_S,
                            "ext_expires_in": USER_TOKEN_LIFETIME_S, "access_token": token.token,
                            "refresh_token": refresh, "id_token": id_token.token,
                            "client_info": _b64url_json({"uid": user.object_id, "utid": user.tenant_id})}
    if v1_resource is not None:
        body.update(resource=v1_resource, expires_on=str(token.expires_on), not_before=str(token.not_before),
                    expires_in=str(USER_TOKEN_LIFETIME_S), ext_expires_in=str(USER_TOKEN_LIFETIME_S))
    return body


# -- device code flows and authorization codes (in the database: any process or replica continues them) -----------


@dataclass
class DeviceFlow:
    device_code: str
    user_code: str
    client_id: str
    client_name: str
    scope: str
    tenant_id: str | None
    expires: float
    user: User | None = None


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    nonce: str | None
    user: User
    expires: float


def _flow_body(flow: DeviceFlow | AuthCode) -> str:
    body = {k: v for k, v in vars(flow).items() if k != "user"}
    body["user"] = flow.user.object_id if flow.user is not None else None
    return json.dumps(body)


class PendingSignIns:
    """Device flows by device code and user code, and authorization codes, in the ``sign_ins`` table of
    ``directory``'s database (so a flow started on one process or replica completes on any), each bounded in
    number and dropped when it expires or is used. A code is used once: its row is deleted by the one redemption
    that finds it. Database errors propagate (the token endpoint answers them with its 503)."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.engine = directory.engine

    def _expire(self, conn: sa.Connection, now: float) -> None:
        conn.execute(sa.delete(store.sign_ins).where(store.sign_ins.c.expires <= now))

    def _count(self, conn: sa.Connection, prefix: str) -> int:
        key = store.sign_ins.c.key
        return int(conn.execute(sa.select(sa.func.count()).where(key >= prefix, key < prefix[:-1] + ";")).scalar_one())

    def _user(self, object_id: str | None) -> User | None:
        if object_id is None:
            return None
        try:
            return self.directory.user(object_id)
        except NotFound:
            return None

    def _device_flow(self, row: Any) -> DeviceFlow:
        body = json.loads(row.body)
        body["user"] = self._user(body.get("user"))
        return DeviceFlow(**body)

    def _signed_in(self, object_id: str) -> User:
        """The user who signed in for a flow or a code, as the directory has them now: :class:`OAuthError` if they
        were deleted (AADSTS50034) or disabled (AADSTS50057) since."""
        user = self._user(object_id)
        if user is None:
            raise OAuthError("invalid_grant", "The user account does not exist in the directory: it was deleted "
                             "after it signed in.", 50034)
        if not user.account_enabled:
            raise OAuthError("invalid_grant", "The user account is disabled.", 50057)
        return user

    def start_device_flow(self, client_id: str, name: str, scope: str, tenant_id: str | None) -> DeviceFlow:
        now = time.time()
        flow = DeviceFlow(secrets.token_urlsafe(48), "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9)),
                          client_id, name, scope, tenant_id, now + DEVICE_FLOW_LIFETIME_S)
        with self.engine.begin() as conn:
            self._expire(conn, now)
            if self._count(conn, "device:") >= MAX_PENDING:
                raise OAuthError("temporarily_unavailable", "Too many device code sign-ins are pending; try again "
                                 "in a few minutes.", 90033, status=503)
            conn.execute(sa.insert(store.sign_ins).values(key=f"device:{flow.device_code}", user_code=flow.user_code,
                                                          body=_flow_body(flow), expires=flow.expires))
        return flow

    def by_user_code(self, code: str) -> DeviceFlow | None:
        user_code = re.sub(r"[\s-]", "", code).upper()[:16]
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(store.sign_ins).where(store.sign_ins.c.user_code == user_code,
                                                               store.sign_ins.c.expires > time.time())).first()
        return self._device_flow(row) if row is not None else None

    def approve(self, flow: DeviceFlow, user: User) -> None:
        """``user`` signed in for ``flow`` (on the verification page): its next poll gets the tokens."""
        flow.user = user
        with self.engine.begin() as conn:
            conn.execute(sa.update(store.sign_ins).where(store.sign_ins.c.key == f"device:{flow.device_code}")
                         .values(body=_flow_body(flow)))

    def redeem_device_code(self, device_code: str, client_id: str) -> DeviceFlow:
        """The approved flow of ``device_code`` (its ``user`` set), deleted; :class:`OAuthError` while it is pending,
        for a code that is unknown, expired, already redeemed or of another client, and (the flow deleted all the
        same) when the user who approved it has been deleted or disabled since."""
        key = f"device:{device_code}"[:100]
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(store.sign_ins).where(store.sign_ins.c.key == key,
                                                               store.sign_ins.c.expires > time.time())).first()
            body = json.loads(row.body) if row is not None else None
            if body is None or body["client_id"] != client_id.lower():
                raise OAuthError("expired_token", "The device code is unknown or has expired; start the sign-in "
                                 "again.", 70019)
            if body.get("user") is None:
                raise OAuthError("authorization_pending", "OAuth 2.0 device flow error. Authorization is pending. "
                                 "Continue polling.", 70016)
            if conn.execute(sa.delete(store.sign_ins).where(store.sign_ins.c.key == key)).rowcount != 1:
                raise OAuthError("expired_token", "The device code is unknown or has expired; start the sign-in "
                                 "again.", 70019)  # another poll redeemed it at the same moment
        return DeviceFlow(**{**body, "user": self._signed_in(body["user"])})

    def issue_code(self, code: AuthCode) -> str:
        now = time.time()
        value = secrets.token_urlsafe(48)
        with self.engine.begin() as conn:
            self._expire(conn, now)
            if self._count(conn, "code:") >= MAX_PENDING:  # the oldest goes
                oldest = conn.execute(sa.select(store.sign_ins.c.key).where(store.sign_ins.c.key.startswith("code:"))
                                      .order_by(store.sign_ins.c.expires).limit(1)).scalar()
                conn.execute(sa.delete(store.sign_ins).where(store.sign_ins.c.key == oldest))
            conn.execute(sa.insert(store.sign_ins).values(key=f"code:{value}", body=_flow_body(code),
                                                          expires=code.expires))
        return value

    def redeem_code(self, value: str, client_id: str, redirect_uri: str, verifier: str) -> AuthCode:
        """The authorization code ``value``, deleted whatever the outcome (a code is tried once); :class:`OAuthError`
        for a code unknown, expired, already redeemed, of another client or redirect URI, or whose PKCE challenge
        ``verifier`` does not answer, and when its user has been deleted or disabled since signing in."""
        key = f"code:{value}"[:100]
        with self.engine.begin() as conn:
            row = conn.execute(sa.delete(store.sign_ins).where(store.sign_ins.c.key == key,
                                                               store.sign_ins.c.expires > time.time())
                               .returning(store.sign_ins.c.body)).first()
        body = json.loads(row.body) if row is not None else None
        if body is None or body["client_id"] != client_id.lower() or body["redirect_uri"] != redirect_uri:
            raise OAuthError("invalid_grant", "The provided authorization code is invalid, expired or already "
                             "redeemed, or was issued to another client or redirect URI.", 70008)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, body["code_challenge"]):
            raise OAuthError("invalid_grant", "The code_verifier does not match the code_challenge supplied in the "
                             "authorization request.", 501481)
        return AuthCode(**{**body, "user": self._signed_in(body["user"])})


PENDING = web.AppKey("identity.pending_sign_ins", PendingSignIns)


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The request's form; ``invalid_request`` (AADSTS9002313) if it cannot be read (not UTF-8, too large)."""
    try:
        return await inbound.read_form(request)
    except MalformedRequest as exc:
        raise OAuthError("invalid_request", f"Invalid request. Request is malformed or invalid: {exc}.", 9002313,
                         status=exc.status) from None


def trouble_page(exc: OAuthError) -> web.Response:
    """The page a browser gets for a sign-in request that cannot go on."""
    return page("Sign in", "<h1>Sorry, but we're having trouble signing you in.</h1><p class=error id=error>"
                f"AADSTS{exc.aadsts}: {html.escape(exc.message)}</p>", status=exc.status)


def _form_text(form: Any, name: str) -> str:
    value = form.get(name)
    if not value or not isinstance(value, str):
        raise OAuthError("invalid_request", f"The request body must contain the following parameter: '{name}'.",
                         900144)
    return value


async def user_grant(request: web.Request, entra: EntraServices, tenant_id: str | None, grant: str, form: Any,
                     *, v1: bool) -> dict[str, Any]:
    """A user grant on a token endpoint; ``tenant_id`` is ``None`` on ``organizations``/``common``. The client is
    checked (:func:`client_name`) at every grant, not only when the person signed in: a refresh token, a device flow
    or a code of an application deleted since, or no longer a public client, gets its :class:`OAuthError`
    (AADSTS700016), as in Entra; a flow or code is used up all the same."""
    pending = request.app[PENDING]
    client_id = _form_text(form, "client_id").lower()
    scope = str(form.get("scope") or "")
    resource = str(form.get("resource") or "") if v1 else None
    if v1 and not resource:
        raise OAuthError("invalid_request", "The request body must contain the following parameter: 'resource'.",
                         900144)
    if grant == "password":
        await client_name(entra, client_id, tenant_id)
        user = await authenticate_user(entra, _form_text(form, "username"), _form_text(form, "password"), tenant_id,
                                       request.remote)
        return await user_tokens(entra, user, client_id, scope, v1_resource=resource)
    if grant == "refresh_token":
        token = _form_text(form, "refresh_token")
        found = await entra.sql.run(entra.directory.redeem_refresh_token, token, client_id)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise OAuthError("invalid_grant", "The refresh token is not valid: it has expired, was revoked (new "
                             "password, disabled account), or belongs to another client or tenant.", 700082)
        await client_name(entra, client_id, tenant_id)
        return await user_tokens(entra, found, client_id, scope, refresh_token=token, v1_resource=resource)
    if grant == DEVICE_CODE_GRANT:
        flow = await entra.sql.run(pending.redeem_device_code, _form_text(form, "device_code"), client_id)
        assert flow.user is not None
        await client_name(entra, client_id, tenant_id)
        # msal's polls name no scope: the tokens are for the scope the flow was started with, as Entra's are.
        return await user_tokens(entra, flow.user, client_id, scope or flow.scope, v1_resource=resource)
    assert grant == "authorization_code"
    code = await entra.sql.run(pending.redeem_code, _form_text(form, "code"), client_id,
                               _form_text(form, "redirect_uri"), _form_text(form, "code_verifier"))
    if tenant_id is not None and code.user.tenant_id != tenant_id:
        raise OAuthError("invalid_grant", "The authorization code was issued in another tenant.", 70008)
    await client_name(entra, client_id, tenant_id)
    return await user_tokens(entra, code.user, client_id, scope or code.scope, nonce=code.nonce, v1_resource=resource)


async def device_code(request: web.Request, entra: EntraServices, tenant_id: str | None) -> web.Response:
    """``POST /{tenant}/oauth2/v2.0/devicecode``: start a device flow for a public client."""
    form = await read_form(request)
    client_id = _form_text(form, "client_id").lower()
    name = await client_name(entra, client_id, tenant_id)
    scope = str(form.get("scope") or form.get("resource") or "")
    user_resource(scope)
    flow = await entra.sql.run(request.app[PENDING].start_device_flow, client_id, name, scope, tenant_id)
    uri = f"https://{request.host}/devicelogin"
    return web.json_response({
        "user_code": flow.user_code, "device_code": flow.device_code, "verification_uri": uri,
        "expires_in": DEVICE_FLOW_LIFETIME_S, "interval": DEVICE_POLL_INTERVAL_S,
        "message": f"To sign in, use a web browser to open the page {uri} and enter the code {flow.user_code} to "
                   "authenticate.",
    })


async def user_realm(request: web.Request) -> web.Response:
    """msal asks whether a user name is federated before the password grant: every account here is managed (the
    same answer for every name, so it tells nothing about who exists)."""
    name = request.match_info["username"]
    domain = name.rpartition("@")[2][:255]
    return web.json_response({"ver": "1.0", "account_type": "Managed", "domain_name": domain,
                              "cloud_instance_name": "microsoftonline.com",
                              "cloud_audience_urn": "urn:federation:MicrosoftOnline"})


# -- pages ------------------------------------------------------------------------------------------------------

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http://localhost:* "
                               "http://127.0.0.1:* http://[::1]:*; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = """
body{font-family:"Segoe UI",system-ui,sans-serif;background:#f2f2f2;margin:0}
main{background:#fff;max-width:440px;margin:8vh auto;padding:44px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:1.5rem;font-weight:600;margin:.5rem 0 1rem}p{font-size:.95rem;line-height:1.4}
.brand{color:#0067b8;font-weight:600;letter-spacing:.02em}
label{display:block;font-size:.85rem;margin-top:1rem}
input[type=text],input[type=email],input[type=password]{width:100%;box-sizing:border-box;border:0;
border-bottom:1px solid #666;padding:6px 0;font-size:1rem}
button{margin-top:1.5rem;background:#0067b8;color:#fff;border:0;padding:8px 32px;font-size:1rem;cursor:pointer}
.error{color:#e81123;font-size:.9rem}.muted{color:#666;font-size:.85rem}
"""


def page(title: str, body: str, status: int = 200, *, script: str = "") -> web.Response:
    """A page; ``script`` (trusted text, never built from a request) runs under a one-time CSP nonce."""
    headers = dict(_PAGE_HEADERS)
    tail = ""
    if script:
        nonce = secrets.token_urlsafe(16)
        headers["Content-Security-Policy"] += f"; script-src 'nonce-{nonce}'"
        tail = f"<script nonce='{nonce}'>{script}</script>"
    text = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title><style>{_STYLE}"
            f"</style></head><body><main><div class=brand>acrlocal</div>{body}</main>{tail}</body></html>")
    return web.Response(text=text, content_type="text/html", status=status, headers=headers)


def _credentials_form(action: str, *, username: str = "", error: str = "", hidden: dict[str, str] | None = None,
                      button: str = "Sign in") -> str:
    fields = "".join(f"<input type=hidden name='{html.escape(k)}' value='{html.escape(v)}'>"
                     for k, v in (hidden or {}).items())
    problem = f"<p class=error id=error role=alert>{html.escape(error)}</p>" if error else ""
    return (f"<form method=post action='{html.escape(action)}' autocomplete=off>{fields}{problem}"
            f"<label for=username>Email, phone, or Skype</label>"
            f"<input type=email id=username name=username required value='{html.escape(username)}' autofocus>"
            f"<label for=password>Password</label>"
            f"<input type=password id=password name=password required>"
            f"<button type=submit id=submit>{html.escape(button)}</button></form>")


def _loopback_redirect(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1") and not parts.fragment


async def authorize(request: web.Request, entra: EntraServices, tenant_id: str | None) -> web.StreamResponse:
    """``/{tenant}/oauth2/v2.0/authorize``: GET shows the sign-in page, POST checks the credentials and redirects
    to the client's loopback ``redirect_uri`` with a code. Requests that cannot be answered by a redirect (unknown
    client, a redirect URI that is not loopback, no PKCE) get an error page."""
    q = request.query
    client_id = q.get("client_id", "").lower()
    redirect_uri = q.get("redirect_uri", "")
    try:
        name = await client_name(entra, client_id, tenant_id) if client_id else None
    except OAuthError as exc:
        return trouble_page(exc)
    problem = None
    if name is None:
        problem = "AADSTS900144: The request must contain the parameter 'client_id'."
    elif not _loopback_redirect(redirect_uri):
        problem = ("AADSTS50011: The redirect URI specified in the request does not match the redirect URIs "
                   "configured for the application: only http://localhost (any port) is accepted.")
    elif q.get("response_type") != "code":
        problem = "AADSTS70005: response_type must be 'code'."
    elif not q.get("code_challenge") or q.get("code_challenge_method", "plain") != "S256":
        problem = "AADSTS9002325: Proof Key for Code Exchange (S256) is required for this client."
    if problem is not None or name is None:
        return page("Sign in", f"<h1>Sorry, but we're having trouble signing you in.</h1><p class=error id=error>"
                    f"{html.escape(problem or '')}</p>", status=400)
    scope = q.get("scope", "")
    try:
        user_resource(scope)
    except OAuthError as exc:
        return page("Sign in", f"<h1>Sorry, but we're having trouble signing you in.</h1><p class=error id=error>"
                    f"AADSTS{exc.aadsts}: {html.escape(exc.message)}</p>", status=400)
    intro = f"<h1>Sign in</h1><p class=muted>to continue to {html.escape(name)}</p>"
    if request.method == "GET":
        return page("Sign in to your account", intro + _credentials_form(str(request.rel_url),
                                                                          username=q.get("login_hint", "")))
    form = await read_form(request)
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    try:
        user = await authenticate_user(entra, username, password, tenant_id, request.remote)
    except OAuthError as exc:
        return page("Sign in to your account", intro + _credentials_form(
            str(request.rel_url), username=username, error=_page_error(exc)), status=200)
    code = await entra.sql.run(request.app[PENDING].issue_code, AuthCode(
        client_id, redirect_uri, scope, q["code_challenge"], q.get("nonce"), user, time.time() + AUTH_CODE_LIFETIME_S))
    params = {"code": code, "client_info": _b64url_json({"uid": user.object_id, "utid": user.tenant_id})}
    if "state" in q:
        params["state"] = q["state"]
    if q.get("response_mode") == "form_post":  # msal's loopback listener takes the answer as a POSTed form
        fields = "".join(f"<input type=hidden name='{html.escape(k)}' value='{html.escape(v)}'>"
                         for k, v in params.items())
        return page("Signing in", f"<h1>Signing you in</h1><form method=post action='{html.escape(redirect_uri)}'>"
                    f"{fields}<p class=muted>Returning to {html.escape(name)}.</p><button type=submit id=continue>"
                    "Continue</button></form>", script="document.forms[0].submit()")
    separator = "&" if urlsplit(redirect_uri).query else "?"
    raise web.HTTPFound(redirect_uri + separator + urlencode(params), headers=_PAGE_HEADERS)


def _page_error(exc: OAuthError) -> str:
    if exc.aadsts == 50126:
        return "Your account or password is incorrect."
    if exc.aadsts == 50053:
        return f"Your account is temporarily locked to prevent unauthorized use. AADSTS50053: {exc.message}"
    return f"AADSTS{exc.aadsts}: {exc.message}"


async def device_login(request: web.Request, entra: EntraServices) -> web.StreamResponse:
    """``/devicelogin``: a person enters the code a device showed, signs in, and the device's flow is approved."""
    heading = "<h1>Enter code</h1><p>Enter the code displayed on your app or device.</p>"
    code_form = ("<form method=post action=/devicelogin autocomplete=off>{error}<label for=code>Code</label>"
                 "<input type=text id=code name=code required autofocus value='{value}'>"
                 "<button type=submit id=next>Next</button></form>")
    if request.method == "GET":
        return page("Enter code", heading + code_form.format(error="", value=""))
    form = await read_form(request)
    entered = str(form.get("code") or "")[:40]
    flow = await entra.sql.run(request.app[PENDING].by_user_code, entered)
    if flow is None:
        error = "<p class=error id=error role=alert>That code didn't work. Check the code and try again.</p>"
        return page("Enter code", heading + code_form.format(error=error, value=html.escape(entered)))
    intro = (f"<h1>Sign in</h1><p id=question>Are you trying to sign in to {html.escape(flow.client_name)}?</p>"
             "<p class=muted>Only continue if you downloaded the app from a store or website that you trust.</p>")
    if "username" not in form:
        return page("Sign in to your account", intro + _credentials_form(
            "/devicelogin", hidden={"code": flow.user_code}, button="Continue"))
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    try:
        user = await authenticate_user(entra, username, password, flow.tenant_id, request.remote)
    except OAuthError as exc:
        return page("Sign in to your account", intro + _credentials_form(
            "/devicelogin", username=username, error=_page_error(exc), hidden={"code": flow.user_code},
            button="Continue"))
    await entra.sql.run(request.app[PENDING].approve, flow, user)
    return page("Signed in", f"<h1 id=done>You have signed in</h1><p>You have signed in to the "
                f"{html.escape(flow.client_name)} application on your device as "
                f"{html.escape(user.user_principal_name)}. You may now close this window.</p>")
