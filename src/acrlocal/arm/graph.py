"""A minimal Microsoft Graph (``/v1.0``) on the shared port: what ``az ad sp create-for-rbac`` and
``az role assignment create --assignee`` need.

- ``POST /v1.0/applications`` (``displayName``), ``GET /v1.0/applications[?$filter=displayName eq|appId eq]``,
  ``GET|DELETE /v1.0/applications/{id}``, ``POST /v1.0/applications/{id}/addPassword``,
  ``POST /v1.0/applications/{id}/removePassword`` (``keyId``; 204, and the secret stops working at once);
- ``POST /v1.0/servicePrincipals`` (``appId``), ``GET /v1.0/servicePrincipals[?$filter=appId eq|displayName eq|
  servicePrincipalNames/any(c:c eq '...')]``, ``GET /v1.0/servicePrincipals/{id}``;
- ``POST /v1.0/directoryObjects/getByIds``.

An application and its service principal share the directory principal with the same ``appId``: creating the
application creates that principal (so ``addPassword`` works in any order), ``POST /servicePrincipals`` makes it
visible as a service principal, and deleting the application deletes the principal, its secrets and its role
assignments. Tokens are accepted for the Graph audiences (``https://graph.microsoft.com`` with or without ``/``,
its app id, and this server's own URL, which is the ``microsoftGraphResourceId`` that ``/metadata/endpoints``
advertises). Reads need any valid token of the tenant; writes are for the local administrator only (Graph's 403
``Authorization_RequestDenied`` otherwise). Errors are Graph's ``{"error": {"code", "message", "innerError"}}``.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from acrlocal.arm.store import ArmStore, graph_applications
from acrlocal.context import Context
from acrlocal.errors import NotFound, ProtocolError
from acrlocal.identity.directory import Principal
from acrlocal.identity.tokens import InvalidToken

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TERM = re.compile(
    r"""\s*(?:
        (?P<field>displayName|appId|id)\s+eq\s+'(?P<value>(?:[^']|'')*)'
      | startswith\(\s*(?P<sfield>displayName)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\)
      | (?P<collection>servicePrincipalNames|identifierUris)/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)\s+eq\s+
        '(?P<item>(?:[^']|'')*)'\s*\)
    )\s*""", re.IGNORECASE | re.VERBOSE)
_AND = re.compile(r"\s*and\s+", re.IGNORECASE)

Matcher = Callable[[dict[str, Any]], bool]


def _equals(key: str, value: str) -> Matcher:
    return lambda o: str(o.get(key, "")).lower() == value


def _starts_with(key: str, prefix: str) -> Matcher:
    return lambda o: str(o.get(key, "")).lower().startswith(prefix)


def _contains(key: str, item: str) -> Matcher:
    return lambda o: item in [str(x).lower() for x in o.get(key) or []]


def _parse_graph_filter(text: str) -> Matcher:
    """A predicate on rendered Graph objects for the ``$filter`` subset az sends: ``field eq '...'``,
    ``startswith(displayName,'...')`` and ``collection/any(c:c eq '...')``, joined by ``and``; anything else is
    400 ``Request_UnsupportedQuery``."""
    checks: list[Matcher] = []
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if not m:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: {text[:200]}")
        if m.group("field"):
            key = {"displayname": "displayName", "appid": "appId", "id": "id"}[m.group("field").lower()]
            value = m.group("value").replace("''", "'").lower()
            checks.append(_equals(key, value))
        elif m.group("sfield"):
            prefix = m.group("prefix").replace("''", "'").lower()
            checks.append(_starts_with("displayName", prefix))
        else:
            key = "servicePrincipalNames" if m.group("collection").lower() == "serviceprincipalnames" else \
                "identifierUris"
            item = m.group("item").replace("''", "'").lower()
            checks.append(_contains(key, item))
        pos = m.end()
        if pos == len(text):
            return lambda o: all(check(o) for check in checks)
        sep = _AND.match(text, pos)
        if not sep:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query: {text[:200]}")
        pos = sep.end()


class GraphError(ProtocolError):
    """An error Microsoft Graph answers with ``{"error": {"code", "message", "innerError"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status=status, code=code)

    def response(self, request: web.Request) -> web.Response:
        inner = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4()),
                 "client-request-id": request.headers.get("client-request-id", str(uuid.uuid4()))}
        return web.json_response({"error": {"code": self.code, "message": self.message, "innerError": inner}},
                                 status=self.status)


