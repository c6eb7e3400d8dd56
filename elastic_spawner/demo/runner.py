"""`elastic-spawner demo`: a real local JupyterHub, a notebook, a migration between nodes, the proof.

Runs in the CLI process; drives a JupyterHub subprocess (`elastic_spawner.localhub`) and the
kernels of the user's server over REST + websocket (`elastic_spawner.kernelclient`). Phases:
start the hub, start the user's server on node A, run the bundled notebook, probe every variable,
measure the two baselines (dump everything with dill; re-run everything) in fresh kernels of the
same server, migrate (hub REST: stop, which checkpoints; start on node B, which restores), probe
again and compare. Exit status 0 only when every variable is back and equal.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from elastic_spawner.kernelclient import Kernel, ServerClient
from elastic_spawner.localhub import HubSettings, LocalHub

NOTEBOOK = "digits.ipynb"
MARKER = ".elastic-demo"
NODES = ["node-a", "node-b"]


def private_exec(code: str) -> str:
    """A user expression running `code` in a private globals dict; `result` is returned as JSON.

    Silent and namespace-neutral: the agent does not record it and no name is added to the
    user's namespace. `ns` is the user namespace.
    """
    return (
        "__import__('json').dumps((lambda G: (exec(" + repr(code) + ", G), G['result'])[1])"
        "({'ns': get_ipython().user_ns, '__name__': '_elastic_probe'}))"
    )


async def run_private(kernel: Kernel, code: str, timeout: float = 600) -> Any:
    res = await kernel.run("", silent=True, timeout=timeout, user_expressions={"v": private_exec(code)})
    v = res.user_expressions.get("v") or {}
    if v.get("status") != "ok":
        raise RuntimeError(f"in kernel: {v.get('ename')}: {v.get('evalue')}")
    import ast

    return json.loads(ast.literal_eval(v["data"]["text/plain"]))


PROBE_CALL = resources.files("elastic_spawner.demo").joinpath("probe.py").read_text() + "\nresult = probe(ns)\n"
WHERE_CALL = """
import os
result = {'node': os.environ.get('ELASTIC_NODE_NAME'), 'pid': os.getppid(),
          'cwd': os.readlink(f'/proc/{os.getppid()}/cwd')}
"""
DUMP_CALL = """
import dill, os, time
t = time.perf_counter()
dill.dump_session(PATH)
result = {'seconds': time.perf_counter() - t, 'bytes': os.path.getsize(PATH)}
"""
LOAD_CALL = """
import dill, time
t = time.perf_counter()
dill.load_session(PATH)
result = {'seconds': time.perf_counter() - t}
"""


@dataclass
class DemoReport:
    """Everything the demo measured; printed as tables at the end."""

    notebook: str = NOTEBOOK
    cells: int = 0
    notebook_s: float = 0.0
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    where_before: dict[str, Any] = field(default_factory=dict)
    where_after: dict[str, Any] = field(default_factory=dict)
    dump_s: float = 0.0
    dump_bytes: int = 0
    load_s: float = 0.0
    dump_error: str | None = None  # dill could not save or load this session
    rerun_s: float = 0.0
    rerun_error: str | None = None  # a cell failed when the notebook was re-run from the top
    stop_s: float = 0.0
    start_s: float = 0.0
    checkpoint: dict[str, Any] = field(default_factory=dict)  # history entry from spawner state
    restore: dict[str, Any] = field(default_factory=dict)  # restore status from the server
    problems: list[str] = field(default_factory=list)

    def verify(self) -> tuple[bool, str]:
        b, a = self.before.get("digests", {}), self.after.get("digests", {})
        missing = sorted(set(b) - set(a))
        extra = sorted(set(a) - set(b))
        differ = sorted(n for n in set(a) & set(b) if a[n] != b[n])
        alias_b = sorted(map(sorted, self.before.get("aliases", [])))
        alias_a = sorted(map(sorted, self.after.get("aliases", [])))
        ok = b and not (missing or extra or differ) and alias_b == alias_a and not self.problems
        if ok:
            shared = sum(len(g) for g in alias_b)
            return True, (f"{len(b)} variables, all equal ({shared} names in {len(alias_b)} "
                          "alias groups, aliasing preserved)")
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected: {', '.join(extra)}")
        if differ:
            parts.append(f"different: {', '.join(differ)}")
        if alias_b != alias_a:
            parts.append(f"aliasing changed: {alias_b} -> {alias_a}")
        lost_sharing = sorted(set(self.before.get("sharing", [])) - set(self.after.get("sharing", [])))
        if lost_sharing:
            parts.append("array memory no longer shared: " + ", ".join(lost_sharing))
        parts.extend(self.problems)
        return False, f"{len(b)} variables, NOT all equal: " + "; ".join(parts)


@dataclass
class Notebook:
    """The notebook the demo runs: the bundled one, or the user's (`--notebook`)."""

    name: str  # its file name in the user's home
    content: dict[str, Any]
    cells: list[str]  # the code cells, in order, empty ones left out
    data: list[Path] = field(default_factory=list)  # copied next to it (`--with`)


