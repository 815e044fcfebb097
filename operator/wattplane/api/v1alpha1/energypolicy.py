"""EnergyPolicy: what to optimise for which pods.

Spec sections are optional and compose. The effective limit of a GPU is the tightest of what applies,
always inside the device's own constraints. Fields carry their unit in the name (``maxWatts``,
``maxFractionOfDefault``) so a policy reads unambiguously.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator
from wattplane.api.base import ApiModel, LenientApiModel
from wattplane.api.conditions import Condition
from wattplane.api.crd import CrdInfo, PrinterColumn
from wattplane.api.selectors import LabelSelector

CRD = CrdInfo(
    kind="EnergyPolicy",
    plural="energypolicies",
    singular="energypolicy",
    short_names=("epol",),
    printer_columns=(
        PrinterColumn("Priority", "integer", ".spec.priority"),
        PrinterColumn("DryRun", "boolean", ".spec.dryRun"),
        PrinterColumn("Pods", "integer", ".status.matchedPods", "Pods this policy governs"),
        PrinterColumn("GPUs", "integer", ".status.matchedGpus", "GPUs this policy sets"),
        PrinterColumn("Allocated W", "number", ".status.allocatedWatts", "Sum of GPU limits set"),
        PrinterColumn("Quota W", "number", ".spec.quota.watts", "Watt quota of the governed pods", priority=1),
        PrinterColumn("Quota Used W", "number", ".status.quota.measuredWatts", "Quota GPUs draw", priority=1),
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn(
            "J/Token",
            "number",
            ".status.serving.windowJoulesPerOutputToken",
            "GPU joules per output token of the inference pods, last 5 minutes",
            priority=1,
        ),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp"),
    ),
)


class PolicySelector(ApiModel):
    """Which pods a policy governs. Both parts must match; an absent part matches everything.

    Pods can also opt in by name with the ``wattplane.io/policy`` annotation and opt out with
    ``wattplane.io/opt-out: "true"``.
    """

    namespace_selector: LabelSelector | None = None
    """Labels of the pod's namespace."""
    pod_selector: LabelSelector | None = None
    """Labels of the pod."""


class ClockRangeMHz(ApiModel):
    """A locked SM (graphics) clock range."""

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {"rule": "self.minMHz <= self.maxMHz", "message": "minMHz must not exceed maxMHz"},
                ]
            }
        }
    )

    min_mhz: int = Field(ge=0, le=10000, alias="minMHz")
    """Lowest SM clock, MHz."""
    max_mhz: int = Field(ge=0, le=10000, alias="maxMHz")
    """Highest SM clock, MHz."""

    @model_validator(mode="after")
    def _ordered(self) -> ClockRangeMHz:
        if self.min_mhz > self.max_mhz:
            raise ValueError("minMHz must not exceed maxMHz")
        return self


#: Workload power profiles a policy may request, by wattplane's names. Each maps to one NVML
#: ``NVML_POWER_PROFILE_*`` id (nvidia-ml-py 13.615.71, ``nvmlPowerProfileType_t``); a board lists the
#: ones it offers, and one it does not offer is reported and not requested.
WorkloadProfile = Literal[
    "MaxP",
    "MaxQ",
    "Compute",
    "MemoryBound",
    "Network",
    "Balanced",
    "LlmInference",
    "LlmTraining",
    "Hpc",
    "Training",
    "Inference",
    "HighThroughputInference",
    "MediumThroughputInference",
    "LowLatencyInference",
    "LowPriorityBackground",
]


class PowerSmoothing(ApiModel):
    """Power smoothing (NVML, Blackwell and newer): bound how fast a GPU's draw moves, hold a floor.

    A rack's power then does not swing when a synchronous job's steps start and stop. Absent fields
    keep the device's preset value. Rates are watts per second; the floor is a percentage of the
    board's total module power (TMP), which the GPU keeps drawing even when its work pauses.
    """

    ramp_up_watts_per_second: float | None = Field(default=None, gt=0, le=1e6)
    """Fastest rise of the GPU's power, watts per second."""
    ramp_down_watts_per_second: float | None = Field(default=None, gt=0, le=1e6)
    """Fastest fall of the GPU's power, watts per second."""
    floor_percent: float | None = Field(default=None, ge=0, le=100)
    """Power the GPU holds at least, percent of its total module power."""


