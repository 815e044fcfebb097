"""Where the test suite's data lives: only inside the repository.

The packages ship the real traces they need (the agent's Zeus and ML.ENERGY GPU measurements, the
simulator's Electricity Maps, SGIP and Azure traces); ``tests/data`` holds small slices of what is
not packaged. Each folder has a NOTICE.md with the origin and licence of every file. Reading
anything outside the repository fails the test (``dataguard``).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GPU_DATA = REPO / "agent" / "wattplane" / "agent" / "gpu" / "data"
SIM_DATA = REPO / "operator" / "wattplane" / "sim" / "data"
TEST_DATA = REPO / "tests" / "data"
