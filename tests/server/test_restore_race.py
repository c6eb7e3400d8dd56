"""A browser tab that opens a notebook while the restore is starting that notebook's kernel.

JupyterLab reopens the tabs of the last session as soon as the server answers: its
``POST api/sessions`` for a notebook lands while the restore is reading the server manifest or
launching that notebook's kernel. The sessions API checks "a session exists for this path?",
found none yet, and started a second kernel: the tab worked in an empty kernel while the restored
state went to another one (or the restore refused the path, "a session already exists"). Such a
request must wait for the restore's session and get the restored kernel; a bounded wait, and a
clear error when the restore cannot give that notebook a kernel.

The fake engine of test_migration stands in for the engine (this is session plumbing).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable

import pytest
import requests

from kernel_agent.server.coordinator import (
    Coordinator,
    RestoreJob,
    RestoreSessionError,
    install_session_guard,
)
from tests.server.conftest import Server
from tests.server.test_migration import FAKE_ENGINE

NOTEBOOK = "work.ipynb"


def _checkpointed_server(start_server: Callable[..., Server], store_url: str, **config: dict) -> tuple[Server, str]:
    """A server whose notebook has `x = 42` in a checkpoint, and no sessions or kernels left."""
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=FAKE_ENGINE, config=config)
    session = s.create_session(NOTEBOOK)
    with s.attach(session["kernel"]["id"]) as k:
        k.ok("x = 42")
    r = s.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    assert s.request("DELETE", f"api/sessions/{session['id']}").status_code == 204
    assert s.get("api/kernels").json() == []
    return s, r.json()["checkpoint"]


def _open_tab(s: Server, answers: list[requests.Response]) -> threading.Thread:
    """What a reopened tab does, on its own connection, concurrently with the restore."""
    def run() -> None:
        answers.append(s.post("api/sessions", json={"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook",
                                                    "kernel": {"name": "python3"}}))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_tab_opened_as_the_restore_starts_gets_the_restored_kernel(start_server, store_url: str) -> None:
    s, pointer = _checkpointed_server(start_server, store_url)
    answers: list[requests.Response] = []

    r = s.post("api/elastic/restore", json={"checkpoint": pointer})
    assert r.status_code == 202, r.text
    tab = _open_tab(s, answers)
    st = s.wait_restore()["restore"]
    tab.join(120)

    assert st["state"] == "done", json.dumps(st, indent=1)
    [tab_answer] = answers
    assert tab_answer.status_code == 201, tab_answer.text
    [report] = st["kernels"]
    assert tab_answer.json()["kernel"]["id"] == report["kernel_id"]
    assert [k["id"] for k in s.get("api/kernels").json()] == [report["kernel_id"]]  # no second kernel
    assert [x["kernel"]["id"] for x in s.get("api/sessions").json()] == [report["kernel_id"]]
    with s.attach(report["kernel_id"]) as k:
        assert k.value("x") == 42


class _Sessions:
    """Stands in for jupyter_server's SessionManager: counts the kernels it would start."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def create_session(self, path: str | None = None, **kw: object) -> dict:
        self.started.append(str(path))
        return {"id": "own", "path": path, "kernel": {"id": "fresh"}}

    async def get_session(self, session_id: str) -> dict:
        return {"id": session_id, "path": NOTEBOOK, "kernel": {"id": "restored"}}


def _guarded(session_wait: float) -> tuple[_Sessions, Coordinator, RestoreJob]:
    sessions = _Sessions()
    coordinator = Coordinator(kernel_manager=None, session_manager=sessions, kernel_spec_manager=None,
                              store_url=None, busy_timeout=0, checkpoint_timeout=1, restore_timeout=1,
                              session_wait=session_wait)
    install_session_guard(sessions, coordinator)
    job = coordinator.restore_job = RestoreJob(state="running")
    return sessions, coordinator, job


async def test_a_tab_waiting_for_a_restore_that_cannot_start_the_kernel_gets_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No second kernel behind the user's back, and no silent empty kernel: the error says why."""
    sessions, _, job = _guarded(session_wait=30)
    job.sessions[NOTEBOOK] = asyncio.get_running_loop().create_future()
    job.manifest_read.set()

    with caplog.at_level(logging.INFO, logger="kernel_agent.server.coordinator"):
        tab = asyncio.ensure_future(sessions.create_session(path=NOTEBOOK, kernel_name="python3"))
        for _ in range(1000):  # loop steps until the tab waits for the restore (it says so)
            if any("waits for its restore" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0)
    assert not tab.done()
    job.session_failed(NOTEBOOK, "the restore of work.ipynb failed: NoSuchKernel: nope")

    with pytest.raises(RestoreSessionError, match="NoSuchKernel: nope"):
        await tab
    assert sessions.started == []
    # the restore gave up on the path: the next tab gets a kernel of its own
    assert (await sessions.create_session(path=NOTEBOOK))["kernel"]["id"] == "fresh"


async def test_a_tab_waits_a_bounded_time_for_the_restored_kernel() -> None:
    sessions, _, job = _guarded(session_wait=0.2)
    job.sessions[NOTEBOOK] = asyncio.get_running_loop().create_future()
    job.manifest_read.set()

    with pytest.raises(RestoreSessionError, match="did not start within 0s.*GET api/elastic/status"):
        await sessions.create_session(path=NOTEBOOK)
    assert sessions.started == []
    job.session_ready(NOTEBOOK, {"id": "s1"})
    assert (await sessions.create_session(path=NOTEBOOK))["kernel"]["id"] == "restored"
    assert (await sessions.create_session(path="other.ipynb"))["kernel"]["id"] == "fresh"