def bundled_notebook() -> Notebook:
    nb = json.loads(resources.files("elastic_spawner.demo").joinpath(NOTEBOOK).read_text())
    return Notebook(NOTEBOOK, nb, _code_cells(nb))


def load_notebook(path: Path, data: list[Path] | None = None) -> Notebook:
    """The user's notebook, checked before anything starts: a readable nbformat 4 notebook with
    code cells, for a Python kernel; and the files it needs, which must exist."""
    where = f"elastic-spawner demo --notebook {path}"
    if not path.is_file():
        raise DemoInputError(f"{where}: no such file; give the path of an .ipynb file")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DemoInputError(f"{where}: not a notebook (not JSON: {e}); give an .ipynb file "
                             "saved by Jupyter") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise DemoInputError(f"{where}: not a notebook (no list of cells); give an .ipynb file "
                             "saved by Jupyter")
    if nb.get("nbformat") != 4:
        raise DemoInputError(f"{where}: nbformat {nb.get('nbformat')!r}, the demo reads version 4; "
                             f"convert it with `jupyter nbconvert --to notebook {path.name}`")
    language = (((nb.get("metadata") or {}).get("kernelspec") or {}).get("language")
                or ((nb.get("metadata") or {}).get("language_info") or {}).get("name") or "python")
    if str(language).lower() != "python":
        raise DemoInputError(f"{where}: its language is {language}; the agent runs in Python "
                             "(ipykernel) kernels only")
    cells = _code_cells(nb)
    if not cells:
        raise DemoInputError(f"{where}: the notebook has no code cells to run")
    missing = [str(d) for d in data or [] if not d.exists()]
    if missing:
        raise DemoInputError(f"elastic-spawner demo --with: {', '.join(missing)}: no such file or "
                             "directory")
    return Notebook(path.name, nb, cells, list(data or []))


class DemoInputError(Exception):
    """Bad arguments to the demo: said before anything starts."""


def _code_cells(nb: dict[str, Any]) -> list[str]:
    cells = []
    for c in nb["cells"]:
        if not isinstance(c, dict) or c.get("cell_type") != "code":
            continue
        src = c.get("source", "")
        code = "".join(src) if isinstance(src, list) else str(src)
        if code.strip():
            cells.append(code)
    return cells


def _prepare_workdir(path: Path | None) -> Path:
    """The demo directory: ./demo-run by default; reused only if a previous demo made it."""
    if path is None:
        path = Path("demo-run")
    path = path.resolve()
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).exists():
            raise SystemExit(f"elastic-spawner demo: {path} exists and was not made by the demo; "
                             "choose another --dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by elastic-spawner demo; deleted by the next run\n")
    return path


