"""Failed credentials, counted and locked out: the brute-force guard of every endpoint that checks a password or a
secret (Entra's token endpoint and sign-in pages, the registries' ``/oauth2/*``).

Two counts are kept for every failure: one for the **name** tried (a user name, a client id, a registry user name)
and one for the **caller** (its address), whatever names it tries. When a count reaches its threshold, that name or
caller is locked for ``lockout_s``; while locked, credentials are refused without being checked. Like Entra's smart
lockout, the next failure after a lockout ends locks again at once, for twice as long each time (at most
``max_lockout_s``); a success forgets the name's failures, and failures older than ``reset_s`` are forgotten. Also
like it, a name's count remembers the last :data:`RECENT` wrong credentials tried (``failed(..., tried=...)``), as
keyed hashes, and does not count one of them again: a client retrying a stale password does not lock its account.
The caller's count counts every failure.

The policy comes from the settings (``--login-lockout``, ``$ACRLOCAL_LOGIN_LOCKOUT``): ``NAME/CALLER/SECONDS``
(failures per name, failures per caller, first lockout in seconds; default ``10/100/60``, Entra's 10 failures and
one minute) or ``off``. State lives in this process's memory, at most :data:`ENTRIES` keys (expired ones are
dropped first, then the oldest). Pure apart from the clock, which callers may pass.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace

from acrlocal.errors import ConfigError

ENTRIES = 50_000
#: How many of a name's last wrong credentials are not counted again (Entra's smart lockout keeps three).
RECENT = 3
_POLICY = re.compile(r"^(\d{1,9})/(\d{1,9})/(\d{1,9})\Z")


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    name_failures: int = 10
    caller_failures: int = 100
    lockout_s: float = 60.0
    max_lockout_s: float = 3600.0
    reset_s: float = 900.0
    enabled: bool = True


def parse_lockout(text: str) -> LockoutPolicy:
    """``off`` or ``NAME/CALLER/SECONDS``; :class:`ConfigError` naming the value otherwise."""
    value = text.strip().lower()
    if value == "off":
        return LockoutPolicy(enabled=False)
    m = _POLICY.match(value)
    if not m or min(int(g) for g in m.groups()) < 1:
        raise ConfigError(f"login lockout {text[:40]!r} is not 'off' or NAME/CALLER/SECONDS, three positive "
                          "numbers (failures per user or client name, failures per caller address, first lockout "
                          "in seconds; e.g. 10/100/60)")
    return LockoutPolicy(int(m.group(1)), int(m.group(2)), float(m.group(3)))


@dataclass(slots=True)
class _Count:
    failures: int
    last: float
    locked_until: float = 0.0
    lockouts: int = 0
    recent: tuple[bytes, ...] = ()  # keyed hashes of the last RECENT wrong credentials (names' counts only)


@dataclass(frozen=True, slots=True)
class Locked:
    """A refusal: what is locked (``"name"`` or ``"caller"``) and for how many more seconds."""

    what: str
    seconds: float

    @property
    def retry_after(self) -> int:
        return max(1, int(self.seconds + 0.999))


class Lockout:
    """Counts in this process's memory. A server of ``share`` processes (``up --workers``) locks in each process
    after a ``share``-th of the failures (rounded up): however the kernel spreads an attacker's connections, all
    processes together check at most about the policy's number of credentials before each of them refuses."""

    def __init__(self, policy: LockoutPolicy | None = None, share: int = 1) -> None:
        policy = policy or LockoutPolicy()
        if share > 1:
            policy = replace(policy, name_failures=-(-policy.name_failures // share),
                             caller_failures=-(-policy.caller_failures // share))
        self.policy = policy
        self._counts: dict[Hashable, _Count] = {}
        # Wrong credentials are remembered as HMACs under a key of this process's, never as given.
        self._key = secrets.token_bytes(32)

    def locked(self, caller: str | None, name: Hashable | None, now: float | None = None) -> Locked | None:
        """Whether credentials for ``name`` from ``caller`` must be refused unchecked now (``None``: a credential
        with no name, e.g. a token, or a caller of unknown address: only the other is looked at)."""
        if not self.policy.enabled:
            return None
        now = time.time() if now is None else now
        for what, value in (("name", name), ("caller", caller)):
            if value is None:
                continue
            count = self._counts.get((what, value))
            if count is not None and count.locked_until > now:
                return Locked(what, count.locked_until - now)
        return None

    def failed(self, caller: str | None, name: Hashable | None, now: float | None = None, *,
               tried: str | None = None) -> Locked | None:
        """Count a failure of ``name`` from ``caller``; the lockout it started, if any. ``tried``: the wrong
        password or secret, which the name's count skips if it is one of the last :data:`RECENT` it counted."""
        if not self.policy.enabled:
            return None
        now = time.time() if now is None else now
        mark = None if tried is None else hmac.new(self._key, tried.encode(), hashlib.sha256).digest()[:16]
        started = self._count("name", name, self.policy.name_failures, now, mark) if name is not None else None
        if caller is not None:
            started = self._count("caller", caller, self.policy.caller_failures, now) or started
        return started

    def succeeded(self, name: Hashable) -> None:
        self._counts.pop(("name", name), None)

    def _count(self, what: str, value: Hashable, threshold: int, now: float,
               mark: bytes | None = None) -> Locked | None:
        key = (what, value)
        count = self._counts.get(key)
        if count is None or (now - count.last > self.policy.reset_s and count.locked_until <= now):
            if count is None and len(self._counts) >= ENTRIES:
                self._make_room(now)
            count = self._counts[key] = _Count(0, now)
        if mark is not None:
            if mark in count.recent:
                return None
            count.recent = (*count.recent, mark)[-RECENT:]
        count.failures += 1
        count.last = now
        if count.failures < threshold:
            return None
        count.lockouts += 1
        seconds = min(self.policy.lockout_s * 2 ** min(count.lockouts - 1, 30), self.policy.max_lockout_s)
        count.locked_until = now + seconds
        return Locked(what, seconds)

    def _make_room(self, now: float) -> None:
        stale = [k for k, c in self._counts.items() if c.locked_until <= now and now - c.last > self.policy.reset_s]
        for key in stale:
            del self._counts[key]
        while len(self._counts) >= ENTRIES:
            del self._counts[next(iter(self._counts))]
