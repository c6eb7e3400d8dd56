"""A value is recomputed by its own cells although a later cell that cannot be re-run changed
a holder of it, deleted one or made another: that cell did not change the value.

`rows` cannot be shipped (no pickle), so it comes back only by re-running the cells its
history names. A cell recorded as mutating it when it only changed, deleted or rebound a list
holding it (a co-variable was mutated as a whole; or its fingerprint, a link to the holder
walked before it, changed when the holder went away) became a requirement of `rows`, and as
it writes a file, `rows` was lost.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_verified, migrate_both

NOPICKLE = ("class NoPickle:\n    def __init__(self, v):\n        self.v = v\n"
            "    def __reduce_ex__(self, protocol):\n        raise TypeError('no pickle')\n"
            "rows = NoPickle([1, 2])")
WRITE = "\nopen('made.txt', 'w').close()"


def test_a_value_whose_holder_a_later_cell_appended_to_is_recomputed(make_kernel, tmp_path):
    cells = [NOPICKLE, "a_holder = [rows]", "a_holder.append(3)" + WRITE]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        v = r.restore["variables"]
        assert v["a_holder"]["action"] == "lost", (r.plan, v)
        assert v["rows"].get("verified") and v["rows"]["action"] == "recomputed", (r.plan, v)
        assert r.kernel.value("rows.v") == [1, 2]
        assert r.kernel.value("'a_holder' in dir()") is False


def test_a_value_whose_holder_a_later_cell_deleted_is_recomputed(make_kernel, tmp_path):
    cells = [NOPICKLE, "a_holder = [rows]", "del a_holder" + WRITE]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert_verified(r)
        assert r.restore["variables"]["rows"]["action"] == "recomputed"
        assert r.kernel.value("[rows.v, 'a_holder' in dir()]") == [[1, 2], False]


def test_a_value_whose_holder_a_later_cell_rebound_is_recomputed(make_kernel, tmp_path):
    cells = [NOPICKLE, "a_holder = [rows]", "a_holder = [0]" + WRITE]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        v = r.restore["variables"]
        assert v["rows"].get("verified") and v["rows"]["action"] == "recomputed", (r.plan, v)
        assert r.kernel.value("rows.v") == [1, 2]
    # (a_holder's own value is the file-writing cell's: shipped, or lost when nothing may be)
    assert out["optimal"].restore["variables"]["a_holder"].get("verified")
    assert out["optimal"].kernel.value("a_holder") == [0]
    assert out["replay"].restore["variables"]["a_holder"]["action"] == "lost"


def test_a_second_holder_taking_over_from_a_deleted_one_is_recomputed(make_kernel, tmp_path):
    # deleting a1 moves the walk of rows' objects to a2: neither a2 nor rows changed
    cells = [NOPICKLE, "a1 = [rows]\na2 = [rows]", "del a1" + WRITE]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[a2[0] is rows, rows.v, 'a1' in dir()]") == [True, [1, 2], False]


def test_a_value_changed_through_a_holder_in_a_cell_that_cannot_be_re_run_is_lost(
        make_kernel, tmp_path):
    # the real mutation is still one: rows' last version came from the cell that wrote the file
    cells = [NOPICKLE, "a_holder = [rows]", "a_holder[0].v.append(3)\ndel a_holder" + WRITE]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert r.restore["variables"]["rows"]["action"] == "lost", (r.plan, r.restore)
        assert r.kernel.value("'rows' in dir()") is False


def test_a_frame_a_later_cell_that_cannot_be_re_run_appended_a_summary_next_to_is_recomputed(
        make_kernel, tmp_path):
    """The replay plan ships nothing: `frames`, whose last change was the file-writing cell's,
    is lost; `df`, which that cell did not change, is recomputed by its own cell (it was lost
    with `frames`: the append mutated the whole co-variable)."""
    cells = ["import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})",
             "frames = [df]",
             "frames.append(df.describe())\nopen('report.txt', 'w').write(str(frames[-1]))"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    replay = out["replay"].restore["variables"]
    assert replay["frames"]["action"] == "lost", replay
    assert replay["df"] == {"action": "recomputed", "verified": True}, replay
    assert out["replay"].kernel.value("df.a.tolist()") == [1, 2, 3]
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("frames[0] is df") is True
