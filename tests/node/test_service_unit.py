"""The systemd unit the README shows is one systemd accepts, with the hardening it claims."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import REPO

INSTALLED = "/opt/shopnode/bin/shopnode"


def readme_unit() -> str:
    [unit] = re.findall(r"```ini\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return unit


def test_the_readme_unit_is_hardened_and_restarts_on_failure():
    settings = dict(line.split("=", 1) for line in readme_unit().splitlines() if "=" in line)
    assert settings["ExecStart"] == f"{INSTALLED} serve"
    assert settings["User"] == "shopnode" and settings["Restart"] == "on-failure"
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert settings["PrivateTmp"] == "yes"
    assert "/var/lib/shopnode" in settings["ReadWritePaths"].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_readme_unit(tmp_path: Path):
    shopnode = Path(sys.executable).parent / "shopnode"  # verify wants an existing program
    if not shopnode.exists():
        pytest.skip("the shopnode console script is not installed beside this python")
    unit = tmp_path / "shopnode.service"
    unit.write_text(readme_unit().replace(INSTALLED, str(shopnode)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "shopnode.service" not in done.stderr, done.stderr
