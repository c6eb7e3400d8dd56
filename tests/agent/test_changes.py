"""Unit tests for kernel_agent.changes (in-process; no kernel needed).

Notebook code is simulated by exec-ing source in a dict whose ``__name__`` is ``"__main__"``,
which is what an IPython user namespace looks like to the tracker.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import enum
import fractions
import gc
import io
import json
import os
import pickle
import random
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import types
import weakref
from collections import OrderedDict, defaultdict, deque, namedtuple
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_agent.changes import (
    Tracker,
    digest_report,
    id_tokens,
    opaque_names,
    reachable_size,
    value_digest,
)

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def nb(src: str = "", **extra: Any) -> dict[str, Any]:
    """A notebook-like namespace after running `src`."""
    ns: dict[str, Any] = {"__name__": "__main__", "np": np, **extra}
    exec(textwrap.dedent(src), ns)
    return ns


def user_names(ns: dict[str, Any]) -> list[str]:
    return [n for n, v in ns.items() if not n.startswith("__") and type(v) is not types.ModuleType]


def tracked(src: str, **extra: Any) -> tuple[Tracker, dict[str, Any]]:
    ns = nb(src, **extra)
    t = Tracker()
    t.reset(ns, user_names(ns))
    return t, ns


def run(t: Tracker, ns: dict[str, Any], src: str, touched: list[str], removed=()):
    exec(textwrap.dedent(src), ns)
    return t.update(ns, touched, removed)


def group(t: Tracker, *names: str) -> bool:
    return t.covariable_of(names[0]) >= frozenset(names)


# ------------------------------------------------------------------------------------------
# mutation detection
# ------------------------------------------------------------------------------------------


def test_untouched_by_change_is_not_reported():
    t, ns = tracked(
        """
        import pandas as pd, datetime, decimal, fractions, collections
        a = [1, 2, [3, {"k": (4, 5)}]]
        s = {"x", "y", "z"}
        fs = frozenset({"p", "q"})
        arr = np.arange(1000.0).reshape(10, 100)
        view = arr[2:5, ::3]
        df = pd.DataFrame({"i": [1, 2, 3], "s": ["a", "b", "c"], "c": pd.Categorical(["u", "v", "u"])})
        ser = df["i"] * 2
        when = (datetime.datetime(2024, 1, 1), decimal.Decimal("1.1"), fractions.Fraction(1, 3))
        od = collections.OrderedDict(a=1)
        dd = collections.defaultdict(list, {"k": [1]})
        dq = collections.deque([1, [2]], maxlen=5)
        r = range(10)
        class K:
            z = 1
            def m(self):
                return self.z
        k = K()
        def f(x, y=[1]):
            return x + a[0]
        lam = lambda q: q * 2
        """
    )
    names = user_names(ns)
    upd = t.update(ns, names, [])
    assert upd.mutated == set() and upd.rebound == set() and upd.opaque == set()
    upd = t.update(ns, names, [])
    assert upd.mutated == set()


def test_fields_renamed_in_place_after_a_walk_are_a_mutation_of_the_array():
    """A structured dtype's key is kept per dtype object between walks (its ``str`` is slow);
    renaming the fields sets the same dtype's ``names``, which must still show."""
    t, ns = tracked("rec = np.zeros(3, dtype=[('x', 'f8'), ('y', 'i4')])")
    assert t.update(ns, ["rec"], []).mutated == set()  # (walked again: the key is cached)
    upd = run(t, ns, "rec.dtype.names = ('a', 'b')", ["rec"])
    assert "rec" in upd.mutated


def test_an_unchanged_partial_is_not_reported_when_touched():
    """A partial without an instance dict used to be walked with a `{}` made for the walk,
    whose id differed every time: every cell touching it mutated it."""
    t, ns = tracked(
        """
        import functools
        def power(base, exp):
            return base ** exp
        square = functools.partial(power, exp=2)
        """
    )
    assert t.update(ns, ["square"], []).mutated == set()
    assert t.update(ns, ["square", "power"], []).mutated == set()
    upd = run(t, ns, "square.keywords['exp'] = 3", ["square"])
    assert upd.mutated == {"square"}  # (power, which it reaches, did not change)


@pytest.mark.parametrize("value", ["{'k': [1]}", "[[1], 2]", "np.arange(3)",
                                   "__import__('re').compile('a+').match('aa')"])
def test_a_new_holder_named_before_a_value_does_not_mutate_it(value):
    """The first name walked covers what it reaches: a new name sorted before `m` holding it
    made `m`'s walk a link, and the cell that made the holder was taken to have changed `m`
    (whose history then said so: it could not be recreated by its own cells any more)."""
    t, ns = tracked(f"m = {value}")
    upd = run(t, ns, "a_holder = [m]", ["a_holder", "m"])
    assert upd.mutated == set() and upd.rebound == {"a_holder"}
    assert group(t, "a_holder", "m")
    assert run(t, ns, "b_alias = m", ["b_alias", "m"]).mutated == set()


def test_a_value_changed_as_it_gets_a_new_holder_is_mutated():
    t, ns = tracked("m = {'k': [1]}")
    upd = run(t, ns, "m['k'].append(2)\na_holder = [m]", ["a_holder", "m"])
    assert upd.mutated == {"m"}


def test_reading_a_regex_match_does_not_mutate_it():
    """A match object has no pickle: walked as opaque, every cell that read it (`m.group(1)`)
    counted as changing it."""
    t, ns = tracked("import re\nm = re.compile(r'(\\w+)-(\\d+)').match('abc-123')")
    assert run(t, ns, "g = m.group(2)", ["g", "m"]).mutated == set()
    assert t.update(ns, ["m"], []).opaque == set()


def test_an_exec_namespace_is_not_mutated_by_the_shell_rewriting_builtins():
    """`exec(code, env)` puts the process's builtins dict into `env`; IPython and ipykernel
    rewrite it around every execution, so walked by value every cell touching `env` (and
    every checkpoint's look for changes made outside cells) saw a mutation."""
    import builtins

    t, ns = tracked("env = {}\nexec('a = 1', env)")
    assert ns["env"]["__builtins__"] is builtins.__dict__
    builtins._elastic_probe = 1
    try:
        assert t.update(ns, ["env"], []).mutated == set()
        assert t.drifted(ns, ["env"]) == set()
    finally:
        del builtins._elastic_probe
    assert run(t, ns, "exec('a = 2', env)", ["env"]).mutated == {"env"}


def test_an_alias_of_sys_modules_is_not_mutated_by_an_import():
    import sys

    t, ns = tracked("import sys\nm = sys.modules")
    sys.modules["_elastic_probe_module"] = types.ModuleType("_elastic_probe_module")
    try:
        assert t.update(ns, ["m"], []).mutated == set()
        assert t.drifted(ns, ["m"]) == set()
        assert not t.plain("m", ns["m"])  # it leads to modules: the read analysis looks in
    finally:
        del sys.modules["_elastic_probe_module"]


def test_an_unchanged_weak_method_is_not_reported_when_touched():
    t, ns = tracked(
        """
        import weakref
        class C:
            def __init__(self):
                self.n = 0
            def bump(self):
                self.n += 1
        c = C()
        wm = weakref.WeakMethod(c.bump)
        """
    )
    assert t.update(ns, ["wm"], []).mutated == set()
    assert t.drifted(ns, ["wm", "c", "C"]) == set()
    assert run(t, ns, "wm()()", ["wm"]).mutated == {"wm", "c"}  # (not the class)


def test_list_element_replaced():
    t, ns = tracked("a = [1, 2, 3]")
    assert run(t, ns, "a[1] = 20", ["a"]).mutated == {"a"}


def test_list_element_replaced_by_equal_copy_breaks_identity():
    t, ns = tracked("x = [1]\na = [x, x]")
    upd = run(t, ns, "a[1] = [1]", ["a"])
    assert "a" in upd.mutated


def test_list_append():
    t, ns = tracked("a = [1, 2, 3]")
    assert run(t, ns, "a.append(4)", ["a"]).mutated == {"a"}


def test_big_int_list_append_detected():
    t, ns = tracked("a = list(range(1_000_000))")
    assert run(t, ns, "a[999_999] += 1", ["a"]).mutated == {"a"}


def test_record_tuples_in_a_list_changed_or_appended():
    t, ns = tracked("hist = [('pay', 'bob', 5.0), ('deposit', 2.5)]\nother = [('x', 1)]")
    assert run(t, ns, "hist.append(('pay', 'eve', 1.0))", ["hist", "other"]).mutated == {"hist"}
    assert run(t, ns, "hist[0] = ('pay', 'bob', 5.5)", ["hist"]).mutated == {"hist"}
    assert run(t, ns, "hist[1] = ('deposit', 2.5)", ["hist"]).mutated == set()


def test_attribute_set():
    t, ns = tracked(
        """
        class P:
            pass
        p = P()
        p.x = 1
        """
    )
    upd = run(t, ns, "p.y = 2", ["p"])
    assert "p" in upd.mutated and not upd.rebound


def test_slots_attribute_set():
    t, ns = tracked(
        """
        class S:
            __slots__ = ("a", "__b")
            def __init__(self):
                self.a = 1
        s = S()
        """
    )
    assert "s" in run(t, ns, "s._S__b = 5", ["s"]).mutated
    assert "s" in run(t, ns, "s.a = [1]", ["s"]).mutated


def test_nested_dict_changed():
    t, ns = tracked('cfg = {"model": {"layers": [1, 2], "opt": {"lr": 0.1}}}')
    assert run(t, ns, 'cfg["model"]["opt"]["lr"] = 0.2', ["cfg"]).mutated == {"cfg"}


def test_set_add_and_remove():
    t, ns = tracked('s = {"a", "b"}')
    assert run(t, ns, 's.add("c")', ["s"]).mutated == {"s"}
    assert run(t, ns, 's.discard("a")', ["s"]).mutated == {"s"}


def test_deque_and_ordered_dict_changes():
    t, ns = tracked(
        "import collections\nq = collections.deque([1])\nod = collections.OrderedDict(a=1, b=2)"
    )
    assert run(t, ns, "q.appendleft(0)", ["q"]).mutated == {"q"}
    assert run(t, ns, "od.move_to_end('a')", ["od"]).mutated == {"od"}


def test_one_count_changed_in_a_big_counter_or_defaultdict():
    t, ns = tracked(
        "import collections\nwords = [f'w{i % 3000}' for i in range(20_000)]\n"
        "counts = collections.Counter(words)\nby_len = collections.defaultdict(int)\n"
        "for w in words:\n    by_len[w] += 1"
    )
    assert run(t, ns, "n = counts['w7'] + by_len['w7']", ["counts", "by_len"]).mutated == set()
    assert run(t, ns, "counts['w7'] += 1", ["counts"]).mutated == {"counts"}
    assert run(t, ns, "by_len['w8'] -= 1", ["by_len"]).mutated == {"by_len"}
    assert run(t, ns, "counts['new'] = 0", ["counts"]).mutated == {"counts"}
    assert run(t, ns, "by_len.default_factory = float", ["by_len"]).mutated == {"by_len"}
    assert run(t, ns, "counts['w9'] = 2.5", ["counts"]).mutated == {"counts"}


