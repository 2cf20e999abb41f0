"""Reading what a request carries, the same way in every room: headers, JSON bodies and forms.

aiohttp decodes header bytes as UTF-8 with ``surrogateescape`` and form bodies as UTF-8, and Python's ``json``
recurses once per nesting level. Read directly, a byte ``0xff`` in ``Authorization``, a form that is not UTF-8,
or ``[[[[...]]]]`` raises deep inside a handler (``UnicodeEncodeError``, ``UnicodeDecodeError``,
``RecursionError``) and becomes a 500; and a client that stops sending its body would hold the request
forever. Rooms read such input through this module instead. Each function raises :class:`MalformedRequest` (a
``ValueError``; :class:`RequestTooLarge` for a body past its limit, :class:`ClientTooSlow` for one that stalls),
which the entry point of every room answers with a 4xx in its own protocol's format; nothing here logs.

JSON is nested at most :data:`MAX_JSON_DEPTH` levels (what Json.NET, the reader of ARM and Graph, allows by
default), so code that walks a document recursively cannot run out of stack, and strings hold no lone
surrogate (``"\\ud800"``), which could not be stored or encoded again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from acrlocal.errors import AcrLocalError

#: How deeply JSON objects and arrays may nest (``[]`` is 1, ``{"a": []}`` is 2).
MAX_JSON_DEPTH = 64
#: Seconds a request body may go without a byte before the request is given up (an application's setting).
READ_TIMEOUT = web.AppKey("inbound.read_timeout", float)
DEFAULT_READ_TIMEOUT_S = 60.0
_BODY = "inbound.body"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class MalformedRequest(AcrLocalError, ValueError):
    """A header, form or body that cannot be read as the protocol requires; ``status`` is the HTTP status to
    answer (400 here, 413 for :class:`RequestTooLarge`)."""

    status = 400


class RequestTooLarge(MalformedRequest):
    """A request body longer than the endpoint accepts."""

    status = 413


class ClientTooSlow(MalformedRequest):
    """A request body that stopped arriving (see :func:`body_chunks`)."""

    status = 408


def header(request: web.BaseRequest, name: str) -> str | None:
    """The value of header ``name``, ``None`` if absent; :class:`MalformedRequest` if it is not ASCII (every
    header these protocols define is)."""
    value = request.headers.get(name)
    if value is not None and not value.isascii():
        raise MalformedRequest(f"the {name} header holds a byte that is not ASCII")
    return value


def authorization(request: web.BaseRequest) -> tuple[str, str] | None:
    """``(scheme in lower case, credentials)`` of the ``Authorization`` header, ``None`` without one (or an
    empty one); :class:`MalformedRequest` if it is not ASCII."""
    value = header(request, "Authorization")
    if not value or not value.strip():
        return None
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def parse_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, what: str = "the request body") -> Any:
    """The JSON value of ``data`` (UTF-8, -16 or -32 when bytes); :class:`MalformedRequest` naming ``what`` if it
    is not JSON, nests deeper than ``max_depth`` or holds a lone surrogate."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise MalformedRequest(f"{what} is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedRequest(f"{what} is not JSON: {str(exc)[:200]}") from None
    check_json(value, data, max_depth=max_depth, what=what)
    return value


def check_json(value: Any, source: bytes | str, *, max_depth: int = MAX_JSON_DEPTH,
               what: str = "the request body") -> None:
    """:class:`MalformedRequest` if ``value`` (parsed from ``source``) nests deeper than ``max_depth`` or holds a
    string with a lone surrogate. Cheap for the usual document: the walk runs only when ``source`` has more
    brackets than ``max_depth``, the surrogate check only when it has a ``\\uD800``-``\\uDFFF`` escape."""
    raw = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else source
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth_exceeds(value, max_depth):
        raise MalformedRequest(f"{what} is nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(raw) or (isinstance(source, str) and not source.isascii()):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedRequest(f"{what} holds a string with a lone UTF-16 surrogate (\\uD800-\\uDFFF)") from None


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def read_timeout(request: web.Request) -> float:
    """Seconds a body may go without a byte: the application's :data:`READ_TIMEOUT`."""
    return request.app.get(READ_TIMEOUT, DEFAULT_READ_TIMEOUT_S)


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives; :class:`ClientTooSlow` if no byte comes for :func:`read_timeout` seconds (the
    connection is closed after the answer). A body the server has paused reading does not count: the clock
    runs only while this waits for the client."""
    timeout = read_timeout(request)
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise ClientTooSlow(f"the request body stalled: no byte arrived for {timeout:g} s") from None
        if not chunk:
            return
        yield chunk


async def read_body(request: web.Request) -> bytes:
    """The whole body (read once; later calls return it again), at most the application's ``client_max_size``:
    :class:`RequestTooLarge` beyond it, :class:`ClientTooSlow` if it stalls (see :func:`body_chunks`)."""
    if (cached := request.get(_BODY)) is not None:
        return cached
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise RequestTooLarge(f"the request body of {request.content_length} bytes is larger than {limit}")
    parts: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        parts.append(chunk)
    body = request[_BODY] = b"".join(parts)
    return body


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """The fields of an ``application/x-www-form-urlencoded`` (or multipart) body as text; files are refused.
    :class:`MalformedRequest` if it is not UTF-8 or not a form, :class:`RequestTooLarge` past the limit,
    :class:`ClientTooSlow` if the whole form takes longer than :func:`read_timeout` (forms are small)."""
    timeout = read_timeout(request)
    try:
        async with asyncio.timeout(timeout):
            form = await request.post()
    except TimeoutError:
        raise ClientTooSlow(f"the form did not arrive within {timeout:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise RequestTooLarge(f"the form is larger than {request.client_max_size} bytes") from None
    except (ValueError, AssertionError) as exc:  # UnicodeDecodeError; a multipart body that does not parse
        raise MalformedRequest(f"the form cannot be read: {str(exc)[:200]}") from None
    for name, value in form.items():
        if not isinstance(value, str):
            raise MalformedRequest(f"the form field {name[:40]!r} is a file; expected text")
    return form  # type: ignore[return-value]
