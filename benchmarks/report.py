"""Summaries of a run: per-workload medians, same-run ratios acrlocal / Distribution, bars, and markdown tables.

A ratio is computed per repetition (both servers measured back to back in that repetition) and summarised by its
median and range; a figure missing for either server (a failed workload) gives no ratio and ``meets = None``.
Any other target of the run (``acrlocal-shared``) is summarised in ``others``: its figure, and its ratios to
Distribution and to acrlocal on SQLite and files, per repetition as above.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from typing import Any

from benchmarks.workloads import WORKLOADS, Sample, Workload

REFERENCE = "distribution"
SUBJECT = "acrlocal"


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": os.getloadavg(),
        "skopeo": _version(["skopeo", "--version"]),
        "distribution": _version(["/usr/bin/docker-registry", "--version"]),
        "curl": _version(["curl", "--version"]),
    }


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ratios(top: dict[int, Sample], bottom: dict[int, Sample]) -> dict[str, Any]:
    """``top / bottom`` per repetition both have: median, least and most, and how many repetitions gave one."""
    ratios = [top[r].value / bottom[r].value for r in sorted(set(top) & set(bottom)) if bottom[r].value]
    return {"ratio": _median(ratios), "ratio_min": min(ratios, default=None), "ratio_max": max(ratios, default=None),
            "reps": len(ratios)}


def summarise(samples: list[Sample]) -> list[dict[str, Any]]:
    rows = []
    for w in WORKLOADS:
        by_target: dict[str, dict[int, Sample]] = {}
        for s in samples:
            if s.workload == w.key:
                by_target.setdefault(s.target, {})[s.rep] = s
        ref, sub = by_target.get(REFERENCE, {}), by_target.get(SUBJECT, {})

        def agg(side: dict[int, Sample], w: Workload = w) -> float | None:
            vals = [s.value for s in side.values()]
            if not vals:
                return None
            return max(vals) if w.absolute else _median(vals)  # a peak is the worst peak seen

        row: dict[str, Any] = {
            "workload": w.key, "title": w.title, "unit": w.unit, "bar": w.bar, "absolute": w.absolute,
            REFERENCE: agg(ref), SUBJECT: agg(sub), **_ratios(sub, ref),
            "cpu_s": {t: _median([s.cpu_s for s in side.values()]) for t, side in by_target.items()},
            "client_cpu_s": {t: _median([float(s.extra.get("client_cpu_s", 0.0)) for s in side.values()])
                             for t, side in by_target.items()},
            "peak_rss_mib": {t: max(s.peak_rss_mib for s in side.values()) for t, side in by_target.items()},
            "others": {t: {"value": agg(side), "to_reference": _ratios(side, ref), "to_subject": _ratios(side, sub)}
                       for t, side in by_target.items() if t not in (REFERENCE, SUBJECT)},
        }
        if w.absolute:
            row["meets"] = None if row[SUBJECT] is None else row[SUBJECT] <= w.bar
        else:
            row["meets"] = None if row["ratio"] is None else row["ratio"] >= w.bar
        rows.append(row)
    return rows


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | unit | Distribution 2.8.2 | acrlocal | acrlocal / Distribution (range) | bar | meets |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        digits = 1 if r["unit"] in ("MiB",) else 0
        ratio = _range(r)
        if r["absolute"]:
            bar = f"acrlocal ≤ {r['bar']:.0f} {r['unit']}"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        else:
            bar = f"≥ {r['bar']:.1f}"
        meets = {True: "yes", False: "**no**", None: "-"}[r["meets"]]
        lines.append(f"| {r['title']} | {r['unit']} | {_fmt(r[REFERENCE], digits)} | {_fmt(r[SUBJECT], digits)} "
                     f"| {ratio} | {bar} | {meets} |")
    lines += [
        "",
        "| workload | server CPU-s, Distribution | server CPU-s, acrlocal | client CPU-s, Distribution | "
        "client CPU-s, acrlocal | peak RSS MiB, Distribution | peak RSS MiB, acrlocal |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu, client, rss = r["cpu_s"], r["client_cpu_s"], r["peak_rss_mib"]
        lines.append(f"| {r['title']} | {_fmt(cpu.get(REFERENCE), 2)} | {_fmt(cpu.get(SUBJECT), 2)} "
                     f"| {_fmt(client.get(REFERENCE), 2)} | {_fmt(client.get(SUBJECT), 2)} "
                     f"| {_fmt(rss.get(REFERENCE), 0)} | {_fmt(rss.get(SUBJECT), 0)} |")
    for target in sorted({t for r in rows for t in r["others"]}):
        lines += [
            "",
            f"| workload | unit | {target} | {target} / Distribution (range) | {target} / acrlocal (range) "
            f"| server CPU-s, {target} | peak RSS MiB, {target} |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            other = r["others"].get(target)
            if other is None:
                continue
            digits = 1 if r["unit"] in ("MiB",) else 0
            to_ref, to_sub = (_range(other[k]) for k in ("to_reference", "to_subject"))
            lines.append(f"| {r['title']} | {r['unit']} | {_fmt(other['value'], digits)} | {to_ref} | {to_sub} "
                         f"| {_fmt(r['cpu_s'].get(target), 2)} | {_fmt(r['peak_rss_mib'].get(target), 0)} |")
    return "\n".join(lines)


def _range(ratios: dict[str, Any]) -> str:
    """A ratio's median and range, as :func:`_ratios` gives them ("-" when no repetition gave one)."""
    if ratios["ratio"] is None:
        return "-"
    return f"{ratios['ratio']:.2f} ({ratios['ratio_min']:.2f}-{ratios['ratio_max']:.2f})"
