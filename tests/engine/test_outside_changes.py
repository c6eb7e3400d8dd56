"""Changes no recorded cell made: a background thread, a widget or comm callback, a silent
execution. Re-running the history recreates the value as it was before such a change, and a
blob or digest an earlier checkpoint kept describes the old value; the checkpoint must find
the change, ship the value as it is now, and keep saying so in later checkpoints."""

from __future__ import annotations

import pytest

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all

STRATEGIES = ["optimal", "ship-all", "recompute-all"]
OUTSIDE = "print([c.mutated for c in __import__('kernel_agent.extension').extension.get_monitor().graph.cells if c.code.startswith('# (no cell')])"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_change_no_cell_made_between_two_checkpoints_is_restored_as_it_is_now(
        make_kernel, store_url, strategy):
    """The second checkpoint used to reuse the first one's blob and digest (nothing recorded
    had touched the values), or to re-run the cells; either way the restore gave the old
    values and verified them."""
    a = make_kernel()
    run_all(a, ["import numpy as np\ndata = [1, 2, 3]\narr = np.zeros(100_000)",
                "total = sum(data)"])
    checkpoint(a, store_url, strategy=strategy)
    assert a.run("data.append(4); arr[7] = 5.0", silent=True).ok
    checkpoint(a, store_url, strategy=strategy)
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("data") == [1, 2, 3, 4] and b.value("float(arr[7])") == 5.0
    assert b.value("total") == 6


def test_a_list_a_background_thread_filled_after_its_cell_is_shipped(make_kernel, store_url):
    a = make_kernel()
    run_all(a, [
        "import threading\ngo = threading.Event()\nresults = []\n"
        "def work():\n    go.wait()\n    results.extend(range(5))",
        "threading.Thread(target=work, name='worker').start()",
    ])
    # the thread appends while no cell runs (a callback or another thread lets it go)
    assert a.run("go.set(); [t.join() for t in threading.enumerate() if t.name == 'worker']",
                 silent=True).ok
    c = checkpoint(a, store_url, strategy="recompute-all")
    assert c["variables"]["results"] == "ship"
    b = make_kernel()
    r = restore(b, store_url)
    assert r["variables"]["results"]["verified"]
    assert b.value("results") == [0, 1, 2, 3, 4]


def test_a_value_changed_outside_cells_stays_unreplayable_after_later_cells_mutate_it(
        make_kernel, store_url, tmp_path):
    """The change is recorded in the history at the checkpoint that finds it, so a later
    checkpoint, after a cell mutated the value again, does not replay the cells either."""
    a = make_kernel()
    run_all(a, ["data = [1, 2, 3]"])
    assert a.run("data.append(4)", silent=True).ok
    checkpoint(a, (tmp_path / "first").as_uri())
    assert a.run(OUTSIDE).stdout.strip() == "[['data']]"
    run_all(a, ["data.append(5)"])
    c = checkpoint(a, store_url, strategy="recompute-all")
    assert c["variables"]["data"] == "ship"
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("data") == [1, 2, 3, 4, 5]


def test_a_name_rebound_by_a_silent_execution_is_restored_as_it_is_now(make_kernel, store_url):
    a = make_kernel()
    run_all(a, ["x = [1]", "y = len(x)"])
    assert a.run("x = ['rebound']", silent=True).ok
    checkpoint(a, store_url, strategy="recompute-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("x") == ["rebound"] and b.value("y") == 1


def test_repeated_checkpoints_of_an_untouched_session_find_no_outside_change(make_kernel, tmp_path):
    """No false alarm: walking values again gives the same fingerprints, whatever the
    checkpoints themselves did to them (pickling, digests, pandas' caches)."""
    a = make_kernel()
    run_all(a, [
        "import numpy as np, pandas as pd, collections, datetime\n"
        "from sklearn.linear_model import LogisticRegression",
        "df = pd.DataFrame({'a': np.arange(100), 'b': list('xy') * 50})\n"
        "df['c'] = df['b'].astype('category')",
        "g = df.groupby('b')['a'].sum(); idx = df.index; u = df.index.is_unique",
        "X = np.random.default_rng(0).random((50, 3)); y = (X[:, 0] > 0.5).astype(int)\n"
        "model = LogisticRegression().fit(X, y)",
        "class Box:\n    def __init__(self, v):\n        self.v = v\nboxes = [Box(i) for i in range(3)]",
        "dq = collections.deque([1, 2]); when = datetime.datetime(2024, 1, 1)\n"
        "gen = (i * i for i in range(10)); next(gen)",
        "df",
    ])
    for i in range(3):
        checkpoint(a, (tmp_path / f"s{i}").as_uri())
    assert a.run(OUTSIDE).stdout.strip() == "[]"


def test_a_value_changed_outside_cells_that_cannot_be_shipped_is_recomputed_and_reported(
        make_kernel, store_url):
    """Re-running its cells gives it as it was before the change: not lost, but not verified
    either."""
    a = make_kernel()
    run_all(a, ["class Pinned:\n    def __init__(self):\n        self.items = []\n"
                "    def __reduce__(self):\n        raise TypeError('not here')",
                "box = Pinned()"])
    assert a.run("box.items.append(1)", silent=True).ok
    c = checkpoint(a, store_url)
    assert c["variables"]["box"] == "recompute"
    b = make_kernel()
    r = restore(b, store_url)
    assert not r["variables"]["box"]["verified"] and not r["lost"]
    assert b.value("box.items") == []
