"""The machinery every Graph handler shares: the router, the caller, the body, ``$filter``/``$top`` paging and
Graph's error body.

:func:`dispatch` is the one entry point for ``/v1.0/...`` and ``/beta/...``. In this order it authenticates the
bearer token for Graph's audiences (401 ``InvalidAuthenticationToken``), finds the route (400 ``BadRequest``
"Resource not found for the segment", 405 for a method a path does not take) and runs the handler; anything a
handler raises becomes Graph's ``{"error": {"code", "message", "innerError"}}``, an unexpected exception a logged
500 in the same shape. Every read a handler makes goes through :class:`GraphCall`, whose look-ups only find
objects of the caller's tenant: an object of another tenant is 404, exactly as one that does not exist.

The directory's SQL runs through the server's ``SqlThread`` (``ArmServices.sql``), off the event loop on
PostgreSQL. A handler is a plain function as a rule: the request's body is read first, on the loop, and the
caller's principal and the whole handler (its checks and the writes they guard) then run as one call of that
thread. A handler with work that must not hold the thread (hashing a password) is a coroutine instead, run on the
loop, that sends its SQL through :meth:`GraphCall.run`. A write (any method but GET and HEAD) runs holding the control
plane's write lock, as ARM's writes do.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import unquote

from aiohttp import web

from acrlocal import inbound
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.providers import sql_way
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore
from acrlocal.errors import ValueTooLong
from acrlocal.identity.directory import GLOBAL_ADMINISTRATOR, Directory, Principal
from acrlocal.identity.tokens import InvalidToken
from acrlocal.inbound import MalformedRequest, RequestTooLarge
from acrlocal.storage.sql import RETRY_AFTER_S, database_unavailable

log = logging.getLogger(__name__)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
DEFAULT_PAGE, MAX_PAGE = 100, 999
MAX_BODY_BYTES = 1024 * 1024
P = ParamSpec("P")
T = TypeVar("T")


def audiences(services: ArmServices) -> list[str]:
    """The ``aud`` values Graph accepts: Microsoft Graph's URL (with or without ``/``), its app id, and this
    server's own URL (the ``microsoftGraphResourceId`` that ``/metadata/endpoints`` advertises)."""
    base = services.tokens.authority
    return ["https://graph.microsoft.com", "https://graph.microsoft.com/", GRAPH_APP_ID, base, base + "/"]


def utc(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, name: str) -> float:
    """An ISO 8601 date-time from a request as a timestamp; 400 for anything else."""
    if not isinstance(value, str):
        raise GraphError(400, "Request_BadRequest", f"Property '{name}' must be an ISO 8601 date-time string.")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "Request_BadRequest", f"Property '{name}' has an invalid value: "
                         f"'{value[:60]}' is not an ISO 8601 date-time.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def not_found(object_id: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{object_id[:100]}' does not exist or one of its "
                      "queried reference-property objects are not present.")


def denied() -> GraphError:
    return GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")


# -- $filter ---------------------------------------------------------------------------------------------------

_VALUE = r"'(?:[^']|'')*'|true|false|null"
_TERM = re.compile(
    rf"""\s*(?:
        (?P<field>[A-Za-z][A-Za-z0-9]*)\s+eq\s+(?P<value>{_VALUE})
      | startswith\(\s*(?P<sfield>[A-Za-z][A-Za-z0-9]*)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\)
      | (?P<collection>[A-Za-z][A-Za-z0-9]*)/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)\s+eq\s+'(?P<item>(?:[^']|'')*)'\s*\)
    )\s*""", re.IGNORECASE | re.VERBOSE)
_AND = re.compile(r"\s*and\s+", re.IGNORECASE)

Matcher = Callable[[dict[str, Any]], bool]


def _get(obj: dict[str, Any], key: str) -> Any:
    """A property of a rendered object by name, ignoring case (Graph's property names are case-insensitive), also
    one rendered only on ``$select`` (kept as ``_name``)."""
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if k.lstrip("_").lower() == lowered:
            return v
    return None


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    return text[1:-1].replace("''", "'")