def test_stdlib_dict_subclasses_of_plain_data_are_plain_unless_they_hold_code():
    t, ns = tracked(
        "import collections\ncounts = collections.Counter('abracadabra')\n"
        "groups = collections.defaultdict(list, {'a': [1, 2]})\n"
        "od = collections.OrderedDict(x=1)\nmade = collections.defaultdict(lambda: G)\n"
        "holds = collections.Counter({len: 1})\nclass Mine(collections.Counter):\n    pass\n"
        "mine = Mine('ab')"
    )
    for name in ("counts", "groups", "od"):
        assert t.plain(name, ns[name]), name
    for name in ("made", "holds", "mine"):  # a lambda, a builtin function, a notebook class
        assert not t.plain(name, ns[name]), name


RECORDS = "rows = [{'id': i, 'name': f'n{i}', 'score': i / 2, 'tags': ['a', 'b']} for i in range(5_000)]"


def test_a_list_of_records_is_plain_data_and_a_change_deep_in_it_is_seen():
    t, ns = tracked(RECORDS)
    assert t.plain("rows", ns["rows"]) and not t.is_opaque("rows")
    assert run(t, ns, "n = len(rows)", ["rows"]).mutated == set()
    assert run(t, ns, "rows[4321]['tags'].append('c')", ["rows"]).mutated == {"rows"}
    assert run(t, ns, "rows[7]['score'] = -1.0", ["rows"]).mutated == {"rows"}
    assert run(t, ns, "rows[9]['tags'] = ['a', 'b']", ["rows"]).mutated == {"rows"}  # a copy
    assert run(t, ns, "rows[3] = dict(rows[3])", ["rows"]).mutated == {"rows"}
    assert run(t, ns, "rows.append(rows[0])", ["rows"]).mutated == {"rows"}  # now shared
    assert run(t, ns, "rows.pop()", ["rows"]).mutated == {"rows"}


def test_two_hundred_thousand_records_are_walked_to_the_end():
    """Walked item by item they were past the node limit (opaque: every touch a mutation,
    and the read analysis searched them at every read)."""
    t, ns = tracked(RECORDS.replace("5_000", "200_000"))
    assert not t.is_opaque("rows") and t.plain("rows", ns["rows"])


def test_names_reaching_into_a_list_of_records_join_its_covariable():
    t, ns = tracked(RECORDS + "\nfirst = rows[0]")
    assert group(t, "rows", "first")
    run(t, ns, "tags = rows[10]['tags']", ["rows", "tags"])
    assert group(t, "rows", "first", "tags")
    assert run(t, ns, "tags.append('z')", ["tags"]).mutated >= {"tags", "rows"}
    run(t, ns, "box = {'r': rows[11], 'pad': list(range(100))}", ["rows", "box"])
    assert group(t, "rows", "box")


def test_records_beside_an_object_or_a_cycle_are_still_tracked():
    t, ns = tracked(RECORDS + "\nimport datetime\n"
                    "run = {'rows': rows, 'when': datetime.date(2024, 1, 1), 'ix': list(range(80))}")
    assert group(t, "rows", "run")
    assert run(t, ns, "run['rows'][5]['name'] = 'x'", ["run"]).mutated == {"run", "rows"}
    assert run(t, ns, "rows.append(run)", ["rows"]).mutated == {"rows", "run"}  # a cycle
    assert run(t, ns, "rows[-1]['ix'].append(1)", ["rows"]).mutated == {"rows", "run"}


POINTS = ("import dataclasses\n@dataclasses.dataclass\nclass P:\n    x: float\n    label: str\n"
          "pts = [P(i / 3, f'p{i}') for i in range(500)]")


def test_a_change_to_one_of_a_list_of_dataclass_records_is_seen():
    t, ns = tracked(POINTS)
    assert run(t, ns, "n = len(pts)", ["pts"]).mutated == set()
    assert run(t, ns, "pts[3].x = 5.0", ["pts"]).mutated == {"pts"}
    assert run(t, ns, "pts[4] = P(1, 'q')", ["pts"]).mutated == {"pts"}
    assert run(t, ns, "pts[9].extra = [1]", ["pts"]).mutated == {"pts"}
    assert run(t, ns, "pts[9].extra.append(2)", ["pts"]).mutated == {"pts"}
    assert run(t, ns, "pts[10].__dict__.clear()", ["pts"]).mutated == {"pts"}


def test_a_list_of_dataclass_records_is_one_covariable_with_its_class_and_its_items():
    t, ns = tracked(POINTS)
    assert group(t, "pts", "P")
    run(t, ns, "one = pts[7]", ["pts", "one"])
    assert group(t, "pts", "one")
    assert run(t, ns, "one.label = 'z'", ["one"]).mutated == {"one", "pts"}
    assert run(t, ns, "P.scale = 2", ["P"]).mutated == {"P", "one", "pts"}


def test_one_array_element_changed_in_100mb():
    t, ns = tracked("big = np.zeros(100 * 2**20 // 8)")
    assert run(t, ns, "big[7_654_321] = 1e-300", ["big"]).mutated == {"big"}


def test_array_changed_through_view_reports_base_and_view():
    t, ns = tracked("a = np.arange(100.0)\nv = a[10:20]")
    assert run(t, ns, "v[0] = -1", ["v"]).mutated == {"a", "v"}


def test_array_object_dtype_element_mutated():
    t, ns = tracked("o = np.empty(2, dtype=object)\no[0] = [1]\no[1] = [2]")
    assert run(t, ns, "o[0].append(5)", ["o"]).mutated == {"o"}


def test_dataframe_column_dropped_in_place():
    pytest.importorskip("pandas")
    t, ns = tracked("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [3.0, 4.0]})")
    assert run(t, ns, "del df['a']", ["df"]).mutated == {"df"}


def test_dataframe_cell_changed_in_place():
    pytest.importorskip("pandas")
    t, ns = tracked("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 's': ['x', 'y']})")
    assert run(t, ns, "df.loc[1, 'a'] = 7", ["df"]).mutated == {"df"}
    assert run(t, ns, "df.loc[0, 's'] = 'zz'", ["df"]).mutated == {"df"}
    assert run(t, ns, "df.attrs['note'] = 1", ["df"]).mutated == {"df"}
    assert run(t, ns, "df.index = ['r', 's']", ["df"]).mutated == {"df"}


def test_sklearn_estimator_fitted():
    pytest.importorskip("sklearn")
    t, ns = tracked(
        """
        from sklearn.linear_model import LinearRegression
        X = np.arange(20.0).reshape(10, 2)
        y = X @ np.array([1.0, 2.0])
        model = LinearRegression()
        """
    )
    upd = run(t, ns, "model.fit(X, y)", ["model", "X", "y"])
    assert "model" in upd.mutated
    assert "X" not in upd.mutated and "y" not in upd.mutated


def test_id_reuse_with_another_value_detected():
    t, ns = tracked("x = [1, 2, 3]")
    old = id(ns["x"])
    for _ in range(100):  # CPython's list free list hands the same address back right away
        del ns["x"]
        ns["x"] = [4, 5, 6]
        if id(ns["x"]) == old:
            break
    if id(ns["x"]) != old:
        pytest.skip("allocator did not reuse the address")
    upd = t.update(ns, ["x"], [])
    assert "x" in upd.mutated | upd.rebound


def test_nested_id_reuse_with_another_value_detected():
    t, ns = tracked("x = {'inner': [1, 2]}")
    old = id(ns["x"]["inner"])
    for _ in range(100):
        ns["x"]["inner"] = None
        ns["x"]["inner"] = [7, 8]
        if id(ns["x"]["inner"]) == old:
            break
    upd = t.update(ns, ["x"], [])
    assert upd.mutated == {"x"}


def test_notebook_function_closure_default_and_dict_changes():
    t, ns = tracked(
        """
        def make():
            state = [0]
            def inc():
                state[0] += 1
                return state[0]
            return inc
        inc = make()
        def f(x, acc=[]):
            acc.append(x)
        """
    )
    assert run(t, ns, "inc()", ["inc"]).mutated == {"inc"}
    assert run(t, ns, "f(1)", ["f"]).mutated == {"f"}
    assert run(t, ns, "f.tag = 'x'", ["f"]).mutated == {"f"}


def test_notebook_class_attribute_change_mutates_class_and_instances():
    t, ns = tracked(
        """
        class C:
            n = 0
        c1 = C()
        c2 = C()
        """
    )
    assert run(t, ns, "C.n = 1", ["C"]).mutated == {"C", "c1", "c2"}


def test_rebound_and_new_and_removed_names():
    t, ns = tracked("a = [1]\nb = 2")
    upd = run(t, ns, "a = [1]\nc = 3\ndel b", ["a", "c", "b"], ["b"])
    assert upd.rebound == {"a", "c"}
    assert upd.removed == {"b"}
    assert t.tracked() == {"a", "c"}


def test_mutation_reports_every_name_of_the_covariable():
    t, ns = tracked("a = [1]\nholder = {'a': a}\nother = [0]")
    upd = run(t, ns, "a.append(2)", ["a"])
    assert upd.mutated == {"a", "holder"}


def test_tracker_keeps_no_reference_to_values():
    t, ns = tracked(
        """
        class P:
            pass
        p = P()
        """
    )
    ref = weakref.ref(ns["p"])
    del ns["p"]
    t.update(ns, [], ["p"])
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------------------------------
# co-variables
# ------------------------------------------------------------------------------------------


def test_alias_links_names():
    t, _ = tracked("a = [1]\nb = a\nc = [1]")
    assert t.covariable_of("a") == {"a", "b"}
    assert t.covariable_of("c") == {"c"}


def test_numpys_iterators_are_one_covariable_with_the_arrays_they_iterate():
    # flatiter, nditer and broadcast hide their arrays from the collector: `flat = img.flat`
    # was a co-variable of its own, restored apart from `img`, over another array
    t, _ = tracked(
        """
        img = np.arange(6)
        flat = img.flat
        grid = np.zeros((2, 3))
        it = np.nditer(grid)
        col = np.arange(2)[:, None]
        b = np.broadcast(col, np.ones(3))
        """
    )
    assert group(t, "img", "flat")
    assert group(t, "grid", "it")
    assert group(t, "col", "b")


