"""Content digests (``algorithm:encoded``) as the OCI Image Spec defines them. Pure; no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from acrlocal.errors import AcrLocalError

_GRAMMAR = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")
# Registered algorithms and the exact shape of their encoded part.
ALGORITHMS: dict[str, re.Pattern[str]] = {
    "sha256": re.compile(r"^[a-f0-9]{64}\Z"),
    "sha512": re.compile(r"^[a-f0-9]{128}\Z"),
}


class DigestError(AcrLocalError, ValueError):
    """A string that is not a digest this registry supports; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _GRAMMAR.fullmatch(text)
        if not match:
            raise DigestError(f"digest {text[:200]!r} is not of the form algorithm:encoded")
        algorithm, encoded = match.groups()
        shape = ALGORITHMS.get(algorithm)
        if shape is None:
            raise DigestError(f"digest algorithm {algorithm!r} is not supported (expected sha256 or sha512)")
        if not shape.fullmatch(encoded):
            raise DigestError(f"digest {text[:200]!r} does not have a valid {algorithm} encoding")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def is_digest(text: str) -> bool:
    """True if ``text`` looks like a digest (has the grammar), whether or not it is supported."""
    return bool(_GRAMMAR.fullmatch(text))
