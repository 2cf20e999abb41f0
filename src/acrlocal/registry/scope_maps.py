"""Scope maps, pure: ACR's repository permissions for tokens, parsed and mapped to registry token actions.

A scope map is a list of actions ``repositories/<repository>/<content|metadata>/<verb>``:

======================= =============== =================================================
scope map action        token action    what it allows
======================= =============== =================================================
``content/read``        ``pull``        pull an artifact
``content/write``       ``push``        push (with ``content/read``, as docker asks both)
``content/delete``      ``delete``      delete a manifest, a tag or the repository
``metadata/read``       ``metadata_read``  list tags and manifests, show properties
``metadata/write``      ``metadata_write`` change attributes (locks), untag
======================= =============== =================================================

``<repository>`` is a repository name, or a wildcard: ``*`` (every repository) or ``<prefix>/*`` (every repository
under ``prefix/``, at any depth: ``team1/*`` matches ``team1/app`` and ``team1/x/y``, not ``team1`` itself).
Repositories need not exist. Scope maps never grant the catalog (ACR: "repository-scoped permissions do not support
the ability to list the catalog"). Bad text raises :class:`InvalidScopeMapAction` naming it and the grammar.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from acrlocal.errors import AcrLocalError

TOKEN_ACTIONS = {
    "content/read": "pull",
    "content/write": "push",
    "content/delete": "delete",
    "metadata/read": "metadata_read",
    "metadata/write": "metadata_write",
}
GRAMMAR = "repositories/<repository | prefix/* | *>/<content/read|content/write|content/delete|metadata/read|" \
          "metadata/write>"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")

#: ACR's system-defined scope maps: name → (description, actions).
SYSTEM_SCOPE_MAPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "_repositories_pull": ("Can pull any repository of the registry", ("repositories/*/content/read",)),
    "_repositories_pull_metadata_read": (
        "Can perform all read operations on the registry",
        ("repositories/*/content/read", "repositories/*/metadata/read"),
    ),
    "_repositories_push": (
        "Can push to any repository of the registry",
        ("repositories/*/content/read", "repositories/*/content/write"),
    ),
    "_repositories_push_metadata_write": (
        "Can perform all read and write operations on the registry",
        ("repositories/*/content/read", "repositories/*/content/write", "repositories/*/metadata/read",
         "repositories/*/metadata/write"),
    ),
    "_repositories_admin": (
        "Can perform all read, write and delete operations on the registry",
        ("repositories/*/content/read", "repositories/*/content/write", "repositories/*/content/delete",
         "repositories/*/metadata/read", "repositories/*/metadata/write"),
    ),
}


class InvalidScopeMapAction(AcrLocalError, ValueError):
    """A scope map action that does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class ScopeMapAction:
    """``repositories/<pattern>/<permission>``: ``pattern`` is a name, ``*`` or ``prefix/*``."""

    pattern: str
    permission: str

    def matches(self, repository: str) -> bool:
        if self.pattern == "*":
            return True
        if self.pattern.endswith("/*"):
            return repository.startswith(self.pattern[:-1])
        return repository == self.pattern

    def __str__(self) -> str:
        return f"repositories/{self.pattern}/{self.permission}"


def parse_action(text: str) -> ScopeMapAction:
    """One scope map action; :class:`InvalidScopeMapAction` if it is not ``repositories/<repo>/<perm>``."""
    if not isinstance(text, str) or len(text) > 400:
        raise InvalidScopeMapAction(f"scope map action {str(text)[:100]!r} is not a string of at most 400 "
                                    f"characters following {GRAMMAR}")
    parts = text.split("/")
    if len(parts) < 4 or parts[0] != "repositories":
        raise InvalidScopeMapAction(f"scope map action {text[:100]!r} does not follow {GRAMMAR}")
    permission = "/".join(parts[-2:])
    pattern = "/".join(parts[1:-2])
    if permission not in TOKEN_ACTIONS:
        raise InvalidScopeMapAction(f"scope map action {text[:100]!r} has permission {permission!r}; expected one "
                                    f"of {', '.join(TOKEN_ACTIONS)}")
    name = pattern[:-2] if pattern.endswith("/*") else pattern
    if pattern != "*" and ("*" in name or not _REPOSITORY.fullmatch(name)):
        raise InvalidScopeMapAction(f"scope map action {text[:100]!r} names repository {pattern!r}, which is "
                                    "neither a repository name, '*' nor '<prefix>/*'")
    return ScopeMapAction(pattern, permission)


def token_actions(actions: Iterable[ScopeMapAction | str], repository: str) -> frozenset[str]:
    """The token actions (``pull``, ``push``, ``delete``, ``metadata_read``, ``metadata_write``) ``actions``
    grant on ``repository``. Unparseable entries grant nothing (stored maps were validated when written)."""
    granted: set[str] = set()
    for item in actions:
        try:
            action = item if isinstance(item, ScopeMapAction) else parse_action(item)
        except InvalidScopeMapAction:
            continue
        if action.matches(repository):
            granted.add(TOKEN_ACTIONS[action.permission])
    return frozenset(granted)
