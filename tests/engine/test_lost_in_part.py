"""A co-variable that can be neither shipped nor recomputed is lost, but only what must be.

Its names share objects, so they are planned together; once the part that cannot come back is
gone, what the rest shared with it no longer matters, and a name its own cells recreate comes
back, verified against a digest of its own. And a lost name is absent after the restore: a cell
re-run for other variables that bound it in passing gave it an earlier version, which looked
restored while the report said lost.
"""

from __future__ import annotations

from tests.engine.adversarial import migrate_both

# `frame` has no pickle and cell 1 writes a file: `holder` (which holds `rows`) is lost
SHARED = [
    "rows = [1, 2, 3]\ntotal = sum(rows)",
    "holder = {'rows': rows, 'frame': __import__('sys')._getframe()}\n"
    "open('made.txt', 'w').close()",
]


def test_a_name_its_own_cells_recreate_comes_back_when_what_holds_it_is_lost(make_kernel, tmp_path):
    _, out = migrate_both(make_kernel, tmp_path, SHARED)
    for r in out.values():
        v = r.restore["variables"]
        assert v["holder"]["action"] == "lost", (r.plan, v)
        assert "cannot be re-run" in v["holder"]["detail"] and "rows" in v["holder"]["detail"]
        assert v["rows"].get("verified") and v["total"].get("verified"), (r.plan, v)
        assert r.kernel.value("[rows, total]") == [[1, 2, 3], 6]
        assert r.kernel.value("'holder' in dir()") is False
        assert r.checkpoint["lost"] == {"holder": v["holder"]["detail"]}


def test_a_deadline_loses_only_what_its_cells_cannot_recreate(make_kernel, tmp_path):
    cells = ["rows = [1, 2, 3]", "holder = [rows]\nopen('made.txt', 'w').close()"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    replay = out["replay"].restore["variables"]  # (nothing may be shipped in it)
    assert replay["holder"]["action"] == "lost" and "deadline" in replay["holder"]["detail"]
    assert replay["rows"] == {"action": "recomputed", "verified": True}
    optimal = out["optimal"]
    assert optimal.restore["verified"]
    assert optimal.kernel.value("holder[0] is rows") is True


def test_a_name_changed_by_a_cell_that_cannot_be_re_run_stays_lost_with_its_holder(
        make_kernel, tmp_path):
    cells = ["rows = [1, 2, 3]",
             "rows.append(4)\nholder = [rows, __import__('sys')._getframe()]\n"
             "open('made.txt', 'w').close()"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert set(r.restore["lost"]) == {"holder", "rows"}, (r.plan, r.restore["variables"])
        assert r.kernel.value("'rows' in dir()") is False


def test_a_lost_name_a_re_run_cell_binds_in_passing_is_removed(make_kernel, tmp_path):
    # cell 0 is re-run for `base`; it also binds `m`, whose last version cell 1 made
    cells = ["base = 10\nm = [base]",
             "m.append(__import__('sys')._getframe())\nopen('made.txt', 'w').close()",
             "shifted = base + 1"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    replay = out["replay"]
    assert 0 in replay.restore["rerun_cells"]
    for r in out.values():
        v = r.restore["variables"]
        assert v["m"]["action"] == "lost" and v["base"].get("verified"), (r.plan, v)
        assert r.kernel.value("'m' in dir()") is False, r.plan
    assert "in passing" in replay.restore["lost"]["m"]


NOPICKLE = ("class NoPickle:\n    def __init__(self, v):\n        self.v = v\n"
            "    def __reduce_ex__(self, protocol):\n        raise TypeError('no pickle')\n")


def test_names_a_lost_holder_gathered_from_two_cells_come_back_and_it_is_removed(
        make_kernel, tmp_path):
    """`h` gathers `p` (cell 0) and `q` (cell 1) in a cell that cannot be re-run: p and q are
    recomputed by their own cells (the append changed h, not them), and h, which cell 0 binds
    in passing to its first version, is removed."""
    cells = [NOPICKLE + "p = NoPickle([1])\nh = [p]", "q = NoPickle([2])",
             "h.append(q)\nopen('made.txt', 'w').close()"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        v = r.restore["variables"]
        assert v["h"]["action"] == "lost" and "in passing" in v["h"]["detail"], (r.plan, v)
        assert v["p"].get("verified") and v["q"].get("verified"), (r.plan, v)
        assert r.kernel.value("[p.v, q.v, 'h' in dir()]") == [[1], [2], False]


def test_aliases_recomputed_apart_from_their_lost_holder_keep_their_identity(
        make_kernel, tmp_path):
    """Two names of one object made by two cells come back together, one object, checked
    against one digest of both."""
    cells = [NOPICKLE + "a = NoPickle([1])", "b = a", "holder = [a, 5]\nopen('made.txt', 'w').close()"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        v = r.restore["variables"]
        assert v["holder"]["action"] == "lost", (r.plan, v)
        assert v["a"].get("verified") and v["b"].get("verified"), (r.plan, v)
        assert r.kernel.value("[a is b, a.v]") == [True, [1]]
