"""Migration time of ElasticSpawner's engine vs dump-everything (dill) and re-run-everything.

A script that prints a table (and writes it to docs/migration-baselines.md), not a test. Each
notebook runs once in kernel A with the agent; then, in the same run:
- ours:      kernel_agent.checkpoint() in A, kernel_agent.restore() in a fresh kernel B;
- dill:      dill.dump_session() in A, dill.load_session() in a fresh kernel;
- rerun-all: every cell executed again in a fresh kernel.
Correctness: a digest of all user variables (values and aliasing) before and after each method.

    .venv/bin/python benchmarks/migration_baselines.py [--store URL] [--only NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.kernels import Kernel  # noqa: E402

DIGEST = (
    "__import__('kernel_agent.changes', fromlist=['value_digest']).value_digest("
    "{k: v for k, v in globals().items() if not k.startswith('_') "
    "and k not in get_ipython().user_ns_hidden})"
)

NOTEBOOKS: dict[str, list[str]] = {
    # the shape: an expensive cell with a small result next to a cheap large array
    "slow-small+cheap-large": [
        "import numpy as np",
        "def slow_stat(n):\n    t = 0\n    for i in range(n):\n        t += (i * i) % 11\n    return t",
        "stat = slow_stat(4_000_000)",
        "big = np.arange(40_000_000, dtype=np.float64)",
        "scaled = big * 0.5",
    ],
    "sklearn-training": [
        "import numpy as np\nfrom sklearn.datasets import load_digits\nfrom sklearn.ensemble import RandomForestClassifier",
        "X, y = load_digits(return_X_y=True)",
        "Xn = (X / 16.0).astype(np.float32)",
        "model = RandomForestClassifier(n_estimators=300, random_state=0).fit(Xn, y)",
        "acc = float(model.score(Xn, y))",
        "features = np.repeat(Xn, 200, axis=0)",
    ],
    "pandas-etl": [
        "import numpy as np, pandas as pd",
        "rng = np.random.default_rng(0)",
        "df = pd.DataFrame({'k': rng.integers(0, 1000, 2_000_000), 'v': rng.random(2_000_000)})",
        "agg = df.groupby('k')['v'].agg(['mean', 'sum', 'count'])",
        "top = agg.sort_values('sum', ascending=False).head(10)",
        "df['z'] = (df['v'] - df['v'].mean()) / df['v'].std()",
    ],
}


def _timed(k: Kernel, code: str) -> float:
    k.ok(f"import time as _t; _t0 = _t.perf_counter()\n{code}\n_dt = _t.perf_counter() - _t0")
    return float(k.value("_dt"))


def bench(name: str, cells: list[str], store_url: str, workdir: Path) -> dict:
    row: dict = {"notebook": name}
    a = Kernel(cwd=str(workdir))
    kernels = [a]
    try:
        a.ok("%load_ext kernel_agent")
        t_run = 0.0
        for c in cells:
            t_run += _timed(a, c)
        row["run_s"] = t_run
        before = a.value(DIGEST)

        row["ours_ckpt_s"] = _timed(a, f"import kernel_agent as _ka; _c = _ka.checkpoint({store_url!r})")
        summary = a.value("_c")
        row["ours_bytes"] = summary["stats"]["bytes_shipped"]
        row["shipped"] = ", ".join(summary["shipped"])
        row["recomputed"] = ", ".join(summary["recomputed"])
        b = Kernel(cwd=str(workdir))
        kernels.append(b)
        b.ok("%load_ext kernel_agent")
        row["ours_restore_s"] = _timed(b, f"import kernel_agent as _ka; _r = _ka.restore({store_url!r})")
        row["ours_ok"] = b.value(DIGEST) == before

        dill_path = workdir / f"{name}.dill"
        row["dill_dump_s"] = _timed(a, f"import dill as _dill; _dill.dump_session({str(dill_path)!r})")
        row["dill_bytes"] = dill_path.stat().st_size
        d = Kernel(cwd=str(workdir))
        kernels.append(d)
        try:
            row["dill_load_s"] = _timed(d, f"import dill as _dill; _dill.load_session({str(dill_path)!r})")
            row["dill_ok"] = d.value(DIGEST) == before
        except AssertionError:
            row["dill_load_s"], row["dill_ok"] = float("nan"), False

        r = Kernel(cwd=str(workdir))
        kernels.append(r)
        row["rerun_s"] = sum(_timed(r, c) for c in cells)
        row["rerun_ok"] = r.value(DIGEST) == before
    finally:
        for k in kernels:
            k.shutdown()
    row["ours_s"] = row["ours_ckpt_s"] + row["ours_restore_s"]
    row["dill_s"] = row["dill_dump_s"] + row["dill_load_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", help="store URL (default: a file store in a temp dir)")
    ap.add_argument("--only", help="run one notebook")
    ap.add_argument("--out", default=str(ROOT / "docs" / "migration-baselines.md"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="elastic-bench-") as tmp:
        work = Path(tmp)
        for i, (name, cells) in enumerate(NOTEBOOKS.items()):
            if args.only and name != args.only:
                continue
            url = args.store or (work / f"store-{i}").as_uri()
            rows.append(bench(name, cells, url, work))

    table = Table(title="Migration time (checkpoint + restore), same run, seconds")
    cols = ["notebook", "run", "ours", "ckpt", "restore", "dill", "rerun-all", "ours/dill",
            "ours/rerun", "MB ours", "MB dill", "correct (ours/dill/rerun)"]
    for c in cols:
        table.add_column(c, justify="right" if c != "notebook" else "left")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        vals = [
            r["notebook"], f"{r['run_s']:.2f}", f"{r['ours_s']:.2f}", f"{r['ours_ckpt_s']:.2f}",
            f"{r['ours_restore_s']:.2f}", f"{r['dill_s']:.2f}", f"{r['rerun_s']:.2f}",
            f"{r['ours_s'] / r['dill_s']:.2f}x", f"{r['ours_s'] / r['rerun_s']:.2f}x",
            f"{r['ours_bytes'] / 1e6:.1f}", f"{r['dill_bytes'] / 1e6:.1f}",
            "/".join("yes" if r[k] else "NO" for k in ("ours_ok", "dill_ok", "rerun_ok")),
        ]
        table.add_row(*vals)
        md.append("| " + " | ".join(vals) + " |")
    Console().print(table)
    plans = ["", "Plans chosen:", ""] + [
        f"- {r['notebook']}: shipped [{r['shipped']}], recomputed [{r['recomputed']}]" for r in rows
    ]
    for line in plans[1:]:
        print(line)
    if args.out and not args.only:
        import platform

        header = [
            "# Migration time vs baselines",
            "",
            f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python "
            f"{platform.python_version()}. Generated by `benchmarks/migration_baselines.py`; "
            "file store on local disk. Times exclude kernel start-up.",
            "",
        ]
        Path(args.out).write_text("\n".join(header + md + plans) + "\n")
    return 0 if all(r["ours_ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
