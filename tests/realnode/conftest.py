"""The real-node tier's fixture: a control plane plus a real kubelet/containerd node (see realnode.py).

The tier is opt-in: it runs when ``WATTPLANE_REAL_NODE=1``, and is skipped with a reason naming that
variable otherwise. Where it is asked for and the machine cannot host it (not root, a package that
will not install, a build that fails) the test fails rather than skips: someone asked for it.
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
    return os.environ.get(realnode.ENABLE_VAR) == "1"


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[realnode.RealNode]:
    """A running real node joined to its own control plane; everything is stopped afterwards."""
    if not _requested():
        pytest.skip(
            f"real-node tier is opt-in: set {realnode.ENABLE_VAR}=1 to run it (needs root; installs containerd, "
            "runc, CNI plugins, buildah, mmdebstrap with apt and builds kubelet and the image, see tests/realnode)"
        )
    try:
        timings = realnode.prepare()
    except realnode.Unavailable as exc:
        pytest.fail(f"{realnode.ENABLE_VAR}=1 but this machine cannot host a real node: {exc}")
    with realnode.machine_lock():
        node = realnode.start(tmp_path_factory.mktemp("realnode"))
        node.timings.update({f"prepare: {k}": v for k, v in timings.items()})
        try:
            yield node
        finally:
            node.stop()
