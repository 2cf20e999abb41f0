"""Resource providers: how a resource type plugs into the control plane.

A provider module subclasses :class:`ResourceType` for each type it serves, registers an instance with
:func:`register`, and is listed in :data:`PROVIDER_MODULES`. The framework (:mod:`.generic`) does everything
generic: parsing the path, the bearer token, RBAC on the target scope (``{type}/read|write|delete`` and
``{type}/{action}/action``), the group and parent checks, JSON parsing, storage in ``arm_resources``, rendering,
ARM's status codes. The type only says what is particular to it, in hooks that are called in this order:

- PUT/PATCH: :meth:`ResourceType.validate_name` → :meth:`~ResourceType.prepare` (validate the body, return the
  resource to store; no side effects) → :meth:`~ResourceType.apply` (side effects, e.g. start a registry; may still
  refuse) → stored → :meth:`~ResourceType.render`. An :class:`~acrlocal.arm.errors.ArmError` raised before the
  resource is stored leaves nothing changed.
- DELETE (also of the resource's group): children first, then :meth:`~ResourceType.remove` (side effects) → the
  row, its children's rows and the role assignments at or below it are deleted in one transaction.
- POST ``{id}/{action}``: the method named in :attr:`ResourceType.actions`.
- Server start: :meth:`~ResourceType.on_start` (reconcile state kept elsewhere).

The hooks run on the event loop: what they read or write of the store, the directory or the VMs' table goes through
:meth:`Call.run` (the server's ``SqlThread``; inline on SQLite, off the loop on PostgreSQL), a check with the write
it guards in one call. :meth:`ResourceType.render` runs in that thread.

A namespace whose paths do not fit this model (role assignments live at any scope) registers a
:class:`NamespaceHandler` instead, which receives every call under ``/providers/{namespace}``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar, cast
from urllib.parse import quote

from aiohttp import web

from acrlocal.arm.errors import ArmError, bad_request
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.errors import NotFound

if TYPE_CHECKING:
    from acrlocal.arm.auth import Caller
    from acrlocal.arm.paths import ArmPath
    from acrlocal.arm.services import ArmServices
    from acrlocal.storage.sql import SqlThread

log = logging.getLogger(__name__)

#: Modules that register providers; imported by :func:`load_providers` (by name: they import this module).
PROVIDER_MODULES = (
    "acrlocal.arm.registries",
    "acrlocal.arm.tokens",
    "acrlocal.arm.authorization",
    "acrlocal.arm.identities",
    "acrlocal.arm.compute",
    "acrlocal.arm.deployments",
    "acrlocal.arm.network",
    "acrlocal.arm.compute_locations",
    "acrlocal.arm.signing_keys",
    "acrlocal.arm.tenants",
)

#: What every type offers unless it says otherwise (az and the SDKs only need the list to be non-empty).
DEFAULT_LOCATIONS = ("westus", "westus2", "eastus", "eastus2", "centralus", "northeurope", "westeurope")

JsonObject = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RequestLike(Protocol):
    """What providers read of a request: an aiohttp request, or an :class:`InternalRequest` that the control
    plane makes itself (a template deployment creating its resources)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def raw_path(self) -> str: ...
    @property
    def query(self) -> Mapping[str, str]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


def sql_way(sql: SqlThread, method: str) -> Callable[..., Awaitable[Any]]:
    """How a control-plane (ARM or Graph) request of ``method`` hands its store calls to ``sql``: a GET's or HEAD's
    through :meth:`~acrlocal.storage.sql.SqlThread.run` (inline on SQLite), a write's through
    :meth:`~acrlocal.storage.sql.SqlThread.run_long` (in the thread on every backend), since a write's call may
    commit more than once and must wait for another writer's lock between its commits."""
    return sql.run if method in ("GET", "HEAD") else sql.run_long


