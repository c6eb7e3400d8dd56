"""Overhead of the in-kernel monitor on realistic notebooks (prints a table; not a test).

Each notebook runs in two fresh real kernels side by side, one with `%load_ext kernel_agent` and
one without; cells alternate between the two (cell i in the plain kernel, then cell i in the
monitored one), so both see the same machine conditions. Wall time per cell is measured at the
client (execute request -> idle), which is what a user experiences; the monitor's own hook time
is read from `Monitor.stats` as a noise-free cross-check. Repeated `--reps` times, medians kept.

    .venv/bin/python benchmarks/monitor_overhead.py [--reps 3] [--scale 1.0] [--write-doc]

`--write-doc` rewrites docs/monitoring-overhead.md with the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kernels import Kernel  # noqa: E402


def pandas_etl(s: float) -> list[str]:
    n = int(1_000_000 * s)
    return [
        "import numpy as np, pandas as pd",
        f"rng = np.random.default_rng(0)\nN = {n}",
        "orders = pd.DataFrame({'customer': rng.integers(0, 5000, N), 'product': rng.integers(0, 300, N),\n"
        "                       'qty': rng.integers(1, 10, N), 'price': rng.random(N) * 100})",
        "customers = pd.DataFrame({'customer': np.arange(5000), 'region': rng.choice(['N', 'S', 'E', 'W'], 5000)})",
        "orders['amount'] = orders['qty'] * orders['price']",
        "orders = orders[orders['amount'] > 5].copy()",
        "merged = orders.merge(customers, on='customer', how='left')",
        "by_region = merged.groupby('region')['amount'].agg(['sum', 'mean', 'count'])",
        "top = merged.groupby('customer')['amount'].sum().nlargest(100)",
        "pivot = merged.pivot_table(index='region', columns='qty', values='amount', aggfunc='sum')",
        "merged['bucket'] = pd.cut(merged['amount'], bins=[0, 50, 200, 1000, 10000])",
        "counts = merged['bucket'].value_counts()",
        "merged.drop(columns=['bucket'], inplace=True)",
        "summary = {'rows': len(merged), 'total': float(merged['amount'].sum())}",
    ]


def sklearn_training(s: float) -> list[str]:
    n = int(20_000 * s)
    return [
        "import numpy as np\nfrom sklearn.datasets import make_classification\n"
        "from sklearn.model_selection import train_test_split, cross_val_score\n"
        "from sklearn.preprocessing import StandardScaler\nfrom sklearn.linear_model import LogisticRegression\n"
        "from sklearn.ensemble import RandomForestClassifier",
        f"X, y = make_classification(n_samples={n}, n_features=20, n_informative=8, random_state=0)",
        "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)",
        "scaler = StandardScaler().fit(X_train)",
        "X_train_s = scaler.transform(X_train)\nX_test_s = scaler.transform(X_test)",
        "logreg = LogisticRegression(max_iter=500)\nlogreg.fit(X_train_s, y_train)",
        "acc_lr = logreg.score(X_test_s, y_test)",
        "forest = RandomForestClassifier(n_estimators=60, random_state=0, n_jobs=1)\nforest.fit(X_train, y_train)",
        "acc_rf = forest.score(X_test, y_test)",
        "cv = cross_val_score(LogisticRegression(max_iter=500), X_train_s, y_train, cv=3)",
        "importances = sorted(enumerate(forest.feature_importances_), key=lambda t: -t[1])[:5]",
    ]


def python_loops(s: float) -> list[str]:
    n = int(1_000_000 * s)
    return [
        "K = 3\nOFFSET = 7\ndef g(x):\n    return x % 11\ndef f(x):\n    return x * K + g(x) + OFFSET",
        f"N = {n}",
        "total = 0\nfor i in range(N):\n    total += f(i)",
        "squares = [f(i) for i in range(N // 2)]",
        "class Acc:\n    def __init__(self):\n        self.n = 0\n    def add(self, v):\n        self.n += g(v)",
        "acc = Acc()\nfor i in range(N):\n    acc.add(i)",
        "hist = {}\nfor v in squares:\n    hist[v % 97] = hist.get(v % 97, 0) + 1",
        "best = max(hist.items(), key=lambda kv: kv[1])",
    ]


def many_variables(s: float) -> list[str]:
    per_cell, ncells = 100, max(1, int(40 * s))
    cells = []
    for c in range(ncells):
        lines = []
        for j in range(per_cell):
            i = c * per_cell + j
            lines.append(f"v{i} = {i}" if j % 3 else f"v{i} = [{i}, 'x{i}']")
        cells.append("\n".join(lines))
    last = ncells * per_cell - 1
    cells += [f"s1 = v0[0] + v{last - 1}", "v1 = v1 + 1", "v3.append(s1)",
              "s2 = " + " + ".join(f"v{i}" for i in range(1, 50, 3))]
    return cells


def large_arrays(s: float) -> list[str]:
    n = int(10_000_000 * s)  # 80 MB per float64 array
    return [
        "import numpy as np",
        f"a = np.random.default_rng(1).random({n})",
        f"b = np.ones({n})",
        "c = a * 2.0",
        "a += 1.0",
        "m = float(a.mean())",
        "b[::2] = 0",
        "view = a[1000:2000]",
        "s = float(view.sum())",
        "c = None",
    ]


def records_and_counts(s: float) -> list[str]:
    n = int(100_000 * s)
    return [
        "import collections, dataclasses, json, random\nrandom.seed(0)",
        f"N = {n}",
        "rows = [{'id': i, 'user': f'u{i % 997}', 'amount': round(random.random() * 100, 2),\n"
        "         'tags': random.sample(['a', 'b', 'c', 'd', 'e'], 2)} for i in range(N)]",
        "text = ' '.join(f'w{random.randrange(N)}' for _ in range(2 * N))",
        "counts = collections.Counter(text.split())",
        "top = counts.most_common(20)",
        "by_user = collections.defaultdict(float)\nfor r in rows:\n    by_user[r['user']] += r['amount']",
        "@dataclasses.dataclass\nclass Order:\n    id: int\n    user: str\n    amount: float",
        "orders = [Order(r['id'], r['user'], r['amount']) for r in rows]",
        "big = [o for o in orders if o.amount > 90]",
        "rows[0]['tags'].append('z')",
        "payload = json.dumps(rows[:1000])",
        "total = sum(by_user.values())",
    ]


NOTEBOOKS = {
    "pandas ETL": pandas_etl,
    "sklearn training": sklearn_training,
    "pure-Python loops (global calls)": python_loops,
    "4,000 small variables": many_variables,
    "large arrays (3 x 80 MB)": large_arrays,
    "records, word counts, dataclasses": records_and_counts,
}

RSS = "int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE')"
STATS = "__import__('kernel_agent.extension').extension.get_monitor().stats"
CPU = "__import__('time').process_time()"
# what the agent keeps about the session (tracker index + history graph as JSON) and what the
# session holds (reachable size of every user variable; shared objects counted per variable)
DATA = ("(lambda m: [m.tracker.overhead_bytes(), len(__import__('json').dumps(m.graph.to_dict())), "
        "sum(__import__('kernel_agent.changes').changes.reachable_size(m.shell.user_ns[n]) "
        "for n in m.user_names())])(__import__('kernel_agent.extension').extension.get_monitor())")


def timed(k: Kernel, code: str) -> float:
    t0 = time.perf_counter()
    k.ok(code)
    return time.perf_counter() - t0


def run_pair(cells: list[str]) -> dict:
    plain, monitored = Kernel(cwd="/tmp"), Kernel(cwd="/tmp")
    try:
        monitored.ok("%load_ext kernel_agent")
        monitored.ok("_ka_mon = " + STATS.replace(".stats", ""))  # warm imports
        plain.ok("import json")
        t_plain, t_mon = [], []
        cpu0 = plain.value(CPU)
        for code in cells:
            t_plain.append(timed(plain, code))
            t_mon.append(timed(monitored, code))
        cpu_plain = plain.value(CPU) - cpu0
        stats = monitored.value(STATS)
        rss1 = (plain.value(RSS), monitored.value(RSS))  # both kernels hold the same data
        tracker_b, graph_b, ns_b = monitored.value(DATA)
        return {
            "plain": t_plain,
            "monitored": t_mon,
            "hook_s": stats["hook_s"],
            "hook_max_s": stats["hook_max_s"],
            "hook_cpu_s": stats.get("hook_cpu_s", 0.0),
            "cpu_plain": cpu_plain,
            "data_b": tracker_b + graph_b,
            "ns_b": ns_b,
            "tracker_s": stats.get("tracker_s", 0.0),
            "cells": stats["cells"],
            "mem_plain": rss1[0],
            "mem_mon": rss1[1],
        }
    finally:
        plain.shutdown()
        monitored.shutdown()


def measure(name: str, cells: list[str], reps: int) -> dict:
    runs = [run_pair(cells) for _ in range(reps)]
    plain = statistics.median(sum(r["plain"]) for r in runs)
    mon = statistics.median(sum(r["monitored"]) for r in runs)
    hook = statistics.median(r["hook_s"] for r in runs)
    tracker = statistics.median(r["tracker_s"] for r in runs)
    cpu_pct = statistics.median(100.0 * r["hook_cpu_s"] / r["cpu_plain"] for r in runs)
    data_pct = statistics.median(100.0 * r["data_b"] / max(r["ns_b"], 1) for r in runs)
    return {
        "name": name,
        "cells": len(cells),
        "plain_s": plain,
        "mon_s": mon,
        "overhead_pct": 100.0 * (mon - plain) / plain,
        "hook_pct": 100.0 * hook / plain,
        "cpu_pct": cpu_pct,
        "data_kb": statistics.median(r["data_b"] / 1e3 for r in runs),
        "ns_mb": statistics.median(r["ns_b"] / 1e6 for r in runs),
        "data_pct": data_pct,
        "tracker_share": 100.0 * tracker / hook if hook else 0.0,
        "per_cell_ms": 1000.0 * hook / len(cells),
        "max_cell_ms": 1000.0 * max(r["hook_max_s"] for r in runs),
        "mem_pct": 100.0 * statistics.median((r["mem_mon"] - r["mem_plain"]) / r["mem_plain"] for r in runs),
        "mem_mb": statistics.median((r["mem_mon"] - r["mem_plain"]) / 1e6 for r in runs),
    }


HEADER = ("| notebook | cells | without (s) | with (s) | wall overhead | hook time | hook CPU | "
          "of which change detection | hook/cell (ms) | max hook (ms) | memory overhead (RSS) | "
          "agent data / namespace |")
RULE = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def row(r: dict) -> str:
    return (f"| {r['name']} | {r['cells']} | {r['plain_s']:.2f} | {r['mon_s']:.2f} | "
            f"{r['overhead_pct']:+.1f}% | {r['hook_pct']:.2f}% | {r['cpu_pct']:.2f}% | "
            f"{r['tracker_share']:.0f}% | {r['per_cell_ms']:.2f} | "
            f"{r['max_cell_ms']:.1f} | {r['mem_mb']:+.1f} MB ({r['mem_pct']:+.1f}%) | "
            f"{r['data_kb']:.0f} kB / {r['ns_mb']:.1f} MB ({r['data_pct']:.2f}%) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="data size multiplier")
    ap.add_argument("--only", default=None, help="run the notebooks whose name contains this")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    results = []
    print(HEADER)
    print(RULE)
    for name, make in NOTEBOOKS.items():
        if args.only and args.only.lower() not in name.lower():
            continue
        r = measure(name, make(args.scale), args.reps)
        results.append(r)
        print(row(r), flush=True)
    hooks = [r["hook_pct"] for r in results]
    cpus = [r["cpu_pct"] for r in results]
    walls = [r["overhead_pct"] for r in results]
    summary = (f"median hook-time overhead {statistics.median(hooks):.2f}% (max {max(hooks):.2f}%); "
               f"hook CPU {statistics.median(cpus):.2f}% (max {max(cpus):.2f}%); "
               f"median wall-clock overhead {statistics.median(walls):+.1f}% (max {max(walls):+.1f}%)")
    print()
    print(summary)
    if args.write_doc:
        write_doc(results, summary, args)


def write_doc(results: list[dict], summary: str, args: argparse.Namespace) -> None:
    import numpy
    import pandas
    import sklearn

    env = (f"Python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}, "
           f"scikit-learn {sklearn.__version__}; {os.cpu_count()} CPUs ({platform.machine()}); "
           f"{args.reps} repetitions, scale {args.scale}")
    text = f"""# Monitoring overhead

