"""ARM request paths, parsed (pure).

ARM compares the keywords of a path (``subscriptions``, ``resourceGroups``, ``providers``) and every name ignoring
case; :func:`parse_path` accepts any spelling and returns an :class:`ArmPath` whose ``kind`` says what the path
names. Resource provider paths are kept generic here (``namespace`` plus the segments after it); which of those
are types, names or actions is decided by the registered providers (:mod:`.providers`).

Malformed paths raise :class:`~acrlocal.arm.errors.ArmError` (400 ``InvalidRequestUri`` or
``InvalidSubscriptionId``) naming the offending segment; nothing here touches storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from acrlocal.arm.errors import ArmError

GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+\Z")
# ARM refuses these in any path segment, as well as control characters.
FORBIDDEN = re.compile(r"[<>%&\\?#*:\x00-\x1f\x7f]")
MAX_PATH = 4096
GROUP_NAME = re.compile(r"^[-\w.()]{1,90}\Z")

PathKind = Literal[
    "subscription",        # /subscriptions/{sub}
    "groups",              # /subscriptions/{sub}/resourcegroups
    "group",               # /subscriptions/{sub}/resourcegroups/{rg}
    "resources",           # /subscriptions/{sub}[/resourcegroups/{rg}]/resources
    "providers",           # /subscriptions/{sub}/providers
    "provider",            # /subscriptions/{sub}/providers/{ns}[/{segments...}]  and  /{scope}/providers/{ns}/...
]


@dataclass(frozen=True)
class ArmPath:
    """A parsed path. ``scope`` is the canonical scope the path sits under (``/`` for a tenant-level path):
    for a provider path it is everything before the last ``/providers/{namespace}``."""

    kind: PathKind
    subscription: str | None = None
    group: str | None = None
    namespace: str | None = None
    segments: tuple[str, ...] = ()
    scope: str = "/"

    @property
    def group_scope(self) -> str:
        assert self.subscription is not None
        if self.group is None:
            return f"/subscriptions/{self.subscription}"
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"


def _invalid_uri(path: str, problem: str) -> ArmError:
    return ArmError(400, "InvalidRequestUri", f"The request uri '{path[:300]}' is invalid: {problem}.")


def _check_segment(path: str, segment: str) -> str:
    if not segment or len(segment) > 260 or FORBIDDEN.search(segment) or segment != segment.strip():
        raise _invalid_uri(path, f"the segment '{segment[:100]}' is not valid")
    return segment


def _canonical_scope(parts: list[str], path: str) -> str:
    """The canonical spelling of a scope given as path segments (keywords as ARM spells them)."""
    if not parts:
        return "/"
    out: list[str] = []
    if parts[0].lower() != "subscriptions" or len(parts) < 2:
        raise _invalid_uri(path, "a scope must be '/' or start with '/subscriptions/{subscriptionId}'")
    out += ["subscriptions", _subscription(parts[1])]
    i = 2
    if i < len(parts) and parts[i].lower() == "resourcegroups":
        if i + 1 >= len(parts):
            raise _invalid_uri(path, "expected a resource group name after 'resourceGroups'")
        out += ["resourceGroups", check_group_name(parts[i + 1])]
        i += 2
    in_resource = False
    while i < len(parts):
        if parts[i].lower() == "providers":
            if i + 3 >= len(parts) or not NAMESPACE.match(parts[i + 1]):
                raise _invalid_uri(path, "expected 'providers/{namespace}/{type}/{name}'")
            out += ["providers", parts[i + 1]]
            i += 2
        elif not in_resource:
            raise _invalid_uri(path, f"expected 'providers', found '{parts[i][:100]}'")
        if i + 1 >= len(parts):
            raise _invalid_uri(path, f"the resource type '{parts[i][:100]}' has no name after it")
        out += [_check_segment(path, parts[i]), _check_segment(path, parts[i + 1])]
        in_resource = True
        i += 2
    return "/" + "/".join(out)


def check_group_name(name: str) -> str:
    """``name`` if it is a valid resource group name: 1-90 letters, digits, ``-_.()``, not ending in ``.``."""
    if not GROUP_NAME.match(name) or name.endswith("."):
        raise ArmError(400, "InvalidResourceGroup", f"The provided resource group name '{name[:100]}' has these "
                       "invalid characters or length. The name can only be 1-90 letters, digits, '-', '_', '.', "
                       "'(' or ')', and cannot end with '.'.")
    return name


def _subscription(value: str) -> str:
    if not GUID.match(value):
        raise ArmError(400, "InvalidSubscriptionId",
                       f"The provided subscription identifier '{value[:100]}' is malformed or invalid.")
    return value.lower()


def _drop_empty_parent_paths(parts: list[str]) -> list[str]:
    """The generic resource calls of azure-mgmt-resource (``az resource create|show|delete``) put the parent
    resource path between the namespace and the type, empty for a top-level resource:
    ``/providers/Microsoft.Compute//virtualMachines/vm1``. ARM reads that as no parent; so do we. Any other empty
    segment stays and is refused."""
    return [p for i, p in enumerate(parts)
            if p or i < 2 or parts[i - 2].lower() != "providers" or not NAMESPACE.match(parts[i - 1])]


def parse_request_path(raw_path: str) -> ArmPath:
    """:func:`parse_path` of a request's target as it came (``request.raw_path``; a query is left out), each
    segment percent-decoded on its own: an encoded ``/`` (``%2F``) belongs to its segment, not a separator, and
    since no ARM name holds a ``/``, a path with one is refused (400 ``InvalidRequestUri``). Decoding the path whole
    first would make ``deployments/d%2F`` the deployment ``d`` and ``deployments/d%2F/cancel`` an empty segment."""
    segments = [unquote(s) for s in raw_path.split("?", 1)[0].split("/")]
    for segment in segments:
        if "/" in segment:
            raise _invalid_uri(raw_path, f"the segment '{segment[:100]}' is not valid")
    return parse_path("/".join(segments))


def parse_path(path: str) -> ArmPath:
    """Parse an ARM path (the part after the host, without the query). One trailing ``/`` is tolerated."""
    if len(path) > MAX_PATH:
        raise _invalid_uri(path, f"it is longer than {MAX_PATH} characters")
    body = path.strip("/")
    parts = _drop_empty_parent_paths(body.split("/") if body else [])
    if any(p == "" for p in parts):
        raise _invalid_uri(path, "it has an empty segment ('//')")
    lowered = [p.lower() for p in parts]
    # Extension resources and tenant-level providers: the last '/providers/{Namespace}' decides.
    last = max((i for i, p in enumerate(lowered) if p == "providers" and i + 1 < len(parts)
                and NAMESPACE.match(parts[i + 1])), default=None)
    if last is not None:
        scope_parts = parts[:last]
        scope = _canonical_scope(scope_parts, path)
        sub = scope.split("/")[2] if scope != "/" else None
        group = scope_parts[3] if len(scope_parts) >= 4 and lowered[2] == "resourcegroups" else None
        segments = tuple(_check_segment(path, s) for s in parts[last + 2:])
        return ArmPath("provider", sub, group, parts[last + 1], segments, scope)
    if not parts or lowered[0] != "subscriptions" or len(parts) < 2:
        raise _invalid_uri(path, "expected '/subscriptions/{subscriptionId}/...'")
    sub = _subscription(parts[1])
    rest, low = parts[2:], lowered[2:]
    if not rest:
        return ArmPath("subscription", sub, scope=f"/subscriptions/{sub}")
    if low == ["resourcegroups"]:
        return ArmPath("groups", sub, scope=f"/subscriptions/{sub}")
    if low == ["resources"]:
        return ArmPath("resources", sub, scope=f"/subscriptions/{sub}")
    if low == ["providers"]:
        return ArmPath("providers", sub, scope=f"/subscriptions/{sub}")
    if low[0] == "resourcegroups" and len(rest) >= 2:
        group = check_group_name(rest[1])
        scope = f"/subscriptions/{sub}/resourceGroups/{group}"
        if len(rest) == 2:
            return ArmPath("group", sub, group, scope=scope)
        if low[2:] == ["resources"]:
            return ArmPath("resources", sub, group, scope=scope)
        if low[2] == "deployments":  # ARM's older spelling of .../providers/Microsoft.Resources/deployments/...
            segments = tuple(_check_segment(path, s) for s in rest[2:])
            return ArmPath("provider", sub, group, "Microsoft.Resources", segments, scope)
    if low[0] == "providers" and len(rest) >= 2:
        raise _invalid_uri(path, f"'{rest[1][:100]}' is not a resource provider namespace")
    raise _invalid_uri(path, f"'{'/'.join(rest)[:200]}' is not a resource path")
