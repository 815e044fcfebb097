"""The committed gRPC modules match the proto, import as package modules, and keep upstream numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from wattplane.agent.podresources import podresources_pb2 as pb
from wattplane.agent.podresources import podresources_pb2_grpc as pb_grpc

PACKAGE_DIR = Path(pb.__file__).parent
GENERATED = ("podresources_pb2.py", "podresources_pb2.pyi", "podresources_pb2_grpc.py")


def test_committed_modules_are_what_regenerate_sh_produces(tmp_path: Path) -> None:
    subprocess.run(
        [str(PACKAGE_DIR / "regenerate.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable},
    )

    for name in GENERATED:
        fresh = (tmp_path / "wattplane" / "agent" / "podresources" / name).read_text()
        assert fresh == (PACKAGE_DIR / name).read_text(), f"{name} is stale: run {PACKAGE_DIR}/regenerate.sh"


def test_grpc_module_imports_its_sibling_through_the_package() -> None:
    source = (PACKAGE_DIR / "podresources_pb2_grpc.py").read_text()

    assert "from wattplane.agent.podresources import podresources_pb2 as" in source
    assert pb_grpc.PodResourcesListerStub.__module__ == "wattplane.agent.podresources.podresources_pb2_grpc"


def test_method_path_is_the_kubelets() -> None:
    service = pb.DESCRIPTOR.services_by_name["PodResourcesLister"]

    assert service.full_name == "v1.PodResourcesLister"
    assert [m.name for m in service.methods] == ["List"]


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("ListPodResourcesResponse", {"pod_resources": 1}),
        ("PodResources", {"name": 1, "namespace": 2, "containers": 3}),
        ("ContainerResources", {"name": 1, "devices": 2}),
        ("ContainerDevices", {"resource_name": 1, "device_ids": 2}),
    ],
)
def test_field_numbers_match_upstream(message: str, fields: dict[str, int]) -> None:
    # Numbers from k8s.io/kubelet pkg/apis/podresources/v1/api.proto; a change here breaks real kubelets.
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]

    assert descriptor.full_name == f"v1.{message}"
    assert {f.name: f.number for f in descriptor.fields} == fields
