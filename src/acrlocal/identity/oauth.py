"""HTTP: the Entra endpoints on the shared port.

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``GET /{tenant}/discovery/v2.0/keys``
- ``POST /{tenant}/oauth2/v2.0/token`` (``scope=<resource>/.default``) and the v1 ``POST /{tenant}/oauth2/token``
  (``resource=<resource>``), grant ``client_credentials`` with a client secret, a certificate-signed client
  assertion, or a federated assertion (workload identity; see :mod:`.assertions`); and the grants of a person
  signing in (password, device code, authorization code with PKCE, refresh token), also on ``organizations`` and
  ``common``, with the sign-in pages (``/authorize``, ``/devicelogin``; see :mod:`.signin`).

Errors are :class:`~acrlocal.identity.errors.OAuthError`, answered in Entra's shape. Client secrets are never
logged or echoed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from typing import Any

from aiohttp import web

from acrlocal import publiccloud
from acrlocal.errors import NotFound
from acrlocal.identity.assertions import (
    JWT_BEARER,
    ReplayCache,
    is_certificate_assertion,
    verify_certificate_assertion,
    verify_federated_assertion,
)
from acrlocal.identity.directory import Principal
from acrlocal.identity.errors import OAuthError
from acrlocal.identity.services import ENTRA, EntraServices
from acrlocal.identity.signin import (
    PENDING,
    USER_GRANTS,
    PendingSignIns,
    authorize,
    device_code,
    device_login,
    locked_out,
    page,
    read_form,
    trouble_page,
    user_grant,
    user_realm,
)
from acrlocal.storage.sql import RETRY_AFTER_S, database_unavailable

log = logging.getLogger(__name__)

SP_TOKEN_LIFETIME_S = 3599
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
IGNORED_SCOPES = {"openid", "profile", "offline_access", "email"}
MULTI_TENANT_ALIASES = ("organizations", "common")
REPLAY = web.AppKey("identity.replay", ReplayCache)


def _entra(request: web.Request) -> EntraServices:
    return request.app[ENTRA]


def _oauth_error(err: OAuthError, request: web.Request) -> web.Response:
    corr = request.headers.get("client-request-id") or request.headers.get("x-ms-client-request-id")
    return web.json_response(err.body(corr), status=err.status)


async def _tenant_or_alias(entra: EntraServices, tenant: str) -> str | None:
    """A tenant id, or ``None`` for ``organizations``/``common`` (a person's own tenant answers)."""
    return None if tenant.lower() in MULTI_TENANT_ALIASES else await _tenant(entra, tenant)


async def _tenant(entra: EntraServices, tenant: str) -> str:
    if not GUID.match(tenant):
        raise OAuthError("invalid_request", f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                         "tenant ID and are signing into the correct cloud.", 90002)
    try:
        return (await entra.lookups.tenant(tenant)).id
    except NotFound:
        raise OAuthError("invalid_request", f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                         "tenant ID and are signing into the correct cloud.", 90002) from None


def _audience_from_scope(scope: str) -> str:
    """The resource a v2 ``scope`` names: ``https://x/.default`` → ``https://x`` (``https://x//.default`` →
    ``https://x/``). One resource only, as Entra requires for client credentials."""
    resources = [s for s in scope.split() if s and s not in IGNORED_SCOPES]
    if len(resources) != 1:
        raise OAuthError("invalid_scope", f"The provided value for scope {scope!r} is not valid. Client credential "
                         "flows must have a scope value with /.default suffixed to the resource identifier "
                         "(application ID URI).", 1002012)
    (value,) = resources
    if not value.endswith("/.default"):
        raise OAuthError("invalid_scope", f"The provided value for scope {value!r} is not valid. Client credential "
                         "flows must have a scope value with /.default suffixed to the resource identifier "
                         "(application ID URI).", 1002012)
    return value[: -len("/.default")]


def _required(form: Any, name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"The request body must contain the following parameter: '{name}'.",
                         900144)
    return str(value)


def _token_endpoints(entra: EntraServices, tenant_id: str, request: web.Request | None = None) -> list[str]:
    """The URLs a client assertion may name as ``aud``: this tenant's v2 and v1 token endpoints, under the
    authority and under the host the request actually came to."""
    bases = [entra.tokens.authority]
    if request is not None:
        bases.append(f"https://{request.host}")
    return [f"{base}/{tenant_id}/{path}" for base in bases for path in ("oauth2/v2.0/token", "oauth2/token")]


def _unknown_client(client_id: str, tenant_id: str) -> OAuthError:
    return OAuthError("unauthorized_client", f"Application with identifier '{client_id}' was not found in the "
                      f"directory '{tenant_id}'. This can happen if the application has not been installed by the "
                      "administrator of the tenant or consented to by any user in the tenant.", 700016)


async def _authenticate_client(entra: EntraServices, tenant_id: str, form: Any, *, resource: str,
                               audiences: list[str], replay: ReplayCache, caller: str | None) -> tuple[Principal, str]:
    """The principal a client-credentials request authenticates as, and Entra's ``appidacr`` for it.

    A client secret or a certificate assertion authenticates a service principal; a federated assertion
    authenticates a service principal or a user-assigned managed identity. Raises :class:`OAuthError` for an
    unknown client, a client of another tenant, an application without its service principal (never made, or
    deleted: AADSTS7000229) or with it disabled (AADSTS7000112), a bad secret or a bad assertion. Failed client
    secrets count towards ``entra.lockout`` for the client id and ``caller``; locked, a secret is refused unchecked
    (AADSTS50053).
    The assertions' checks, which read the directory, run through ``entra.sql``; the lockout stays on the loop."""
    client_id = _required(form, "client_id")
    client = await entra.lookups.client(client_id)
    if client is None or client.principal.tenant_id != tenant_id or \
            client.principal.kind not in ("ServicePrincipal", "ManagedIdentity"):
        raise _unknown_client(client_id, tenant_id)
    principal = client.principal
    if not client.service_principal:
        raise OAuthError("invalid_client", f"The client application {client_id} is missing service principal in the "
                         f"tenant {tenant_id}. Create it (POST /v1.0/servicePrincipals with its appId; az ad sp create "
                         "--id <appId>).", 7000229, status=401)
    if not client.enabled:
        raise OAuthError("unauthorized_client", f"Application '{client_id}'({principal.display_name}) is disabled.",
                         7000112)
    secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    if secret and assertion:
        raise OAuthError("invalid_request", "Only one client credential may be presented: 'client_secret' or "
                         "'client_assertion'.", 90014)
    if assertion:
        assertion_type = form.get("client_assertion_type")
        if assertion_type != JWT_BEARER:
            raise OAuthError("invalid_request", f"The client_assertion_type {assertion_type!r} is not supported; "
                             f"expected '{JWT_BEARER}'.", 90014)
        if is_certificate_assertion(str(assertion), principal.app_id):
            if principal.kind == "ManagedIdentity":
                raise _unknown_client(client_id, tenant_id)
            await entra.sql.run(verify_certificate_assertion, entra.directory, principal, str(assertion), audiences,
                                resource, replay)
            return principal, "2"
        if principal.kind == "ManagedIdentity" and principal.mi_kind != "user":
            raise _unknown_client(client_id, tenant_id)
        await entra.sql.run(verify_federated_assertion, entra.directory, entra.tokens, principal, str(assertion))
        return principal, "2"
    if principal.kind == "ManagedIdentity":
        raise _unknown_client(client_id, tenant_id)
    if secret:
        name = ("client", principal.app_id.lower())
        locked = entra.lockout.locked(caller, name)
        if locked is not None:
            log.warning("client secret refused unchecked for app %s from %s: %s locked for %d s", principal.app_id,
                        caller, locked.what, locked.retry_after)
            raise locked_out(locked)
        if not client.accepts(str(secret), time.time()):
            started = entra.lockout.failed(caller, name, tried=str(secret))
            log.warning("client secret login failed for app %s from %s: not a current secret%s", principal.app_id,
                        caller, f"; {started.what} locked for {started.retry_after} s" if started else "")
            raise OAuthError("invalid_client", "Invalid client secret provided. Ensure the secret being sent in the "
                             f"request is the client secret value, not the client secret ID, for a secret added to "
                             f"app '{client_id}'.", 7000215, status=401)
        entra.lockout.succeeded(name)
        return principal, "1"
    raise OAuthError("invalid_client", "The request body must contain the following parameter: 'client_assertion' "
                     "or 'client_secret'.", 7000218, status=401)


async def openid_configuration(request: web.Request) -> web.Response:
    """A tenant's discovery document; also for Entra's multi-tenant aliases ``organizations`` and ``common``, which
    msal discovers when az builds its public client (``az account clear``, ``az logout``): their issuer is the
    ``{tenantid}`` template, as Entra's. Tokens are only issued on a tenant's own endpoints."""
    entra = _entra(request)
    alias = request.match_info["tenant"].lower()
    try:
        tenant = alias if alias in MULTI_TENANT_ALIASES else await _tenant(entra, request.match_info["tenant"])
    except OAuthError as err:
        return _oauth_error(err, request)
    base = f"https://{request.host}"
    return web.json_response({
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": entra.tokens.issuer("{tenantid}" if tenant in MULTI_TENANT_ALIASES else tenant),
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid", "azp", "idtyp"],
        "tenant_region_scope": None,
        "cloud_instance_name": "acrlocal",
    })


async def instance_discovery(request: web.Request) -> web.Response:
    """msal's instance discovery (``/common/discovery/instance``), as Entra answers it: where the tenant's
    metadata is, and the names that are aliases of this authority."""
    host = request.host
    base = f"https://{host}"
    aliases = [host] + ([] if host != publiccloud.LOGIN_HOST else ["login.windows.net", "login.microsoft.com",
                                                                   "sts.windows.net"])
    return web.json_response({
        "tenant_discovery_endpoint": f"{base}/{{tenant}}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": aliases}],
    })


