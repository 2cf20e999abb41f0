"""Azure's public-cloud names, as a VM of this server reaches them (pure; every room may use it).

Inside a VM's network namespace the server answers on Azure's own names (see :mod:`acrlocal.compute`): ARM at
``management.azure.com``, Entra at ``login.microsoftonline.com``, Microsoft Graph at ``graph.microsoft.com``, every
registry at ``<name>.azurecr.io``, all on :data:`FRONT_DOOR` port 443, and IMDS at ``169.254.169.254:80``. As a
sovereign cloud's do, the names a response carries follow the endpoint the caller reached: a request that came to
one of these names is answered with these names.
"""

from __future__ import annotations

import re

ARM_HOST = "management.azure.com"
LOGIN_HOST = "login.microsoftonline.com"
GRAPH_HOST = "graph.microsoft.com"
ACR_SUFFIX = "azurecr.io"
#: The audiences of ARM's tokens: what ARM accepts, and what a registry accepts too unless its
#: ``azureADAuthenticationAsArmPolicy`` is disabled.
ARM_AUDIENCES = (
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
)
#: Azure Storage's audiences: the service's (``https://storage.azure.com``) and an account's endpoints. Storage takes
#: only v1 tokens, so Entra issues v1 tokens for them, whose issuer is :data:`V1_ISSUER`, whichever endpoint issued.
STORAGE_AUDIENCE = re.compile(
    r"^(?:https://storage\.azure\.com|https://[a-z0-9]{3,24}\.(?:blob|dfs|queue|table|file)\.core\.windows\.net)/?\Z")
V1_ISSUER = "https://sts.windows.net/{tenant}/"
#: The names a VM resolves besides its registries'.
SERVICE_HOSTS = (ARM_HOST, LOGIN_HOST, GRAPH_HOST)
#: The TLS certificate of the VMs' front door covers these.
CERTIFICATE_NAMES = (*SERVICE_HOSTS, f"*.{ACR_SUFFIX}")
IMDS_ADDRESS = "169.254.169.254"
#: The address, on the loopback interface of a VM's own network namespace, that Azure's names resolve to (port
#: 443). Link-local, as IMDS's, and outside 127.0.0.0/8: Docker Engine takes every registry there for an insecure
#: one and checks no certificate, where on Azure it checks ``*.azurecr.io``'s.
FRONT_DOOR = "169.254.10.1"
#: The VM's DNS stub (as systemd-resolved's), answering for Azure's names and nothing else.
DNS_STUB = "127.0.0.53"

_REGISTRY_HOST = re.compile(rf"^([a-z0-9]{{5,50}})\.{re.escape(ACR_SUFFIX)}\Z")


def host_of(host_header: str | None) -> str:
    """The host name of a ``Host`` header, lower-cased and without the port."""
    host = (host_header or "").lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_azure_host(host_header: str | None) -> bool:
    """True if a request came to one of Azure's names (a service's or a registry's)."""
    host = host_of(host_header)
    return host in SERVICE_HOSTS or _REGISTRY_HOST.match(host) is not None


def registry_of(host_header: str | None) -> str | None:
    """The registry name of ``<name>.azurecr.io`` (ignoring case and port), else ``None``."""
    m = _REGISTRY_HOST.match(host_of(host_header))
    return m.group(1) if m else None


def registry_host(name: str) -> str:
    """``<name>.azurecr.io``: a registry's login server in Azure's public cloud."""
    return f"{name.lower()}.{ACR_SUFFIX}"