class Demo:
    """One run of the demo; `run()` returns the report, `hub` is stopped by the caller."""

    def __init__(self, workdir: Path, console: Console, user: str = "demo",
                 notebook: Notebook | None = None) -> None:
        self.workdir = workdir
        self.console = console
        self.user = user
        self.notebook = notebook or bundled_notebook()
        self.hub = LocalHub(HubSettings(workdir=workdir, nodes=NODES))
        self.report = DemoReport()

    async def run(self) -> DemoReport:
        r = self.report
        notebook = self.notebook
        name, cells = notebook.name, notebook.cells
        r.notebook = name
        r.cells = len(cells)
        cols = (SpinnerColumn(), TextColumn("{task.description:<58}"), BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
        with Progress(*cols, console=self.console) as progress:
            def phase(desc: str, total: float = 1) -> Any:
                return progress.add_task(desc, total=total)

            t = phase("Start JupyterHub on 127.0.0.1")
            await self.hub.start()
            await self.hub.create_user(self.user)
            progress.update(t, completed=1)

            t = phase(f"Start {self.user}'s server on {NODES[0]}")
            model = await self.hub.start_server(self.user, options={"node": NODES[0]})
            token = await self.hub.user_token(self.user, note="elastic-spawner demo")
            server = ServerClient(self.hub.url + model["url"], token)
            # the files it reads, next to it in the home every node mounts (a PVC on Kubernetes)
            home = self.hub.home_root / self.user
            for src in notebook.data:
                dst = home / src.name
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst)
            await server.put_notebook(name, notebook.content)
            progress.update(t, completed=1)

            t = phase(f"Run {name} ({len(cells)} cells)", total=len(cells))
            kernel = await server.open_notebook(name)
            t0 = time.perf_counter()
            for i, code in enumerate(cells, 1):
                res = await kernel.run(code)
                if res.status != "ok":
                    err = res.error or {}
                    raise DemoInputError(
                        f"code cell {i} of {name} failed ({err.get('ename')}: {err.get('evalue')}); "
                        "the demo runs the notebook top to bottom in a fresh kernel, so it must run "
                        "that way in Jupyter too (give the files it reads with --with)")
                progress.advance(t)
            r.notebook_s = time.perf_counter() - t0

            t = phase("Probe every variable (digest, aliasing)")
            r.before = await run_private(kernel, PROBE_CALL)
            r.where_before = await run_private(kernel, WHERE_CALL)
            progress.update(t, completed=1)

            t = phase("Baseline: dump everything (dill) + load", total=2)
            dump_path = str(self.workdir / "dill-session.pkl")
            try:  # (a baseline that cannot handle the notebook is a result, not a failure)
                d = await run_private(kernel, f"PATH = {dump_path!r}\n" + DUMP_CALL)
                r.dump_s, r.dump_bytes = d["seconds"], d["bytes"]
            except RuntimeError as e:
                r.dump_error = str(e)
            progress.advance(t)
            await kernel.close()
            if r.dump_error is None:
                fresh = await server.start_kernel(path=os.path.dirname(name))
                try:
                    r.load_s = (await run_private(fresh, f"PATH = {dump_path!r}\n" + LOAD_CALL))["seconds"]
                except RuntimeError as e:
                    r.dump_error = f"load: {e}"
                await fresh.shutdown()
                os.unlink(dump_path)
            progress.advance(t)

            t = phase("Baseline: re-run everything", total=len(cells))
            fresh = await server.start_kernel(path=os.path.dirname(name))
            t0 = time.perf_counter()
            for i, code in enumerate(cells, 1):
                res = await fresh.run(code)
                if res.status != "ok":
                    err = res.error or {}
                    r.rerun_error = f"cell {i} failed on a re-run: {err.get('ename')}: {err.get('evalue')}"
                    break
                progress.advance(t)
            r.rerun_s = time.perf_counter() - t0
            await fresh.shutdown()

            t = phase(f"Migrate: checkpoint + stop on {NODES[0]}")
            t0 = time.perf_counter()
            await self.hub.stop_server(self.user)
            r.stop_s = time.perf_counter() - t0
            state = await self.hub.spawner_state(self.user)
            history = (state.get("elastic") or {}).get("history") or []
            r.checkpoint = history[0] if history else {}
            if not (state.get("elastic") or {}).get("checkpoint"):
                r.problems.append("the stop left no checkpoint pointer in the spawner state")
            progress.update(t, completed=1)

            t = phase(f"Start on {NODES[1]} + restore", total=100)
            t0 = time.perf_counter()
            start = asyncio.ensure_future(self.hub.start_server(self.user, options={"node": NODES[1]}))

            def on_event(ev: dict[str, Any]) -> None:
                kw: dict[str, Any] = {"description": f"Start on {NODES[1]}: {str(ev.get('message', ''))[:44]}"}
                if isinstance(ev.get("progress"), (int, float)):
                    kw["completed"] = ev["progress"]
                progress.update(t, **kw)

            follower = asyncio.ensure_future(self.hub.follow_progress(self.user, start, on_event))
            try:
                model = await start
            finally:
                follower.cancel()
            r.start_s = time.perf_counter() - t0
            progress.update(t, completed=100, description=f"Start on {NODES[1]} + restore")

            t = phase("Probe again and compare")
            server = ServerClient(self.hub.url + model["url"], token)
            _, status = await server.api("GET", "api/elastic/status")
            r.restore = (status or {}).get("restore") or {}
            if r.restore.get("state") != "done":
                r.problems.append(f"restore state is {r.restore.get('state')!r}")
            kid = await server.kernel_for(name)
            if kid is None:
                r.problems.append(f"no kernel attached to {name} after the restore")
            else:
                restored = await server.attach(kid)
                r.after = await run_private(restored, PROBE_CALL)
                r.where_after = await run_private(restored, WHERE_CALL)
                await restored.close()
            progress.update(t, completed=1)
        return r


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def print_report(console: Console, r: DemoReport) -> bool:
    """Print plan, timings and verification; returns True when verified."""
    kernels = r.checkpoint.get("kernels") or []
    console.print(f"[bold]Checkpoint[/] {r.checkpoint.get('checkpoint', '?')}")
    plan = Table(title="The plan: ship or recompute, per variable", title_justify="left", show_lines=True)
    plan.add_column("notebook", no_wrap=True)
    plan.add_column("action", no_wrap=True)
    plan.add_column("variables", ratio=1)
    plan.add_column("bytes", no_wrap=True, justify="right")
    ck_total = 0.0
    for k in kernels:
        s = k.get("summary") or {}
        stats = s.get("stats") or {}
        ck_total += float(stats.get("total_s") or 0)
        path = k.get("path") or "?"
        shipped, recomputed = s.get("shipped") or [], s.get("recomputed") or []
        plan.add_row(path, f"shipped ({len(shipped)})", ", ".join(shipped) or "-",
                     f"{_fmt_bytes(stats.get('bytes_shipped'))} "
                     f"({_fmt_bytes(stats.get('bytes_uploaded'))} new)")
        cells = ", ".join(str(c) for c in s.get("rerun_cells") or []) or "-"
        plan.add_row("", f"recomputed ({len(recomputed)})",
                     (", ".join(recomputed) or "-") + f"  [dim](re-run cells: {cells})",
                     f"{_fmt_bytes(max(0, (stats.get('bytes_total_state') or 0) - (stats.get('bytes_shipped') or 0)))} not shipped")
        imported = s.get("imported") or []
        if imported:
            plan.add_row("", f"imported ({len(imported)})", ", ".join(imported),
                         "by name, no blob")
        lost = s.get("lost") or {}
        if lost:
            plan.add_row("", f"[red]lost ({len(lost)})", "; ".join(f"{n}: {why}" for n, why in lost.items()), "")
        if k.get("status") != "ok":
            plan.add_row(path, f"[red]{k.get('status')}", k.get("error") or "", "")
    console.print(plan)

    rs_total = 0.0
    for k in r.restore.get("kernels") or []:
        timings = (k.get("summary") or {}).get("timings") or {}
        rs_total += float(timings.get("total_s") or 0)
    times = Table(title="Timings (same machine, same run)", title_justify="left")
    for col in ("approach", "save", "restore", "save + restore", "notes"):
        times.add_column(col)
    times.add_row("[bold]elastic (this project)", _s(ck_total), _s(rs_total), _s(ck_total + rs_total),
                  f"migration end to end: stop {_s(r.stop_s)}, start + restore {_s(r.start_s)}")
    if r.dump_error:
        times.add_row("dump everything (dill)", "[red]failed", "-", "-", r.dump_error[:120])
    else:
        times.add_row("dump everything (dill)", _s(r.dump_s), _s(r.load_s), _s(r.dump_s + r.load_s),
                      f"session file {_fmt_bytes(r.dump_bytes)}")
    if r.rerun_error:
        times.add_row("re-run everything", "-", "[red]failed", "-", r.rerun_error[:120])
    else:
        times.add_row("re-run everything", "-", _s(r.rerun_s), _s(r.rerun_s),
                      f"{r.cells} cells; first run took {_s(r.notebook_s)}")
    console.print(times)

    wb, wa = r.where_before, r.where_after
    if wa:
        console.print(f"Moved: node {wb.get('node')} -> {wa.get('node')}, server pid {wb.get('pid')} -> "
                      f"{wa.get('pid')}, server cwd {wb.get('cwd')} -> {wa.get('cwd')}")
    for k in r.restore.get("kernels") or []:
        s = k.get("summary") or {}
        variables = s.get("variables") or {}
        if not variables:
            continue
        good = sum(1 for v in variables.values() if v.get("verified"))
        bad = [f"{n} lost ({why})" for n, why in (s.get("lost") or {}).items()]
        bad += [f"{n} differs" for n in s.get("mismatched") or [] if n not in (s.get("lost") or {})]
        console.print(f"Agent's own check of {k.get('path') or '?'}: {good} of {len(variables)} "
                      "variables verified against their checkpoint digests"
                      + (": " + "; ".join(bad) if bad else ""))
    ok, line = r.verify()
    console.print(("[bold green]VERIFIED: " if ok else "[bold red]NOT VERIFIED: ") + line)
    return ok


