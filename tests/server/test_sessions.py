"""Kernels that are not one notebook each: consoles on a notebook's kernel, two kernels claiming
one notebook path, kernels with no session. A server checkpoint must record which notebook each
kernel belongs to, and the restore must give every notebook tab back its own kernel's state.

The fake engine of test_migration stands in for the engine: these tests pin the server plumbing
(which sessions, which kernel stores), not what the engine ships.
"""

from __future__ import annotations

import json

from kernel_agent.server.pointer import kernel_key, kernel_store_url
from tests.server.conftest import Server
from tests.server.test_migration import FAKE_ENGINE

NOTEBOOK = "my work/ünïcode analysis.ipynb"  # a space and non-ASCII: as users name them


def _console_on(server: Server, kernel_id: str, path: str = "console-1-0a1b2c") -> dict:
    """What JupyterLab's "New Console for Notebook" does: a console session on the same kernel."""
    r = server.post("api/sessions", json={"path": path, "name": "Console 1", "type": "console",
                                          "kernel": {"id": kernel_id}})
    assert r.status_code == 201, r.text
    return r.json()


def _delete_sessions(server: Server) -> None:
    for s in server.get("api/sessions").json():
        # 404: a console went with the kernel of the notebook session deleted before it
        assert server.request("DELETE", f"api/sessions/{s['id']}").status_code in (204, 404)


def _restore(server: Server, pointer: str) -> dict:
    r = server.post("api/elastic/restore", json={"checkpoint": pointer})
    assert r.status_code == 202, r.text
    return server.wait_restore()["restore"]


def test_console_on_a_notebook_kernel_keeps_the_notebook_session(start_server, store_url: str) -> None:
    """The notebook, not the console created after it, names the kernel; both come back on it.

    Keeping the last session listed recorded the console: the restore recreated only the
    console, and the notebook's tab got a fresh, empty kernel.
    """
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=FAKE_ENGINE)
    kid = s.create_session(NOTEBOOK)["kernel"]["id"]
    _console_on(s, kid)
    with s.attach(kid) as k:
        k.ok("x = 42")

    r = s.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200, r.text
    [report] = r.json()["kernels"]
    assert (report["path"], report["other_paths"], report["status"]) == (NOTEBOOK, ["console-1-0a1b2c"], "ok")
    assert report["summary"]["url"] == kernel_store_url(store_url, kernel_key(NOTEBOOK, kid))
    _delete_sessions(s)

    st = _restore(s, r.json()["checkpoint"])
    assert st["state"] == "done", json.dumps(st, indent=1)
    assert [(k["path"], k["other_paths"]) for k in st["kernels"]] == [(NOTEBOOK, ["console-1-0a1b2c"])]
    sessions = s.sessions()
    assert sorted(sessions) == sorted([NOTEBOOK, "console-1-0a1b2c"])
    assert sessions[NOTEBOOK]["type"] == "notebook"
    assert sessions["console-1-0a1b2c"]["type"] == "console"
    assert sessions[NOTEBOOK]["kernel"]["id"] == sessions["console-1-0a1b2c"]["kernel"]["id"]
    with s.attach(sessions[NOTEBOOK]["kernel"]["id"]) as k:
        assert k.value("x") == 42


def test_two_kernels_of_one_notebook_keep_their_own_stores_and_both_come_back(
    start_server, store_url: str
) -> None:
    """Two sessions on one path (one PATCHed there) are two kernels: two stores, two restores.

    Sharing the path's store let a restore take the other kernel's newer background checkpoint
    as this kernel's state; and the second kernel's restore was refused because the first one's
    session, created by the same restore, "already existed".
    """
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=FAKE_ENGINE)
    first = s.create_session("a.ipynb")
    second = s.create_session("b.ipynb")
    r = s.request("PATCH", f"api/sessions/{second['id']}", json={"path": "a.ipynb"})
    assert r.status_code == 200, r.text
    for session, value in ((first, "first"), (second, "second")):
        with s.attach(session["kernel"]["id"]) as k:
            k.ok(f"who = {value!r}")

    # listed second first: the manifest order must not decide which kernel owns the path
    r = s.post("api/elastic/checkpoint", json={"kernels": [second["kernel"]["id"], first["kernel"]["id"]]})
    assert r.status_code == 200 and r.json()["complete"], r.text
    urls = {k["kernel_id"]: k["summary"]["url"] for k in r.json()["kernels"]}
    assert urls == {
        first["kernel"]["id"]: kernel_store_url(store_url, kernel_key("a.ipynb", "")),
        second["kernel"]["id"]: kernel_store_url(store_url, kernel_key(None, second["kernel"]["id"])),
    }
    _delete_sessions(s)

    st = _restore(s, r.json()["checkpoint"])
    assert st["state"] == "done", json.dumps(st, indent=1)
    restored = [k for k in s.get("api/sessions").json() if k["path"] == "a.ipynb"]
    assert len(restored) == 2
    whos = []
    for session in restored:
        with s.attach(session["kernel"]["id"]) as k:
            whos.append(k.value("who"))
    assert sorted(whos) == ["first", "second"]
    # the kernel that owned the path's store owns it again (whichever kernel id is listed first)
    r = s.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    path_url = kernel_store_url(store_url, kernel_key("a.ipynb", ""))
    owners = []
    for report in r.json()["kernels"]:
        if report["summary"]["url"] == path_url:
            with s.attach(report["kernel_id"]) as k:
                owners.append(k.value("who"))
    assert owners == ["first"]


def test_kernel_without_a_session_comes_back_as_a_kernel(start_server, store_url: str) -> None:
    """A kernel started through api/kernels (no notebook) is restored as a kernel, no session."""
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=FAKE_ENGINE)
    r = s.post("api/kernels", json={"name": "python3"})
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    with s.attach(kid) as k:
        k.ok("y = [1, 2]")
    r = s.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    assert s.request("DELETE", f"api/kernels/{kid}").status_code == 204

    st = _restore(s, r.json()["checkpoint"])
    assert st["state"] == "done", json.dumps(st, indent=1)
    [report] = st["kernels"]
    assert report["path"] is None and report["kernel_id"] != kid
    assert s.sessions() == {}
    with s.attach(report["kernel_id"]) as k:
        assert k.value("y") == [1, 2]


def test_restore_leaves_a_notebook_that_already_has_a_kernel_alone_and_restores_the_others(
    start_server, store_url: str
) -> None:
    """A notebook reopened before the restore keeps its kernel; the report says how to proceed."""
    s = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=FAKE_ENGINE)
    for path, value in (("kept.ipynb", 1), ("reopened.ipynb", 2)):
        with s.attach(s.create_session(path)["kernel"]["id"]) as k:
            k.ok(f"v = {value}")
    r = s.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    _delete_sessions(s)
    reopened = s.create_session("reopened.ipynb")["kernel"]["id"]  # the user opened it again

    st = _restore(s, r.json()["checkpoint"])

    reports = {k["path"]: k for k in st["kernels"]}
    assert reports["kept.ipynb"]["status"] == "ok"
    assert reports["reopened.ipynb"]["status"] == "failed"
    assert reports["reopened.ipynb"]["kernel_id"] == reopened
    assert "already exists" in reports["reopened.ipynb"]["error"]
    assert "shut it down before restoring" in reports["reopened.ipynb"]["error"]
    assert st["state"] == "failed"
    sessions = s.sessions()
    assert sessions["reopened.ipynb"]["kernel"]["id"] == reopened
    with s.attach(reopened) as k:
        assert k.value("'v' in dir()") is False  # untouched