async def jwks(request: web.Request) -> web.Response:
    entra = _entra(request)
    try:
        tenant = await _tenant(entra, request.match_info["tenant"])
    except OAuthError as err:
        return _oauth_error(err, request)
    return web.json_response(await entra.sql.run(entra.keys.jwks, tenant))


async def token_v2(request: web.Request) -> web.Response:
    return await _token(request, v1=False)


async def token_v1(request: web.Request) -> web.Response:
    return await _token(request, v1=True)


async def _token(request: web.Request, *, v1: bool) -> web.Response:
    entra = _entra(request)
    try:
        maybe_tenant = await _tenant_or_alias(entra, request.match_info["tenant"])
        form = await read_form(request)
        grant = _required(form, "grant_type")
        if grant in USER_GRANTS:
            return web.json_response(await user_grant(request, entra, maybe_tenant, grant, form, v1=v1))
        if maybe_tenant is None:
            raise OAuthError("invalid_request", "Specified tenant identifier 'organizations' is neither a valid DNS "
                             "name, nor a valid external domain: client credentials need a tenant.", 90002)
        tenant = maybe_tenant
        if grant != "client_credentials":
            raise OAuthError("unsupported_grant_type", f"The grant type '{grant}' is not supported over the "
                             "/token endpoint.", 70003)
        audience = _required(form, "resource") if v1 else _audience_from_scope(_required(form, "scope"))
        principal, method = await _authenticate_client(entra, tenant, form, resource=audience,
                                                      audiences=_token_endpoints(entra, tenant, request),
                                                      replay=request.app[REPLAY], caller=request.remote)
    except OAuthError as err:
        return _oauth_error(err, request)
    # RS256 signing releases the GIL: in the executor it runs on another core while the loop serves.
    token = await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(entra.tokens.issue, principal, audience, SP_TOKEN_LIFETIME_S, auth_method=method))
    if v1:
        return web.json_response({
            "token_type": "Bearer", "expires_in": str(SP_TOKEN_LIFETIME_S), "ext_expires_in": str(SP_TOKEN_LIFETIME_S),
            "expires_on": str(token.expires_on), "not_before": str(token.not_before), "resource": audience,
            "access_token": token.token,
        })
    return web.json_response({"token_type": "Bearer", "expires_in": SP_TOKEN_LIFETIME_S,
                              "ext_expires_in": SP_TOKEN_LIFETIME_S, "access_token": token.token})


