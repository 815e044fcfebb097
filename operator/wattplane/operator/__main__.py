"""``wattplane-operator``: run the kopf operator (Deployment entry point)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf
from wattplane.api.settingsdoc import parse_settings, settings_parser
from wattplane.operator import handlers
from wattplane.operator.gctuning import tune_gc
from wattplane.operator.settings import FLAGS, OperatorSettings

logger = logging.getLogger("wattplane.operator")

#: Loggers that write one line per HTTP request: kubelet's liveness probe reaches kopf's health endpoint
#: through aiohttp, whose access log says INFO. They speak only at DEBUG, so that an INFO log says what
#: the operator decided and not every probe (the metrics server runs without an access log).
REQUEST_LOGGERS = ("aiohttp.access",)


def configure_logging(level: str) -> None:
    """Log at ``level``, with the per-request loggers at WARNING (or ``level``, if higher) unless ``DEBUG``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet = logging.DEBUG if level == "DEBUG" else max(logging.WARNING, logging.getLevelNamesMapping()[level])
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def build_parser() -> argparse.ArgumentParser:
    """The command line: a flag for each setting in :data:`FLAGS`, every setting listed in ``--help``."""
    return settings_parser("wattplane-operator", __doc__, OperatorSettings, FLAGS)


def main(argv: list[str] | None = None) -> int:
    """Run the operator cluster-wide until SIGTERM (flags override ``WATTPLANE_OPERATOR_*``)."""
    parser = build_parser()
    settings = parse_settings(parser, OperatorSettings, FLAGS, argv)
    configure_logging(settings.log_level)
    tune_gc()
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=True,
                standalone=settings.peering is None,
                peering_name=settings.peering,
                liveness_endpoint=settings.liveness_endpoint,
                memo=kopf.Memo(wattplane_settings=settings),
            )
        )
    except Exception as exc:  # a startup handler's permanent failure arrives wrapped by kopf
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, handlers.MetricsPortInUse):
            cause = cause.__cause__
        if cause is None:
            raise
        logger.error("%s", cause)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
