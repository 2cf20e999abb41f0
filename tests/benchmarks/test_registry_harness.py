"""The registry benchmark harness runs end to end in ``--quick`` mode against both servers.

This checks that the harness works (servers start, every workload completes against both, results are
written); it never looks at how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_measures_every_workload_on_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.registry", "--quick", "--scratch", str(tmp_path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"] == []
    measured = {(s["workload"], s["target"]) for s in result["samples"] if s["value"] > 0 and s["cpu_s"] >= 0}
    assert measured == {(w.key, t) for w in WORKLOADS for t in ("distribution", "acrlocal")}
    assert "| 4. manifest HEAD" in proc.stdout
    assert list(tmp_path.iterdir()) == [out], "the scratch directory is removed"
