"""The fuzz suite's settings and its count.

Hypothesis profiles: ``ci`` (the default; a bounded slice that the normal suite runs) and ``long`` (what
``scripts/fuzz`` runs, round after round with new seeds, for a duration). ``HYPOTHESIS_PROFILE`` chooses. Every
example counts itself (:func:`count`); the session prints the totals and, when ``$FUZZ_REPORT`` names a file,
appends them to it as one JSON line (``scripts/fuzz`` adds the rounds up).
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=_QUIET_CHECKS)
settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=_QUIET_CHECKS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TOTALS: Counter[str] = Counter()


def count(kind: str, status: int | None = None) -> None:
    """One example of ``kind`` was run (``status``: the HTTP status it got, for requests)."""
    TOTALS["examples"] += 1
    TOTALS[f"examples.{kind}"] += 1
    if status is not None:
        TOTALS["requests"] += 1
        if status >= 500:
            TOTALS["5xx"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TOTALS:
        return
    terminalreporter.write_line(f"fuzz: {TOTALS['examples']} examples, {TOTALS['requests']} HTTP requests, "
                                f"{TOTALS['5xx']} answered 5xx")
    if path := os.environ.get("FUZZ_REPORT"):
        with open(path, "a") as report:
            report.write(json.dumps(dict(TOTALS)) + "\n")
