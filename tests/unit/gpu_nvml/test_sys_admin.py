"""has_sys_admin reads CapEff bit 21 so the agent can warn once that writes will fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from wattplane.agent.gpu.nvml import has_sys_admin

STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t{cap}\nCapEff:\t{cap}\nCapBnd:\t000001ffffffffff\n"


@pytest.mark.parametrize(
    ("cap", "expected"),
    [
        ("000001ffffffffff", True),  # full root
        ("0000000000200000", True),  # only CAP_SYS_ADMIN
        ("00000000a80425fb", False),  # Docker's default set: no SYS_ADMIN
        ("0000000000000000", False),  # unprivileged user
    ],
)
def test_reads_bit_21(tmp_path: Path, cap: str, expected: bool) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS.format(cap=cap))
    assert has_sys_admin(str(status)) is expected


def test_missing_or_garbled_file_means_no(tmp_path: Path) -> None:
    assert has_sys_admin(str(tmp_path / "absent")) is False
    garbled = tmp_path / "garbled"
    garbled.write_text("CapEff:\tnot-hex\n")
    assert has_sys_admin(str(garbled)) is False
    no_line = tmp_path / "no_line"
    no_line.write_text("Name:\tx\n")
    assert has_sys_admin(str(no_line)) is False


def test_this_process_can_be_checked() -> None:
    assert isinstance(has_sys_admin(), bool)
