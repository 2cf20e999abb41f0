"""Registry tokens the way az gets them (``az acr login`` and the ``az acr repository`` commands).

1. ``GET https://<login server>/v2/`` must answer 401 with ``WWW-Authenticate: Bearer realm=..,service=..``;
2. an Entra token for ``https://containerregistry.azure.net`` goes to ``POST <realm origin>/oauth2/exchange``
   (``grant_type=access_token``, ``service`` from the challenge, ``tenant``, ``access_token``) for an ACR refresh
   token;
3. for the ``/acr/v1`` API, ``POST <realm origin>/oauth2/token`` (``grant_type=refresh_token``,
   ``service=<login server>``, ``scope``) gives an access token.

Refusals are az's ``An error occurred: CONNECTIVITY_..._ERROR`` messages with the status code.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse, urlunparse

from acrlocal.cli.client import Http, TokenSource
from acrlocal.cli.endpoints import ACR_RESOURCE
from acrlocal.cli.errors import CLIError

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


def az_error(title: str, message: str) -> CLIError:
    return CLIError(f"{dt.datetime.now(dt.UTC).replace(tzinfo=None)} An error occurred: {title}\n{message}")


def challenge(http: Http, login_server: str) -> dict[str, str]:
    """The ``realm`` and ``service`` of the registry's challenge on ``/v2/``."""
    response = http.request("GET", f"https://{login_server.rstrip('/')}/v2/")
    header = response.headers.get("WWW-Authenticate", "")
    if response.status_code != 401 or not header:
        raise az_error("CONNECTIVITY_CHALLENGE_ERROR", f"Registry '{login_server}' did not issue a challenge.")
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    if scheme.lower() == "bearer":
        for part in rest.split(","):
            key, _, value = part.strip().partition("=")
            params[key] = value.strip('"')
    if "realm" not in params or "service" not in params:
        raise az_error("CONNECTIVITY_WWW_AUTHENTICATE_ERROR",
                       f"Registry '{login_server}' issued a challenge without realm or service: {header!r}.")
    return params


def _auth_host(realm: str, path: str) -> str:
    url = urlparse(realm)
    return urlunparse((url.scheme, url.netloc, path, "", "", ""))


def refresh_token(http: Http, tokens: TokenSource, tenant: str, login_server: str,
                  params: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """An ACR refresh token for the signed-in identity, and the challenge it was obtained for (``params``: one
    already read from the registry)."""
    params = params or challenge(http, login_server)
    aad = tokens.get_token(ACR_RESOURCE)
    response = http.request("POST", _auth_host(params["realm"], "/oauth2/exchange"),
                            data={"grant_type": "access_token", "service": params["service"], "tenant": tenant,
                                  "access_token": aad.token})
    if response.status_code == 429:
        raise az_error("CONNECTIVITY_TOOMANYREQUESTS_ERROR",
                       f"Too many requests to registry '{login_server}'. Try again later.")
    if response.status_code != 200:
        raise az_error("CONNECTIVITY_REFRESH_TOKEN_ERROR",
                       f"Access to registry '{login_server}' was denied. Response code: {response.status_code}. "
                       "Please try running 'acrlocal login' again to refresh permissions.")
    try:
        return str(response.json()["refresh_token"]), params
    except (ValueError, KeyError, TypeError):
        raise az_error("CONNECTIVITY_REFRESH_TOKEN_ERROR",
                       f"Registry '{login_server}' answered the exchange without a refresh_token.") from None


def access_token(http: Http, tokens: TokenSource, tenant: str, login_server: str, scope: str) -> str:
    """An ACR access token for ``scope`` (``registry:catalog:*``, ``repository:<name>:<actions>``)."""
    refresh, params = refresh_token(http, tokens, tenant, login_server)
    response = http.request("POST", _auth_host(params["realm"], "/oauth2/token"),
                            data={"grant_type": "refresh_token", "service": login_server, "scope": scope,
                                  "refresh_token": refresh})
    if response.status_code != 200:
        raise az_error("CONNECTIVITY_ACCESS_TOKEN_ERROR",
                       f"Access to registry '{login_server}' was denied. Response code: {response.status_code}. "
                       "Please try running 'acrlocal login' again to refresh permissions.")
    try:
        return str(response.json()["access_token"])
    except (ValueError, KeyError, TypeError):
        raise az_error("CONNECTIVITY_ACCESS_TOKEN_ERROR",
                       f"Registry '{login_server}' answered without an access_token.") from None
