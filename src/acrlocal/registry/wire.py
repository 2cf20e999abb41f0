"""Small pieces every data-plane handler shares: standard headers, error bodies, pagination and ranges."""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from acrlocal.registry.errors import RegistryError

API_VERSION = "Docker-Distribution-Api-Version"
API_VERSION_VALUE = "registry/2.0"
CONTENT_DIGEST = "Docker-Content-Digest"
UPLOAD_UUID = "Docker-Upload-UUID"
JSON = "application/json"


def error_response(err: RegistryError) -> web.Response:
    headers = {API_VERSION: API_VERSION_VALUE, **err.headers}
    return web.Response(status=err.status, body=err.body(), content_type=JSON, headers=headers)


def empty(status: int, headers: dict[str, str]) -> web.Response:
    """A response without a body (``Content-Length: 0``) carrying ``headers``."""
    headers[API_VERSION] = API_VERSION_VALUE
    return web.Response(status=status, headers=headers)


def page_size(query_value: str | None, maximum: int) -> int:
    """``n`` from a query, clamped to ``maximum``; ``maximum`` when absent. PAGINATION_NUMBER_INVALID (400) if
    it is not a non-negative integer. Nothing is ever allocated from the client's number."""
    if query_value is None or query_value == "":
        return maximum
    if not (query_value.isascii() and query_value.isdigit()) or len(query_value) > 12:
        shown = query_value[:40]
        raise RegistryError("PAGINATION_NUMBER_INVALID", f"n={shown!r} is not a non-negative integer", {"n": shown})
    return min(int(query_value), maximum)


def next_link(path: str, n: int, last: str, **extra: str) -> str:
    """An RFC 5988 ``Link`` header value for the next page."""
    params = "".join(f"&{k}={quote(v, safe='')}" for k, v in extra.items())
    return f'<{path}?n={n}&last={quote(last, safe="")}{params}>; rel="next"'


_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,18})-(\d{1,18})(?:/(?:\d{1,18}|\*))?\Z")


def parse_content_range(value: str) -> tuple[int, int]:
    """``start-end`` (inclusive) of an upload chunk; RANGE_INVALID (416) if it is not a range."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if not match:
        raise RegistryError("RANGE_INVALID", f"Content-Range {value[:80]!r} is not of the form <start>-<end>")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError("RANGE_INVALID", f"Content-Range {value[:80]!r} ends before it starts")
    return start, end


_BYTE_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


def parse_byte_range(value: str, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a ``Range`` header's single range over ``size`` bytes (RFC 9110:
    ``bytes=a-b``, ``bytes=a-``, ``bytes=-n``, ``last`` clamped to the end); ``None`` when the header is not one
    range the server honours (several ranges, another unit: the whole content is sent). RANGE_INVALID (416, with
    ``Content-Range: bytes */size``) when the range starts past the end or is empty."""
    match = _BYTE_RANGE.fullmatch(value.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    unsatisfiable = RegistryError("RANGE_INVALID", f"range {value[:80]!r} is outside the blob's {size} bytes",
                                  status=416, headers={"Content-Range": f"bytes */{size}"})
    if match.group(1) == "":
        suffix = int(match.group(2))
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(match.group(1))
    if match.group(2) and int(match.group(2)) < first:
        return None  # invalid syntax: ignored, as RFC 9110 says
    if first >= size:
        raise unsatisfiable
    last = int(match.group(2)) if match.group(2) else size - 1
    return first, min(last, size - 1)
