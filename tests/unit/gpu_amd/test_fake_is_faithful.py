"""The fake matches amdsmi 7.0.2 where the backend depends on it, checked against the installed wheel's sources.

The real package cannot be imported without ROCm's libamd_smi.so, so its sources are parsed instead:
status codes, exception classes, enum values, function signatures and the keys of the dicts it returns.
The last tests do import it, to show the backend fails cleanly when the native library is missing.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from enum import IntEnum
from pathlib import Path
from types import SimpleNamespace

import fake_amdsmi
import pytest
from wattplane.agent.gpu import amd
from wattplane.agent.gpu.amd import AmdSmiBackend, load_amdsmi
from wattplane.agent.gpu.errors import GpuDriverError
from wattplane.agent.podresources.model import pci_address_key


def _package_dir() -> Path:
    spec = importlib.util.find_spec("amdsmi")
    assert spec is not None and spec.submodule_search_locations, "amdsmi (test dependency) is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


PACKAGE = _package_dir()
WRAPPER = ast.parse((PACKAGE / "amdsmi_wrapper.py").read_text())
INTERFACE = ast.parse((PACKAGE / "amdsmi_interface.py").read_text())
EXCEPTIONS = ast.parse((PACKAGE / "amdsmi_exception.py").read_text())
INIT_SOURCE = (PACKAGE / "__init__.py").read_text()

CONSTANTS = {
    node.targets[0].id: node.value.value
    for node in WRAPPER.body
    if isinstance(node, ast.Assign)
    and isinstance(node.targets[0], ast.Name)
    and isinstance(node.value, ast.Constant)
    and isinstance(node.value.value, int)
}
FUNCTIONS = {node.name: node for node in INTERFACE.body if isinstance(node, ast.FunctionDef)}
CLASSES = {node.name: node for node in INTERFACE.body if isinstance(node, ast.ClassDef)}
FAKE_FUNCTIONS = sorted(n for n in dir(fake_amdsmi.FakeAmdSmi) if n.startswith("amdsmi_"))
BACKEND_FUNCTIONS = sorted(set(re.findall(r"\.(amdsmi_[a-z_]+)\(", Path(amd.__file__).read_text())))


def test_status_codes_are_the_librarys() -> None:
    fake_codes = {n: v for n, v in vars(fake_amdsmi).items() if n.startswith("AMDSMI_STATUS_")}
    assert len(fake_codes) > 15
    for name, value in fake_codes.items():
        assert CONSTANTS[name] == value, name


def test_backend_table_uses_the_librarys_codes() -> None:
    names = {v: n for n, v in CONSTANTS.items() if n.startswith("AMDSMI_STATUS_")}
    for code in amd.AMDSMI_ERROR_MAP:
        assert code in names, code
    assert names[amd._NO_PERM] == "AMDSMI_STATUS_NO_PERM"
    assert names[amd._NOT_SUPPORTED] == "AMDSMI_STATUS_NOT_SUPPORTED"
    assert names[amd._INVAL] == "AMDSMI_STATUS_INVAL"


def test_exception_classes_have_the_librarys_names_and_bases() -> None:
    real = {
        node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
        for node in EXCEPTIONS.body
        if isinstance(node, ast.ClassDef) and node.name.startswith("AmdSmi") and node.name.endswith("Exception")
    }
    assert "AmdSmiLibraryException" in real
    for name, bases in real.items():
        fake_class = getattr(fake_amdsmi, name)
        assert [b.__name__ for b in fake_class.__bases__] == bases, name
        assert getattr(fake_amdsmi.FakeAmdSmi, name) is fake_class
        assert f"import {name}\n" in INIT_SOURCE, name  # exported at the top level, where the backend looks


def test_library_exception_stores_the_absolute_code_like_the_library() -> None:
    init = next(
        n for n in ast.walk(EXCEPTIONS) if isinstance(n, ast.FunctionDef) and n.name == "__init__"
    )  # AmdSmiLibraryException.__init__ comes first
    assert "abs(err_code)" in ast.unparse(init)
    err = fake_amdsmi.AmdSmiLibraryException(-10)
    assert (err.err_code, err.get_error_code(), err.get_error_info(detailed=False)) == (10, 10, "AMDSMI_STATUS_NO_PERM")


@pytest.mark.parametrize(
    "enum_name",
    ["AmdSmiInitFlags", "AmdSmiClkType", "AmdSmiTemperatureMetric", "AmdSmiDevPerfLevel", "AmdSmiTemperatureType"],
)
def test_enum_members_have_the_librarys_values(enum_name: str) -> None:
    real = {}
    for stmt in CLASSES[enum_name].body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Attribute):
            real[stmt.targets[0].id] = CONSTANTS[stmt.value.attr]  # type: ignore[attr-defined]
    fake_enum: type[IntEnum] = getattr(fake_amdsmi, enum_name)
    assert fake_enum.__members__  # every fake member exists in the library, with its value
    for member, value in fake_enum.__members__.items():
        assert real[member] == value.value, f"{enum_name}.{member}"


@pytest.mark.parametrize("name", FAKE_FUNCTIONS)
def test_signatures_match_the_library(name: str) -> None:
    real = FUNCTIONS[name].args
    fake = [p for p in inspect.signature(getattr(fake_amdsmi.FakeAmdSmi, name)).parameters.values() if p.name != "self"]
    assert [p.name for p in fake] == [a.arg for a in real.args], name
    real_defaults = [ast.unparse(d) for d in real.defaults]
    fake_defaults = [f"{type(p.default).__name__}.{p.default.name}" for p in fake if p.default is not p.empty]
    assert fake_defaults == real_defaults, name
    assert f"import {name}\n" in INIT_SOURCE, name


@pytest.mark.parametrize(
    "name",
    [
        "amdsmi_get_power_cap_info",
        "amdsmi_get_power_info",
        "amdsmi_get_energy_count",
        "amdsmi_get_clock_info",
        "amdsmi_get_gpu_activity",
        "amdsmi_get_gpu_driver_info",
        "amdsmi_get_gpu_asic_info",
        "amdsmi_get_lib_version",
    ],
)
def test_returned_dicts_have_the_librarys_keys(name: str, backend: AmdSmiBackend, fake: fake_amdsmi.FakeAmdSmi) -> None:
    source = ast.unparse(FUNCTIONS[name])
    real_keys = set(re.findall(r"""['"]([a-z_]+)['"]\s*:""", source))
    handle = backend.devices()[0]._handle
    call = getattr(fake, name)
    params = [p for p in inspect.signature(call).parameters if p != "self"]
    args: list[object] = [handle][: len(params)]
    if name == "amdsmi_get_clock_info":
        args.append(fake_amdsmi.AmdSmiClkType.GFX)
    assert set(call(*args)) == real_keys, name


