"""The agent process never loads kubernetes_asyncio, nor lightkube's models of kinds it does not use.

kubernetes_asyncio's generated models cost ~36 MiB on every GPU node. The agent's client is lightkube
(bench/agent_client_rss.py: both clients measured), whose models load per API group: the agent's
footprint stays under its 80 MiB goal only while it loads the few groups its calls need.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
#: What ``wattplane-agent`` loads: its entry point and every module it wires together.
AGENT_MODULES = [
    "wattplane.agent.__main__",
    "wattplane.agent.kube",
    "wattplane.agent.loop",
    "wattplane.agent.attribution",
    "wattplane.agent.podmap",
    "wattplane.agent.gpu.simulated",
]


def _modules_after_importing(modules: list[str]) -> set[str]:
    code = "import importlib, json, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(json.dumps(sorted(sys.modules)))\n"
    paths = [str(REPO / "operator"), str(REPO / "agent")]
    env_code = f"import sys; sys.path[:0] = {paths!r}\n" + code
    result = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(result.stdout))


def test_the_agent_entry_modules_do_not_import_kubernetes_asyncio() -> None:
    loaded = _modules_after_importing(AGENT_MODULES)
    assert "wattplane.agent.kube" in loaded and "lightkube" in loaded, "the probe imported the agent"
    assert not {m for m in loaded if m.split(".")[0] == "kubernetes_asyncio"}
    assert "wattplane.kube.client" not in loaded, "the operator's client loader pulls kubernetes_asyncio in"


def test_the_probe_would_notice_kubernetes_asyncio() -> None:
    # The same probe sees it when something does import it (the operator's shared loader does).
    assert "kubernetes_asyncio" in _modules_after_importing(["wattplane.kube.client"])


def test_lightkube_loads_only_the_model_groups_the_agent_calls_need() -> None:
    loaded = _modules_after_importing(AGENT_MODULES)
    groups = {m.rsplit(".", 1)[1] for m in loaded if m.startswith("lightkube.models.") and m.count(".") == 2}
    assert "core_v1" in groups, "Node and Pod come from the core group"
    assert not groups & {"apps_v1", "batch_v1", "networking_v1", "rbac_v1", "storage_v1"}, sorted(groups)
    assert len(groups) <= 12, f"lightkube loaded {len(groups)} model groups: {sorted(groups)}"
