"""Fixtures of the reliability suite (the helpers themselves live in ``tests/support/faults.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from controlplane import ControlPlane
from kubeapi import connect
from kubernetes_asyncio import client


@pytest.fixture
async def api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An admin client of the session's API server, for one test."""
    async with await connect(control_plane.kubeconfig) as api_client:
        yield api_client
