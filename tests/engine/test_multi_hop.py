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
    said nothing. The restore names the cell; at the next hop again (the variable stays, the
    cell stays unrun), and never the cell that called restore (the process state its re-runs
    set is no change of that cell)."""
    a = make_kernel()
    run_all(a, ["import os", "lst = []", "os.environ['HOPS_ENV'] = 'a'\nlst.append(1)",
                "os.environ['HOPS_PLAIN'] = 'b'"])
    checkpoint(a, (tmp_path / "one").as_uri(), strategy="ship-all")
    b = make_kernel()
    r = restore(b, (tmp_path / "one").as_uri())
    assert_verified(r)
    assert b.value("[lst, os.environ.get('HOPS_ENV'), os.environ.get('HOPS_PLAIN')]") == [
        [1], None, "b"]
    named = [w for w in r["warnings"] if "process state" in w]
    assert len(named) == 1 and named[0].startswith("cell 2 "), r["warnings"]
    b.ok("lst.append(2)")
    checkpoint(b, (tmp_path / "two").as_uri(), strategy="ship-all")
    c = make_kernel()
    r2 = restore(c, (tmp_path / "two").as_uri())
    assert_verified(r2)
    assert c.value("[lst, os.environ.get('HOPS_PLAIN')]") == [[1, 2], "b"]
    assert [w for w in r2["warnings"] if "process state" in w] == named
