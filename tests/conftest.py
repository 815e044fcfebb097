"""Test-suite wiring: the control-plane plugin and the hardware/e2e gates."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "support"))

pytest_plugins = ["controlplane", "fleet"]