class PowerLimits(ApiModel):
    """Static power caps (MIT Lincoln Lab found 60-80% of the default limit a good trade-off).

    Watts and fractions may both be given; the tightest wins. The result is always clamped into
    the device's own constraints.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "!has(self.minWatts) || !has(self.maxWatts) || self.minWatts <= self.maxWatts",
                        "message": "minWatts must not exceed maxWatts",
                    },
                    {
                        "rule": "!has(self.minFractionOfDefault) || !has(self.maxFractionOfDefault)"
                        " || self.minFractionOfDefault <= self.maxFractionOfDefault",
                        "message": "minFractionOfDefault must not exceed maxFractionOfDefault",
                    },
                ]
            }
        }
    )

    max_watts: float | None = Field(default=None, gt=0, le=10000)
    """Upper bound on each GPU's power limit, watts."""
    max_fraction_of_default: float | None = Field(default=None, gt=0, le=1)
    """Upper bound as a fraction of the device's default limit, e.g. 0.7."""
    min_watts: float | None = Field(default=None, gt=0, le=10000)
    """Lower bound on each GPU's power limit, watts (other sections never go below it)."""
    min_fraction_of_default: float | None = Field(default=None, gt=0, le=1)
    """Lower bound as a fraction of the device's default limit."""
    locked_sm_clock_mhz: ClockRangeMHz | None = Field(default=None, alias="lockedSmClockMHz")
    """Optional locked SM clock range applied with the cap."""
    workload_profile: WorkloadProfile | None = None
    """Optional workload power profile requested with the cap (NVML workload power profiles). A GPU
    that does not offer it is reported once and left as it is."""
    power_smoothing: PowerSmoothing | None = None
    """Optional power smoothing applied with the cap; meant for racks under a ``budget``, whose power
    should move slowly. A GPU without it is reported once and left as it is."""

    @model_validator(mode="after")
    def _ordered(self) -> PowerLimits:
        if self.min_watts is not None and self.max_watts is not None and self.min_watts > self.max_watts:
            raise ValueError("minWatts must not exceed maxWatts")
        lo, hi = self.min_fraction_of_default, self.max_fraction_of_default
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("minFractionOfDefault must not exceed maxFractionOfDefault")
        return self


class EfficiencySpec(ApiModel):
    """Zeus-style online profiling per job: sweep power limits, keep the cheapest.

    Cost per unit of progress is ``eta * energy + (1 - eta) * maxPower * time`` (Zeus, NSDI'23):
    ``eta = 1`` minimises energy alone, ``eta = 0`` time alone. Needs a progress signal on the pod
    (annotation ``wattplane.io/progress-metric``); without one the policy says so and sets nothing.
    """

    eta: float = Field(default=0.5, ge=0, le=1)
    """Weight of energy against time in the cost, in [0, 1]."""
    max_slowdown: float | None = Field(default=None, gt=0, le=10)
    """If set, choose the lowest-energy limit whose time per unit is at most ``1 + maxSlowdown`` times the fastest."""
    step_watts: float = Field(default=25.0, ge=1, le=500)
    """Sweep step, watts (the sweep runs from the device maximum downwards)."""
    warmup_seconds: float = Field(default=30.0, ge=0, le=3600)
    """Time after a limit change before measuring (clocks and throughput settle)."""
    window_seconds: float = Field(default=60.0, ge=1, le=3600)
    """Measurement window per limit."""
    early_stop_fraction: float = Field(default=0.5, gt=0, le=1)
    """Stop the sweep once throughput falls below this fraction of the best seen (it only gets worse)."""
    reprofile_after_seconds: float = Field(default=7 * 24 * 3600.0, ge=60, le=366 * 24 * 3600)
    """Age after which a job's profile is measured again."""


class SecretRef(ApiModel):
    """A Secret by name; the namespace defaults to the operator's own."""

    name: str = Field(min_length=1, max_length=253)
    """Secret name."""
    namespace: str | None = Field(default=None, max_length=63)
    """Secret namespace (default: the namespace wattplane is installed in)."""


class CarbonSourceRef(ApiModel):
    """Where a policy's carbon signal comes from."""

    provider: Literal["electricitymaps", "watttime", "ukcarbon", "carbon-aware-sdk", "trace"]
    """Which API, or ``trace`` for a recorded file."""
    zone: str = Field(min_length=1, max_length=128)
    """Zone/region in the provider's vocabulary (``DE``, ``CAISO_NORTH``, ``national``, ``eastus``)."""
    signal: Literal["average", "marginal"] = "average"
    """Average (grid mix) or marginal emissions; a provider that cannot deliver the kind is an error."""
    base_url: str | None = Field(default=None, max_length=512)
    """Override the provider's public URL (proxies, a self-hosted Carbon Aware SDK)."""
    credentials_secret_ref: SecretRef | None = None
    """Secret with the provider's credentials (keys: ``token``, or ``username`` and ``password``)."""
    refresh_interval_seconds: float = Field(default=300.0, ge=10, le=86400)
    """Minimum time between fetches; all policies on the same source and zone share one cache."""
    trace_path: str | None = Field(default=None, max_length=1024)
    """``trace`` only: path of the CSV inside the operator's container."""
    trace_speedup: float = Field(default=1.0, gt=0, le=1e6)
    """``trace`` only: trace seconds per wall-clock second."""


class CurvePoint(ApiModel):
    """One point of the intensity → performance-weight curve."""

    x: float = Field(ge=0, le=5000)
    """Carbon intensity in gCO2eq/kWh (``basis: Absolute``) or its percentile 0-100 in the look-ahead window."""
    weight: float = Field(ge=0, le=1)
    """Performance weight w: 0 runs at the efficient limit, 1 at the device maximum."""


