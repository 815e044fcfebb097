"""The operator's collector thresholds: set at start, and worth setting on a planner-sized heap."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest
from wattplane.operator.gctuning import THRESHOLDS, tune_gc


@pytest.fixture
def restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_tune_gc_sets_the_documented_thresholds(restore_thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == THRESHOLDS


def test_the_operator_command_tunes_the_collector_before_it_runs() -> None:
    """``wattplane-operator --help`` exits early; the tuning happens in main() before kopf starts."""
    code = (
        "import gc, sys\n"
        "from wattplane.operator import __main__ as m\n"
        "m.kopf.operator = lambda **kw: (_ for _ in ()).throw(SystemExit(0))\n"  # stop where kopf would start
        "try:\n    m.main(['--metrics-port', '0'])\nexcept SystemExit:\n    pass\n"
        "print(gc.get_threshold())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == str(THRESHOLDS)


def test_fewer_collections_on_a_large_long_lived_heap(restore_thresholds: None) -> None:
    """The reason for the setting: allocations that survive (a round's plan) trigger far fewer passes."""

    def collections_while_building(n: int) -> int:
        counts = [0]

        def count(phase: str, info: dict[str, int]) -> None:
            counts[0] += phase == "start"

        gc.callbacks.append(count)
        try:
            kept = [(i, str(i), {"k": i}) for i in range(n)]
            assert len(kept) == n
        finally:
            gc.callbacks.remove(count)
        return counts[0]

    gc.set_threshold(700, 10, 10)
    default = collections_while_building(200_000)
    tune_gc()
    tuned = collections_while_building(200_000)
    assert tuned * 20 < default, (tuned, default)
