"""Notebook states whose shape is extreme: very deep, very wide, many names, odd names.

Each migrates from kernel A to fresh kernels (the optimal plan and a replay plan); the restore
must verify every variable, or name what it does not keep with a reason - never a crash of the
checkpoint, a kernel left broken, nor a value silently left out or different.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate


def test_a_namespace_key_that_is_not_a_string_is_named_not_silently_dropped(make_kernel, tmp_path):
    """`globals()[1] = 'x'` puts a key no code can name in the user namespace: every name list
    of the agent takes only strings, so the checkpoint left it out and the restore said
    "verified" with nothing lost while `globals()[1]` was gone. Both now name it."""
    _, out = migrate_both(make_kernel, tmp_path, [
        "globals()[1] = 'x'\nglobals()[('t', 2)] = [1]",
        "globals()['my var'] = 1\nglobals()['a\\x00b'] = 2\nok = 5",
    ])
    for r in out.values():
        assert_verified(r)
        # (besides `_c`, the driver's: the replay plan's checkpoint runs after it is bound)
        assert {"1", "('t', 2)"} <= set(r.checkpoint["not_checkpointed"]), r.plan
        assert {"1", "('t', 2)"} <= set(r.restore["not_checkpointed"]), r.plan
        assert any("1" in w and "not a string" in w for w in r.restore["warnings"]), r.plan
        # the odd string names are variables like any other: kept and verified
        assert r.kernel.value("[globals()['my var'], globals()['a\\x00b'], ok]") == [1, 2, 5], r.plan


def test_thousands_of_names_half_deleted_restore_verified(make_kernel, tmp_path):
    """A namespace of thousands of names (a cell binding them through `globals()`, another
    deleting half): each is a co-variable of its own. The checkpoint computed the set of active
    snapshots once per name (`HistoryGraph.requirements`) and deep-copied the whole manifest to
    write it: quadratic, seconds for 10k names. Every name still comes back, the deleted stay
    deleted."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "for i in range(4000):\n    globals()[f'v{i}'] = i",
        "for i in range(2000):\n    del globals()[f'v{i}']",
        "w = v3500 + 1",
    ])
    expr = "[sum(globals()[f'v{i}'] for i in range(2000, 4000)), 'v10' in globals(), w]"
    want = a.value(expr)
    assert want == [sum(range(2000, 4000)), False, 3501]
    for r in out.values():
        assert_verified(r)
        assert len([n for n in r.restore["variables"] if n.startswith("v")]) == 2000, r.plan
        assert r.kernel.value(expr) == want, r.plan


def test_a_name_with_a_lone_surrogate_does_not_fail_the_checkpoint(make_kernel, tmp_path):
    """`globals()['\\udcff'] = 1` (a name decoded from bytes with `surrogateescape`): the
    co-variable's key hashed its names encoded as UTF-8, which refuses lone surrogates, and
    the whole checkpoint failed with UnicodeEncodeError, every other variable with it."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "globals()['\\udcff'] = [1]\nsur = '\\udcff\\x00 text'",
        "ok = 5",
    ])
    expr = "[globals()['\\udcff'], sur, ok]"
    want = a.value(expr)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_a_name_holding_a_comma_is_not_taken_for_two_names(make_kernel, tmp_path):
    """A co-variable's key was its names joined with commas: `globals()['a,b']` had the key of
    the co-variable `a, b` (`b` holds `a`), and the planner refused the checkpoint ("duplicate
    co-variable key"). Both now come back, each with its value."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "a = [1]\nb = [a]",
        "globals()['a,b'] = 'other'",
    ])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[a, b, b[0] is a, globals()['a,b']]") == [[1], [[1]], True, "other"], r.plan


HOOK_S = "__import__('kernel_agent.extension').extension.get_monitor().stats['hook_s']"


def test_a_cell_touching_one_of_thousands_of_aliases_is_monitored_quickly(make_kernel, tmp_path):
    """8000 names bound to one list are one co-variable. Recording a cell that touched it
    took, per name, the intersection of the whole co-variable with the live names (and the
    names of its snapshot again): quadratic, over a minute of hook time per cell for 20k
    aliases, on every cell that touched any of them. Now linear; the aliasing comes back."""
    hook: list[float] = []
    a: list = []

    def between(i: int) -> None:
        hook.append(a[0].value(HOOK_S))

    def kernel():
        k = make_kernel()
        a.append(k)
        return k

    _, out = migrate_both(kernel, tmp_path, [
        "shared = [1]\nfor i in range(8000):\n    globals()[f'r{i}'] = shared",
        "shared.append(2)",
        "r5.append(3)\nz = 1",
    ], between=between)
    # (the cells' own time is nothing: the hooks' seconds over the last two cells)
    assert hook[2] - hook[0] < 5.0, hook
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[r7999 is shared, r3 is r7, shared]") == [True, True, [1, 2, 3]], r.plan


def test_a_linked_list_of_notebook_class_nodes_deeper_than_the_stack_is_shipped(make_kernel, tmp_path):
    """30k instances of a class defined in the notebook, each holding the next: pickling
    recurses several frames per node (the class itself pickled by value, the reducer called
    per instance), ten times past the recursion limit. The cell writes a file, so it cannot be
    re-run: the list must be shipped, and the kernel must survive it (a C stack overflow
    would kill it). Pins the deep-stack pickling for instances, not only for containers."""
    cells = ["class Node:\n    def __init__(self, nxt, i):\n        self.next = nxt\n        self.i = i",
             "head = None\nfor i in range(30_000):\n    head = Node(head, i)\nopen('log.txt', 'w').write('x')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert_restore_verified(r)
    assert r["variables"]["head"]["action"] == "loaded"
    b.ok("n = 0\nx = head\nwhile x is not None:\n    n += 1\n    x = x.next")
    assert b.value("[n, head.i, type(head) is Node, head.next.next.i]") == [30_000, 29_999, True, 29_997]
