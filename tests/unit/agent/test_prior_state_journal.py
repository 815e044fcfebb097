"""The prior-state journal persists atomically and survives a corrupt file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from wattplane.agent.journal import Journal, PriorState


def test_entries_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.json"  # the folder is created on first write
    first = Journal(path)
    first.remember("GPU-a", PriorState(250.0, (300, 1500)))
    first.remember("GPU-b", PriorState(300.0))
    second = Journal(path)
    assert second.problem is None
    assert second.get("GPU-a") == PriorState(250.0, (300, 1500))
    assert second.get("GPU-b") == PriorState(300.0, None)
    second.forget("GPU-a")
    assert Journal(path).uuids() == {"GPU-b"}


def test_the_first_prior_state_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.json")
    journal.remember("GPU-a", PriorState(250.0))
    journal.remember("GPU-a", PriorState(180.0))
    assert Journal(tmp_path / "j.json").get("GPU-a") == PriorState(250.0)


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "j.json"
    journal = Journal(path)
    journal.remember("GPU-a", PriorState(250.0))
    journal.forget("GPU-a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.json"]
    assert json.loads(path.read_text()) == {"version": 1, "gpus": {}}


def test_forgetting_an_unknown_gpu_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "j.json"
    Journal(path).forget("GPU-x")
    assert not path.exists()


def test_no_path_means_memory_only(tmp_path: Path) -> None:
    journal = Journal(None)
    journal.remember("GPU-a", PriorState(250.0))
    assert journal.get("GPU-a") == PriorState(250.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        "[]",
        "42",
        '"text"',
        "null",
        '{"version": 1}',
        '{"gpus": []}',
        '{"gpus": null}',
        '{"gpus": {"GPU-a": [250]}}',
        '{"gpus": {"GPU-a": {}}}',
        '{"gpus": {"GPU-a": {"power_limit_watts": "lots"}}}',
        '{"gpus": {"GPU-a": {"power_limit_watts": NaN}}}',
        '{"gpus": {"GPU-a": {"power_limit_watts": 250, "locked_clocks_mhz": [1]}}}',
        '{"gpus": {"GPU-a": {"power_limit_watts": 250, "locked_clocks_mhz": 7}}}',
    ],
)
def test_a_corrupt_file_is_moved_aside_and_reported(tmp_path: Path, content: str) -> None:
    path = tmp_path / "j.json"
    path.write_text(content)
    journal = Journal(path)  # must not raise
    assert journal.uuids() == set()
    assert journal.problem is not None and "moved to" in journal.problem
    assert not path.exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("j.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == content
    # The journal keeps working: a fresh entry lands in a fresh file.
    journal.remember("GPU-b", PriorState(200.0))
    assert Journal(path).get("GPU-b") == PriorState(200.0)


def test_a_binary_file_is_corrupt_too(tmp_path: Path) -> None:
    path = tmp_path / "j.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    journal = Journal(path)
    assert journal.problem is not None
    assert journal.uuids() == set()
