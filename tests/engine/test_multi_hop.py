"""Sessions that migrate again and again, with the user working in between.

A restored kernel is checkpointed and restored again (tests/engine/test_migration.py has the
plain second migration). These are the behaviours only a session that goes on after a restore
shows: what the restore put in place must behave like the original from then on, and the
history it adopted must describe the session for the next checkpoint.
"""

from __future__ import annotations

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all


def test_process_state_set_by_a_cell_that_is_not_re_run_is_named_at_every_restore(
        make_kernel, tmp_path):
    """`os.environ[...] = ...` next to `lst.append(1)` is no cell a restore re-runs (it would
    append again): the variable was there, the environment variable was not, and the restore
    said nothing. The environment variable is set again from the checkpoint's record, and the
    restore names the cell (what else it may have set is not restored); at the next hop again
    (the variable stays, the cell stays unrun), and never the cell that called restore (the
    process state its re-runs set is no change of that cell)."""
    a = make_kernel()
    run_all(a, ["import os", "lst = []", "os.environ['HOPS_ENV'] = 'a'\nlst.append(1)",
                "os.environ['HOPS_PLAIN'] = 'b'"])
    checkpoint(a, (tmp_path / "one").as_uri(), strategy="ship-all")
    b = make_kernel()
    r = restore(b, (tmp_path / "one").as_uri())
    assert_verified(r)
    assert b.value("[lst, os.environ.get('HOPS_ENV'), os.environ.get('HOPS_PLAIN')]") == [
        [1], "a", "b"]
    named = [w for w in r["warnings"] if "process state" in w]
    assert len(named) == 1 and named[0].startswith("cell 2 "), r["warnings"]
    assert "set again from the checkpoint: environment variables HOPS_ENV" in named[0]
    assert r["process_state_set"] == ["environment variables HOPS_ENV"]
    b.ok("lst.append(2)")
    checkpoint(b, (tmp_path / "two").as_uri(), strategy="ship-all")
    c = make_kernel()
    r2 = restore(c, (tmp_path / "two").as_uri())
    assert_verified(r2)
    assert c.value("[lst, os.environ.get('HOPS_ENV'), os.environ.get('HOPS_PLAIN')]") == [
        [1, 2], "a", "b"]
    assert [w for w in r2["warnings"] if "process state" in w] == named


def test_cells_recorded_before_the_first_hop_are_replayed_at_the_third(make_kernel, tmp_path):
    """Three hops (ship-all, optimal, replay), cells run in every kernel in between: the last
    restore re-runs cells kernel A recorded, against values kernels B and C changed (a view
    written through, a generator drawn from, a function of A's read by a function of C's), and
    the session equals the one that never moved: values, the view still a view, the
    generator where it was."""
    hops = [
        ["import numpy as np", "rng = np.random.default_rng(7)\nbase = np.arange(6.0)\nview = base[2:]",
         "def scale(k):\n    return base * k", "d0 = rng.integers(0, 100, 3)"],
        ["view[0] = -1", "d1 = rng.random(2)", "del d0"],
        ["def twice():\n    return scale(2).sum()", "t = twice()", "base += 1"],
        [],
    ]
    plans = [{"strategy": "ship-all"}, {}, {"deadline_s": 0.0}]
    probe = ("[base.tolist(), view.base is base, bool(np.shares_memory(view, base)), d1.tolist(), "
             "float(t), float(twice()), int(rng.integers(0, 10**6)), 'd0' in globals()]")
    ref = make_kernel()
    for cells in hops:
        run_all(ref, cells)
    want = ref.value(probe)
    k = make_kernel()
    for i, cells in enumerate(hops[:-1]):
        run_all(k, cells)
        url = (tmp_path / f"hop{i}").as_uri()
        checkpoint(k, url, **plans[i])
        k.shutdown()
        k = make_kernel()
        r = restore(k, url)
        assert_verified(r)
    assert r["rerun_cells"] and min(r["rerun_cells"]) < len(hops[0])  # kernel A's cells re-ran
    assert k.value(probe) == want


def test_a_column_of_a_shipped_frame_stays_apart_from_it_when_the_frame_is_written_after_restore(
        make_kernel, tmp_path):
    """pandas copies memory a column shares with its frame when either is written
    (copy-on-write). Shipped, the two came back sharing memory without the references that
    make pandas copy it: `df.loc[0, 'a'] = 100` in the restored kernel changed `col` too,
    and the next checkpoint took that for the session (a replay then recreated the original
    `col` and the restore reported it as different)."""
    cells = ["import numpy as np, pandas as pd",
             "df = pd.DataFrame({'a': np.arange(4), 'b': list('wxyz')})\ncol = df['a']"]
    a = make_kernel()
    run_all(a, cells)
    checkpoint(a, (tmp_path / "s").as_uri(), strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, (tmp_path / "s").as_uri()))
    b.ok("df.loc[0, 'a'] = 100\ncol.iloc[1] = -1")
    assert b.value("[col.tolist(), df['a'].tolist()]") == [[0, -1, 2, 3], [100, 1, 2, 3]]


def test_a_generator_a_re_run_makes_and_the_restore_drops_binds_no_name_as_it_closes(
        make_kernel, tmp_path):
    """The generator `g` (its `finally` binds `closed`) is lost at the first hop (the cell
    that last changed it failed). At the second, re-running its cell (for `gen`) bound `g`
    again, which the checkpoint of B does not have: the restore dropped it, its `finally`
    ran and bound `closed`, a variable neither A nor B ever had, and the restore verified."""
    a = make_kernel()
    run_all(a, ["def gen():\n    try:\n        yield 1\n    finally:\n        globals()['closed'] = True\n"
                "g = gen()\nnext(g)"])
    a.run("held = [g]\n1/0")
    checkpoint(a, (tmp_path / "one").as_uri())
    b = make_kernel()
    r = restore(b, (tmp_path / "one").as_uri())
    assert sorted(r["lost"]) == ["g", "held"], r["lost"]
    b.ok("x = 1")
    checkpoint(b, (tmp_path / "two").as_uri(), strategy="recompute-all")
    c = make_kernel()
    r2 = restore(c, (tmp_path / "two").as_uri())
    assert_verified(r2)
    assert 0 in r2["rerun_cells"], r2["rerun_cells"]
    assert c.value("['closed' in globals(), 'g' in globals(), x, gen.__name__]") == [
        False, False, 1, "gen"]
