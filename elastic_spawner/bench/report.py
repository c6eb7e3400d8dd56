"""Turn benchmark results into the stdout table, docs/benchmarks.md and the PNG plot.

Kept apart from the harness so the report can be regenerated from a saved JSON
(``--from-json``) without re-running an hour of notebooks, and so that judging the targets is
one function (`targets`) that the table, the Markdown and the exit status all share.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from elastic_spawner.bench.harness import MethodResult, NotebookResult

BASELINES = ("dill", "rerun", "kishu")
LABEL = {"ours": "ours", "dill": "dill (dump all)", "rerun": "rerun all", "kishu": "Kishu"}

#: targets from issue 8
TARGET_RATIO = 0.5  # ours <= 0.5x the best baseline that restores correctly
TARGET_OVERHEAD_PCT = 1.0  # median monitoring overhead
#: targets from issue 3, on the notebooks of its case (an expensive cell with a small result
#: next to a cheap cell with a large one; the bench family "engine")
TARGET_ENGINE_DILL = 0.5
TARGET_ENGINE_RERUN = 0.3


# --------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------


def best_baseline(r: NotebookResult, store: str) -> MethodResult | None:
    """The fastest baseline (same store; rerun needs none) that finished and restored correctly."""
    cands = [m for m in r.methods if m.method in BASELINES and m.store in (store, "-")
             and m.status == "ok" and m.correct and m.migration_s is not None]
    return min(cands, key=lambda m: m.migration_s or 0.0, default=None)


def ratio(r: NotebookResult, store: str) -> float | None:
    ours, best = r.method("ours", store), best_baseline(r, store)
    if not ours or ours.migration_s is None or not best or not best.migration_s:
        return None
    return ours.migration_s / best.migration_s


def below_floor(r: NotebookResult, store: str) -> bool:
    """Whether the ratio target asks for less time than a fresh kernel needs just to import the
    libraries of the state's objects: a time every method restoring into a fresh kernel pays
    (dill and Kishu unpickle the same objects, re-running imports them too), so there the
    target cannot be met by anyone."""
    best = best_baseline(r, store)
    return (r.import_floor_s is not None and best is not None and best.migration_s is not None
            and r.import_floor_s > TARGET_RATIO * best.migration_s)


def floor_rows(results: list[NotebookResult], stores: list[str]) -> list[list[str]]:
    """Per notebook: the import floor next to what the ratio target allows on each store."""
    out = []
    for r in results:
        row = [r.name, str(len(r.state_modules)), _s(r.import_floor_s)]
        for st in stores:
            best, ours, rat = best_baseline(r, st), r.method("ours", st), ratio(r, st)
            allowed = None if best is None or best.migration_s is None else TARGET_RATIO * best.migration_s
            verdict = ("—" if rat is None else "met" if rat <= TARGET_RATIO
                       else "below the floor" if below_floor(r, st) else "missed")
            row += [_s(allowed), _s(ours.migration_s if ours else None), verdict]
        out.append(row)
    return out


def floor_columns(stores: list[str]) -> list[str]:
    cols = ["notebook", "modules", "import floor s"]
    for st in stores:
        cols += [f"{st}: target s ({TARGET_RATIO}x best)", f"{st}: ours s", f"{st}: verdict"]
    return cols


def stores_of(results: list[NotebookResult]) -> list[str]:
    seen: list[str] = []
    for r in results:
        for m in r.methods:
            if m.store != "-" and m.store not in seen:
                seen.append(m.store)
    return seen


def targets(results: list[NotebookResult]) -> dict[str, Any]:
    """Every target with its measured value and whether it is met (honestly, per notebook)."""
    stores = stores_of(results)
    ours = [m for r in results for m in r.methods if m.method == "ours"]
    correct = [m for m in ours if m.correct]
    ratios = {(r.name, s): ratio(r, s) for r in results for s in stores}
    ratio_ok = {k: v is not None and v <= TARGET_RATIO for k, v in ratios.items()}
    floor = {(r.name, s) for r in results for s in stores
             if not ratio_ok[(r.name, s)] and below_floor(r, s)}
    overheads = [o for r in results if (o := r.overhead_pct()) is not None]
    hooks = [o for r in results if (o := r.hook_overhead_pct()) is not None]
    med = statistics.median(overheads) if overheads else None
    med_hooks = statistics.median(hooks) if hooks else None
    engine = engine_rows(results, stores)
    return {
        "engine": {"rows": engine, "n": sum(e["met"] for e in engine), "of": len(engine),
                   "met": bool(engine) and all(e["met"] for e in engine)},
        "correct": {"n": len(correct), "of": len(ours), "met": bool(ours) and len(correct) == len(ours)},
        "ratio": {"values": ratios, "met_per": ratio_ok,
                  "n": sum(ratio_ok.values()), "of": len(ratio_ok), "met": all(ratio_ok.values()),
                  "below_floor": sorted(floor)},
        "overhead": {"median_pct": med, "median_hooks_pct": med_hooks,
                     "met": med is not None and med <= TARGET_OVERHEAD_PCT,
                     "met_hooks": med_hooks is not None and med_hooks <= TARGET_OVERHEAD_PCT},
    }


def engine_rows(results: list[NotebookResult], stores: list[str]) -> list[dict[str, Any]]:
    """Issue 3's case, per notebook and store: ratios to dill and re-run, and the plan's choice.

    Dill counts when it finished, restored correctly or not (the target is about its time);
    the plan is as expected when every name the notebook's header lists as shipped was shipped
    and every one listed as recomputed was recomputed.
    """
    out = []
    for r in results:
        if r.family != "engine":
            continue
        rerun = r.method("rerun", "-")
        for store in stores:
            ours, dill = r.method("ours", store), r.method("dill", store)
            if ours is None or ours.status != "ok" or not ours.migration_s:
                out.append({"notebook": r.name, "store": store, "vs_dill": None, "vs_rerun": None,
                            "plan_ok": False, "met": False, "why": ours.note if ours else "not run"})
                continue
            vs_dill = (ours.migration_s / dill.migration_s
                       if dill and dill.status == "ok" and dill.migration_s else None)
            vs_rerun = (ours.migration_s / rerun.migration_s
                        if rerun and rerun.status == "ok" and rerun.migration_s else None)
            ck = (ours.details or {}).get("checkpoint") or {}
            missed = [f"{n} not shipped" for n in r.expect.get("shipped", []) if n not in ck.get("shipped", [])]
            missed += [f"{n} not recomputed" for n in r.expect.get("recomputed", [])
                       if n not in ck.get("recomputed", [])]
            met = (bool(ours.correct) and not missed
                   and vs_dill is not None and vs_dill <= TARGET_ENGINE_DILL
                   and vs_rerun is not None and vs_rerun <= TARGET_ENGINE_RERUN)
            out.append({"notebook": r.name, "store": store, "ours_s": ours.migration_s,
                        "dill_s": dill.migration_s if dill else None,
                        "rerun_s": rerun.migration_s if rerun else None,
                        "vs_dill": vs_dill, "vs_rerun": vs_rerun, "plan_ok": not missed,
                        "met": met, "why": "; ".join(missed) or ("" if ours.correct else "restore not verified")})
    return out


ENGINE_COLUMNS = ["notebook", "store", "ours s", "dill s", "rerun s", "ours / dill", "ours / rerun",
                  "plan as expected", "met"]


def engine_table(rows_: list[dict[str, Any]]) -> list[list[str]]:
    def x(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}x"

    return [[e["notebook"], e["store"], _s(e.get("ours_s")), _s(e.get("dill_s")), _s(e.get("rerun_s")),
             x(e["vs_dill"]), x(e["vs_rerun"]), "yes" if e["plan_ok"] else f"no ({e['why']})",
             "yes" if e["met"] else "NO"] for e in rows_]


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f}" if n >= 1e5 else f"{n / 1e6:.3f}"


def _correct(m: MethodResult) -> str:
    if m.status == "unavailable":
        return "n/a"
    if m.status == "skipped":
        return "not run"
    if m.status == "failed":
        return "FAILED"
    return "yes" if m.correct else "NO"


def _what(m: MethodResult) -> str:
    parts = []
    if m.broken:
        parts.append("broke: " + ", ".join(m.broken[:6]) + (" …" if len(m.broken) > 6 else ""))
    if m.note:
        parts.append(m.note)
    if m.method == "ours" and m.status == "ok":
        ck = m.details.get("checkpoint") or {}
        parts.append(f"shipped {len(ck.get('shipped') or [])}, recomputed {len(ck.get('recomputed') or [])}"
                     f" (re-ran {len(ck.get('rerun_cells') or [])} cells)")
    return "; ".join(parts)


def rows(results: list[NotebookResult]) -> list[list[str]]:
    """One row per notebook x method x store, ours first."""
    out = []
    order = {"ours": 0, "dill": 1, "rerun": 2, "kishu": 3}
    for r in results:
        for m in sorted(r.methods, key=lambda m: (order.get(m.method, 9), m.store)):
            rat = ratio(r, m.store) if m.method == "ours" else None
            out.append([
                r.name, LABEL.get(m.method, m.method), m.store,
                _s(m.migration_s), _s(m.checkpoint_s), _s(m.restore_s), _mb(m.bytes_stored),
                _correct(m), "—" if rat is None else f"{rat:.2f}x", _what(m),
            ])
    return out


COLUMNS = ["notebook", "method", "store", "migration s", "checkpoint s", "restore s", "MB stored",
           "correct", "ours / best ok baseline", "what happened"]


def overhead_rows(results: list[NotebookResult]) -> list[list[str]]:
    out = []
    for r in results:
        p, a, k = r.runtime_plain, r.runtime_agent, r.runtime_kishu
        ov, hk = r.overhead_pct(), r.hook_overhead_pct()
        kov = r.overhead_pct("kishu")
        out.append([
            r.name, r.family, str(r.cells), _mb(r.state_bytes),
            _s(p.total_s if p else None), _s(a.total_s if a else None),
            "—" if ov is None else f"{ov:+.1f}%", "—" if hk is None else f"{hk:.2f}%",
            "—" if a is None else f"{1000 * a.max_hook_s:.0f}",
            _s(k.total_s if k else None), "—" if kov is None else f"{kov:+.1f}%",
        ])
    return out


OVERHEAD_COLUMNS = ["notebook", "family", "cells", "state MB", "runtime s (no tool)",
                    "runtime s (agent)", "overhead (end to end)", "overhead (agent hooks)",
                    "max hook ms", "runtime s (Kishu)", "Kishu overhead"]


def print_tables(results: list[NotebookResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, shutil.get_terminal_size().columns))
    t = Table(title="Migration: checkpoint + transfer + restore (seconds, measured in the kernels)")
    for c in COLUMNS:
        t.add_column(c, justify="left" if c in ("notebook", "method", "store", "what happened") else "right",
                     overflow="fold")
    last = None
    for row in rows(results):
        if last is not None and row[0] != last:
            t.add_section()
        last = row[0]
        style = "bold red" if row[7] in ("NO", "FAILED") and row[1] == "ours" else None
        t.add_row(*row, style=style)
    console.print(t)

    def simple(title: str, columns: list[str], left: tuple[str, ...], body: list[list[str]]) -> Table:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, justify="left" if c in left else "right")
        for row in body:
            table.add_row(*row)
        return table

    console.print(simple("Monitoring overhead: notebook runtime with vs without the tool",
                         OVERHEAD_COLUMNS, ("notebook", "family"), overhead_rows(results)))
    tg = targets(results)
    if tg["engine"]["of"]:
        console.print(simple("Issue 3's case: expensive small result next to cheap large arrays",
                             ENGINE_COLUMNS, ("notebook", "store", "plan as expected"),
                             engine_table(tg["engine"]["rows"])))
    if any(r.import_floor_s is not None for r in results):
        stores = stores_of(results)
        console.print(simple("Import floor: a fresh kernel importing the state's libraries, vs the "
                             f"{TARGET_RATIO}x target", floor_columns(stores),
                             ("notebook",) + tuple(c for c in floor_columns(stores) if "verdict" in c),
                             floor_rows(results, stores)))
    for r in results:
        if r.throughput:
            console.print(_throughput_line(r))
    console.print(_targets_text(tg))


def _throughput_line(r: NotebookResult) -> str:
    t = r.throughput or {}
    return (f"{r.name}: checkpoint of {t['bytes_shipped'] / 1e9:.2f} GB shipped at "
            f"{t['checkpoint_Bps'] / 1e6:.0f} MB/s end to end (upload phase {t['upload_Bps'] / 1e6:.0f} MB/s) "
            f"vs a raw sequential write + fsync of {t['raw_bytes'] / 1e9:.2f} GB at {t['raw_Bps'] / 1e6:.0f} MB/s: "
            f"{100 * (t['fraction'] or 0):.0f}% of raw end to end, {100 * (t['upload_fraction'] or 0):.0f}% "
            "for the upload phase")


def _targets_text(tg: dict[str, Any]) -> str:
    c, r, o, e = tg["correct"], tg["ratio"], tg["overhead"], tg["engine"]
    med = "—" if o["median_pct"] is None else f"{o['median_pct']:+.2f}%"
    medh = "—" if o["median_hooks_pct"] is None else f"{o['median_hooks_pct']:.2f}%"
    engine = ([] if not e["of"] else [
        f"- issue 3's case (family `engine`: expensive small result next to cheap large arrays): "
        f"ours <= {TARGET_ENGINE_DILL}x dill and <= {TARGET_ENGINE_RERUN}x re-run-all, plan as "
        f"expected: {e['n']}/{e['of']} notebook-store pairs — {'MET' if e['met'] else 'NOT MET'}"])
    return "\n".join([
        "Targets:",
        f"- correct restores (ours, every notebook and store): {c['n']}/{c['of']} — "
        f"{'MET' if c['met'] else 'NOT MET'}",
        f"- migration time <= {TARGET_RATIO}x the best baseline that restores correctly: "
        f"{r['n']}/{r['of']} notebook-store pairs — {'MET' if r['met'] else 'NOT MET'}"
        + (f"; on {len(r['below_floor'])} of the {r['of'] - r['n']} pairs missed, that is less time "
           "than a fresh kernel takes just to import the libraries of the state's objects, which "
           "every method restoring into a fresh kernel pays (Import floor below)"
           if r.get("below_floor") else ""),
        f"- monitoring overhead median <= {TARGET_OVERHEAD_PCT}%: end to end {med} — "
        f"{'MET' if o['met'] else 'NOT MET'}; time in the agent's hooks {medh} — "
        f"{'MET' if o['met_hooks'] else 'NOT MET'}",
        *engine,
    ])


# --------------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------------


def machine_info(workdir: Path) -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    disk = ""
    try:
        out = subprocess.run(["df", "-hT", str(workdir)], capture_output=True, text=True, timeout=10).stdout
        f = out.splitlines()[-1].split()
        disk = f"{f[0]} ({f[1]}, {f[2]} total, {f[4]} free) for the work dir and the file store"
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "disk": disk,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in ("elastic-spawner", "numpy", "pandas", "scikit-learn", "scipy", "dill", "kishu",
                 "cloudpickle", "ipykernel", "ipython", "minio", "moto", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# --------------------------------------------------------------------------------------------
# Markdown and plot
# --------------------------------------------------------------------------------------------


def _md_table(cols: list[str], body: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in row] for row in body]
    return ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"] + [
        "| " + " | ".join(row) + " |" for row in esc
    ]


def write_markdown(path: Path, results: list[NotebookResult], *, info: dict[str, Any],
                   plot_name: str | None) -> None:
    tg = targets(results)
    m, v = info["machine"], info["versions"]
    lines = [
        "# Benchmarks: migration against the baselines and Kishu",
        "",
        f"Generated by `{info['command']}` on {info['date']} (total {info['elapsed_s'] / 60:.0f} min).",
        "Every number below comes from that one run; nothing is copied from elsewhere.",
        "",
        "## What is measured",
        "",
        "For each notebook (`elastic_spawner/bench/notebooks/`, linked from `benchmarks/notebooks`),",
        "in the same run, on real ipykernel kernels:",
        "",
        "- **ours**: the notebook runs with `%load_ext kernel_agent`; `kernel_agent.checkpoint(url)`, then",
        "  `kernel_agent.restore(url)` in a fresh kernel (the agent's import and load are included).",
        "- **dill (dump all)**: `dill.dump_module()` of the session in memory, the bytes shipped through",
        "  the same store as ours (same code path, same fsync / multipart upload), `dill.load_module()` in",
        "  a fresh kernel.",
        "- **rerun all**: every cell executed again in a fresh kernel, no tool loaded. This run is also",
        "  the no-tool reference for the overhead figures.",
        "- **Kishu** (`kishu` on PyPI, headless test mode): one commit per cell into `<notebook>.kishudb`",
        "  (that per-cell work is Kishu's overhead), an explicit commit, then `checkout` in a fresh",
        "  kernel. Kishu only writes a local SQLite file, so for the S3 store the database file is",
        "  shipped through the store and fetched before the checkout.",
        "",
        "**Migration time** = checkpoint (incl. upload) + restore (incl. download), measured with",
        "`perf_counter` inside the kernels; kernel start-up is excluded for every method alike.",
        "**Correct** = the portable digest (`kernel_agent.changes.value_digest`) of all user variables",
        "together — values *and* aliasing between them — equals the one in the kernel the state came",
        "from (for rerun: the original session); per-variable digests name what broke. Objects that",
        "cannot be compared by value (generators, locks, open files) are compared by type only: "
        + (", ".join(sorted({n for r in results for n in r.opaque})) or "none here") + ".",
        "**MB stored** = bytes under the store prefix after the checkpoint (blobs + manifest).",
        "",
        "## Targets",
        "",
        _targets_text(tg).replace("Targets:\n", ""),
        "",
        "## Results",
        "",
        "Ratio column: ours / the fastest baseline *that restored correctly* on the same store",
        "(rerun needs no store). A failed or wrong baseline is never the reference.",
        "",
        *_md_table(COLUMNS, rows(results)),
        "",
    ]
    if any(r.import_floor_s is not None for r in results):
        stores = stores_of(results)
        lines += [
            "### Import floor",
            "",
            "Before a restore holds a single object, the fresh kernel must import the modules the",
            "state's objects come from (the variables' types, one level into containers and",
            "instances, and the modules, classes and functions bound to names). The floor is that",
            "import alone, timed in another fresh kernel without any tool, with the same warm file",
            "cache the restores see. Dill and Kishu pay it while unpickling, re-running pays it in",
            "the import cells, and so does ours. Where the ratio target allows less than the floor,",
            "no method that restores into a fresh kernel can meet it.",
            "",
            *_md_table(floor_columns(stores), floor_rows(results, stores)),
            "",
        ]
    if tg["engine"]["of"]:
        lines += [
            "### Issue 3's case: an expensive small result next to cheap large arrays",
            "",
            "The `engine` notebooks declare in their header which names the plan must ship (the slow",
            "small results) and which it must recompute (the cheap large arrays); the target is",
            f"ours <= {TARGET_ENGINE_DILL}x dill and <= {TARGET_ENGINE_RERUN}x re-run-all, same run.",
            "",
            *_md_table(ENGINE_COLUMNS, engine_table(tg["engine"]["rows"])),
            "",
        ]
    if plot_name:
        lines += [f"![migration time per notebook and method]({plot_name})", ""]
    lines += [
        "## Monitoring overhead",
        "",
        "End to end: the notebook's runtime under the tool vs the no-tool run (two separate kernels,",
        "so run-to-run noise of a few percent on this shared 2-core machine is included; the agent's",
        "run goes first, so it also pays any cold-cache cost). Agent hooks: time inside the agent's",
        "`pre_run_cell`/`post_run_cell` callbacks, bracketed by timing hooks registered before and",
        "after it, as a share of the cells' own time (noise-free, but it does not see costs outside the",
        "hooks, such as the audit hook).",
        "",
        *_md_table(OVERHEAD_COLUMNS, overhead_rows(results)),
        "",
    ]
    thr = [r for r in results if r.throughput]
    if thr:
        lines += ["## Large state: checkpoint throughput", ""]
        lines += [f"- {_throughput_line(r)}" for r in thr]
        lines += [""]
    obs = observations(results)
    if obs:
        lines += ["## Observations (derived from the results above)", ""] + [f"- {o}" for o in obs] + [""]
    lines += ["## Plans chosen by ours", ""]
    for r in results:
        for mm in r.methods:
            if mm.method == "ours" and mm.status == "ok":
                ck = mm.details.get("checkpoint") or {}
                rs = mm.details.get("restore") or {}
                lines.append(
                    f"- {r.name} ({mm.store}): shipped [{', '.join(ck.get('shipped') or [])}], "
                    f"recomputed [{', '.join(ck.get('recomputed') or [])}], re-ran cells "
                    f"{ck.get('rerun_cells')}; restore: fetch {_s((rs.get('timings') or {}).get('fetch_s'))} s, "
                    f"replay {_s((rs.get('timings') or {}).get('replay_s'))} s, verify "
                    f"{_s((rs.get('timings') or {}).get('verify_s'))} s")
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores",
        f"- Memory: {m['memory']}",
        f"- Disk: {m['disk']}",
        f"- OS: {m['os']}",
        f"- Stores: {'; '.join(info['stores'])}",
        "",
        "## Versions",
        "",
        f"- Python {m['python']}; " + "; ".join(f"{k} {val}" for k, val in v.items()),
        "",
        "## Rerun",
        "",
        "```",
        "elastic-spawner bench            # this report (writes docs/benchmarks.md and the PNG)",
        "elastic-spawner bench --quick    # a small smoke run (< 2 min), prints the tables only",
        "elastic-spawner bench --only kaggle_titanic,aliasing_views --stores file",
        "```",
        "",
        "With `ELASTIC_TEST_S3_ENDPOINT`, `ELASTIC_TEST_S3_ACCESS_KEY`, `ELASTIC_TEST_S3_SECRET_KEY` and",
        "`ELASTIC_TEST_S3_BUCKET` set (e.g. `eval \"$(bash scripts/ceph-rgw.sh start)\"`), the S3 store is",
        "that Ceph RGW instead of moto. Kishu is optional (`pip install -e '.[bench]'`).",
        "",
    ]
    path.write_text("\n".join(lines))


def observations(results: list[NotebookResult]) -> list[str]:
    """Facts a reader needs to interpret the table, computed rather than written by hand."""
    out = []
    for r in results:
        rerun = r.method("rerun", "-")
        rerun_broken = set(rerun.broken) if rerun else set()
        for m in r.methods:
            if m.method != "ours" or m.correct or not m.broken:
                continue
            also = sorted(set(m.broken) & rerun_broken)
            if also:
                out.append(
                    f"{r.name} ({m.store}): {', '.join(also)} also differ(s) after *re-running the same "
                    "deterministic cells* in a fresh kernel, so the digest cannot see equality for that "
                    "object (its pickled state carries process-specific bytes); counted as NOT correct "
                    "all the same.")
        for store in stores_of(results):
            rat = ratio(r, store)
            best = best_baseline(r, store)
            if rat is not None and rat > TARGET_RATIO and best is not None:
                out.append(
                    f"{r.name} ({store}): ours {rat:.2f}x of the best correct baseline "
                    f"({LABEL[best.method]}, {_s(best.migration_s)} s).")
            elif best is None and r.method("ours", store) and (r.method("ours", store).correct):
                out.append(f"{r.name} ({store}): no baseline restored correctly; ours did.")
    return out


def write_plot(path: Path, results: list[NotebookResult]) -> None:
    """Grouped bars of migration time per notebook and method, one panel per store, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    stores = stores_of(results)
    methods = ["ours", "dill", "rerun", "kishu"]
    colors = {"ours": "#1b9e77", "dill": "#7570b3", "rerun": "#d95f02", "kishu": "#e7298a"}
    names = [r.name for r in results]
    fig, axes = plt.subplots(len(stores), 1, figsize=(max(10, 1.1 * len(names) + 3), 4.6 * len(stores)),
                             squeeze=False)
    width = 0.8 / len(methods)
    x = np.arange(len(names))
    all_vals = [m.migration_s for r in results for m in r.methods if m.migration_s]
    lo = min(all_vals, default=0.01) / 2
    hi = max(all_vals, default=1.0) * 3
    for ax, store in zip(axes[:, 0], stores, strict=True):
        for j, meth in enumerate(methods):
            xs = x + (j - (len(methods) - 1) / 2) * width
            for xi, r in zip(xs, results, strict=True):
                mm = r.method(meth, store)
                if mm is None:
                    continue
                if mm.migration_s:
                    hatch = None if mm.correct else "xx"
                    ax.bar(xi, mm.migration_s, width, color=colors[meth], hatch=hatch,
                           edgecolor="black" if hatch else colors[meth], linewidth=0.5,
                           alpha=1.0 if mm.correct else 0.45)
                    if not mm.correct:
                        ax.text(xi, mm.migration_s * 1.15, "wrong", rotation=90, ha="center",
                                va="bottom", fontsize=7)
                else:
                    label = {"unavailable": "n/a", "skipped": "not run"}.get(mm.status, "failed")
                    ax.text(xi, lo * 1.3, label, rotation=90, ha="center", va="bottom", fontsize=7,
                            color=colors[meth])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("migration time (s, log)")
        ax.set_title(f"{store} store: checkpoint + transfer + restore")
        ax.grid(axis="y", which="both", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in methods]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="xx"))
    axes[0, 0].legend(handles, [LABEL[m] for m in methods] + ["restored wrong"], ncol=5, fontsize=8,
                      loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
