"""``wattplane-operator``: run the kopf operator (Deployment entry point)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf
from wattplane.operator import handlers  # noqa: F401 - registers the kopf handlers


def main(argv: list[str] | None = None) -> int:
    """Run the operator cluster-wide until SIGTERM."""
    parser = argparse.ArgumentParser(prog="wattplane-operator", description=__doc__)
    parser.add_argument(
        "--peering",
        default=None,
        help="kopf peering name (needs kopf's peering CRDs); default: standalone, run exactly one replica",
    )
    parser.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
