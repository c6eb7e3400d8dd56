"""A kernel running a cell is waited for up to busy_timeout, then reported busy, never interrupted."""

from __future__ import annotations

from pathlib import Path

from kernel_agent.server.pointer import parse_pointer
from tests.server.conftest import Server, wait_for


def test_busy_kernel_is_reported_busy_after_the_timeout_and_keeps_running(server: Server, tmp_path: Path) -> None:
    kid = server.create_session("work/long.ipynb")["kernel"]["id"]
    with server.attach(kid) as k:
        k.kc.execute("import time; time.sleep(120); finished = True")
        wait_for(lambda: server.get(f"api/kernels/{kid}").json()["execution_state"] == "busy",
                 30, "the server to see the kernel busy")

        r = server.post("api/elastic/checkpoint", json={"kernels": [kid], "busy_timeout": 1})

        assert r.status_code == 200, r.text
        body = r.json()
        assert body["complete"] is False
        [report] = body["kernels"]
        assert report["kernel_id"] == kid
        assert report["path"] == "work/long.ipynb"
        assert report["kernel_name"] == "python3"
        assert report["status"] == "busy"
        assert "not interrupted" in report["error"]
        # the cell was not interrupted: the kernel is still running it
        assert server.get(f"api/kernels/{kid}").json()["execution_state"] == "busy"
        # a manifest was still committed, recording the busy kernel, and status points at it
        p = parse_pointer(body["checkpoint"])
        assert (Path(p.store_url.removeprefix("file://")) / "servers" / "checkpoints" / p.checkpoint_id / "manifest.json").is_file()
        assert server.status()["last_checkpoint"] == body["checkpoint"]
