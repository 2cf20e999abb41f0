"""ARM scopes: the root ``/``, a subscription, a resource group, or a resource and its children.

::

    /
    /subscriptions/{subscriptionId}
    /subscriptions/{subscriptionId}/resourceGroups/{resourceGroup}
    /subscriptions/{subscriptionId}[/resourceGroups/{resourceGroup}]/providers/{Namespace}/{type}/{name}
        [/{childType}/{childName}]...[/providers/{Namespace}/{type}/{name}...]

ARM compares ids case-insensitively, so :class:`Scope` equality, hashing and :func:`is_at_or_above` ignore case;
``str(scope)`` keeps the names as given but spells the keywords (``subscriptions``, ``resourceGroups``,
``providers``) and the subscription GUID the way ARM returns them. A role assignment applies at its scope and every
scope below it: that is :meth:`Scope.covers`.

Pure. Malformed text raises :class:`~acrlocal.rbac.errors.InvalidScope` (a ``ValueError``) naming the bad part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from acrlocal.rbac.errors import InvalidScope

ScopeKind = Literal["root", "subscription", "resourceGroup", "resource"]

MAX_SCOPE_LENGTH = 2048
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
# Resource group names: letters and digits (any script), underscore, hyphen, period, parentheses; 1-90; no final '.'.
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}\Z")
_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)+\Z")
_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9]*\Z")
# ARM refuses these in resource names, as well as control characters.
_FORBIDDEN_IN_NAME = re.compile(r"[<>%&\\?#\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True, eq=False)
class Scope:
    """A parsed scope. Build one with :func:`parse_scope`; the fields are its canonical path segments."""

    segments: tuple[str, ...]
    # Positions of the ``providers`` keywords in ``segments`` (a resource's name may itself be "providers").
    provider_positions: tuple[int, ...] = ()

    # --- identity -------------------------------------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, ...]:
        """The case-insensitive identity of the scope (ARM compares ids ignoring case)."""
        return tuple(segment.lower() for segment in self.segments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scope) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __str__(self) -> str:
        return "/" + "/".join(self.segments)

    def __repr__(self) -> str:
        return f"Scope({str(self)!r})"

    # --- what it names --------------------------------------------------------------------------------------------
    @property
    def kind(self) -> ScopeKind:
        if not self.segments:
            return "root"
        if len(self.segments) == 2:
            return "subscription"
        if len(self.segments) == 4 and self.segments[2] == "resourceGroups":
            return "resourceGroup"
        return "resource"

    @property
    def subscription_id(self) -> str | None:
        return self.segments[1] if self.segments else None

    @property
    def resource_group(self) -> str | None:
        if len(self.segments) >= 4 and self.segments[2] == "resourceGroups":
            return self.segments[3]
        return None

    @property
    def resource_type(self) -> str | None:
        """``Namespace/type[/childType...]`` of a resource scope (of the last provider, for extension resources)."""
        if not self.provider_positions:
            return None
        rest = self.segments[self.provider_positions[-1] + 1 :]
        return "/".join([rest[0], *rest[1::2]])

    @property
    def name(self) -> str | None:
        """The resource's own name (the last segment) for a resource scope, otherwise ``None``."""
        return self.segments[-1] if self.kind == "resource" else None

    @property
    def parent(self) -> Scope | None:
        """The scope one level up (a child resource's parent resource, a resource's group...), ``None`` at root."""
        if not self.segments:
            return None
        if len(self.segments) == 2:
            return ROOT
        positions = self.provider_positions
        if positions and positions[-1] == len(self.segments) - 4:
            return Scope(self.segments[:-4], positions[:-1])
        return Scope(self.segments[:-2], positions)

    # --- inheritance ----------------------------------------------------------------------------------------------
    def covers(self, other: Scope) -> bool:
        """True if this scope is ``other`` or an ancestor of it: an assignment here applies there."""
        mine, theirs = self.key, other.key
        return len(mine) <= len(theirs) and theirs[: len(mine)] == mine


