"""`elastic-spawner demo` (the README's first command) runs and verifies its own migration."""

from __future__ import annotations

import json
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
    proc = _demo("--dir", str(tmp_path / "demo"))
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


def _demo(*args: str, timeout: float = 840) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("elastic-spawner")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "elastic_spawner.cli"]
    env = dict(os.environ, COLUMNS="160", TERM="dumb")
    return subprocess.run([*cmd, "demo", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _notebook(path: Path, cells: list[str], language: str = "python") -> Path:
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "k", "display_name": "k", "language": language}},
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# a user's notebook"]}]
        + [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
           for c in cells],
    }))
    return path


@pytest.mark.timeout(900)
def test_demo_migrates_a_notebook_of_the_users_with_the_files_it_reads(tmp_path: Path) -> None:
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    data = tmp_path / "inputs"
    data.mkdir()
    (data / "params.json").write_text('{"seed": 3, "n": 5000}')
    nb = _notebook(tmp_path / "mine.ipynb", [
        "import json\nwith open('inputs/params.json') as f:\n    params = json.load(f)",
        "import numpy as np\nrng = np.random.default_rng(params['seed'])\ndata = rng.random(params['n'])",
        "window = data[100:200]\nsummary = {'mean': float(data.mean()), 'window': window}",
        "   \n",  # empty cells are skipped, as Jupyter's "run all" does
        "history = [summary, summary]\nwindow *= 2",
    ])
    proc = _demo("--dir", str(tmp_path / "demo"), "--notebook", str(nb), "--with", str(data))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Run mine.ipynb (4 cells)" in out, out
    assert "VERIFIED:" in out and "all equal" in out, out
    assert "Agent's own check of mine.ipynb" in out and "variables verified" in out, out
    assert "failed" not in out.split("Timings")[1], out  # both baselines ran the notebook too


def test_demo_refuses_a_notebook_it_cannot_run_before_starting_anything(tmp_path: Path) -> None:
    r_nb = _notebook(tmp_path / "stats.ipynb", ["x <- 1"], language="R")
    (tmp_path / "notes.ipynb").write_text("not json")
    cases = {
        ("--notebook", str(tmp_path / "missing.ipynb")): "no such file",
        ("--notebook", str(tmp_path / "notes.ipynb")): "not a notebook",
        ("--notebook", str(r_nb)): "its language is R",
        ("--with", str(tmp_path)): "only with --notebook",
        ("--notebook", str(_notebook(tmp_path / "blank.ipynb", ["  "]))): "no code cells",
        ("--notebook", str(_notebook(tmp_path / "ok.ipynb", ["x = 1"])),
         "--with", str(tmp_path / "absent.csv")): "absent.csv: no such file",
    }
    for args, message in cases.items():
        proc = _demo("--dir", str(tmp_path / "demo"), *args, timeout=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "demo").exists()  # refused before the demo directory was made


@pytest.mark.timeout(900)
def test_demo_stops_with_the_failing_cell_of_a_notebook_that_does_not_run(tmp_path: Path) -> None:
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    nb = _notebook(tmp_path / "mine.ipynb", ["x = 1", "import json\njson.load(open('missing.json'))"])
    proc = _demo("--dir", str(tmp_path / "demo"), "--notebook", str(nb))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "code cell 2 of mine.ipynb failed (FileNotFoundError" in out, out
    assert "--with" in out, out