async def devicecode(request: web.Request) -> web.Response:
    entra = _entra(request)
    try:
        return await device_code(request, entra, await _tenant_or_alias(entra, request.match_info["tenant"]))
    except OAuthError as err:
        return _oauth_error(err, request)


async def authorize_page(request: web.Request) -> web.StreamResponse:
    entra = _entra(request)
    try:
        tenant = await _tenant_or_alias(entra, request.match_info["tenant"])
    except OAuthError as err:
        return _oauth_error(err, request)
    try:
        return await authorize(request, entra, tenant)
    except OAuthError as err:  # a form that cannot be read
        return trouble_page(err)


async def device_login_page(request: web.Request) -> web.StreamResponse:
    try:
        return await device_login(request, _entra(request))
    except OAuthError as err:  # a form that cannot be read
        return trouble_page(err)


async def logout_page(request: web.Request) -> web.StreamResponse:
    """The discovery document's ``end_session_endpoint``. acrlocal keeps no browser session (every sign-in asks for
    the password), so there is nothing to end: the answer is the signed-out page. It never redirects, not even to
    ``post_logout_redirect_uri``: Entra redirects only to a URI registered for the app, and a redirect chosen by the
    query would be an open redirect."""
    try:
        await _tenant_or_alias(_entra(request), request.match_info["tenant"])
    except OAuthError as err:
        return _oauth_error(err, request)
    return page("Signed out", "<h1 id=signed-out>You signed out of your account</h1><p class=muted>It's a good "
                "idea to close all browser windows.</p>")


