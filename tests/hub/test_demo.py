"""`elastic-spawner demo` (the README's first command) runs and verifies its own migration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub.conftest import HAVE_CHP

pytestmark = [pytest.mark.hub, pytest.mark.slow]


@pytest.mark.timeout(900)
def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    exe = Path(sys.executable).with_name("elastic-spawner")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "elastic_spawner.cli"]
    env = dict(os.environ, COLUMNS="160", TERM="dumb")
    proc = subprocess.run([*cmd, "demo", "--dir", str(tmp_path / "demo")], env=env,
                          capture_output=True, text=True, timeout=840)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "VERIFIED:" in out and "all equal" in out, out
    assert "node node-a -> node-b" in out, out
    # everything it started is gone: no process still runs in the demo directory
    leftovers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(tmp_path / "demo") in os.readlink(f"/proc/{pid}/cwd"):
                leftovers.append(pid)
        except OSError:
            continue
    assert not leftovers, leftovers
