"""Fixtures for the agent's HTTP endpoint tests: a real agent on loopback (see ``agenthttp``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agenthttp import RunningAgent, running_agent


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[RunningAgent]:
    async with running_agent(tmp_path) as started:
        yield started