class CarbonCurve(ApiModel):
    """Piecewise-linear map from carbon intensity to the weight w (flat beyond the end points)."""

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "self.points.all(p, self.points.filter(q, q.x == p.x).size() == 1)",
                        "message": "curve points must have distinct x",
                    },
                    {
                        "rule": "self.basis != 'ForecastPercentile' || self.points.all(p, p.x <= 100.0)",
                        "message": "percentile curve points must have x in 0..100",
                    },
                ]
            }
        }
    )

    basis: Literal["Absolute", "ForecastPercentile"] = "ForecastPercentile"
    """``Absolute``: x is gCO2eq/kWh now. ``ForecastPercentile``: x is where the current intensity ranks
    (0 cleanest, 100 dirtiest) among the forecast for the look-ahead window, so the policy spends its
    slowdown in the dirtiest hours it can foresee (Chase)."""
    points: list[CurvePoint] = Field(min_length=1, max_length=32)
    """The curve; sorted by x when used."""

    @model_validator(mode="after")
    def _distinct(self) -> CarbonCurve:
        xs = [p.x for p in self.points]
        if len(set(xs)) != len(xs):
            raise ValueError("curve points must have distinct x")
        if self.basis == "ForecastPercentile" and any(x > 100 for x in xs):
            raise ValueError("percentile curve points must have x in 0..100")
        return self


def _default_curve() -> CarbonCurve:
    # Fast in the cleanest 60% of the look-ahead, efficient in the dirtiest 20%, linear between.
    return CarbonCurve(points=[CurvePoint(x=60, weight=1.0), CurvePoint(x=80, weight=0.0)])


class PriceSourceRef(ApiModel):
    """Where a policy's electricity price comes from.

    ``trace``: a CSV inside the operator's container, a timestamp column (each row is the interval
    starting then, until the next row) and a price column (the first column whose name contains
    ``price``, else the second). ``http``: a JSON document served over HTTP(S), fetched every
    ``refreshIntervalSeconds``::

        {"unit": "EUR/MWh",
         "prices": [{"start": "2023-07-02T12:00:00Z", "end": "2023-07-02T13:00:00Z", "price": -500.0},
                    {"start": "2023-07-02T13:00:00Z", "durationSeconds": 3600, "price": -20.5}]}

    ``unit`` defaults to the policy's ``price.unit``; each interval has ``end`` or ``durationSeconds``.
    ``openadr``: the PRICE signals (ELECTRICITY_PRICE, ENERGY_PRICE) the demand-response VEN of the
    policy named in ``policy`` (default: this one) received from its VTN.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {"rule": "self.provider != 'trace' || has(self.tracePath)", "message": "trace needs tracePath"},
                    {"rule": "self.provider != 'http' || has(self.url)", "message": "http needs url"},
                ]
            }
        }
    )

    provider: Literal["trace", "http", "openadr"]
    """``trace`` for a recorded CSV, ``http`` for a JSON price document, ``openadr`` for a VEN's price signals."""
    policy: str | None = Field(default=None, max_length=253)
    """``openadr`` only: the policy whose ``budget.demandResponse`` VEN receives the prices (default: this one)."""
    trace_path: str | None = Field(default=None, max_length=1024)
    """``trace`` only: path of the CSV inside the operator's container."""
    trace_speedup: float = Field(default=1.0, gt=0, le=1e6)
    """``trace`` only: trace seconds per wall-clock second (replays start at the trace's first row)."""
    url: str | None = Field(default=None, max_length=1024, pattern=r"^https?://")
    """``http`` only: the document's URL."""
    credentials_secret_ref: SecretRef | None = None
    """``http`` only: Secret whose ``token`` key is sent as ``Authorization: Bearer <token>``."""
    refresh_interval_seconds: float = Field(default=900.0, ge=10, le=86400)
    """``http`` only: minimum time between fetches."""

    @model_validator(mode="after")
    def _where(self) -> PriceSourceRef:
        if self.provider == "trace" and not self.trace_path:
            raise ValueError("trace needs tracePath")
        if self.provider == "http" and not self.url:
            raise ValueError("http needs url")
        return self


class PriceSpec(ApiModel):
    """Electricity price as the signal of a ``Budgeted`` carbon section, alone or weighted with carbon.

    Each round the planner spends the jobs' slowdown budgets where the cost series is highest:
    ``cost = (1 - weight) * carbon + weight * mean(carbon) * price+ / mean(price+)``, where ``price+``
    is the price floored at zero (energy that costs nothing or pays is always worth using, so those
    hours run uncapped) and the means are taken over ``lookaheadHours`` before and after now (with
    ``weight: 1``, 100 stands in for ``mean(carbon)``: the carbon signal is not needed then).
    ``weight: 0`` is the carbon-only policy exactly; ``weight: 1`` follows the price alone.
    """

    source: PriceSourceRef
    """The price signal."""
    weight: float = Field(default=1.0, ge=0, le=1)
    """0: carbon only, 1: price only, between: both, each relative to its own mean."""
    unit: str = Field(default="EUR/MWh", pattern=r"^[A-Z]{3}/(MWh|kWh)$")
    """Currency and energy unit of the prices (``EUR/MWh``, ``USD/kWh`` …); a source in another
    currency is an error, kWh and MWh are converted."""
    max_staleness_seconds: float = Field(default=7200.0, ge=60, le=7 * 86400)
    """A price series that has not covered now for this long is stale, and the section's fallback applies."""


