"""``Microsoft.ContainerRegistry/registries/scopeMaps`` and ``registries/tokens``: repository-scoped access with a
name and a password, as ACR's ARM API shapes it, and the check the registry's token service makes with them.

- ``scopeMaps/{name}``: ``properties.actions`` (1-500 entries of :mod:`acrlocal.registry.scope_maps`'s grammar),
  ``description``; rendered with ``type`` ``UserDefined``, ``creationDate``. Every registry also has ACR's system
  scope maps (``_repositories_pull``, ``_repositories_push``, ``_repositories_admin``, ...), ``SystemDefined``,
  which cannot be changed or deleted.
- ``tokens/{name}`` (a name that is not a GUID, which would log in as a service principal's app id):
  ``properties.scopeMapId`` (a scope map of the same registry), ``status`` (``enabled`` or
  ``disabled``), ``credentials`` (``passwords`` ``password1``/``password2`` with ``creationTime`` and ``expiry``;
  never their values). Passwords are made by ``POST .../registries/{r}/generateCredentials`` (``tokenId``,
  optional ``name`` and ``expiry``), which answers the values once; only salted HMAC-SHA256 hashes are kept (the
  passwords are 256 random bits, so a slow hash would add nothing).
- Per-SKU counts as ACR documents them (Basic 100, Standard 500, Premium 50,000 tokens and scope maps each; 500
  actions per scope map); going over is 400 ``QuotaExceeded``.

:class:`RepositoryTokens` is the token service's hook (``check_password``, ``actions``): it reads current state on
every call, so a disabled or deleted token, an expired or regenerated password, or a changed scope map takes effect
on the next token request. Errors are ARM's (:class:`~acrlocal.arm.errors.ArmError`), raised before anything is
stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy.engine import Engine

from acrlocal.arm.errors import ArmError, bad_request, invalid_content, resource_not_found
from acrlocal.arm.providers import Call, JsonObject, ResourceType, register, utc_now
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.registry.scope_maps import SYSTEM_SCOPE_MAPS, InvalidScopeMapAction, parse_action, token_actions
from acrlocal.storage.registries import RegistryRecord

log = logging.getLogger(__name__)

NS = "Microsoft.ContainerRegistry"
REGISTRY_TYPE = f"{NS}/registries"
SCOPE_MAP_TYPE = f"{NS}/registries/scopeMaps"
TOKEN_TYPE = f"{NS}/registries/tokens"
API_VERSIONS = ("2025-04-01", "2024-11-01-preview", "2023-11-01-preview", "2023-07-01", "2023-01-01-preview",
                "2022-12-01", "2021-09-01", "2019-05-01")
PASSWORD_NAMES = ("password1", "password2")
MAX_ACTIONS = 500
#: Tokens and scope maps a registry may have, by SKU (each).
SKU_QUOTAS = {"basic": 100, "standard": 500, "premium": 50_000}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{4,49}\Z")
NAME_RULE = "5 to 50 letters, digits, hyphens and underscores, starting with a letter or digit"
#: A token's name is the user name it logs in with; a GUID user name logs in as a service principal's app id
#: (:func:`acrlocal.registry.token_service.credential_kind`), so a token may not be named like one.
TOKEN_NAME = re.compile(r"^(?![0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z)[A-Za-z0-9][A-Za-z0-9_-]{4,49}\Z")
TOKEN_NAME_RULE = (f"{NAME_RULE}, and not of the form of a GUID (a GUID user name logs in to the registry as a "
                   "service principal's app id)")
STATUSES = ("enabled", "disabled")


def _quota(call: Call, registry_id: str) -> int:
    """The registry's SKU's quota of scope maps or tokens (reads the store: in the ``SqlThread``)."""
    registry = call.store.resource(registry_id)
    sku = str(((registry.sku if registry else None) or {}).get("name", "Standard")).lower()
    return SKU_QUOTAS.get(sku, SKU_QUOTAS["standard"])


def _registry_id(resource_id: str) -> str:
    return resource_id.rsplit("/", 2)[0]


def _check_quota(call: Call, draft: Resource, existing: Resource | None, what: str) -> None:
    """400 ``QuotaExceeded`` if a new child would pass the registry's quota (reads the store: in the
    ``SqlThread``)."""
    if existing is not None:
        return
    registry_id = _registry_id(draft.id)
    count = len([r for r in call.store.resources(draft.subscription_id, parent_id=registry_id, type=draft.type)
                 if r.properties.get("type") != "SystemDefined"])
    limit = _quota(call, registry_id)
    if count >= limit:
        raise ArmError(400, "QuotaExceeded", f"The registry already has {count} {what}; its SKU allows {limit}.")


class _RegistryChild(ResourceType):
    """What scope maps and tokens share: the namespace, API versions, no location, and the name rule (which tokens
    narrow)."""

    namespace = NS
    api_versions = API_VERSIONS
    location_required = False
    name_pattern: ClassVar[re.Pattern[str]] = NAME
    name_rule = NAME_RULE


class ScopeMaps(_RegistryChild):
    type = "registries/scopeMaps"

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        if draft.name in SYSTEM_SCOPE_MAPS or (existing and existing.properties.get("type") == "SystemDefined"):
            raise bad_request("CannotModifySystemScopeMap", f"The scope map '{draft.name}' is system defined "
                              "and cannot be changed.")
        actions = draft.properties.get("actions")
        if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
            raise invalid_content(f"'properties.actions' must be a list of 1 to {MAX_ACTIONS} scope map actions.")
        try:
            parsed = [str(parse_action(a)) for a in actions]
        except InvalidScopeMapAction as exc:
            raise bad_request("InvalidScopeMapAction", str(exc)) from None
        description = draft.properties.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 256):
            raise invalid_content("'properties.description' must be a string of at most 256 characters.")
        await call.run(_check_quota, call, draft, existing, "scope maps")
        created = (existing.properties.get("creationDate") if existing else None) or utc_now()
        properties: JsonObject = {"actions": list(dict.fromkeys(parsed)), "type": "UserDefined",
                                  "creationDate": created}
        if description is not None:
            properties["description"] = description
        return draft.evolve(properties=properties, tags={}, location=None)

    async def remove(self, call: Call | None, resource: Resource) -> None:
        # Refused when the request deletes the scope map itself; allowed when its registry is being deleted.
        targeted = call is not None and call.request.path.rstrip("/").lower().endswith(
            f"/scopemaps/{resource.name.lower()}")
        if targeted and resource.properties.get("type") == "SystemDefined":
            raise bad_request("CannotDeleteSystemScopeMap", f"The scope map '{resource.name}' is system defined "
                              "and cannot be deleted.")

    def validate_name(self, call: Call, name: str) -> None:
        if name in SYSTEM_SCOPE_MAPS:
            return  # PUT on a system scope map reaches prepare, which refuses it with ACR's message
        super().validate_name(call, name)

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        """Every registry gets the system scope maps it lacks, in one call through the ``SqlThread``."""
        await services.sql.run(self._reconcile, services, store)

    @staticmethod
    def _reconcile(services: ArmServices, store: ArmStore) -> None:
        for sub in services.directory.subscriptions():
            for registry in store.resources(sub.id, type=REGISTRY_TYPE):
                ensure_system_scope_maps(store, registry)


def ensure_system_scope_maps(store: ArmStore, registry: Resource) -> None:
    """Give ``registry`` the system scope maps it lacks (at creation and at every start). Blocks on SQL: run it
    through the ``SqlThread``."""
    for name, (description, actions) in SYSTEM_SCOPE_MAPS.items():
        rid = f"{registry.id}/scopeMaps/{name}"
        if store.resource(rid) is not None:
            continue
        store.put_resource(Resource(
            id=rid, type=SCOPE_MAP_TYPE, name=name, subscription_id=registry.subscription_id, group=registry.group,
            properties={"description": description, "type": "SystemDefined", "creationDate": utc_now(),
                        "actions": list(actions)},
            system_data={}, parent_id=registry.id))


# -- tokens ----------------------------------------------------------------------------------------------


def _hash(salt: str, password: str) -> str:
    return hmac.new(bytes.fromhex(salt), password.encode(), hashlib.sha256).hexdigest()


def new_password() -> str:
    """A token password: 256 random bits in base64, as ACR's (no ':', so it survives Basic authentication, and
    never a leading '-', which ``az acr login -p`` would take for an option)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise invalid_content(f"'{what}' must be an ISO 8601 date and time.")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid_content(f"'{what}' value {value[:40]!r} is not an ISO 8601 date and time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _expired(entry: dict[str, Any], now: datetime) -> bool:
    expiry = entry.get("expiry")
    if not expiry:
        return False
    try:
        return datetime.fromisoformat(str(expiry).replace("Z", "+00:00")) <= now
    except ValueError:
        return True


def _credentials(resource: Resource) -> JsonObject:
    stored = resource.internal.get("passwords", {})
    passwords = [{"name": n, "creationTime": stored[n]["creationTime"], "expiry": stored[n].get("expiry")}
                 for n in PASSWORD_NAMES if n in stored]
    return {"certificates": [], "passwords": passwords}


class Tokens(_RegistryChild):
    type = "registries/tokens"
    name_pattern: ClassVar[re.Pattern[str]] = TOKEN_NAME
    name_rule = TOKEN_NAME_RULE

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = draft.properties
        scope_map_id = props.get("scopeMapId")
        if not isinstance(scope_map_id, str):
            raise invalid_content("'properties.scopeMapId' is required: the resource id of a scope map of this "
                                  "registry.")
        registry_id = _registry_id(draft.id)
        if not scope_map_id.lower().startswith(registry_id.lower() + "/scopemaps/"):
            raise bad_request("InvalidScopeMapId", f"The scope map '{scope_map_id[:300]}' is not a scope map of "
                              f"registry '{registry_id.rsplit('/', 1)[-1]}'.")
        scope_map = await call.run(call.store.resource, scope_map_id)
        if scope_map is None or scope_map.type.lower() != SCOPE_MAP_TYPE.lower():
            raise ArmError(404, "ScopeMapNotFound", f"The scope map '{scope_map_id.rsplit('/', 1)[-1]}' was not "
                           "found in the registry.")
        status = props.get("status", existing.properties.get("status") if existing else "enabled")
        if status not in STATUSES:
            raise invalid_content(f"'properties.status' must be 'enabled' or 'disabled', not {str(status)[:20]!r}.")
        await call.run(_check_quota, call, draft, existing, "tokens")
        created = (existing.properties.get("creationDate") if existing else None) or utc_now()
        properties: JsonObject = {"scopeMapId": scope_map.id, "status": status, "creationDate": created}
        return draft.evolve(properties=properties, tags={}, location=None)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        body["properties"]["credentials"] = _credentials(resource)
        return body


async def generate_credentials(call: Call, registry: Resource) -> JsonObject:
    """``POST .../registries/{r}/generateCredentials``: new values for one (``name``) or both passwords of the
    token ``tokenId``, with an optional ``expiry``; the values are answered once and only their hashes kept. The
    old value of a regenerated password stops working at once. The token is read and written in one call through
    the ``SqlThread``."""
    return await call.run(_generate_credentials, call, registry)


def _generate_credentials(call: Call, registry: Resource) -> JsonObject:
    body = call.body
    token_id = body.get("tokenId")
    if not isinstance(token_id, str):
        raise invalid_content("'tokenId' is required: the resource id of a token of this registry.")
    if not token_id.lower().startswith(registry.id.lower() + "/tokens/"):
        raise bad_request("InvalidTokenId", f"The token '{token_id[:300]}' is not a token of registry "
                          f"'{registry.name}'.")
    token = call.store.resource(token_id)
    if token is None or token.type.lower() != TOKEN_TYPE.lower():
        raise resource_not_found(TOKEN_TYPE, token_id.rsplit("/", 1)[-1], registry.group)
    which = body.get("name")
    if which is not None and which not in PASSWORD_NAMES:
        raise invalid_content(f"'name' must be 'password1' or 'password2', not {str(which)[:30]!r}.")
    expiry = body.get("expiry")
    expiry_text = None
    if expiry is not None:
        moment = _parse_time(expiry, "expiry")
        expiry_text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    names = [which] if which else list(PASSWORD_NAMES)
    stored = dict(token.internal.get("passwords", {}))
    now = utc_now()
    answered = []
    for name in names:
        value = new_password()
        salt = secrets.token_hex(16)
        stored[name] = {"salt": salt, "hash": _hash(salt, value), "creationTime": now, "expiry": expiry_text}
        answered.append({"name": name, "value": value, "creationTime": now, "expiry": expiry_text})
    call.store.put_resource(token.evolve(internal={**token.internal, "passwords": stored},
                                         system_data=call.system_data(token.system_data)))
    return {"username": token.name, "passwords": answered}


class RepositoryTokens:
    """The token service's hook for repository-scoped tokens of every registry (current state, every call)."""

    def __init__(self, engine: Engine) -> None:
        self.store = ArmStore(engine)

    def _token(self, registry: RegistryRecord, name: str) -> Resource | None:
        registry_id = registry.properties.get("resourceId")
        if not registry_id or not NAME.fullmatch(name):
            return None
        token = self.store.resource(f"{registry_id}/tokens/{name}")
        if token is None or token.properties.get("status") != "enabled":
            return None
        return token

    def _live_passwords(self, token: Resource) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        return [p for p in token.internal.get("passwords", {}).values() if not _expired(p, now)]

    def check_password(self, registry: RegistryRecord, name: str, password: str) -> bool:
        token = self._token(registry, name)
        if token is None:
            return False
        ok = False
        for entry in self._live_passwords(token):
            if hmac.compare_digest(_hash(str(entry["salt"]), password), str(entry["hash"])):
                ok = True
        return ok

    def enabled(self, registry: RegistryRecord, name: str) -> bool:
        return self._token(registry, name) is not None

    def actions(self, registry: RegistryRecord, name: str, resource_type: str, resource: str) -> Collection[str]:
        token = self._token(registry, name)
        if token is None or resource_type != "repository" or not self._live_passwords(token):
            return frozenset()
        scope_map = self.store.resource(str(token.properties.get("scopeMapId")))
        if scope_map is None:
            return frozenset()
        return token_actions(scope_map.properties.get("actions") or [], resource)


register(ScopeMaps())
register(Tokens())
