"""Per-registry request throttling by SKU, as ACR documents its limits ("minimum estimates", per minute):

======== ========= ==========
SKU      ReadOps   WriteOps
======== ========= ==========
Basic      1,000       100
Standard   3,000       500
Premium   10,000     2,000
======== ========= ==========

A data-plane request (``/v2/`` and ``/acr/v1/``) is a read when it is GET or HEAD and a write otherwise (a push is
several writes: each upload request and the manifest). Each registry has a token bucket per kind holding up to one
minute's allowance and refilled continuously, so a burst of a minute's worth passes and a steady rate above the
limit is refused. A refused request gets ``429 TOOMANYREQUESTS`` in the OCI error format with ``Retry-After`` (whole
seconds until one request's worth is back); nothing else happens for it.

The policy comes from the settings (``--registry-rate-limit``, ``$ACRLOCAL_REGISTRY_RATE_LIMIT``): ``sku`` (the
default: the table above by each registry's SKU), ``off``, or ``READS/WRITES`` per minute for every registry.
Pure apart from the clock, which callers may pass.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from acrlocal.errors import ConfigError
from acrlocal.registry.errors import RegistryError
from acrlocal.storage.registries import RegistryRecord

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class RateLimits:
    reads_per_minute: int
    writes_per_minute: int


SKU_LIMITS: dict[str, RateLimits] = {
    "basic": RateLimits(1_000, 100),
    "standard": RateLimits(3_000, 500),
    "premium": RateLimits(10_000, 2_000),
}
DEFAULT_SKU = "standard"
_FIXED = re.compile(r"^(\d{1,12})/(\d{1,12})\Z")


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """``fixed`` for every registry, or (``fixed`` is ``None``) the SKU table; ``enabled`` False for ``off``."""

    enabled: bool = True
    fixed: RateLimits | None = None

    def limits_for(self, registry: RegistryRecord) -> RateLimits:
        if self.fixed is not None:
            return self.fixed
        sku = str(registry.properties.get("sku") or DEFAULT_SKU).lower()
        return SKU_LIMITS.get(sku, SKU_LIMITS[DEFAULT_SKU])


def parse_policy(text: str) -> ThrottlePolicy:
    """``sku``, ``off`` or ``READS/WRITES`` (per minute, each at least 1); :class:`ConfigError` otherwise."""
    value = text.strip().lower()
    if value == "sku":
        return ThrottlePolicy()
    if value == "off":
        return ThrottlePolicy(enabled=False)
    match = _FIXED.fullmatch(value)
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ConfigError(f"registry rate limit {text[:40]!r} is not 'sku', 'off' or READS/WRITES per minute "
                          "(positive integers, e.g. 3000/500)")
    return ThrottlePolicy(fixed=RateLimits(int(match.group(1)), int(match.group(2))))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class Throttle:
    """Token buckets per (registry, read|write), in this process's memory. A server of ``share`` processes (``up
    --workers``) gives each process a ``share``-th of every limit (at least one a minute): the kernel spreads
    connections across them, and together they never allow more than the limit."""

    def __init__(self, policy: ThrottlePolicy, share: int = 1) -> None:
        self.policy = policy
        self.share = max(1, share)
        self._buckets: dict[tuple[int, bool], _Bucket] = {}

    def wait_needed(self, registry: RegistryRecord, write: bool, now: float | None = None) -> int:
        """0 if the request may go ahead (and it is counted), else the seconds to wait (nothing counted)."""
        if not self.policy.enabled:
            return 0
        limits = self.policy.limits_for(registry)
        per_minute = max(1, (limits.writes_per_minute if write else limits.reads_per_minute) // self.share)
        rate = per_minute / 60.0
        now = time.monotonic() if now is None else now
        key = (registry.id, write)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(per_minute), now)
        bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / rate))

    def check(self, registry: RegistryRecord, method: str) -> None:
        """Raise ``TOOMANYREQUESTS`` (429, ``Retry-After``) if the registry is over its limit for this kind."""
        write = method not in READ_METHODS
        wait = self.wait_needed(registry, write)
        if wait:
            kind = "write" if write else "read"
            limits = self.policy.limits_for(registry)
            limit = limits.writes_per_minute if write else limits.reads_per_minute
            raise RegistryError(
                "TOOMANYREQUESTS",
                f"registry {registry.name!r} is over its limit of {limit} {kind} operations per minute; retry in "
                f"{wait} s",
                {"limit": limit, "kind": kind, "retryAfter": wait},
                headers={"Retry-After": str(wait)},
            )