class CarbonSpec(ApiModel):
    """Carbon-aware power: run efficient when the grid is dirty, fast when it is clean.

    ``mode: Budgeted`` gives every job a power schedule within its own slowdown budget
    (``maxSlowdown``, or the pod's ``wattplane.io/max-slowdown``): each round the planner spends the
    budget where the forecast carbon is highest, on the job's measured (Zeus) or prior power curve,
    and keeps the job's account in status.

    ``mode: Curve`` is Chase's rule: limit = efficient + w * (max - efficient), with w from ``curve``;
    the efficient limit is the job's Zeus optimum when the ``efficiency`` section has profiled it, else
    ``efficientFractionOfDefault`` of the default.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "self.fallback != 'Fixed' || has(self.fallbackIntensity)",
                        "message": "fallback Fixed needs fallbackIntensity",
                    },
                    {
                        "rule": "!has(self.price) || self.mode == 'Budgeted'",
                        "message": "price needs mode Budgeted",
                    },
                ]
            }
        }
    )

    source: CarbonSourceRef
    """The signal."""
    mode: Literal["Curve", "Budgeted"] = "Curve"
    """``Budgeted``: per-job power schedules within each job's slowdown budget (``maxSlowdown``).
    ``Curve``: Chase's intensity-to-weight curve."""
    max_slowdown: float = Field(default=0.025, gt=0, le=1)
    """``Budgeted`` mode: how much longer than uncapped a job may take, as a fraction of its uncapped
    run time (0.025: at most 2.5 % slower). A pod's ``wattplane.io/max-slowdown`` overrides it."""
    curve: CarbonCurve = Field(default_factory=_default_curve)
    """Intensity (or its forecast percentile) → weight w."""
    lookahead_hours: float = Field(default=24.0, gt=0, le=72)
    """Forecast window for ``ForecastPercentile``; without a forecast the policy falls back to recent history."""
    efficient_fraction_of_default: float = Field(default=0.6, gt=0, le=1)
    """Efficient limit for jobs without a Zeus profile, as a fraction of the default limit."""
    max_staleness_seconds: float = Field(default=7200.0, ge=60, le=7 * 86400)
    """A signal older than this is stale and the fallback applies."""
    fallback: Literal["LastGood", "Fixed", "Efficient", "Max"] = "LastGood"
    """When stale: keep the last good value, use ``fallbackIntensity``, or run efficient / at max."""
    fallback_intensity: float | None = Field(default=None, ge=0, le=5000)
    """Intensity assumed under ``fallback: Fixed``, gCO2eq/kWh."""
    price: PriceSpec | None = None
    """``Budgeted`` mode only: spend the budgets on expensive hours (see :class:`PriceSpec`)."""

    @model_validator(mode="after")
    def _fallback_value(self) -> CarbonSpec:
        if self.fallback == "Fixed" and self.fallback_intensity is None:
            raise ValueError("fallback Fixed needs fallbackIntensity")
        if self.price is not None and self.mode != "Budgeted":
            raise ValueError("price needs mode Budgeted")
        return self


class OpenAdrSpec(ApiModel):
    """Where the policy's OpenADR 2.0b VTN is and how the operator, as its VEN, signs in.

    The operator polls the VTN (simple HTTP pull). The Secret named by ``credentialsSecretRef`` may hold:
    ``venId`` (a venID the utility assigned; absent: the VTN assigns one at registration), ``cert`` and
    ``key`` (PEM client certificate and private key: TLS client authentication and XML message signing),
    ``keyPassphrase`` (for an encrypted ``key``), ``caCert`` (PEM bundle the VTN's TLS certificate is
    checked against; absent: the public CAs bundled with certifi) and ``vtnFingerprint`` (the VTN
    certificate's fingerprint: signed messages from anyone else are refused). Values are never logged;
    without a Secret the VEN talks unsigned, which only suits a VTN on a trusted network.
    """

    vtn_url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")
    """Base URL of the VTN's OpenADR services, e.g. ``https://vtn.example/OpenADR2/Simple/2.0b``."""
    ven_name: str = Field(min_length=1, max_length=128)
    """The name this VEN registers under (the VTN's operator knows it by this name)."""
    credentials_secret_ref: SecretRef | None = None
    """Secret with the VEN's credentials (keys above); absent: unsigned, venID assigned by the VTN."""
    poll_interval_seconds: int | None = Field(default=None, ge=1, le=3600)
    """Seconds between polls; absent: the interval the VTN requests at registration."""


class SimpleLevelFractions(ApiModel):
    """Budget fraction for each level of an OpenADR ``SIMPLE`` signal (level 0 means normal operation)."""

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "self.level1 >= self.level2 && self.level2 >= self.level3",
                        "message": "a higher level must not allow more power: level1 >= level2 >= level3",
                    },
                ]
            }
        }
    )

    level1: float = Field(default=0.9, gt=0, le=1)
    """Moderate: fraction of the standing budget (or of the covered GPUs' default limits)."""
    level2: float = Field(default=0.75, gt=0, le=1)
    """High."""
    level3: float = Field(default=0.5, gt=0, le=1)
    """Special (the deepest cut)."""

    @model_validator(mode="after")
    def _ordered(self) -> SimpleLevelFractions:
        if not self.level1 >= self.level2 >= self.level3:
            raise ValueError("a higher level must not allow more power: level1 >= level2 >= level3")
        return self


