"""A notebook renamed after a server checkpoint, while background checkpoints ran, then a crash.

Real engine, background checkpoints on. The kernel checkpoints into its notebook path's store, so
after a rename its background rounds go to the new path's store, while the server checkpoint the
next start restores still names the old path and the old store. The restore took the old
store's newest checkpoint: the state from before the rename, silently, under the old name (a tab
on the renamed file got an empty kernel). The newest state must come back under the new name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel_agent.server.pointer import kernel_key, kernel_store_url
from tests.server.conftest import wait_for

NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["contents", "session"])
def test_a_rename_after_the_checkpoint_restores_the_newest_state_under_the_new_name(
    start_server, store_url: str, tmp_path: Path, how: str
) -> None:
    """`contents`: the file renamed through api/contents only; `session`: the session PATCHed (JupyterLab does both)."""
    from kernel_agent.store import open_store

    root = tmp_path / "nb"
    root.mkdir()
    (root / "old.ipynb").write_text(NOTEBOOK)
    env = {"ELASTIC_STORE_URL": store_url, "ELASTIC_BACKGROUND_INTERVAL": "0.2"}
    a = start_server(name="a", root_dir=root, env=env)
    session = a.create_session("old.ipynb")
    kid = session["kernel"]["id"]
    new_store = open_store(kernel_store_url(store_url, kernel_key("new.ipynb", kid)))
    with a.attach(kid) as k:
        k.ok("x = [1, 2, 3]")
        r = a.post("api/elastic/checkpoint", json={})
        assert r.status_code == 200 and r.json()["complete"], r.text
        pointer = r.json()["checkpoint"]
        if how == "contents":
            r = a.request("PATCH", "api/contents/old.ipynb", json={"path": "new.ipynb"})
        else:
            r = a.request("PATCH", f"api/sessions/{session['id']}", json={"path": "new.ipynb"})
        assert r.status_code == 200, r.text
        wait_for(lambda: list(a.sessions()) == ["new.ipynb"], 30, "the session to follow the rename")
        wait_for(lambda: k.value("__import__('kernel_agent').background_status()").get("url") == new_store.url,
                 60, "background checkpoints to follow the rename")
        k.ok("x.append(4)\nafter = 'made after the rename'")
        wait_for(lambda: any(i.id.endswith(".bg") for i in new_store.list_checkpoints()), 120,
                 "a background checkpoint in the new path's store")
    a.stop()  # no checkpoint at stop: as if the pod died

    if how == "session":
        (root / "old.ipynb").rename(root / "new.ipynb")  # JupyterLab renamed the file too
    b = start_server(name="b", root_dir=root, env={**env, "ELASTIC_RESTORE_FROM": pointer})
    st = b.wait_restore()["restore"]

    assert st["state"] == "done", json.dumps(st, indent=1)
    [report] = st["kernels"]
    assert report["path"] == "new.ipynb" and report["summary"]["checkpoint_id"].endswith(".bg"), report
    assert any("renamed after the checkpoint (old.ipynb -> new.ipynb)" in w for w in report["warnings"]), report
    assert list(b.sessions()) == ["new.ipynb"]
    with b.attach(b.sessions()["new.ipynb"]["kernel"]["id"]) as k:
        assert k.value("[x, after]") == [[1, 2, 3, 4], "made after the rename"]
