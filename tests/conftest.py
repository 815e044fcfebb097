"""Test-suite wiring: the data guard, the control-plane plugin and the hardware/e2e gates.

``dataguard`` comes first so that its audit hook is in place before anything else is imported: from
then on, any read under ``<repo>/../shared`` fails the test that made it (see its docstring).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "support"))

pytest_plugins = ["dataguard", "controlplane", "fleet"]
