"""Aliasing: objects shared between variables must stay shared after a restore.

Views of arrays kept in containers, a Series that is a column of a frame, self-referencing
lists, bound methods, partials, closures that share a cell, a big array reachable from a small
variable. Both plans must restore every identity relation, checked in kernel B.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate

CELLS = [
    "import functools\nimport numpy as np, pandas as pd",
    "a = np.arange(10.0)",
    "d = {'v': a[2:5]}",
    "a[3] = 99",
    "df = pd.DataFrame({'x': np.arange(5.0), 'y': np.ones(5)})",
    "col = df['x']",
    "first = [1]",
    "second = [first]",
    "first.append(second)",
    "class Box:\n    def __init__(self):\n        self.items = []\n    def add(self, v):\n        self.items.append(v)",
    "box = Box()",
    "add = box.add",
    "add(1)",
    "log = []",
    "append_log = functools.partial(list.append, log)",
    "append_log('x')",
    "big = np.arange(1_000_000.0)",
    "small = {'ref': big, 'n': 1}",
    "ba = bytearray(8)",
    "over = np.frombuffer(ba, dtype=np.uint8)",
    "ba[0] = 5",
]

EXPR = ("[bool(np.shares_memory(a, d['v'])), d['v'].tolist(), col.tolist(), second[0] is first, "
        "first[1] is second, add.__self__ is box, box.items, append_log.args[0] is log, log, "
        "small['ref'] is big, over.tolist()]")


def test_shared_objects_stay_shared(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, CELLS)
    want = a.value(EXPR)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(EXPR) == want, r.plan
        # writes through one name are seen through the other
        r.kernel.ok("a[2] = -1.0; first.append(0); add(2)")
        assert r.kernel.value("[float(d['v'][0]), second[0][-1], box.items]") == [-1.0, 0, [1, 2]]


def test_closures_sharing_a_nonlocal_still_share_it(make_kernel, tmp_path):
    # cloudpickle gives each function fresh closure cells: shipped, `inc` and `get` came back
    # over two different `n` (the restore reported a mismatch; the session was not the same)
    a, out = migrate_both(make_kernel, tmp_path, [
        "def make_pair():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n"
        "    def get():\n        return n\n    return inc, get",
        "inc, get = make_pair()",
        "inc(); inc(); open('shipped.txt', 'w').close()",  # not re-runnable: shipped
        "def make_rec():\n    def rec(k):\n        return 0 if k == 0 else 1 + rec(k - 1)\n    return rec",
        "rec = make_rec()",
    ])
    optimal = out["optimal"]
    assert optimal.checkpoint["variables"]["inc"] == "ship"
    assert_verified(optimal)
    assert optimal.kernel.value("[get(), inc.__closure__[0] is get.__closure__[0], rec(4)]") == [2, True, 4]
    optimal.kernel.ok("inc()")
    assert optimal.kernel.value("get()") == 3
    assert out["replay"].restore["mismatched"] == []


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_dict_views_stay_views_of_their_dict(make_kernel, tmp_path, strategy):
    # `kv = d.keys()` is a live view of `d`, which it holds but does not expose: taken for an
    # opaque object of its own, the optimal plan shipped `d` and re-ran the cell that made `kv`
    # (a view of the re-run `d`, stale), and ship-all's pickle made it a view of a copy
    cells = ["import collections\nd = {'a': 1, 'b': 2}\nkv = d.keys()\nvv = d.values()\niv = d.items()\n"
             "od = collections.OrderedDict(x=1)\nok = od.keys()",
             "d['n'] = 3\nod['y'] = 2",
             "snap = list(kv)",
             "del d['a']"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[list(kv), list(vv), [list(p) for p in iv], snap, list(ok)]") == [
        ["b", "n"], [2, 3], [["b", 2], ["n", 3]], ["a", "b", "n"], ["x", "y"]]
    b.ok("d['z'] = 9\nod['w'] = 0")
    assert b.value("[list(kv), list(ok), type(ok).__name__]") == [["b", "n", "z"], ["x", "y", "w"], "odict_keys"]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_mapping_proxy_stays_a_window_on_its_dict(make_kernel, tmp_path, strategy):
    # walked by its items and pickled (by cloudpickle) over a copy: after a restore the
    # read-only view no longer showed what the notebook wrote into the dict behind it
    cells = ["import types\nbacking = {'a': [1]}\nro = types.MappingProxyType(backing)",
             "backing['b'] = 2",
             "backing['a'].append(3)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("backing['c'] = 0")
    assert b.value("[dict(ro), ro['a'] is backing['a']]") == [{"a": [1, 3], "b": 2, "c": 0}, True]


def test_an_array_over_an_array_array_stays_a_window_on_it(make_kernel, tmp_path):
    # like np.frombuffer(bytearray): numpy's own reduce copied the bytes, so after a ship
    # writes to the array.array no longer showed through the numpy array
    cells = ["import array, numpy as np\nraw = array.array('d', [1.0, 2.0, 3.0, 4.0])\n"
             "view = np.frombuffer(raw, dtype=np.float64)[1:]",
             "raw[1] = 10.0"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert_restore_verified(r)
    b.ok("raw[2] = -1.0")
    assert b.value("view.tolist()") == [10.0, -1.0, 4.0]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_an_iterator_keeps_iterating_over_the_notebooks_list(make_kernel, tmp_path, strategy):
    # a C iterator was opaque and linked to nothing: `it` and `lst` were two co-variables,
    # pickled apart, so after a restore `it` iterated over a copy and missed later appends
    cells = ["lst = [1, 2, 3]\nit = iter(lst)\nnext(it)",
             "lst.append(4)",
             "xs = [1, 2, 3]\nz = zip(xs, 'abc')\nnext(z)\nen = enumerate(xs)\nnext(en)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("lst.append(5)\nxs[1] = 20")
    assert b.value("[list(it), list(z), list(en)]") == [[2, 3, 4, 5], [[20, "b"], [3, "c"]], [[1, 20], [2, 3]]]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_generator_over_the_notebooks_list_is_recomputed_with_it(make_kernel, tmp_path, strategy):
    # a generator cannot be pickled: its cell re-ran at restore, over that cell's own new `lst`,
    # while the shipped `lst` (with the later append) was put in place apart from it
    cells = ["lst = [1, 2, 3]\ng = (x * 10 for x in lst)\nfirst = next(g)",
             "lst.append(4)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("lst.append(5)")
    assert b.value("[first, list(g)]") == [10, [20, 30, 40, 50]]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_generator_looping_over_a_global_list_is_recomputed_with_it(make_kernel, tmp_path,
                                                                      strategy):
    """A generator function's `for x in lst` keeps its iterator on the frame's value stack, not
    in its locals: `gen` and `lst` were two co-variables, `lst` was shipped with the later
    append and the re-run cell left `gen` walking the list it had made (digest: type only)."""
    cells = ["lst = [1, 2, 3]\ndef walk():\n    for x in lst:\n        yield x * 10\n"
             "gen = walk()\nhead = next(gen)",
             "lst.append(4)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("lst.append(5)")
    assert b.value("[head, list(gen)]") == [10, [20, 30, 40, 50]]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_exit_stack_callbacks_and_method_callers_keep_their_targets(make_kernel, tmp_path, strategy):
    # a library closure (ExitStack's callback wrapper) and a C object (methodcaller) linked to
    # nothing: restored apart from `log` and `target`, they appended to copies
    cells = ["import contextlib, operator\nlog = []\nstack = contextlib.ExitStack()\n"
             "stack.callback(log.append, 'closed')",
             "target = []\nadd = operator.methodcaller('append', target)",
             "log.append('open')\ntarget.append('t')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("stack.close()\nholder = []\nadd(holder)")
    assert b.value("[log, holder[0] is target]") == [["open", "closed"], True]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_view_of_the_namespace_is_one_of_the_restored_namespace(make_kernel, tmp_path, strategy):
    # walked as its dict, `globals().keys()` tied every variable to it and its digest (the whole
    # namespace, the restore's own names included) never verified
    cells = ["gk = globals().keys()\nx = [1]", "y = {'k': x}"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("zz = 1")
    assert b.value("['x' in gk, 'zz' in gk, y['k'] is x]") == [True, True, True]