@web.middleware
async def unavailable_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """While the database cannot be reached, the Entra endpoints answer as Entra does when it cannot serve:
    503 ``temporarily_unavailable`` (AADSTS90033, "a transient error") with ``Retry-After``. Other errors pass."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning("%s %s: the database is not reachable (%s)", request.method, request.path, type(exc).__name__)
        err = OAuthError("temporarily_unavailable", "A transient error has occurred. Please try again.", 90033,
                         status=503)
        answer = _oauth_error(err, request)
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer


def setup(app: web.Application, entra: EntraServices) -> None:
    """Add the Entra endpoints to ``app``, serving with ``entra``."""
    app[ENTRA] = entra
    app[REPLAY] = ReplayCache(entra.directory.engine)
    app[PENDING] = PendingSignIns(entra.directory)
    app.router.add_post("/{tenant}/oauth2/v2.0/devicecode", devicecode)
    app.router.add_post("/{tenant}/oauth2/devicecode", devicecode)
    app.router.add_route("GET", "/{tenant}/oauth2/v2.0/authorize", authorize_page)
    app.router.add_route("POST", "/{tenant}/oauth2/v2.0/authorize", authorize_page)
    app.router.add_route("GET", "/{tenant}/oauth2/v2.0/logout", logout_page)
    app.router.add_route("POST", "/{tenant}/oauth2/v2.0/logout", logout_page)
    app.router.add_route("GET", "/devicelogin", device_login_page)
    app.router.add_route("POST", "/devicelogin", device_login_page)
    app.router.add_get("/common/userrealm/{username}", user_realm)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/{tenant}/discovery/v2.0/keys", jwks)
    app.router.add_get("/{tenant}/discovery/keys", jwks)
    app.router.add_get("/common/discovery/instance", instance_discovery)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token_v2)
    app.router.add_post("/{tenant}/oauth2/token", token_v1)
