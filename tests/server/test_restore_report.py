"""What the restore status says per kernel, in words the hub's log and the spawn page can show.

Real engine: a restore whose only shortfall is variables the engine names lost (with a reason)
is ``partial``, and the names and reasons are in the kernel's report and its progress line.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.server.conftest import Server


def _restore(server: Server, pointer: str) -> dict:
    r = server.post("api/elastic/restore", json={"checkpoint": pointer})
    assert r.status_code == 202, r.text
    return server.wait_restore()["restore"]


def test_restore_that_lost_a_variable_is_partial_and_names_it(server: Server, tmp_path: Path) -> None:
    """A file written on the old node is gone: the kernel is back, `log` is lost by name.

    It was reported "failed" with "not restored", as if the kernel had no state, and the
    progress line (what the spawn page shows) did not name what was lost.
    """
    local = tmp_path / "node-local.log"
    kid = server.create_session("work.ipynb")["kernel"]["id"]
    with server.attach(kid) as k:
        k.ok(f"log = open({str(local)!r}, 'w')")
        k.ok("n = 1")
    r = server.post("api/elastic/checkpoint", json={})
    assert r.status_code == 200 and r.json()["complete"], r.text
    assert server.request("DELETE", f"api/sessions/{server.sessions()['work.ipynb']['id']}").status_code == 204
    local.unlink()  # it was on the old node's disk

    st = _restore(server, r.json()["checkpoint"])

    [report] = st["kernels"]
    assert report["status"] == "partial", json.dumps(st, indent=1)
    assert report["error"].startswith("restored, but lost log (") and "does not exist here" in report["error"]
    assert report["summary"]["loaded"] + report["summary"]["recomputed"] == ["n"]
    line = st["progress"][-2]["message"]
    assert line.startswith("work.ipynb: restored (") and "LOST: log (" in line, line
    assert st["state"] == "failed" and "1 of 1 kernel(s) not fully restored" in st["error"]
    with server.attach(report["kernel_id"]) as k:
        assert k.value("[n, 'log' in dir()]") == [1, False]
