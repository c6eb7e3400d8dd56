"""Work the tracker leaves to the checkpoint: unhashed big buffers, names joining an expensive
co-variable without a walk. A deferred co-variable must count as mutated by every cell that
touches it (over-approximation is safe, a missed mutation is not), and the checkpoint's
`refresh` must walk it in full so that the restore is equal, aliasing included."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_agent.changes import Tracker
from kernel_agent.monitor import _diff, _Snap
from tests.engine.migrate import assert_verified, checkpoint, restore, run_all
from tests.faults import wait_for

BIG = 3_000_000  # float64: 24 MB, over the 8 MB per-cell hash budget


def _tracker(ns: dict, **attrs) -> Tracker:
    t = Tracker()
    for k, v in attrs.items():
        setattr(t, k, v)
    t.update(ns, sorted(ns), [])
    return t


# -- hash budget ---------------------------------------------------------------------------------


def test_an_array_over_the_hash_budget_is_partial_and_every_touch_is_a_mutation():
    ns = {"big": np.zeros(BIG), "small": np.zeros(10)}
    t = _tracker(ns)
    assert t.stale() == {"big"}
    upd = t.update(ns, ["big"], [])  # only read: still counted, it was never hashed
    assert upd.deferred == {"big"} and upd.mutated == {"big"}
    assert t.update(ns, ["small"], []).mutated == set()


def test_a_mutation_of_an_unhashed_array_is_seen_by_refresh_and_later_cells():
    ns = {"big": np.zeros(BIG)}
    t = _tracker(ns)
    ns["big"][123] = 1.0
    assert "big" in t.update(ns, ["big"], []).mutated
    t.refresh(ns)  # the checkpoint: hashed in full now
    assert t.stale() == set()
    assert t.update(ns, ["big"], []).mutated == {"big"}  # small budget again: partial
    t.refresh(ns)


def test_a_completed_array_read_by_an_update_with_budget_for_it_is_not_a_mutation():
    ns = {"big": np.zeros(BIG)}
    t = _tracker(ns)
    assert t.incomplete(BIG * 8) == ["big"] and t.incomplete(BIG * 8 - 1) == []
    t.complete(ns, ["big"])  # between cells
    assert t.stale() == set() and t.incomplete(BIG * 8) == []
    assert t.update(ns, ["big"], [], hash_budget=BIG * 8).mutated == set()  # a long cell read it
    ns["big"][9] = 1.0
    assert t.update(ns, ["big"], [], hash_budget=BIG * 8).mutated == {"big"}
    # a short cell cannot tell: counted as a mutation, and the fingerprint is partial again
    assert t.update(ns, ["big"], []).mutated == {"big"}
    assert t.incomplete(BIG * 8) == ["big"]


def test_a_partial_array_is_not_completed_for_a_name_rebound_since():
    ns = {"big": np.zeros(BIG)}
    t = _tracker(ns)
    ns["big"] = np.ones(BIG)  # a silent execution: no cell saw it
    t.complete(ns, ["big"])
    assert t.stale() == {"big"}  # the next cell that touches it sees the rebinding
    assert t.update(ns, ["big"], []).rebound == {"big"}


def test_without_a_budget_reads_of_big_arrays_are_exact():
    ns = {"big": np.zeros(BIG)}
    t = _tracker(ns, hash_budget=None)
    assert t.stale() == set() and t.update(ns, ["big"], []).mutated == set()
    ns["big"][5] = 2.0
    assert t.update(ns, ["big"], []).mutated == {"big"}


def test_views_of_an_unhashed_base_stay_one_covariable():
    base = np.zeros(BIG)
    ns = {"base": base, "view": base[10:20]}
    t = _tracker(ns)
    assert t.covariable_of("view") == {"base", "view"}
    ns["view"][0] = 1.0
    assert t.update(ns, ["view"], []).mutated == {"base", "view"}


def test_budget_is_shared_by_the_names_of_one_update():
    ns = {f"a{i}": np.zeros(400_000) for i in range(4)}  # 3.2 MB each, 12.8 MB together
    t = _tracker(ns)
    assert 0 < len(t.stale()) < 4


def test_a_covariable_over_the_whole_budget_leaves_it_to_those_it_can_finish():
    """A frame bigger than the budget comes out partial however much of it is hashed; walked
    first (its name sorts first) it used to spend the budget and leave a small frame the same
    cell read unhashed, so that read counted as a mutation of both."""
    pd = pytest.importorskip("pandas")
    ns = {"a_big": pd.DataFrame({"x": np.zeros(1_000_000),  # two blocks of 8 MB
                                 "n": np.zeros(1_000_000, dtype=np.int64)}),
          "b_small": pd.DataFrame({"x": np.zeros(100_000)})}
    t = _tracker(ns, hash_budget=None)  # (completed: both fingerprints are whole)
    t.hash_budget = 8 << 20
    upd = t.update(ns, ["a_big", "b_small"], [])
    assert upd.mutated == {"a_big"}
    ns["b_small"].loc[5, "x"] = 1.0
    assert t.update(ns, ["a_big", "b_small"], []).mutated == {"a_big", "b_small"}


def test_a_big_list_of_atoms_is_partial_but_its_links_are_exact():
    shared = [1]
    ns = {"nums": list(range(3_000_000)), "holder": [shared, list(range(3_000_000))],
          "other": shared}
    t = _tracker(ns)
    assert t.covariable_of("holder") == {"holder", "other"}
    assert "nums" in t.update(ns, ["nums"], []).mutated


def test_a_string_column_over_the_budget_is_partial():
    pd = pytest.importorskip("pandas")
    ns = {"df": pd.DataFrame({"s": ["x", "y"] * 600_000})}
    t = _tracker(ns)
    assert t.stale() == {"df"} and "df" in t.update(ns, ["df"], []).mutated
    t.refresh(ns)
    assert t.stale() == set()


def test_object_arrays_of_atoms_still_see_element_changes():
    ns = {"o": np.array(["a", 1, 2.5] * 1000, dtype=object)}
    t = _tracker(ns, hash_budget=None)
    assert t.update(ns, ["o"], []).mutated == set()
    ns["o"][7] = "changed"
    assert t.update(ns, ["o"], []).mutated == {"o"}


# -- joining an expensive co-variable without a walk -------------------------------------------


class _Node:
    # library objects (a graph of nodes): this test file, a .py outside the installed paths,
    # would otherwise count as the notebook's own module, whose instances link to their class
    __module__ = "somelib.graph"

    def __init__(self, i: int, owner: object):
        self.i = i
        self.owner = owner
        self.items: list[int] = []


class _Bank:
    __module__ = "somelib.graph"

    def __init__(self, n: int):
        self.nodes = [_Node(i, self) for i in range(n)]


def test_a_new_name_reaching_an_expensive_graph_joins_it_without_a_walk():
    ns = {"bank": _Bank(2000), "x": [1]}
    t = _tracker(ns, defer_work=1000)
    ns["alice"] = ns["bank"].nodes[0]
    upd = t.update(ns, ["alice", "bank"], [])
    assert upd.joined == {"alice"} and "alice" in upd.rebound
    assert t.covariable_of("alice") == {"alice", "bank"}
    assert "alice" in t.stale()
    # a mutation through the joined name is a mutation of the whole co-variable
    ns["alice"].items.append(5)
    assert t.update(ns, ["alice"], []).mutated == {"alice", "bank"}
    t.refresh(ns)
    assert t.stale() == set() and t.covariable_of("alice") == {"alice", "bank"}


def test_a_joined_name_rebound_elsewhere_leaves_the_covariable():
    ns = {"bank": _Bank(2000)}
    t = _tracker(ns, defer_work=1000)
    ns["alice"] = ns["bank"].nodes[3]
    t.update(ns, ["alice"], [])
    ns["alice"] = [1, 2]
    upd = t.update(ns, ["alice"], [])
    assert "alice" in upd.rebound and not upd.joined
    t.refresh(ns)
    assert t.covariable_of("alice") == {"alice"} and t.covariable_of("bank") == {"bank"}


def test_an_object_that_left_a_touched_graph_is_walked_not_joined():
    """The index of a co-variable touched since its last walk is out of date: an object it
    lists may have left it (or its id may belong to a new object). Joined unwalked, `x` would
    miss its link to `h`."""
    bank = _Bank(3000)
    h = [1, 2]
    ns = {"bank": bank, "h": h}
    t = _tracker(ns, defer_work=1000)
    leaver = bank.nodes.pop()
    t.update(ns, ["bank"], [])  # deferred: the index still lists `leaver`
    leaver.owner = None
    leaver.items = [h]
    ns["x"] = leaver
    upd = t.update(ns, ["x"], [])
    assert not upd.joined and {"x", "h"} <= t.covariable_of("x")  # (bank too: stale index)
    t.refresh(ns)
    assert t.covariable_of("x") == {"x", "h"} and t.covariable_of("bank") == {"bank"}


def test_a_link_made_inside_a_deferred_covariable_is_assumed_at_once():
    """`node.items = [...] + [h]` in a cell that touches `bank` (deferred: not walked) and `h`:
    no walk sees the link, so `bank` and `h` are merged until the checkpoint's refresh, and a
    later mutation through `h` is a mutation of `bank` as well."""
    bank = _Bank(3000)
    h = [1, 2]
    ns = {"bank": bank, "h": h, "lone": [0]}
    t = _tracker(ns, defer_work=1000)
    node = bank.nodes[0]
    node.items = [_Node(i, None) for i in range(3000)] + [h]
    ns["x"] = node
    t.update(ns, ["x", "bank", "h"], [])
    assert {"x", "h", "bank"} <= t.covariable_of("x") and "lone" not in t.covariable_of("x")
    h.append(3)
    assert {"bank", "h"} <= t.update(ns, ["h"], []).mutated
    ns["h"] = None  # the list now lives on inside bank only
    t.update(ns, ["h"], [])
    t.refresh(ns)
    assert t.covariable_of("bank") == {"bank", "x"} and t.covariable_of("h") == {"h"}


def test_numeric_arrays_touched_with_other_names_are_not_merged():
    ns = {"big": np.zeros(BIG), "rows": [[1], [2]]}
    t = _tracker(ns)
    upd = t.update(ns, ["big", "rows"], [])
    assert upd.deferred == {"big"} and t.covariable_of("big") == {"big"}


def test_a_partial_list_is_walked_again_when_touched_so_links_are_seen():
    shared = [0]
    ns = {"nums": list(range(1_000_000)), "other": shared}
    t = _tracker(ns, defer_work=10 * BIG)  # cheap enough to walk, too big to hash
    assert "nums" in t.stale()
    ns["nums"].append(shared)
    upd = t.update(ns, ["nums"], [])
    assert "nums" in upd.mutated and not upd.deferred
    assert t.covariable_of("nums") == {"nums", "other"}


def test_a_new_name_outside_the_graph_is_walked():
    ns = {"bank": _Bank(2000)}
    t = _tracker(ns, defer_work=1000)
    ns["lone"] = _Node(-1, None)
    upd = t.update(ns, ["lone"], [])
    assert not upd.joined and t.covariable_of("lone") == {"lone"} and "lone" not in t.stale()


def test_a_cheap_covariable_is_not_joined_blindly():
    ns = {"small": [[1], [2]]}
    t = _tracker(ns)
    ns["inner"] = ns["small"][0]
    upd = t.update(ns, ["inner"], [])
    assert not upd.joined and t.covariable_of("inner") == {"inner", "small"}
    assert t.stale() == set()


# -- namespace snapshots -------------------------------------------------------------------------


def test_namespace_diff_sees_new_rebound_and_deleted_names():
    ns: dict = {"a": 1000, "b": [1], "c": "x"}
    s0 = _Snap(ns)
    ns["b"] = [1]  # same value, other object
    ns["d"] = 5
    assert _diff(s0, _Snap(ns)) == ({"b", "d"}, set())
    s1 = _Snap(ns)
    del ns["a"]
    ns["a"] = 2000  # deleted and re-added: moves to the end
    del ns["c"]
    assert _diff(s1, _Snap(ns)) == ({"a"}, {"c"})
    s2 = _Snap(ns)
    assert _diff(s2, _Snap(ns)) == (set(), set())


# -- in a kernel ---------------------------------------------------------------------------------


def test_a_long_cell_that_only_reads_a_big_array_is_not_recorded_as_its_mutator(agent):
    """The kernel hashes the array in full between cells; a cell that ran long enough to
    afford hashing it too (`Monitor.hash_budget_per_s`) is then compared, not presumed."""
    agent.ok("import numpy as np, time")
    agent.cell(f"lng_big = np.zeros({BIG})")
    stale = "__import__('kernel_agent.extension').extension.get_monitor().tracker.stale()"
    wait_for(lambda: "lng_big" not in agent.value(f"sorted({stale})"), 30,
             "the array to be hashed between cells")
    rec = agent.cell("time.sleep(0.5)\nlng_sum = float(lng_big.sum())")
    assert "lng_big" not in rec["mutated"] and "lng_big" in rec["reads"], rec
    wait_for(lambda: "lng_big" not in agent.value(f"sorted({stale})"), 30,
             "the array to be hashed again")
    rec = agent.cell("time.sleep(0.5)\nlng_big[3] = 1.0")
    assert "lng_big" in rec["mutated"], rec


def test_every_cell_touching_a_big_array_is_recorded_as_a_possible_mutator(agent):
    agent.ok("import numpy as np")
    agent.cell(f"dfr_big = np.zeros({BIG})")
    rec = agent.cell("dfr_m = float(dfr_big.sum())")
    assert "dfr_big" in rec["mutated"]
    rec = agent.cell("dfr_big[7] = 3.0")
    assert "dfr_big" in rec["mutated"]


MIGRATED = [
    # (nothing hashed between cells: what the checkpoint's refresh must do stays to be done)
    "__import__('kernel_agent.extension').extension.get_monitor().idle_hash_limit = 0",
    "import numpy as np",
    f"big = np.arange({BIG}, dtype=np.float64)",
    "view = big[10:20]",
    "total = float(big.sum())",
    "def bump(a):\n    a[5] += 1.0",
    "bump(big)",  # a mutation through a call, while `big` is deferred
    "class Node:\n    def __init__(self, i, owner):\n        self.i, self.owner, self.items = i, owner, []",
    "class Bank:\n    def __init__(self, n):\n        self.nodes = [Node(i, self) for i in range(n)]",
    "__import__('kernel_agent.extension').extension.get_monitor().tracker.defer_work = 1000",
    "bank = Bank(3000)",
    "alice = bank.nodes[0]",  # joins bank's co-variable without a walk
    "alice.items.append(7)",
    "bob = bank.nodes[1]\nbob.items.append(8)",
]


def test_deferred_covariables_come_back_equal_after_a_migration(make_kernel, store_url):
    a = make_kernel()
    run_all(a, MIGRATED)
    stale = a.value("sorted(__import__('kernel_agent.extension').extension.get_monitor().tracker.stale())")
    assert {"big", "alice", "bob"} <= set(stale)
    c = checkpoint(a, store_url)
    assert c
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("[float(big[5]), float(big[6]), float(view[0]), bool(np.shares_memory(big, view))]") == [
        6.0, 6.0, 10.0, True]
    assert b.value("[alice is bank.nodes[0], bob is bank.nodes[1], alice.owner is bank, "
                   "alice.items, bob.items, len(bank.nodes)]") == [True, True, True, [7], [8], 3000]


def test_deferred_covariables_come_back_equal_when_recomputed(make_kernel, store_url):
    """The same session restored by re-running cells only (nothing shipped): the history must
    list every cell that may have mutated the deferred co-variables."""
    a = make_kernel()
    run_all(a, MIGRATED)
    c = checkpoint(a, store_url, strategy="recompute-all")
    assert c
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("[float(big[5]), float(view[0]), bool(np.shares_memory(big, view))]") == [
        6.0, 10.0, True]
    assert b.value("[alice is bank.nodes[0], alice.items, bank.nodes[1].items]") == [True, [7], [8]]


def test_namespace_version_tag_changes_with_every_change():
    from kernel_agent.dictversion import dict_version as _dict_version

    ns: dict = {"a": 1}
    v0 = _dict_version(ns)
    if v0 is None:
        pytest.skip("no version tag on this interpreter: the monitor always diffs")
    seen = {v0}
    for change in ("ns['a'] = 2", "ns['b'] = 1", "del ns['a']", "ns.update(c=3)", "ns.pop('c')",
                   "ns['b'] = [ns['b']]"):
        exec(change, {"ns": ns})
        v = _dict_version(ns)
        assert v not in seen, change
        seen.add(v)
    assert _dict_version(ns) == _dict_version(ns)


def test_user_names_follow_changes_between_cells(agent):
    """Names bound outside recorded cells (silent executions) and hidden names the user rebinds
    are seen by the next recorded cell, as a full scan of the namespace would see them."""
    agent.ok("unb_a = 1")
    agent.run("unb_silent = [1]", silent=True)
    rec = agent.cell("unb_b = unb_silent + [unb_a]")
    assert "unb_silent" in rec["reads"]
    agent.run("del unb_a", silent=True)
    rec = agent.cell("unb_c = 3")
    assert "unb_a" not in rec["deletes"]  # deleted outside a recorded cell: not this cell's
    rec = agent.cell("open = print")
    assert "open" in rec["writes"]
    rec = agent.cell("del open")
    assert "open" in rec["deletes"]


def test_namespace_snapshot_ids_are_the_values_ids():
    ns = {f"v{i}": (i if i % 3 else [i]) for i in range(500)}
    assert _Snap(ns).ids.tolist() == [id(v) for v in ns.values()]
    assert _Snap({}).ids.tolist() == []


# -- plain data skips the read analysis ----------------------------------------------------------


def test_plain_is_only_said_of_data_walked_since_its_last_touch():
    def helper():
        return 1

    ns = {"nums": list(range(1000)), "frame": {"a": np.zeros(3)}, "fns": [helper], "n": 3,
          "big": np.zeros(BIG)}
    t = _tracker(ns)
    assert t.plain("nums", ns["nums"]) and t.plain("frame", ns["frame"]) and t.plain("n", 3)
    assert not t.plain("fns", ns["fns"])
    assert not t.plain("nums", [1])  # another object
    assert t.plain("big", ns["big"])  # partial: walked in full, only its bytes unhashed
    t.update(ns, ["big"], [])  # deferred: not walked, so what it holds now is unknown
    assert not t.plain("big", ns["big"])
    t.refresh(ns)
    assert t.plain("big", ns["big"])
    ns["nums"].append(helper)
    t.update(ns, ["nums"], [])
    assert not t.plain("nums", ns["nums"])


def test_code_put_into_plain_data_is_read_through(agent):
    agent.ok("pl_K = 5\ndef pl_helper():\n    return pl_K")
    agent.ok("pl_list = [1, 2]")
    agent.cell("pl_list.append(pl_helper)")
    rec = agent.cell("pl_out = pl_list[-1]()")
    assert "pl_K" in rec["reads"]


LINKED = [
    "__import__('kernel_agent.extension').extension.get_monitor().tracker.defer_work = 1000",
    "rows = [[i] for i in range(3000)]",
    "h = [1, 2]",
    "rows.append(h)",  # rows is deferred: no walk sees this link
    "h.append(3)",  # mutates what rows holds
    "h = None",  # the list lives on in rows only
    "n_rows = len(rows)",
]


@pytest.mark.parametrize("strategy", ["optimal", "recompute-all"])
def test_a_link_made_while_deferred_comes_back_equal(make_kernel, store_url, strategy):
    a = make_kernel()
    run_all(a, LINKED)
    assert checkpoint(a, store_url, strategy=strategy)
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("[rows[-1], h, n_rows, rows[5]]") == [[1, 2, 3], None, 3001, [5]]


# -- changes made outside recorded cells (Tracker.drifted) ----------------------------------


def test_drift_finds_a_covariable_changed_without_an_update_and_nothing_else():
    shared = [1]
    ns = {"a": shared, "b": {"k": shared}, "c": [2], "n": 5}
    t = _tracker(ns)
    assert t.drifted(ns, sorted(ns)) == set()
    shared.append(3)  # no update told the tracker
    assert t.drifted(ns, sorted(ns)) == {"a", "b"}
    assert t.drifted(ns, sorted(ns)) == {"a", "b"}  # a check: the tracker's state is kept


def test_drift_finds_a_name_rebound_without_an_update():
    ns = {"a": [1], "n": 5}
    t = _tracker(ns)
    ns["a"], ns["n"] = [1], 6
    assert t.drifted(ns, sorted(ns)) == {"a", "n"}


def test_drift_is_not_said_of_what_a_partial_fingerprint_cannot_tell():
    ns = {"big": np.zeros(BIG), "small": np.zeros(10)}
    t = _tracker(ns)  # big: over the hash budget
    ns["big"][5] = 1.0
    assert t.drifted(ns, sorted(ns)) == set()


def test_drift_is_checked_only_for_covariables_whose_names_are_all_asked_about():
    shared = [1]
    ns = {"a": shared, "b": [shared]}
    t = _tracker(ns)
    shared.append(2)
    assert t.drifted(ns, ["a"]) == set()  # (b: changed by the cell running now, say)
    assert t.drifted(ns, ["a", "b"]) == {"a", "b"}


def test_drift_checks_the_smallest_covariables_within_its_budget():
    ns = {"big": list(range(50_000)), "small": [1, 2]}
    t = _tracker(ns, hash_budget=None)
    t.drift_work = 1_000
    ns["big"].append(0)
    ns["small"].append(0)
    assert t.drifted(ns, sorted(ns)) == {"small"}