def test_pair_view_box_and_instance_class_links():
    t, _ = tracked(
        """
        a = np.arange(100)
        pair = [a, a]
        view = a[10:20]
        class Box:
            pass
        box = Box()
        box.v = a
        """
    )
    assert t.covariable_of("a") == {"a", "pair", "view", "box", "Box"}


def test_weak_references_link_to_what_they_refer_to():
    t, ns = tracked(
        """
        import weakref
        class Node:
            pass
        nodes = [Node() for _ in range(3)]
        wvd = weakref.WeakValueDictionary(dict(enumerate(nodes)))
        one = weakref.ref(nodes[0])
        other = [1]
        """
    )
    assert {"nodes", "wvd", "one"} <= t.covariable_of("wvd") and "other" not in t.covariable_of("wvd")
    assert run(t, ns, "nodes[0].v = 1", ["one"]).mutated >= {"nodes", "wvd", "one"}


def test_atoms_modules_and_library_functions_do_not_link():
    t, _ = tracked(
        """
        import math, json
        x = [1, 2, "shared", None, True, 3.0]
        y = [1, 2, "shared", None, True, 3.0]
        m1 = {"mod": math, "f": json.dumps, "b": len, "t": (1, 2), "e": ()}
        m2 = {"mod": math, "f": json.dumps, "b": len, "t": (1, 2), "e": ()}
        """
    )
    for n in ("x", "y", "m1", "m2"):
        assert t.covariable_of(n) == {n}


def test_a_module_the_notebook_registered_in_sys_modules_links_like_its_data():
    # `sys.modules['fake'] = types.ModuleType('fake')`: by-reference like an import, it linked
    # to nothing, so `VALUE = fake.VALUE` was restored apart from the module it came from
    name = "ka_registered_fake"
    ns = nb(f"import sys, types\nfake = types.ModuleType({name!r})\nfake.VALUE = [1]\n"
            f"sys.modules[{name!r}] = fake\nVALUE = fake.VALUE\nimport pyexpat.errors as perr\n"
            "other = {'m': perr}")
    try:
        t = Tracker()
        t.reset(ns, ["fake", "VALUE", "other"])
        assert t.covariable_of("VALUE") == {"fake", "VALUE"}
        assert t.covariable_of("other") == {"other"}  # a C extension's spec-less submodule: an import
    finally:
        sys.modules.pop(name, None)


def test_iterators_and_generators_link_to_what_they_iterate_over():
    # opaque (their position is hidden) but not unrelated: restored apart from `lst`, they
    # iterated over a copy (or a re-run cell's list) and missed what was appended later
    t, ns = tracked(
        """
        lst = [1, 2, 3]
        it = iter(lst)
        z = zip(lst, "abc")
        g = (x * 10 for x in lst)
        def gen(seq):
            yield from seq
        g2 = gen(lst)
        next(it); next(z); next(g); next(g2)
        other = [0]
        """
    )
    assert t.covariable_of("lst") >= {"lst", "it", "z", "g", "g2"}
    assert "other" not in t.covariable_of("lst")
    assert run(t, ns, "lst.append(4)", ["lst"]).mutated >= {"lst", "it", "g"}


def test_c_objects_and_library_closures_link_to_what_they_hold():
    # walked by their reduce value without identities, or by reference: `add` and `stack` were
    # restored apart from `target` and `log`, and the restored ones wrote into copies
    t, ns = tracked(
        """
        import contextlib, operator
        target = []
        add = operator.methodcaller("append", target)
        log = []
        stack = contextlib.ExitStack()
        stack.callback(log.append, "closed")
        other = []
        """
    )
    assert t.covariable_of("target") == {"target", "add"}
    assert t.covariable_of("log") == {"log", "stack"}
    assert t.covariable_of("other") == {"other"}


def test_c_objects_holding_the_same_class_or_library_function_stay_apart():
    # what they hold because their code does (their heap type, `len`, the empty tuple) is
    # no link: two getters are two co-variables
    t, ns = tracked(
        """
        import functools, operator
        first = operator.itemgetter(1)
        second = operator.itemgetter(2)
        call_a = operator.methodcaller("append", 1)
        call_b = operator.methodcaller("append", 2)
        size_a = functools.partial(len)
        size_b = functools.partial(len)
        """
    )
    for n in ("first", "second", "call_a", "call_b", "size_a", "size_b"):
        assert t.covariable_of(n) == {n}


def test_two_random_generators_are_two_covariables_and_a_draw_changes_one():
    # their reduce values reach the same compiled function of numpy's, which was walked as an
    # object: every Generator of the notebook was one co-variable
    t, ns = tracked("g1 = np.random.default_rng(1)\ng2 = np.random.default_rng(2)")
    assert t.covariable_of("g1") == {"g1"} and t.covariable_of("g2") == {"g2"}
    assert run(t, ns, "g1.random()", ["g1", "g2"]).mutated == {"g1"}


def test_a_view_of_the_namespace_does_not_tie_every_variable_to_it():
    # a dict view or proxy is walked as its dict; the namespace's own (`globals().keys()`) is
    # every variable: opaque, not a link to each of them
    mod = types.ModuleType("ka_test_ns")  # stands for __main__, whose __dict__ the namespace is
    sys.modules["ka_test_ns"] = mod
    try:
        ns = vars(mod)
        exec("a = [1]\nb = {'k': [2]}\ngk = globals().keys()\nkb = b.keys()\nit = g = None\n"
             "def gen(d):\n    yield from d\nit = iter(globals().values())\nnext(it)\n"
             "g = gen(globals())\nnext(g)", ns)
        t = Tracker()
        t.reset(ns, ["a", "b", "gk", "kb", "it", "g"])
        assert t.covariable_of("gk") == {"gk"}
        assert t.covariable_of("b") == {"b", "kb"}
        assert t.covariable_of("it") == {"it"} and t.covariable_of("g") == {"g"}
    finally:
        sys.modules.pop("ka_test_ns", None)


def test_group_merges_when_link_appears():
    t, ns = tracked("a = [1]\nb = [2]")
    run(t, ns, "b.append(a)", ["b", "a"])
    assert t.covariable_of("a") == {"a", "b"}


def test_merge_with_untouched_group():
    t, ns = tracked("a = [1]\nkeep = [a]\nb = []")
    upd = run(t, ns, "b.append(a)", ["b"])
    assert t.covariable_of("b") == {"a", "b", "keep"}
    assert upd.mutated == {"a", "b", "keep"}


def test_group_splits_when_link_disappears():
    t, ns = tracked("a = [1]\nb = a")
    upd = run(t, ns, "b = [1]", ["b"])
    assert t.covariable_of("a") == {"a"} and t.covariable_of("b") == {"b"}
    assert upd.rebound == {"b"} and upd.mutated == set()


def test_names_rebound_to_atoms_leave_their_group_and_can_join_again():
    t, ns = tracked("a = [1]\nb = a\nc = 'x'")
    upd = run(t, ns, "b = 5\nc = b", ["b", "c"])
    assert t.covariable_of("a") == {"a"} and t.covariable_of("b") == {"b"}
    assert t.covariable_of("c") == {"c"}
    assert upd.rebound == {"b", "c"} and upd.mutated == set()
    upd = run(t, ns, "a.append(b)", ["a", "b"])  # the same int: b is not changed
    assert upd.mutated == {"a"} and upd.rebound == set()
    upd = run(t, ns, "b = a", ["b"])
    assert t.covariable_of("a") == {"a", "b"} and upd.rebound == {"b"}
    upd = run(t, ns, "a.append(1)", ["a"])
    assert upd.mutated == {"a", "b"}


@pytest.mark.parametrize("holder", ["a_holder", "z_holder"])  # walked before / after `m`
def test_short_lists_of_atoms_join_the_names_that_reach_them(holder):
    t, ns = tracked("x = 1")
    upd = run(t, ns, f"m = [1, 'x']\n{holder} = {{'k': m}}\nother = [1, 'x']", ["m", holder, "other"])
    assert t.covariable_of("m") == {"m", holder} and t.covariable_of("other") == {"other"}
    assert upd.rebound == {"m", holder, "other"}
    upd = run(t, ns, "m.append(2)", ["m"])
    assert upd.mutated == {"m", holder}
    upd = run(t, ns, f"{holder}['k'][0] = 5", [holder])
    assert upd.mutated == {"m", holder}
    upd = run(t, ns, "n = m", ["n"])  # a new name of an untouched co-variable's list
    assert t.covariable_of("n") == {"m", "n", holder} and upd.rebound == {"n"}
    assert run(t, ns, "y = 2", ["y"]).mutated == set()


def test_group_splits_when_bridging_name_deleted():
    t, ns = tracked("x = [1]\ny = [2]\nbridge = [x, y]")
    assert t.covariable_of("x") == {"x", "y", "bridge"}
    run(t, ns, "del bridge", ["bridge"], ["bridge"])
    assert t.covariables() == [frozenset({"x"}), frozenset({"y"})]


def test_group_splits_when_shared_element_replaced():
    t, ns = tracked("x = [1]\na = [x]\nb = [x]")
    upd = run(t, ns, "b[0] = [1]", ["b"])
    assert t.covariable_of("a") == {"a", "x"} and t.covariable_of("b") == {"b"}
    assert "b" in upd.mutated


def test_reading_a_covariable_leaves_its_index_entries_and_later_changes_are_still_seen():
    t, ns = tracked("a = np.arange(1000.0)\nview = a[10:20]\nrows = [[1], [2]]\nalias = rows[0]")
    tokens = dict(t._token)
    upd = run(t, ns, "total = float(a.sum()) + len(rows)", ["a", "total", "rows"])
    assert not upd.mutated and upd.rebound == {"total"}
    # the co-variables read were not indexed again: same tokens, no new chunk
    assert {n: t._token[n] for n in tokens} == tokens
    assert t.covariable_of("a") == {"a", "view"} and t.covariable_of("rows") == {"rows", "alias"}
    upd = run(t, ns, "same = rows[1]", ["same", "rows"])  # joins through the kept entries
    assert t.covariable_of("same") == {"rows", "alias", "same"} and not upd.mutated
    upd = run(t, ns, "view_again = view", ["view", "view_again"])  # linked in the same walk
    assert t.covariable_of("view") == {"a", "view", "view_again"} and not upd.mutated
    upd = run(t, ns, "view[0] = -1.0", ["view"])
    assert upd.mutated == {"a", "view", "view_again"}
    upd = run(t, ns, "alias.append(3)", ["alias"])
    assert upd.mutated == {"rows", "alias"}  # (same is rows[1]: unchanged)