def test_backend_calls_only_functions_the_library_and_the_fake_have() -> None:
    assert BACKEND_FUNCTIONS
    for name in BACKEND_FUNCTIONS:
        assert name in FUNCTIONS, name
        assert name in FAKE_FUNCTIONS, name


def test_pci_address_has_the_librarys_spelling(fake: fake_amdsmi.FakeAmdSmi) -> None:
    # Run the library's own formatter on the fake's numbers: the pod mapper matches these strings
    # against the AMD device plugin's ids (sysfs directory names), so their spelling matters.
    source = ast.get_source_segment((PACKAGE / "amdsmi_interface.py").read_text(), FUNCTIONS["_format_bdf"])
    assert source is not None
    namespace: dict[str, object] = {"amdsmi_wrapper": SimpleNamespace(amdsmi_bdf_t=object)}
    exec(source, namespace)
    format_bdf = namespace["_format_bdf"]
    assert callable(format_bdf)
    for gpu in fake.gpus:
        domain, bus, rest = gpu.bdf.split(":")
        device, function = rest.split(".")
        fields = SimpleNamespace(
            domain_number=int(domain, 16),
            bus_number=int(bus, 16),
            device_number=int(device, 16),
            function_number=int(function, 16),
        )
        assert format_bdf(SimpleNamespace(struct_amdsmi_bdf_t=fields)) == gpu.bdf
        assert pci_address_key(gpu.bdf) == gpu.bdf  # already the canonical (sysfs) form
    high = SimpleNamespace(domain_number=1, bus_number=0xC1, device_number=0x1F, function_number=7)
    assert format_bdf(SimpleNamespace(struct_amdsmi_bdf_t=high)) == "0001:c1:1f.7"


def test_power_cap_setter_takes_int_microwatts_in_the_library() -> None:
    source = ast.unparse(FUNCTIONS["amdsmi_set_power_cap"])
    assert "isinstance(cap, int)" in source and "c_uint64(cap)" in source


def test_real_package_without_rocm_is_a_driver_error(capsys: pytest.CaptureFixture[str]) -> None:
    if _libamd_smi_present():
        pytest.fail("this test expects a machine without libamd_smi.so (CI has none)")
    with pytest.raises(GpuDriverError, match=r"libamd_smi\.so"):
        load_amdsmi()
    assert capsys.readouterr().out == ""  # amdsmi's own print is captured, not sent to stdout
    assert "amdsmi" not in sys.modules
    with pytest.raises(GpuDriverError, match=r"libamd_smi\.so"):
        AmdSmiBackend()


def _libamd_smi_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libamd_smi.so")
    except OSError:
        return False
    return True