def _eq(key: str, value: Any) -> Matcher:
    if isinstance(value, str):
        wanted = value.lower()
        return lambda o: str(_get(o, key) or "").lower() == wanted
    return lambda o: _get(o, key) == value


def _starts(key: str, prefix: str) -> Matcher:
    return lambda o: str(_get(o, key) or "").lower().startswith(prefix)


def _any(key: str, item: str) -> Matcher:
    return lambda o: item in [str(x).lower() for x in (_get(o, key) or [])]


def parse_filter(text: str | None) -> Matcher:
    """A predicate on rendered Graph objects for the ``$filter`` subset az and the SDKs send: ``prop eq
    'text'|true|false|null``, ``startswith(prop,'text')`` and ``collection/any(c:c eq 'text')``, joined by
    ``and``; text compared ignoring case. Anything else is 400 ``Request_UnsupportedQuery``: a filter that is
    not understood never widens a list."""
    if text is None or not text.strip():
        return lambda o: True
    checks: list[Matcher] = []
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if not m:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: {text[:200]}")
        if m.group("field"):
            checks.append(_eq(m.group("field"), _literal(m.group("value"))))
        elif m.group("sfield"):
            checks.append(_starts(m.group("sfield"), m.group("prefix").replace("''", "'").lower()))
        else:
            checks.append(_any(m.group("collection"), m.group("item").replace("''", "'").lower()))
        pos = m.end()
        if pos == len(text):
            return lambda o: all(check(o) for check in checks)
        sep = _AND.match(text, pos)
        if not sep:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: {text[:200]}")
        pos = sep.end()


# -- the call ---------------------------------------------------------------------------------------------------


