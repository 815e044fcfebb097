"""How cheap is one evaluation of a simulated workload curve? Run ``python bench/sim_curve_eval.py``.

A virtual-time fleet simulator evaluates ``LimitCurve.power`` / ``time_per_epoch`` for every GPU at every
event, millions of times per run. This prints the cost per call next to a baseline measured in the same
run: a Python method that does one multiplication, i.e. the floor any per-call API pays. The ratio is
the number to watch; absolute times depend on the machine. Each figure is the best of five runs.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable

from wattplane.agent.gpu.simmodels import builtin_catalog

CALLS = 200_000


class _Floor:
    """Baseline: a method call with one multiplication."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def power(self, limit: float) -> float:
        return limit * self.factor


def _best(run: Callable[[], object]) -> float:
    """Seconds per call: the best of five timings of ``run`` (1024 calls each), repeated to CALLS."""
    return min(timeit.repeat(run, number=CALLS // 1024, repeat=5)) / (CALLS // 1024 * 1024)


def main() -> None:
    """Time curve evaluations against the floor, on measured and extrapolated curves."""
    rng = random.Random(0)
    floor = _Floor(0.9)
    cases = {
        "A40 imagenet/resnet50 (measured, 9 knots)": ("A40", "imagenet/resnet50", 100.0, 300.0),
        "H100 imagenet/resnet50 (R3, 9 knots)": ("H100", "imagenet/resnet50", 200.0, 700.0),
        "H100 llm-inference at load 0.9 (R4)": ("H100", "llm-inference", 200.0, 700.0),
    }
    limits = [rng.uniform(100.0, 700.0) for _ in range(1024)]
    base = _best(lambda: [floor.power(x) for x in limits])
    print(f"baseline (method call + multiply): {base * 1e9:7.1f} ns/call")
    for label, (model, name, lo, hi) in cases.items():
        curve, _ = builtin_catalog().workload(model, name).operating_point(0.9)
        xs = [lo + (hi - lo) * rng.random() for _ in range(1024)]
        for method in ("power", "time_per_epoch"):
            fn = getattr(curve, method)
            cost = _best(lambda fn=fn, xs=xs: [fn(x) for x in xs])
            print(f"{label:<42} {method:<15} {cost * 1e9:7.1f} ns/call  {cost / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
