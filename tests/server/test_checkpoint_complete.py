"""What ``complete`` in a server checkpoint promises: every variable of every kernel comes back.

Real engine. A kernel can be checkpointed ("ok") and still lose a variable the engine can
neither serialize nor recompute (a generator made from OS entropy). The answer said
``complete: true`` and the loss was only in that kernel's ``summary.lost``: an admin (or the
hub's migrator, which stops a server only on a complete checkpoint) saw a complete checkpoint
that a restore could not honour.
"""

from __future__ import annotations

import json

from kernel_agent.server.manifest import SCHEMA, KernelEntry, ServerManifest, read_manifest
from kernel_agent.server.pointer import parse_pointer
from tests.server.conftest import Server

GENERATOR = "import os\nseed = os.urandom(4)\ng = (b for b in seed)\nfirst = next(g)"


def test_a_checkpoint_that_loses_a_variable_is_not_complete_and_names_it(server: Server) -> None:
    """`complete` false, `saved` true, and the lost variable per kernel at the top level and in the manifest."""
    kid = server.create_session("work.ipynb")["kernel"]["id"]
    kept = server.create_session("kept.ipynb")["kernel"]["id"]
    with server.attach(kid) as k:
        k.ok(GENERATOR)
    with server.attach(kept) as k:
        k.ok("n = 1")

    r = server.post("api/elastic/checkpoint", json={})

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["complete"], body["saved"], body["lost_variables"]) == (False, True, 1), json.dumps(body, indent=1)
    [lost] = body["lost"]
    assert (lost["kernel_id"], lost["path"], sorted(lost["variables"])) == (kid, "work.ipynb", ["g"])
    assert "cannot be serialized" in lost["variables"]["g"]
    reports = {k["path"]: k for k in body["kernels"]}
    assert reports["work.ipynb"]["status"] == "ok" and reports["work.ipynb"]["lost"] == lost["variables"]
    assert "lost" not in reports["kept.ipynb"]

    manifest = read_manifest(parse_pointer(body["checkpoint"]))
    assert manifest.schema_version == 2 and not manifest.complete and manifest.saved
    assert {e.path: sorted(e.lost) for e in manifest.kernels} == {"work.ipynb": ["g"], "kept.ipynb": []}
    assert server.status()["last_checkpoint_complete"] is False  # what on_request stops record
    assert "1 variable(s) lost" in server.log() and "a restore cannot bring back" in server.log()


def test_a_version_1_manifest_still_reads_with_nothing_known_lost() -> None:
    """Manifests written before `lost` existed restore as before; `complete` keeps its old meaning."""
    entry = {"kernel_id": "k1", "kernel_name": "python3", "status": "ok", "path": "a.ipynb",
             "session_name": "a.ipynb", "session_type": "notebook", "store_url": "file:///s/kernels/a",
             "checkpoint_id": "c1", "error": None, "other_sessions": []}
    old = {"schema": SCHEMA, "schema_version": 1, "checkpoint_id": "20250102T030405123456Z-a1b2c3",
           "store_url": "file:///s", "created": "", "complete": True, "kernels": [entry]}

    manifest = ServerManifest.from_dict(old)

    assert manifest.schema_version == 1 and manifest.kernels == [KernelEntry(**entry)]
    assert manifest.complete and manifest.lost_variables == 0