class DemandResponseSpec(ApiModel):
    """Grid demand response: the operator acts as an OpenADR 2.0b VEN for the budget's GPUs.

    Each event the VTN sends becomes budget windows (the same as ``schedule``): ``LOAD_DISPATCH``
    setpoints and ``LOAD_CONTROL`` targets in watts or fractions, ``SIMPLE`` levels through
    ``levelFractions``. Price signals are recorded, not enforced. The measured power of the covered GPUs
    is reported back to the VTN (``TELEMETRY_USAGE``). Events are kept in a ConfigMap before the VEN
    answers, so an operator restart loses none.
    """

    openadr: OpenAdrSpec
    """The VTN and the VEN's identity."""
    opt_in: Literal["Always", "Never"] = "Always"
    """``Always``: take part in every event the VEN can honour (see ``floorFraction``). ``Never``: answer
    every event with optOut and enforce nothing (prices and reports still flow): a dry run of a program."""
    floor_fraction: float | None = Field(default=None, gt=0, le=1)
    """Opt out of an event whose deepest target is below this fraction of the standing budget (or, for
    fraction targets without a standing budget, below this fraction); absent: no floor."""
    level_fractions: SimpleLevelFractions = Field(default_factory=SimpleLevelFractions)
    """Targets for the ``SIMPLE`` signal's levels 1-3."""
    ramp_watts_per_second: float | None = Field(default=None, gt=0, le=1e9)
    """Ramp for events that carry no ramp-up period, or whose ramp cannot be turned into a rate (no
    standing budget); absent: the target applies at once."""


class BudgetWindow(ApiModel):
    """A power target for a stretch of time: a demand-response event, a planned curtailment.

    From ``start`` the budget in force moves to the target at ``rampWattsPerSecond`` (at once
    without a rate), holds it until ``end``, then moves back at the same rate to the standing
    budget (``budget.watts``) or, without one, until no GPU is held. Where windows overlap the
    lowest target wins.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.watts) != has(self.fraction)",
                        "message": "a window needs exactly one of watts or fraction",
                    },
                    {"rule": "self.end > self.start", "message": "end must be after start"},
                ]
            }
        }
    )

    name: str = Field(min_length=1, max_length=128)
    """Names the window in status, events and metrics."""
    start: datetime
    """When the ramp towards the target begins (RFC 3339)."""
    end: datetime
    """When the target lapses and the ramp back begins (RFC 3339)."""
    watts: float | None = Field(default=None, gt=0, le=1e9)
    """Target for the GPUs the budget covers, watts."""
    fraction: float | None = Field(default=None, gt=0, le=1)
    """Target as a fraction of the standing budget, or without one of the covered GPUs' default limits."""
    ramp_watts_per_second: float | None = Field(default=None, gt=0, le=1e9)
    """Fastest the budget in force moves, both ways, watts per second of the whole node set."""

    @model_validator(mode="after")
    def _one_target(self) -> BudgetWindow:
        if (self.watts is None) == (self.fraction is None):
            raise ValueError("a window needs exactly one of watts or fraction")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class BudgetSpec(ApiModel):
    """POLCA-style power budget for a set of nodes (e.g. a rack), cut by priority.

    Every GPU on the selected nodes counts. When the sum of what the GPUs may draw exceeds the budget,
    the lowest priority is cut first (water-filling within a priority), inference and
    ``wattplane.io/priority: high`` last; the agents enforce their node's share within a tick.
    A standing budget (``watts``), scheduled windows (``schedule``), or both.
    """

    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.watts) || has(self.schedule) || has(self.demandResponse)",
                        "message": "a budget needs watts, a schedule, demandResponse, or a mix",
                    },
                ]
            }
        }
    )

    watts: float | None = Field(default=None, gt=0, le=1e9)
    """Standing budget for the GPUs of all selected nodes, watts (absent: none outside the windows)."""
    node_selector: LabelSelector | None = None
    """Nodes the budget covers (absent: every node with GPUs)."""
    hysteresis_fraction: float = Field(default=0.05, ge=0, le=0.5)
    """A node's share changes only when it moves by more than this fraction, and cut GPUs are restored
    only once power is this far below the budget."""
    schedule: list[BudgetWindow] | None = Field(default=None, max_length=64)
    """Scheduled targets (curtailments, demand-response events) with their ramps."""
    demand_response: DemandResponseSpec | None = None
    """Windows from a grid operator's OpenADR events, merged with ``schedule`` (the lowest target wins)."""

    @model_validator(mode="after")
    def _something_to_enforce(self) -> BudgetSpec:
        if self.watts is None and not self.schedule and self.demand_response is None:
            raise ValueError("a budget needs watts, a schedule, demandResponse, or a mix")
        return self


class QuotaSpec(ApiModel):
    """A watt quota for the pods the policy selects (a namespace, a team's label): caps that add up to it.

    Unlike a budget, which protects a node set's feed and is enforced by the node agents on measured
    power, a quota follows pods wherever they run, so the planner enforces it with per-GPU caps whose
    sum never exceeds ``watts``. Caps follow the load every planning round: an idle GPU lends its
    headroom to busy ones and gets it back within one round once it runs into its cap. When the quota
    binds, the lowest priority is cut first and, within a priority, every GPU down to its efficient
    limit (its Zeus profile's knee, when profiled) before any goes below it.
    """

    watts: float = Field(gt=0, le=1e9)
    """Sum of the selected pods' GPU caps, watts."""
    margin_fraction: float = Field(default=0.1, ge=0, le=1)
    """Room above measured power a running GPU is given, as a fraction of its ceiling."""
    hysteresis_fraction: float = Field(default=0.05, ge=0, le=0.5)
    """A GPU keeps its cap when the new one moves by at most this fraction of it (and the sum fits)."""
    knee_aware: bool = True
    """Within a priority, cut every GPU to its efficient limit before any goes below it."""


