"""``docker-credential-acrlocal``: a Docker credential helper that signs in to acrlocal registries as the VM's
managed identity, on demand, with no ``acr login`` first.

Clients run it for the registries their configuration names in ``credHelpers`` (``~/.docker/config.json`` for
docker, and skopeo, podman and buildah read it too), e.g. ``{"credHelpers": {"myregistry.azurecr.io":
"acrlocal"}}``. The protocol (docker-credential-helpers):

- ``get``: the server URL on stdin; prints ``{"ServerURL", "Username", "Secret"}``. The secret is an ACR refresh
  token for the VM's identity: an Entra token for ``https://containerregistry.azure.net`` from the VM's IMDS,
  exchanged at the registry's ``/oauth2/exchange`` (realm and service from the registry's
  challenge on ``/v2/``); the user is ``00000000-0000-0000-0000-000000000000``, as ``az acr login`` hands it to
  docker. A VM with several identities picks one with ``AZURE_CLIENT_ID`` (a client id). A server that is not an
  acrlocal registry (no Bearer challenge), or no identity here, is "credentials not found in native keychain"
  (exit 1), which clients take as "no credentials": they go on anonymously.
- ``store``: refused (exit 1): credentials come from the identity, there is nothing to store.
- ``erase``: nothing is stored, so nothing to erase (exit 0).
- ``list``: ``{}``.
- ``version``.

Other failures (the registry or the identity endpoint unreachable, a refused exchange) print one line on stdout
naming the server and the cause, and exit 1; tokens never appear in messages.
"""

from __future__ import annotations

import json
import os
import sys
from urllib.parse import urlparse

from acrlocal import __version__
from acrlocal.cli import acr_auth
from acrlocal.cli.client import AccessToken, Http
from acrlocal.cli.credentials import ManagedIdentityCredential, Selector
from acrlocal.cli.endpoints import ACR_RESOURCE, ENV_CA_BUNDLE
from acrlocal.cli.errors import CLIError
from acrlocal.cli.session import tenant_of

NOT_FOUND = "credentials not found in native keychain"
USAGE = "Usage: docker-credential-acrlocal <store|get|erase|list|version>"


class NotFoundError(CLIError, LookupError):
    """The protocol's "no credentials for this server"."""


class _FixedToken:
    """The one Entra token already obtained, for :func:`acr_auth.refresh_token`."""

    def __init__(self, token: AccessToken) -> None:
        self.token = token

    def get_token(self, resource: str, *, fresh: bool = False) -> AccessToken:
        return self.token


def server_of(text: str) -> str:
    """``host[:port]`` of what a client sends: ``myreg.localhost:8443``, ``https://myreg.localhost:8443/v1/``."""
    text = text.strip()
    if not text:
        raise CLIError("no server URL on standard input")
    parsed = urlparse(text if "://" in text else "//" + text)
    if not parsed.hostname:
        raise CLIError(f"{text[:200]!r} is not a registry server URL (host[:port])")
    host = parsed.hostname.lower()
    return f"{host}:{parsed.port}" if parsed.port else host


def credentials(server_url: str) -> dict[str, str]:
    """``{"ServerURL", "Username", "Secret"}`` for the VM's identity at the registry ``server_url``."""
    login_server = server_of(server_url)
    if not ManagedIdentityCredential.available():
        raise NotFoundError(NOT_FOUND)
    verify: str | bool = os.environ.get(ENV_CA_BUNDLE) or os.environ.get("REQUESTS_CA_BUNDLE") or True
    http = Http(verify)
    client_id = os.environ.get("AZURE_CLIENT_ID")
    selector: Selector | None = ("client_id", client_id) if client_id else None
    try:
        params = acr_auth.challenge(http, login_server)
    except CLIError:
        raise NotFoundError(NOT_FOUND) from None  # no Bearer challenge: not an acrlocal registry
    try:
        aad = ManagedIdentityCredential(http, selector).get_token(ACR_RESOURCE)
    except CLIError as exc:
        text = str(exc).lower()
        if "identity not found" in text or "no managed identity found" in text:  # IMDS, App Service
            raise NotFoundError(NOT_FOUND) from None
        raise
    refresh, _ = acr_auth.refresh_token(http, _FixedToken(aad), tenant_of(aad.token), login_server, params)
    return {"ServerURL": server_url.strip(), "Username": acr_auth.EMPTY_GUID, "Secret": refresh}


def _line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(USAGE)
        return 1
    action = args[0]
    try:
        if action == "get":
            print(json.dumps(credentials(sys.stdin.read())))
        elif action == "store":
            sys.stdin.read()
            raise CLIError("docker-credential-acrlocal does not store credentials: they come from this VM's "
                           "managed identity when a client asks for them")
        elif action == "erase":
            sys.stdin.read()
        elif action == "list":
            print("{}")
        elif action == "version":
            print(f"docker-credential-acrlocal (acrlocal) {__version__}")
        else:
            print(USAGE)
            return 1
    except NotFoundError:
        print(NOT_FOUND)
        return 1
    except CLIError as exc:
        print(f"docker-credential-acrlocal: {_line(str(exc))}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
