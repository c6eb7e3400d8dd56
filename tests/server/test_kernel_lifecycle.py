"""A kernel restarted or killed while the server checkpoints it: reported at once, not waited for.

The agent call's reply can only come from the kernel process that received the request. When
that process is replaced (the user's "Restart kernel", or the auto-restarter after a crash such
as an out-of-memory kill during the checkpoint) no reply ever comes: the server must notice the
new process and report the kernel, not wait for `checkpoint_timeout` (600 s by default) while the
hub's stop waits on the whole request.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from pathlib import Path

from tests.server.conftest import Server, wait_for

# IPython startup code: kernel_agent.checkpoint sleeps `slow_checkpoint` seconds first, so a test
# can act on the kernel while its checkpoint is in progress, and first creates the file
# `checkpoint_started` names: the sign that the call runs in this kernel process (the kernel's
# "busy" state can still be the previous execution's, and a kill then lands before the request,
# which the restarted kernel answers)
SLOW_CHECKPOINT = r'''
def _install_slow_checkpoint():
    import time, kernel_agent
    real, shell = kernel_agent.checkpoint, get_ipython()

    def checkpoint(url, **options):
        started = shell.user_ns.get("checkpoint_started")
        if started:
            open(started, "w").close()
        time.sleep(float(shell.user_ns.get("slow_checkpoint", 0)))
        return real(url, **options)

    kernel_agent.checkpoint = checkpoint

_install_slow_checkpoint()
del _install_slow_checkpoint
'''


def test_kernel_restarted_during_its_checkpoint_is_reported_without_waiting_for_the_timeout(
    start_server, store_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "checkpoint-started"
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    kid = s.create_session("work.ipynb")["kernel"]["id"]
    with s.attach(kid) as k:
        k.ok(f"slow_checkpoint = 60; checkpoint_started = {str(marker)!r}")
        pid = k.value("__import__('os').getpid()")
    started = time.monotonic()
    # the checkpoint request runs in the background of this test: the hub's stop waits on it
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(s.post, "api/elastic/checkpoint", json={"deadline": 200})
        wait_for(marker.exists, 30, "the checkpoint call to run in the kernel")
        os.kill(pid, signal.SIGKILL)  # e.g. the out-of-memory killer
        # the auto-restarter, or the user, replaces the dead process
        assert s.post(f"api/kernels/{kid}/restart").status_code == 200
        restarted = time.monotonic()
        r = pending.result(timeout=300)

    assert r.status_code == 200, r.text
    [report] = r.json()["kernels"]
    assert report["status"] == "failed"
    assert "restarted during kernel_agent.checkpoint" in report["error"], report
    # noticed within a few polls of the restart, not at the 200 s deadline
    assert time.monotonic() - restarted < 20, time.monotonic() - started


def test_kernel_restarted_by_the_user_during_its_checkpoint_is_reported_interrupted(
    start_server, store_url: str, tmp_path: Path
) -> None:
    """A user's "Restart kernel" interrupts the running call first: say so, not "KeyboardInterrupt: "."""
    marker = tmp_path / "checkpoint-started"
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    kid = s.create_session("work.ipynb")["kernel"]["id"]
    with s.attach(kid) as k:
        k.ok(f"slow_checkpoint = 60; checkpoint_started = {str(marker)!r}")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(s.post, "api/elastic/checkpoint", json={"deadline": 200})
        wait_for(marker.exists, 30, "the checkpoint call to run in the kernel")
        assert s.post(f"api/kernels/{kid}/restart").status_code == 200
        r = pending.result(timeout=300)

    assert r.status_code == 200, r.text
    [report] = r.json()["kernels"]
    assert report["status"] == "failed"
    assert report["error"].startswith("kernel_agent.checkpoint was interrupted (the kernel was "
                                      "interrupted or restarted while it ran)"), report


def test_kernel_shut_down_during_a_checkpoint_is_not_brought_back_by_the_restore(
    start_server, store_url: str, tmp_path: Path
) -> None:
    """A kernel the user shut down while a checkpoint waited to run is gone: not recreated.

    The manifest records it without a kernel spec; the restore asked for a kernel named "" and
    reported a NoSuchKernel failure (or, for a notebook, a session the user had closed).
    """
    marker = tmp_path / "checkpoint-started"
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    slow = s.create_session("slow.ipynb")["kernel"]["id"]
    with s.attach(slow) as k:
        k.ok(f"slow_checkpoint = 8; checkpoint_started = {str(marker)!r}")
    closed = s.create_session("closed.ipynb")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(s.post, "api/elastic/checkpoint", json={"kernels": [slow]})
        wait_for(marker.exists, 30, "the first checkpoint to run in its kernel")
        # queued behind the first checkpoint (one at a time); its kernel goes meanwhile
        second = pool.submit(s.post, "api/elastic/checkpoint", json={"kernels": [closed["kernel"]["id"]]})
        wait_for(lambda: s.status()["checkpoints_in_progress"] == 2, 30,
                 "the second checkpoint to wait for the first")
        assert s.request("DELETE", f"api/sessions/{closed['id']}").status_code == 204
        assert first.result(timeout=120).status_code == 200
        r = second.result(timeout=120)
    assert r.status_code == 200, r.text
    [report] = r.json()["kernels"]
    assert (report["status"], report["error"]) == ("failed", "the kernel was shut down during the checkpoint")

    r = s.post("api/elastic/restore", json={"checkpoint": r.json()["checkpoint"]})
    assert r.status_code == 202, r.text
    st = s.wait_restore()["restore"]
    [report] = st["kernels"]
    assert report["status"] == "skipped", json.dumps(st, indent=1)
    assert "shut down during the checkpoint" in report["error"]
    assert "closed.ipynb" not in s.sessions()
    assert [k["id"] for k in s.get("api/kernels").json()] == [slow]


def test_restore_requested_while_a_checkpoint_runs_is_refused_with_409(start_server, store_url: str) -> None:
    """A restore would start kernels and sessions under a checkpoint that is listing them."""
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    kid = s.create_session("work.ipynb")["kernel"]["id"]
    with s.attach(kid) as k:
        k.ok("slow_checkpoint = 6")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(s.post, "api/elastic/checkpoint", json={})
        wait_for(lambda: s.status()["checkpoints_in_progress"] == 1, 30, "the checkpoint to start")
        r = s.post("api/elastic/restore", json={"checkpoint": f"{store_url}#20250101T000000000000Z-abcdef"})
        assert r.status_code == 409, r.text
        assert "a checkpoint is running" in r.json()["message"]
        assert pending.result(timeout=120).status_code == 200
    assert s.status()["restore"]["state"] == "idle"