def _random_cell(rng: random.Random, ns: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """(code, names it touches, names it deletes): binds, aliases, nests, views, deletes,
    reads and mutates the namespace's values at random."""
    names = sorted(n for n in ns if not n.startswith("_") and n != "np")
    a, b = (rng.choice(names), rng.choice(names)) if names else ("", "")
    new = f"n{rng.randrange(12)}"
    kind = rng.randrange(9) if names else 0
    if kind == 0:
        ns["_v"] = rng.choice([[rng.randrange(5)], {"k": [1]}, np.arange(6.0), rng.randrange(100),
                               ([1], [2]), [np.zeros(3), [1]]])
        return f"{new} = _v", [new], []
    return {
        1: (f"{new} = {a}", [new, a], []),
        2: (f"{new} = [{a}, {b}]", [new, a, b], []),
        3: (f"del {a}", [], [a]),
        4: (f"_x = repr({a})", [a], []),
        5: (f"if isinstance({a}, list): {a}.append(1)\n"
            f"elif isinstance({a}, dict): {a}['z'] = {{}}\n"
            f"elif isinstance({a}, np.ndarray) and {a}.size: {a}[0] += 1", [a], []),
        6: (f"if isinstance({a}, list) and {a} is not {b}: {a}.append({b})\n"
            f"elif isinstance({a}, dict): {a}['in'] = {b}", [a, b], []),
        7: (f"if isinstance({a}, np.ndarray): {new} = {a}[1:]", [a, new], []),
        8: (f"if isinstance({a}, list) and {a}: {a}[0] = [9]\n"
            f"elif isinstance({a}, dict) and 'in' in {a}: del {a}['in']", [a], []),
    }[kind]


@pytest.mark.parametrize("seed", range(20))
def test_random_cells_keep_the_covariables_a_fresh_walk_finds(seed):
    rng, ns, t = random.Random(seed), nb(), Tracker()
    for _ in range(40):
        code, touched, removed = _random_cell(rng, ns)
        before = set(ns)
        exec(code, ns)
        ns.pop("_v", None), ns.pop("_x", None)
        user = [n for n in user_names(ns) if n != "np"]
        t.update(ns, sorted((set(touched) | (set(ns) - before)) & set(user)),
                 sorted(n for n in removed if n not in ns))
        fresh = Tracker()
        fresh.reset(ns, user)
        assert sorted(map(sorted, t.covariables())) == sorted(map(sorted, fresh.covariables())), code


def test_many_small_variables_partition():
    ns = nb("\n".join(f"v{i} = {{'k': [{i}]}}" for i in range(3000)) + "\nshared = [v1, v2]")
    t = Tracker()
    t.reset(ns, user_names(ns))
    groups = t.covariables()
    assert len(groups) == 3000 - 1
    assert t.covariable_of("v1") == {"v1", "v2", "shared"}


def test_memory_overhead_small_relative_to_namespace():
    ns = nb("rows = [{'id': i, 'tags': [i, i + 1], 'name': 'n%d' % i} for i in range(100_000)]")
    t = Tracker()
    t.reset(ns, ["rows"])
    assert t.overhead_bytes() < 0.10 * reachable_size(ns["rows"])


# ------------------------------------------------------------------------------------------
# opaque and hostile objects, robustness
# ------------------------------------------------------------------------------------------


def test_opaque_objects_are_modified_whenever_touched(tmp_path):
    conn = sqlite3.connect(":memory:")
    fh = open(tmp_path / "f.txt", "w")  # noqa: SIM115
    sock = socket.socket()
    try:
        t, ns = tracked(
            """
            import threading
            gen = (i for i in range(3))
            lock = threading.Lock()
            """,
            conn=conn,
            fh=fh,
            sock=sock,
        )
        names = ["gen", "lock", "conn", "fh", "sock"]
        upd = t.update(ns, names, [])
        assert upd.opaque == set(names)
        assert upd.mutated == set(names)
    finally:
        conn.close()
        fh.close()
        sock.close()


def test_opaque_alias_links_names():
    t, _ = tracked("g = (i for i in range(3))\nh = g\nbox = [g]")
    assert t.covariable_of("g") == {"g", "h", "box"}


class Hostile:
    """Every protocol method raises or lies."""

    def __init__(self):
        object.__setattr__(self, "payload", [1, 2])

    def __getattr__(self, name):
        raise RuntimeError("getattr")

    def __getattribute__(self, name):
        raise RuntimeError("getattribute")

    def __eq__(self, other):
        raise RuntimeError("eq")

    def __hash__(self):
        raise RuntimeError("hash")

    def __len__(self):
        return -1

    def __iter__(self):
        raise RuntimeError("iter")

    def __getstate__(self):
        raise RuntimeError("getstate")

    def __reduce_ex__(self, protocol):
        raise RuntimeError("reduce")

    @property
    def __class__(self):
        return int


class LyingDict(dict):
    def items(self):
        raise RuntimeError("items")

    def keys(self):
        return ["nope"]

    def __iter__(self):
        raise RuntimeError("iter")

    def __len__(self):
        return 10**9


def test_hostile_objects_never_raise_and_changes_are_still_seen():
    h = Hostile()
    ld = LyingDict(a=[1])
    t, ns = tracked("", h=h, ld=ld)
    assert t.update(ns, ["h", "ld"], []).mutated == set()
    object.__getattribute__(h, "payload").append(3)
    assert t.update(ns, ["h"], []).mutated == {"h"}
    dict.__getitem__(ld, "a").append(2)
    assert t.update(ns, ["ld"], []).mutated == {"ld"}
    assert value_digest({"h": h, "ld": ld}) == value_digest({"h": h, "ld": ld})
    assert reachable_size(h) > 0


class BadDictProperty:
    @property
    def __dict__(self):  # noqa: PLW3201
        raise RuntimeError("no dict for you")


def test_class_overriding_dict_property_does_not_raise():
    t, ns = tracked("", b=BadDictProperty())
    upd = t.update(ns, ["b"], [])
    assert upd.rebound == set()


def test_self_referencing_structures():
    t, ns = tracked("l = []\nl.append(l)\nd = {}\nd['d'] = d\nd['l'] = l")
    assert t.update(ns, ["l", "d"], []).mutated == set()
    assert t.covariable_of("l") == {"l", "d"}
    assert run(t, ns, "l.append(1)", ["l"]).mutated == {"l", "d"}
    assert value_digest({"l": ns["l"]}) == value_digest({"l": pickle.loads(pickle.dumps(ns["l"]))})


def test_very_deep_nesting_no_recursion_error():
    t, ns = tracked(
        "deep = []\ncur = deep\nfor _ in range(200_000):\n    nxt = []\n    cur.append(nxt)\n    cur = nxt\ndel cur, nxt, _"
    )
    upd = run(
        t, ns, "x = deep\nfor _ in range(199_999):\n    x = x[0]\nx.append(1)\ndel x, _", ["deep"]
    )
    assert upd.mutated == {"deep"}
    assert value_digest({"deep": ns["deep"]}).startswith("x3r:")


def test_huge_graph_past_budget_is_opaque():
    ns = nb("many = [[i] for i in range(10_000)]")
    t = Tracker(max_nodes=1_000)
    t.reset(ns, ["many"])
    upd = t.update(ns, ["many"], [])
    assert upd.opaque == {"many"} and upd.mutated == {"many"}


def test_c_object_state_via_reduce():
    t, ns = tracked("rng = np.random.default_rng(0)\nrs = np.random.RandomState(0)")
    assert t.update(ns, ["rng", "rs"], []).mutated == set()
    assert run(t, ns, "rng.random()\nrs.rand()", ["rng", "rs"]).mutated == {"rng", "rs"}


def test_subclasses_of_builtins_and_namedtuples():
    P = namedtuple("P", "x y")
    t, ns = tracked(
        """
        class MyList(list):
            pass
        class MyDict(dict):
            pass
        ml = MyList([1, 2])
        md = MyDict(a=[1])
        """,
        pt=P([1], 2),
        dd=defaultdict(list),
    )
    assert run(t, ns, "ml.append(3)", ["ml"]).mutated == {"ml"}  # (not its class)
    assert run(t, ns, "md['a'].append(2)", ["md"]).mutated == {"md"}
    assert run(t, ns, "pt.x.append(0)", ["pt"]).mutated == {"pt"}
    assert run(t, ns, "dd['k']", ["dd"]).mutated == {"dd"}


# ------------------------------------------------------------------------------------------
# value_digest
# ------------------------------------------------------------------------------------------

_PORTABLE_SRC = textwrap.dedent(
    """
    import collections, datetime, decimal, fractions
    import numpy as np
    base = np.arange(24.0).reshape(4, 6)
    shared = ["s", 1]
    data = {
        "words": {"apple", "banana", "cherry", "durian", "elderberry"},
        "frozen": frozenset({"x", ("t", 1), "yy"}),
        "nested": [1, 2.5, None, True, b"by", ("tu", [shared, shared])],
        "od": collections.OrderedDict(b=2, a=1),
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9),
        "dec": decimal.Decimal("3.14"),
        "frac": fractions.Fraction(2, 3),
        "arr": base,
        "view": base[1:3, ::2],
        "f32": np.ones(5, dtype=np.float32),
        "big": list(range(5000)),
        "strs": {"s%d" % i for i in range(3000)},
        "large": np.arange(5 * 2**20, dtype=np.float64),  # 40 MB: hashed in parallel chunks
    }
    """
)


def _digest_in_subprocess(tmp_path, seed: str, mode: str) -> str:
    script = tmp_path / "dig.py"
    script.write_text(
        _PORTABLE_SRC
        + textwrap.dedent(
            """
            import os, pickle, sys
            os.cpu_count = lambda: int(os.environ["ELASTIC_TEST_CPUS"])  # chunking must not matter
            from kernel_agent.changes import value_digest
            if sys.argv[1] == "load":
                with open(sys.argv[2], "rb") as f:
                    data = pickle.load(f)
            print(value_digest(data))
            """
        )
    )
    env = dict(os.environ, PYTHONHASHSEED=seed, ELASTIC_TEST_CPUS=seed)
    res = subprocess.run(
        [sys.executable, str(script), mode, str(tmp_path / "data.pkl")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    return res.stdout.strip()


def test_value_digest_portable_across_processes_and_pickle(tmp_path):
    ns: dict[str, Any] = {}
    exec(_PORTABLE_SRC, ns)
    data = ns["data"]
    with open(tmp_path / "data.pkl", "wb") as f:
        pickle.dump(data, f)
    here = value_digest(data)
    assert _digest_in_subprocess(tmp_path, "1", "build") == here
    assert _digest_in_subprocess(tmp_path, "2", "build") == here
    assert _digest_in_subprocess(tmp_path, "3", "load") == value_digest(
        pickle.loads(pickle.dumps(data))
    )


def test_digest_recorded_by_an_older_agent_is_recomputed_its_way():
    # record lists are hashed in one run since "x3r:"; an "x3:" digest (pinned: written by the
    # agent before) must still verify, or every restore of an older checkpoint would mismatch
    from kernel_agent.changes import digest_report

    v = {"h": [("pay", "bob", 5.0), ("deposit", 2.5)], "n": [1, [2, 3]], "a": ["x", 1]}
    assert digest_report(v, like="x3:00").digest == "x3:d42148674bfff403ea339998b8b0e7ba"
    assert value_digest(v).startswith("x3r:")
    assert digest_report(v, like=value_digest(v)).digest == value_digest(v)


def test_value_digest_of_finished_threads_does_not_depend_on_their_os_ids():
    class Worker(threading.Thread):
        pass

    def run(cls: type) -> threading.Thread:
        t = cls(target=sum, args=([1, 2],))
        t.start()
        t.join()
        return t

    for cls in (threading.Thread, Worker):
        assert value_digest({"t": run(cls)}) == value_digest({"t": run(cls)})


def test_value_digest_dataframe_pickle_round_trip():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "i": np.arange(5),
            "f": np.linspace(0, 1, 5),
            "s": list("abcde"),
            "c": pd.Categorical(list("xyxyx")),
            "o": [[1], [2], [3], [4], [5]],
        }
    )
    df.attrs["unit"] = "m"
    ser = pd.Series([1.5, 2.5], index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)]))
    vals = {"df": df, "ser": ser}
    assert value_digest(vals) == value_digest(pickle.loads(pickle.dumps(vals)))
    df2 = df.copy()
    df2.loc[2, "f"] = 9.0
    assert value_digest({"df": df2, "ser": ser}) != value_digest(vals)


