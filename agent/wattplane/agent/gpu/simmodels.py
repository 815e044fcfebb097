"""Simulated GPU models: what each board accepts, and which measured or derived workloads it runs.

All numbers about a model live here; the curves themselves come from the packaged traces in
``wattplane/agent/gpu/data`` (see ``NOTICE.md`` there) through :mod:`wattplane.agent.gpu.workloads`.

* **A40, V100, P100** run the Zeus training workloads exactly as measured on those boards.
* **H100, B200** have no public power-limit sweep. Their training workloads are the A40 curves carried
  over by rule R3 and their LLM inference workloads are the ML.ENERGY measurements (taken at the default
  limit) given the A40 BERT curve's behaviour under a cap by rule R4. The numbers those rules need are in
  the ``Extrapolation`` section below and nowhere else; ``docs/simulator-calibration.md`` explains them.

Constraints are the boards' published NVML ranges: A40 100-300 W (default 300), V100 SXM2 100-300 W
(default 300; Zeus swept up to 250 W, so 250-300 W is flat by R1), P100 125-250 W (default 250), H100 SXM
200-700 W (default 700), B200 200-1000 W (default 1000; the 200 W floor is the ``AllowableMin`` in the
DGX B200 user guide's power-capping example, docs.nvidia.com/dgx/dgxb200-user-guide/power-capping.html).
Idle power and clock ranges are not in any trace and are stated assumptions; for the swept boards the
idle draw is kept below the lowest average draw their trace shows while working (V100 34.8 W, P100
33.3 W, A40 79.9 W), and for H100/B200 it is a round figure well below the ML.ENERGY minimum.

* **MI300X, MI250X** (AMD Instinct, OAM) are **modelled**: no power-limit sweep of an AMD board is public,
  so their training workloads are the measured NVIDIA A40 curves carried over by rule R3, exactly as for
  H100/B200 (the shape of perf-vs-power is the A40's, scaled to the board's limit and peak throughput).
  They have no inference tables (ML.ENERGY has no AMD measurement). Published figures used: MI300X
  750 W peak total board power, 2100 MHz peak engine clock, 1307.4 TFLOPS peak dense BF16 (AMD Instinct
  MI300X data sheet; consistent with the MI300A data sheet's 980.6 TFLOPS at 228 CUs scaled to the
  MI300X's 304, and with AMD's "3.4x MI250X in matrix FP16/BF16"); MI250X 560 W peak board power (500 W
  TDP), 1700 MHz peak engine clock, 383 TFLOPS peak BF16 (AMD Instinct MI200 series specifications).
  Secondary sources that quote them: meterpreter.org "AMD confirms Instinct MI300X power consumption up
  to 750W" (MI300X 750 W, MI250X 560 W), zexron.com's MI250X launch report (383 TF, 1.7 GHz),
  vengineer.hatenablog.com 2023-12-11 (MI300A data sheet). The default limit is taken as the peak board
  power. The lowest settable limit, the idle draw and the minimum clock are not published and are
  stated assumptions, the same as the AMD SMI test fake's boards (MI300X 200 W / 140 W idle, MI250X
  100 W / 90 W idle, 500 MHz), so a simulated node and the faked agent agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from wattplane.agent.gpu.workloads import (
    InferenceWorkload,
    LimitCurve,
    ProfileError,
    TrainingWorkload,
    Workload,
    WorkloadKey,
    family_defaults,
    parse_mlenergy_llm_csv,
    parse_zeus_csv,
    transfer_training,
)


@dataclass(frozen=True)
class SimGpuModel:
    """Static description of one GPU model: NVML constraints, idle draw, clock range, capabilities."""

    name: str
    min_watts: float
    max_watts: float
    default_watts: float
    idle_watts: float
    min_sm_clock_mhz: int
    max_sm_clock_mhz: int
    #: Locked SM clocks need Volta or newer (nvml.h); older boards answer NotSupported.
    supports_locked_clocks: bool = True
    #: Workload a board runs when it is given load without naming one.
    default_workload: str = "imagenet/resnet50"
    #: Workload power profiles the board offers (empty: NotSupported). Modelled on what the NVML
    #: reference says of the feature (datacenter Hopper and Blackwell boards); not measured.
    workload_profiles: tuple[str, ...] = ()
    #: Power smoothing (NVML: Blackwell and newer).
    supports_power_smoothing: bool = False

    def temperature_celsius(self, power_watts: float) -> float:
        """A plausible steady-state temperature for the draw (no trace has temperatures)."""
        return round(30.0 + 50.0 * power_watts / self.max_watts, 1)


#: The workload power profiles the simulated H100 and B200 offer.
_PROFILES = ("MaxP", "MaxQ", "Compute", "MemoryBound", "Balanced", "LlmInference", "LlmTraining")

MODELS: dict[str, SimGpuModel] = {
    m.name: m
    for m in (
        SimGpuModel("A40", 100.0, 300.0, 300.0, 30.0, 210, 1740),
        SimGpuModel("V100", 100.0, 300.0, 300.0, 30.0, 135, 1530),
        SimGpuModel("P100", 125.0, 250.0, 250.0, 30.0, 544, 1328, supports_locked_clocks=False),
        SimGpuModel("H100", 200.0, 700.0, 700.0, 70.0, 345, 1980, workload_profiles=_PROFILES),
        SimGpuModel(
            "B200", 200.0, 1000.0, 1000.0, 140.0, 345, 1980, workload_profiles=_PROFILES, supports_power_smoothing=True
        ),
        # Modelled AMD boards (see the module docstring for the published figures and the assumptions).
        SimGpuModel("MI300X", 200.0, 750.0, 750.0, 140.0, 500, 2100),
        SimGpuModel("MI250X", 100.0, 560.0, 560.0, 90.0, 500, 1700),
    )
}

#: Boards whose every curve is modelled (R3 from the A40), with no measurement of that vendor's hardware.
MODELLED_MODELS: tuple[str, ...] = ("MI300X", "MI250X")

#: Packaged Zeus traces of the swept boards.
_ZEUS_FILES = {
    "A40": "zeus_summary_power_a40.csv",
    "V100": "zeus_summary_power_v100.csv",
    "P100": "zeus_summary_power_p100.csv",
}
_MLENERGY_FILE = "mlenergy_v3_llm_inference_h100_b200.csv"


# --- Extrapolation: the numbers rules R3 and R4 use, for boards without a power-limit sweep ---------

#: R3/R4 take the shape of the measured A40 curves (the newest swept board, and the one swept over its
#: whole 100-300 W range).
REFERENCE_MODEL = "A40"
#: Peak dense BF16 tensor throughput in TFLOPS, used only for the R3 time ratio: A40 149.7, H100 SXM 989.4,
#: HGX B200 2250 (NVIDIA's published figures as quoted by spec listings such as hmc-tech.com and
#: glennklockwood.com/garden/processors/B200; half the "with sparsity" numbers). Peak ratios overstate
#: real training speed-ups (small models are rarely compute-bound), so extrapolated epochs are optimistic
#: in absolute terms; the slowdown against the limit, which is what power policies act on, does not
#: depend on this number.
#: MI300X 1307.4 and MI250X 383.0 are AMD's published peak dense BF16 figures (see the module docstring).
DENSE_BF16_TFLOPS = {"A40": 149.7, "H100": 989.4, "B200": 2250.0, "MI300X": 1307.4, "MI250X": 383.0}
#: R4 borrows the cap behaviour of a transformer: BERT fine-tuning on SQuAD at its Zeus default.
INFERENCE_SHAPE = "squad/bert_base_uncased"
#: Inference workload a bare ``llm-inference`` names: a widely used LLM measured on one GPU of both models.
DEFAULT_INFERENCE = "lm-arena-chat/meta-llama/Llama-3.1-8B-Instruct@1gpu"


def _extrapolated_training(
    model: SimGpuModel, reference: SimGpuModel, curves: Mapping[WorkloadKey, LimitCurve]
) -> dict[WorkloadKey, LimitCurve]:
    """R3 for every reference workload: limits and draw scale with the default limit, time with FLOPS."""
    watts_ratio = model.default_watts / reference.default_watts
    seconds_ratio = DENSE_BF16_TFLOPS[reference.name] / DENSE_BF16_TFLOPS[model.name]
    return {
        key: transfer_training(curve, watts_ratio=watts_ratio, seconds_ratio=seconds_ratio)
        for key, curve in curves.items()
    }


# --- Catalogue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelWorkloads:
    """The workloads one model runs, by canonical name, plus the short names that resolve to them."""

    workloads: Mapping[str, Workload]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> Workload:
        """The workload ``name`` means: a canonical name or a short one (``imagenet/resnet50``)."""
        try:
            return self.workloads[self.aliases.get(name, name)]
        except KeyError:
            short = sorted(a for a in self.aliases if "@" not in a)
            shown = ", ".join(short[:20]) + (f", ... ({len(short)} in all)" if len(short) > 20 else "")
            raise KeyError(
                f"unknown workload {name!r}; known: {shown} (exact: dataset/network@batch_size:optimizer)"
            ) from None

    def training_curves(self) -> dict[WorkloadKey, LimitCurve]:
        """Every training curve, by configuration."""
        return {w.key: w.curve for w in self.workloads.values() if isinstance(w, TrainingWorkload)}


@dataclass(frozen=True)
class Catalog:
    """Every simulated GPU model and the workloads it runs."""

    models: Mapping[str, SimGpuModel]
    workloads: Mapping[str, ModelWorkloads]

    def model(self, name: str) -> SimGpuModel:
        """Look a model up by name; raises ``KeyError`` listing the known ones."""
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"unknown simulated GPU model {name!r}; known: {', '.join(sorted(self.models))}") from None

    def workload(self, model: str, name: str | None = None) -> Workload:
        """The workload ``name`` on ``model``; ``None`` is the model's default workload."""
        spec = self.model(model)
        return self.workloads[model].resolve(spec.default_workload if name is None else name)

    def with_profiles(self, profiles: Iterable[str | Path]) -> Catalog:
        """This catalogue plus Zeus-format files that add GPU models or workloads, or replace curves.

        Each entry is ``path`` or ``MODEL=path``; see :func:`parse_profile_spec` for how a bare path
        names its model. A file replaces every curve of the ``dataset/network`` families it holds on
        that model (so their short names resolve within the new measurements) and adds the rest. A new
        model's constraints are its measured limits (minimum and maximum; default = maximum); its idle
        draw and clock range are placeholders (10 % of the maximum limit; 300-1500 MHz), and its default
        workload is ``imagenet/resnet50`` when the file has it, else the alphabetically first family.

        Raises:
            ProfileError: A file that cannot be read or parsed, named with the line at fault.
        """
        models = dict(self.models)
        workloads = dict(self.workloads)
        for entry in profiles:
            model_name, path = parse_profile_spec(entry, known=models)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ProfileError(f"{path}: cannot read the profile: {exc}") from exc
            curves = parse_zeus_csv(text, str(path))
            families = {k.family for k in curves}
            previous = workloads.get(model_name, ModelWorkloads({}))
            kept = {
                name: w
                for name, w in previous.workloads.items()
                if not (isinstance(w, TrainingWorkload) and w.key.family in families)
            }
            kept.update({str(k): TrainingWorkload(k, f"runtime profile: {path}", c) for k, c in curves.items()})
            stale = {a for a, target in previous.aliases.items() if target not in kept}
            aliases = {a: t for a, t in previous.aliases.items() if a not in stale}
            aliases.update(_training_aliases(ModelWorkloads(kept).training_curves()))
            workloads[model_name] = ModelWorkloads(kept, aliases)
            if model_name not in models:
                limits = [x for c in curves.values() for x in c.limits]
                default = "imagenet/resnet50" if "imagenet/resnet50" in families else min(families)
                top = max(limits)
                models[model_name] = SimGpuModel(
                    model_name, min(limits), top, top, round(0.1 * top, 1), 300, 1500, default_workload=default
                )
        return Catalog(models, workloads)