@dataclass
class GraphCall:
    """One authenticated Graph request: the caller (a principal of the directory) and its tenant, the route's
    parameters, the request's body as read (or why it could not be), and the server's services. Its look-ups
    (:meth:`principal`, :meth:`is_admin`...) read the directory: call them inside a plain handler (which runs in the
    ``SqlThread``) or through :meth:`run`."""

    services: ArmServices
    store: ArmStore
    request: web.Request
    caller: Principal
    claims: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    raw_body: bytes | Exception = b""

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` through the server's ``SqlThread`` (a GET's inline on SQLite; a write's in the
        thread on every backend, as it may commit more than once: see ``SqlThread.run_long``); what it raises comes
        back here."""
        return cast(T, await sql_way(self.services.sql, self.request.method)(fn, *args, **kwargs))

    @property
    def tenant_id(self) -> str:
        return self.caller.tenant_id

    @property
    def directory(self) -> Directory:
        return self.services.directory

    @property
    def base(self) -> str:
        """This server as the caller reached it (Graph's ``@odata.*`` links point back here)."""
        return f"https://{self.request.host}"

    def context_url(self, what: str) -> str:
        return f"{self.base}/v1.0/$metadata#{what}"

    def is_admin(self) -> bool:
        """The caller holds Global Administrator in its tenant (the local administrator and the user ``up``
        creates do)."""
        return self.caller.object_id == self.services.admin.objectId.lower() or \
            self.directory.has_directory_role(self.caller.object_id, GLOBAL_ADMINISTRATOR)

    def require_admin(self) -> None:
        if not self.is_admin():
            raise denied()

    def require_admin_or_owner(self, object_id: str) -> None:
        if not self.is_admin() and not self.directory.is_owner(object_id, self.caller.object_id):
            raise denied()

    def principal(self, object_id: str) -> Principal:
        """A principal of the caller's tenant by object id; 404 otherwise (another tenant's too)."""
        found = self.directory.find_principal(object_id=object_id) if GUID.match(object_id) else None
        if found is None or found.tenant_id != self.tenant_id:
            raise not_found(object_id)
        return found

    def body(self) -> dict[str, Any]:
        """The request's JSON object (``{}`` for an empty body), read before the handler ran: 413 for a body too
        large, 400 for one that is not a JSON object, and what reading it raised otherwise."""
        too_large = GraphError(413, "Request_EntityTooLarge",
                               f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        raw = self.raw_body
        if isinstance(raw, RequestTooLarge):
            raise too_large from None
        if isinstance(raw, Exception):
            raise raw
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
        try:
            body = inbound.parse_json(raw) if raw.strip() else {}
        except MalformedRequest:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                             "header is set and payload is of valid JSON format.") from None
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return body

    def page(self, what: str, items: Sequence[dict[str, Any]]) -> web.Response:
        """A collection, filtered by ``$filter`` and paged by ``$top`` (default 100, at most 999) with an
        ``@odata.nextLink`` that carries the position in ``$skiptoken``."""
        matches = parse_filter(self.request.query.get("$filter"))
        selected = [item for item in items if matches(item)]
        try:
            top = int(self.request.query.get("$top", DEFAULT_PAGE))
        except ValueError:
            raise GraphError(400, "Request_UnsupportedQuery", "Invalid value for $top.") from None
        if not 1 <= top <= MAX_PAGE:
            raise GraphError(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'. Must be "
                             f"between 1 and {MAX_PAGE} inclusive.")
        start = _skip(self.request.query.get("$skiptoken"))
        chunk = selected[start:start + top]
        body: dict[str, Any] = {"@odata.context": self.context_url(what), "value": [_select(self, o) for o in chunk]}
        if start + top < len(selected):
            query = {k: v for k, v in self.request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = base64.urlsafe_b64encode(str(start + top).encode()).decode()
            body["@odata.nextLink"] = str(self.request.url.with_query(query).with_scheme("https"))
        return web.json_response(body)

    def one(self, what: str, obj: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response({"@odata.context": self.context_url(what), **_select(self, obj)}, status=status)


def _skip(token: str | None) -> int:
    if not token:
        return 0
    try:
        value = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise GraphError(400, "Request_UnsupportedQuery", "The $skiptoken is not valid.") from None
    if value < 0:
        raise GraphError(400, "Request_UnsupportedQuery", "The $skiptoken is not valid.")
    return value


def _select(call: GraphCall, obj: dict[str, Any]) -> dict[str, Any]:
    """``$select=a,b``: only those properties (and ``@odata.type`` and ``id``); otherwise the object's defaults
    (keys starting with ``_`` are internal: used by ``$filter`` and ``$select`` but not rendered by default)."""
    wanted = call.request.query.get("$select")
    if wanted:
        names = {n.strip().lower() for n in wanted.split(",") if n.strip()}
        return {k.lstrip("_"): v for k, v in obj.items()
                if k.lstrip("_").lower() in names or k in ("id", "@odata.type")}
    return {k: v for k, v in obj.items() if not k.startswith("_")}


# -- the router -------------------------------------------------------------------------------------------------

#: A plain function (run in the ``SqlThread`` with the caller's look-up) or a coroutine (run on the loop).
Handler = Callable[[GraphCall], Awaitable[web.StreamResponse]] | Callable[[GraphCall], web.StreamResponse]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    """Routes by method and path below ``/v1.0`` (or ``/beta``). Path templates name parameters in braces; literal
    segments match ignoring case, as Graph's do."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        parts = []
        for segment in template.strip("/").split("/"):
            pieces = re.split(r"\{(\w+)\}", segment)  # literal, name, literal, name, ..., literal
            parts.append("".join(f"(?P<{piece}>[^/]+)" if i % 2 else re.escape(piece)
                                 for i, piece in enumerate(pieces)))
        self.routes.append(Route(method, re.compile("^/" + "/".join(parts) + r"/?\Z", re.IGNORECASE), handler))

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for route in self.routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            if route.method == method:
                return route.handler, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed = True
        if allowed:
            raise GraphError(405, "Request_BadRequest", f"Specified HTTP method '{method}' is not allowed for the "
                             "request uri.")
        segment = next((s for s in path.strip("/").split("/") if s), "")
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{unquote(segment)[:100]}'.")


async def _claims(services: ArmServices, request: web.Request) -> dict[str, Any]:
    """The claims of the request's bearer token for Graph; 401 if there is none or it is not valid for Graph.
    Checked on the event loop with the key from memory; a key that must be read is read through ``services.sql``."""
    try:
        scheme, token = inbound.authorization(request) or ("", "")
    except MalformedRequest:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure: the Authorization "
                         "header is not ASCII.") from None
    if scheme != "bearer" or not token:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    try:
        claims = await services.tokens.verify_async(services.sql, token, audiences(services))
    except InvalidToken:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience "
                         "or signature.") from None
    return claims


def _principal(services: ArmServices, claims: dict[str, Any]) -> Principal:
    """The principal the claims name; 401 if it no longer exists (reads the directory: in the ``SqlThread``)."""
    principal = services.directory.find_principal(object_id=str(claims["oid"]))
    if principal is None or principal.tenant_id != str(claims["tid"]).lower():
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
    return principal


def _serve(handler: Callable[[GraphCall], web.StreamResponse], services: ArmServices, store: ArmStore,
           request: web.Request, claims: dict[str, Any], params: dict[str, str], raw: bytes | Exception
           ) -> web.StreamResponse:
    """The caller's look-up and a plain handler, as one call of the ``SqlThread``."""
    return handler(GraphCall(services, store, request, _principal(services, claims), claims, params, raw))


async def _read(request: web.Request) -> bytes | Exception:
    """The request's body, or what reading it raised (the handler raises it if it reads the body)."""
    if request.method in ("GET", "HEAD") or not request.can_read_body:
        return b""
    try:
        return await inbound.read_body(request)
    except (RequestTooLarge, MalformedRequest) as exc:
        return exc


def make_dispatch(services: ArmServices, store: ArmStore, router: Router, write_lock: asyncio.Lock) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    """The handler of every Graph request. A write (any method but GET and HEAD) is served holding ``write_lock``,
    the control plane's write lock (shared by replicas over PostgreSQL): deleting a principal deletes its role
    assignments, which an ARM write may be checking against that principal at the same moment."""
    async def serve(request: web.Request, claims: dict[str, Any], raw: bytes | Exception) -> web.StreamResponse:
        path = request.match_info.get("tail", "")
        try:
            handler, params = router.find(request.method, "/" + path)
        except GraphError:
            await services.sql.run(_principal, services, claims)  # a caller that is gone: 401 first
            raise
        if inspect.iscoroutinefunction(handler):
            caller = await services.sql.run(_principal, services, claims)
            return await cast(Callable[[GraphCall], Awaitable[web.StreamResponse]], handler)(
                GraphCall(services, store, request, caller, claims, params, raw))
        return await sql_way(services.sql, request.method)(
            _serve, cast(Callable[[GraphCall], web.StreamResponse], handler), services, store, request, claims, params,
            raw)

    async def dispatch(request: web.Request) -> web.StreamResponse:
        try:
            claims = await _claims(services, request)
            raw = await _read(request)
            if request.method in ("GET", "HEAD"):
                return await serve(request, claims, raw)
            async with write_lock:
                return await serve(request, claims, raw)
        except GraphError as err:
            return err.response(request)
        except MalformedRequest as exc:  # a header or body no handler could read (see acrlocal.inbound)
            codes = {413: "Request_EntityTooLarge", 408: "Request_Timeout"}
            return GraphError(exc.status, codes.get(exc.status, "BadRequest"), str(exc)).response(request)
        except ValueTooLong as exc:
            return GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{exc.column}': "
                              f"{exc}.").response(request)
        except Exception as exc:
            if database_unavailable(exc):
                log.warning("Graph request %s %s: the database is not reachable (%s)", request.method, request.path,
                            type(exc).__name__)
                response = GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable; retry "
                                      "later.").response(request)
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
                return response
            log.exception("Graph request %s %s failed", request.method, request.path)
            return GraphError(500, "generalException", "An internal server error occurred; request id "
                              f"{uuid.uuid4()}.").response(request)
    return dispatch
