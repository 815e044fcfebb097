"""Join serving engines' output-token counters with the GPU energy attributed to their pods.

Each round the operator has, per serving pod, the engine's token counters (:mod:`.serving`) and the
pod's GPU energy as its node's agent reports it (``GpuNode.status.podEnergy``, monotonic joules). An
*interval* is the stretch between two rounds in which both were read; only complete intervals count,
so tokens and joules always cover the same time. The ledger keeps, per pod, running totals over those
intervals (exported as counters: PromQL divides their rates over any window) and a rolling window for
the recent figure.

What never becomes a number:

* a counter that went backwards (the engine or the pod restarted, the agent lost its ledger): the
  interval is dropped and measuring restarts from this round, with the reason shown;
* a missing or unreadable side (scrape failed, no energy reported): the baselines stay, so the next
  complete interval spans the gap on both sides at once;
* a window in which no token was generated: its joules are counted (idle draw is real) but it has no
  joules-per-token figure of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from wattplane.operator.progress import ScrapeError
from wattplane.operator.serving import Engine, ServingSample
from wattplane.planner.snapshot import PodKey

logger = logging.getLogger(__name__)

#: The "recent" window of joules per token, in status and the per-pod gauge.
WINDOW = timedelta(minutes=5)


def ratio(joules: float, tokens: float) -> float | None:
    """Joules per token, or ``None`` without tokens (no figure rather than infinity)."""
    return joules / tokens if tokens > 0 else None


@dataclass
class Rolling:
    """Increments of (tokens, joules) over the last :data:`WINDOW`."""

    steps: deque[tuple[datetime, float, float, float]] = field(default_factory=deque)

    def add(self, at: datetime, seconds: float, tokens: float, joules: float) -> None:
        """Record one interval that ended at ``at``."""
        self.steps.append((at, seconds, tokens, joules))

    def trim(self, now: datetime) -> None:
        """Drop intervals that ended before the window."""
        while self.steps and now - self.steps[0][0] > WINDOW:
            self.steps.popleft()

    def totals(self) -> tuple[float, float, float]:
        """``(seconds, tokens, joules)`` inside the window; seconds of wall time the intervals span.

        Several pods' intervals overlap in time: the span, not their sum, is how long the window is.
        """
        if not self.steps:
            return 0.0, 0.0, 0.0
        start = min(at - timedelta(seconds=seconds) for at, seconds, _, _ in self.steps)
        end = max(at for at, _, _, _ in self.steps)
        return (
            (end - start).total_seconds(),
            sum(s[2] for s in self.steps),
            sum(s[3] for s in self.steps),
        )


@dataclass
class PodTokens:
    """One serving pod's joined figures (kept between rounds).

    Attributes:
        output_tokens: Output tokens over complete intervals, since the operator first read the pod.
        prompt_tokens: Prompt tokens over the same intervals (0 when the engine does not expose them).
        energy_joules: GPU energy over the same intervals.
        problem: Why the last round gave no interval (``None``: it did, or it was the first read).
    """

    uid: str
    engine: Engine | None = None
    output_tokens: float = 0.0
    prompt_tokens: float = 0.0
    energy_joules: float = 0.0
    window: Rolling = field(default_factory=Rolling)
    problem: str | None = None
    ttft_mean_s: float | None = None
    itl_mean_s: float | None = None
    queue: float | None = None
    #: Baselines: counters at the start of the interval in progress, and when they were read.
    _base: tuple[float, float | None, float, datetime] | None = None

    @property
    def joules_per_output_token(self) -> float | None:
        """Over everything counted so far."""
        return ratio(self.energy_joules, self.output_tokens)

    @property
    def window_joules_per_output_token(self) -> float | None:
        """Over :data:`WINDOW`."""
        _, tokens, joules = self.window.totals()
        return ratio(joules, tokens)


class TokenLedger:
    """Per-pod token and energy totals, fed once per round."""

    def __init__(self) -> None:
        self.pods: dict[PodKey, PodTokens] = {}

    def update(
        self,
        key: PodKey,
        uid: str,
        sample: ServingSample | ScrapeError | str,
        energy_joules: float | None,
        now: datetime,
    ) -> tuple[float, float, float] | None:
        """Feed one round's reads for a pod; the interval it completed as ``(seconds, tokens, joules)``."""
        state = self.pods.get(key)
        restarted = False
        if state is None or (uid and state.uid and uid != state.uid):
            restarted = state is not None
            state = PodTokens(
                uid=uid,
                output_tokens=state.output_tokens if state else 0.0,
                prompt_tokens=state.prompt_tokens if state else 0.0,
                energy_joules=state.energy_joules if state else 0.0,
                window=state.window if state else Rolling(),
            )
            if restarted:
                state.problem = "the pod was re-created: measuring again from this round"
            self.pods[key] = state
        state.uid = state.uid or uid
        state.window.trim(now)
        if isinstance(sample, str):
            self._set(key, state, sample)
            return None
        if isinstance(sample, ScrapeError):
            self._set(key, state, f"serving metrics: {sample.message}")
            return None
        state.ttft_mean_s = sample.ttft.mean if sample.ttft else None
        state.itl_mean_s = sample.itl.mean if sample.itl else None
        state.queue = sample.queue
        if energy_joules is None:
            self._set(key, state, "no GPU energy reported for the pod (GpuNode status podEnergy)")
            return None
        base, state._base = state._base, (sample.output_tokens, sample.prompt_tokens, energy_joules, now)
        engine, state.engine = state.engine, sample.engine
        if base is None or (engine is not None and engine != sample.engine):
            self._set(key, state, state.problem if restarted else None)
            return None
        tokens = sample.output_tokens - base[0]
        joules = energy_joules - base[2]
        seconds = (now - base[3]).total_seconds()
        problem = None
        if tokens < 0:
            problem = "the output-token counter went backwards (engine restarted?): interval dropped"
        elif joules < 0:
            problem = "the pod's GPU energy went backwards (agent restarted?): interval dropped"
        if problem is not None or seconds <= 0:
            self._set(key, state, problem)
            return None
        prompt = 0.0
        if sample.prompt_tokens is not None and base[1] is not None and sample.prompt_tokens >= base[1]:
            prompt = sample.prompt_tokens - base[1]
        state.output_tokens += tokens
        state.prompt_tokens += prompt
        state.energy_joules += joules
        state.window.add(now, seconds, tokens, joules)
        self._set(key, state, None)
        return seconds, tokens, joules

    @staticmethod
    def _set(key: PodKey, state: PodTokens, problem: str | None) -> None:
        if problem != state.problem and problem is not None:
            logger.info("serving pod %s/%s: %s", key[0], key[1], problem)
        elif problem is None and state.problem is not None:
            logger.info("serving pod %s/%s: measuring joules per token again", key[0], key[1])
        state.problem = problem

    def retain(self, live: Iterable[PodKey]) -> None:
        """Forget pods that are gone (their series leave the operator's metrics)."""
        keep = set(live)
        for key in set(self.pods) - keep:
            del self.pods[key]


@dataclass
class PolicyTokens:
    """A policy's serving pods, summed: since-start totals (seeded from status) and the recent window."""

    seed_tokens: float = 0.0
    seed_joules: float = 0.0
    output_tokens: float = 0.0
    energy_joules: float = 0.0
    window: Rolling = field(default_factory=Rolling)
    seeded: bool = False

    @property
    def total_tokens(self) -> float:
        """Since the figures started (status seed plus what this operator counted)."""
        return self.seed_tokens + self.output_tokens

    @property
    def total_joules(self) -> float:
        """Energy of the intervals in :attr:`total_tokens`."""
        return self.seed_joules + self.energy_joules


def pod_energy_for(entries: Mapping[str, float], uid: str) -> float | None:
    """The pod's joules among the agent's entries by pod uid.

    Its own uid's entry; else a lone entry whose uid is unknown on one side (an agent that could not
    read uids, or a pod view without one). Two pods of the same name are never mixed up.
    """
    if uid and uid in entries:
        return entries[uid]
    if len(entries) == 1 and ("" in entries or not uid):
        return next(iter(entries.values()))
    return None
