"""``wattplane run --backend sim``: the planner and an agent in one process, scraped and stopped like a service."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from wattplane.agent.gpu.simulated import read_state_file

POLICY = """
apiVersion: wattplane.io/v1alpha1
kind: EnergyPolicy
metadata: {name: cap-training}
spec:
  selector:
    podSelector:
      matchLabels: {wattplane.io/workload: training}
  limits: {maxFractionOfDefault: 0.7}
"""


async def limits(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "wattplane_gpu_power_limit_watts":
            for sample in family.samples:
                out[sample.labels["uuid"]] = sample.value
    return out


async def test_limits_applied_metrics_served_and_restored_on_sigterm(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    state = tmp_path / "gpus.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wattplane.cli.main", "run", "--backend", "sim", "--policy", str(policy),
        "--label", "wattplane.io/workload=training", "--metrics-port", "0", "--interval", "1", "--tick", "0.2",
        "--journal", str(tmp_path / "journal.json"), "--sim-gpus", "3", "--sim-state", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        match = re.search(r"metrics on (http://\S+/metrics)", banner)
        assert match, banner
        async with aiohttp.ClientSession() as session:
            seen: dict[str, float] = {}
            for _ in range(100):
                seen = await limits(session, match.group(1))
                if len(seen) == 3 and all(v == 210.0 for v in seen.values()):
                    break
                await asyncio.sleep(0.1)
            assert seen and all(v == 210.0 for v in seen.values()), seen
            async with session.get(match.group(1).replace("/metrics", "/readyz")) as ready:
                assert ready.status == 200
        assert all(d["power_limit_watts"] == 210.0 for d in read_state_file(state).values())
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert all(d["power_limit_watts"] == 300.0 for d in read_state_file(state).values())


REPO = Path(__file__).resolve().parents[3]


async def test_a_policy_that_selects_no_local_gpu_is_reported_with_the_label_that_would_match(tmp_path: Path) -> None:
    """``--policy policies/static-cap.yaml`` without ``--label wattplane.io/workload=training`` caps nothing: say so."""
    state = tmp_path / "gpus.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wattplane.cli.main", "run", "--backend", "sim",
        "--policy", str(REPO / "policies" / "static-cap.yaml"), "--metrics-port", "0", "--interval", "0.5",
        "--tick", "0.2", "--journal", str(tmp_path / "journal.json"), "--sim-gpus", "2", "--sim-state", str(state),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode()
        assert "metrics on" in banner, banner
        await asyncio.sleep(1.5)  # a few planning rounds and ticks
        assert all(d["power_limit_watts"] == 300.0 for d in read_state_file(state).values())  # nothing capped
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    warning = err.decode()
    assert "warning: policy static-cap selects none of the local GPUs (they carry no labels)" in warning, warning
    assert "--label wattplane.io/workload=training" in warning
    assert "--annotation wattplane.io/policy=static-cap" in warning
