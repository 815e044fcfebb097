"""Every setting is documented where people look: ``--help`` of both programs and docs/settings.md.

All three are rendered from the pydantic-settings models, so these tests fail when a field has no
description, when docs/settings.md was not regenerated, or when a flag stops reaching its setting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings
from wattplane.agent import __main__ as agent_main
from wattplane.agent.settings import FLAGS as AGENT_FLAGS
from wattplane.agent.settings import AgentSettings
from wattplane.api.settingsdoc import describe, flag_overrides
from wattplane.cli import settingsdoc
from wattplane.operator import __main__ as operator_main
from wattplane.operator.settings import FLAGS as OPERATOR_FLAGS
from wattplane.operator.settings import OperatorSettings

PROGRAMS = [
    ("wattplane.agent", AgentSettings, AGENT_FLAGS, "WATTPLANE_AGENT_"),
    ("wattplane.operator", OperatorSettings, OPERATOR_FLAGS, "WATTPLANE_OPERATOR_"),
]


def test_docs_settings_md_is_generated_from_the_models() -> None:
    assert settingsdoc.TARGET.read_text() == settingsdoc.render(), "run: python -m wattplane.cli.settingsdoc"
    assert settingsdoc.main(["--check"]) == 0


@pytest.mark.parametrize(("module", "model", "flags", "prefix"), PROGRAMS)
def test_help_lists_every_setting_with_variable_default_and_meaning(
    module: str, model: type[BaseSettings], flags: dict[str, str], prefix: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTPLANE_")} | {"COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    docs = describe(model, flags)
    assert {d.name for d in docs} == set(model.model_fields)
    for doc in docs:
        assert doc.env[0] == f"{prefix}{doc.name.upper()}"
        assert f"{' or '.join(doc.env)}" in text, doc.name
        assert f"default: {doc.default}" in text
        assert " ".join(doc.description.split()) in text, doc.name
        if doc.flag:
            assert doc.flag in text
    docs_md = settingsdoc.TARGET.read_text()
    assert all(f"`{doc.env[0]}`" in docs_md for doc in docs)


def test_agent_pod_mapper_and_its_auto_choice_are_documented() -> None:
    doc = next(d for d in describe(AgentSettings, AGENT_FLAGS) if d.name == "pod_mapper")
    assert (doc.default, doc.values, doc.flag) == ("auto", "auto | podresources | sim", "--pod-mapper")
    assert "sim`` with the sim backend" in doc.description


def test_flags_override_the_environment_and_unset_flags_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPLANE_AGENT_BACKEND", "sim")
    monkeypatch.setenv("WATTPLANE_AGENT_METRICS_PORT", "9500")
    docs = describe(AgentSettings, AGENT_FLAGS)
    args = agent_main.build_parser().parse_args(["--node", "n1", "--metrics-port", "9600", "--log-level", "debug"])
    settings = AgentSettings(**flag_overrides(args, docs))
    assert (settings.node_name, settings.backend, settings.metrics_port, settings.log_level) == (
        "n1",
        "sim",
        9600,
        "DEBUG",
    )
    assert settings.effective_pod_mapper() == "sim"
    assert AgentSettings(backend="nvml").effective_pod_mapper() == "podresources"
    assert AgentSettings(backend="sim", pod_mapper="podresources").effective_pod_mapper() == "podresources"
    op = operator_main.build_parser().parse_args(["--liveness", "http://0.0.0.0:8080/healthz"])
    assert flag_overrides(op, describe(OperatorSettings, OPERATOR_FLAGS)) == {
        "liveness_endpoint": "http://0.0.0.0:8080/healthz"
    }


def test_a_bad_variable_stops_the_agent_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTPLANE_")} | {"WATTPLANE_AGENT_TICK_S": "99"}
    done = subprocess.run(
        [sys.executable, "-m", "wattplane.agent", "--node", "n1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("wattplane-agent: error: invalid settings: WATTPLANE_AGENT_TICK_S:"), done.stderr
    assert "'99'" in last
