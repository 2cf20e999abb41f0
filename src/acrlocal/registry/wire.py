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


_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,18})-(\d{1,18})(?:/(?:\d{1,18}|\*))?$")


def parse_content_range(value: str) -> tuple[int, int]:
    """``start-end`` (inclusive) of an upload chunk; RANGE_INVALID (416) if it is not a range."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if not match:
        raise RegistryError("RANGE_INVALID", f"Content-Range {value[:80]!r} is not of the form <start>-<end>")
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError("RANGE_INVALID", f"Content-Range {value[:80]!r} ends before it starts")
    return start, end
