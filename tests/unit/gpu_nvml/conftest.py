"""Fixtures for the NVML backend tests: a fake pynvml with four boards and its own clock."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The fake lives in tests/fakes/ (no packages under tests/); make it importable for this folder only.
_FAKES = str(Path(__file__).resolve().parents[2] / "fakes")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

import fake_pynvml  # noqa: E402
from wattplane.agent.gpu.nvml import NvmlBackend  # noqa: E402


@pytest.fixture
def fake() -> fake_pynvml.FakeNvml:
    """Boards 0..3: A40, V100, H100 SXM (MIG-capable, MIG off), P100 (no energy counter)."""
    return fake_pynvml.FakeNvml([fake_pynvml.A40, fake_pynvml.V100, fake_pynvml.H100_SXM, fake_pynvml.P100])


@pytest.fixture
def backend(fake: fake_pynvml.FakeNvml) -> Iterator[NvmlBackend]:
    with NvmlBackend(lib=fake, clock=fake.monotonic) as nvml_backend:
        yield nvml_backend