What `%load_ext kernel_agent` costs a notebook: measured by `benchmarks/monitor_overhead.py`
(`.venv/bin/python benchmarks/monitor_overhead.py --reps {args.reps} --write-doc` regenerates this page).

Each notebook runs in two fresh real ipykernel kernels, one monitored and one not, cells alternating
between them so both see the same machine conditions; medians of {args.reps} repetitions.

* **wall overhead**: total client-side wall time (execute request to idle) with vs without the agent.
  Includes machine noise of a few percent either way on short notebooks.
* **hook time**: time spent inside the monitor's `pre_run_cell`/`post_run_cell` hooks (read analysis,
  namespace diff, change detection, graph update, RNG check), from `Monitor.stats`, as a percentage
  of the unmonitored runtime. The figure for the overhead target: far less noisy than the wall
  overhead, though CPU contention from other work on the machine stretches it as well.
* **hook CPU**: the CPU time of the kernel's main thread inside the hooks
  (`Monitor.stats["hook_cpu_s"]`) as a percentage of the CPU time the unmonitored kernel spent
  running the same cells. Other load on the machine stretches wall time inside the hooks; it does
  not stretch CPU time. Neither does the kernel's IO thread, which runs (sending the execution's
  messages) whenever the hooks wait for the GIL.
* **hook/cell**, **max hook**: mean and worst per-cell hook time.
* **memory overhead (RSS)**: resident memory of the monitored kernel minus the unmonitored one at
  the end. It includes the agent's own code and imports (numpy alone is about 13 MB), which
  notebooks that do not import numpy otherwise would not load.
