"""``wattplane demo``: the walking skeleton in one process, on simulated GPUs, no cluster needed.

It runs the real code paths: EnergyPolicy YAML → models → pure planner → GpuNode plans → the agent's
engine → simulated GPUs (with the prior-state journal), then deletes the policy and restores. It
prints what it did per GPU and the simulated power and energy over one virtual hour with and
without the policy.

Honest scope: the skeleton's simulated GPUs model power under a cap, not the slowdown a cap causes,
so the demo reports power and energy drawn, not energy per unit of work.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import yaml
from wattplane.agent.engine import NodeEngine
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.journal import Journal
from wattplane.agent.podmap import GpuRequest, SimulatedPodMapper
from wattplane.api.v1alpha1.energypolicy import EnergyPolicy
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.planner.plan import plan
from wattplane.planner.snapshot import FleetSnapshot, GpuView, PodView, PolicyView

REPO_POLICY = Path(__file__).resolve().parents[3] / "policies" / "static-cap.yaml"
HOUR_S = 3600.0


@dataclass
class _Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class _DemoPod:
    namespace: str
    name: str
    node: str
    gpus: int
    workload: str
    load: float


PODS = (
    _DemoPod("ml", "llama-finetune", "gpu-node-1", 4, "training", 0.95),
    _DemoPod("ml", "resnet-sweep", "gpu-node-2", 2, "training", 0.85),
    _DemoPod("serving", "chat-api", "gpu-node-2", 1, "inference", 0.6),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattplane demo``."""
    parser = subparsers.add_parser("demo", help="run the control loop on simulated GPUs and print what it did")
    parser.add_argument("--policy", type=Path, default=REPO_POLICY, help="EnergyPolicy YAML to apply")
    parser.add_argument("--workdir", type=Path, default=None, help="keep journals here (default: memory only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the report."""
    policy = EnergyPolicy.model_validate(yaml.safe_load(args.policy.read_text()))
    nodes = sorted({p.node for p in PODS})
    clock = _Clock()
    backends = {n: SimulatedBackend(node_name=n, gpu_count=4, model="A40", clock=clock) for n in nodes}
    engines = {
        n: NodeEngine(b, Journal(None if args.workdir is None else args.workdir / f"{n}.journal.json"))
        for n, b in backends.items()
    }
    assignment: dict[str, list[tuple[_DemoPod, str]]] = {}
    for node, backend in backends.items():
        mapper = SimulatedPodMapper([d.identity.uuid for d in backend.devices()])
        requests = [GpuRequest(p.namespace, p.name, f"uid-{p.name}", "main", p.gpus) for p in PODS if p.node == node]
        for uuid, refs in mapper.assign(requests).items():
            pod = next(p for p in PODS if p.name == refs[0].name)
            assignment.setdefault(node, []).append((pod, uuid))
    for node, held in assignment.items():
        for pod, uuid in held:
            next(d for d in backends[node].devices() if d.identity.uuid == uuid).set_load(pod.load)

    snapshot = _snapshot(backends, assignment)
    view = PolicyView(name=policy.name, spec=policy.spec, generation=1)
    result = plan(snapshot, [view])

    baseline = _energy_over_hour(backends, clock)
    limits_before = {d.identity.uuid: d.read().power_limit_watts for b in backends.values() for d in b.devices()}
    for node, engine in engines.items():
        engine.reconcile(list(result.nodes.get(node, ())))
    capped = _energy_over_hour(backends, clock)
    targets = {t.uuid: t for ts in result.nodes.values() for t in ts}
    _print_table(backends, assignment, limits_before, targets, baseline, capped)

    for engine in engines.values():
        engine.reconcile([])  # the policy is deleted: every GPU back to its journaled state
    restored = all(
        d.read().power_limit_watts == limits_before[d.identity.uuid] for b in backends.values() for d in b.devices()
    )
    report = result.policies[policy.name]
    print(f"\nEnergyPolicy {policy.name}: {report.reason} — {report.message}")
    print(f"policy deleted → every GPU back at its prior limit: {'yes' if restored else 'NO'}")
    print(
        "note: the skeleton's simulated GPUs model power under a cap, not the slowdown it causes;"
        " figures are energy drawn, not energy per unit of work."
    )
    return 0 if restored else 1


def _snapshot(
    backends: dict[str, SimulatedBackend], assignment: dict[str, list[tuple[_DemoPod, str]]]
) -> FleetSnapshot:
    gpus = []
    for node, backend in backends.items():
        owners = {uuid: pod for pod, uuid in assignment.get(node, [])}
        for device in backend.devices():
            limits = device.constraints()
            owner = owners.get(device.identity.uuid)
            gpus.append(
                GpuView(
                    node=node,
                    uuid=device.identity.uuid,
                    index=device.identity.index,
                    model=device.identity.model,
                    min_watts=limits.min_watts,
                    max_watts=limits.max_watts,
                    default_watts=limits.default_watts,
                    power_watts=device.read().power_watts,
                    pods=((owner.namespace, owner.name),) if owner else (),
                )
            )
    pods = {
        (p.namespace, p.name): PodView(
            namespace=p.namespace, name=p.name, node=p.node, labels={"wattplane.io/workload": p.workload}
        )
        for p in PODS
    }
    return FleetSnapshot(gpus=tuple(gpus), pods=pods, nodes=tuple(sorted(backends)))


def _energy_over_hour(backends: dict[str, SimulatedBackend], clock: _Clock) -> dict[str, float]:
    start = {d.identity.uuid: d.read().energy_joules or 0.0 for b in backends.values() for d in b.devices()}
    clock.now += HOUR_S
    return {
        d.identity.uuid: (d.read().energy_joules or 0.0) - start[d.identity.uuid]
        for b in backends.values()
        for d in b.devices()
    }


def _print_table(
    backends: dict[str, SimulatedBackend],
    assignment: dict[str, list[tuple[_DemoPod, str]]],
    before: dict[str, float],
    targets: dict[str, GpuTarget],
    baseline: dict[str, float],
    capped: dict[str, float],
) -> None:
    header = f"{'node':<11} {'gpu':>3} {'pod':<22} {'policy':<11} {'limit W':>13} {'kWh/h base':>10} {'kWh/h cap':>9}"
    print(header)
    print("-" * len(header))
    for node, backend in backends.items():
        owners = {uuid: pod for pod, uuid in assignment.get(node, [])}
        for device in backend.devices():
            uuid = device.identity.uuid
            pod = owners.get(uuid)
            target = targets.get(uuid)
            now = device.read().power_limit_watts
            print(
                f"{node:<11} {device.identity.index:>3} {(f'{pod.namespace}/{pod.name}' if pod else '-'):<22} "
                f"{(target.policy if target else '-'):<11} {f'{before[uuid]:.0f} → {now:.0f}':>13} "
                f"{baseline[uuid] / 3.6e6:>10.3f} {capped[uuid] / 3.6e6:>9.3f}"
            )
    total_base, total_cap = sum(baseline.values()) / 3.6e6, sum(capped.values()) / 3.6e6
    print("-" * len(header))
    saving = 100 * (1 - total_cap / total_base) if total_base else 0.0
    print(
        f"fleet GPU energy drawn over one simulated hour: {total_base:.2f} kWh uncapped → {total_cap:.2f} kWh"
        f" ({saving:.1f}% lower draw; the slowdown is not modelled yet)"
    )
