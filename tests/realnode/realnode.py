"""A real Kubernetes node on this machine: containerd (CRI) + runc + CNI bridge + a real kubelet.

The node joins a control plane started by ``tests/support/controlplane.py`` (its own instance, with
the pod-creating controllers, ServiceAccount tokens and a kube-scheduler) and runs real containers
from images built by ``tests/realnode/build.sh``; nothing is pulled from a registry.

Networking: pods get their own network namespace on a bridge (``wpbr0``, 10.213.0.0/24, CNI
``bridge`` + ``host-local`` + ``loopback``). The API server listens on the bridge's gateway address,
so the host (kubelet, tests, helm) and the pods reach it at the same address with a certificate
naming it. There is no kube-proxy: Service ClusterIPs do not route. In-cluster clients are pointed
at the API server itself with ``KUBERNETES_SERVICE_HOST``/``_PORT`` (the chart's ``env`` values),
which is exactly what kube-proxy would have translated ``kubernetes.default`` to.

Everything this module starts is stopped by :meth:`RealNode.stop`, including on failure: kubelet,
containers (through containerd), the runc shims, containerd, mounts, the bridge, the cgroups the
kubelet created. Only one real node can run on a machine at a time (a lock file guards that):
the kubelet's device-plugin directory is fixed at ``/var/lib/kubelet/device-plugins``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from controlplane import (
    TOKEN,
    WORKLOAD_CONTROLLERS,
    ControlPlane,
    Process,
    free_port,
    spawn,
    start_control_plane,
)

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("WATTPLANE_REALNODE_CACHE", REPO / ".cache" / "realnode"))
BIN = CACHE / "bin"
IMAGES = CACHE / "images"
IMAGE = os.environ.get("WATTPLANE_REALNODE_IMAGE", "localhost/wattplane:realnode")
PAUSE_IMAGE = "localhost/wattplane/pause:realnode"
NODE = "wattplane-realnode"
BRIDGE = "wpbr0"
SUBNET = "10.213.0.0/24"
GATEWAY = "10.213.0.1"
NODE_TOKEN = "wattplane-realnode-kubelet-token"
KUBELET_ROOT = Path("/var/lib/kubelet")
DEVICE_PLUGINS = KUBELET_ROOT / "device-plugins"
PODRESOURCES = KUBELET_ROOT / "pod-resources"
LOCK = Path("/run/wattplane-realnode.lock")
CNI_BIN = Path("/usr/lib/cni")
#: Enables the tier where it is not required (see conftest.py).
ENABLE_VAR = "WATTPLANE_REAL_NODE"


class Unavailable(RuntimeError):
    """This machine cannot run a real node (not root, no cgroups, a build or install failed)."""


def _run(argv: Sequence[str], *, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {result.returncode}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result


def prepare(log: IO[str] = sys.stderr) -> dict[str, float]:
    """Install the host packages (setup.sh) and build binaries and images (build.sh); return timings.

    Raises :class:`Unavailable` with the reason when this machine cannot host the tier.
    """
    if sys.platform != "linux" or os.geteuid() != 0:
        raise Unavailable("a real node needs Linux and root (containerd, runc, kubelet, mounts, cgroups)")
    if not Path("/sys/fs/cgroup").is_dir():
        raise Unavailable("no cgroup filesystem at /sys/fs/cgroup")
    timings: dict[str, float] = {}
    for name in ("setup.sh", "build.sh"):
        started = time.monotonic()
        result = subprocess.run(["bash", str(HERE / name)], capture_output=True, text=True, check=False)
        log.write(result.stdout + result.stderr)
        timings[name] = time.monotonic() - started
        if result.returncode != 0:
            raise Unavailable(f"tests/realnode/{name} failed ({result.returncode}): {result.stderr[-3000:]}")
    return timings


@contextlib.contextmanager
def machine_lock(wait_s: float = 900) -> Iterator[None]:
    """Hold the machine-wide lock: one real node per machine (waits for another one to finish)."""
    if os.geteuid() != 0:
        raise Unavailable("a real node needs root (containerd, runc, kubelet, mounts, cgroups)")
    with LOCK.open("w") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"another real node held {LOCK} on this machine for {wait_s:.0f} s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sim_gpu_uuids(node: str, count: int) -> list[str]:
    """The UUIDs the agent's sim backend gives the GPUs of ``node`` (the device plugin's IDs)."""
    from wattplane.agent.gpu.simulated import simulated_gpu_uuid

    return [simulated_gpu_uuid(node, index) for index in range(count)]


@dataclass
class RealNode:
    """The control plane and the node processes; :meth:`stop` undoes everything."""

    workdir: Path
    cp: ControlPlane
    containerd_socket: Path
    processes: dict[str, Process] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Network namespaces and /run entries that existed before the node: teardown leaves them alone.
    netns_before: frozenset[str] = field(default_factory=lambda: _netns())
    run_containerd_existed: bool = field(default_factory=lambda: Path("/run/containerd").exists())
    run_netns_was_mounted: bool = field(default_factory=lambda: "/run/netns" in _mountpoints())

    @property
    def api_port(self) -> int:
        """The API server's port (pods reach it at :data:`GATEWAY`)."""
        return int(self.cp.server.rsplit(":", 1)[1])

    def ctr(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this node's containerd, in the CRI namespace."""
        return _run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args], timeout=timeout, check=check
        )

    def kubelet_log(self, lines: int = 60) -> str:
        """The end of the kubelet's log, for failure messages."""
        return self.processes["kubelet"].tail(lines) if "kubelet" in self.processes else ""

    def start_device_plugin(self, device_ids: Sequence[str]) -> Process:
        """Start the simulated GPU device plugin advertising ``device_ids`` as ``nvidia.com/gpu``."""
        process = spawn(
            "simgpu-plugin", [str(BIN / "simgpu-plugin"), "-dir", str(DEVICE_PLUGINS), *device_ids], self.workdir
        )
        self.processes["simgpu-plugin"] = process
        return process

    def stop(self) -> None:
        """Stop everything started for the node, newest first; never raises."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("pods", self._drain),
            ("device plugin", lambda: self._stop_process("simgpu-plugin")),
            ("kubelet", lambda: self._stop_process("kubelet")),
            ("containers", self._remove_containers),
            ("containerd", lambda: self._stop_process("containerd")),
            ("shims", self._kill_shims),
            ("mounts", self._unmount),
            ("network namespaces", self._remove_netns),
            ("runtime state", self._remove_runtime_state),
            ("bridge", lambda: _run(["ip", "link", "del", BRIDGE], check=False) and None),
            ("cgroups", _remove_kubepods_cgroups),
            ("kubelet files", _remove_kubelet_state),
            ("control plane", self.cp.stop),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # teardown goes on: every later step still matters
                sys.stderr.write(f"realnode: stopping {what} failed: {exc}\n")

    def _drain(self) -> None:
        """Delete every pod still on the node; the kubelet tears them down the normal way.

        That stops the containers, runs CNI DEL and removes the network namespaces. Bounded: the
        forced steps that follow clean up whatever is left.
        """
        kubelet = self.processes.get("kubelet")
        if kubelet is None or kubelet.popen.poll() is not None:
            return
        # Nothing may re-create or bind pods meanwhile (a Deployment or DaemonSet would).
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self.cp.processes:
                self.cp.processes[name].stop()
        pods = _api(self.cp, "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{NODE}").get("items", [])
        for pod in pods:
            meta = pod["metadata"]
            with contextlib.suppress(Exception):
                _api(
                    self.cp,
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}?gracePeriodSeconds=1",
                )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if not self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split():
                return
            time.sleep(1)

    def _remove_netns(self) -> None:
        for name in _netns() - self.netns_before:
            path = Path("/run/netns") / name
            _run(["umount", str(path)], check=False)
            with contextlib.suppress(OSError):
                path.unlink()
        if not self.run_netns_was_mounted and not _netns():
            _run(["umount", "/run/netns"], check=False)

    def _remove_runtime_state(self) -> None:
        shutil.rmtree(self.containerd_socket.parent, ignore_errors=True)
        if not self.run_containerd_existed:
            shutil.rmtree("/run/containerd", ignore_errors=True)

    def _stop_process(self, name: str) -> None:
        process = self.processes.get(name)
        if process is not None:
            process.stop(sig_timeout=20)

    def _remove_containers(self) -> None:
        if self.processes.get("containerd") is None or self.processes["containerd"].popen.poll() is not None:
            return
        tasks = self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=30)
        deadline = time.monotonic() + 20
        for task in tasks:
            while self.ctr("tasks", "delete", task, check=False, timeout=30).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        for container in self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split():
            self.ctr("containers", "delete", container, check=False, timeout=30)

    def _kill_shims(self) -> None:
        """Kill the runc shims of this containerd (they daemonize, so they outlive it)."""
        marker = str(self.containerd_socket).encode()
        for pid in _pids_with_cmdline(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _unmount(self) -> None:
        prefixes = (str(self.workdir) + "/", str(KUBELET_ROOT) + "/", f"/run/containerd-{NODE}/")
        for mountpoint in sorted(_mountpoints(), key=len, reverse=True):
            # The kubelet bind-mounts its root directory onto itself (to make it rshared).
            if mountpoint.startswith(prefixes) or mountpoint == str(KUBELET_ROOT):
                _run(["umount", "-l", mountpoint], check=False)


def _pids_with_cmdline(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _netns() -> frozenset[str]:
    with contextlib.suppress(OSError):
        return frozenset(p.name for p in Path("/run/netns").iterdir())
    return frozenset()


def _api(cp: ControlPlane, method: str, path: str) -> dict[str, Any]:
    """A JSON request on the API server as admin."""
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    request = urllib.request.Request(cp.server + path, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
        return dict(json.load(response))


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            points.append(fields[1].replace("\\040", " "))
    return points


def _remove_kubepods_cgroups() -> None:
    """Remove the (now empty) cgroups the kubelet created under each cgroup v1 controller."""
    for controller in Path("/sys/fs/cgroup").iterdir():
        top = controller / "kubepods"
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _remove_kubelet_state() -> None:
    for path in (KUBELET_ROOT / "pods", KUBELET_ROOT / "plugins", KUBELET_ROOT / "plugins_registry"):
        shutil.rmtree(path, ignore_errors=True)
    for path in (*DEVICE_PLUGINS.glob("*"), *PODRESOURCES.glob("*"), KUBELET_ROOT / "cpu_manager_state",
                 KUBELET_ROOT / "memory_manager_state"):  # fmt: skip
        with contextlib.suppress(OSError):
            path.unlink()


def _wait(check: Callable[[], bool], what: str, timeout: float, process: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited ({process.popen.returncode}):\n{process.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{process.tail()}")


def _create_bridge() -> None:
    """The pod bridge with the gateway address, before the API server binds to it."""
    if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addresses = _run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout
    if f" {GATEWAY}/" not in addresses:
        _run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def _containerd_config(workdir: Path) -> tuple[Path, Path]:
    base = workdir / "containerd"
    socket = Path(f"/run/containerd-{NODE}/containerd.sock")
    cni_conf = workdir / "cni" / "net.d"
    cni_conf.mkdir(parents=True, exist_ok=True)
    (cni_conf / "10-wattplane-realnode.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "wattplane-realnode",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                            "dataDir": str(workdir / "cni" / "ipam"),
                        },
                    }
                ],
            },
            indent=2,
        )
    )
    config = base / "config.toml"
    base.mkdir(parents=True, exist_ok=True)
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    config.write_text(
        f"""version = 2