class QuotaStatus(LenientApiModel):
    """The quota section's last allocation."""

    watts: float = 0.0
    """The quota, watts."""
    allocated_watts: float = 0.0
    """Sum of the caps the quota set, watts (at most ``watts`` when feasible)."""
    measured_watts: float = 0.0
    """Measured power of the quota's GPUs, watts."""
    demand_watts: float = 0.0
    """What the GPUs asked for (measured power plus margin, the ceiling when power-bound), watts."""
    minimum_watts: float = 0.0
    """Sum of the GPUs' minimum limits: below this the quota cannot be met."""
    lent_watts: float = 0.0
    """Headroom idle GPUs lent to busy ones, watts."""
    gpus: int = 0
    """GPUs of the quota's pods."""
    cut_gpus: int = 0
    """GPUs capped below what they asked for."""
    held_gpus: int = 0
    """GPUs whose previous cap hysteresis kept."""


class ServingSpec(ApiModel):
    """SLO-guarded power for the inference pods the policy governs (``wattplane.io/workload: inference``).

    Each pod's knob (an SM clock lock while decode dominates, a power cap while prefill does) is lowered
    step by step while its engine's p90 time per output token and p90 time to first token stay under
    their objectives and the token stream stays above a reading-speed floor; it backs off at once, in
    the scrape that sees an objective threatened or the queue past its bound, and probes again later.
    Pods override the objectives with ``wattplane.io/slo-*`` annotations. Needs the engine's metrics
    (``wattplane.io/serving-metrics``).
    """

    tpot_p90_ms: float = Field(default=100.0, gt=0, le=60_000)
    """p90 time per output token (inter-token latency) objective, milliseconds."""
    ttft_p90_ms: float = Field(default=2000.0, gt=0, le=600_000)
    """p90 time to first token objective, milliseconds."""
    speed_floor_tokens_per_second: float = Field(default=5.0, ge=0, le=10_000)
    """Token delivery speed never to fall below (a reader's pace: faster tokens are wasted), tokens/s."""
    queue_bound: float = Field(default=16.0, ge=0, le=1e6)
    """Requests waiting beyond which nothing is capped."""
    knob: Literal["Auto", "Clock", "Cap"] = "Auto"
    """Which knob to turn: chosen per regime (``Auto``), or always the SM clock or the power cap. GPUs
    whose clock range wattplane does not know (all but H100 and H200 for now) always use the cap."""
    prefill_seconds_per_token: float | None = Field(default=None, gt=0, le=1)
    """GPU seconds one prompt token costs at default clocks (e.g. 3.25e-5 for an 8B model on an H100):
    tells prefill-dominated pods (power cap) from decode-dominated ones (clock lock) under ``Auto``."""
    settle_seconds: float = Field(default=60.0, ge=0, le=3600)
    """A new knob runs this long before its latencies count as its own."""
    backoff_seconds: float = Field(default=300.0, ge=0, le=86400)
    """After a back-off, no probing for this long (doubled at each back-off, up to an hour)."""


class StragglerSpec(ApiModel):
    """Perseus-style: in multi-pod jobs, slow the pods that would only wait for the slowest one."""

    tolerance: float = Field(default=0.05, gt=0, le=1)
    """Step rates within this fraction of the slowest pod's count as matched."""
    step_watts: float = Field(default=25.0, ge=1, le=500)
    """How far a fast pod's limit moves per planning round."""


#: The sections that make a policy do something; a policy needs one of them, or ``dryRun: true``.
ENFORCING_SECTIONS = ("limits", "efficiency", "carbon", "budget", "quota", "serving", "stragglers")
#: Why a policy without any of them is refused (the CRD's CEL rule says the same).
NO_SECTION_MESSAGE = (
    "a policy needs at least one of limits, efficiency, carbon, budget, quota, serving or stragglers "
    "(or dryRun: true to only observe the pods it selects)"
)


class EnergyPolicySpec(ApiModel):
    """Desired behaviour. Sections compose (tightest limit wins); at least one, or dryRun: true, is required."""

    # Why one is required: a policy with none would still select pods (an empty selector selects them
    # all) and, at its priority, take them from the policies that do set limits, while doing nothing.
    model_config = ConfigDict(
        **{
            "json_schema_extra": {
                "x-kubernetes-validations": [
                    {
                        "rule": " || ".join(f"has(self.{s})" for s in ENFORCING_SECTIONS)
                        + " || (has(self.dryRun) && self.dryRun)",
                        "message": NO_SECTION_MESSAGE,
                    },
                ]
            }
        }
    )

    selector: PolicySelector = Field(default_factory=PolicySelector)
    """Pods governed by this policy."""
    priority: int = Field(default=0, ge=-1000, le=1000)
    """When several policies select a pod, the highest priority wins (ties: name order)."""
    limits: PowerLimits | None = None
    """Static caps."""
    efficiency: EfficiencySpec | None = None
    """Zeus-style per-job power-limit profiling."""
    carbon: CarbonSpec | None = None
    """Chase-style carbon-aware limits."""
    budget: BudgetSpec | None = None
    """POLCA-style power budget for a node set."""
    quota: QuotaSpec | None = None
    """A watt quota shared by the pods the policy governs (a namespace, a team)."""
    serving: ServingSpec | None = None
    """SLO-guarded capping of the inference pods the policy governs."""
    stragglers: StragglerSpec | None = None
    """Perseus-style slow-down of pods that wait for a straggler."""
    dry_run: bool = False
    """Plan and report only; never touch devices."""

    @model_validator(mode="after")
    def _does_something(self) -> EnergyPolicySpec:
        if not self.dry_run and all(getattr(self, s) is None for s in ENFORCING_SECTIONS):
            raise ValueError(NO_SECTION_MESSAGE)
        return self


