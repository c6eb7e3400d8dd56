"""Notebook code that runs after its cell ended: event-loop tasks and callbacks, thread-pool
jobs, shell event callbacks the notebook registered.

Such code changes variables between cells, where no recorded cell did it. Re-run at a restore,
the cell that started it starts it again, and it changes the restored namespace once more after
the restore verified it. And the cell that next touches a value it changed is not the cell that
changed it: re-running that cell recomputes something else. Either way the restore must give
the values as they were, or name them as lost; never a different value, verified or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.engine.adversarial import Restored, assert_never_silent, migrate_both
from tests.kernels import Kernel

PENDING_TASKS = ("[repr(t.get_coro()) for t in __import__('asyncio').all_tasks("
                 "get_ipython().kernel.io_loop.asyncio_loop) if not t.done() "
                 "and t.get_coro().cr_frame is not None "
                 "and t.get_coro().cr_frame.f_globals.get('__name__') == '__main__']")


def wait_for(k: Kernel, expr: str, timeout_s: float = 10.0) -> None:
    """Poll `expr` (silently: no recorded cell) until it is true; the kernel's event loop runs
    the notebook's tasks between the polls."""
    deadline = time.monotonic() + timeout_s
    while not k.value(expr):
        assert time.monotonic() < deadline, f"{expr} still false after {timeout_s} s"


def migrate_waiting(make_kernel: Callable[..., Kernel], root: Path, after: int, until: str,
                    cells: list[str]) -> tuple[Kernel, dict[str, Restored]]:
    """`migrate_both`, waiting after cell `after` until `until` is true in kernel A (what
    the cell started in the background has run)."""
    made: list[Kernel] = []

    def make(*args: Any, **kw: Any) -> Kernel:
        made.append(make_kernel(*args, **kw))
        return made[-1]

    def wait(i: int) -> None:
        if i == after:
            wait_for(made[0], until)

    return migrate_both(make, root, cells, between=wait)


def test_a_cell_that_scheduled_a_task_is_not_re_run_to_run_it_again_after_the_restore(
        make_kernel, tmp_path):
    """`res` was loaded as the task had filled it, `t` recomputed by re-running its cell: the
    task ran again after the restore had verified `res`, and appended to it a second time."""
    a, out = migrate_waiting(make_kernel, tmp_path, 2, "t.done()", [
        "import asyncio\nres = []",
        "async def fill():\n    for i in range(3):\n        await asyncio.sleep(0)\n"
        "        res.append(i)",
        "t = asyncio.ensure_future(fill())",
        "n = 1",
    ])
    for r in out.values():
        assert r.kernel.value(PENDING_TASKS) == [], r.plan  # nothing left to append later
        assert_never_silent(r, {"res": [0, 1, 2], "n": 1})
        assert "t" in r.restore["lost"], r.plan  # (a task cannot be shipped)
    assert out["optimal"].restore["variables"]["res"]["verified"]


def test_a_cell_whose_thread_pool_job_outlived_it_is_not_re_run_to_run_it_again(make_kernel,
                                                                                 tmp_path):
    """The job ran in a thread the pool had started for an earlier job: no thread was started,
    the cell was re-run at the restore and the job extended the loaded `res` once more."""
    cells = ["import concurrent.futures, threading\nres = []\ngo = threading.Event()\n"
             "pool = concurrent.futures.ThreadPoolExecutor(1)",
             "pool.submit(int).result()",  # the pool's thread, started for a library job
             "def fill():\n    go.wait()\n    res.extend([1, 2])",
             "fut = pool.submit(fill)",
             "go.set()\nfut.result()\nn = len(res)"]
    a, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        # (the re-run job would wait on the re-made `go`, then extend `res` after the restore)
        assert r.kernel.value("[th.name for th in threading.enumerate() "
                              "if th.name.startswith('ThreadPoolExecutor')]") == [], r.plan
        assert_never_silent(r, {"res": [1, 2], "n": 2})


def test_a_global_a_task_rebound_between_cells_is_restored_with_the_cell_that_read_it(
        make_kernel, tmp_path):
    """`counter` was rebound by the task, between cells; `y = counter` read it. The history
    said `counter = 0` made it: both were recomputed as 0 (not verified)."""
    a, out = migrate_waiting(make_kernel, tmp_path, 2, "t.done()", [
        "import asyncio\ncounter = 0",
        "async def bump():\n    global counter\n    for _ in range(3):\n"
        "        await asyncio.sleep(0)\n        counter += 1",
        "t = asyncio.ensure_future(bump())",
        "y = counter",
        "z = 1",
    ])
    for r in out.values():
        assert_never_silent(r, {"counter": 3, "y": 3, "z": 1})
        assert r.restore["mismatched"] == [], r.plan
    assert_verified_except(out["optimal"], {"t"})


def test_a_list_a_task_appended_to_between_cells_is_restored_with_the_cell_that_read_it(
        make_kernel, tmp_path):
    """The appends were found by `n = len(res)`, the next cell to touch `res`, and taken for
    its own: re-run, it did not make them (res and n recomputed as [] and 0)."""
    a, out = migrate_waiting(make_kernel, tmp_path, 2, "t.done()", [
        "import asyncio\nres = []",
        "async def fill():\n    for i in range(3):\n        await asyncio.sleep(0)\n"
        "        res.append(i)",
        "t = asyncio.ensure_future(fill())",
        "z = 1",
        "n = len(res)",
    ])
    for r in out.values():
        assert_never_silent(r, {"res": [0, 1, 2], "n": 3, "z": 1})
        assert r.restore["mismatched"] == [], r.plan
    assert_verified_except(out["optimal"], {"t"})


