"""Writes and in-place mutations the monitor could miss.

Mutations made by notebook code that a library calls, through aliases kept in containers,
through C functions writing into views (`out=`), pandas `inplace=True`, custom `__iadd__`,
`setattr` in a helper, `del` of keys and attributes, in-place sorts and shuffles, class
attributes changed through instances, and a thread that finished before its cell ended. A
replay that missed one would rebuild the variable without the mutation.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_never_silent, assert_verified, migrate_both

CELLS = [
    "import random, threading\nimport numpy as np, pandas as pd",
    # mutation from callbacks and registries
    "acc = []",
    "def note(v):\n    acc.append(v)\n    return v",
    "ordered = sorted([3, 1, 2], key=note)",
    "hooks = [lambda: acc.append('hook')]",
    "for fn in hooks: fn()",
    "store = {}",
    "_ = list(map(lambda k: store.__setitem__(k, k * 2), range(3)))",
    # helpers, aliases in containers, deletes
    "class O:\n    pass",
    "o = O(); o.v = 1; o.gone = 2",
    "def set_it(obj, name, val):\n    setattr(obj, name, val)",
    "set_it(o, 'v', 42)",
    "del o.gone",
    "d = {'a': 1, 'b': 2}",
    "holder = [d]",
    "holder[0].update(c=3)",
    "del holder[0]['a']",
    "del holder",
    # numpy writes through views and out=
    "arr = np.zeros(6)",
    "views = {'mid': arr[2:4]}",
    "np.add(views['mid'], 1, out=views['mid'])",
    "src = np.ones(6)",
    "np.multiply(src[:2], 7, out=arr[:2])",
    # pandas inplace and .loc through another name
    "df = pd.DataFrame({'a': [3, 1, 2], 'b': [1.0, None, 2.0]})",
    "frames = [df]",
    "frames[0].fillna(0, inplace=True)",
    "frames[0].sort_values('a', inplace=True)",
    "frames[0].loc[1, 'a'] = 99",
    # custom __iadd__, sorts and shuffles
    "class Acc:\n    def __init__(self):\n        self.items = []\n"
    "    def __iadd__(self, other):\n        self.items.append(other)\n        return self",
    "bag = Acc()",
    "same_bag = bag",
    "same_bag += 3",
    "xs = [3, 1, 2]",
    "ys = xs",
    "ys.sort()",
    "random.seed(5); deck = list(range(10))",
    "random.shuffle(deck)",
    "np.random.seed(6); nd = np.arange(10)",
    "np.random.shuffle(nd)",
    # class attributes through instances
    "class Counter:\n    count = 0\n    seen = []\n    def bump(self, v):\n"
    "        type(self).count += 1\n        self.seen.append(v)",
    "c1 = Counter(); c2 = Counter()",
    "c1.bump('x'); c2.bump('y')",
    # a thread that finished before its cell ended
    "shared = {'n': 0}",
    "def work(box):\n    box['n'] += 5",
    "def run_thread():\n    t = threading.Thread(target=work, args=(shared,))\n    t.start()\n    t.join()",
    "run_thread()",
]

EXPR = ("[acc, ordered, store, o.v, sorted(vars(o)), d, arr.tolist(), df.to_dict('list'), "
        "list(df.index), bag.items, same_bag is bag, xs, deck, nd.tolist(), Counter.count, "
        "Counter.seen, shared]")


def test_indirect_and_in_place_mutations_are_restored(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, CELLS)
    want = a.value(EXPR)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(EXPR) == want, r.plan


def test_what_a_generators_finally_block_changes_when_a_cell_drops_it_is_restored(make_kernel,
                                                                                 tmp_path):
    """`it = None` closed the suspended generator, whose `finally` appended to `closed`: the
    cell loads neither, so the change was found by `n = len(closed)`, the next cell to touch
    `closed`, and taken for its own: re-run, it made none (closed and n not verified)."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "closed = []",
        "def numbers():\n    try:\n        yield 1\n        yield 2\n    finally:\n"
        "        closed.append('done')",
        "it = numbers()\nnext(it)",
        "it = None",
        "n = len(closed)",
    ])
    for r in out.values():
        assert_never_silent(r, {"closed": ["done"], "n": 1})
        assert r.restore["mismatched"] == [], r.plan
