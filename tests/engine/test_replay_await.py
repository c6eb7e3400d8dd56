"""Cells that await at top level (IPython's autoawait) are re-run by a restore.

A restore runs inside the kernel while it executes a cell, in ipykernel's running asyncio loop,
so such a cell's coroutine is driven on a private event loop on the kernel's own thread
(`restoring._AwaitRunner`). What an await cell made that cannot be shipped (a generator, a
lock), and what later re-run cells make from it, then comes back verified; an await on an
object bound to the kernel's loop by an earlier cell fails in the re-run and is reported.
"""

from __future__ import annotations

import time

from tests.engine.adversarial import assert_never_silent, assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate

MAKE_GEN = "async def make_gen(n):\n    await asyncio.sleep(0.01)\n    return (i * i for i in range(n))"


def test_an_await_cell_whose_result_cannot_be_pickled_is_re_run(make_kernel, tmp_path):
    cells = ["import asyncio", MAKE_GEN, "gen = await make_gen(5)"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert c["lost"] == {} or "gen" not in c["lost"], c["lost"]
    assert_restore_verified(r)
    assert 2 in r["rerun_cells"]
    assert b.value("list(gen)") == [0, 1, 4, 9, 16]


def test_cells_re_run_after_an_await_cell_see_its_side_effects(make_kernel, tmp_path):
    # the generator cannot be shipped: its history (made, advanced by the await cell, advanced
    # again) is re-run, the await cell included
    cells = ["import asyncio", "gen = (i for i in range(10))",
             "await asyncio.sleep(0)\nfirst = next(gen)", "second = next(gen)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, deadline_s=0.0)
    assert_restore_verified(r)
    assert r["errors"] == []
    assert b.value("[first, second, next(gen)]") == [0, 1, 2]


def test_gathered_results_are_recomputed_by_replay(make_kernel, tmp_path):
    cells = ["import asyncio",
             "async def square(i):\n    await asyncio.sleep(0.001 * i)\n    return i * i",
             "results = await asyncio.gather(*(square(i) for i in range(5)))",
             "total = sum(results)"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert_verified(r)
        assert r.kernel.value("[results, total]") == [[0, 1, 4, 9, 16], 30]
    replay = restored["replay"].restore
    assert "results" in replay["recomputed"] and 2 in replay["rerun_cells"], replay


def test_a_task_started_and_awaited_in_one_cell_is_re_run(make_kernel, tmp_path):
    # the cell's statements are compiled one by one, as IPython runs them: the one starting the
    # task runs on the loop the next one awaits it on
    cells = ["import asyncio",
             "t = asyncio.ensure_future(asyncio.sleep(0.01, result=(i for i in range(3))))\n"
             "gen = await t\nhead = next(gen)"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert r.restore["errors"] == [], r.restore["errors"]
        assert 1 in r.restore["rerun_cells"]
        assert_never_silent(r, {"head": 0})
        assert r.kernel.value("[head, list(gen), t.done()]") == [0, [1, 2], True]


def test_awaiting_a_future_of_the_kernels_loop_made_earlier_is_an_honest_loss(make_kernel, tmp_path):
    # re-run, the future belongs to the kernel's loop, which cannot run while the restore
    # does: the await cell fails, and what it made is named as lost, never silently wrong
    cells = ["import asyncio",
             "fut = asyncio.get_running_loop().create_future()\n"
             "asyncio.get_running_loop().call_soon(fut.set_result, (i for i in range(3)))",
             "gen = await fut",
             "head = next(gen)"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert_never_silent(r, {"head": 0})
        assert "gen" in r.restore["lost"], r.restore["variables"]
        assert "attached to a different loop" in " ".join(r.restore["errors"]), r.restore["errors"]


def test_a_task_an_await_cell_left_running_is_cancelled_and_named_as_lost(make_kernel, tmp_path):
    # the task ran on in the kernel's loop after its cell; the restore's loop ends with the
    # restore, so the re-run task is cancelled: a task is checked by type only, and would
    # verify while it no longer runs
    cells = ["import asyncio",
             "bg = asyncio.ensure_future(asyncio.sleep(1000))\nawait asyncio.sleep(0)"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert "bg" in r.restore["lost"], r.restore["variables"]
        assert "still running when the restore ended" in " ".join(r.restore["errors"]), r.restore


def test_an_interrupted_await_cell_re_run_leaves_the_kernels_loop_working(make_kernel, tmp_path):
    # the stop button during a restore that waits in an await cell: the KeyboardInterrupt
    # reaches the cell's code on the kernel thread, the restore stops, and the kernel's own
    # loop is the running one again (cells that await still run)
    a = make_kernel()
    for cell in ["import asyncio, builtins, pathlib",
                 "async def slow():\n    if getattr(builtins, 'AW_HOLD', False):\n"
                 "        pathlib.Path('aw_started').touch()\n        await asyncio.sleep(120)\n"
                 "    return (i for i in range(3))",
                 "gen = await slow()"]:
        a.ok(cell)
    url = (tmp_path / "s").as_uri()
    a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r})")
    assert "gen" in a.value("_c")["recomputed"]
    b = make_kernel()
    b.ok("import builtins; builtins.AW_HOLD = True")
    msg_id = b.kc.execute(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
    end = time.monotonic() + 60
    while not (tmp_path / "aw_started").exists():
        assert time.monotonic() < end, "the restore never reached the await cell"
        time.sleep(0.05)
    b.km.interrupt_kernel()
    reply = b.kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = b.kc.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    b.ok("import asyncio\nawait asyncio.sleep(0.01)\nafter = asyncio.get_running_loop().is_running()")
    assert b.value("after") is True
    assert b.value("[t for t in asyncio.all_tasks() if 'slow' in repr(t)]") == []


def test_an_await_cell_re_runs_on_the_kernel_thread(make_kernel, tmp_path):
    # the reason the restore's loop runs on the kernel thread, not in a helper thread: objects
    # of earlier cells may be bound to it (sqlite3 refuses a connection's use from another)
    cells = ["import asyncio, sqlite3, threading",
             "conn = sqlite3.connect(':memory:')",
             "await asyncio.sleep(0)\nrows = conn.execute('select 1 union select 2')\n"
             "where = threading.current_thread() is threading.main_thread()"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert r.restore["errors"] == [], r.restore["errors"]
        assert 2 in r.restore["rerun_cells"]
        assert_never_silent(r, {"where": True})
        assert r.kernel.value("[list(rows), where]") == [[[1], [2]], True]


def test_async_with_and_async_for_cells_are_re_run(make_kernel, tmp_path):
    cells = ["import asyncio",
             "lock = asyncio.Lock()\nasync with lock:\n    await asyncio.sleep(0)\n"
             "    held = lock.locked()",
             "async def agen():\n    for i in range(3):\n        await asyncio.sleep(0)\n        yield i",
             "seen = []\nasync for v in agen():\n    seen.append(v)\nlater = (x * 10 for x in seen)"]
    _, restored = migrate_both(make_kernel, tmp_path, cells)
    for r in restored.values():
        assert r.restore["errors"] == [], r.restore["errors"]
        assert {1, 3} <= set(r.restore["rerun_cells"]) or r.plan == "optimal"
        assert 3 in r.restore["rerun_cells"]
        assert_verified(r)
        assert r.kernel.value("[held, seen, list(later), lock.locked()]") == [True, [0, 1, 2], [0, 10, 20], False]
