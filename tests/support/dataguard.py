"""pytest plugin: no test may touch the data folder that sits next to a developer's checkout.

The project's raw data collection lives in ``<repo>/../shared`` on the machines where wattplane is
developed, and a fresh clone does not have it. A test that reads from there passes on a developer's
machine and fails (or, behind a ``skipif(not path.exists())``, silently stops testing anything) on
every other machine. So every file the suite uses must be inside the repository: the traces the
packages ship (``agent/wattplane/agent/gpu/data``, ``operator/wattplane/sim/data``) or the small
slices under ``tests/data``.

The guard is path-based, so it fires whether or not the forbidden folder exists; CI, which runs on
a fresh clone, proves exactly as much as a developer's machine. It covers:

* ``open`` (``open``, ``io.open``, ``os.open``, ``gzip.open``, ``Path.read_text``, …), directory
  listings (``os.listdir``, ``os.scandir``, ``glob``) and child processes whose command line or
  working directory names a forbidden path (``subprocess``, ``asyncio`` subprocesses, ``os.exec*``,
  ``os.posix_spawn``): through :func:`sys.addaudithook`, which sees every such call in the process,
  whatever library makes it. The real path (symlinks resolved) is checked too, for ``open``.
* existence checks (``Path.exists``/``is_dir``/``is_file``, ``os.path.exists``, ``os.stat``): these
  raise no audit event, so ``os.stat`` and ``os.lstat`` are wrapped.

A refused access raises :class:`ForbiddenDataAccess` (a :class:`PermissionError`) *and* is recorded,
because code may catch the error (``os.path.exists`` does) and carry on with a fallback. The hooks
below then fail the test, the collection or the whole session in which it happened.

``WATTPLANE_TEST_FORBIDDEN_DIRS`` (``os.pathsep``-separated) adds folders to refuse.
``WATTPLANE_DATA_GUARD=strict`` (set by ``.ci/run``) checks at the start and at the end of the session
that a read under the forbidden folder really is refused (CI's fresh clone has no such folder, so
nothing else there would show a guard that silently stopped working), and prints what it checked.

Limits: native code that opens files without Python's ``open`` (none in this suite) is not seen, and a
child process is checked on its command line and working directory only, not on what it opens.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
STRICT = os.environ.get("WATTPLANE_DATA_GUARD", "") == "strict"


def _forms(path: str) -> tuple[str, ...]:
    """The absolute and the symlink-free spelling of ``path`` (one entry when they agree)."""
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    return (absolute,) if real == absolute else (absolute, real)


def _roots() -> tuple[str, ...]:
    extra = [p for p in os.environ.get("WATTPLANE_TEST_FORBIDDEN_DIRS", "").split(os.pathsep) if p]
    return tuple(form for root in [str(REPO.parent / "shared"), *extra] for form in _forms(root))


ROOTS = _roots()
INSIDE = _forms(str(REPO))  # a repository that is itself called "shared" must still read its own files


class ForbiddenDataAccess(PermissionError):
    """A test, bench or script reached for data outside the repository."""


@dataclass(frozen=True)
class Refusal:
    """One refused access: what was attempted, on which path, and from where."""

    event: str
    path: str
    where: str

    def describe(self) -> str:
        return f"{self.event} {self.path}\n{self.where}"


@dataclass
class _State:
    refusals: list[Refusal] = field(default_factory=list)
    reported: int = 0  # refusals[:reported] already failed a test, a collection or the session
    expected: list[list[Refusal]] = field(default_factory=list)  # open expect_refusals() blocks
    checked: int = 0  # accesses looked at (shown in strict mode)


_state = _State()
_LEFT = pytest.StashKey[list[Refusal]]()  # refusals no test or collection was failed for
_BROKEN = pytest.StashKey[str]()  # strict mode: why the guard no longer refuses at the end ("" if it does)
_local = threading.local()  # ``busy``: this thread is inside the guard (realpath, traceback…)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + os.sep) for root in roots)


def _forbidden(path: str) -> bool:
    return _under(path, ROOTS) and not _under(path, INSIDE)


def _text(obj: object) -> str | None:
    """``obj`` as a path string, or None for file descriptors and other non-paths."""
    if isinstance(obj, int) or obj is None:
        return None
    try:
        raw = os.fspath(obj)  # type: ignore[call-overload]
    except TypeError:
        return None
    return os.fsdecode(raw)


def _machinery(filename: str) -> bool:
    """Frames that say nothing about who made the access: the guard's, pytest's, pluggy's, frozen modules'."""
    parts = Path(filename).parts
    return filename == __file__ or filename.startswith("<frozen") or "_pytest" in parts or "pluggy" in parts


def _names_forbidden(word: str) -> bool:
    return any(word.endswith(root) or root + os.sep in word for root in ROOTS)


def _refuse(event: str, path: str) -> None:
    _local.busy = True  # reading the stack's source lines opens files: do not check those
    try:
        stack = [f for f in traceback.extract_stack() if not _machinery(f.filename)]
        where = "".join(traceback.format_list(stack[-4:]))
    finally:
        _local.busy = False
    refusal = Refusal(event, path, where)
    (_state.expected[-1] if _state.expected else _state.refusals).append(refusal)
    message = (
        f"{event} {path}: this path is outside the repository ({', '.join(ROOTS)}); tests, benches and "
        "scripts use data inside the repository only (packaged traces or tests/data, see tests/data/NOTICE.md)"
    )
    raise ForbiddenDataAccess(errno.EACCES, message, path)


def _check(event: str, obj: object, *, real: bool = False, cwd: object = None) -> None:
    if getattr(_local, "busy", False):
        return
    text = _text(obj)
    if text is None:
        return
    _local.busy = True
    try:
        _state.checked += 1
        base = _text(cwd)
        path = os.path.abspath(os.path.join(base, text) if base else text)
        hit = _forbidden(path) or (real and _forbidden(os.path.realpath(path)))
    finally:
        _local.busy = False
    if hit:
        _refuse(event, text)


def _check_command(event: str, argv: Any, cwd: object = None) -> None:
    """Refuse a child process whose command line or working directory names a forbidden path."""
    _check(event, cwd)
    words = [argv] if isinstance(argv, (str, bytes, os.PathLike)) else list(argv or ())
    for word in words:
        text = _text(word)
        if text is None:
            continue
        for part in text.replace("=", " ").split():
            if _names_forbidden(part):  # also inside options such as --trace=/abs/path
                _refuse(event, part)
            _check(event, part, cwd=cwd)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    try:
        if event == "open":
            _check(event, args[0], real=True)
        elif event in ("os.listdir", "os.scandir", "glob.glob", "glob.glob/2"):
            _check(event, args[0] if args else None)
        elif event == "subprocess.Popen":  # (executable, args, cwd, env)
            argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
            _check_command(event, [args[0], *argv], args[2])
        elif event in ("os.exec", "os.posix_spawn"):  # (path, argv, env)
            _check_command(event, [args[0], *(args[1] or ())])
    except ForbiddenDataAccess:
        raise
    except Exception:  # an argument shape the guard does not know must not break the call itself
        return


def _wrap_stat(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
    def guarded(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if kwargs.get("dir_fd") is None:
            _check(f"os.{real.__name__}", path)
        return real(path, *args, **kwargs)

    guarded.__name__ = real.__name__
    guarded.__doc__ = real.__doc__
    guarded.__wrapped__ = real  # type: ignore[attr-defined]
    # Callers such as shutil ask "is os.stat in os.supports_fd?": keep the answers the same.
    for capability in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks, os.supports_effective_ids):
        if real in capability:
            capability.add(guarded)
    return guarded


def _install() -> None:
    if getattr(sys, "_wattplane_dataguard", False):  # one audit hook per process, even if imported twice
        return
    sys._wattplane_dataguard = True  # type: ignore[attr-defined]
    sys.addaudithook(_audit)
    os.stat = _wrap_stat(os.stat)
    os.lstat = _wrap_stat(os.lstat)


_install()


@contextlib.contextmanager
def expect_refusals() -> Iterator[list[Refusal]]:
    """Collect the refusals inside the block instead of failing the test (for the guard's own tests)."""
    caught: list[Refusal] = []
    _state.expected.append(caught)
    try:
        yield caught
    finally:
        _state.expected.remove(caught)


def _take() -> list[Refusal]:
    new = _state.refusals[_state.reported :]
    _state.reported = len(_state.refusals)
    return new


def _explain(refusals: list[Refusal]) -> str:
    lines = [f"read data outside the repository ({len(refusals)} refused access(es); see tests/support/dataguard.py):"]
    lines += [r.describe() for r in refusals]
    return "\n".join(lines)


def _fail(report: pytest.CollectReport | pytest.TestReport, refusals: list[Refusal]) -> None:
    if refusals:
        message = _explain(refusals)
        if report.outcome == "failed":
            report.sections.append(("data guard", message))
        else:
            report.outcome = "failed"
            report.longrepr = message
            if hasattr(report, "wasxfail"):
                del report.wasxfail


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail(report, _take())
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail(report, _take())
    return report


def _still_refusing() -> str | None:
    """None when a real read and an existence check under the first root are both refused."""
    probe = os.path.join(ROOTS[0], "data", "dataguard-probe.csv")
    with expect_refusals() as caught:
        with contextlib.suppress(ForbiddenDataAccess), open(probe, "rb"):
            pass
        os.path.exists(probe)  # swallows the error, as existence checks do; the refusal is still recorded
    events = [r.event for r in caught]
    return None if events == ["open", "os.stat"] else f"reading {probe} was not refused (refused: {events})"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Refused while conftests and plugins loaded: no test to blame, so the session fails at its end.
    session.config.stash[_LEFT] = _take()
    problem = _still_refusing() if STRICT else None
    if problem:
        pytest.exit(f"data guard is not active: {problem}", returncode=pytest.ExitCode.INTERNAL_ERROR)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    left = session.config.stash.get(_LEFT, []) + _take()
    session.config.stash[_LEFT] = left
    # Strict: the guard must still hold after every test ran (no test left os.stat replaced, say).
    broken = (_still_refusing() if STRICT else None) or ""
    session.config.stash[_BROKEN] = broken
    if left or broken:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    left = config.stash.get(_LEFT, [])
    broken = config.stash.get(_BROKEN, "")
    if left or broken:
        terminalreporter.section("data guard", sep="=", red=True, bold=True)
    if left:
        terminalreporter.write_line(_explain(left))
    if broken:
        terminalreporter.write_line(f"the guard stopped working during the session: {broken}")
    if STRICT:
        terminalreporter.write_line(
            f"data guard (strict): {_state.checked} file accesses checked, {len(_state.refusals)} refused; "
            f"forbidden: {', '.join(ROOTS)}"
        )
