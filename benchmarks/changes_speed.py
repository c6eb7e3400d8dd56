"""Micro-benchmark of kernel_agent.changes: per-cell fingerprint and partition costs.

Run: .venv/bin/python benchmarks/changes_speed.py [--repeat N]
Prints one row per scenario with the median and best wall time over N repeats. The "update"
rows are what the monitor pays after a cell that touched the named variable(s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from kernel_agent.changes import Tracker, reachable_size, value_digest


def timeit(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()  # warm-up (type caches, page faults)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def tracker_update(ns: dict[str, Any], touched: list[str], *, exact: bool = True
                   ) -> Callable[[], Any]:
    """A per-cell update touching `touched`. `exact`: no hash budget and no deferral (every
    touch re-walks and re-hashes: the cost `Tracker.refresh` pays at a checkpoint); otherwise
    the monitor's defaults."""
    t = Tracker()
    if exact:
        t.hash_budget = None
        t.defer_work = 0
    t.reset(ns, [n for n in ns if not n.startswith("__")])
    return lambda: t.update(ns, touched, [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    r = args.repeat
    rows: list[tuple[str, float, float]] = []

    def add(label: str, fn: Callable[[], Any], reps: int = r) -> None:
        med, best = timeit(fn, reps)
        rows.append((label, med, best))
        print(f"{label:<58} {med * 1e3:>10.2f} {best * 1e3:>10.2f}", flush=True)

    print(f"{'scenario':<58} {'median ms':>10} {'best ms':>10}")
    print("-" * 80)

    import xxhash

    big = np.random.default_rng(0).random(100 * 2**20 // 8)
    u8 = big.view(np.uint8)
    add("raw xxh3_128 of 100 MB (single thread, reference)", lambda: xxhash.xxh3_128_digest(u8))
    add("update: 1 x 100 MB float64 array", tracker_update({"big": big}, ["big"]))
    add("update, monitor defaults: 1 x 100 MB array (deferred)",
        tracker_update({"big": big}, ["big"], exact=False))
    tens = {f"a{i}": np.random.default_rng(i).random(10 * 2**20 // 8) for i in range(10)}
    add("update: 10 x 10 MB arrays (all touched)", tracker_update(tens, list(tens)))
    view_ns = {"base": big, "view": big[1000:2000]}
    add("update: view of a 100 MB base (base re-hashed)", tracker_update(view_ns, ["view"]))

    ints = {"ints": list(range(1_000_000))}
    add("update: list of 1M ints", tracker_update(ints, ["ints"]))
    add("update, monitor defaults: list of 1M ints (deferred)",
        tracker_update(ints, ["ints"], exact=False))
    strs = {"strs": [f"s{i}" for i in range(1_000_000)]}
    add("update: list of 1M strs", tracker_update(strs, ["strs"]))
    dicts = {"rows": [{"id": i, "name": f"n{i}", "tags": [i]} for i in range(10_000)]}
    add("update: list of 10k small dicts (nested lists)", tracker_update(dicts, ["rows"]))

    try:
        import pandas as pd

        n = 1_000_000
        rng = np.random.default_rng(1)
        df = pd.DataFrame(
            {
                **{f"f{i}": rng.random(n) for i in range(8)},
                "i": np.arange(n),
                "cat": pd.Categorical(rng.integers(0, 5, n).astype(str)),
            }
        )
        add(
            "update: DataFrame 1M rows x 10 numeric/categorical cols",
            tracker_update({"df": df}, ["df"]),
        )
        sdf = pd.DataFrame({"s": [f"v{i}" for i in range(100_000)], "x": np.arange(100_000)})
        add("update: DataFrame 100k rows with a str column", tracker_update({"sdf": sdf}, ["sdf"]))
        add("value_digest: DataFrame 1M x 10", lambda: value_digest({"df": df}), max(3, r // 2))
        add("reachable_size: DataFrame 1M x 10", lambda: reachable_size(df))
    except ImportError:
        print("(pandas not installed: DataFrame rows skipped)")

    many = {f"v{i}": {"k": [i], "s": str(i)} for i in range(5_000)}
    for i in range(0, 5_000, 10):  # some links
        many[f"v{i}"]["peer"] = many[f"v{i + 1}"]

    new_names: dict[str, Any] = {}

    def hundred_new() -> None:
        t = Tracker()
        for c in range(10):
            batch = [f"w{c}_{j}" for j in range(100)]
            for j, n in enumerate(batch):
                new_names[n] = j if j % 3 else [j, "x"]
            t.update(new_names, batch, [])

    add("update, monitor defaults: 10 cells of 100 new small names", hundred_new)

    def reset_many() -> None:
        Tracker().reset(many, list(many))

    add("partition: reset of 5,000 small variables (500 links)", reset_many, max(3, r // 2))
    add("partition: update touching 1 of 5,000 variables", tracker_update(many, ["v42"]))
    add(
        "partition: update touching 100 of 5,000 variables",
        tracker_update(many, [f"v{i}" for i in range(100)]),
    )
    add("value_digest: 100 MB array", lambda: value_digest({"big": big}), max(3, r // 2))
    add("value_digest: list of 10k small dicts", lambda: value_digest(dicts))

    t = Tracker()
    t.reset(dicts, ["rows"])
    print("-" * 80)
    print(
        f"tracker memory for 10k small dicts: {t.overhead_bytes() / 1e3:.1f} kB "
        f"vs reachable size {reachable_size(dicts['rows']) / 1e3:.1f} kB"
    )


if __name__ == "__main__":
    main()
