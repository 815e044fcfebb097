"""pytest plugin: a real control plane (etcd + kube-apiserver + kube-controller-manager + kwok).

The binaries are built from pinned Go modules by ``tests/controlplane/build.sh`` (once; cached under
``.cache/controlplane``). Everything listens on loopback only. Without a Go toolchain the tests that
need the cluster are skipped with a reason, unless ``WATTPLANE_REQUIRE_CLUSTER=1`` (set by
``.ci/run``), which turns that skip into a failure: CI must exercise the real API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "controlplane" / "build.sh"
BIN = Path(os.environ.get("WATTPLANE_CONTROLPLANE_BIN", REPO / ".cache" / "controlplane" / "bin"))
TOKEN = "wattplane-test-admin-token"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("WATTPLANE_REQUIRE_CLUSTER") == "1":
        pytest.fail(f"control plane required (WATTPLANE_REQUIRE_CLUSTER=1) but unavailable: {reason}")
    pytest.skip(f"control plane unavailable: {reason}")


@dataclass
class Process:
    """A child process with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        """The end of the process log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig_timeout: float = 10.0) -> None:
        """Terminate (then kill) the process."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=sig_timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Process:
    """Start ``argv`` with output in ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    handle = log.open("ab")
    popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    handle.close()
    return Process(name, popen, log)


@dataclass
class ControlPlane:
    """A running control plane and how to reach it."""

    workdir: Path
    server: str
    kubeconfig: Path
    ca_file: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def python_env(self, **extra: str) -> dict[str, str]:
        """Environment for wattplane processes talking to this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WATTPLANE_", "KUBERNETES_"))}
        roots = [str(REPO / "operator"), str(REPO / "agent")]
        env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def spawn_python(self, name: str, module: str, args: list[str], **env: str) -> Process:
        """Run ``python -m module args`` against this cluster; log in the workdir."""
        process = spawn(name, [sys.executable, "-m", module, *args], self.workdir, self.python_env(**env))
        self.processes[name] = process
        return process

    def request(self, path: str, body: object = None) -> int:
        """HTTP status of a GET (or, with ``body``, a JSON POST) on the API server as admin."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def restart(self, name: str, *, ready_within_s: float = 90.0) -> float:
        """Stop process ``name`` and start it again with the same command line; return the seconds down.

        Same port, same certificates (kube-apiserver reuses the ones in its cert dir), same data
        directory: clients reconnect to what looks like the same server after an outage. For the API
        server this waits until ``/readyz`` passes and the CRDs are served again.
        """
        old = self.processes[name]
        argv = [str(a) for a in old.popen.args]
        started = time.monotonic()
        old.stop()
        process = spawn(name, argv, self.workdir)
        self.processes[name] = process
        if name == "kube-apiserver":
            ready = "kube-apiserver /readyz after restart"
            _wait(lambda: self.request("/readyz") == 200, ready, ready_within_s, process)
            for plural in ("energypolicies", "gpunodes"):
                path = f"/apis/wattplane.io/v1alpha1/{plural}"
                _wait(lambda p=path: self.request(p) == 200, f"CRD {plural} served", ready_within_s, process)
        return time.monotonic() - started

    def pause(self, name: str) -> None:
        """Freeze process ``name`` (SIGSTOP): it holds its sockets open but answers nothing."""
        os.kill(self.processes[name].popen.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Let a paused process run again (SIGCONT)."""
        os.kill(self.processes[name].popen.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every process, newest first."""
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(Exception):
                process.stop()


def ensure_binaries() -> None:
    """Build the binaries if missing or stale; skip/fail when that is impossible."""
    if shutil.which("go") is None and not (BIN / "kube-apiserver").exists():
        _unavailable("no Go toolchain on PATH to build kube-apiserver/etcd/kwok (see tests/controlplane/build.sh)")
    started = time.monotonic()
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    sys.stderr.write(result.stdout + result.stderr)
    if result.returncode != 0:
        _unavailable(f"build.sh failed ({result.returncode}): {result.stderr[-2000:]}")
    sys.stderr.write(f"controlplane: binaries ready in {time.monotonic() - started:.1f} s\n")


def _wait(check: object, what: str, timeout: float, process: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}:\n{process.tail()}")


#: kube-controller-manager's controllers for the kwok tiers: objects only, no pods are ever created.
OBJECT_CONTROLLERS = "garbagecollector,namespace"
#: The controllers a real kubelet needs besides: workload controllers that create pods, and the
#: ServiceAccount and root-CA publishers that in-cluster clients' projected tokens rely on.
WORKLOAD_CONTROLLERS = (
    "garbagecollector,namespace,deployment,replicaset,daemonset,serviceaccount,root-ca-cert-publisher"
)


def start_control_plane(
    workdir: Path,
    *,
    address: str = "127.0.0.1",
    extra_tokens: Sequence[str] = (),
    controllers: str = OBJECT_CONTROLLERS,
    service_accounts: bool = False,
    apiserver_args: Sequence[str] = (),
) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager and kwok; install the CRDs.

    The defaults serve the kwok tiers. The real-node tier (``tests/realnode``) passes ``address``
    (an address its pods can reach, as the API server's bind, advertise and certificate address),
    ``extra_tokens`` (``token,user,uid,"group"`` lines, e.g. the kubelet's ``system:node:`` identity),
    the pod-creating ``controllers`` and ``service_accounts`` (ServiceAccount admission on, the root
    CA published to every namespace), so that pods get real projected service-account tokens, and
    ``apiserver_args`` (more kube-apiserver flags).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port, kcm_port, kwok_port = (free_port() for _ in range(5))
    etcd = spawn(
        "etcd",
        [
            str(BIN / "etcd"),
            "--data-dir", str(workdir / "etcd-data"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--log-level", "warn",
        ],
        workdir,
    )  # fmt: skip
    sa_key = workdir / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
    tokens = workdir / "tokens.csv"
    tokens.write_text("".join(f"{line}\n" for line in [f'{TOKEN},admin,admin-uid,"system:masters"', *extra_tokens]))
    certs = workdir / "certs"
    apiserver = spawn(
        "kube-apiserver",
        [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={api_port}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--cert-dir={certs}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-account-key-file={sa_key}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.96.0.0/12",
            "--endpoint-reconciler-type=none",
            # As kubeadm, kind and managed clusters run it (the flag's own default is false): the
            # chart's agent is a privileged container on the amd and auto backends.
            "--allow-privileged=true",
            *([] if service_accounts else ["--disable-admission-plugins=ServiceAccount"]),
            *apiserver_args,
        ],
        workdir,
    )
    ca_file = certs / "apiserver.crt"
    server = f"https://{address}:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
                "users": [{"name": "admin", "user": {"token": TOKEN}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                "current-context": "test",
            }
        )
    )
    cp = ControlPlane(workdir, server, kubeconfig, ca_file, {"etcd": etcd, "kube-apiserver": apiserver})
    started = time.monotonic()
    _wait(lambda: ca_file.exists() and cp.request("/readyz") == 200, "kube-apiserver /readyz", 90, apiserver)
    sys.stderr.write(f"controlplane: kube-apiserver ready in {time.monotonic() - started:.1f} s\n")
    cp.processes["kube-controller-manager"] = spawn(
        "kube-controller-manager",
        [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--controllers={controllers}",
            *([f"--root-ca-file={ca_file}"] if service_accounts else []),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
        ],
        workdir,
    )
    cp.processes["kwok"] = spawn(
        "kwok",
        [
            str(BIN / "kwok"),
            f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.244.0.1",
            f"--server-address=127.0.0.1:{kwok_port}",
        ],
        workdir,
    )
    install_crds(cp)
    return cp


def install_crds(cp: ControlPlane) -> None:
    """Create the CRDs from ``crds/`` and wait until they are served."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        status = cp.request("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(path.read_text()))
        if status not in (201, 409):
            raise RuntimeError(f"creating CRD from {path.name} failed with HTTP {status}")
    for plural in ("energypolicies", "gpunodes"):
        path = f"/apis/wattplane.io/v1alpha1/{plural}"
        _wait(lambda p=path: cp.request(p) == 200, f"CRD {plural} served", 30, cp.processes["kube-apiserver"])


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real control plane shared by the whole session."""
    ensure_binaries()
    cp = start_control_plane(tmp_path_factory.mktemp("controlplane"))
    try:
        yield cp
    finally:
        cp.stop()