@dataclass(frozen=True)
class InternalRequest:
    """A request the control plane sends itself, e.g. a deployment's PUT of one of its resources."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def raw_path(self) -> str:
        """``path`` as a client would send it: each segment percent-encoded."""
        return "/".join(quote(segment, safe="") for segment in self.path.split("/"))


@dataclass
class Call:
    """One authenticated, parsed ARM request as providers see it.

    ``body`` is the request's JSON object (``{}`` when it had none). ``caller.require(action, scope)`` checks a
    further permission; ``caller.require_linked(...)`` one on a resource the body names (e.g.
    ``.../userAssignedIdentities/assign/action`` on an identity a VM wants), before that resource is looked up.
    """

    services: ArmServices
    store: ArmStore
    caller: Caller
    request: RequestLike
    api_version: str
    body: JsonObject = field(default_factory=dict)
    #: The control plane's write lock (see :mod:`.routes`), for work that goes on after the answer (a deployment).
    write_lock: asyncio.Lock | None = None

    @property
    def query(self) -> Any:
        return self.request.query

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` through the server's :class:`~acrlocal.storage.sql.SqlThread` (a GET's inline on
        SQLite; a write's in the thread on every backend, since a write's call may commit more than once, and always
        off the event loop on PostgreSQL): every store and directory call of a handler goes through here, a check
        and the write it guards in one ``fn``. ``fn`` must not wait for the event loop or for another call of the
        thread; what it raises comes back here."""
        return cast(T, await sql_way(self.services.sql, self.request.method)(fn, *args, **kwargs))

    def tenant_resource(self, resource_id: str) -> Resource | None:
        """The resource ``resource_id`` names if it is in a subscription of the caller's tenant; ``None`` if it does
        not exist or is another tenant's, which a caller cannot tell apart. What a request's body names by id (a
        subnet, an interface, an identity) is looked up with this, never with ``store.resource``: another tenant's
        resource is neither used nor confirmed. Reads the store and the directory: call it through :meth:`run`."""
        resource = self.store.resource(resource_id)
        if resource is None:
            return None
        try:
            subscription = self.services.directory.subscription(resource.subscription_id)
        except NotFound:
            return None
        return resource if subscription.tenant_id == self.caller.tenant_id else None

    def system_data(self, existing: dict[str, Any] | None = None) -> dict[str, Any]:
        """ARM's ``systemData`` for a write by this caller (keeps the creation half of ``existing``)."""
        now = utc_now()
        kind = "Application" if self.caller.principal.kind != "User" else "User"
        created = {k: v for k, v in (existing or {}).items() if k.startswith("created")}
        return {"createdBy": self.caller.client, "createdByType": kind, "createdAt": now, **created,
                "lastModifiedBy": self.caller.client, "lastModifiedByType": kind, "lastModifiedAt": now}


