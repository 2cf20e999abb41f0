"""Side-by-side benchmarks of acrlocal against reference servers (see benchmarks/README.md).

Benchmarks are not tests: they print and record figures, and never assert timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Run from a checkout (``python -m benchmarks.registry``) without installing the package first.
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