ROOT = Scope(())


def _fail(text: str, problem: str) -> InvalidScope:
    return InvalidScope(f"scope {text[:200]!r} is not a valid ARM scope: {problem}")


def _check_name(text: str, what: str, value: str) -> None:
    if len(value) > 260 or _FORBIDDEN_IN_NAME.search(value) or not value.strip():
        raise _fail(text, f"{what} {value[:100]!r} is not a valid name")


@lru_cache(maxsize=4096)
def _parse(text: str) -> Scope:
    if len(text) > MAX_SCOPE_LENGTH:
        raise _fail(text, f"longer than {MAX_SCOPE_LENGTH} characters")
    if text == "/":
        return ROOT
    if not text.startswith("/"):
        raise _fail(text, "expected it to start with '/'")
    body = text[1:-1] if text.endswith("/") else text[1:]
    parts = body.split("/")
    if any(part == "" for part in parts):
        raise _fail(text, "it has an empty segment ('//')")
    if parts[0].lower() != "subscriptions":
        raise _fail(text, "expected '/' or '/subscriptions/{subscriptionId}...'")
    if len(parts) < 2 or not _GUID.match(parts[1]):
        raise _fail(text, "expected a subscription id (a GUID) after '/subscriptions/'")
    segments = ["subscriptions", parts[1].lower()]
    positions: list[int] = []
    rest = parts[2:]
    if rest and rest[0].lower() == "resourcegroups":
        if len(rest) < 2:
            raise _fail(text, "expected a resource group name after 'resourceGroups'")
        group = rest[1]
        if not _RESOURCE_GROUP.match(group) or group.endswith("."):
            raise _fail(text, f"resource group name {group[:100]!r} is not valid (1-90 letters, digits, '_-.()')")
        segments += ["resourceGroups", group]
        rest = rest[2:]
    if rest and rest[0].lower() != "providers":
        raise _fail(text, f"expected 'resourceGroups' or 'providers', found {rest[0][:100]!r}")
    while rest:
        if rest[0].lower() == "providers":
            if len(rest) < 4:
                raise _fail(text, "expected 'providers/{Namespace}/{type}/{name}'")
            namespace, kind, name = rest[1], rest[2], rest[3]
            if not _NAMESPACE.match(namespace):
                raise _fail(text, f"provider namespace {namespace[:100]!r} is not of the form 'Company.Service'")
            positions.append(len(segments))
            segments += ["providers", namespace]
            rest = rest[2:]
        else:
            if len(rest) < 2:
                raise _fail(text, f"resource type {rest[0][:100]!r} has no name after it")
            kind, name = rest[0], rest[1]
        if not _TYPE.match(kind):
            raise _fail(text, f"resource type {kind[:100]!r} is not valid")
        _check_name(text, "resource name", name)
        segments += [kind, name]
        rest = rest[2:]
    return Scope(tuple(segments), tuple(positions))


def parse_scope(text: str | Scope) -> Scope:
    """Parse ``text`` as an ARM scope (a :class:`Scope` is returned as is).

    Raises :class:`~acrlocal.rbac.errors.InvalidScope` if it is not one. One trailing ``/`` is tolerated.
    """
    if isinstance(text, Scope):
        return text
    if not isinstance(text, str):
        raise InvalidScope(f"scope must be a string, not {type(text).__name__}")
    return _parse(text)


def normalize_scope(text: str | Scope) -> str:
    """The canonical spelling of a scope (keywords and subscription GUID as ARM returns them)."""
    return str(parse_scope(text))


def same_scope(a: str | Scope, b: str | Scope) -> bool:
    """True if ``a`` and ``b`` name the same scope, compared the way ARM does (ignoring case)."""
    return parse_scope(a) == parse_scope(b)


def is_at_or_above(a: str | Scope, b: str | Scope) -> bool:
    """True if scope ``a`` is ``b`` or one of its ancestors, so an assignment at ``a`` applies at ``b``."""
    return parse_scope(a).covers(parse_scope(b))
