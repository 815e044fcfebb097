"""Soak: 1,000 pods churning across 50 fake GPU nodes for 10 minutes, real operator and agents.

Starts the test tier's control plane (etcd + kube-apiserver + kube-controller-manager + kwok, built by
tests/controlplane/build.sh), 50 fake nodes with one real agent process each (simulated A40s,
production intervals: tick 1 s, status every 10 s), and the real operator; applies a policy mix (a
static cap, a carbon policy on a trace, a rack budget over half the nodes, an efficiency policy without
a progress signal), creates 1,000 pods and replaces a few of them every second for the duration; then
leaves everything alone for a quiet period. The run itself is ``tests/support/soak.py``, the same code
as the CI-sized ``tests/reliability/test_soak.py``.

    python bench/soak.py                                # 50 nodes, 1,000 pods, 600 s, 5 changes/s
    python bench/soak.py --nodes 10 --pods 200 --minutes 1

Prints RSS of the operator and the agents (end of warm-up, end of churn, end), GpuNode writes per node
per minute (spec = the operator's plans, status = the agents' reports) during the churn and during the
quiet period against the status interval, and the error counts. Baseline for the write rate: one status
write per node per status interval, which is what an idle node must cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from controlplane import ensure_binaries, start_control_plane  # noqa: E402
from soak import STATUS_INTERVAL_S, run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0, help="churn duration")
    parser.add_argument("--churn-per-s", type=float, default=5.0, help="pods replaced per second")
    parser.add_argument("--quiet-s", type=float, default=60.0, help="quiet period counted after the churn")
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    ensure_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="wattplane-soak-"))
    cp = start_control_plane(workdir / "cp")
    started = time.monotonic()
    try:
        report = run_soak(
            cp,
            workdir / "fleet",
            prefix="soak",
            nodes=args.nodes,
            pods=args.pods,
            churn_s=args.minutes * 60,
            quiet_s=args.quiet_s,
            churn_per_s=args.churn_per_s,
            warmup_s=args.warmup_s,
            progress=lambda line: print(f"[{time.monotonic() - started:6.0f} s] {line}", flush=True),
        )
    finally:
        cp.stop()
    figures = report.to_json()
    rss = report.rss_summary()
    print(json.dumps(figures, indent=1))
    baseline = 60 / STATUS_INTERVAL_S
    for phase, budgeted in (("churn", None), ("quiet", False), ("quiet", True)):
        rates = report.writes_per_node_per_minute(phase, budgeted=budgeted)
        which = {None: "all nodes", False: "nodes without a budget", True: "budgeted rack"}[budgeted]
        print(
            f"{phase} ({which}): status writes/node/min mean {rates['status mean']} "
            f"(x{rates['status mean'] / baseline:.2f} "
            f"the 1-per-interval baseline of {baseline:g}), max {rates['status max']}; "
            f"plans/node/min mean {rates['spec mean']}, max {rates['spec max']}"
        )
    print(
        f"RSS operator {rss['warm']['operator']} → {rss['end']['operator']} MiB, agents (mean) "
        f"{rss['warm']['agent mean']} → {rss['end']['agent mean']} MiB, agents (max) {rss['warm']['agent max']} → "
        f"{rss['end']['agent max']} MiB; log problems {report.problems_at_warm} → {report.problems_at_end}; "
        f"tick errors {report.tick_errors:g}; round errors {report.round_errors:g}"
    )
    for line in report.problem_lines[:10]:
        print("  problem:", line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
