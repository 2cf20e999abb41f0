"""Where an Azure Blob Storage container is: :func:`parse_location` reads ``acrlocal up --blob-store``.

Two URL forms name a container, as the Azure SDKs read them:

- ``https://<account>.blob.core.windows.net/<container>`` (the account is the host's first label; any host that
  is not an IP address or ``localhost`` is read this way, so sovereign clouds and custom domains work too);
- ``http://127.0.0.1:10000/<account>/<container>``: path-style, for an emulator (Azurite) on loopback.

Plain ``http`` is accepted only for loopback hosts. A query string is a SAS (``?sv=...&sig=...``, what the portal's
"Generate SAS" gives for a container): it is kept apart as the credential and never shown (:attr:`BlobLocation.url`
has no query). Errors are :class:`~acrlocal.errors.ConfigError` naming the part that is wrong.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field

from acrlocal.errors import ConfigError

# Azure's rules: account names 3-24 lowercase letters and digits; container names 3-63 lowercase letters, digits
# and single hyphens, starting and ending with a letter or digit.
ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
CONTAINER_NAME = re.compile(r"(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class BlobLocation:
    """A container: the account's endpoint (``account_url``), the account and container names, and a SAS that came
    in the URL's query, if any (not shown by ``repr``)."""

    account_url: str
    account: str
    container: str
    sas: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The container's URL without credentials (safe to show)."""
        return f"{self.account_url}/{self.container}"

    @property
    def secure(self) -> bool:
        return self.account_url.startswith("https://")


def _is_loopback_or_ip(host: str) -> tuple[bool, bool]:
    """(path-style, loopback) for a host name."""
    if host == "localhost":
        return True, True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False, False
    return True, address.is_loopback


def parse_location(text: str) -> BlobLocation:
    """The container ``text`` names; :class:`ConfigError` if it is not one of the forms above."""
    shown = text.split("?", 1)[0][:200]
    parsed = urllib.parse.urlsplit(text.strip())
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(f"blob store {shown!r} is not an https URL of a container, e.g. "
                          "https://<account>.blob.core.windows.net/<container>")
    host = parsed.hostname
    path_style, loopback = _is_loopback_or_ip(host)
    if parsed.scheme == "http" and not loopback:
        raise ConfigError(f"blob store {shown!r} uses http on a host that is not loopback; use https")
    segments = [s for s in parsed.path.split("/") if s]
    if path_style:
        if len(segments) != 2:
            raise ConfigError(f"blob store {shown!r} names no container: on an address the URL is "
                              "http://<address>:<port>/<account>/<container> (Azurite's form)")
        account, container = segments
        account_url = f"{parsed.scheme}://{parsed.netloc}/{account}"
    else:
        if len(segments) != 1:
            raise ConfigError(f"blob store {shown!r} must name one container: "
                              "https://<account>.blob.core.windows.net/<container>")
        account, container = host.split(".", 1)[0], segments[0]
        account_url = f"{parsed.scheme}://{parsed.netloc}"
    if not ACCOUNT_NAME.fullmatch(account):
        raise ConfigError(f"storage account name {account[:40]!r} is not 3-24 lowercase letters and digits")
    if not CONTAINER_NAME.fullmatch(container):
        raise ConfigError(f"container name {container[:70]!r} is not 3-63 lowercase letters, digits and single "
                          "hyphens")
    return BlobLocation(account_url, account, container, parsed.query or None)