class CarbonStatus(LenientApiModel):
    """The carbon signal behind the current limits."""

    intensity: float | None = None
    """Current intensity, gCO2eq/kWh (``None`` when no usable value exists)."""
    unit: str = "gCO2eq/kWh"
    """Unit of ``intensity``."""
    time: str | None = None
    """When the value applies (RFC 3339)."""
    source: str = ""
    """``provider/zone``."""
    stale: bool = False
    """Older than the policy's staleness bound (the fallback applies)."""
    weight: float | None = None
    """The performance weight w the curve gave."""
    price: float | None = None
    """With a ``price`` section: the electricity price now, in ``priceUnit``."""
    price_unit: str | None = None
    """Unit of ``price`` (``EUR/MWh`` …)."""
    cost: float | None = None
    """With a ``price`` section: the cost the budgets are spent on now (carbon-equivalent g/kWh)."""
    message: str = ""
    """Why the signal is what it is (errors, fallback used)."""


class BudgetStatus(LenientApiModel):
    """The budget section's last allocation."""

    watts: float = 0.0
    """The target in force, watts (0: none in force, outside every window without a standing budget)."""
    standing_watts: float | None = None
    """The standing budget (``spec.budget.watts``), watts."""
    window: str | None = None
    """The scheduled or demand-response window that sets the target now."""
    ramp_watts_per_second: float | None = None
    """The ramp the agents follow into or out of a window, watts per second of the node set."""
    shortfall_watts: float = 0.0
    """How far measured power is above the target, watts (0 when met)."""
    next_change: str | None = None
    """When a window next starts or ends (RFC 3339)."""
    allocated_watts: float = 0.0
    """Sum of the per-node shares handed to agents, watts."""
    measured_watts: float = 0.0
    """Measured power of the covered GPUs, watts."""
    minimum_watts: float = 0.0
    """Sum of the covered GPUs' minimum limits: below this no cut can meet the budget."""
    nodes: int = 0
    """Nodes covered."""
    cut_gpus: int = 0
    """GPUs limited below what other sections allow, to fit the budget."""


#: Serving pods whose problems a policy's status lists (the count covers them all).
SERVING_PROBLEMS_LISTED = 20


class ServingEnergy(LenientApiModel):
    """GPU energy per output token of the policy's inference pods (``wattplane.io/workload: inference``).

    Tokens come from each pod's serving engine (vLLM, SGLang, TGI metrics), joules from the agents'
    per-pod GPU energy; only intervals in which both were read count, so the two always cover the same
    time. A figure is absent, never guessed, when it cannot be measured; ``problems`` says why.
    """

    pods: int = 0
    """Inference pods the policy governs now."""
    measured_pods: int = 0
    """Of those, pods whose tokens and energy were both read in the last round."""
    output_tokens: float = 0.0
    """Output tokens counted since the figures started (survives operator restarts)."""
    energy_joules: float = 0.0
    """GPU energy of the same intervals, joules."""
    joules_per_output_token: float | None = None
    """``energyJoules / outputTokens``; absent before the first token."""
    window_seconds: float = 0.0
    """Length of the recent window (up to 5 minutes of measured intervals)."""
    window_output_tokens: float = 0.0
    """Output tokens in the recent window."""
    window_energy_joules: float = 0.0
    """GPU energy in the recent window, joules."""
    window_joules_per_output_token: float | None = None
    """Joules per output token over the recent window; absent when it holds no token."""
    problem_pods: int = 0
    """Inference pods with no usable figures in the last round."""
    problems: list[str] = Field(default_factory=list, max_length=SERVING_PROBLEMS_LISTED)
    """``namespace/name: reason`` for the first of ``problemPods`` (counter reset, scrape failure, ...)."""


#: Shadowed pods listed by name in a policy's status (the count covers them all).
SHADOWED_LISTED = 20


class ShadowedPod(LenientApiModel):
    """A pod the policy selects but does not govern: a higher-ranked policy does."""

    pod: str
    """``namespace/name``."""
    governed_by: str
    """The EnergyPolicy that governs the pod instead (higher ``priority``, or same and earlier name)."""


class ProfilePoint(LenientApiModel):
    """One measured power limit of a Zeus sweep."""

    watts: float
    """Power limit during the window."""
    seconds_per_unit: float
    """Wall time per unit of progress (lower is faster)."""
    joules_per_unit: float
    """GPU energy per unit of progress, all the job's GPUs."""


