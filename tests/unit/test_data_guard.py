"""The data guard (``tests/support/dataguard.py``) really refuses reads outside the repository.

The first tests attempt every common way of reaching a file under ``<repo>/../shared`` inside this
process and check that each is refused and recorded, and that look-alike paths are not. The last one
runs a small pytest session in a child process, with a real file in a folder the guard is told to
refuse, and checks that a test fails even when it swallows the error or turns it into a skip, and
that a module reading the folder at import time is a collection error.
"""

from __future__ import annotations

import glob
import gzip
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from dataguard import ROOTS, ForbiddenDataAccess, expect_refusals
from repodata import REPO

SHARED = REPO.parent / "shared"
TRACE = SHARED / "data" / "gpu" / "zeus_summary_power_a40.csv"  # on developers' machines, a real file


def _run(argv: list[str | Path]) -> None:
    subprocess.run(argv, check=True, timeout=30)


ATTEMPTS: dict[str, Callable[[Path], object]] = {
    "open": lambda p: open(p, "rb").close(),
    "Path.read_text": lambda p: p.read_text(),
    "gzip.open": lambda p: gzip.open(p).close(),
    "os.open": lambda p: os.close(os.open(p, os.O_RDONLY)),
    "Path.is_file": lambda p: p.is_file(),
    "Path.exists": lambda p: p.exists(),
    "Path.resolve": lambda p: p.resolve(strict=True),
    "os.listdir": lambda p: os.listdir(p.parent),
    "os.scandir": lambda p: list(os.scandir(p.parent)),
    "glob.glob": lambda p: glob.glob(str(p.parent / "*.csv")),
    "subprocess argument": lambda p: _run([sys.executable, "-c", "pass", f"--trace={p}"]),
    "subprocess cwd": lambda p: subprocess.run([sys.executable, "-c", "pass"], cwd=p.parent, check=True),
}


def test_the_guard_is_loaded_and_refuses_the_folder_next_to_the_checkout(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.has_plugin("dataguard")  # registered by tests/conftest.py
    assert str(SHARED) in ROOTS or os.path.realpath(SHARED) in ROOTS


@pytest.mark.parametrize("how", sorted(ATTEMPTS))
def test_every_way_of_reading_under_shared_is_refused(how: str) -> None:
    with expect_refusals() as caught, pytest.raises(ForbiddenDataAccess, match="outside the repository"):
        ATTEMPTS[how](TRACE)
    assert len(caught) == 1
    assert "shared" in caught[0].path and "test_data_guard.py" in caught[0].where


def test_an_existence_check_that_swallows_the_error_is_still_recorded() -> None:
    with expect_refusals() as caught:
        assert os.path.exists(TRACE) is False  # os.path.exists catches every OSError
    assert [(r.event, r.path) for r in caught] == [("os.stat", str(TRACE))]


@pytest.mark.parametrize(
    "spelling",
    [
        lambda: REPO / "tests" / ".." / ".." / "shared" / "data" / "x.csv",
        lambda: Path(os.path.relpath(SHARED / "data" / "x.csv")),
    ],
    ids=["dot-dot from inside the repository", "relative to the working directory"],
)
def test_other_spellings_of_the_same_path_are_refused(spelling: Callable[[], Path]) -> None:
    with expect_refusals() as caught, pytest.raises(ForbiddenDataAccess):
        spelling().read_bytes()
    assert len(caught) == 1


def test_a_symlink_into_shared_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent.csv"
    link.symlink_to(TRACE)
    with expect_refusals() as caught, pytest.raises(ForbiddenDataAccess):
        link.read_bytes()
    assert [r.path for r in caught] == [str(link)]


def test_look_alike_paths_and_the_repository_are_allowed(tmp_path: Path) -> None:
    with expect_refusals() as caught:
        for near in (REPO.parent / "shared2" / "x.csv", REPO.parent / "sharedx.csv", tmp_path / "shared" / "x"):
            with pytest.raises(FileNotFoundError):
                near.read_bytes()
        assert (REPO / "tests" / "data" / "NOTICE.md").read_text().startswith("# ")
    assert caught == []


def test_a_session_fails_whatever_the_test_does_with_the_refusal(tmp_path: Path) -> None:
    forbidden = tmp_path / "elsewhere"
    forbidden.mkdir()
    (forbidden / "trace.csv").write_text("timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,100\n")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import os
            import pytest

            TRACE = os.path.join(os.environ["WATTPLANE_TEST_FORBIDDEN_DIRS"], "trace.csv")

            def test_reads_and_propagates():
                with open(TRACE) as fh:
                    assert fh.read()

            def test_swallows_the_error():
                try:
                    with open(TRACE) as fh:
                        fh.read()
                except OSError:
                    pass  # e.g. fall back to synthetic data

            def test_skips_without_the_data():
                if not os.path.exists(TRACE):
                    pytest.skip("data not checked out")

            def test_uses_its_own_files():
                with open(__file__) as fh:
                    assert fh.read()
            """
        )
    )
    (suite / "test_at_import.py").write_text(
        "import os\n"
        "DATA = open(os.path.join(os.environ['WATTPLANE_TEST_FORBIDDEN_DIRS'], 'trace.csv')).read()\n"
        "def test_nothing():\n    assert DATA\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "support"), os.environ.get("PYTHONPATH", "")]),
        "WATTPLANE_TEST_FORBIDDEN_DIRS": str(forbidden),
        "WATTPLANE_DATA_GUARD": "strict",
    }
    argv = [sys.executable, "-m", "pytest", "-p", "dataguard", "-p", "no:cacheprovider", "-q", "-rfEs"]
    argv += ["--continue-on-collection-errors", "-W", "ignore", str(suite)]
    done = subprocess.run(argv, cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr

    assert done.returncode == 1, out
    for failed in ("test_reads_and_propagates", "test_swallows_the_error", "test_skips_without_the_data"):
        assert f"FAILED test_inner.py::{failed}" in out, out
    assert "ERROR test_at_import.py" in out and "1 passed" in out, out
    assert "read data outside the repository" in out and f"open {forbidden / 'trace.csv'}" in out
    assert "data guard (strict):" in out and "4 refused" in out, out
