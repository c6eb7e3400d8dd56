"""Background checkpoints through the server extension: on for every kernel, used after a crash.

A server started with a store and ``ELASTIC_BACKGROUND_INTERVAL`` (as a spawner configures it)
turns background checkpoints on in its kernels, into the same per-notebook store its planned
checkpoints use. The user keeps working after a planned checkpoint; then the server dies with no
checkpoint at stop. The next server, given the old pointer, restores the newer background state.
Manifests are signed with the server's key (``ELASTIC_CHECKPOINT_KEY``), which kernels inherit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel_agent.server.pointer import kernel_key, kernel_store_url
from tests.server.conftest import wait_for

KEY = "0123456789abcdef" * 4


@pytest.mark.slow
def test_crash_after_background_rounds_restores_the_newer_state(start_server, store_url: str,
                                                               tmp_path: Path) -> None:
    from kernel_agent.store import open_store

    root = tmp_path / "nb"
    root.mkdir()
    (root / "work.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                 "nbformat_minor": 5}))
    env = {"ELASTIC_STORE_URL": store_url, "ELASTIC_BACKGROUND_INTERVAL": "0.2",
           "ELASTIC_CHECKPOINT_KEY": KEY}
    a = start_server(name="a", root_dir=root, env=env)
    kid = a.create_session("work.ipynb")["kernel"]["id"]
    with a.attach(kid) as k:
        k.ok("x = [1, 2, 3]")
        r = a.post("api/elastic/checkpoint", json={})
        assert r.status_code == 200 and r.json()["complete"], r.text
        pointer = r.json()["checkpoint"]
        kstore = open_store(kernel_store_url(store_url, kernel_key("work.ipynb", kid)))
        wait_for(lambda: k.value("__import__('kernel_agent').background_status()").get("enabled"),
                 60, "the server to turn background checkpoints on")
        k.ok("x.append(4)\nafter = 'kept by a background round'")
        bg = wait_for(lambda: [c for c in (i.id for i in kstore.list_checkpoints()) if c.endswith(".bg")],
                      120, "a background checkpoint in the kernel's store")
        raw = json.loads(kstore.get_manifest(bg[-1]))
        assert "hmac_sha256" in raw  # signed with the server's key, inherited by the kernel
    a.stop()  # no checkpoint at stop: as if the pod died

    b = start_server(name="b", root_dir=root, env={**env, "ELASTIC_RESTORE_FROM": pointer})
    st = b.wait_restore()
    assert st["restore"]["state"] == "done", json.dumps(st, indent=1)
    (ks,) = st["restore"]["kernels"]
    assert ks["summary"]["checkpoint_id"].endswith(".bg"), ks
    with b.attach(b.sessions()["work.ipynb"]["kernel"]["id"]) as k:
        assert k.value("[x, after]") == [[1, 2, 3, 4], "kept by a background round"]