* **agent data / namespace**: what the agent keeps about the session (the tracker's id index and
  fingerprints, `Tracker.overhead_bytes()`, plus the history graph as JSON) against the reachable
  size of the user's variables (`changes.reachable_size`). This is the figure for the memory target.

Environment: {env}.

{HEADER}
{RULE}
""" + "\n".join(row(r) for r in results) + f"""

{summary}.

Targets: median overhead <= 1 %, max <= 5 %, <= 5 ms per cell for cells touching <= 100 MB of arrays,
memory overhead <= 10 % of the namespace.

## Where the time goes

* Reads are found statically (bytecode of the cell, decoded without `dis`, plus the notebook code
  reachable from the names it loads), so tight loops run at full speed: the user namespace stays a
  plain `dict`. Names the change tracker last saw as plain data (containers, numbers, arrays,
  frames) are not walked for code again.
* Per cell the monitor snapshots the namespace's value ids (copied out of an object array, about
  60 us per 4,000 names) once, after the cell: the snapshot before the next cell is the same one
  when the namespace dict's version tag has not moved in between, and user names are updated
  from the diff, not rebuilt.
* Change detection (`kernel_agent.changes`) re-fingerprints only the co-variables the cell
  touched, and hashes at most `Tracker.hash_budget` (8 MB) of array buffers and atom runs per
  cell, plus `Monitor.hash_budget_per_s` (64 MB) per second the cell ran (about 1 % of a long
  cell's time). What is left unhashed, and co-variables whose last walk was expensive
  (`Tracker.defer_work`), are not re-walked when touched: the cell is recorded as a possible
  mutator (an over-approximation the history graph tolerates) and the checkpoint's
  `Tracker.refresh` walks them in full. Between executions, the kernel's event loop hashes what
  was left unhashed (one co-variable of at most 256 MB per loop step, so a cell submitted
  meanwhile waits at most one step; that time is not in the hook columns). A new name bound to
  an object an expensive co-variable already reaches joins it without a walk.
* Whether a cell drew random numbers is decided from the raw memory of the generators (a few
  us); their full states are read only when it did.
* One-off costs (numpy.random's import for its generator state, type caches) are paid at
  `%load_ext`, not inside the first cells.
"""
    path = ROOT / "docs" / "monitoring-overhead.md"
    if path.exists():  # keep the hand-written analysis of the numbers
        old = path.read_text()
        if "\n## Findings" in old:
            text += old[old.index("\n## Findings"):]
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
