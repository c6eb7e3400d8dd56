"""Cells that start threads running notebook code are shipped, not re-run; threads that are
not running travel as thread objects."""

from __future__ import annotations

import time

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all
from tests.kernels import Kernel

FILL = ["import threading\nres = []\ngo = threading.Event()\ndone = threading.Event()",
        "def fill():\n    res.append(0)\n    go.wait()\n    res.extend([1, 2, 3])\n    done.set()",
        "t = threading.Thread(target=fill)\nt.start()"]


def wait_until_ended(k: Kernel, thread: str, timeout_s: float = 10.0) -> None:
    """Poll (silently: no recorded cell) until `thread` has ended in `k`."""
    deadline = time.monotonic() + timeout_s
    while k.value(f"{thread}.is_alive()"):
        assert time.monotonic() < deadline, f"{thread} still running after {timeout_s} s"


def test_a_cell_that_started_a_thread_filling_a_list_is_not_re_run_at_the_restore(
        make_kernel, store_url):
    """`res`, `go` and `done` changed while the thread ran in cell 3, so they shipped, while
    cell 2 was re-run to make `t`: the restore started `fill` again, in a thread that went on
    after the restore verified the namespace (waiting forever on an Event of the re-run cells,
    or appending to the shipped `res` a second time)."""
    a = make_kernel()
    run_all(a, [*FILL, "go.set()\ndone.wait()\nn = len(res)"])
    wait_until_ended(a, "t")
    checkpoint(a, store_url)
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    # (what the re-run thread did depended on when it looked up `go` and `res`: before or
    # after the restore put the shipped ones in place; the list was silently longer or not)
    assert r["variables"]["t"]["action"] == "loaded"
    assert b.value("[th.name for th in threading.enumerate() if th.name.endswith('(fill)')]") == []
    assert b.value("(res, n, t.is_alive(), t.name)") == [[0, 1, 2, 3], 4, False, a.value("t.name")]
    b.ok("t.join()")  # a finished thread's join returns at once, as it did


def test_a_thread_still_running_at_the_checkpoint_is_lost_by_name(make_kernel, store_url):
    a = make_kernel()
    run_all(a, [*FILL, "m = 1"])
    checkpoint(a, store_url)
    a.value("go.set()")
    b = make_kernel()
    r = restore(b, store_url)
    assert "it is running" in r["lost"]["t"]
    assert b.value("m") == 1
