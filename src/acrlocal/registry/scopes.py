"""The Docker token scope grammar (``repository:<name>:<actions>``), parsed and rendered. Pure; no I/O.

The grammar (Distribution's ``scope.md``)::

    scope          := resourcescope [ ' ' resourcescope ]*
    resourcescope  := resourcetype ":" resourcename ":" action [ ',' action ]*
    resourcetype   := /[a-z0-9]+/ [ '(' /[a-z0-9]+/ ')' ]
    resourcename   := [ hostname '/' ] component [ '/' component ]*
    hostname       := hostcomponent [ '.' hostcomponent ]* [ ':' port-number ]

A resource name may carry a ``host:port/`` prefix, so the type ends at the *first* colon and the actions start
after the *last* one; splitting on every colon is wrong. Actions are lower-case words (``pull``,
``metadata_read``) or ``*``.

Errors: :class:`InvalidScope` (a ``ValueError``) names the offending text. The token service answers it with
400; it never grants anything for a scope it could not parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from acrlocal.errors import AcrLocalError

REPOSITORY = "repository"
REGISTRY = "registry"
CATALOG = "catalog"
ALL = "*"

_TYPE = re.compile(r"^[a-z0-9]+(?:\([a-z0-9]+\))?\Z")
_ACTION = re.compile(r"^(?:[a-z][a-z0-9_]*|\*)\Z")
_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(
    rf"^(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?/)?{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*\Z"
)
#: Longest scope string accepted (a repository name is < 256 characters; actions are few).
MAX_SCOPE_LENGTH = 1024
#: Most resource scopes one token request may name.
MAX_SCOPES = 32


class InvalidScope(AcrLocalError, ValueError):
    """A scope that does not follow the Docker token scope grammar."""


@dataclass(frozen=True, slots=True)
class ResourceScope:
    """One resource and the actions asked (or granted) on it. ``type`` is the resource type without its
    ``(class)`` suffix: ``repository(plugin)`` is a repository."""

    type: str
    name: str
    actions: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.name)

    def render(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, object]:
        """The entry of an access token's ``access`` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_resource_scope(text: str) -> ResourceScope:
    """One ``type:name:actions``; :class:`InvalidScope` unless it follows the grammar."""
    shown = text[:200]
    if len(text) > MAX_SCOPE_LENGTH:
        raise InvalidScope(f"scope of {len(text)} characters is longer than {MAX_SCOPE_LENGTH}")
    first, last = text.find(":"), text.rfind(":")
    if first <= 0 or last == first:
        raise InvalidScope(f"scope {shown!r} is not of the form <type>:<name>:<actions>")
    rtype, name, actions_text = text[:first], text[first + 1 : last], text[last + 1 :]
    if not _TYPE.fullmatch(rtype):
        raise InvalidScope(f"scope {shown!r} has resource type {rtype[:50]!r}; expected lower-case letters/digits")
    if not name or not _NAME.fullmatch(name):
        raise InvalidScope(f"scope {shown!r} names {name[:200]!r}, which is not a resource name")
    actions = [a for a in actions_text.split(",") if a]
    if not actions or not all(_ACTION.fullmatch(a) for a in actions):
        raise InvalidScope(f"scope {shown!r} has actions {actions_text[:100]!r}; expected a comma-separated list "
                           "of lower-case actions or '*'")
    base_type = rtype.split("(", 1)[0]
    return ResourceScope(base_type, name, tuple(dict.fromkeys(actions)))


def parse_scopes(values: Iterable[str]) -> list[ResourceScope]:
    """Every resource scope of every ``scope`` parameter (each may hold several, separated by spaces), with the
    actions asked for one resource merged. :class:`InvalidScope` for any malformed one."""
    merged: dict[tuple[str, str], list[str]] = {}
    for value in values:
        for part in value.split(" "):
            if not part:
                continue
            scope = parse_resource_scope(part)
            actions = merged.setdefault(scope.key, [])
            actions.extend(a for a in scope.actions if a not in actions)
            if len(merged) > MAX_SCOPES:
                raise InvalidScope(f"more than {MAX_SCOPES} resource scopes in one request")
    return [ResourceScope(t, n, tuple(a)) for (t, n), a in merged.items()]
