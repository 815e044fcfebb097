"""The simulated backend's faults file: how fault tests reach an agent running as its own process."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from wattplane.agent.gpu.errors import GpuLostError, GpuNoPermissionError, GpuNotSupportedError
from wattplane.agent.gpu.simfaults import parse_faults
from wattplane.agent.gpu.simulated import SimulatedBackend


def _write(path: Path, faults: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, path)
    # The file is re-read when its mtime or size changes; make sure the mtime moves even on coarse clocks.
    stamp = time.time_ns() + 10_000_000
    os.utime(path, ns=(stamp, stamp))


def test_faults_by_index_and_uuid_apply_to_their_gpu_only(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    backend = SimulatedBackend(node_name="n", gpu_count=3, faults_file=faults)
    gpu0, gpu1, gpu2 = backend.devices()
    _write(faults, {"1": {"set_power_limit": "NoPermission"}, gpu2.identity.uuid: {"read": "GpuLost"}})
    with pytest.raises(GpuNoPermissionError):
        gpu1.set_power_limit_watts(200)
    with pytest.raises(GpuLostError):
        gpu2.read()
    gpu0.set_power_limit_watts(200)  # untouched
    gpu1.read()  # only its writes fail
    assert gpu0.read().power_limit_watts == 200


def test_changes_to_the_file_are_picked_up_and_an_empty_file_clears(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    (gpu,) = SimulatedBackend(node_name="n", gpu_count=1, faults_file=faults).devices()
    gpu.set_power_limit_watts(250)  # no file yet: no faults
    _write(faults, {"0": {"clocks": "NotSupported"}})
    with pytest.raises(GpuNotSupportedError):
        gpu.set_locked_clocks_mhz(900, 1200)
    _write(faults, {})
    gpu.set_locked_clocks_mhz(900, 1200)
    faults.unlink()
    gpu.reset_locked_clocks()


def test_a_delay_blocks_the_call_then_succeeds(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    (gpu,) = SimulatedBackend(node_name="n", gpu_count=1, faults_file=faults).devices()
    _write(faults, {"0": {"set_power_limit": {"delay_s": 0.3}}})
    started = time.monotonic()
    gpu.set_power_limit_watts(220)
    assert time.monotonic() - started >= 0.3
    assert gpu.read().power_limit_watts == 220


def test_a_broken_file_is_reported_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    faults = tmp_path / "faults.json"
    (gpu,) = SimulatedBackend(node_name="n", gpu_count=1, faults_file=faults).devices()
    faults.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="wattplane.agent.gpu.simfaults"):
        gpu.set_power_limit_watts(210)
    assert "ignored" in caplog.text


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "JSON object"),
        ({"0": "GpuLost"}, "operation"),
        ({"0": {"explode": "GpuLost"}}, "unknown operation"),
        ({"0": {"read": "Gremlins"}}, "unknown error reason"),
        ({"0": {"read": {"delay_s": -1}}}, "delay_s"),
    ],
)
def test_nonsense_is_refused_with_a_reason(raw: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_faults(raw)
