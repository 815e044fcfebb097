"""The simulated fleet's shape: node groups from ``64x8xA40`` or a YAML list.

Short form: ``NODESxGPUSxMODEL``, several groups joined with ``+`` or ``,`` (``32x8xA40+16x4xV100``).
YAML form: a list of groups ``{nodes, gpusPerNode, model, namePrefix?, labels?, gpusPerRack?}``; node
labels feed budget ``nodeSelector``s, and every node also carries ``wattplane.io/rack`` (nodes are
racked eight at a time unless ``nodesPerRack`` says otherwise) and ``nvidia.com/gpu.product``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RACK_LABEL = "wattplane.io/rack"
PRODUCT_LABEL = "nvidia.com/gpu.product"
_SHORT = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*([A-Za-z0-9_.-]+)\s*$")


@dataclass(frozen=True)
class NodeGroup:
    """``nodes`` identical nodes with ``gpus_per_node`` boards of ``model``."""

    nodes: int
    gpus_per_node: int
    model: str
    name_prefix: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    nodes_per_rack: int = 8


@dataclass(frozen=True)
class SimNode:
    """One node of the expanded fleet."""

    name: str
    model: str
    gpus: int
    labels: Mapping[str, str]


def parse_fleet(text: str) -> tuple[NodeGroup, ...]:
    """Parse the short form, or YAML when ``text`` names an existing file.

    Raises:
        ValueError: Neither form, or a group with no nodes or GPUs.
    """
    path = Path(text)
    if not _SHORT.match(text.split("+")[0].split(",")[0]) and path.is_file():
        return _from_yaml(yaml.safe_load(path.read_text()), str(path))
    groups = []
    for part in re.split(r"[+,]", text):
        match = _SHORT.match(part)
        if match is None:
            raise ValueError(f"fleet {text!r}: expected NODESxGPUSxMODEL (e.g. 64x8xA40) or a YAML file")
        groups.append(NodeGroup(int(match.group(1)), int(match.group(2)), match.group(3)))
    return _checked(tuple(groups), text)


def _from_yaml(raw: Any, where: str) -> tuple[NodeGroup, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: a fleet file is a YAML list of node groups")
    groups = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: group {i} is not a mapping")
        try:
            groups.append(
                NodeGroup(
                    nodes=int(item["nodes"]),
                    gpus_per_node=int(item["gpusPerNode"]),
                    model=str(item["model"]),
                    name_prefix=str(item.get("namePrefix", "")),
                    labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                    nodes_per_rack=int(item.get("nodesPerRack", 8)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: group {i}: {exc!r} (needs nodes, gpusPerNode, model)") from None
    return _checked(tuple(groups), where)


def _checked(groups: tuple[NodeGroup, ...], where: str) -> tuple[NodeGroup, ...]:
    if not groups:
        raise ValueError(f"fleet {where!r} has no node groups")
    for g in groups:
        if g.nodes < 1 or g.gpus_per_node < 1 or g.nodes_per_rack < 1:
            raise ValueError(f"fleet {where!r}: every group needs at least one node, GPU and node per rack")
    return groups


def expand(groups: tuple[NodeGroup, ...]) -> tuple[SimNode, ...]:
    """One :class:`SimNode` per node, named ``<prefix or model>-<n>``, unique across groups."""
    nodes: list[SimNode] = []
    seen: dict[str, int] = {}
    rack = 0
    for group in groups:
        prefix = group.name_prefix or group.model.lower()
        start = seen.get(prefix, 0)
        for i in range(group.nodes):
            if i % group.nodes_per_rack == 0 and (i or nodes):
                rack += 1
            labels = {RACK_LABEL: f"rack-{rack}", PRODUCT_LABEL: group.model, **group.labels}
            nodes.append(SimNode(f"{prefix}-{start + i:03d}", group.model, group.gpus_per_node, labels))
        seen[prefix] = start + group.nodes
    return tuple(nodes)


def nameplate_watts(nodes: tuple[SimNode, ...], max_watts: Mapping[str, float]) -> float:
    """Sum of every board's maximum power limit: the fleet's nameplate GPU power."""
    return sum(n.gpus * max_watts[n.model] for n in nodes)