async def run_demo(workdir: Path | None, *, keep: bool, console: Console | None = None,
                   notebook: Notebook | None = None) -> int:
    """The `demo` subcommand; returns the exit status. Stops everything it started, Ctrl-C too."""
    console = console or Console()
    wd = _prepare_workdir(workdir)
    demo = Demo(wd, console, notebook=notebook)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupted = {"count": 0}

    def on_signal(signame: str) -> None:
        interrupted["count"] += 1
        if interrupted["count"] > 1:
            console.print(f"[red]{signame} again: killing the hub and its servers now")
            demo.hub.kill_now()
            os._exit(130)
        console.print(f"[yellow]{signame}: stopping the hub and its servers (again to force)")
        if main is not None:
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    ok = kept = False
    try:
        console.print(f"[bold]ElasticSpawner demo[/] in {wd} (hub log: {demo.hub.log_path})")
        report = await demo.run()
        ok = print_report(console, report)
        (wd / "report.json").write_text(json.dumps(asdict(report), indent=1, default=str))
        if keep:
            console.print(
                f"\nThe hub keeps running: open [bold]{demo.hub.url}/hub/login?next=/user/{demo.user}/lab/tree/{quote(demo.notebook.name)}[/]"
                f"\nand log in as [bold]{demo.user}[/] with any password. Ctrl-C stops everything."
            )
            kept = True
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        if kept:  # Ctrl-C is how a kept demo ends: the exit status is the verification's
            return 0 if ok else 1
        console.print("[yellow]interrupted")
        return 130
    except DemoInputError as e:  # the notebook does not run as it is: nothing to migrate
        console.print(f"[bold red]demo stopped: {e}")
        return 2
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence: say what failed
        console.print(f"[bold red]demo failed: {e}")
        console.print(f"hub log tail:\n{demo.hub.log_tail(30)}")
        return 1
    finally:
        with console.status("Stopping the hub and its servers"):
            try:
                await asyncio.shield(demo.hub.stop())
            except BaseException:  # noqa: BLE001
                demo.hub.kill_now()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0 if ok else 1


def main_demo(args: Any) -> int:
    notebook = None
    try:
        if getattr(args, "notebook", None):
            notebook = load_notebook(Path(args.notebook), [Path(p) for p in args.data or []])
        elif getattr(args, "data", None):
            raise DemoInputError("elastic-spawner demo --with: only with --notebook (the bundled "
                                 "notebook needs no files)")
    except DemoInputError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_demo(Path(args.dir) if args.dir else None, keep=args.keep,
                                    notebook=notebook))
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()
