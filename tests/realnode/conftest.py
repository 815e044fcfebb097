"""The real-node tier's fixture: a control plane plus a real kubelet/containerd node (see realnode.py).

The tier runs when ``WATTPLANE_REAL_NODE=1`` or in CI (``WATTPLANE_REQUIRE_CLUSTER=1``, set by
``.ci/run``); elsewhere it is skipped with a reason naming the variable. ``WATTPLANE_REAL_NODE=0``
turns it off explicitly (e.g. ``.ci/run`` on a workstation without root), with a skip that says so.
Where it is asked for and the machine cannot host it (not root, a package that will not install, a
build that fails) the test fails rather than skips: someone asked for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import realnode  # the directory is put on sys.path just above


def _requested() -> bool:
    switch = os.environ.get(realnode.ENABLE_VAR)
    if switch is not None:
        return switch == "1"
    return os.environ.get("WATTPLANE_REQUIRE_CLUSTER") == "1"


@pytest.fixture(scope="module")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[realnode.RealNode]:
    """A running real node joined to its own control plane; everything is stopped afterwards.

    Module scope: the node (and the machine-wide lock) is given back as soon as the tier's tests are
    done, not at the end of the whole session, so it costs the rest of the suite nothing.
    """
    if not _requested():
        pytest.skip(
            f"real-node tier not requested: set {realnode.ENABLE_VAR}=1 to run it (needs root; installs containerd, "
            "runc, CNI plugins, buildah, mmdebstrap with apt and builds kubelet and the image, see tests/realnode)"
        )
    # The lock also serializes the builds: two checkouts may share one .cache (and its buildah store).
    try:
        with realnode.machine_lock():
            timings = realnode.prepare()
            node = realnode.start(tmp_path_factory.mktemp("realnode"))
            node.timings.update({f"prepare: {k}": v for k, v in timings.items()})
            try:
                yield node
            finally:
                node.stop()
    except realnode.Unavailable as exc:  # raised before the node exists, never by the tests
        pytest.fail(f"real-node tier requested but this machine cannot host it: {exc}")
