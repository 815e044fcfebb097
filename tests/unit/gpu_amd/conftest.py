"""Fixtures for the AMD SMI backend tests: a fake amdsmi with three boards and its own clock."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The fake lives in tests/fakes/ (no packages under tests/); make it importable for this folder only.
_FAKES = str(Path(__file__).resolve().parents[2] / "fakes")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

import fake_amdsmi  # noqa: E402
from wattplane.agent.gpu.amd import AmdSmiBackend  # noqa: E402


@pytest.fixture
def fake() -> fake_amdsmi.FakeAmdSmi:
    """Boards 0..2: MI300X, MI250X, MI210."""
    return fake_amdsmi.FakeAmdSmi([fake_amdsmi.MI300X, fake_amdsmi.MI250X, fake_amdsmi.MI210])


@pytest.fixture
def backend(fake: fake_amdsmi.FakeAmdSmi) -> Iterator[AmdSmiBackend]:
    with AmdSmiBackend(lib=fake, clock=fake.monotonic) as amd_backend:
        yield amd_backend