def test_value_digest_view_restored_as_copy_fails():
    a = np.arange(100.0)
    v = a[10:20]
    assert value_digest({"a": a, "v": v}) != value_digest({"a": a, "v": v.copy()})


def test_value_digest_lone_view_equals_its_copy():
    # the base of x is a temporary nobody else sees: a copy is the same value
    x = np.arange(12.0).reshape(3, 4)
    assert value_digest({"x": x}) == value_digest({"x": x.copy()})


def test_value_digest_aliasing_lost_fails():
    a = [1, 2, 3]
    assert value_digest({"p": [a, a]}) != value_digest({"p": [a, copy.copy(a)]})
    arr = np.zeros(3)
    assert value_digest({"p": [arr, arr]}) != value_digest({"p": [arr, arr.copy()]})
    assert value_digest({"a": a, "b": a}) != value_digest({"a": a, "b": list(a)})


def test_value_digest_sets_order_independent_dicts_order_dependent():
    s1 = set()
    for w in ["a", "b", "c", "dd", "ee"]:
        s1.add(w)
    s2 = set()
    for w in reversed(["a", "b", "c", "dd", "ee"]):
        s2.add(w)
    assert value_digest({"s": s1}) == value_digest({"s": s2})
    assert value_digest({"d": {"a": 1, "b": 2}}) != value_digest({"d": {"b": 2, "a": 1}})


def test_value_digest_distinguishes_types_and_values():
    cases = [1, 1.0, True, "1", b"1", [1], (1,), {1}, {1: 1}, np.int64(1), decimal.Decimal(1)]
    digests = {value_digest({"x": c}) for c in cases}
    assert len(digests) == len(cases)


def test_value_digest_notebook_function_round_trip_via_cloudpickle():
    cloudpickle = pytest.importorskip("cloudpickle")
    ns = nb(
        """
        import functools
        factor = 3
        def scale(x, k=2):
            return x * k * factor
        part = functools.partial(scale, k=5)
        class Acc:
            def __init__(self):
                self.items = []
        acc = Acc()
        """
    )
    vals = {n: ns[n] for n in ("scale", "part", "Acc", "acc")}
    assert value_digest(vals) == value_digest(cloudpickle.loads(cloudpickle.dumps(vals)))


def test_value_digest_reports_opaque_names():
    def gen():
        yield 1

    vals = {"g": gen(), "lock": threading.Lock(), "ok": [1]}
    rep = digest_report(vals)
    assert rep.opaque == {"g", "lock"}
    assert opaque_names(vals) == {"g", "lock"}
    # type-only: same type, same digest
    assert value_digest({"g": gen()}) == value_digest({"g": gen()})


def test_value_digest_enums_and_atoms():
    class Color(enum.Enum):
        RED = 1
        BLUE = 2

    assert value_digest({"c": Color.RED}) != value_digest({"c": Color.BLUE})
    assert value_digest({"t": dt.timedelta(1)}) != value_digest({"t": dt.timedelta(2)})
    assert value_digest({"f": fractions.Fraction(1, 2)}) == value_digest(
        {"f": fractions.Fraction(2, 4)}
    )


# ------------------------------------------------------------------------------------------
# reachable_size
# ------------------------------------------------------------------------------------------


def test_reachable_size_counts_buffers_inside_objects():
    class Holder:
        def __init__(self):
            self.data = np.zeros(8 * 2**20, dtype=np.uint8)

    size = reachable_size(Holder())
    assert 8 * 2**20 <= size < 8.2 * 2**20


def test_reachable_size_view_costs_its_base_once():
    base = np.zeros(2**20)
    size = reachable_size([base[:10], base[10:20], base])
    assert base.nbytes <= size < base.nbytes * 1.05


def test_reachable_size_of_containers_and_dataframe():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.zeros(100_000)})
    assert reachable_size({"df": df}) >= 800_000
    assert reachable_size(["x" * 1000] * 3) >= 1000
    assert reachable_size(b"y" * 5000) >= 5000


# ------------------------------------------------------------------------------------------
# property test: random structures, random in-place mutations
# ------------------------------------------------------------------------------------------

atoms = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
hashables = st.recursive(
    atoms, lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3), max_leaves=6
)
structures = st.recursive(
    atoms,
    lambda c: (
        st.lists(c, max_size=5)
        | st.dictionaries(st.text(max_size=4), c, max_size=4)
        | st.tuples(c, c)
        | st.sets(hashables, max_size=4)
    ),
    max_leaves=30,
)


def _mutables(root: Any) -> list[Any]:
    found, stack, seen = [], [root], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, (list, dict, set)):
            found.append(o)
        if isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, dict):
            stack.extend(o.values())
    return found


