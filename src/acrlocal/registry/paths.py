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
    # ACR's own API under /acr/v1/ (what azure-containerregistry and az acr repository call)
    ACR_CATALOG = "acr catalog"  # /acr/v1/_catalog
    ACR_REPOSITORY = "acr repository"  # /acr/v1/<name>
    ACR_TAGS = "acr tags"  # /acr/v1/<name>/_tags
    ACR_TAG = "acr tag"  # /acr/v1/<name>/_tags/<tag>
    ACR_MANIFESTS = "acr manifests"  # /acr/v1/<name>/_manifests
    ACR_MANIFEST = "acr manifest"  # /acr/v1/<name>/_manifests/<digest>


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    name: str = ""
    ref: str = ""


_BASE = Route(Endpoint.BASE)
_CATALOG = Route(Endpoint.CATALOG)
_ACR_CATALOG = Route(Endpoint.ACR_CATALOG)
ACR_PREFIX = "/acr/v1/"


def _decode(segment: str) -> str:
    # Escapes that are not UTF-8 decode to U+FFFD, which no name, tag or digest grammar accepts.
    return unquote(segment) if "%" in segment else segment


def _route(endpoint: Endpoint, name_segments: list[str], ref: str = "") -> Route:
    return Route(endpoint, "/".join(_decode(s) for s in name_segments), _decode(ref))


def parse_path(raw_path: str) -> Route | None:
    """The endpoint a raw request target (path and query) addresses, or ``None`` if it is none of them."""
    path = raw_path.split("?", 1)[0]
    if path.startswith(ACR_PREFIX):
        return _parse_acr(path[len(ACR_PREFIX):])
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


def _parse_acr(rest: str) -> Route | None:
    """``/acr/v1/`` paths: the name may be one percent-encoded segment (``library%2Fhello``, as the SDK sends
    it) or several raw ones (``library/hello``); ``_tags`` and ``_manifests`` cannot be repository components
    (a component starts with a letter or digit), so they mark the structure unambiguously."""
    segments = rest.split("/")
    if segments == ["_catalog"]:
        return _ACR_CATALOG
    if not segments or segments == [""]:
        return None
    for index, segment in enumerate(segments):
        if segment in ("_tags", "_manifests"):
            name, tail = segments[:index], segments[index + 1:]
            if not name or len(tail) > 1:
                return None
            if segment == "_tags":
                return _route(Endpoint.ACR_TAG, name, tail[0]) if tail else _route(Endpoint.ACR_TAGS, name)
            return _route(Endpoint.ACR_MANIFEST, name, tail[0]) if tail else _route(Endpoint.ACR_MANIFESTS, name)
    return _route(Endpoint.ACR_REPOSITORY, segments)
