"""Runtime power profiles: a Zeus-format file defines new simulated GPU models or replaces workloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from wattplane.agent.__main__ import make_backend
from wattplane.agent.gpu.simmodels import builtin_catalog, parse_profile_spec
from wattplane.agent.gpu.simulated import SimulatedBackend
from wattplane.agent.gpu.workloads import ZEUS_COLUMNS, ProfileError, TrainingWorkload
from wattplane.agent.settings import AgentSettings

HEADER = ",".join(ZEUS_COLUMNS)
#: A made-up sweep: (limit, seconds per epoch, watts) for imagenet/resnet50 at batch 512.
SWEEP = [(150, 900.0, 148.0), (250, 500.0, 240.0), (400, 410.0, 330.0)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_profile(
    path: Path, rows: list[tuple[float, float, float]] = SWEEP, family: str = "imagenet,resnet50"
) -> Path:
    path.write_text("\n".join([HEADER, *(f"{family},512,sgd,{x},{t},{p}" for x, t, p in rows)]) + "\n")
    return path


def test_a_profile_named_after_a_new_model_defines_it(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "summary_power_a100.csv")
    clock = Clock()
    backend = SimulatedBackend(node_name="n", gpu_count=2, model="A100", profiles=[profile], clock=clock)
    gpu = backend.devices()[0]
    assert gpu.identity.model == "A100"
    limits = gpu.constraints()
    assert (limits.min_watts, limits.max_watts, limits.default_watts) == (150.0, 400.0, 400.0)
    assert gpu.workload.name == "imagenet/resnet50@512:sgd"
    gpu.set_load(1.0)
    gpu.set_power_limit_watts(250)
    clock.now += 1000
    assert gpu.read().power_watts == pytest.approx(240.0)
    assert gpu.progress_units() == pytest.approx(1000 / 500.0)
    gpu.set_power_limit_watts(200)  # halfway between two measured limits
    assert gpu.read().power_watts == pytest.approx((148.0 + 240.0) / 2)


def test_model_equals_path_overrides_a_built_in_family_and_keeps_the_rest(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "mine.csv", rows=[(100, 7000.0, 99.0), (300, 3000.0, 250.0)])
    backend = SimulatedBackend(node_name="n", gpu_count=1, model="A40", profiles=[f"a40={profile}"], clock=Clock())
    gpu = backend.devices()[0]
    assert gpu.constraints().max_watts == 300.0  # a known model keeps its published constraints
    workload = gpu.workload
    assert isinstance(workload, TrainingWorkload)
    assert workload.name == "imagenet/resnet50@512:sgd"
    assert "mine.csv" in workload.source
    assert workload.curve.power(200) == pytest.approx((99.0 + 250.0) / 2)
    with pytest.raises(KeyError):
        gpu.set_workload("imagenet/resnet50@256:adadelta")  # the whole family was replaced
    gpu.set_workload("squad/bert_base_uncased")  # other families are still the Zeus ones
    assert "zeus_summary_power_a40.csv" in gpu.workload.source
    # The built-in catalogue itself is untouched.
    assert builtin_catalog().workload("A40").name == "imagenet/resnet50@256:adadelta"


def test_a_profile_can_add_workloads_to_an_extrapolated_model(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "x_h100.csv", rows=[(200, 100.0, 190.0), (700, 40.0, 600.0)], family="toy,net")
    backend = SimulatedBackend(node_name="n", gpu_count=1, model="H100", profiles=[profile], clock=Clock())
    gpu = backend.devices()[0]
    gpu.set_workload("toy/net")
    gpu.set_load(1.0)
    assert gpu.read().power_watts == pytest.approx(600.0)
    gpu.set_workload("llm-inference")  # measured inference stays available
    assert gpu.workload.kind == "inference"


@pytest.mark.parametrize(
    ("entry", "model", "name"),
    [
        ("summary_power_a100.csv", "A100", "summary_power_a100.csv"),
        ("/data/zeus_summary_power_v100.csv", "V100", "zeus_summary_power_v100.csv"),
        ("sweep_rtx6000.csv.gz", "RTX6000", "sweep_rtx6000.csv.gz"),
        ("L40S=/data/sweep.csv", "L40S", "sweep.csv"),
        ("h100=/data/sweep.csv", "H100", "sweep.csv"),
        (" B200 = /data/x.csv ", "B200", "x.csv"),
        ("/data/a=b/sweep_l4.csv", "L4", "sweep_l4.csv"),
    ],
)
def test_profile_entries_name_their_model(entry: str, model: str, name: str) -> None:
    got_model, path = parse_profile_spec(entry)
    assert (got_model, path.name) == (model, name)


@pytest.mark.parametrize("entry", ["sweep.csv", "/data/profile.csv", "=x.csv", "A100="])
def test_an_entry_that_names_no_model_is_refused(entry: str) -> None:
    with pytest.raises(ProfileError, match="MODEL=path"):
        parse_profile_spec(entry)


def test_a_bad_profile_is_refused_at_startup_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "summary_power_a100.csv"
    bad.write_text(f"{HEADER}\nimagenet,resnet50,512,sgd,150,900,148\nimagenet,resnet50,512,sgd,250,fast,240\n")
    with pytest.raises(ProfileError, match=rf"^{bad}:3: time_per_epoch is not a number"):
        SimulatedBackend(node_name="n", model="A100", profiles=[bad])


def test_a_missing_profile_is_refused_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "summary_power_a100.csv"
    with pytest.raises(ProfileError, match=rf"^{missing}: cannot read"):
        SimulatedBackend(node_name="n", model="A100", profiles=[missing])


def test_a_state_file_naming_a_workload_that_is_gone_falls_back_to_the_default(tmp_path: Path) -> None:
    profile = write_profile(tmp_path / "summary_power_a100.csv")
    extra = write_profile(tmp_path / "other_a100.csv", family="toy,net")
    state, clock = tmp_path / "sim.json", Clock()
    gpu = SimulatedBackend(
        node_name="n", gpu_count=1, model="A100", profiles=[profile, extra], state_file=state, clock=clock
    ).devices()[0]
    gpu.set_workload("toy/net")
    again = SimulatedBackend(node_name="n", gpu_count=1, model="A100", profiles=[profile], state_file=state)
    assert again.devices()[0].workload.name == "imagenet/resnet50@512:sgd"


def test_the_agent_setting_is_a_comma_separated_list_wired_into_the_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_profile(tmp_path / "summary_power_a100.csv")
    second = write_profile(tmp_path / "extra.csv", family="toy,net")
    monkeypatch.setenv("WATTPLANE_AGENT_SIM_PROFILES", f" {first} , A100={second} ")
    monkeypatch.setenv("WATTPLANE_AGENT_SIM_MODEL", "A100")
    settings = AgentSettings(node_name="n", backend="sim", sim_gpu_count=1)
    assert settings.sim_profiles == (str(first), f"A100={second}")
    backend = make_backend(settings)
    assert isinstance(backend, SimulatedBackend)
    gpu = backend.devices()[0]
    assert gpu.identity.model == "A100"
    gpu.set_workload("toy/net")
    assert AgentSettings(node_name="n").sim_profiles == (str(first), f"A100={second}")
    monkeypatch.delenv("WATTPLANE_AGENT_SIM_PROFILES")
    assert AgentSettings(node_name="n").sim_profiles == ()