def audiences(ctx: Context) -> list[str]:
    base = ctx.tokens.authority
    return ["https://graph.microsoft.com", "https://graph.microsoft.com/", GRAPH_APP_ID, base, base + "/"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Graph:
    def __init__(self, ctx: Context, store: ArmStore) -> None:
        self.ctx = ctx
        self.store = store

    # -- plumbing ------------------------------------------------------------------------------------

    def caller(self, request: web.Request) -> Principal:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            claims = self.ctx.tokens.verify(token.strip(), audiences(self.ctx))
        except InvalidToken:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience "
                             "or signature.") from None
        principal = self.ctx.directory.find_principal(object_id=str(claims["oid"]))
        if principal is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        return principal

    def writer(self, request: web.Request) -> Principal:
        principal = self.caller(request)
        if principal.object_id != self.ctx.admin.objectId.lower():
            raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        return principal

    async def body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = jsonlib.loads(raw) if raw.strip() else {}
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
        return body

    def app_row(self, object_id: str) -> Any:
        with self.ctx.engine.connect() as conn:
            row = conn.execute(sa.select(graph_applications).where(graph_applications.c.id == object_id.lower())
                               ).first()
        if row is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{object_id}' does not exist or one of its "
                             "queried reference-property objects are not present.")
        return row

    def render_app(self, row: Any) -> dict[str, Any]:
        return {"@odata.context": f"{self.ctx.tokens.authority}/v1.0/$metadata#applications/$entity",
                "id": row.id, "appId": row.app_id, "displayName": row.display_name, "createdDateTime": row.created,
                "signInAudience": "AzureADMyOrg", "passwordCredentials": jsonlib.loads(row.password_credentials),
                "keyCredentials": [], "identifierUris": [], "publisherDomain": "acrlocal.localhost"}

    def render_sp(self, p: Principal) -> dict[str, Any]:
        kind = "ManagedIdentity" if p.kind == "ManagedIdentity" else "Application"
        names = [p.app_id] + ([p.resource_id] if p.resource_id else [])
        return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id, "appId": p.app_id,
                "displayName": p.display_name, "servicePrincipalType": kind, "servicePrincipalNames": names,
                "appOwnerOrganizationId": p.tenant_id, "accountEnabled": True, "alternativeNames":
                [p.resource_id] if p.resource_id else []}

    def visible_sps(self, tenant_id: str) -> list[Principal]:
        with self.ctx.engine.connect() as conn:
            hidden = {r.app_id for r in conn.execute(sa.select(graph_applications.c.app_id).where(
                graph_applications.c.service_principal.is_(False)))}
        return [p for p in self.ctx.directory.principals(tenant_id) if p.app_id not in hidden and p.kind != "User"]

    # -- applications --------------------------------------------------------------------------------

    async def create_application(self, request: web.Request) -> web.Response:
        caller = self.writer(request)
        body = await self.body(request)
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise GraphError(400, "Request_BadRequest", "Property 'displayName' is required and must be a string of "
                             "1 to 256 characters.")
        principal = self.ctx.directory.create_service_principal(caller.tenant_id, name)
        row_id = str(uuid.uuid4())
        with self.ctx.engine.begin() as conn:
            conn.execute(sa.insert(graph_applications).values(
                id=row_id, app_id=principal.app_id, tenant_id=caller.tenant_id, display_name=name,
                service_principal=False, password_credentials="[]", created=_now()))
        return web.json_response(self.render_app(self.app_row(row_id)), status=201)

    async def list_applications(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        q = sa.select(graph_applications).where(graph_applications.c.tenant_id == caller.tenant_id)
        flt = request.query.get("$filter")
        matches = _parse_graph_filter(flt) if flt else (lambda o: True)
        with self.ctx.engine.connect() as conn:
            rows = conn.execute(q.order_by(graph_applications.c.created)).all()
        apps = [self.render_app(r) for r in rows]
        return web.json_response({"value": [a for a in apps if matches(a)]})

    async def application(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.writer(request)
            row = self.app_row(request.match_info["id"])
            principal = self.ctx.directory.find_principal(app_id=row.app_id)
            if principal is not None:
                self.store.delete_assignments_of(principal.object_id)
                self.ctx.directory.delete_principal(principal.object_id)
            with self.ctx.engine.begin() as conn:
                conn.execute(sa.delete(graph_applications).where(graph_applications.c.id == row.id))
            return web.Response(status=204)
        self.caller(request)
        return web.json_response(self.render_app(self.app_row(request.match_info["id"])))

    async def add_password(self, request: web.Request) -> web.Response:
        self.writer(request)
        row = self.app_row(request.match_info["id"])
        body = await self.body(request)
        spec = body.get("passwordCredential") or {}
        if not isinstance(spec, dict):
            raise GraphError(400, "BadRequest", "'passwordCredential' must be an object.")
        display = str(spec.get("displayName") or "")
        start = datetime.now(UTC)
        end = start + timedelta(days=365)
        if isinstance(spec.get("endDateTime"), str):
            try:
                end = datetime.fromisoformat(spec["endDateTime"].replace("Z", "+00:00"))
            except ValueError:
                raise GraphError(400, "BadRequest", "'endDateTime' is not an ISO 8601 date.") from None
        lifetime = (end - start).total_seconds()
        if lifetime <= 0:
            raise GraphError(400, "BadRequest", "'endDateTime' is in the past.")
        principal = self.ctx.directory.find_principal(app_id=row.app_id)
        assert principal is not None
        key_id, secret = self.ctx.directory.add_secret(principal.object_id, display, lifetime)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        credential = {"customKeyIdentifier": None, "displayName": display, "endDateTime": end.strftime(fmt),
                      "hint": secret[:3], "keyId": key_id, "startDateTime": start.strftime(fmt)}
        listed = [*jsonlib.loads(row.password_credentials), {**credential, "secretText": None}]
        with self.ctx.engine.begin() as conn:
            conn.execute(sa.update(graph_applications).where(graph_applications.c.id == row.id).values(
                password_credentials=jsonlib.dumps(listed)))
        return web.json_response({**credential, "secretText": secret})

    async def remove_password(self, request: web.Request) -> web.Response:
        self.writer(request)
        row = self.app_row(request.match_info["id"])
        body = await self.body(request)
        key_id = body.get("keyId")
        if not isinstance(key_id, str) or not GUID.match(key_id):
            raise GraphError(400, "Request_BadRequest", "Property 'keyId' is required and must be a GUID.")
        listed = jsonlib.loads(row.password_credentials)
        kept = [c for c in listed if str(c.get("keyId", "")).lower() != key_id.lower()]
        principal = self.ctx.directory.find_principal(app_id=row.app_id)
        if len(kept) == len(listed) or principal is None:
            raise GraphError(400, "Request_BadRequest", f"No password credential with keyId '{key_id}' exists on "
                             f"application '{row.id}'.")
        # listed on the application but already gone from the directory: removed either way
        with contextlib.suppress(NotFound):
            self.ctx.directory.remove_secret(principal.object_id, key_id)
        with self.ctx.engine.begin() as conn:
            conn.execute(sa.update(graph_applications).where(graph_applications.c.id == row.id).values(
                password_credentials=jsonlib.dumps(kept)))
        return web.Response(status=204)

    # -- service principals --------------------------------------------------------------------------

    async def create_service_principal(self, request: web.Request) -> web.Response:
        self.writer(request)
        body = await self.body(request)
        app_id = body.get("appId")
        if not isinstance(app_id, str) or not GUID.match(app_id):
            raise GraphError(400, "Request_BadRequest", "Property 'appId' is required and must be a GUID.")
        with self.ctx.engine.begin() as conn:
            row = conn.execute(sa.select(graph_applications).where(graph_applications.c.app_id == app_id.lower())
                               ).first()
            if row is None:
                raise GraphError(400, "Request_BadRequest", f"The appId '{app_id}' of the service principal does "
                                 "not reference a valid application object.")
            if row.service_principal:
                raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "The service principal for this "
                                 "application already exists.")
            conn.execute(sa.update(graph_applications).where(graph_applications.c.id == row.id).values(
                service_principal=True))
        principal = self.ctx.directory.find_principal(app_id=app_id)
        assert principal is not None
        return web.json_response(self.render_sp(principal), status=201)

    async def list_service_principals(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        flt = request.query.get("$filter")
        matches = _parse_graph_filter(flt) if flt else (lambda o: True)
        sps = [self.render_sp(p) for p in self.visible_sps(caller.tenant_id)]
        return web.json_response({"value": [sp for sp in sps if matches(sp)]})

    async def service_principal(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        wanted = request.match_info["id"].lower()
        for p in self.visible_sps(caller.tenant_id):
            if p.object_id == wanted:
                return web.json_response(self.render_sp(p))
        raise GraphError(404, "Request_ResourceNotFound", f"Resource '{wanted}' does not exist or one of its queried "
                         "reference-property objects are not present.")

    async def get_by_ids(self, request: web.Request) -> web.Response:
        caller = self.caller(request)
        body = await self.body(request)
        ids = body.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise GraphError(400, "Request_BadRequest", "'ids' must be a list of strings.")
        wanted = {i.lower() for i in ids}
        return web.json_response({"value": [self.render_sp(p) for p in self.visible_sps(caller.tenant_id)
                                            if p.object_id in wanted]})


def setup(app: web.Application, ctx: Context, store: ArmStore) -> None:
    graph = Graph(ctx, store)

    def wrap(handler: Any) -> Any:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                response: web.StreamResponse = await handler(request)
                return response
            except GraphError as err:
                return err.response(request)
        return run

    app.router.add_post("/v1.0/applications", wrap(graph.create_application))
    app.router.add_get("/v1.0/applications", wrap(graph.list_applications))
    app.router.add_route("GET", "/v1.0/applications/{id}", wrap(graph.application))
    app.router.add_route("DELETE", "/v1.0/applications/{id}", wrap(graph.application))
    app.router.add_post("/v1.0/applications/{id}/addPassword", wrap(graph.add_password))
    app.router.add_post("/v1.0/applications/{id}/removePassword", wrap(graph.remove_password))
    app.router.add_post("/v1.0/servicePrincipals", wrap(graph.create_service_principal))
    app.router.add_get("/v1.0/servicePrincipals", wrap(graph.list_service_principals))
    app.router.add_get("/v1.0/servicePrincipals/{id}", wrap(graph.service_principal))
    app.router.add_post("/v1.0/directoryObjects/getByIds", wrap(graph.get_by_ids))
