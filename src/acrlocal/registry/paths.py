"""The data plane's URL layout, parsed by hand: repository names contain ``/``, so a router's patterns cannot
tell ``/v2/a/b/manifests/x`` from ``/v2/a/b/blobs/y`` without backtracking. Pure; no I/O.

The structure comes from the raw (still percent-encoded) segments, read from the end; the name and reference are
then percent-decoded, so ``library%2Fhello`` and ``sha256%3A...`` (as azure-containerregistry sends them) mean the
same as their raw forms (as skopeo sends them). Decoded values are checked by :mod:`acrlocal.registry.names` by
the handler before anything else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote


class Endpoint(Enum):
    BASE = "base"  # /v2/
    CATALOG = "catalog"  # /v2/_catalog
    MANIFEST = "manifest"  # /v2/<name>/manifests/<reference>
    BLOB = "blob"  # /v2/<name>/blobs/<digest>
    UPLOADS = "uploads"  # /v2/<name>/blobs/uploads/
    UPLOAD = "upload"  # /v2/<name>/blobs/uploads/<id>
    TAGS = "tags"  # /v2/<name>/tags/list
    REFERRERS = "referrers"  # /v2/<name>/referrers/<digest>


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    name: str = ""
    ref: str = ""


_BASE = Route(Endpoint.BASE)
_CATALOG = Route(Endpoint.CATALOG)


def _decode(segment: str) -> str:
    # Escapes that are not UTF-8 decode to U+FFFD, which no name, tag or digest grammar accepts.
    return unquote(segment) if "%" in segment else segment


def _route(endpoint: Endpoint, name_segments: list[str], ref: str = "") -> Route:
    return Route(endpoint, "/".join(_decode(s) for s in name_segments), _decode(ref))


def parse_path(raw_path: str) -> Route | None:
    """The endpoint a raw request target (path and query) addresses, or ``None`` if it is none of them."""
    path = raw_path.split("?", 1)[0]
    if path in ("/v2/", "/v2"):
        return _BASE
    if not path.startswith("/v2/"):
        return None
    segments = path[4:].split("/")
    if segments == ["_catalog"]:
        return _CATALOG
    if len(segments) < 2:
        return None
    kind, last = segments[-2], segments[-1]
    if kind == "uploads" and len(segments) >= 3 and segments[-3] == "blobs":
        return _route(Endpoint.UPLOAD if last else Endpoint.UPLOADS, segments[:-3], last)
    if kind == "blobs" and last == "uploads":
        return _route(Endpoint.UPLOADS, segments[:-2])
    if kind == "manifests":
        return _route(Endpoint.MANIFEST, segments[:-2], last)
    if kind == "blobs":
        return _route(Endpoint.BLOB, segments[:-2], last)
    if kind == "tags" and last == "list":
        return _route(Endpoint.TAGS, segments[:-2])
    if kind == "referrers":
        return _route(Endpoint.REFERRERS, segments[:-2], last)
    return None
