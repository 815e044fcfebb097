"""``wattplane``: the command line (demo, simulator, carbon look-ups)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from wattplane.carbon import cli as carbon_cli
from wattplane.cli import demo, fleetview, run, simulate
from wattplane.operator.gctuning import tune_gc


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per feature."""
    parser = argparse.ArgumentParser(prog="wattplane", description="GPU power control plane for Kubernetes.")
    parser.add_argument("--log-level", default="WARNING")
    commands = parser.add_subparsers(dest="command", required=True)
    demo.register(commands)
    simulate.register(commands)
    run.register(commands)
    carbon_cli.register(commands)
    fleetview.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; its return value is the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    tune_gc()  # the simulator and `wattplane run` plan like the operator, and hold as much in memory
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
