"""SLO-guarded capping of LLM serving pods: lower the knob while latency holds, back off at once when it does not.

A serving pod's GPU energy per output token falls when its SM clock is lowered (decode is memory-bound:
the clock barely changes its speed but sets most of its draw) or its power is capped (prefill is
compute-bound: the limiter trades speed for watts). How far it can go depends on load, which changes
from minute to minute, so the knob is found by probing each pod from its engine's own metrics, and
each knob's tested load is remembered. The rules, in the order :func:`decide_serving_cap` applies them:

1. **Queue beyond its bound**: release the knob at once, whatever else holds, and probe nothing while it
   lasts (never cap while queueing beyond the bound).
2. **An objective threatened** (p90 TPOT or p90 TTFT past ``threat_margin`` of its objective, or the
   token delivery speed under the floor divided by it): back off in this call, to the less aggressive
   of the last known-good knob and the lowest knob seen to take this load with headroom, or to the
   default when neither is above the knob in force (the knob was itself known-good: the load changed).
   Each back-off holds probing off for ``backoff_s``, doubled at each back-off up to ``backoff_max_s``
   and reset once a lower knob proves good. The knob, and every lower one, is remembered as taking at
   most ``threat_forget`` times this load.
3. **Regime**: which knob the pod should use (:func:`regime`); a switch releases the old knob.
4. **Settle / unknown**: a knob changed less than ``settle_s`` ago is not judged (the scrape window must
   cover it), and a missing figure keeps the knob: without evidence the knob never goes lower.
5. **Raise**: with a latency past ``raise_margin`` of its objective, or a load beyond any this knob was
   seen to take with margin while the margin is gone, step up to the lowest knob seen to take this load
   plus ``load_headroom`` (the default when none was).
6. **Knee**: a probe step that raised a p90 latency by more than ``knee_rise`` (counted only above
   ``knee_floor`` of its objective) is undone and probing held off: below the knee the next load jump
   breaks the SLO.
7. **Lower / probe**: while every latency is within ``probe_margin`` of its objective (and the speed
   ``1 / probe_margin`` above the floor), go straight to the lowest knob seen to take this load plus
   ``load_headroom``; else, outside a hold-off, one step lower, unless the step is expected to use up the
   margin (what the same step cost last time, or twice the step above's cost).

Remembering loads is what lets the controller run near the knee without sitting there blind: latency is
convex in load at low clocks, so a latency margin alone says little about the next minute's load jump,
while "this knob took 30 % more load than now" does. ``bench/inference_energy.py`` measures the result
against a hindsight oracle on the Azure trace (modelled).

Which knob (:func:`regime`): an SM clock lock for decode-dominated services, a power cap for
prefill-dominated (compute-bound) ones. Figures from the simulator's serving model
(:mod:`wattplane.sim.inference`: Llama-3.1-8B on one H100, decode calibrated on ML.ENERGY v3, behaviour
under caps and locks modelled), ``bench/inference_pareto.py``:

* Trace mix (Azure conversation hour, ~1,150 prompt and ~210 output tokens per request, prefill 21 % of
  the GPU's time): decode draws 486–610 W at batch 8–64 (measured), under caps of 500 W and more, so
  those caps only throttle prefill and save at most 8 % of the energy per token. For 20 % less energy
  per token a 1,560 MHz lock costs p90 TPOT 25.0 ms / p90 TTFT 351 ms, a 425 W cap 32.2 ms / 518 ms;
  for 30 %, 1,350 MHz gives 30.8 ms / 446 ms against 40.4 ms / 664 ms at 375 W.
* Prefill-heavy mix (4x the prompt, a quarter of the output, prefill 60 % of the GPU's time): the two
  knobs are within a few per cent of each other at matched energy (10 % less: 1,560 MHz 49.1 ms /
  1,631 ms, 575 W 47.8 ms / 1,652 ms). The cap is then preferred: it bounds the pod's watts (it
  composes with budgets, which speak watts) and the limiter lets prompts that draw less run faster.

The regime switches with hysteresis (prefill share above ``prefill_share_high`` → cap, below
``prefill_share_low`` → clock); the prefill share is the prompt-token rate times the GPU's prefill seconds
per token at default clocks, so it does not move with the knob.

All state lives in :class:`ServingCapState` (frozen), handed back by :func:`decide_serving_cap` each
round; the function is pure and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

KnobKind = Literal["clock", "cap"]


@dataclass(frozen=True)
class KnobRange:
    """The values one knob may take, in its unit (MHz for ``clock``, W for ``cap``).

    Attributes:
        kind: ``clock`` (locked SM clock) or ``cap`` (power limit).
        minimum: Lowest value the controller sets.
        maximum: The default: the knob released (top clock, default limit).
        step: How much one probe lowers it.
    """

    kind: KnobKind
    minimum: float
    maximum: float
    step: float

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum or self.step <= 0:
            raise ValueError(f"{self.kind} range needs 0 < minimum <= maximum and a positive step")

    def clamp(self, value: float) -> float:
        """``value`` inside the range."""
        return min(self.maximum, max(self.minimum, value))


#: H100 SXM defaults: SM clock 510–1,980 MHz in 105 MHz steps; power 200–700 W in 25 W steps.
H100_CLOCK = KnobRange("clock", 510.0, 1980.0, 105.0)
H100_CAP = KnobRange("cap", 200.0, 700.0, 25.0)


@dataclass(frozen=True)
class ServingSlo:
    """A serving pod's objectives.

    Attributes:
        tpot_p90_s: p90 time per output token (inter-token latency), seconds.
        ttft_p90_s: p90 time to first token, seconds.
        speed_floor_tps: Token delivery speed the requests must not fall below (reading speed), tokens/s.
        queue_bound: Requests waiting beyond which nothing is capped.
    """

    tpot_p90_s: float = 0.100
    ttft_p90_s: float = 2.0
    speed_floor_tps: float = 5.0
    queue_bound: float = 16.0


@dataclass(frozen=True)
class ServingWindow:
    """The latest scraped window of a serving pod (``None``: not exposed or not measured this window).

    Attributes:
        tpot_p90_s, ttft_p90_s: p90 latencies over the window, seconds.
        speed_tps: Output tokens over request latency, finished requests of the window, tokens/s.
        queue: Requests waiting now.
        prefill_share: Fraction of the GPU's time spent in prefill (prompt tokens/s × prefill seconds
            per token); chooses the knob.
        joules_per_token: GPU energy per output token over the window (reported, not used to decide).
        load: Work offered over the window in one consistent unit (prompt plus output tokens per second):
            indexes what each knob was seen to take.
    """

    tpot_p90_s: float | None
    ttft_p90_s: float | None
    speed_tps: float | None
    queue: float | None
    prefill_share: float | None = None
    joules_per_token: float | None = None
    load: float | None = None


@dataclass(frozen=True)
class ServingCapSettings:
    """How cautiously to probe.

    Attributes:
        probe_margin: Probe only while latencies are at most this fraction of their objectives (and the
            speed at least its floor divided by it).
        raise_margin: Between this and ``threat_margin``, raise the knob to the lowest one seen to take the
            load with headroom (the default when none was).
        threat_margin: Back off when a latency reaches this fraction of its objective (or the speed
            falls to its floor divided by it).
        settle_s: Seconds a new knob runs before its window is judged good.
        backoff_s: First hold-off after a back-off, seconds; doubled each back-off.
        backoff_max_s: Longest hold-off.
        knee_rise: A probe step that raises p90 TPOT or TTFT by more than this fraction is undone ...
        knee_floor: ... when that latency is above this fraction of its objective.
        load_headroom: A knob is chosen for a load only if it was seen to take this much more (a load jump
            within one scrape interval).
        threat_forget: A knob threatened at load ``L`` is taken to handle at most this times ``L``.
        prefill_share_high, prefill_share_low: Regime hysteresis (see :func:`regime`).
        clock: Range of the SM clock lock.
        cap: Range of the power cap.
        fixed: Always this knob, whatever the regime (a policy's choice, or a GPU without clock locks).
    """

    probe_margin: float = 0.5
    raise_margin: float = 0.75
    threat_margin: float = 0.9
    settle_s: float = 60.0
    backoff_s: float = 300.0
    backoff_max_s: float = 3600.0
    knee_rise: float = 0.15
    load_headroom: float = 0.3
    threat_forget: float = 0.9
    knee_floor: float = 0.5
    prefill_share_high: float = 0.55
    prefill_share_low: float = 0.45
    clock: KnobRange = H100_CLOCK
    cap: KnobRange = H100_CAP
    fixed: KnobKind | None = None

    def __post_init__(self) -> None:
        if not 0 < self.probe_margin <= self.raise_margin <= self.threat_margin <= 1:
            raise ValueError("need 0 < probe_margin <= raise_margin <= threat_margin <= 1")
        if not 0 <= self.prefill_share_low <= self.prefill_share_high <= 1:
            raise ValueError("need 0 <= prefill_share_low <= prefill_share_high <= 1")

    def knob_range(self, kind: KnobKind) -> KnobRange:
        """The range of ``kind``."""
        return self.clock if kind == "clock" else self.cap


@dataclass(frozen=True)
class ServingCapState:
    """What the controller remembers about one pod between rounds.

    Attributes:
        kind: The knob in use.
        value: Its value now (``maximum`` of its range: released).
        last_good: Lowest value seen good since the last back-off to the default (``None``: none yet).
        changed_at: When ``value`` was last changed (seconds, the caller's clock).
        hold_until: No probing before this.
        backoff_s: Length of the next hold-off.
        probe_from: p90 TPOT and TTFT (s) just before the last probe step, to tell how steep it was.
        safe: Per knob value (from the default down, in ``step``s), the highest load it was seen to take
            with margin; lowered when it is threatened at a load.
        rises: Per knob value, how much a probe into it raised the p90 latencies (fraction of the objective).
    """

    kind: KnobKind
    value: float
    last_good: float | None = None
    changed_at: float = -math.inf
    hold_until: float = -math.inf
    backoff_s: float = 300.0
    probe_from: tuple[float, float] | None = None
    safe: tuple[float, ...] = ()
    rises: tuple[float, ...] = ()

    @classmethod
    def initial(cls, settings: ServingCapSettings, kind: KnobKind = "clock") -> ServingCapState:
        """A pod seen for the first time: its knob released."""
        kind = settings.fixed or kind
        return cls(kind=kind, value=settings.knob_range(kind).maximum, backoff_s=settings.backoff_s)

    def released(self, settings: ServingCapSettings) -> bool:
        """Whether the knob is at its default."""
        return self.value >= settings.knob_range(self.kind).maximum


Action = Literal["probe", "lower", "hold", "knee", "raise", "backoff", "release", "settle", "switch", "unknown"]


@dataclass(frozen=True)
class ServingCapDecision:
    """The knob for the next round and why.

    Attributes:
        state: Hand back next round.
        kind: ``clock`` or ``cap``.
        value: MHz or W; ``None`` when released (no lock, default limit).
        action: What was done.
        reason: One line for status, events and ``wattplane explain``.
    """

    state: ServingCapState
    kind: KnobKind
    value: float | None
    action: Action
    reason: str


def regime(prefill_share: float | None, current: KnobKind, settings: ServingCapSettings) -> KnobKind:
    """The knob a pod should use: ``cap`` when prefill dominates its GPU time, else ``clock`` (with hysteresis)."""
    if settings.fixed is not None:
        return settings.fixed
    if prefill_share is None:
        return current
    if current == "clock" and prefill_share > settings.prefill_share_high:
        return "cap"
    if current == "cap" and prefill_share < settings.prefill_share_low:
        return "clock"
    return current


def _threat(window: ServingWindow, slo: ServingSlo, margin: float) -> str | None:
    """The first objective ``window`` is within ``margin`` of (or past), or ``None``."""
    if window.tpot_p90_s is not None and window.tpot_p90_s > margin * slo.tpot_p90_s:
        return f"p90 TPOT {window.tpot_p90_s * 1000:.0f} ms near its {slo.tpot_p90_s * 1000:.0f} ms objective"
    if window.ttft_p90_s is not None and window.ttft_p90_s > margin * slo.ttft_p90_s:
        return f"p90 TTFT {window.ttft_p90_s * 1000:.0f} ms near its {slo.ttft_p90_s * 1000:.0f} ms objective"
    if window.speed_tps is not None and window.speed_tps * margin < slo.speed_floor_tps:
        return f"token speed {window.speed_tps:.1f}/s near its {slo.speed_floor_tps:g}/s floor"
    return None


def _knee_rise(before: tuple[float, float], window: ServingWindow, slo: ServingSlo, floor: float) -> float:
    """How much the last step raised p90 TPOT or TTFT (relative), counting only latencies past ``floor`` of their SLO.

    Far from its objective a steep latency is harmless (a load jump will not breach it); near it, a steep
    step means the service sits at the knee of its latency curve, where the next load jump breaks the SLO.
    """
    rise = 0.0
    pairs = ((before[0], window.tpot_p90_s, slo.tpot_p90_s), (before[1], window.ttft_p90_s, slo.ttft_p90_s))
    for old, new, objective in pairs:
        if new is not None and old > 0 and new > floor * objective:
            rise = max(rise, new / old - 1)
    return rise


def _step_rise(before: tuple[float, float], window: ServingWindow, slo: ServingSlo) -> float:
    """How much the last step raised the p90 latencies, in fractions of their objectives (the larger)."""
    rises = [
        (new - old) / objective
        for old, new, objective in (
            (before[0], window.tpot_p90_s, slo.tpot_p90_s),
            (before[1], window.ttft_p90_s, slo.ttft_p90_s),
        )
        if new is not None
    ]
    return max([0.0, *rises])


def _expected_rise(rises: tuple[float, ...], index: int) -> float:
    """The latency rise (fraction of the objective) a step into grid position ``index`` is expected to cost.

    What it cost last time, else twice what the step above cost (latency is convex in the clock: each
    step lower costs more than the one before), else 0 (nothing known yet).
    """
    if index < len(rises) and rises[index] > 0:
        return rises[index]
    if 0 < index - 1 < len(rises) and rises[index - 1] > 0:
        return 2 * rises[index - 1]
    return 0.0


def _fmt(kind: KnobKind, value: float | None) -> str:
    if value is None:
        return "released"
    return f"{value:.0f} MHz" if kind == "clock" else f"{value:.0f} W"


def _decision(state: ServingCapState, settings: ServingCapSettings, action: Action, reason: str) -> ServingCapDecision:
    knob = None if state.released(settings) else state.value
    return ServingCapDecision(state, state.kind, knob, action, f"{reason}; {state.kind} {_fmt(state.kind, knob)}")


def _grid(knob_range: KnobRange) -> tuple[float, ...]:
    """The values the knob takes, from its default down (index 0 is the default)."""
    count = math.floor((knob_range.maximum - knob_range.minimum) / knob_range.step + 1e-9)
    values = [knob_range.maximum - i * knob_range.step for i in range(count + 1)]
    if values[-1] > knob_range.minimum:
        values.append(knob_range.minimum)
    return tuple(values)


def _index(grid: tuple[float, ...], value: float) -> int:
    """The grid position of ``value`` (the nearest one)."""
    return min(range(len(grid)), key=lambda i: abs(grid[i] - value))


def _learned(state: ServingCapState, size: int) -> list[float]:
    """Per grid position, the highest load seen healthy with margin (default: unbounded)."""
    safe = list(state.safe[:size]) + [0.0] * (size - len(state.safe))
    safe[0] = math.inf
    return safe


def _covering(grid: tuple[float, ...], safe: list[float], load: float | None, below: int) -> int | None:
    """The lowest knob above grid position ``below`` known to handle ``load`` (None: none known)."""
    if load is None:
        return None
    fits = [i for i in range(below) if safe[i] >= load]
    return max(fits) if fits else None


def decide_serving_cap(  # noqa: C901 - one rule per numbered step, in order
    state: ServingCapState,
    window: ServingWindow | None,
    slo: ServingSlo,
    settings: ServingCapSettings,
    now: float,
) -> ServingCapDecision:
    """The pod's knob for the next round (see the module text for the rules)."""
    knob_range = settings.knob_range(state.kind)
    grid = _grid(knob_range)
    at = _index(grid, knob_range.clamp(state.value))
    state = replace(state, value=grid[at])
    if window is None:
        return _decision(state, settings, "unknown", "no serving metrics this round: knob kept")
    load = window.load
    wanted = None if load is None else load * (1 + settings.load_headroom)
    safe = _learned(state, len(grid))
    # 1. Queue beyond its bound: release at once, whatever else holds.
    if window.queue is not None and window.queue > slo.queue_bound:
        backed = at > 0
        state = replace(
            state,
            value=knob_range.maximum,
            last_good=None,
            changed_at=now if backed else state.changed_at,
            hold_until=max(state.hold_until, now + state.backoff_s),
            backoff_s=min(settings.backoff_max_s, 2 * state.backoff_s) if backed else state.backoff_s,
        )
        return _decision(state, settings, "release", f"{window.queue:.0f} requests waiting > {slo.queue_bound:g}")
    # 2. An objective threatened: back off within this call, and remember this knob cannot take this load.
    threat = _threat(window, slo, settings.threat_margin)
    if threat is not None:
        if at == 0:
            return _decision(state, settings, "hold", f"{threat}; nothing to back off")
        if load is not None:
            for i in range(at, len(grid)):
                safe[i] = min(safe[i], load * settings.threat_forget)
        # The less aggressive of: the lowest knob seen to take this load with headroom, the last good one.
        candidates = [i for i in (_covering(grid, safe, wanted, at),) if i is not None and i > 0]
        if state.last_good is not None and state.last_good > state.value:
            candidates.append(_index(grid, state.last_good))
        target = min(candidates) if candidates else 0
        state = replace(
            state,
            value=grid[target],
            last_good=grid[target] if target > 0 else None,
            changed_at=now,
            hold_until=now + state.backoff_s,
            backoff_s=min(settings.backoff_max_s, 2 * state.backoff_s),
            safe=tuple(safe),
            probe_from=None,
        )
        return _decision(state, settings, "backoff", threat)
    # 3. The regime says another knob: release this one and start the other from its default.
    kind = regime(window.prefill_share, state.kind, settings)
    if kind != state.kind:
        fresh = ServingCapState.initial(settings, kind)
        state = replace(fresh, changed_at=now, hold_until=now + settings.settle_s, backoff_s=state.backoff_s)
        return _decision(state, settings, "switch", f"prefill {window.prefill_share or 0:.0%} of GPU time")
    # 4. A new knob still settling, or a figure missing: no judgement yet.
    if now - state.changed_at < settings.settle_s:
        return _decision(state, settings, "settle", "the knob changed less than a window ago")
    if window.tpot_p90_s is None or window.ttft_p90_s is None or window.speed_tps is None or window.queue is None:
        return _decision(state, settings, "unknown", "a latency, speed or queue figure is missing: knob kept")
    margin = _threat(window, slo, settings.probe_margin) is None
    if margin and load is not None:  # healthy with margin: this knob and every higher one take this load
        for i in range(at + 1):
            safe[i] = max(safe[i], load)
        state = replace(state, safe=tuple(safe))
    # 5. Close to an objective, or past any load this knob was seen to take, without margin: step back up.
    near = _threat(window, slo, settings.raise_margin)
    beyond = not margin and load is not None and load > safe[at]
    if at > 0 and (near is not None or beyond):
        # The lowest knob seen to take this load with headroom; the default when none was (or no load).
        known = _covering(grid, safe, wanted, at)
        target = known if known is not None else 0
        state = replace(state, value=grid[target], last_good=None, changed_at=now, probe_from=None)
        why = near or f"load {load:.3g} beyond what {_fmt(state.kind, grid[at])} was seen to take"
        return _decision(state, settings, "raise", why)
    # 6. Healthy. A probe whose step raised a latency steeply found the knee: undo it and hold off.
    improved = state.last_good is None or state.value < state.last_good
    previous, before = state.last_good, state.probe_from
    if improved and previous is not None and before is not None:
        rises = list(state.rises[: len(grid)]) + [0.0] * (len(grid) - len(state.rises))
        rises[at] = _step_rise(before, window, slo)
        state = replace(state, rises=tuple(rises))
        rise = _knee_rise(before, window, slo, settings.knee_floor)
        if rise > settings.knee_rise:
            state = replace(state, value=previous, changed_at=now, hold_until=now + state.backoff_s, probe_from=None)
            return _decision(state, settings, "knee", f"the last step raised a p90 latency by {rise:.0%}")
    # The knob in force is good; go lower if there is margin: straight to a knob known to take this load
    # with headroom, else one step (a probe) once no hold-off is in force.
    state = replace(
        state,
        last_good=state.value,
        backoff_s=settings.backoff_s if improved and at > 0 else state.backoff_s,
    )
    if not margin:
        return _decision(state, settings, "hold", "objectives hold without margin to probe")
    lower = [i for i in range(at + 1, len(grid)) if wanted is not None and safe[i] >= wanted]
    if lower:
        state = replace(state, value=grid[max(lower)], changed_at=now, probe_from=None)
        return _decision(state, settings, "lower", f"known to take load {load:.3g} with headroom")
    if now < state.hold_until:
        return _decision(state, settings, "hold", f"holding off probes for {state.hold_until - now:.0f} s")
    if at == len(grid) - 1:
        return _decision(state, settings, "hold", "at the lowest setting")
    expected = _expected_rise(state.rises, at + 1)
    worst = max(window.tpot_p90_s / slo.tpot_p90_s, window.ttft_p90_s / slo.ttft_p90_s)
    if worst + expected > settings.probe_margin:
        return _decision(
            state, settings, "hold", f"the next step is expected to add {expected:.0%} of an objective: no margin"
        )
    state = replace(state, value=grid[at + 1], changed_at=now, probe_from=(window.tpot_p90_s, window.ttft_p90_s))
    return _decision(state, settings, "probe", "objectives hold with margin")