class ResourceType:
    """A resource type served from the generic ``arm_resources`` table. Subclass it, set the class attributes,
    override the hooks you need, and :func:`register` an instance.

    ``type`` is the type below the namespace; a child type names its parents (``registries/webhooks``): its
    resources live at ``{parent id}/webhooks/{name}`` and are deleted with the parent.
    """

    namespace: ClassVar[str] = ""
    type: ClassVar[str] = ""
    api_versions: ClassVar[tuple[str, ...]] = ("2023-01-01",)
    locations: ClassVar[tuple[str, ...]] = DEFAULT_LOCATIONS
    #: Names must match this (checked by :meth:`validate_name`); ``name_rule`` says so in the error message.
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}[A-Za-z0-9_]\Z|^\w\Z")
    name_rule: ClassVar[str] = "1-64 letters, digits, '-', '_' and '.', starting with a letter or digit"
    #: Whether a PUT must carry ``location`` (top-level tracked resources do; child resources usually not).
    location_required: ClassVar[bool] = True
    #: POST ``{id}/{action}`` → name of a method ``(call, resource) -> JSON | None``; RBAC operation
    #: ``{namespace}/{type}/{action}/action``.
    actions: ClassVar[dict[str, str]] = {}
    #: Actions (lower-case names) that authorize themselves instead of requiring ``{type}/{action}/action``
    #: (e.g. one that a data action such as ``virtualMachines/loginAsAdmin/action`` also permits).
    self_authorized_actions: ClassVar[frozenset[str]] = frozenset()
    #: Actions (lower-case names) that run outside the control plane's write lock: they change no ARM state
    #: and may take long (a VM's run-command, whose script may itself call ARM).
    unlocked_actions: ClassVar[frozenset[str]] = frozenset()

    # -- derived names -------------------------------------------------------------------------------

    @property
    def full_type(self) -> str:
        return f"{self.namespace}/{self.type}"

    @property
    def is_child(self) -> bool:
        return "/" in self.type

    def operation(self, verb: str) -> str:
        """The RBAC operation for ``verb`` on this type (``read``, ``write``, ``delete``, ``x/action``)."""
        return f"{self.full_type}/{verb}"

    # -- hooks ---------------------------------------------------------------------------------------

    def validate_name(self, call: Call, name: str) -> None:
        """Raise 400 ``InvalidResourceName`` unless ``name`` is valid for this type."""
        if not self.name_pattern.match(name):
            raise bad_request("InvalidResourceName", f"Resource name '{name[:100]}' is invalid. The name must be "
                              f"{self.name_rule}.")

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        """Validate ``call.body`` and return the resource to store; no side effects. ``draft`` already holds the
        id, name, type and the generic fields of the body (location, tags, sku, kind, identity, properties),
        merged over ``existing`` for a PATCH. The default accepts the draft as it is."""
        return draft

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        """Side effects of a create or update, before it is stored; may return the resource changed (e.g. with
        ``properties.loginServer``). Raise :class:`ArmError` to refuse: nothing is stored then."""
        return resource

    async def check_remove(self, call: Call | None, resource: Resource) -> None:
        """Raise :class:`ArmError` to refuse a delete (e.g. of a resource in use); no side effects. A delete asks
        this of every resource it would delete, children included, before any of them goes (``call`` is ``None``
        when the server cleans up). The default allows it."""

    async def remove(self, call: Call | None, resource: Resource) -> None:
        """Side effects of a delete, before the rows go (``call`` is ``None`` when the server cleans up)."""

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        """The ARM JSON of ``resource``; the default is ARM's usual shape with ``provisioningState``. Called in the
        server's ``SqlThread`` (a type may read the store to render, e.g. a network's subnets)."""
        body: JsonObject = {"id": resource.id, "name": resource.name, "type": resource.type}
        if resource.location is not None:
            body["location"] = resource.location
        if resource.kind is not None:
            body["kind"] = resource.kind
        if resource.sku is not None:
            body["sku"] = resource.sku
        if resource.identity is not None:
            body["identity"] = resource.identity
        if not self.is_child or resource.tags:
            body["tags"] = resource.tags
        body.update(resource.extra)
        body["properties"] = {**resource.properties, "provisioningState": "Succeeded"}
        if resource.system_data:
            body["systemData"] = resource.system_data
        return body

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        """Called once when the server has started (after the default registry exists)."""