def _fresh_value(existing: Any, data) -> Any:
    return data.draw(atoms.filter(lambda v: not (type(v) is type(existing) and v == existing)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(root=st.lists(structures, min_size=1, max_size=4), data=st.data())
def test_random_in_place_mutations_always_detected(root, data):
    ns = {"__name__": "__main__", "root": root, "other": [0]}
    t = Tracker()
    t.reset(ns, ["root", "other"])
    target = data.draw(st.sampled_from(_mutables(root)))
    if isinstance(target, list):
        op = data.draw(st.sampled_from(["append", "replace", "delete"] if target else ["append"]))
        if op == "append":
            target.append(data.draw(atoms))
        elif op == "replace":
            i = data.draw(st.integers(0, len(target) - 1))
            target[i] = _fresh_value(target[i], data)
        else:
            del target[data.draw(st.integers(0, len(target) - 1))]
    elif isinstance(target, dict):
        op = data.draw(st.sampled_from(["set", "delete"] if target else ["set"]))
        if op == "set":
            k = data.draw(st.text(max_size=4))
            target[k] = _fresh_value(target.get(k, object()), data)
        else:
            del target[data.draw(st.sampled_from(sorted(target)))]
    else:
        op = data.draw(st.sampled_from(["add", "remove"] if target else ["add"]))
        if op == "add":
            target.add(data.draw(hashables.filter(lambda v: v not in target)))
        else:
            target.remove(data.draw(st.sampled_from(sorted(target, key=repr))))
    upd = t.update(ns, ["root"], [])
    assert upd.mutated == {"root"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(root=st.lists(structures, min_size=1, max_size=4), data=st.data())
def test_mutation_of_a_graph_several_names_reach_is_detected_whichever_walked_it(root, data):
    # "a_part" sorts first: its walk covers the shared part and "root"'s only links to it
    part = data.draw(st.sampled_from(_mutables(root)))
    ns = {"__name__": "__main__", "a_part": part, "root": root, "z_root": root}
    t = Tracker()
    t.reset(ns, ["a_part", "root", "z_root"])
    assert t.covariable_of("root") == {"a_part", "root", "z_root"}
    target = data.draw(st.sampled_from(_mutables(root)))
    if isinstance(target, list):
        target.append(data.draw(atoms))
    elif isinstance(target, dict):
        target[object.__repr__(target)] = 1
    else:
        target.add(("new", len(target)))
    upd = t.update(ns, ["z_root"], [])
    # a_part changed only if the target is in it
    inside = any(o is target for o in _mutables(part))
    assert upd.mutated == {"root", "z_root"} | ({"a_part"} if inside else set())


def test_names_reaching_one_object_graph_cost_one_walk_of_it():
    src = """
        class Node:
            def __init__(self, owner):
                self.owner, self.items = owner, [[i, str(i)] for i in range(20)]
        class Owner:
            def __init__(self):
                self.nodes = [Node(self) for _ in range(2000)]
        owner = Owner()
        """
    alone, _ = tracked(src)
    t, ns = tracked(src + "first = owner.nodes[0]\n        last = owner.nodes[-1]\n")
    assert t.covariable_of("owner") == {"Node", "Owner", "owner", "first", "last"}

    def work(tr: Tracker) -> int:
        return sum(p.work for p in tr._prints.values())

    assert work(t) < 1.1 * work(alone)  # not three walks of the graph
    ns["last"].items[3][1] = "changed"  # only through the name whose walk merely linked
    upd = t.update(ns, ["last"], [])
    assert upd.mutated == {"owner", "first", "last"}  # (not the classes)


def test_a_name_linking_into_code_another_name_walked_is_not_plain():
    t, ns = tracked("def f():\n    return 1\na = [f]\nb = [a]")
    assert not t.plain("b", ns["b"])


@settings(max_examples=200, deadline=None)
@given(value=structures)
def test_random_structures_digest_survives_pickle(value):
    assert value_digest({"v": value}) == value_digest({"v": pickle.loads(pickle.dumps(value))})
    json.dumps  # noqa: B018 - keep import used for readers who extend this test
    io.StringIO  # noqa: B018
    OrderedDict  # noqa: B018
    deque  # noqa: B018


# ------------------------------------------------------------------------------------------
# more value types
# ------------------------------------------------------------------------------------------


def test_c_containers_with_dict_and_buffers():
    lst = [1]
    t, ns = tracked(
        """
        import types, array
        sn = types.SimpleNamespace(a=lst)
        ba = bytearray(b"abc")
        ar = array.array("i", [1, 2])
        mv = memoryview(ba)
        """,
        lst=lst,
    )
    assert t.covariable_of("sn") == {"sn", "lst"}
    assert t.covariable_of("ba") == {"ba", "mv"}
    assert run(t, ns, "sn.b = 2", ["sn"]).mutated == {"sn"}  # (not lst, which it holds)
    assert run(t, ns, "ba[0] = 0", ["ba"]).mutated == {"ba", "mv"}
    assert run(t, ns, "ar.append(3)", ["ar"]).mutated == {"ar"}


def test_moving_an_mmaps_position_is_a_mutation():
    # an mmap cannot be pickled, so a restore re-runs its cells: one that only moved its
    # position (`m.seek(1); b = m.read(1)`) was not its mutator and was left out of the replay
    t, ns = tracked("import mmap\nm = mmap.mmap(-1, 16)\nm.write(b'abc')")
    assert run(t, ns, "m.seek(1)\nb1 = m.read(1)", ["m"]).mutated == {"m"}
    assert not run(t, ns, "n = len(m)", ["m"]).mutated


def test_pandas_extension_types_stable_and_portable():
    pd = pytest.importorskip("pandas")
    vals = {
        "tz": pd.DataFrame({"t": pd.date_range("2024", periods=3, tz="Europe/Paris")}),
        "nul": pd.Series([1, None, 3], dtype="Int64"),
        "st": pd.Series(["a", "b"], dtype="string[python]"),
        "per": pd.Series(pd.period_range("2024", periods=3, freq="M")),
        "iv": pd.Series(pd.interval_range(0, 3)),
        "cat": pd.Series(pd.Categorical(["a", "b", "a"])),
        "dti": pd.date_range("2024", periods=3),
        "mi": pd.DataFrame(
            np.ones((2, 2)), columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])
        ),
    }
    ns = {"__name__": "__main__", **vals}
    t = Tracker()
    t.reset(ns, list(vals))
    upd = t.update(ns, list(vals), [])
    assert upd.mutated == set() and upd.opaque == set()
    for k, v in vals.items():
        assert value_digest({k: v}) == value_digest({k: pickle.loads(pickle.dumps(v))}), k
    ns["nul"].iloc[1] = 5
    assert t.update(ns, ["nul"], []).mutated == {"nul"}


def test_scipy_sparse_matrix_changed():
    sp = pytest.importorskip("scipy.sparse")
    t, ns = tracked("", m=sp.lil_matrix((3, 3)), c=sp.csr_matrix(np.eye(3)))
    assert t.update(ns, ["m", "c"], []).mutated == set()
    assert run(t, ns, "m[1, 2] = 5.0\nc.data[0] = 2.0", ["m", "c"]).mutated == {"m", "c"}


def test_pickling_an_instance_is_not_a_mutation_of_its_class():
    cloudpickle = pytest.importorskip("cloudpickle")
    t, ns = tracked("class K:\n    pass\nk = K()")
    cloudpickle.dumps(ns["k"])  # copyreg caches K.__slotnames__ on the class
    assert t.update(ns, ["k", "K"], []).mutated == set()


def test_value_digest_equal_after_recompute_in_fresh_namespace():
    src = """
        import collections
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm(self):
                return (self.x ** 2 + self.y ** 2) ** 0.5
        pts = [Point(i, -i) for i in range(5)]
        def total(ps, scale=1.0):
            return sum(p.norm() for p in ps) * scale
        counts = collections.Counter("abracadabra")
    """
    a, b = nb(src), nb(src)
    names = ["Point", "pts", "total", "counts"]
    assert value_digest({n: a[n] for n in names}) == value_digest({n: b[n] for n in names})
    b["pts"][0].x = 99
    assert value_digest({n: a[n] for n in names}) != value_digest({n: b[n] for n in names})


def test_hidden_c_state_of_python_subclasses():
    class Q(deque):
        pass

    class E(ValueError):
        pass

    import random

    t, ns = tracked("", r=random.Random(0), q=Q([1]), e=E("x", [1]))
    assert t.update(ns, ["r", "q", "e"], []).mutated == set()
    ns["r"].random()
    ns["q"].append(2)
    ns["e"].args[1].append(2)
    assert t.update(ns, ["r", "q", "e"], []).mutated == {"r", "q", "e"}


def _reaches(root: Any, target: Any) -> bool:
    stack, seen = [root], set()
    while stack:
        o = stack.pop()
        if o is target:
            return True
        if id(o) in seen or not isinstance(o, list):
            continue
        seen.add(id(o))
        stack.extend(o)
    return False


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_incremental_partition_equals_fresh_partition(data):
    pool = [[i] for i in range(4)]
    names = [f"n{i}" for i in range(6)]
    ns: dict[str, Any] = {"__name__": "__main__"}
    for n in names:
        ns[n] = [data.draw(st.sampled_from(pool))] if data.draw(st.booleans()) else [0]
    t = Tracker()
    t.reset(ns, names)
    for _ in range(data.draw(st.integers(1, 12))):
        live = [n for n in names if n in ns]
        op = data.draw(st.sampled_from(["bind", "append", "clear", "del", "alias", "mutate"]))
        name = data.draw(st.sampled_from(names))
        touched, removed, target = [name], [], None
        if op == "bind":
            ns[name] = data.draw(st.lists(st.sampled_from(pool), max_size=3))
        elif op == "append" and name in ns:
            ns[name].append(data.draw(st.sampled_from(pool)))
        elif op == "clear" and name in ns:
            ns[name].clear()
        elif op == "del" and name in ns:
            del ns[name]
            removed = [name]
        elif op == "alias" and live:
            ns[name] = ns[data.draw(st.sampled_from(live))]
        elif op == "mutate" and name in ns and ns[name]:
            target = data.draw(st.sampled_from(ns[name]))
            if isinstance(target, list):
                target.append(1)
            else:
                target = None
        upd = t.update(ns, touched, removed)
        fresh = Tracker()
        fresh.reset(ns, [n for n in names if n in ns])
        assert t.covariables() == fresh.covariables()
        if target is not None:
            reaching = {n for n in names if n in ns and _reaches(ns[n], target)}
            assert reaching <= upd.mutated | upd.rebound


class ForwardingProxy:
    """A lazy proxy: every attribute access is forwarded to a target built on first use."""

    def __init__(self, factory):
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "_target", None)

    def __getattr__(self, name):
        target = object.__getattribute__(self, "_target")
        if target is None:
            target = object.__getattribute__(self, "_factory")()
            object.__setattr__(self, "_target", target)
        return getattr(target, name)


def test_proxies_and_lazy_objects_are_not_triggered():
    calls = []

    def factory():
        calls.append(1)
        return [1, 2]

    target = [5]
    t, ns = tracked("", lazy=ForwardingProxy(factory), wp=weakref.proxy(Hostile), tgt=target)
    ns["wr"] = weakref.ref(Hostile)
    assert t.update(ns, ["lazy", "wp", "wr"], []).rebound == {"wr"}
    assert calls == []  # walking never loaded the lazy target
    assert "wp" in t.update(ns, ["wp"], []).opaque


def test_internal_failure_reports_touched_as_modified_and_recovers(monkeypatch):
    import kernel_agent.changes as changes

    t, ns = tracked("a = [1]\nb = a\nc = [2]")

    def boom(*args, **kwargs):
        raise RuntimeError("walker bug")

    monkeypatch.setattr(changes, "_fingerprint", boom)
    assert t.update(ns, ["a"], []).mutated == {"a"}
    ns["d"] = [3]
    upd = t.update(ns, ["d"], [])  # still broken: conservative answer again
    assert upd.rebound == {"d"}
    monkeypatch.undo()
    upd = t.update(ns, ["c"], [])  # recovers with every name it was told about
    assert upd.mutated == {"c"}
    assert t.covariables() == [frozenset({"a", "b"}), frozenset({"c"}), frozenset({"d"})]
    assert t.update(ns, ["a", "c", "d"], []).mutated == set()


def test_long_sessions_renumber_tokens_and_keep_the_partition():
    import random

    pool = [[i] for i in range(5)]
    ns: dict[str, Any] = {"__name__": "__main__"}
    names = [f"n{i}" for i in range(20)]
    for i, n in enumerate(names):
        ns[n] = [pool[i % 5]] if i % 2 else [i]
    t = Tracker()
    t.renumber_slack = 50
    t.reset(ns, names)
    rnd = random.Random(0)
    for step in range(2000):
        n = rnd.choice(names)
        ns[n] = [pool[rnd.randrange(5)]] if rnd.random() < 0.5 else [step]
        t.update(ns, [n], [])
    fresh = Tracker()
    fresh.reset(ns, names)
    assert t.covariables() == fresh.covariables()
    assert t._index.next_token <= 4 * len(names) + 50 + 1


def test_cached_property_and_loggers_are_not_opaque():
    t, ns = tracked(
        """
        import functools, logging
        class C:
            @functools.cached_property
            def heavy(self):
                return [1, 2]
        c = C()
        log = logging.getLogger("notebook")
        """
    )
    upd = t.update(ns, ["C", "c", "log"], [])
    assert upd.opaque == set() and upd.mutated == set()
    assert run(t, ns, "c.heavy", ["c"]).mutated == {"c"}  # (not the class)


def test_value_digest_disjoint_slices_of_one_buffer_are_independent_values():
    buf = np.arange(10.0)
    a, b = buf[:5], buf[5:]
    assert value_digest({"a": a, "b": b}) == value_digest({"a": a.copy(), "b": b.copy()})
    # overlapping views must stay overlapping
    c, d = buf[:6], buf[4:]
    assert value_digest({"c": c, "d": d}) != value_digest({"c": c.copy(), "d": d.copy()})


def test_value_digest_an_array_whose_elements_alias_is_not_its_copy():
    # as_strided windows and a stride-0 broadcast alias their own elements (`w[0, 1]` is
    # `w[1, 0]`): a lone array was digested by its values only, so a restore that copied one
    # (writes no longer aliased) verified
    from numpy.lib.stride_tricks import as_strided

    w = as_strided(np.zeros(5), shape=(3, 3), strides=(8, 8))
    flat = as_strided(np.ones(1), shape=(4,), strides=(0,))
    assert value_digest({"w": w}) != value_digest({"w": w.copy()})
    assert value_digest({"f": flat}) != value_digest({"f": flat.copy()})
    # a layout whose elements do not alias stays a plain value
    t = np.arange(12.0).reshape(3, 4).T
    assert value_digest({"t": t}) == value_digest({"t": t.copy()})


def test_an_expensive_covariable_touched_again_is_deferred_and_counted_as_mutated():
    from kernel_agent.changes import Tracker

    t = Tracker()
    t.defer_work = 1000
    ns = {"big": [str(i) for i in range(200_000)], "small": [1]}
    t.update(ns, ["big", "small"], [])
    upd = t.update(ns, ["big"], [])
    assert upd.deferred == {"big"} and "big" in upd.mutated
    assert t.stale() == {"big"}


