"""Where the CLI's tokens come from, as az gets them.

- :class:`ClientSecretCredential`: the Entra v2 token endpoint, ``client_credentials`` with a client secret and
  ``scope=<resource>/.default`` (az's ``resource_to_scopes``: ``https://management.core.windows.net/`` becomes
  ``https://management.core.windows.net//.default``). Tokens are cached in the profile.
- :class:`ManagedIdentityCredential`: the App Service endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``) when
  both are set, else IMDS at ``AZURE_POD_IDENTITY_AUTHORITY_HOST``, else IMDS at ``169.254.169.254``, msal's
  order. Like az, no cache: every command asks the endpoint again. The real address is used only where it is this
  machine's own (an acrlocal VM's network namespace, which holds nothing but ``lo`` with ``169.254.169.254`` on
  it); anywhere else no request is sent and the error says so.

A refused request is :class:`~acrlocal.cli.errors.AuthenticationFailed` carrying the endpoint's own description;
secrets and tokens never appear in messages or debug output.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

from acrlocal.cli.client import AccessToken, Http
from acrlocal.cli.errors import AuthenticationFailed, CLIError
from acrlocal.cli.profile import Profile
from acrlocal.imds_guard import imds_is_local
from acrlocal.publiccloud import IMDS_ADDRESS

Selector = tuple[Literal["client_id", "object_id", "resource_id"], str]
IMDS_SELECTOR_PARAM = {"client_id": "client_id", "object_id": "object_id", "resource_id": "msi_res_id"}
APP_SERVICE_SELECTOR_PARAM = {"client_id": "client_id", "object_id": "object_id", "resource_id": "mi_res_id"}


def _resource_to_scope(resource: str) -> str:
    return resource + "/.default"


def _json(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class ClientSecretCredential:
    def __init__(self, http: Http, authority: str, tenant: str, client_id: str, secret: str,
                 profile: Profile | None = None) -> None:
        self.http = http
        self.authority = authority.rstrip("/")
        self.tenant = tenant
        self.client_id = client_id
        self.secret = secret
        self.profile = profile

    def get_token(self, resource: str, *, fresh: bool = False) -> AccessToken:
        key = Profile.token_key(self.authority, self.tenant, self.client_id, resource)
        if self.profile is not None and not fresh:
            cached = self.profile.cached_token(key)
            if cached:
                return AccessToken(*cached)
        response = self.http.request(
            "POST", f"{self.authority}/{self.tenant}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.secret,
                  "scope": _resource_to_scope(resource)},
            headers={"Accept": "application/json"},
        )
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            description = body.get("error_description") or response.text[:300]
            raise AuthenticationFailed(str(description))
        token = AccessToken(str(body["access_token"]), int(time.time()) + int(body.get("expires_in", 3599)))
        if self.profile is not None:
            self.profile.cache_token(key, token.token, token.expires_on)
        return token


class ManagedIdentityCredential:
    def __init__(self, http: Http, selector: Selector | None = None) -> None:
        self.http = http
        self.selector = selector

    @staticmethod
    def available() -> bool:
        return bool((os.environ.get("IDENTITY_ENDPOINT") and os.environ.get("IDENTITY_HEADER"))
                    or os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or imds_is_local())

    def get_token(self, resource: str, *, fresh: bool = False) -> AccessToken:
        endpoint, header = os.environ.get("IDENTITY_ENDPOINT"), os.environ.get("IDENTITY_HEADER")
        if endpoint and header:
            if IMDS_ADDRESS in endpoint and not imds_is_local():
                raise CLIError(f"IDENTITY_ENDPOINT={endpoint[:200]!r}: {IMDS_ADDRESS} is not this machine's own "
                               "here, and acrlocal sends nothing off this machine; run this inside an acrlocal VM.")
            return self._app_service(endpoint, header, resource)
        host = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        if host and IMDS_ADDRESS in host and not imds_is_local():
            raise CLIError(f"AZURE_POD_IDENTITY_AUTHORITY_HOST={host!r}: {IMDS_ADDRESS} is not this machine's own "
                           "here, and acrlocal sends nothing off this machine; run this inside an acrlocal VM.")
        if not host:
            if not imds_is_local():
                raise CLIError("No managed identity endpoint: IMDS (169.254.169.254) answers inside an acrlocal VM "
                               "(`acrlocal ssh vm`); elsewhere set AZURE_POD_IDENTITY_AUTHORITY_HOST, or "
                               "IDENTITY_ENDPOINT and IDENTITY_HEADER.")
            host = f"http://{IMDS_ADDRESS}"
        return self._imds(host.strip("/"), resource)

    def _imds(self, host: str, resource: str) -> AccessToken:
        params = {"api-version": "2018-02-01", "resource": resource}
        if self.selector:
            params[IMDS_SELECTOR_PARAM[self.selector[0]]] = self.selector[1]
        response = self.http.request("GET", f"{host}/metadata/identity/oauth2/token", params=params,
                                     headers={"Metadata": "true"})
        body = _json(response)
        if "access_token" not in body:
            raise AuthenticationFailed(self._describe(response, body))
        expires_in = body.get("expires_in")
        expires_on = int(time.time()) + int(expires_in) if expires_in is not None else int(body["expires_on"])
        return AccessToken(str(body["access_token"]), expires_on)

    def _app_service(self, endpoint: str, header: str, resource: str) -> AccessToken:
        params = {"api-version": "2019-08-01", "resource": resource}
        if self.selector:
            params[APP_SERVICE_SELECTOR_PARAM[self.selector[0]]] = self.selector[1]
        response = self.http.request("GET", endpoint, params=params,
                                     headers={"X-IDENTITY-HEADER": header, "Metadata": "true"})
        body = _json(response)
        if "access_token" not in body:
            raise AuthenticationFailed(self._describe(response, body))
        try:
            expires_on = int(body["expires_on"])
        except (KeyError, TypeError, ValueError):
            raise AuthenticationFailed(f"The managed identity endpoint answered a token whose expires_on "
                                       f"{str(body.get('expires_on'))[:40]!r} is not seconds since the epoch (App "
                                       "Service's 2019-08-01 format).") from None
        return AccessToken(str(body["access_token"]), expires_on)

    @staticmethod
    def _describe(response: Any, body: dict[str, Any]) -> str:
        if body.get("error_description") or body.get("message"):
            what = body.get("error_description") or body.get("message")
            code = body.get("error") or body.get("statusCode") or response.status_code
            return f"Failed to get a token for the managed identity: ({code}) {what}"
        return f"Failed to get a token for the managed identity: HTTP {response.status_code}"