root = "{base / "root"}"
state = "{socket.parent / "state"}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  level = "info"
{cri}
  sandbox_image = "{PAUSE_IMAGE}"
  enable_cdi = false
  # Never ask for an OOM score below containerd's own: lowering it needs CAP_SYS_RESOURCE, which
  # sandboxed CI machines do not grant even to root (runc fails the pause container's
  # oom_score_adj=-998 write with EACCES, and no pod starts).
  restrict_oom_score_adj = true
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri[:-1]}.containerd.runtimes.runc.options]
  SystemdCgroup = false
{cri[:-1]}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{cni_conf}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
"""
    )
    return config, socket


def _kubelet_files(cp: ControlPlane, workdir: Path, socket: Path) -> tuple[Path, Path]:
    kubeconfig = workdir / "kubelet.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "test", "cluster": {"server": cp.server, "certificate-authority": str(cp.ca_file)}}
                ],
                "users": [{"name": NODE, "user": {"token": NODE_TOKEN}}],
                "contexts": [{"name": "node", "context": {"cluster": "test", "user": NODE}}],
                "current-context": "node",
            }
        )
    )
    config = workdir / "kubelet-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "containerRuntimeEndpoint": f"unix://{socket}",
                # cgroup v1 hosts (this tier's CI machines) are in maintenance mode upstream but
                # still supported; cgroupfs, as containerd's runc is configured.
                "failCgroupV1": False,
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "memorySwap": {"swapBehavior": "NoSwap"},
                # The API server reaches the kubelet (logs, exec, the pod proxy's node lookups) at
                # the node's address, the bridge gateway; it presents no client certificate here,
                # so the kubelet lets anonymous requests in. Nothing outside this host sees it.
                "address": GATEWAY,
                "port": free_port(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": free_port(),
                "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                "authorization": {"mode": "AlwaysAllow"},
                "resolvConf": "/etc/resolv.conf",
                "clusterDomain": "cluster.local",
                # A shared CI machine's disk and memory are what they are: the node must not
                # evict the pods under test, nor garbage-collect the imported images.
                "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "nodeStatusUpdateFrequency": "4s",
                "syncFrequency": "5s",
                "serializeImagePulls": False,
                "protectKernelDefaults": False,
                "enforceNodeAllocatable": ["pods"],
                "cgroupsPerQOS": True,
                "shutdownGracePeriod": "0s",
            }
        )
    )
    return kubeconfig, config


def start(workdir: Path, *, log: IO[str] = sys.stderr) -> RealNode:
    """Start the control plane and a real node joined to it; wait until the node is Ready.

    Call :func:`prepare` first. On any failure everything started so far is stopped again.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    _create_bridge()
    cp = start_control_plane(
        workdir / "controlplane",
        address=GATEWAY,
        extra_tokens=[f'{NODE_TOKEN},system:node:{NODE},{NODE}-uid,"system:nodes"'],
        controllers=f"{WORKLOAD_CONTROLLERS},nodelifecycle",
        service_accounts=True,
        # Logs, exec and the pod proxy: reach the kubelet at its address, not its (unresolvable) name.
        apiserver_args=["--kubelet-preferred-address-types=InternalIP"],
    )
    config, socket = _containerd_config(workdir)
    node = RealNode(workdir, cp, socket, timings=timings)
    try:
        timings["control plane"] = time.monotonic() - started
        cp.processes["kube-scheduler"] = spawn(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={cp.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
            cp.workdir,
        )
        _start_node(node, config, socket, log)
    except BaseException:
        node.stop()
        raise
    timings["node up"] = time.monotonic() - started
    return node


def _start_node(node: RealNode, config: Path, socket: Path, log: IO[str]) -> None:
    workdir, cp, timings = node.workdir, node.cp, node.timings
    socket.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    containerd = spawn("containerd", ["containerd", "--config", str(config)], workdir)
    node.processes["containerd"] = containerd
    _wait(lambda: node.ctr("version", timeout=10, check=False).returncode == 0, "containerd", 60, containerd)
    for archive in ("pause.tar", "wattplane.tar"):
        node.ctr("images", "import", "--no-unpack", str(IMAGES / archive), timeout=600)
    timings["containerd + image import"] = time.monotonic() - t0
    log.write(f"realnode: containerd up and images imported in {timings['containerd + image import']:.1f} s\n")

    t0 = time.monotonic()
    DEVICE_PLUGINS.mkdir(parents=True, exist_ok=True)
    kubeconfig, kubelet_config = _kubelet_files(cp, workdir, socket)
    kubelet = spawn(
        "kubelet",
        [
            str(BIN / "kubelet"),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE}",
            f"--node-ip={GATEWAY}",
            "--node-labels=nvidia.com/gpu.present=true",
            f"--cert-dir={workdir / 'kubelet-pki'}",
            f"--root-dir={KUBELET_ROOT}",
            "--v=1",
        ],
        workdir,
    )
    node.processes["kubelet"] = kubelet

    _wait(lambda: _node_ready(cp), f"node {NODE} Ready", 180, kubelet)
    timings["kubelet Ready"] = time.monotonic() - t0
    log.write(f"realnode: node {NODE} Ready in {timings['kubelet Ready']:.1f} s\n")


def _node_ready(cp: ControlPlane) -> bool:
    status = _api(cp, "GET", f"/api/v1/nodes/{NODE}").get("status", {})
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
