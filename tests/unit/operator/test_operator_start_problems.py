"""A busy metrics port stops the operator with one line naming the setting, not a retry loop.

The kopf startup handler is called as kopf calls it (real kubeconfig loading, real aiohttp bind on a
port a socket holds); ``main`` is checked to turn kopf's wrapped failure into that one line.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from wattplane.operator import __main__ as operator_main
from wattplane.operator import handlers
from wattplane.operator.settings import OperatorSettings

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "dev",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
}


async def test_startup_on_a_busy_metrics_port_fails_permanently_naming_the_setting(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        ours = OperatorSettings(metrics_port=port, metrics_host="127.0.0.1", kubeconfig=str(kubeconfig))
        memo = kopf.Memo(wattplane_settings=ours)
        try:
            with pytest.raises(handlers.MetricsPortInUse) as caught:
                await handlers.startup(memo=memo, settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
        finally:
            await memo.carbon.close()
            await memo.api.close()
    assert isinstance(caught.value, kopf.PermanentError)  # kopf stops instead of retrying
    assert str(caught.value) == (
        f"metrics port {port} on 127.0.0.1 is already in use: set WATTPLANE_OPERATOR_METRICS_PORT "
        "(or --metrics-port) to a free port, or 0 to turn metrics off"
    )


def test_main_reports_the_port_in_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, Any] = {}

    async def kopf_stops(**kwargs: Any) -> None:  # what kopf does when a startup handler fails permanently
        seen.update(kwargs)
        try:
            raise handlers.MetricsPortInUse("metrics port 8081 on 0.0.0.0 is already in use: set ...")
        except handlers.MetricsPortInUse as exc:
            raise RuntimeError("One or more handlers failed.") from exc

    monkeypatch.setattr(operator_main.kopf, "operator", kopf_stops)
    monkeypatch.setenv("WATTPLANE_OPERATOR_PEERING", "wattplane")
    assert operator_main.main(["--metrics-port", "8081", "--liveness", "http://0.0.0.0:8080/healthz"]) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "metrics port 8081 on 0.0.0.0 is already in use: set ..."
    ]
    given = seen["memo"]["wattplane_settings"]
    assert (given.metrics_port, given.peering, seen["peering_name"], seen["standalone"]) == (
        8081,
        "wattplane",
        "wattplane",
        False,
    )
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"
