"""Fixtures for the chart tests: helm/kubectl from the PyPI layer package, and rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helmtool import Tools, render, require_tools

Rendered = list[dict[str, Any]]


@pytest.fixture(scope="session")
def tools() -> Tools:
    return require_tools()


@pytest.fixture(scope="session")
def rendered(tools: Tools) -> Callable[..., Rendered]:
    """``rendered(values)``: the chart's objects for ``values`` merged over values.yaml."""

    def _render(values: dict[str, Any] | None = None, **kwargs: Any) -> Rendered:
        return render(tools, values=values, **kwargs)

    return _render
