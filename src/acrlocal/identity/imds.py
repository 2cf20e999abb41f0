"""HTTP: each VM's Instance Metadata Service, at ``169.254.169.254:80`` inside the VM.

The server listens there on a socket made inside the VM's network namespace; the VM is found from the network
namespace of the connection, and its identities resolved, by the :class:`VirtualMachines` handed to
:func:`build_app` (the compute runtime, when ``server.py`` assembles the server). A connection from anywhere else
gets 404.

- ``GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R[&client_id|object_id|msi_res_id|
  mi_res_id=X]`` with ``Metadata: true``; errors are ``{"error", "error_description"}`` with status 400 (a missing
  ``Metadata`` header, an ``X-Forwarded-For`` header, an unknown identity, several user-assigned identities and no
  selector).
- ``GET /metadata/instance[/compute|/network[/...]]`` answers what the VM is; ``GET /metadata/versions``.

As on Azure, a VM has no App Service identity endpoint (``IDENTITY_ENDPOINT``): with both, clients would choose
App Service.

Tokens are 24-hour Entra tokens with ``aud`` = the resource exactly as asked and ``xms_mirid``; they are cached
per (identity, resource) the way IMDS does, and answered with a decreasing ``expires_in`` until a fresh one is due.
Requests past ``settings.imds_rate_limit`` per second per VM (bursts of five seconds' worth allowed) get 429 with
``Retry-After`` (never on a 200). Query parameters IMDS does not know (``resource_id`` on IMDS) are ignored, as
Azure's IMDS ignores them. Nothing here logs a token or the identity secret.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

from acrlocal.errors import ProtocolError
from acrlocal.identity.directory import Principal
from acrlocal.identity.tokens import AccessToken, TokenIssuer

MI_TOKEN_LIFETIME_S = 24 * 3600
# A cached token is handed out until it has less than this left; clients treat under 5 minutes as expired.
REFRESH_MARGIN_S = 15 * 60
TOKEN_CACHE_MAX = 10_000
IMDS_SELECTORS = ("client_id", "object_id", "msi_res_id", "mi_res_id")
FIRST_IDENTITY_API_VERSION = "2018-02-01"
INSTANCE_API_VERSIONS = (
    "2017-03-01", "2017-04-02", "2017-08-01", "2017-10-01", "2017-12-01", "2018-02-01", "2018-04-02", "2018-10-01",
    "2019-02-01", "2019-03-11", "2019-04-30", "2019-06-01", "2019-06-04", "2019-08-01", "2019-08-15", "2019-11-01",
    "2020-06-01", "2020-07-15", "2020-09-01", "2020-10-01", "2020-12-01", "2021-01-01", "2021-02-01", "2021-03-01",
    "2021-05-01", "2021-10-01", "2021-11-01", "2021-11-15", "2021-12-13", "2023-07-01",
)
NEWEST_VERSIONS = ["2023-07-01", "2021-12-13", "2021-11-15"]
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")


@dataclass(frozen=True)
class VMIdentities:
    """The managed identities a VM holds now. User-assigned identities whose principal is gone are left out."""

    system: Principal | None
    user: tuple[Principal, ...]

    def all(self) -> tuple[Principal, ...]:
        return ((self.system,) if self.system else ()) + self.user


class Instance(Protocol):
    """What IMDS tells about a VM (:class:`acrlocal.compute.vms.VirtualMachine` is one)."""

    @property
    def vm_id(self) -> str: ...
    @property
    def resource_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def resource_group(self) -> str: ...
    @property
    def subscription_id(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def profile(self) -> Mapping[str, Any]: ...


VM = TypeVar("VM", bound=Instance)


class VirtualMachines(Protocol[VM]):
    """The VMs IMDS serves: which one a request came from (through its network namespace), and what identities it
    holds now (read from the directory off the event loop). :class:`acrlocal.compute.runtime.ComputeRuntime` is
    one."""

    def vm_of_request(self, request: web.Request) -> VM | None: ...

    async def identities(self, vm: VM) -> VMIdentities: ...


class IdentityError(ProtocolError):
    """A token request IMDS refuses; ``status``, ``code`` (the OAuth ``error``) and ``message`` are rendered in
    IMDS's format. The messages are Azure's own texts, which clients show."""

    status = 400
    code = "invalid_request"


# -- token cache and throttle (pure) ---------------------------------------------------------------


class TokenCache:
    """Signed tokens per (object id, resource). ``enabled=False`` signs a new token for every request.

    Signing (RS256, about a third of a millisecond) runs in the default executor: the RSA work releases the GIL,
    so cache misses use every core while the event loop keeps answering."""

    def __init__(self, issuer: TokenIssuer, *, enabled: bool = True, max_entries: int = TOKEN_CACHE_MAX) -> None:
        self.issuer = issuer
        self.enabled = enabled
        self.max_entries = max_entries
        self._tokens: dict[tuple[str, str], AccessToken] = {}

    def cached(self, principal: Principal, resource: str, now: float) -> AccessToken | None:
        token = self._tokens.get((principal.object_id, resource)) if self.enabled else None
        if token is not None and token.expires_on - now > REFRESH_MARGIN_S:
            return token
        return None

    async def get(self, principal: Principal, resource: str, now: float) -> AccessToken:
        token = self.cached(principal, resource, now)
        if token is not None:
            return token
        loop = asyncio.get_running_loop()
        token = await loop.run_in_executor(
            None, functools.partial(self.issuer.issue, principal, resource, MI_TOKEN_LIFETIME_S, now=now))
        if self.enabled:
            if len(self._tokens) >= self.max_entries:
                self._evict(now)
            self._tokens[(principal.object_id, resource)] = token
        return token

    def _evict(self, now: float) -> None:
        for key in [k for k, t in self._tokens.items() if t.expires_on - now <= REFRESH_MARGIN_S]:
            del self._tokens[key]
        while len(self._tokens) >= self.max_entries:
            del self._tokens[next(iter(self._tokens))]


class Throttle:
    """A token bucket per VM: ``rate`` requests per second sustained, bursts of up to ``BURST_SECONDS`` worth of
    requests (at least one); rate 0 is off."""

    BURST_SECONDS = 5.0

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(rate * self.BURST_SECONDS, 1.0)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def admit(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds until it would."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


# -- identity selection (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    kind: str  # client_id | object_id | resource_id
    value: str


def read_selector(query: Any, names: tuple[str, ...]) -> Selector | None:
    """The one identity selector in the query (``msi_res_id``, ``mi_res_id`` and ``resource_id`` all name a
    resource id, ``principal_id`` an object id). :class:`IdentityError` if several are given."""
    given = [(n, query.get(n)) for n in names if query.get(n)]
    if not given:
        return None
    if len(given) > 1:
        raise IdentityError(f"Only one of {', '.join(names)} may be specified; got {', '.join(n for n, _ in given)}")
    name, value = given[0]
    kind = {"principal_id": "object_id", "msi_res_id": "resource_id", "mi_res_id": "resource_id"}.get(name, name)
    return Selector(kind, str(value))


def select_identity(identities: VMIdentities, selector: Selector | None, *, not_found: str,
                    ambiguous: str) -> Principal:
    """The identity a request names: by selector; else the system-assigned one; else the only user-assigned
    one. :class:`IdentityError` with ``not_found`` or ``ambiguous`` otherwise."""
    if selector is None:
        if identities.system is not None:
            return identities.system
        if len(identities.user) == 1:
            return identities.user[0]
        raise IdentityError(ambiguous if identities.user else not_found)
    value = selector.value.lower()
    for p in identities.all():
        if selector.kind == "client_id" and p.app_id == value:
            return p
        if selector.kind == "object_id" and p.object_id == value:
            return p
    if selector.kind == "resource_id":
        for p in identities.user:
            if p.resource_id is not None and p.resource_id.lower() == value.rstrip("/"):
                return p
    raise IdentityError(not_found)


# -- HTTP ------------------------------------------------------------------------------------------

RUNTIME = web.AppKey("imds.vms", VirtualMachines[Any])
TOKENS = web.AppKey("imds.tokens", TokenCache)
THROTTLE = web.AppKey("imds.throttle", Throttle)

IMDS_NOT_FOUND = "Identity not found"
IMDS_AMBIGUOUS = ("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity "
                  "in the token request")


def _vm(request: web.Request) -> Instance:
    vm = request.app[RUNTIME].vm_of_request(request)
    if vm is None:  # not from a VM, or the VM stopped while this connection was open
        raise web.HTTPNotFound()
    return vm


def _imds_error(message: str, status: int = 400, error: str = "invalid_request",
                headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "error_description": message}, status=status, headers=headers)


def _throttled(request: web.Request, vm: Instance) -> int:
    wait = request.app[THROTTLE].admit(vm.vm_id)
    return max(1, math.ceil(wait)) if wait > 0 else 0


def _metadata_header_error(request: web.Request) -> web.Response | None:
    if "X-Forwarded-For" in request.headers:
        return _imds_error("Request contains X-Forwarded-For header; IMDS does not accept proxied requests")
    if request.headers.get("Metadata", "").lower() != "true":
        return _imds_error("Required metadata header not specified")
    return None


async def _issue(request: web.Request, vm: Instance, selector: Selector | None, resource: str, *,
                 not_found: str, ambiguous: str) -> tuple[Principal, AccessToken, float]:
    identities = await request.app[RUNTIME].identities(vm)
    principal = select_identity(identities, selector, not_found=not_found, ambiguous=ambiguous)
    now = time.time()
    return principal, await request.app[TOKENS].get(principal, resource, now), now


async def imds_token(request: web.Request) -> web.Response:
    vm = _vm(request)
    if (error := _metadata_header_error(request)) is not None:
        return error
    if wait := _throttled(request, vm):
        return _imds_error("Too many requests. Retry after the time given in Retry-After.", 429,
                           "too_many_requests", headers={"Retry-After": str(wait)})
    query = request.query
    version = query.get("api-version")
    if not version:
        return _imds_error("Required query variable 'api-version' is missing")
    if not API_VERSION.match(version) or version < FIRST_IDENTITY_API_VERSION:
        return _imds_error(f"Invalid api-version '{version}'; managed identity needs {FIRST_IDENTITY_API_VERSION} "
                           "or later")
    resource = query.get("resource")
    if not resource:
        return _imds_error("Required query variable 'resource' is missing")
    try:
        selector = read_selector(query, IMDS_SELECTORS)
        principal, token, now = await _issue(request, vm, selector, resource, not_found=IMDS_NOT_FOUND,
                                       ambiguous=IMDS_AMBIGUOUS)
    except IdentityError as err:
        return _imds_error(err.message, err.status, err.code)
    left = str(max(0, math.floor(token.expires_on - now)))
    return web.json_response({
        "access_token": token.token,
        "client_id": principal.app_id,
        "expires_in": left,
        "expires_on": str(token.expires_on),
        "ext_expires_in": left,
        "not_before": str(token.not_before),
        "resource": resource,
        "token_type": "Bearer",
    })


# -- instance metadata -----------------------------------------------------------------------------


def _compute_metadata(vm: Instance) -> dict[str, Any]:
    """The ``compute`` section of ``/metadata/instance`` for a VM (every value as IMDS types it)."""
    p = vm.profile
    image = p.get("imageReference") or {}
    os_disk = p.get("osDisk") or {}
    tags: dict[str, str] = p.get("tags") or {}
    return {
        "azEnvironment": "AzurePublicCloud",
        "additionalCapabilities": {"hibernationEnabled": "false"},
        "extendedLocation": {"type": "", "name": ""},
        "evictionPolicy": "",
        "isHostCompatibilityLayerVm": "false",
        "licenseType": "",
        "location": vm.location,
        "name": vm.name,
        "offer": image.get("offer", ""),
        "osProfile": {"adminUsername": p.get("adminUsername", ""), "computerName": p.get("computerName", vm.name),
                      "disablePasswordAuthentication": "true"},
        "osType": p.get("osType", "Linux"),
        "placementGroupId": "",
        "plan": {"name": "", "product": "", "publisher": ""},
        "platformFaultDomain": "0",
        "platformUpdateDomain": "0",
        "priority": "",
        "provider": "Microsoft.Compute",
        "publicKeys": [],
        "publisher": image.get("publisher", ""),
        "resourceGroupName": vm.resource_group,
        "resourceId": vm.resource_id,
        "securityProfile": {"secureBootEnabled": "false", "virtualTpmEnabled": "false", "encryptionAtHost": "false",
                            "securityType": ""},
        "sku": image.get("sku", ""),
        "storageProfile": {
            "dataDisks": [],
            "imageReference": {"id": image.get("id", ""), "offer": image.get("offer", ""),
                               "publisher": image.get("publisher", ""), "sku": image.get("sku", ""),
                               "version": image.get("version", "")},
            "osDisk": {"caching": os_disk.get("caching", "ReadWrite"), "createOption": "FromImage",
                       "diskSizeGB": str(os_disk.get("diskSizeGB", 30)), "name": os_disk.get("name", ""),
                       "osType": p.get("osType", "Linux"), "writeAcceleratorEnabled": "false",
                       "managedDisk": {"id": os_disk.get("id", ""),
                                       "storageAccountType": os_disk.get("storageAccountType", "Premium_LRS")}},
            "resourceDisk": {"size": "0"},
        },
        "subscriptionId": vm.subscription_id,
        "tags": ";".join(f"{k}:{v}" for k, v in tags.items()),
        "tagsList": [{"name": k, "value": v} for k, v in tags.items()],
        "userData": "",
        "version": image.get("version", ""),
        "virtualMachineScaleSet": {"id": ""},
        "vmId": vm.vm_id,
        "vmScaleSetName": "",
        "vmSize": p.get("vmSize", "Standard_B1s"),
        "zone": "",
    }


def _network_metadata(vm: Instance) -> dict[str, Any]:
    mac = vm.vm_id.replace("-", "")[:12].upper()
    return {"interface": [{
        "ipv4": {"ipAddress": [{"privateIpAddress": "127.0.0.1", "publicIpAddress": ""}],
                 "subnet": [{"address": "127.0.0.0", "prefix": "8"}]},
        "ipv6": {"ipAddress": []},
        "macAddress": mac,
    }]}


def _instance_error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message, "newest-versions": NEWEST_VERSIONS}, status=status)


async def instance(request: web.Request) -> web.StreamResponse:
    vm = _vm(request)
    if (error := _metadata_header_error(request)) is not None:
        return error
    if wait := _throttled(request, vm):
        return web.json_response({"error": "Too many requests", "newest-versions": NEWEST_VERSIONS}, status=429,
                                 headers={"Retry-After": str(wait)})
    version = request.query.get("api-version")
    if not version:
        return _instance_error("Bad request. api-version was not specified in the request. For more information "
                               "refer to aka.ms/azureimds")
    if version not in INSTANCE_API_VERSIONS:
        return _instance_error(f"Bad request. api-version {version!r} is invalid. For more information refer to "
                               "aka.ms/azureimds")
    document: Any = {"compute": _compute_metadata(vm), "network": _network_metadata(vm)}
    for part in [p for p in request.match_info.get("path", "").split("/") if p]:
        if isinstance(document, list) and part.isascii() and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, dict) and part in document:
            document = document[part]
        else:
            return _instance_error("Not found", 404)
    if request.query.get("format") == "text":
        if isinstance(document, (dict, list)):
            return _instance_error("Bad request. format=text is only for leaf values")
        return web.Response(text=str(document))
    return web.json_response(document)


async def versions(request: web.Request) -> web.Response:
    _vm(request)
    if (error := _metadata_header_error(request)) is not None:
        return error
    return web.json_response({"apiVersions": list(INSTANCE_API_VERSIONS)})


def build_app(vms: VirtualMachines[Any], tokens: TokenIssuer, *, cache_tokens: bool = True,
              rate_limit: float) -> web.Application:
    """The application every VM's IMDS door serves: ``vms`` says which VM a request came from and its identities,
    ``tokens`` signs their tokens (cached unless ``cache_tokens`` is false), at most ``rate_limit`` requests per
    second per VM."""
    app = web.Application()
    app[RUNTIME] = vms
    app[TOKENS] = TokenCache(tokens, enabled=cache_tokens)
    app[THROTTLE] = Throttle(rate_limit)
    app.router.add_get("/metadata/identity/oauth2/token", imds_token)
    app.router.add_get("/metadata/versions", versions)
    app.router.add_get("/metadata/instance", instance)
    app.router.add_get("/metadata/instance/{path:(?s:.*)}", instance)
    return app