def test_an_event_loop_callback_that_rebound_a_global_is_restored_with_its_reader(make_kernel,
                                                                                   tmp_path):
    a, out = migrate_waiting(make_kernel, tmp_path, 2, "flag == 1", [
        "import asyncio\nflag = 0",
        "def set_flag():\n    global flag\n    flag = 1",
        "h = asyncio.get_event_loop().call_later(0.01, set_flag)",
        "y = flag",
    ])
    for r in out.values():
        assert_never_silent(r, {"flag": 1, "y": 1})
        assert r.restore["mismatched"] == [], r.plan


def test_values_a_post_run_cell_callback_changes_are_restored_with_the_cells_reading_them(
        make_kernel, tmp_path):
    """The callback runs after the monitor's own `post_run_cell`, so between cells: `snap`
    and `k` were recomputed from the values the callback had not changed yet."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "n_runs = 0\nlog = []",
        "def count(result):\n    global n_runs\n    n_runs += 1\n    log.append(n_runs)",
        "get_ipython().events.register('post_run_cell', count)",
        "x = 1",
        "snap = n_runs\nk = len(log)",
        "y = 2",
    ])
    for r in out.values():
        assert_never_silent(r, {"snap": 2, "k": 2, "x": 1, "y": 2})
        assert r.restore["mismatched"] == [], r.plan


def test_a_generator_a_post_run_cell_callback_advances_is_not_recomputed_at_its_start(
        make_kernel, tmp_path):
    """A generator is checked by type only: re-made by its cell, it verified at its first
    position although the callback had advanced it after every cell."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "def numbers():\n    n = 0\n    while True:\n        n += 1\n        yield n",
        "ticks = numbers()",
        "get_ipython().events.register('post_run_cell', lambda result: next(ticks))",
        "x = 1",
        "y = 2",
    ])
    for r in out.values():
        v = r.restore["variables"]["ticks"]
        if v.get("verified"):  # (a generator cannot be shipped: it can only be lost)
            assert r.kernel.value("next(ticks)") > 3, r.plan
        else:
            assert v["action"] == "lost" and "outside" in v["detail"], (r.plan, v)


def assert_verified_except(r: Restored, lost: set[str]) -> None:
    """Every variable verified but `lost`, which are lost."""
    bad = {n: v for n, v in r.restore["variables"].items()
           if not v.get("verified") and n not in lost}
    assert not bad, f"{r.plan}: not verified: {bad}"
    assert lost <= set(r.restore["lost"]), r.restore["lost"]


def move_slider(k: Kernel, widget: str, value: int) -> None:
    """Send the comm message a frontend sends when the user moves `widget` to `value`, and wait
    until the kernel has handled it (idle again): its observers run outside any cell."""
    comm_id = k.value(f"{widget}.comm.comm_id")
    msg = k.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {
        "method": "update", "state": {"value": value}, "buffer_paths": []}})
    k.kc.shell_channel.send(msg)
    deadline = time.monotonic() + 30
    while True:
        reply = k.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if (reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]
                and reply["msg_type"] == "status"
                and reply["content"]["execution_state"] == "idle"):
            return


def test_a_generator_a_widget_observer_advanced_is_not_recomputed_at_its_start(make_kernel,
                                                                               tmp_path):
    """The observer ran on a comm message, between cells: nothing recorded touched `frames`,
    checked by type only, so it was re-made by its cell at its first position and verified."""
    made: list[Kernel] = []

    def make(*args: Any, **kw: Any) -> Kernel:
        made.append(make_kernel(*args, **kw))
        return made[-1]

    def user_moves_the_slider(i: int) -> None:
        if i == 2:
            move_slider(made[0], "s", 5)

    a, out = migrate_both(make, tmp_path, [
        "import ipywidgets as W\nframes = (i for i in range(100))\nseen = []",
        "s = W.IntSlider(value=1)",
        "s.observe(lambda change: seen.append(next(frames)), 'value')",
        "z = 1",
    ], between=user_moves_the_slider)
    assert a.value("seen") == [0]
    for r in out.values():
        v = r.restore["variables"]["frames"]
        if v.get("verified"):  # (a generator cannot be shipped: it can only be lost)
            assert r.kernel.value("next(frames)") == 1, r.plan
        else:
            assert v["action"] == "lost" and "outside" in v["detail"], (r.plan, v)
        assert_never_silent(r, {"seen": [0], "z": 1})


def test_values_a_pre_run_cell_callback_changes_are_shipped_not_replayed(make_kernel, tmp_path):
    """A `pre_run_cell` callback runs inside the cell's recording, so what it changes was taken
    for the cell's own doing, which a re-run (the restore runs no such callback) did not redo;
    and `n_cells`, last changed by the cell taking the checkpoint, was loaded before the
    re-runs and then set back to 0 by re-running `n_cells = 0` for `bump`."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "n_cells = 0",
        "def bump(info):\n    global n_cells\n    n_cells += 1",
        "get_ipython().events.register('pre_run_cell', bump)",
        "x = 1",
        "snap = n_cells",
        "y = 2",
    ])
    for r in out.values():
        assert_never_silent(r, {"snap": 2, "x": 1, "y": 2})
        assert r.restore["mismatched"] == [], r.plan
    assert out["optimal"].kernel.value("n_cells") == 4  # (the checkpoint's cell counted too)
