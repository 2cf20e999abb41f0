"""Per-SKU throttling: ACR's documented limits by SKU, 429 TOOMANYREQUESTS with Retry-After in the OCI error format,
and recovery once the allowance refills. The clock is injected in the pure tests; the server test only waits for
the Retry-After it was given."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from acrlocal.errors import ConfigError
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.throttle import SKU_LIMITS, RateLimits, Throttle, parse_policy
from acrlocal.storage.registries import RegistryRecord
from tests.harness import AcrLocal, running
from tests.registry.conftest import error_code


def record(sku: str, registry_id: int = 1) -> RegistryRecord:
    return RegistryRecord(registry_id, f"reg{registry_id}", None, 0.0, {"sku": sku})


def test_documented_limits_by_sku() -> None:
    assert SKU_LIMITS["basic"] == RateLimits(1000, 100)
    assert SKU_LIMITS["standard"] == RateLimits(3000, 500)
    assert SKU_LIMITS["premium"] == RateLimits(10000, 2000)
    throttle = Throttle(parse_policy("sku"))
    basic = record("Basic")
    assert sum(throttle.wait_needed(basic, True, now=0.0) == 0 for _ in range(150)) == 100
    assert sum(throttle.wait_needed(basic, False, now=0.0) == 0 for _ in range(1500)) == 1000
    premium = record("Premium", 2)
    assert sum(throttle.wait_needed(premium, True, now=0.0) == 0 for _ in range(2500)) == 2000


def test_refill_and_retry_after() -> None:
    throttle = Throttle(parse_policy("60/6"))  # one read a second, one write every ten seconds
    reg = record("Standard")
    for _ in range(60):
        assert throttle.wait_needed(reg, False, now=100.0) == 0
    assert throttle.wait_needed(reg, False, now=100.0) == 1
    assert throttle.wait_needed(reg, False, now=101.0) == 0
    for _ in range(6):
        assert throttle.wait_needed(reg, True, now=100.0) == 0
    assert throttle.wait_needed(reg, True, now=100.0) == 10
    assert throttle.wait_needed(reg, True, now=105.0) == 5
    assert throttle.wait_needed(reg, True, now=110.0) == 0
    assert throttle.wait_needed(record("Standard", 3), True, now=100.0) == 0  # registries are independent


def test_check_raises_oci_429_and_off_never_does() -> None:
    throttle = Throttle(parse_policy("1/1"))
    reg = record("Basic")
    throttle.check(reg, "HEAD")
    with pytest.raises(RegistryError) as caught:
        throttle.check(reg, "GET")
    err = caught.value
    assert (err.status, err.code) == (429, "TOOMANYREQUESTS") and err.headers["Retry-After"] == "60"
    off = Throttle(parse_policy("off"))
    for _ in range(10_000):
        off.check(reg, "PUT")


@pytest.mark.parametrize("text", ["", "fast", "0/10", "10/0", "-1/5", "5/", "1e3/5"])
def test_bad_policies_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)


def test_server_answers_429_and_recovers(tmp_path: Path) -> None:
    """Plain requests without credentials: each is counted exactly once (throttling comes before
    authentication, so an unauthenticated request is answered 401 while under the limit and 429 above it)."""
    # one process: with several, each enforces its share of the limit (tests/test_workers.py)
    with running(tmp_path / "data", "--registry-rate-limit", "30/5", "--workers", "1") as server:
        http = server.session()
        base = f"https://{server.login_server()}"
        statuses = [http.post(f"{base}/v2/throttled/blobs/uploads/").status_code for _ in range(5)]
        refused = http.post(f"{base}/v2/throttled/blobs/uploads/")
        assert 429 not in statuses
        assert refused.status_code == 429 and error_code(refused) == "TOOMANYREQUESTS"
        assert 1 <= int(refused.headers["Retry-After"]) <= 12

        answers = [http.get(f"{base}/v2/") for _ in range(40)]
        assert all(r.status_code != 429 for r in answers[:30])  # a minute's allowance passes
        limited = [r for r in answers[30:] if r.status_code == 429]
        assert limited and error_code(limited[-1]) == "TOOMANYREQUESTS"
        time.sleep(int(limited[-1].headers["Retry-After"]))
        assert http.get(f"{base}/v2/").status_code != 429  # recovered after the wait it was told


def test_settings_refuse_a_bad_flag(tmp_path: Path) -> None:
    server = AcrLocal(tmp_path / "data", "--registry-rate-limit", "lots")
    with pytest.raises(RuntimeError, match=r"registry_rate_limit"):
        server.start(timeout=20)
