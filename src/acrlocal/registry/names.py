"""Repository names and manifest references as the OCI Distribution Spec defines them. Pure; no I/O.

Every name and reference is checked here before any storage is touched, so a name like ``../x``, ``A/b`` or
``a//b`` never reaches a query or a path. Failures are :class:`RegistryError` with the spec's code and a message
that names the offending value and the grammar it should have matched.
"""

from __future__ import annotations

import re

from acrlocal.registry.errors import RegistryError
from acrlocal.storage.digest import Digest, DigestError, is_digest

# The spec's grammar as it writes it (for messages), and the same grammar without capturing groups.
REPOSITORY_GRAMMAR = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_GRAMMAR = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
_TAG = re.compile(rf"^{TAG_GRAMMAR}\Z")

# The spec's bound on a repository name ("less than 256 characters", including slashes).
REPOSITORY_MAX = 255


def check_repository(name: str) -> str:
    """``name`` unchanged if it is a valid repository name; NAME_INVALID (400) otherwise."""
    if len(name) > REPOSITORY_MAX:
        raise RegistryError(
            "NAME_INVALID",
            f"repository name of {len(name)} characters is longer than {REPOSITORY_MAX}",
            {"name": name[:REPOSITORY_MAX] + "..."},
        )
    if not _REPOSITORY.fullmatch(name):
        raise RegistryError(
            "NAME_INVALID",
            f"repository name {name!r} does not match {REPOSITORY_GRAMMAR}",
            {"name": name},
        )
    return name


def check_tag(tag: str) -> str:
    """``tag`` unchanged if it matches the tag grammar; MANIFEST_INVALID (400) otherwise."""
    if not _TAG.fullmatch(tag):
        raise RegistryError("MANIFEST_INVALID", f"tag {tag[:200]!r} does not match {TAG_GRAMMAR}", {"tag": tag[:200]})
    return tag


def parse_digest(text: str) -> Digest:
    """A supported digest, or DIGEST_INVALID (400) naming what is wrong with ``text``."""
    try:
        return Digest.parse(text)
    except DigestError as exc:
        raise RegistryError("DIGEST_INVALID", str(exc), {"digest": text[:200]}) from exc


def parse_reference(reference: str) -> Digest | str:
    """A manifest reference: a :class:`Digest`, or a tag (``str``).

    Something shaped like a digest (``algo:encoded``) must be a supported digest (DIGEST_INVALID otherwise);
    anything else must be a tag (MANIFEST_INVALID otherwise).
    """
    if ":" in reference:
        if is_digest(reference):
            return parse_digest(reference)
        raise RegistryError(
            "DIGEST_INVALID",
            f"reference {reference[:200]!r} is neither a tag ({TAG_GRAMMAR}) nor a digest",
            {"reference": reference[:200]},
        )
    return check_tag(reference)
