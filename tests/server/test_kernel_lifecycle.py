"""A kernel restarted or killed while the server checkpoints it: reported at once, not waited for.

The agent call's reply can only come from the kernel process that received the request. When
that process is replaced (the user's "Restart kernel", or the auto-restarter after a crash such
as an out-of-memory kill during the checkpoint) no reply ever comes: the server must notice the
new process and report the kernel, not wait for `checkpoint_timeout` (600 s by default) while the
hub's stop waits on the whole request.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

from tests.server.conftest import Server, wait_for

# IPython startup code: kernel_agent.checkpoint sleeps `slow_checkpoint` seconds first, so a test
# can act on the kernel while its checkpoint is in progress
SLOW_CHECKPOINT = r'''
def _install_slow_checkpoint():
    import time, kernel_agent
    real, shell = kernel_agent.checkpoint, get_ipython()

    def checkpoint(url, **options):
        time.sleep(float(shell.user_ns.get("slow_checkpoint", 0)))
        return real(url, **options)

    kernel_agent.checkpoint = checkpoint

_install_slow_checkpoint()
del _install_slow_checkpoint
'''


def test_kernel_restarted_during_its_checkpoint_is_reported_without_waiting_for_the_timeout(
    start_server, store_url: str
) -> None:
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    kid = s.create_session("work.ipynb")["kernel"]["id"]
    k = s.attach(kid)
    try:
        k.ok("slow_checkpoint = 60")
        pid = k.value("__import__('os').getpid()")
    finally:
        k.shutdown()
    started = time.monotonic()
    # the checkpoint request runs in the background of this test: the hub's stop waits on it
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(s.post, "api/elastic/checkpoint", json={"deadline": 200})
        wait_for(lambda: s.get(f"api/kernels/{kid}").json()["execution_state"] == "busy",
                 30, "the checkpoint call to run in the kernel")
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
    start_server, store_url: str
) -> None:
    """A user's "Restart kernel" interrupts the running call first: say so, not "KeyboardInterrupt: "."""
    s: Server = start_server(env={"ELASTIC_STORE_URL": store_url}, ipython_startup=SLOW_CHECKPOINT)
    kid = s.create_session("work.ipynb")["kernel"]["id"]
    k = s.attach(kid)
    try:
        k.ok("slow_checkpoint = 60")
    finally:
        k.shutdown()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(s.post, "api/elastic/checkpoint", json={"deadline": 200})
        wait_for(lambda: s.get(f"api/kernels/{kid}").json()["execution_state"] == "busy",
                 30, "the checkpoint call to run in the kernel")
        assert s.post(f"api/kernels/{kid}/restart").status_code == 200
        r = pending.result(timeout=300)

    assert r.status_code == 200, r.text
    [report] = r.json()["kernels"]
    assert report["status"] == "failed"
    assert report["error"].startswith("kernel_agent.checkpoint was interrupted (the kernel was "
                                      "interrupted or restarted while it ran)"), report
