"""Matching an operation (``Microsoft.ContainerRegistry/registries/pull/read``) against a permission pattern.

Azure compares operations case-insensitively, and ``*`` in a pattern stands for any run of characters, slashes
included: ``*`` matches everything, ``*/read`` every read, ``Microsoft.ContainerRegistry/*`` everything of that
provider. A ``/*/`` inside a pattern also matches a single ``/``: built-in roles rely on it (Managed Identity
Operator's ``userAssignedIdentities/*/assign/action`` is what grants ``userAssignedIdentities/assign/action``).

Pure; compiled patterns are cached, so matching the same role twice costs one dictionary look-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    source = ".*".join(re.escape(part) for part in pattern.lower().split("*"))
    # "/*/" may also stand for no segment at all ("a/*/b" matches "a/b").
    source = source.replace("/.*/", "/(?:.*/)?")
    return re.compile(source, re.DOTALL)


def action_matches(pattern: str, operation: str) -> bool:
    """True if ``operation`` is covered by ``pattern`` (case-insensitive, ``*`` wildcards)."""
    return _compile(pattern).fullmatch(operation.lower()) is not None


def any_matches(patterns: Iterable[str], operation: str) -> bool:
    """True if any of ``patterns`` covers ``operation``."""
    return any(action_matches(pattern, operation) for pattern in patterns)