def _training_aliases(curves: Mapping[WorkloadKey, LimitCurve]) -> dict[str, str]:
    """``dataset/network`` → its default configuration; ``dataset/network@batch`` → that batch's default.

    For a batch size, the optimizer is the family default's when measured at that batch size, else the
    one measured at the most limits (ties alphabetical).
    """
    defaults = family_defaults(curves)
    aliases = {family: str(key) for family, key in defaults.items()}
    by_batch: dict[str, list[WorkloadKey]] = {}
    for key in curves:
        by_batch.setdefault(f"{key.family}@{key.batch_size}", []).append(key)
    for short, keys in by_batch.items():
        preferred = defaults[keys[0].family].optimizer
        chosen = min(keys, key=lambda k: (k.optimizer != preferred, -len(curves[k].limits), k.optimizer))
        aliases[short] = str(chosen)
    return aliases


def parse_profile_spec(entry: str | Path, *, known: Mapping[str, object] = MODELS) -> tuple[str, Path]:
    """Split a runtime profile entry into the GPU model it defines and its file.

    ``MODEL=path`` names the model explicitly (the part before ``=`` must not contain a path
    separator). A bare path names it by the last ``_``-separated word of the file name:
    ``summary_power_a100.csv`` and ``zeus_summary_power_a100.csv`` both define ``A100``. Names match
    known models case-insensitively and are upper-cased otherwise.

    Raises:
        ProfileError: An empty model name, or a file name without ``_`` and no ``MODEL=``.
    """
    text = str(entry).strip()
    head, sep, tail = text.partition("=")
    if sep and "/" not in head and "\\" not in head:
        if not head.strip() or not tail.strip():
            raise ProfileError(f"{text}: expected MODEL=path")
        return _canonical_model(head.strip(), known), Path(tail.strip())
    path = Path(text)
    stem = path.name.split(".", 1)[0]
    if "_" not in stem or not stem.rsplit("_", 1)[1]:
        raise ProfileError(
            f"{path}: cannot tell the GPU model from the file name (name it *_<model>.csv or write MODEL=path)"
        )
    return _canonical_model(stem.rsplit("_", 1)[1], known), path


