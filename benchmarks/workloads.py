"""The five registry workloads, run step by step against a freshly started registry, each under a :class:`Meter`.

Every workload records wall time, the server's CPU seconds (its whole process tree) and its peak RSS; the figure
compared between servers is :attr:`Sample.value` (see :data:`WORKLOADS` for its unit and direction). Pulled
copies are deleted right after each workload so a full run needs about four times the image size of disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.clients import MANIFEST_ACCEPT, Skopeo, auth_headers, curl_parallel, head_load
from benchmarks.images import Image
from benchmarks.procstat import Meter, rss_bytes
from benchmarks.profiling import PySpy
from benchmarks.servers import Registry

MB = 1000 * 1000
MiB = 1024 * 1024


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    bar: float  # a bar on acrlocal / Distribution, or (for ``absolute``) on acrlocal's own figure
    absolute: bool = False


WORKLOADS = [
    Workload("push_big", "1. push, large layers (skopeo)", "MB/s", True, 1.0),
    Workload("pull_big", "1. pull, large layers (skopeo)", "MB/s", True, 1.0),
    Workload("blob_get", "2. blob GET, 4 in parallel (curl)", "MB/s", True, 1.0),
    Workload("push_small", "3. push, small layers (skopeo)", "layers/s", True, 1.0),
    Workload("pull_small", "3. pull, small layers (skopeo)", "layers/s", True, 1.0),
    Workload("head", "4. manifest HEAD, 32 connections", "req/s", True, 4.0),
    Workload("rss_pulls", "5. peak RSS of a server process, 4 parallel pulls", "MiB", False, 100.0, absolute=True),
]
BY_KEY = {w.key: w for w in WORKLOADS}


@dataclass
class Sample:
    workload: str
    target: str
    rep: int
    value: float
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sizes:
    big_layer: int
    big_layers: int
    small_layer: int
    small_layers: int
    head_requests: int
    head_concurrency: int
    blob_get_rounds: int
    parallel_pulls: int


FULL = Sizes(128 * MiB, 4, 64 * 1024, 200, 20000, 32, 3, 4)
QUICK = Sizes(8 * MiB, 4, 64 * 1024, 20, 1024, 32, 1, 4)


class WorkloadRunner:
    """Runs the workloads in order against ``reg`` (a fresh server), scratch files under ``scratch``."""

    def __init__(self, reg: Registry, sizes: Sizes, big: Image, small: Image, scratch: Path, rep: int,
                 log: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.errors: list[str] = []
        self.idle_rss_mib: float | None = None
        self.profile_dir: Path | None = None
        self.profile_kinds: tuple[str, ...] = ("acrlocal", "acrlocal-shared")
        self.profile_native = False
        self.reg = reg
        self.sizes = sizes
        self.big = big
        self.small = small
        self.scratch = scratch
        self.rep = rep
        self.samples: list[Sample] = []

    def _skopeo(self, name: str) -> Skopeo:
        return Skopeo(self.scratch / f"skopeo-{name}")  # a fresh HOME: no blob-info cache

    def _record(self, key: str, meter: Meter, value: float, **extra: Any) -> Sample:
        extra.setdefault("client_cpu_s", round(meter.client_cpu, 3))
        s = Sample(key, self.reg.kind, self.rep, value, meter.wall, meter.cpu, meter.peak_rss / MiB, extra)
        self.samples.append(s)
        return s

    STEPS = ("push_pull_big", "blob_get", "push_pull_small", "head", "rss_pulls")

    def run_step(self, name: str) -> None:
        """One step of :data:`STEPS`; a failure is kept in :attr:`errors` (a result, not the end of the run)."""
        if self.log:
            self.log(f"  rep {self.rep} {self.reg.kind}: {name}")
        if self.idle_rss_mib is None:
            self.idle_rss_mib = round(rss_bytes([self.reg.pid]) / MiB, 1)
        try:
            if self.profile_dir is not None and self.reg.kind in self.profile_kinds:
                out = self.profile_dir / f"rep{self.rep}-{self.reg.kind}-{name}.txt"
                with PySpy(self.reg.pid, out, native=self.profile_native) as spy:
                    getattr(self, name)()
                if spy.error:
                    self.errors.append(f"{self.reg.kind} rep {self.rep} {name}: profile: {spy.error}")
            else:
                getattr(self, name)()
        except Exception as exc:
            self.errors.append(f"{self.reg.kind} rep {self.rep} {name}: {exc}")
            if self.log:
                self.log(f"  FAILED: {str(exc)[:800]}")
        for s in self.samples:
            s.extra.setdefault("idle_rss_mib", self.idle_rss_mib)

    def push_pull_big(self) -> None:
        self.push_pull(self.big, "bench/big", "push_big", "pull_big")

    def push_pull_small(self) -> None:
        self.push_pull(self.small, "bench/small", "push_small", "pull_small")

    def push_pull(self, image: Image, repo: str, push_key: str, pull_key: str) -> None:
        per_layer = push_key == "push_small"
        skopeo = self._skopeo(push_key)
        with Meter(self.reg.pid) as m:
            skopeo.push(image.ref(), self.reg, f"{repo}:{image.tag}")
        n = len(image.layers)
        value = n / m.wall if per_layer else image.total_bytes / MB / m.wall
        self._record(push_key, m, value, bytes=image.total_bytes, layers=n)
        dest = self.scratch / f"pull-{pull_key}"
        with Meter(self.reg.pid) as m:
            self._skopeo(pull_key).pull(self.reg, f"{repo}:{image.tag}", dest)
        value = n / m.wall if per_layer else image.total_bytes / MB / m.wall
        self._record(pull_key, m, value, bytes=image.total_bytes, layers=n)
        shutil.rmtree(dest, ignore_errors=True)

    def blob_get(self) -> None:
        headers = auth_headers(self.reg, "repository:bench/big:pull")
        urls = [self.reg.url(f"/v2/bench/big/blobs/{b.digest}") for b in self.big.layers]
        total = 0
        with Meter(self.reg.pid) as m:
            for _ in range(self.sizes.blob_get_rounds):
                got = curl_parallel(self.reg, urls, headers)
                if got != self.big.layer_bytes:
                    raise RuntimeError(f"blob GETs returned {got} bytes, expected {self.big.layer_bytes}")
                total += got
        self._record("blob_get", m, total / MB / m.wall, bytes=total, rounds=self.sizes.blob_get_rounds,
                     parallel=len(urls))

    def head(self) -> None:
        headers = {"Accept": MANIFEST_ACCEPT, **auth_headers(self.reg, "repository:bench/big:pull")}
        url = self.reg.url(f"/v2/bench/big/manifests/{self.big.tag}")
        with Meter(self.reg.pid) as m:
            r = head_load(url, self.sizes.head_requests, self.sizes.head_concurrency, headers)
        self._record("head", m, r.requests_per_s, p50_ms=r.p50_ms, p99_ms=r.p99_ms, requests=self.sizes.head_requests,
                     client=r.client, client_cpu_ms_per_request=round(r.cpu_s * 1000 / self.sizes.head_requests, 3),
                     concurrency=self.sizes.head_concurrency,
                     cpu_ms_per_request=round(m.cpu * 1000 / self.sizes.head_requests, 3))

    def rss_pulls(self) -> None:
        n = self.sizes.parallel_pulls
        dests = [self.scratch / f"pull-parallel-{i}" for i in range(n)]
        with Meter(self.reg.pid) as m:
            self._skopeo("parallel").pull_parallel(self.reg, f"bench/big:{self.big.tag}", dests)
        total = self.big.total_bytes * n
        # The bar was set for one process: with workers, the largest one's; the tree's sum is ``peak_rss_mib``.
        self._record("rss_pulls", m, m.peak_process_rss / MiB, pulls=n, bytes=total,
                     aggregate_mb_s=round(total / MB / m.wall, 1))
        for d in dests:
            shutil.rmtree(d, ignore_errors=True)
