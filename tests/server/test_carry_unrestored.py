"""A kernel the restore could not start is carried into the server's next checkpoint, unchanged.

Its kernel spec is missing on the new server (another image): the restore reports it failed
and the server runs without it. A checkpoint of that server (the next stop) had no kernel for
the notebook, so its state dropped out of the pointer the next start restores, silently.
"""

from __future__ import annotations

import dataclasses

from kernel_agent.server.manifest import ServerManifest, read_manifest, write_manifest
from kernel_agent.server.pointer import format_pointer, new_checkpoint_id, parse_pointer
from tests.server.conftest import Server

NB = "kept.ipynb"


def test_a_kernel_whose_spec_is_missing_at_restore_is_carried_into_the_next_checkpoint(
        start_server, store_url: str) -> None:
    a: Server = start_server(name="a", env={"ELASTIC_STORE_URL": store_url})
    kid = a.create_session(NB)["kernel"]["id"]
    with a.attach(kid) as k:
        k.ok("x = 42")
    r = a.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    a.stop()
    # the same checkpoint, as a server whose image lacks the kernel spec sees it
    saved = read_manifest(parse_pointer(r.json()["checkpoint"]))
    [entry] = saved.kernels
    missing = dataclasses.replace(entry, kernel_name="python3-not-installed")
    other = ServerManifest(checkpoint_id=new_checkpoint_id(), store_url=saved.store_url,
                           created=saved.created, kernels=[missing])
    write_manifest(other)

    b: Server = start_server(name="b", env={"ELASTIC_STORE_URL": store_url,
                                            "ELASTIC_RESTORE_FROM": format_pointer(store_url, other.checkpoint_id)})
    restore = b.wait_restore()["restore"]
    assert restore["state"] == "failed" and restore["kernels"][0]["status"] == "failed", restore
    assert b.sessions() == {}

    r = b.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200, r.text
    [carried] = r.json()["kernels"]
    assert carried["path"] == NB and carried["status"] == "ok", carried
    assert any("carried over" in w for w in carried.get("warnings", [])), carried
    [kept] = read_manifest(parse_pointer(r.json()["checkpoint"])).kernels
    assert (kept.store_url, kept.checkpoint_id, kept.kernel_name) == (
        entry.store_url, entry.checkpoint_id, "python3-not-installed")