ActionHandler = Callable[[Call, "ArmPath"], Awaitable[JsonObject | None]]
LocationHandler = Callable[[Call, "ArmPath"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class NamespaceAction:
    """A POST at ``/subscriptions/{sub}/providers/{namespace}/{name}`` (e.g. ``checkNameAvailability``),
    authorized as ``operation`` at the subscription."""

    namespace: str
    name: str
    operation: str
    handler: ActionHandler


TenantActionHandler = Callable[[Call, "ArmPath"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class TenantAction:
    """A POST at the tenant root, ``/providers/{namespace}/{name}`` (no subscription), e.g. acrlocal's
    ``createTenant``. RBAC has no scope above the tenant's root to grant it at, so the handler authorizes the call
    itself (naming ``operation`` in its 403) and chooses its status."""

    namespace: str
    name: str
    operation: str
    handler: TenantActionHandler


class NamespaceHandler:
    """Full control of every path under ``/providers/{namespace}``, at any scope. ``resource_types`` is what
    ``GET /subscriptions/{sub}/providers/{namespace}`` lists: ``{type: api_versions}``."""

    namespace: ClassVar[str] = ""
    resource_types: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: POST actions (last path segment, lower case) that change no ARM state and run outside the write lock.
    unlocked_actions: ClassVar[frozenset[str]] = frozenset()

    async def handle(self, call: Call, path: ArmPath) -> web.StreamResponse:
        raise NotImplementedError  # pragma: no cover

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        """Called once when the server has started."""


class ProviderRegistry:
    """Every registered type, namespace action and namespace handler, looked up ignoring case."""

    def __init__(self) -> None:
        self.types: dict[tuple[str, str], ResourceType] = {}
        self.actions: dict[tuple[str, str], NamespaceAction] = {}
        self.tenant_actions: dict[tuple[str, str], TenantAction] = {}
        self.handlers: dict[str, NamespaceHandler] = {}
        #: ``/subscriptions/{sub}/providers/{namespace}/locations/{location}/...`` → its handler, by namespace.
        self.location_handlers: dict[str, LocationHandler] = {}
        self.namespaces: dict[str, str] = {}  # lower-case → as spelled

    def add_type(self, rt: ResourceType) -> None:
        if not rt.namespace or not rt.type:
            raise ValueError(f"{type(rt).__name__} must set namespace and type")
        self.types[(rt.namespace.lower(), rt.type.lower())] = rt
        self.namespaces[rt.namespace.lower()] = rt.namespace

    def add_action(self, action: NamespaceAction) -> None:
        self.actions[(action.namespace.lower(), action.name.lower())] = action
        self.namespaces.setdefault(action.namespace.lower(), action.namespace)

    def add_tenant_action(self, action: TenantAction) -> None:
        self.tenant_actions[(action.namespace.lower(), action.name.lower())] = action
        self.namespaces.setdefault(action.namespace.lower(), action.namespace)

    def add_handler(self, handler: NamespaceHandler) -> None:
        self.handlers[handler.namespace.lower()] = handler
        self.namespaces[handler.namespace.lower()] = handler.namespace

    def type(self, namespace: str, type_path: str) -> ResourceType | None:
        return self.types.get((namespace.lower(), type_path.lower()))

    def type_of(self, full_type: str) -> ResourceType | None:
        namespace, _, rest = full_type.partition("/")
        return self.type(namespace, rest)

    def is_unlocked_action(self, action: str) -> bool:
        """Whether a POST ending in ``action`` is one that runs outside the write lock."""
        action = action.lower()
        return any(action in rt.unlocked_actions for rt in self.types.values()) or \
            any(action in handler.unlocked_actions for handler in self.handlers.values())

    def namespace_types(self, namespace: str) -> list[ResourceType]:
        return [rt for (ns, _), rt in self.types.items() if ns == namespace.lower()]


REGISTRY = ProviderRegistry()


def register(rt: ResourceType) -> ResourceType:
    """Serve ``rt``'s type; returns it, so a module can write ``register(Registries())``."""
    REGISTRY.add_type(rt)
    return rt


def register_action(action: NamespaceAction) -> NamespaceAction:
    REGISTRY.add_action(action)
    return action


def register_tenant_action(action: TenantAction) -> TenantAction:
    REGISTRY.add_tenant_action(action)
    return action


def register_location_handler(namespace: str, handler: LocationHandler) -> LocationHandler:
    """Serve ``/subscriptions/{sub}/providers/{namespace}/locations/...`` (images, operation statuses...) with
    ``handler(call, path)``; the namespace's resource types are served as before."""
    REGISTRY.location_handlers[namespace.lower()] = handler
    return handler


def register_handler(handler: NamespaceHandler) -> NamespaceHandler:
    REGISTRY.add_handler(handler)
    return handler


def load_providers() -> ProviderRegistry:
    """Import every module of :data:`PROVIDER_MODULES` (each registers its types)."""
    for name in PROVIDER_MODULES:
        importlib.import_module(name)
    return REGISTRY


def new_guid() -> str:
    return str(uuid.uuid4())


def require_object(value: Any, what: str) -> JsonObject:
    """``value`` if it is a JSON object; 400 ``InvalidRequestContent`` naming ``what`` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArmError(400, "InvalidRequestContent", f"The request content was invalid and could not be "
                       f"deserialized: '{what}' must be a JSON object, not {type(value).__name__}.")
    return value