def test_refresh_rewalks_deferred_covariables_and_finds_new_links():
    from kernel_agent.changes import Tracker

    t = Tracker()
    t.defer_work = 1000
    shared = [0]
    ns = {"big": {"rows": [str(i) for i in range(200_000)]}, "other": shared}
    t.update(ns, ["big", "other"], [])
    ns["big"]["link"] = shared  # a link made while `big` is only touched, not walked
    t.update(ns, ["big"], [])
    assert t.covariable_of("big") == {"big"}
    t.refresh(ns)
    assert t.covariable_of("big") == {"big", "other"} and t.stale() == set()


def test_a_rebound_name_is_never_deferred():
    from kernel_agent.changes import Tracker

    t = Tracker()
    t.defer_work = 1000
    ns = {"big": [str(i) for i in range(200_000)]}
    t.update(ns, ["big"], [])
    ns["big"] = [1, 2]
    upd = t.update(ns, ["big"], [])
    assert upd.deferred == set() and upd.rebound == {"big"}


def test_members_of_the_notebooks_enum_are_one_covariable_with_it():
    # members are atoms, linked to nothing: planned apart, the class was re-created by its
    # cell while `fav` came back a member of a copy of it (`fav is Color.BLUE` was False)
    t, ns = tracked("import enum, re\nclass Color(enum.Enum):\n    RED = 1\n    BLUE = 2\n"
                    "fav = Color.BLUE\npalette = [Color.RED]\nflag = re.IGNORECASE\nn = 3")
    assert group(t, "Color", "fav", "palette")
    assert t.covariable_of("flag") == {"flag"}  # a library's enum links nothing
    assert t.covariable_of("n") == {"n"}


# ------------------------------------------------------------------------------------------
# names that did not change are not mutated by a change elsewhere in their co-variable
# ------------------------------------------------------------------------------------------


def _truth(ns: dict[str, Any], names: list[str]) -> dict[str, tuple[int, str, bytes]]:
    """Each name's identity, its portable digest taken alone, and a walk of it alone (which
    holds the identities of what it reaches: `x[0] = [9]` over a `[9]` changed `x`)."""
    return {n: (id(ns[n]), digest_report({n: ns[n]}).digest,
                Tracker()._walk_names(ns, [n], {}, None)[n].fp) for n in names}


@pytest.mark.parametrize("seed", range(20))
def test_random_cells_mutate_exactly_the_names_whose_value_changed(seed):
    """A name is mutated by a cell iff its value (taken alone) changed: missing one is a
    correctness bug, and one too many makes the cell a requirement of a name it did not
    change (the name cannot be recomputed by its own cells when that cell cannot be re-run)."""
    rng, ns, t = random.Random(seed), nb(), Tracker()
    for _ in range(40):
        code, touched, removed = _random_cell(rng, ns)
        before = set(ns)
        old = _truth(ns, [n for n in user_names(ns) if n != "np"])
        exec(code, ns)
        ns.pop("_v", None), ns.pop("_x", None)
        user = [n for n in user_names(ns) if n != "np"]
        upd = t.update(ns, sorted((set(touched) | (set(ns) - before)) & set(user)),
                       sorted(n for n in removed if n not in ns))
        new = _truth(ns, user)
        same = [n for n in user if n in old and old[n][0] == new[n][0]]
        assert upd.mutated >= {n for n in same if old[n][1] != new[n][1]}, code
        assert upd.mutated == {n for n in same if old[n] != new[n]}, code


@pytest.mark.parametrize("value", ["{'k': [1]}", "np.arange(3)", "pd.DataFrame({'x': [1, 2]})"])
@pytest.mark.parametrize("cell", ["del a_holder", "a_holder = [1]"])
def test_a_holder_named_before_a_value_going_away_does_not_mutate_it(value, cell):
    """`m`'s walk linked to the holder's, which walked m's objects first: once the holder is
    deleted or rebound, m's walk covers them again and its fingerprint changes with no change
    to m (the cell was taken to have changed m, and became a requirement of m)."""
    t, ns = tracked(f"import pandas as pd\nm = {value}")
    run(t, ns, "a_holder = [m]", ["a_holder", "m"])
    upd = run(t, ns, cell, ["a_holder", "m"], ["a_holder"])
    assert upd.mutated == set()


def test_a_value_changed_through_a_holder_that_goes_away_is_mutated():
    t, ns = tracked("m = {'k': [1]}")
    run(t, ns, "a_holder = [m]", ["a_holder", "m"])
    upd = run(t, ns, "a_holder[0]['k'].append(2)\ndel a_holder", ["m"], ["a_holder"])
    assert upd.mutated == {"m"}


@pytest.mark.parametrize("holder", ["a_holder", "z_holder"])
def test_changing_a_holder_does_not_mutate_what_it_holds(holder):
    """A co-variable was mutated as a whole: appending to a list that holds `m` mutated m,
    whichever of the two was walked first."""
    t, ns = tracked(f"m = {{'k': [1]}}\n{holder} = [m]")
    assert run(t, ns, f"{holder}.append(5)", [holder]).mutated == {holder}
    assert run(t, ns, f"{holder}[0]['k'].append(2)", [holder]).mutated == {holder, "m"}


def test_a_second_holder_taking_over_a_value_does_not_mutate_it_or_the_holder():
    """With two holders sorted before `m`, the first walks m's objects; deleting it moves
    that walk to the second, whose fingerprint changes (and m's link) with no change."""
    t, ns = tracked("m = {'k': [1]}\na1 = [m]\na2 = [m]")
    assert run(t, ns, "del a1", ["a2", "m"], ["a1"]).mutated == set()
    assert run(t, ns, "a2.append(1)", ["a2"]).mutated == {"a2"}
    assert run(t, ns, "a2[0]['k'].append(1)", ["a2"]).mutated == {"a2", "m"}


def test_a_name_reaching_a_lock_only_through_its_holder_is_not_mutated_when_read():
    """`m` is walked after the holder that also holds a lock: its print inherits the holder's
    opacity, and every cell that read m counted as changing it. Walked alone, m is not
    opaque, and its walk alone shows it unchanged."""
    t, ns = tracked("import threading\nm = [1, 2]\na_h = [m, threading.Lock()]")
    upd = run(t, ns, "r = len(m)", ["m", "r"])
    upd = run(t, ns, "r = len(m)", ["m", "r"])
    assert upd.mutated == {"a_h"} and upd.opaque == {"a_h"}  # (a lock: always changed)
    assert run(t, ns, "m.append(3)", ["m"]).mutated == {"a_h", "m"}


@pytest.mark.parametrize(("setup", "cell", "unchanged"), [
    ("class K:\n    pass\nk = K()\nm = [1, 2]\nk.x = m", "k.y = 3", {"K", "m"}),
    ("m = [1, 2, 3]\na_g = (x for x in m)", "r = next(a_g)", {"m"}),
    ("m = np.arange(10)\na_v = m[2:5]", "del a_v", {"m"}),
    ("import pandas as pd\nm = pd.DataFrame({'x': [1, 2]})\na_s = m['x']", "del a_s", {"m"}),
    ("class K:\n    def go(self):\n        return 1\nk = K()\na_f = k.go", "del a_f", {"K", "k"}),
    ("m = {'k': [1, 2], 'j': [3]}\na = m['k']", "m['j'].append(5)", {"a"}),
    ("m = [1, 2]\narr = np.array([None, None], dtype=object)", "arr[0] = m", {"m"}),
    ("import pandas as pd\ndf = pd.DataFrame({'x': [1]})\ndf2 = df * 2\ndata = {'a': df, 'b': df2}",
     "del data", {"df", "df2"}),
])
def test_a_change_elsewhere_in_a_covariable_does_not_mutate_the_names_it_left_alone(
        setup, cell, unchanged):
    """Instances holding a value, generators over it, views and series of it, bound methods,
    parts of a dict, object arrays: the cell changed or removed another name of the
    co-variable, and these names' values are as they were."""
    t, ns = tracked(setup)
    names = [n for n in user_names(ns) if n != "np"]
    exec(textwrap.dedent(cell), ns)
    upd = t.update(ns, [n for n in user_names(ns) if n != "np"], [n for n in names if n not in ns])
    assert not upd.mutated & unchanged


@pytest.mark.parametrize("cell", ["a_h = [m]\na_h[0]['k'].append(2)",
                                  "a_h = list(a_h)\na_h[0]['k'].append(2)"])
def test_a_value_changed_through_a_holder_rebound_before_it_is_mutated(cell):
    """A cell run again (`a_h = [m]` then a change through it): `m`'s walk links to the new
    holder, which walked m's objects first, so m's fingerprint (a link) did not change, and
    the holder, rebound, is compared with nothing: the change to m was missed."""
    t, ns = tracked("m = {'k': [1]}\na_h = [m]")
    upd = run(t, ns, cell, ["a_h", "m"])
    assert upd.mutated == {"m"} and upd.rebound == {"a_h"}
    assert run(t, ns, "a_h = [m]", ["a_h", "m"]).mutated == set()


_OBJECTS = "class K:\n    def __init__(self, v):\n        self.v = v\n    def get(self):\n        return self.v\n"
_CHANGE = ("_t = {a}\nfor _i in range(20):\n"
           "    if isinstance(_t, K): _t = _t.v\n"
           "    elif isinstance(_t, tuple) and _t: _t = _t[0]\n"
           "    elif callable(_t) and getattr(_t, '__closure__', None):"
           " _t = _t.__closure__[0].cell_contents\n"
           "    else: break\n"
           "if isinstance(_t, list): _t.append(1)\n"
           "elif isinstance(_t, dict): _t['z'] = 1\n"
           "elif isinstance(_t, set): _t.add(len(_t) + 10)\n"
           "elif isinstance(_t, np.ndarray): _t[0] += 1")


def _object_cell(rng: random.Random, ns: dict[str, Any]) -> tuple[str, list[str]]:
    """(code, names it names): instances, closures, bound methods, tuples and sets holding
    each other, and changes made through them; one or two operations a cell (a holder made
    again and a change through it in one cell was a missed mutation)."""
    names = sorted(n for n in ns if not n.startswith("_") and n not in ("np", "K"))
    new = rng.choice(["a", "b", "c", "m", "n", "z", "h1", "h2"])
    if not names or rng.random() < 0.15:
        v = rng.choice(["[1, [2]]", "{'k': [1]}", "K([1])", "np.arange(4.0)", "([1], 2)", "{1, 2}",
                        "(lambda q: (lambda: q))([5])"])
        return f"{new} = {v}", [new, "K"]
    a, b = rng.choice(names), rng.choice(names)
    ops = [(f"{new} = [{a}]", [new, a]), (f"{new} = {a}", [new, a]),
           (f"{new} = K({a})", [new, a, "K"]), (f"{new} = ({a}, [0])", [new, a]),
           (f"_x = repr({a})", [a]), (_CHANGE.format(a=a), [a]),
           (f"if isinstance({a}, K): {a}.v = {b}", [a, b]),
           (f"if isinstance({a}, K): {new} = {a}.get", [a, new]),
           (f"if isinstance({a}, list): {a}[:] = {a}[:]", [a])]
    if rng.random() < 0.1:
        return f"del {a}", []
    code, named = ops[rng.randrange(len(ops))]
    if rng.random() < 0.4:
        code2, named2 = ops[rng.randrange(len(ops))]
        code, named = code + "\n" + code2, named + named2
    return code, named


