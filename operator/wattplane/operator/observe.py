"""Observe the jobs the plan governs: progress counters → Zeus profiles and Perseus straggler caps.

After each planning round the observer scrapes the progress metric of every pod whose policy has an
``efficiency`` or ``stragglers`` section (concurrently, each scrape with a timeout), adds up the job's
GPU energy from the agents' reports, and advances the pure state machines in
:mod:`wattplane.planner.efficiency` and :mod:`wattplane.planner.stragglers`. Their state is what the
next round plans with; the profiles also go into EnergyPolicy status so a restarted operator resumes
a sweep instead of starting over. Scrape failures are values, never exceptions: a job without a usable
signal is reported by the planner as ``NoProgressSignal``.

Inference pods (``wattplane.io/workload: inference``) a policy governs are scraped too, for their
serving engine's token counters (:mod:`.serving`); :mod:`.tokens` joins them with the GPU energy the
agents attribute to each pod, per pod (operator metrics) and per policy (:meth:`JobObserver.serving_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from wattplane.api.annotations import parse_pod_annotations
from wattplane.api.v1alpha1.energypolicy import SERVING_PROBLEMS_LISTED, JobProfile, ServingEnergy, ServingSpec
from wattplane.api.v1alpha1.gpunode import GpuTarget
from wattplane.operator.progress import ProgressSample, ScrapeError, parse_progress_metric, scrape
from wattplane.operator.serving import ServingSample, scrape_serving, serving_target
from wattplane.operator.servingcontrol import ServingController, ServingGpu
from wattplane.operator.tokens import PolicyTokens, TokenLedger, pod_energy_for, ratio
from wattplane.planner.efficiency import JobObservation, advance
from wattplane.planner.plan import JobView, Plan
from wattplane.planner.snapshot import FleetSnapshot, PodKey, PolicyView
from wattplane.planner.stragglers import Hold, decide_caps

logger = logging.getLogger(__name__)

ProfileKey = tuple[str, str]
#: Reads one pod's progress counter (``None``: no usable sample this round); never raises.
ProgressReader = Callable[[FleetSnapshot, PodKey], Awaitable[ProgressSample | None]]
#: The GPU joules the agents attribute to each pod, by pod uid (``GpuNode.status.podEnergy``).
PodEnergySource = Callable[[], Mapping[PodKey, Mapping[str, float]]]
#: Serving-metrics scrapes in flight at once (a thousand pods must not open a thousand sockets).
SERVING_CONCURRENCY = 64


@dataclass
class _PolicyRound:
    """A policy's serving pods in the last round: how many, how many measured, and the problems."""

    pods: int = 0
    measured: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Sample:
    value: float
    at: datetime


def _serving_pods(plan: Plan, snapshot: FleetSnapshot) -> dict[PodKey, str]:
    """The governed inference pods and their policies."""
    policy_of: dict[PodKey, str] = {}
    for job in plan.jobs.values():
        for key in job.pods:
            pod = snapshot.pods.get(key)
            if pod is not None and parse_pod_annotations(pod.annotations).workload == "inference":
                policy_of[key] = job.policy
    return policy_of


def _serving_spec(policy: PolicyView | None) -> ServingSpec | None:
    return policy.spec.serving if policy is not None else None


def _serving_gpus(snapshot: FleetSnapshot, keys: Iterable[PodKey]) -> dict[PodKey, ServingGpu]:
    """The GPU each serving pod runs on (its first on its node, in report order): what sets its knob ranges.

    Only the pods' own nodes are looked at: this runs at every serving scrape, on fleets of any size.
    """
    out: dict[PodKey, ServingGpu] = {}
    by_node = snapshot.gpus_by_node
    for key in keys:
        pod = snapshot.pods.get(key)
        if pod is None or pod.node is None:
            continue
        gpu = next((g for g in by_node.get(pod.node, ()) if key in g.pods), None)
        if gpu is not None:
            out[key] = ServingGpu(model=gpu.model, min_watts=gpu.min_watts, max_watts=gpu.max_watts)
    return out


def _probe_overridden(job: JobView, targets: Mapping[str, GpuTarget], profile: JobProfile | None) -> bool:
    """Whether a GPU of a profiling job runs below the probe (a budget cut): that window measures nothing."""
    if profile is None or profile.state != "Profiling" or profile.current_watts is None:
        return False
    return any(
        (t := targets.get(u)) is not None and t.power_limit_watts < profile.current_watts - 0.5 for u in job.gpus
    )


