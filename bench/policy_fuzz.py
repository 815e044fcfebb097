"""Bad input at scale: generated EnergyPolicies through the real API server and through the models.

Starts the test tier's control plane, draws ``--cases`` near-valid policy specs from the hypothesis
strategy in ``tests/support/fuzzing.py``, sends each to kube-apiserver as a server-side dry-run create
with strict field validation (``--concurrency`` at a time), and puts each through the models, the
planner and the agent's engine on simulated GPUs (what the operator and the agents would do with it).

    python bench/policy_fuzz.py                     # 10,000 cases
    python bench/policy_fuzz.py --cases 50000 --concurrency 64

Prints: cases, rejected and accepted by the API server, the rate, how the models agree (accepted by
the server but refused by the models is the gap that matters: kubectl says "created", status says
InvalidSpec), examples of each disagreement, limits that left their GPU's constraints (must be 0), and
clock locks the devices refused. The same checks, CI-sized, run in
``tests/reliability/test_bad_input_at_scale.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

import fuzzing  # noqa: E402
from controlplane import ensure_binaries, start_control_plane  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    started = time.monotonic()
    specs = fuzzing.draw(fuzzing.policy_specs, args.cases, derandomize=False)  # new cases every run
    drawn = time.monotonic() - started
    ensure_binaries()
    cp = start_control_plane(Path(tempfile.mkdtemp(prefix="wattplane-fuzz-")))
    try:
        answers, api_seconds = asyncio.run(
            fuzzing.through_api_server(cp.kubeconfig, specs, concurrency=args.concurrency)
        )
    finally:
        cp.stop()

    tally: collections.Counter[str] = collections.Counter()
    examples: dict[str, list[str]] = collections.defaultdict(list)
    statuses: collections.Counter[int] = collections.Counter()
    violations: list[str] = []
    checked = time.monotonic()
    for spec, (status, answer) in zip(specs, answers, strict=True):
        statuses[status] += 1
        server_ok = status == 201
        stored = answer if server_ok else spec
        model, message = fuzzing.model_verdict(stored)
        key = f"server {'accepts' if server_ok else 'rejects'}, models {'accept' if model else 'refuse'}"
        tally[key] += 1
        if server_ok != (model is not None) and len(examples[key]) < 5:
            why = message if server_ok else str(answer)
            examples[key].append(f"{why[:200]}  <-  {json.dumps(spec)[:200]}")
        if model is not None:
            result = fuzzing.check_offline(stored)
            violations += result.violations + result.clock_refusals
            tally["clock locks refused by the device"] += bool(result.clock_refusals)
            tally["clock locks clamped by the agent"] += bool(result.clamped_clocks)
    offline_seconds = time.monotonic() - checked

    print(f"cases: {len(specs)} (drawn in {drawn:.1f} s)")
    print(f"API server: {api_seconds:.1f} s, {len(specs) / api_seconds:.0f} dry-run creates/s, HTTP {dict(statuses)}")
    for key, count in sorted(tally.items()):
        print(f"  {key}: {count}")
    print(f"models + planner + engine: {offline_seconds:.1f} s")
    print(f"limits outside the device constraints: {len(violations)}")
    for key, lines in examples.items():
        print(f"examples, {key}:")
        for line in lines:
            print(f"  {line}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
