"""In-place changes made through library and C-level calls that leave no assignment behind.

`a.setflags(write=False)`, `df.flags.allows_duplicate_labels = False`, ... change a value
without any name being rebound. Missed by the mutation check, the history graph keeps the cell
that made the value as its producer, a replay re-runs only that cell, and unless the digest sees
the difference the restore verifies a value that is not the one checkpointed. With them:
values that hold `id()`s (an address means nothing in another process), identities that a
library's own pickle drops (pandas' `attrs`, ctypes views of a bytearray), and names the
checkpoint leaves out (`_cache`). Each scenario compares the restored values with the
originals itself, not only the verified flag.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate


def test_an_array_made_read_only_comes_back_read_only(make_kernel, tmp_path):
    # the writeable flag was in neither the fingerprint nor the digest: the replay re-ran
    # `a = np.arange(5.0)` alone and a writeable `a` verified
    expr = "[a.flags.writeable, v.flags.writeable, a.tolist()]"
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np",
        "a = np.arange(5.0)",
        "v = a[1:]",
        "a.setflags(write=False)",
    ])
    want = a.value(expr)
    assert want[0] is False
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_a_frame_forbidding_duplicate_labels_still_forbids_them(make_kernel, tmp_path):
    # pandas' flags were not walked: `df.flags.allows_duplicate_labels = False` was lost by a
    # replay of the cell that made `df`, which verified
    expr = "[df.flags.allows_duplicate_labels, s.flags.allows_duplicate_labels]"
    a, out = migrate_both(make_kernel, tmp_path, [
        "import pandas as pd",
        "df = pd.DataFrame({'x': [1, 2]})",
        "s = pd.Series([1.0, 2.0])",
        "df.flags.allows_duplicate_labels = False",
        "s.flags.allows_duplicate_labels = False",
    ])
    want = a.value(expr)
    assert want == [False, False]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


NODES = "class Node:\n    def __init__(self, v):\n        self.v = v\nnodes = [Node(i) for i in range(3)]"


def test_an_index_keyed_by_id_that_cannot_be_re_run_is_not_verified(make_kernel, tmp_path):
    # shipped, `index` came back with the checkpointed process's addresses as keys: every
    # lookup missed, and it verified (the keys are ints, equal to the ints checkpointed)
    a, out = migrate_both(make_kernel, tmp_path, [
        NODES,
        "index = {id(o): o for o in nodes}\nopen('log.txt', 'w').close()",
    ])
    for r in out.values():
        v = r.restore["variables"]["index"]
        if v.get("verified"):
            assert r.kernel.value("all(index[id(o)] is o for o in nodes)"), r.plan
        else:
            assert "id()" in v["detail"] or v["action"] == "lost", (r.plan, v)
    optimal = out["optimal"].restore
    assert optimal["variables"]["index"]["action"] == "loaded"
    assert "index" in optimal["mismatched"] and "id()" in optimal["variables"]["index"]["detail"]


def test_ids_of_objects_are_made_again_not_shipped(make_kernel, tmp_path):
    # `ids` was shipped (ship-all) and verified, holding the addresses `nodes` had in the
    # checkpointed process; re-running its cell makes the ids of the restored objects
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), [
        NODES + "\nopen('log.txt', 'w').close()",
        "def key_of(o):\n    return id(o)",
        "ids = [key_of(o) for o in nodes]",
    ], strategy="ship-all")
    assert c["variables"]["ids"] == "recompute"
    assert r["variables"]["ids"]["action"] == "recomputed"
    assert b.value("ids == [id(o) for o in nodes]")
    # verified: each id is that of the restored object at the place the checkpointed one's was
    assert r["variables"]["ids"]["verified"], r["variables"]["ids"]


def test_an_index_keyed_by_id_that_is_re_run_verifies_and_finds_its_objects(make_kernel, tmp_path):
    # re-run, the index holds the ids of the restored objects: right, but its digest (ints)
    # could not match the checkpointed one, and it was reported as differing
    expr = "[all(index[id(o)] is o for o in nodes), seen == {id(o) for o in nodes}]"
    a, out = migrate_both(make_kernel, tmp_path, [
        NODES,
        "index = {id(o): o for o in nodes}",
        "seen = {id(o) for o in nodes}",
    ])
    assert a.value(expr) == [True, True]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == [True, True], r.plan


def test_a_functions_name_doc_and_annotations_set_after_its_def_come_back(make_kernel, tmp_path):
    # neither the fingerprint nor the digest held them: a replay re-ran the def alone and the
    # function verified with its old name, no docstring and empty annotations
    expr = "[g.__name__, g.__doc__, h.__annotations__ == {'a': int}]"
    a, out = migrate_both(make_kernel, tmp_path, [
        "def g():\n    return 1",
        "g.__name__ = 'renamed'",
        "g.__doc__ = 'set later'",
        "def h(a):\n    return a",
        "h.__annotations__['a'] = int",
    ])
    want = a.value(expr)
    assert want == ["renamed", "set later", True]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_fields_of_a_structured_array_renamed_in_place_keep_their_names(make_kernel, tmp_path):
    # arrays were named by `dtype.str`, '|V12' whatever the fields are called: the rename was
    # no change, and a replay of the cell that made `rec` verified with the old names
    expr = "[rec.dtype.names, rec['a'].tolist()]"
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np",
        "rec = np.zeros(2, dtype=[('x', 'f8'), ('y', 'i4')])",
        "rec.dtype.names = ('a', 'b')",
        "rec['a'][0] = 1.5",
    ])
    want = a.value(expr)
    assert want == [["a", "b"], [1.5, 0.0]]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_a_name_for_a_frames_attrs_stays_the_frames_attrs(make_kernel, tmp_path):
    # pandas' unpickling copies `attrs` (its __setstate__ assigns them through the property),
    # and the digest walked them without their identity: shipped, `meta` came back a copy,
    # writes through it no longer reached `df`, and the restore verified
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), [
        "import pandas as pd",
        "df = pd.DataFrame({'a': [1, 2]})",
        "meta = df.attrs",
        "meta['source'] = 'survey'",
        "s = pd.Series([1.0])\ns_meta = s.attrs",
    ], strategy="ship-all")
    assert_restore_verified(r)
    assert r["variables"]["meta"]["action"] == "loaded"
    assert b.value("[meta is df.attrs, s_meta is s.attrs, df.attrs]") == [True, True, {"source": "survey"}]


def test_names_starting_with_an_underscore_are_said_not_to_be_checkpointed(make_kernel, tmp_path):
    # `_cache` is no user variable (IPython's convention, kept by `user_names`): no checkpoint
    # kept it, and the restore verified everything while it was gone
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), [
        "_cache = {'a': 1}",
        "_cache['b'] = 2",
        "kept = 1",
        "1 + 1",  # IPython's own `_`, `_4`, `_i4`... are not the user's
    ], strategy="ship-all")
    assert list(c["not_checkpointed"]) == ["_cache"]
    assert list(r["not_checkpointed"]) == ["_cache"] and "missing" in r["not_checkpointed"]["_cache"]
    assert any("_cache" in w for w in r["warnings"])
    assert b.value("'_cache' in globals()") is False


def test_a_ctypes_view_of_a_bytearray_still_writes_into_it(make_kernel, tmp_path):
    # ctypes pickles an object as a copy of its bytes: shipped, `x` came back over memory of
    # its own and `x.value = 9` no longer reached `ba`, and a notebook-made array type
    # (`c_int * 2`) did not load at all
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), [
        "import ctypes",
        "ba = bytearray(16)",
        "x = ctypes.c_int.from_buffer(ba, 4)\npair = (ctypes.c_int * 2).from_buffer(ba, 8)",
        "x.value = 7\npair[1] = 3",
    ], strategy="ship-all")
    assert_restore_verified(r)
    b.ok("x.value = 9\npair[0] = 5")
    assert b.value("list(ba)") == [0, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0]