class JobObserver:
    """Holds profiles and straggler caps between rounds; feeds them with fresh observations."""

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        session: aiohttp.ClientSession | None = None,
        read_progress: ProgressReader | None = None,
        pod_energy: PodEnergySource | None = None,
        serving_interval_s: float = 15.0,
        on_serving_change: Callable[[], None] | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        #: Least time between two serving-metrics reads: rounds come as often as events do.
        self._serving_interval = timedelta(seconds=serving_interval_s)
        self._serving_at: datetime | None = None
        #: Where per-pod GPU energy comes from (the fleet state's GpuNode reports); ``None``: nowhere.
        self._pod_energy = pod_energy
        #: Serving pods' joined token and energy figures (the operator's ``wattplane_serving_*`` metrics).
        self.tokens = TokenLedger()
        #: SLO-guarded knobs of the pods under a ``serving`` section (the planner's ``serving_knobs``).
        self.serving = ServingController()
        #: Called when a serving knob moved: a round should write it now, not at the next resync.
        self._on_serving_change = on_serving_change
        self._policy_tokens: dict[str, PolicyTokens] = {}
        self._policy_round: dict[str, _PolicyRound] = {}
        #: Where progress samples come from: the pods' metrics over HTTP, or (simulator) anything else.
        self._read_progress: ProgressReader = read_progress or self._scrape
        self._session = session
        self._owns_session = session is None
        self.profiles: dict[ProfileKey, JobProfile] = {}
        self.straggler_caps: dict[PodKey, float] = {}
        self._holds: dict[PodKey, Hold] = {}
        self._last: dict[PodKey, _Sample] = {}
        self.pod_problems: dict[PodKey, str] = {}
        self._annotations: Mapping[PodKey, Mapping[str, str]] = {}

    def set_serving_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a serving knob moves (the reconciler plans at once)."""
        self._on_serving_change = listener

    def seed(self, profiles: Iterable[JobProfile]) -> None:
        """Adopt persisted profiles for jobs this observer has not seen yet."""
        for profile in profiles:
            self.profiles.setdefault((profile.job, profile.gpu_model), profile)

    def profiles_by_policy(self, plan: Plan) -> dict[str, list[JobProfile]]:
        """The profiles of the jobs each policy governs now, in a stable order, for its status.

        One pass over the profiles for all policies (a pass per policy costs policies × profiles).
        """
        out: dict[str, list[JobProfile]] = {}
        for key, profile in sorted(self.profiles.items()):
            job = plan.jobs.get(key[0])
            if job is not None:
                out.setdefault(job.policy, []).append(profile)
        return out

    async def close(self) -> None:
        """Close the HTTP session if the observer opened it."""
        if self._session is not None and self._owns_session:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def observe(
        self, plan: Plan, snapshot: FleetSnapshot, policies: Mapping[str, PolicyView], now: datetime
    ) -> None:
        """Scrape and advance every job whose policy needs observations; never raises."""
        try:
            await self._observe_serving(plan, snapshot, policies, now)
        except Exception:  # a bug here must cost the token figures of one round, not the planning loop
            logger.exception("serving-token observation failed; the next round tries again")
        jobs = [
            j
            for j in plan.jobs.values()
            if (p := policies.get(j.policy)) is not None
            and (p.spec.efficiency is not None or p.spec.stragglers is not None)
        ]
        if not jobs and not self._last and not self.straggler_caps and not self._holds:
            return  # nothing to observe, nothing to forget: skip the per-GPU maps below
        pods = sorted({k for j in jobs for k in j.pods})
        self._annotations = {k: snapshot.pods[k].annotations for k in pods if k in snapshot.pods}
        samples = dict(zip(pods, await asyncio.gather(*(self._read_progress(snapshot, k) for k in pods)), strict=True))
        energy = {g.uuid: g.energy_joules for g in snapshot.gpus}
        targets = {t.uuid: t for ts in plan.nodes.values() for t in ts}  # once per round, not per job
        for job in jobs:
            policy = policies[job.policy]
            if policy.spec.efficiency is not None:
                self._advance_profile(job, policy, targets, samples, energy, now)
            if policy.spec.stragglers is not None:
                self._advance_stragglers(job, policy, samples, snapshot, now)
        for key, sample in samples.items():
            if sample is not None:
                self._last[key] = _Sample(sample.value, now)
        live = set(pods)
        for key in set(self._last) - live:
            del self._last[key]
        for key in set(self.straggler_caps) - live:
            del self.straggler_caps[key]
        for key in set(self._holds) - live:
            del self._holds[key]

    async def _observe_serving(
        self, plan: Plan, snapshot: FleetSnapshot, policies: Mapping[str, PolicyView], now: datetime
    ) -> None:
        """Scrape the governed inference pods' engines and join their tokens with their GPU energy.

        Only with a per-pod energy source (the operator's GpuNode reports): without one there is
        nothing to join, and the simulator and ``wattplane run`` skip the scrape altogether. At most
        once per ``serving_interval_s``: planning rounds run on every event, and a fleet of serving
        pods must not be scraped at that rate.
        """
        if self._pod_energy is None:
            return
        if self._serving_at is not None and self._serving_at <= now < self._serving_at + self._serving_interval:
            return  # planning rounds follow events; the token scrape keeps its own pace
        self._serving_at = now
        policy_of = _serving_pods(plan, snapshot)
        energy = self._pod_energy() if policy_of else {}
        gate = asyncio.Semaphore(SERVING_CONCURRENCY)

        async def read(key: PodKey) -> ServingSample | ScrapeError | str:
            pod = snapshot.pods[key]
            target = serving_target(pod.annotations)
            if isinstance(target, str):
                return target
            async with gate:
                return await scrape_serving(self._http(), target, pod.ip, self._timeout_s)

        keys = sorted(policy_of)
        results = await asyncio.gather(*(read(k) for k in keys))
        rounds: dict[str, _PolicyRound] = {}
        for key, result in zip(keys, results, strict=True):
            policy = policy_of[key]
            uid = snapshot.pods[key].uid
            joules = pod_energy_for(energy.get(key, {}), uid)
            interval = self.tokens.update(key, uid, result, joules, now)
            summary = rounds.setdefault(policy, _PolicyRound())
            summary.pods += 1
            problem = self.tokens.pods[key].problem
            if problem is not None:
                summary.problems.append(f"{key[0]}/{key[1]}: {problem}")
            elif interval is not None:
                summary.measured += 1
            if interval is not None:
                totals = self._policy_tokens.setdefault(policy, PolicyTokens())
                totals.output_tokens += interval[1]
                totals.energy_joules += interval[2]
                totals.window.add(now, *interval)
        self.tokens.retain(policy_of)
        self._control_serving(snapshot, dict(zip(keys, results, strict=True)), policy_of, policies, energy, now)
        for totals in self._policy_tokens.values():
            totals.window.trim(now)
        for name in set(self._policy_tokens) - set(plan.policies):
            del self._policy_tokens[name]
        self._policy_round = rounds

    def _control_serving(
        self,
        snapshot: FleetSnapshot,
        results: Mapping[PodKey, ServingSample | ScrapeError | str],
        policy_of: Mapping[PodKey, str],
        policies: Mapping[str, PolicyView],
        energy: Mapping[PodKey, Mapping[str, float]],
        now: datetime,
    ) -> None:
        """Advance the serving controller of every pod under a ``serving`` section.

        A knob that moved asks for a planning round at once (a back-off must reach the GPU within the
        scrape that saw the threat, not at the next resync).
        """
        served = {k: spec for k in results if (spec := _serving_spec(policies.get(policy_of[k]))) is not None}
        gpus = _serving_gpus(snapshot, served) if served else {}
        moved = False
        for key, spec in served.items():
            if key not in gpus:
                continue
            pod = snapshot.pods[key]
            result = results[key]
            moved |= self.serving.update(
                key,
                pod.uid,
                spec,
                parse_pod_annotations(pod.annotations),
                gpus[key],
                result if isinstance(result, ServingSample) else None,
                pod_energy_for(energy.get(key, {}), pod.uid),
                now,
            )
        self.serving.retain(k for k in served if k in gpus)
        if moved and self._on_serving_change is not None:
            self._on_serving_change()

    def serving_status(self, policy: str, status: Mapping[str, Any] | None = None) -> ServingEnergy | None:
        """The policy's joules per output token for its status; ``None`` while it never had an inference pod.

        ``status`` is the policy's status as the API server has it: the since-start totals in its
        ``serving`` are adopted once (the first time this observer reports the policy), so an operator
        restart continues them; an unreadable one is ignored.
        """
        previous: ServingEnergy | None = None
        raw = (status or {}).get("serving")
        if isinstance(raw, Mapping):
            with contextlib.suppress(ValueError):
                previous = ServingEnergy.model_validate(raw)
        totals = self._policy_tokens.get(policy)
        current = self._policy_round.get(policy)
        if totals is None:
            if previous is None and current is None:
                return None
            totals = self._policy_tokens[policy] = PolicyTokens()
        if not totals.seeded:
            totals.seeded = True
            if previous is not None:
                totals.seed_tokens, totals.seed_joules = previous.output_tokens, previous.energy_joules
        current = current or _PolicyRound()
        seconds, tokens, joules = totals.window.totals()
        return ServingEnergy(
            pods=current.pods,
            measured_pods=current.measured,
            output_tokens=round(totals.total_tokens),
            energy_joules=round(totals.total_joules, 1),
            joules_per_output_token=_rounded(ratio(totals.total_joules, totals.total_tokens)),
            window_seconds=round(seconds, 1),
            window_output_tokens=round(tokens),
            window_energy_joules=round(joules, 1),
            window_joules_per_output_token=_rounded(ratio(joules, tokens)),
            problem_pods=len(current.problems),
            problems=current.problems[:SERVING_PROBLEMS_LISTED],
        )

    async def _scrape(self, snapshot: FleetSnapshot, key: PodKey) -> ProgressSample | None:
        pod = snapshot.pods.get(key)
        if pod is None:
            return None
        raw = parse_pod_annotations(pod.annotations).progress_metric
        if raw is None:
            return None
        try:
            target = parse_progress_metric(raw)
        except ValueError as exc:
            self.pod_problems[key] = f"wattplane.io/progress-metric: {exc}"
            return None
        result = await scrape(self._http(), target, pod.ip, self._timeout_s)
        if isinstance(result, ProgressSample):
            self.pod_problems.pop(key, None)
            return result
        self.pod_problems[key] = f"progress metric scrape failed: {result}"
        return None

    def _advance_profile(
        self,
        job: JobView,
        policy: PolicyView,
        targets: Mapping[str, GpuTarget],
        samples: Mapping[PodKey, ProgressSample | None],
        energy: Mapping[str, float | None],
        now: datetime,
    ) -> None:
        spec = policy.spec.efficiency
        assert spec is not None
        key = (job.id, job.gpu_model)
        profile = self.profiles.get(key)
        values = [samples.get(k) for k in job.pods]
        joules = [energy.get(u) for u in job.gpus]
        observation = None
        if (
            values
            and all(v is not None for v in values)
            and all(e is not None for e in joules)
            and not _probe_overridden(job, targets, profile)
        ):
            observation = JobObservation(
                progress=math.fsum(v.value for v in values if v is not None),
                energy_joules=math.fsum(e for e in joules if e is not None),
                at=now,
                gpus=len(job.gpus),
            )
        slowdowns = [
            s for k in job.pods if (s := parse_pod_annotations(self._annotations.get(k, {})).max_slowdown) is not None
        ]
        if slowdowns:  # the pod's own tolerance, if it states one, is the one that counts
            spec = spec.model_copy(update={"max_slowdown": min(slowdowns)})
        carbon = policy.spec.carbon
        if carbon is not None and carbon.mode == "Budgeted":
            # The sweep only measures what the budget can use: limits down to twice the slowdown budget.
            budget = min(slowdowns) if slowdowns else carbon.max_slowdown
            spec = spec.model_copy(update={"early_stop_fraction": max(spec.early_stop_fraction, 1 / (1 + 2 * budget))})
        self.profiles[key] = advance(
            profile,
            job=job.id,
            gpu_model=job.gpu_model,
            spec=spec,
            min_watts=job.min_watts,
            max_watts=job.max_watts,
            observation=observation,
            now=now,
        )

    def _advance_stragglers(
        self,
        job: JobView,
        policy: PolicyView,
        samples: Mapping[PodKey, ProgressSample | None],
        snapshot: FleetSnapshot,
        now: datetime,
    ) -> None:
        assert policy.spec.stragglers is not None
        rates: dict[PodKey, float | None] = {}
        for key in job.pods:
            sample, last = samples.get(key), self._last.get(key)
            rate = None
            if sample is not None and last is not None:
                seconds = (now - last.at).total_seconds()
                if seconds > 0 and sample.value >= last.value:
                    rate = (sample.value - last.value) / seconds
            rates[key] = rate
        gpus_of: dict[PodKey, list[tuple[float, float]]] = {}
        for gpu in snapshot.gpus:
            for key in gpu.pods:
                if key in rates:
                    gpus_of.setdefault(key, []).append((gpu.min_watts, gpu.max_watts))
        ceilings = {k: min(hi for _, hi in v) for k, v in gpus_of.items()}
        floors = {k: max(lo for lo, _ in v) for k, v in gpus_of.items()}
        decisions = decide_caps(
            {k: rates[k] for k in ceilings},
            {k: self.straggler_caps.get(k) for k in ceilings},
            ceilings,
            floors,
            policy.spec.stragglers,
            holds={k: h for k, h in self._holds.items() if k in ceilings},
        )
        for key, decision in decisions.items():
            if decision.cap_watts is None:
                self.straggler_caps.pop(key, None)
            else:
                self.straggler_caps[key] = decision.cap_watts
            if decision.hold is None:
                self._holds.pop(key, None)
            else:
                self._holds[key] = decision.hold


def _rounded(value: float | None) -> float | None:
    """Four significant digits: joules per token range from millijoules to kilojoules."""
    return None if value is None else float(f"{value:.4g}")
