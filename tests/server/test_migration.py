"""A server's notebooks survive a stop and a start elsewhere: same paths, same kernels, variables back.

Server A runs cells in two notebooks (sessions API), is checkpointed through the REST API and
stopped (SIGTERM, as a pod stop). Server B, on another root directory, starts with the pointer in
``ELASTIC_RESTORE_FROM``; it recreates both sessions at the same paths with the same kernel spec,
restores each kernel, and reports progress in ``api/elastic/status``.

Two engines: the real one (``kernel_agent.checkpoint``/``restore``), and a minimal fake installed
only through the test servers' IPython startup file, which pins the server-side plumbing (store
layout, manifest, sessions) independently of the engine.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from kernel_agent.server.pointer import parse_pointer
from tests.server.conftest import Server

ENGINE_LANDED = all(
    importlib.util.find_spec(m) is not None
    for m in ("kernel_agent.extension", "kernel_agent.monitor", "kernel_agent.store")
)

# Replaces kernel_agent.checkpoint/restore in the test servers' kernels with a JSON dump of the
# user's plain variables: enough to prove which kernel store, checkpoint id and session the
# server passes around. Never installed in the package.
FAKE_ENGINE = r'''
def _install_fake_engine():
    import json, os, secrets, kernel_agent
    from urllib.parse import urlsplit
    shell = get_ipython()
    baseline = set(shell.user_ns) | {"_install_fake_engine"}

    def checkpoint(url, **options):
        data = {k: v for k, v in shell.user_ns.items()
                if k not in baseline and not k.startswith("_") and isinstance(v, (int, float, str, list, dict))}
        cid = secrets.token_hex(4)
        d = urlsplit(url).path
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, cid + ".json"), "w") as f:
            json.dump(data, f)
        return {"checkpoint_id": cid, "url": url, "variables": sorted(data), "options": sorted(options)}

    def restore(url, checkpoint_id=None, **options):
        with open(os.path.join(urlsplit(url).path, checkpoint_id + ".json")) as f:
            data = json.load(f)
        shell.user_ns.update(data)
        return {"checkpoint_id": checkpoint_id, "verified": True, "loaded": sorted(data)}

    kernel_agent.checkpoint, kernel_agent.restore = checkpoint, restore

_install_fake_engine()
del _install_fake_engine
'''

NOTEBOOKS = {
    "analysis/one.ipynb": ["x = 41", "x += 1", "words = ['a', 'b'] * 2"],
    "two.ipynb": ["import math", "y = {'r': 3}", "area = round(math.pi * y['r'] ** 2, 3)"],
}
EXPECTED = {
    "analysis/one.ipynb": {"x": 42, "words": ["a", "b", "a", "b"]},
    "two.ipynb": {"y": {"r": 3}, "area": 28.274},
}


@pytest.fixture(params=[
    "fake engine",
    pytest.param("real engine", marks=pytest.mark.skipif(
        not ENGINE_LANDED, reason="the in-kernel engine (kernel_agent.extension/monitor/store) has not landed")),
])
def engine(request) -> str | None:
    """IPython startup code for the servers' kernels: the fake engine, or nothing (real one)."""
    return FAKE_ENGINE if request.param == "fake engine" else None


def _make_notebooks(root: Path) -> None:
    for path in NOTEBOOKS:
        nb = root / path
        nb.parent.mkdir(parents=True, exist_ok=True)
        nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


def _run_notebooks(server: Server) -> None:
    for path, cells in NOTEBOOKS.items():
        kid = server.create_session(path)["kernel"]["id"]
        with server.attach(kid) as k:
            for cell in cells:
                k.ok(cell)


@pytest.mark.slow
def test_both_notebooks_come_back_at_the_same_paths_on_a_new_server(
    start_server, store_url: str, tmp_path: Path, engine: str | None
) -> None:
    _make_notebooks(tmp_path / "node-a")
    a = start_server(name="a", root_dir=tmp_path / "node-a", env={"ELASTIC_STORE_URL": store_url},
                     ipython_startup=engine)
    _run_notebooks(a)

    r = a.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["complete"] is True, body
    assert sorted(k["path"] for k in body["kernels"]) == sorted(NOTEBOOKS)
    assert all(k["status"] == "ok" and k["kernel_name"] == "python3" for k in body["kernels"])
    pointer = body["checkpoint"]
    assert parse_pointer(pointer).store_url == store_url
    a.stop()

    # "another node": a copy of the user's files on a different root directory
    shutil.copytree(tmp_path / "node-a", tmp_path / "node-b")
    b = start_server(name="b", root_dir=tmp_path / "node-b",
                     env={"ELASTIC_STORE_URL": store_url, "ELASTIC_RESTORE_FROM": pointer},
                     ipython_startup=engine)
    st = b.wait_restore()
    assert st["restore"]["state"] == "done", json.dumps(st, indent=1)
    assert st["restore"]["progress"][-1]["progress"] == 100
    assert sorted(k["path"] for k in st["restore"]["kernels"]) == sorted(NOTEBOOKS)

    sessions = b.sessions()
    assert sorted(sessions) == sorted(NOTEBOOKS)
    for path, expected in EXPECTED.items():
        assert sessions[path]["kernel"]["name"] == "python3"
        assert sessions[path]["type"] == "notebook"
        with b.attach(sessions[path]["kernel"]["id"]) as k:
            assert {name: k.value(name) for name in expected} == expected


@pytest.mark.slow
def test_restore_through_the_api_after_the_kernels_were_shut_down(
    start_server, store_url: str, tmp_path: Path, engine: str | None
) -> None:
    _make_notebooks(tmp_path / "notebooks")
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=engine)
    _run_notebooks(s)
    # a deadline reaches the engine's planner (deadline_s) and bounds the request
    r = s.post("api/elastic/checkpoint", json={"deadline": 120, "busy_timeout": 5})
    assert r.status_code == 200 and r.json()["complete"], r.text
    pointer = r.json()["checkpoint"]
    for session in s.sessions().values():
        assert s.request("DELETE", f"api/sessions/{session['id']}").status_code == 204

    r = s.post("api/elastic/restore", json={"checkpoint": pointer})

    assert r.status_code == 202, r.text
    st = s.wait_restore()
    assert st["restore"]["state"] == "done", json.dumps(st, indent=1)
    sessions = s.sessions()
    for path, expected in EXPECTED.items():
        with s.attach(sessions[path]["kernel"]["id"]) as k:
            assert {name: k.value(name) for name in expected} == expected
