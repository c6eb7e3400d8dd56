"""Cost of background checkpoints for cells, and what they save a planned checkpoint (prints tables).

Same notebooks as the monitoring benchmark (benchmarks/monitor_overhead.py). Each notebook runs in
two fresh real kernels, both monitored (`%load_ext kernel_agent`), one of them with background
checkpoints on (`kernel_agent.background(file store, interval)`); cells alternate between the two
so both see the same machine conditions. Between cells the client waits `--think` seconds, longer
than the interval, so background rounds really run between cells (the worst case for the cells:
a user pausing a moment after every cell). The last `--tail` cells run back to back and a planned
checkpoint follows at once, as a stop right after work would.

Table 1 (overhead): client-side wall time per notebook with vs without background rounds; the
time rounds spent on the kernel's main thread (between cells: the noise-free cost, comparable to
the monitor's hook time); the longest main-thread step (the most a cell arriving during a round
can wait); rounds committed / abandoned because a cell started.

Table 2 (planned checkpoint): bytes the planned checkpoint uploaded and reused after background
rounds, vs the bytes and time of the same checkpoint in the kernel without background rounds.

    .venv/bin/python benchmarks/background_overhead.py [--reps 1] [--scale 1.0] [--interval 0.2]
        [--think 0.6] [--tail 2] [--budget 0.01] [--only NAME] [--write-doc]

`--write-doc` replaces the tables for this `--budget` in docs/crash-safety.md (between the
BENCHMARK markers of that budget). `--budget 0` lifts the overhead budget: a round after every
cell, the worst case for the cells and the best case for what rounds ship ahead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kernels import Kernel  # noqa: E402

_spec = importlib.util.spec_from_file_location("monitor_overhead", ROOT / "benchmarks" / "monitor_overhead.py")
assert _spec is not None and _spec.loader is not None
monitor_overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(monitor_overhead)
NOTEBOOKS = monitor_overhead.NOTEBOOKS

STATUS = "__import__('kernel_agent').background_status()"


def timed(k: Kernel, code: str) -> float:
    t0 = time.perf_counter()
    k.ok(code)
    return time.perf_counter() - t0


def wait_quiet(k: Kernel, timeout: float = 120.0) -> dict:
    """Bounded poll until the background checkpointer has no round in progress."""
    deadline = time.monotonic() + timeout
    while True:
        s = k.value(STATUS)
        if not s.get("in_progress") or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


def run_pair(cells: list[str], args: argparse.Namespace, workdir: Path) -> dict:
    off, on = Kernel(cwd=str(workdir)), Kernel(cwd=str(workdir))
    bg_url = (workdir / "bg-store").as_uri()
    off_url = (workdir / "plain-store").as_uri()
    try:
        for k in (off, on):
            k.ok("%load_ext kernel_agent")
            k.ok("import kernel_agent")
        on.ok(f"kernel_agent.background({bg_url!r}, interval={args.interval}, budget={args.budget})")
        wait_quiet(on)
        t_off, t_on = [], []
        head, tail = cells[: max(0, len(cells) - args.tail)], cells[max(0, len(cells) - args.tail):]
        for code in head:
            t_off.append(timed(off, code))
            t_on.append(timed(on, code))
            time.sleep(args.think)  # the user's think time (rounds run in it); not a sync
        for code in tail:
            t_off.append(timed(off, code))
            t_on.append(timed(on, code))
        status = on.value(STATUS)
        on.ok(f"_c = kernel_agent.checkpoint({bg_url!r})")
        off.ok(f"_c = kernel_agent.checkpoint({off_url!r})")
        c_on, c_off = on.value("_c['stats']"), off.value("_c['stats']")
        return {"off": t_off, "on": t_on, "status": status, "ckpt_on": c_on, "ckpt_off": c_off,
                "session_s": sum(t_on) + args.think * len(head)}
    finally:
        off.shutdown()
        on.shutdown()


def measure(name: str, cells: list[str], args: argparse.Namespace) -> dict:
    runs = []
    for _ in range(args.reps):
        workdir = Path(tempfile.mkdtemp(prefix="bg-bench-"))
        try:
            runs.append(run_pair(cells, args, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    off = statistics.median(sum(r["off"]) for r in runs)
    on = statistics.median(sum(r["on"]) for r in runs)
    per_cell = statistics.median(
        statistics.median((b - a) / a for a, b in zip(r["off"], r["on"], strict=True) if a > 0) for r in runs
    )
    main = statistics.median(r["status"]["step_total_s"] / r["session_s"] for r in runs)
    med = lambda key, side: statistics.median(r[side][key] for r in runs)  # noqa: E731
    return {
        "name": name,
        "cells": len(cells),
        "off_s": off,
        "on_s": on,
        "wall_pct": 100.0 * (on - off) / off,
        "cell_median_pct": 100.0 * per_cell,
        "main_pct": 100.0 * main,
        "step_phase": max(runs, key=lambda r: r["status"]["step_max_s"])["status"].get("step_max_phase"),
        "step_max_ms": 1000.0 * max(r["status"]["step_max_s"] for r in runs),
        "committed": statistics.median(r["status"]["rounds_committed"] for r in runs),
        "abandoned": statistics.median(r["status"]["rounds_abandoned"] for r in runs),
        "bg_uploaded": statistics.median(r["status"]["bytes_uploaded"] for r in runs),
        "after_uploaded": med("bytes_uploaded", "ckpt_on"),
        "after_reused": med("bytes_reused", "ckpt_on"),
        "after_s": med("total_s", "ckpt_on"),
        "after_serialized": med("units_serialized", "ckpt_on"),
        "after_units": med("units_serialized", "ckpt_on") + med("units_reused", "ckpt_on"),
        "plain_uploaded": med("bytes_uploaded", "ckpt_off"),
        "plain_s": med("total_s", "ckpt_off"),
    }


H1 = ("| notebook | cells | without (s) | with (s) | wall overhead | median per-cell | "
      "rounds' main-thread time (share of session) | longest step, ms (phase) | rounds committed / abandoned |")
R1 = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
H2 = ("| notebook | background rounds uploaded | planned ckpt after rounds: uploaded / reused | "
      "serialized units | time (s) | planned ckpt without rounds: uploaded | time (s) |")
R2 = "|---|---:|---:|---:|---:|---:|---:|"


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def row1(r: dict) -> str:
    return (f"| {r['name']} | {r['cells']} | {r['off_s']:.2f} | {r['on_s']:.2f} | {r['wall_pct']:+.1f}% | "
            f"{r['cell_median_pct']:+.1f}% | {r['main_pct']:.2f}% | {r['step_max_ms']:.0f} ({r['step_phase']}) | "
            f"{r['committed']:.0f} / {r['abandoned']:.0f} |")


def row2(r: dict) -> str:
    return (f"| {r['name']} | {mb(r['bg_uploaded'])} | {mb(r['after_uploaded'])} / {mb(r['after_reused'])} | "
            f"{r['after_serialized']:.0f} of {r['after_units']:.0f} | {r['after_s']:.2f} | "
            f"{mb(r['plain_uploaded'])} | {r['plain_s']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--interval", type=float, default=0.2, help="background interval (s)")
    ap.add_argument("--think", type=float, default=0.6, help="pause after each cell (s)")
    ap.add_argument("--tail", type=int, default=2, help="last cells run back to back")
    ap.add_argument("--budget", type=float, default=0.01,
                    help="rounds' main-thread share (0: unlimited, a round after every cell)")
    ap.add_argument("--only", default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    results = []
    for name, make in NOTEBOOKS.items():
        if args.only and args.only.lower() not in name.lower():
            continue
        r = measure(name, make(args.scale), args)
        results.append(r)
        print(row1(r), flush=True)
    t1 = "\n".join([H1, R1, *(row1(r) for r in results)])
    t2 = "\n".join([H2, R2, *(row2(r) for r in results)])
    walls = [r["cell_median_pct"] for r in results]
    mains = [r["main_pct"] for r in results]
    summary = (f"median per-cell overhead {statistics.median(walls):+.1f}% (max {max(walls):+.1f}%); "
               f"rounds' main-thread time median {statistics.median(mains):.2f}% of the session "
               f"(max {max(mains):.2f}%)")
    print()
    print(t1)
    print()
    print(t2)
    print()
    print(summary)
    if args.write_doc:
        write_doc(t1, t2, summary, args)


def write_doc(t1: str, t2: str, summary: str, args: argparse.Namespace) -> None:
    import numpy

    doc = ROOT / "docs" / "crash-safety.md"
    text = doc.read_text()
    start = f"<!-- BENCHMARK START budget={args.budget:g} -->"
    end = f"<!-- BENCHMARK END budget={args.budget:g} -->"
    env = (f"Python {platform.python_version()}, numpy {numpy.__version__}; {os.cpu_count()} CPUs "
           f"({platform.machine()}); file store on local disk with fsync; interval {args.interval} s, "
           f"think time {args.think} s, last {args.tail} cells back to back, {args.reps} repetition(s), "
           f"scale {args.scale}, overhead budget {args.budget:g}")
    block = (f"{start}\n### Overhead budget {args.budget:g}\n\nEnvironment: {env}.\n\n{t1}\n\n"
             f"{summary}.\n\n{t2}\n{end}")
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + block + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