@pytest.mark.parametrize("seed", range(20))
def test_random_object_cells_mutate_exactly_the_names_whose_value_changed(seed):
    """As `test_random_cells_mutate_exactly_the_names_whose_value_changed`, with objects."""
    rng, ns, t = random.Random(seed), nb(_OBJECTS), Tracker()
    t.reset(ns, ["K"])
    for _ in range(50):
        code, named = _object_cell(rng, ns)
        before = [n for n in user_names(ns) if n != "np"]
        old = _truth(ns, before)
        exec(code, ns)
        for k in ("_x", "_t", "_i"):
            ns.pop(k, None)
        user = [n for n in user_names(ns) if n != "np"]
        upd = t.update(ns, sorted((set(named) | (set(user) - set(before))) & set(user)),
                       [n for n in before if n not in ns])
        new = _truth(ns, user)
        same = [n for n in user if n in old and old[n][0] == new[n][0]]
        assert upd.mutated == {n for n in same if old[n] != new[n]}, code


@pytest.mark.parametrize("value", ["io.StringIO('abc')", "io.BytesIO(b'abc')"])
def test_reading_an_in_memory_file_does_not_mutate_it(value):
    """An in-memory file was walked as opaque (its content is what the portable digest
    checks): every cell that read it (`buf.getvalue()`) counted as changing it."""
    t, ns = tracked(f"import io\nbuf = {value}")
    assert run(t, ns, "r = buf.getvalue()", ["buf", "r"]).mutated == set()
    assert t.update(ns, ["buf"], []).opaque == set()
    assert run(t, ns, "buf.seek(1)", ["buf"]).mutated == {"buf"}  # (its position)
    assert run(t, ns, "buf.write(buf.read(1))", ["buf"]).mutated == {"buf"}


def test_an_in_memory_file_over_the_hash_budget_counts_as_changed_when_touched():
    t, ns = tracked("import io\nbuf = io.StringIO('x' * 100)")
    t.hash_budget = 10
    upd = t.update(ns, ["buf"], [])
    assert upd.mutated == {"buf"} and "buf" in t.stale()


def test_a_name_changed_in_its_own_walk_costs_no_walk_alone(monkeypatch):
    """`rows` links to the r_i walked before it (they are its items): appending to it changes
    its own walk with the same links, which says it changed; a walk of it alone, every cell
    that appends, would only walk the r_i again."""
    import kernel_agent.changes as changes

    t, ns = tracked("\n".join(f"r_{i} = {{'i': [{i}]}}" for i in range(50))
                    + "\nrows = [" + ", ".join(f"r_{i}" for i in range(50)) + "]")
    t.solo_keep_work = 0  # (no walk alone kept for later either: only the decision counts)
    alone: list[int] = []
    real = changes._fingerprint

    def counting(value: Any, *args: Any, **kw: Any) -> Any:
        if kw.get("shared", args[4] if len(args) > 4 else None) is None:
            alone.append(id(value))
        return real(value, *args, **kw)

    monkeypatch.setattr(changes, "_fingerprint", counting)
    upd = run(t, ns, "rows.append(1)", ["rows"])
    assert upd.mutated == {"rows"} and alone == []
    upd = run(t, ns, "rows[0]['i'].append(2)", ["rows"])
    assert upd.mutated == {"rows", "r_0"}


def test_a_value_held_since_a_reset_is_not_mutated_by_a_change_to_its_holder():
    """A reset (a restore, the agent loaded) makes every name at once: `rows` links to the
    holder walked before it and had no walk alone kept (over `solo_keep_work`), so appending
    to the holder counted as changing rows. A reset is off the cells' path: it keeps them."""
    t, ns = tracked("rows = [{'i': i, 's': str(i)} for i in range(5000)]\na_data = [rows]")
    assert t._prints["rows"].links == ("a_data",)
    assert run(t, ns, "a_data.append(1)", ["a_data"]).mutated == {"a_data"}
    assert run(t, ns, "del a_data", [], ["a_data"]).mutated == set()
    assert run(t, ns, "rows[0]['i'] = -1", ["rows"]).mutated == {"rows"}


def test_ids_digest_as_the_places_of_their_objects():
    # `{id(o): o}` made again over copies of the objects holds other ints: with the ids taken
    # as places (`id_tokens`) it digests as before, and an id of another object does not
    objs = [[i] for i in range(3)]
    copies = copy.deepcopy(objs)

    def values(xs: list) -> dict:
        return {"index": {id(o): o for o in xs}, "ids": [id(o) for o in xs],
                "seen": {id(o) for o in xs}, "objs": xs}

    def digest(vals: dict, xs: list) -> str:
        return digest_report(vals, ids=id_tokens({"objs": xs})).digest

    assert digest(values(copies), copies) == digest(values(objs), objs)
    assert value_digest(values(copies)) != value_digest(values(objs))
    swapped = values(copies)
    swapped["ids"] = [id(copies[1]), id(copies[0]), id(copies[2])]
    assert digest(swapped, copies) != digest(values(objs), objs)


class _Member:
    """A node of a graph whose sets hold one another (an ORM's mappers and tables, a social
    network's `friends`), hashed by identity as most objects are."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.friends: set[_Member] = set()


def _clique(names: list[str], order: list[int]) -> dict[str, _Member]:
    members = {n: _Member(n) for n in names}
    for i in order:  # each member's set filled in another order: another iteration order
        me = members[names[i]]
        for j in order:
            if j != i:
                me.friends.add(members[names[j]])
    return members


def test_sets_that_hold_one_another_are_digested_once_each_and_in_one_order():
    # each element of a set was digested on its own, with a fresh memo, to order the set: a
    # set reaching another set reaching the first walked the graph again for every path and
    # again inside itself until the recursion limit (a notebook holding a SQLAlchemy session
    # never finished its checkpoint). Each element's key is now computed once; the digest
    # still does not depend on the order the sets iterate in, and still sees a change
    names = [f"m{i}" for i in range(14)]
    a = _clique(names, list(range(14)))
    b = _clique(names, list(reversed(range(14))))
    rep = digest_report(a)
    assert not rep.opaque and not rep.truncated
    assert rep.work < 200_000
    assert rep.digest == digest_report(b).digest
    b["m3"].friends.discard(b["m7"])
    assert digest_report(b).digest != rep.digest
    b["m3"].friends.add(b["m7"])
    b["m5"].name = "renamed"
    assert digest_report(b).digest != rep.digest


def test_a_change_deep_in_sets_that_hold_one_another_is_a_mutation():
    ns: dict[str, Any] = {"__name__": "__main__", "club": _clique(["a", "b", "c", "d", "e"], [0, 1, 2, 3, 4])}
    t = Tracker()
    t.reset(ns, ["club"])
    upd = t.update(ns, ["club"], [])
    assert upd.opaque == set() and upd.mutated == set()
    ns["club"]["c"].name = "changed"
    assert t.update(ns, ["club"], []).mutated == {"club"}


def test_portable_digest_ignores_sympys_fact_cache_and_expression_cache_sharing():
    """Equal sympy values digest alike whether or not they were asked questions (a symbol's
    `_assumptions` caches each deduced fact, in the order deduced) and whether sympy's cache
    made two equal subterms one object; a different value, a different assumption, or an
    Integer instead of an equal Float still differ."""
    sympy = pytest.importorskip("sympy")
    x = sympy.Symbol("x", real=True)
    inner = -x
    sympy.core.cache.clear_cache()  # (else sympy's cache hands back `inner` itself)
    other = -x
    assert inner == other and inner is not other
    fresh = pickle.loads(pickle.dumps(x))  # (pickling keeps the given assumptions only)
    assert x.is_integer is None and x.is_positive is None  # fills x's fact cache
    assert dict(x._assumptions) != dict(fresh._assumptions)
    assert value_digest({"v": [x, inner]}) == value_digest({"v": [fresh, inner]})
    assert value_digest({"v": [inner, sympy.exp(inner)]}) == value_digest({"v": [inner, sympy.exp(other)]})
    assert value_digest({"v": [x, inner]}) != value_digest({"v": [sympy.Symbol("x"), inner]})
    assert value_digest({"v": [inner, sympy.exp(inner)]}) != value_digest({"v": [inner, sympy.exp(x)]})
    two, twof = sympy.Integer(2), sympy.Float(2.0)
    assert value_digest({"v": [two, two]}) != value_digest({"v": [two, twof]})
    unhashed = sympy.Add(x, sympy.Integer(12345), evaluate=False)
    assert unhashed._mhash is None
    value_digest({"v": [unhashed, sympy.Add(x, sympy.Integer(12345), evaluate=False)]})
    assert unhashed._mhash is None  # (sympy caches a hash in it: a change the tracker sees)
    # a Dummy's number is per process; which dummies are one is kept
    k1, k2 = sympy.Dummy("k", dummy_index=11), sympy.Dummy("k", dummy_index=12)
    assert value_digest({"v": [k1]}) == value_digest({"v": [k2]})
    assert value_digest({"v": [k1, k2]}) != value_digest({"v": [k1, k1]})
    assert value_digest({"v": [k1, k2]}) != value_digest({"v": [k1, sympy.Dummy("k", dummy_index=11)]})


def test_a_structured_array_holding_objects_is_not_changed_by_being_looked_at():
    """Its records come out of every `tolist()` as new tuples: walked with their ids, each
    fingerprint differed, and a checkpoint found it "changed outside recorded cells"."""
    t, ns = tracked(
        """
        class Item:
            pass
        a = Item()
        st = np.zeros(2, dtype=[("o", object), ("x", float)])
        st["o"][0] = a
        """
    )
    upd = t.update(ns, user_names(ns), [])
    assert upd.mutated == set()
    assert group(t, "st", "a")


def test_the_portable_digest_tells_a_view_of_an_object_array_from_a_copy():
    """`view = arr[::2]` stores into `arr`; a copy of the same items does not. Walked as a list
    of its items, a view shipped as a copy (apart from `arr`) verified."""
    item = object.__new__(type("Item", (), {}))
    arr = np.array([item, 1, item, None], dtype=object)
    view = arr[::2]
    assert value_digest({"arr": arr, "view": view}) != value_digest({"arr": arr, "view": view.copy()})
    assert value_digest({"arr": arr, "view": view}) == value_digest({"arr": arr, "view": arr[::2]})