def _canonical_model(name: str, known: Mapping[str, object]) -> str:
    for candidate in known:
        if candidate.lower() == name.lower():
            return candidate
    return name.upper()


def _data_text(name: str) -> str:
    return resources.files("wattplane.agent.gpu").joinpath("data", name).read_text(encoding="utf-8")


@cache
def builtin_catalog() -> Catalog:
    """The models and workloads calibrated from the packaged traces (parsed once per process)."""
    measured = {model: parse_zeus_csv(_data_text(file), file) for model, file in _ZEUS_FILES.items()}
    workloads: dict[str, ModelWorkloads] = {}
    for model, curves in measured.items():
        source = f"measured: {_ZEUS_FILES[model]}"
        workloads[model] = ModelWorkloads(
            {str(k): TrainingWorkload(k, source, c) for k, c in curves.items()}, _training_aliases(curves)
        )
    reference = MODELS[REFERENCE_MODEL]
    inference = parse_mlenergy_llm_csv(_data_text(_MLENERGY_FILE), _MLENERGY_FILE)
    shape_key = family_defaults(measured[REFERENCE_MODEL])[INFERENCE_SHAPE]
    shape = measured[REFERENCE_MODEL][shape_key]
    for model in ("H100", "B200"):
        spec = MODELS[model]
        curves = _extrapolated_training(spec, reference, measured[REFERENCE_MODEL])
        source = f"extrapolated (R3) from {REFERENCE_MODEL}: {_ZEUS_FILES[REFERENCE_MODEL]}"
        entries: dict[str, Workload] = {str(k): TrainingWorkload(k, source, c) for k, c in curves.items()}
        aliases = _training_aliases(curves)
        configs = inference.get(model, {})
        for config, points in configs.items():
            entries[str(config)] = InferenceWorkload(
                str(config),
                f"measured uncapped at {spec.default_watts:g} W: {_MLENERGY_FILE}; "
                f"under a cap (R4): {REFERENCE_MODEL} {shape_key}",
                points,
                shape,
                spec.idle_watts,
            )
        for config in sorted(configs, key=lambda c: (c.task, c.model_id, -c.num_gpus)):
            aliases[f"{config.task}/{config.model_id}"] = str(config)  # the fewest GPUs wins (sorted last)
        aliases["llm-inference"] = DEFAULT_INFERENCE
        workloads[model] = ModelWorkloads(entries, aliases)
    for model in MODELLED_MODELS:
        curves = _extrapolated_training(MODELS[model], reference, measured[REFERENCE_MODEL])
        source = (
            f"modelled (R3): the shape of {REFERENCE_MODEL} {_ZEUS_FILES[REFERENCE_MODEL]} scaled to {model}'s "
            "published limit and peak BF16; no measurement of this board"
        )
        workloads[model] = ModelWorkloads(
            {str(k): TrainingWorkload(k, source, c) for k, c in curves.items()}, _training_aliases(curves)
        )
    return Catalog(dict(MODELS), workloads)


def model_by_name(name: str) -> SimGpuModel:
    """Look a built-in model up by name; raises ``KeyError`` listing the known ones."""
    return builtin_catalog().model(name)


def catalog_with(profiles: Sequence[str | Path]) -> Catalog:
    """The built-in catalogue, plus runtime profiles when there are any."""
    return builtin_catalog().with_profiles(profiles) if profiles else builtin_catalog()