class JobProfile(LenientApiModel):
    """A job's Zeus sweep on one GPU model: where it stands and what it found."""

    job: str
    """``namespace/job``."""
    gpu_model: str
    """GPU model the profile was measured on."""
    state: Literal["Profiling", "Done", "NoProgressSignal", "Failed"] = "Profiling"
    """Sweep state."""
    current_watts: float | None = None
    """Limit being measured (``Profiling``)."""
    phase_started_at: str | None = None
    """When the current warm-up or window began (RFC 3339)."""
    phase: Literal["Warmup", "Measure"] | None = None
    """Warm-up or measurement."""
    start_progress: float | None = None
    """Progress counter at the start of the current window."""
    start_energy_joules: float | None = None
    """Job's GPU energy at the start of the current window."""
    points: list[ProfilePoint] = Field(default_factory=list, max_length=64)
    """Measurements so far."""
    chosen_watts: float | None = None
    """The limit the cost function picked (``Done``)."""
    completed_at: str | None = None
    """When the sweep finished (RFC 3339); re-profiling counts from here."""
    message: str = ""
    """Human-readable state."""


class LimitSeconds(LenientApiModel):
    """Time a job's GPUs spent at one power limit."""

    watts: float
    """The power limit, watts."""
    seconds: float
    """Seconds spent at it."""


class PlannedLimit(LenientApiModel):
    """One step of a job's planned power schedule."""

    start: str
    """When the step begins (RFC 3339)."""
    watts: float
    """The limit planned from then on, watts."""


class JobCarbonBudget(LenientApiModel):
    """A job's slowdown account under a ``Budgeted`` carbon policy.

    The account is the time the job spent at each limit; what that time cost in slowdown is worked out
    each round on the job's best known curve (its Zeus profile once measured, a prior before), so a
    better curve corrects the past too. Kept in status so a restarted operator continues the account.
    """

    job: str
    """``namespace/job``."""
    gpu_model: str
    """GPU model of the job's GPUs."""
    max_slowdown: float = 0.0
    """The job's slowdown budget, fraction of its uncapped run time."""
    time_at_limits: list[LimitSeconds] = Field(default_factory=list, max_length=128)
    """Seconds the job's GPUs spent at each limit since the account was opened."""
    updated_at: str | None = None
    """When the account was last brought up to date (RFC 3339)."""
    used_seconds: float = 0.0
    """Run time lost against running uncapped so far, seconds."""
    allowed_seconds: float = 0.0
    """Budget earned so far: ``maxSlowdown`` times the uncapped-equivalent run time, seconds."""
    curve: str = ""
    """Which curve priced the account: ``profile`` (measured) or ``prior``."""
    planned: list[PlannedLimit] = Field(default_factory=list, max_length=48)
    """The limits planned for the coming hours (re-planned every round)."""
    message: str = ""
    """Why the job runs where it runs."""


class EnergyPolicyStatus(LenientApiModel):
    """What the operator observed and decided. Written by the operator only."""

    model_config = ConfigDict(**{"json_schema_extra": {"x-kubernetes-preserve-unknown-fields": True}})

    observed_generation: int | None = None
    """The ``metadata.generation`` this status describes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """``Ready``, ``Degraded``, ... with reasons."""
    matched_pods: int = 0
    """Pods this policy governs now."""
    matched_gpus: int = 0
    """GPUs this policy sets now."""
    allocated_watts: float = 0.0
    """Sum of the power limits this policy assigned, watts."""
    measured_watts: float = 0.0
    """Sum of the measured power of the governed GPUs, watts."""
    pods: list[str] = Field(default_factory=list, max_length=200)
    """``namespace/name`` of governed pods (first 200)."""
    shadowed_pods: int = 0
    """Pods this policy selects that a higher-ranked policy governs (it sets nothing on them)."""
    shadowed: list[ShadowedPod] = Field(default_factory=list, max_length=SHADOWED_LISTED)
    """The first of ``shadowedPods`` by name, each with the policy that governs it."""
    matched_jobs: int = 0
    """Jobs (pods grouped by ``wattplane.io/job`` or owner) this policy governs now."""
    carbon: CarbonStatus | None = None
    """The carbon signal the last plan used."""
    budget: BudgetStatus | None = None
    """How the budget was shared out in the last plan."""
    quota: QuotaStatus | None = None
    """How the quota was shared out in the last plan."""
    profiles: list[JobProfile] = Field(default_factory=list, max_length=500)
    """Zeus profiles per (job, GPU model); kept here so an operator restart loses nothing."""
    carbon_budgets: list[JobCarbonBudget] = Field(default_factory=list, max_length=500)
    """Slowdown accounts of the jobs a ``Budgeted`` carbon policy governs; an operator restart continues them."""
    energy_joules: float = 0.0
    """Energy of the governed GPUs since the policy was created, joules (monotonic)."""
    carbon_grams: float = 0.0
    """Emissions attributed to that energy with the policy's signal, gCO2eq."""
    serving: ServingEnergy | None = None
    """Joules per output token of the inference pods, when the policy governs any."""


class EnergyPolicy(LenientApiModel):
    """A cluster-scoped EnergyPolicy object."""

    api_version: str = CRD.api_version
    kind: str = CRD.kind
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: EnergyPolicySpec
    """Required: a policy without one would do nothing (the CRD requires it too)."""
    status: EnergyPolicyStatus = Field(default_factory=EnergyPolicyStatus)

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return str(self.metadata.get("name", ""))

    @property
    def generation(self) -> int:
        """``metadata.generation`` (0 when absent)."""
        return int(self.metadata.get("generation", 0) or 0)
