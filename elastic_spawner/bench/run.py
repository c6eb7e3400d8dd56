"""``elastic-spawner bench``: run the benchmark notebooks through every method and report.

Full run: every notebook, file and S3 stores, writes ``docs/benchmarks.md`` and
``docs/benchmarks-migration.png`` (relative to the current directory) plus a JSON of the raw
results. ``--quick``: three small notebooks at small sizes, tables on stdout only, for CI.
Exit status 0 only when ours restored every notebook correctly (speed is reported, never
asserted: timings on shared machines are not pass/fail material).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

QUICK_NOTEBOOKS = ["tutorial_python", "unpicklable_objects", "aliasing_views"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small sizes and a subset of notebooks (a CI smoke run, < 2 minutes)")
    p.add_argument("--only", metavar="NAMES",
                   help="comma-separated notebook names (default: all; with --quick: "
                        f"{','.join(QUICK_NOTEBOOKS)})")
    p.add_argument("--stores", default="file,s3", metavar="KINDS",
                   help="comma-separated stores to measure: file, s3 (default: both; s3 is moto on "
                        "loopback, or Ceph RGW when ELASTIC_TEST_S3_ENDPOINT is set)")
    p.add_argument("--no-kishu", action="store_true", help="skip Kishu even when it is installed")
    p.add_argument("--report", metavar="MD",
                   help="Markdown report to write (default: docs/benchmarks.md; none with --quick)")
    p.add_argument("--plot", metavar="PNG",
                   help="plot to write (default: docs/benchmarks-migration.png; none with --quick)")
    p.add_argument("--json", metavar="PATH", help="raw results as JSON (default: next to the report)")
    p.add_argument("--from-json", metavar="PATH",
                   help="do not run anything: re-render tables, report and plot from a saved JSON")
    p.add_argument("--workdir", metavar="DIR",
                   help="where kernels run and the file store lives (default: a temp dir)")
    p.add_argument("--list", action="store_true", help="list the notebooks and exit")


def _compile_agent() -> None:
    """Byte-compile our packages before any kernel imports them.

    An installed wheel ships compiled; an editable checkout under PYTHONDONTWRITEBYTECODE
    would compile the agent from source in every fresh kernel (~0.1 s on each restore), a
    cost no baseline pays for its own libraries.
    """
    import compileall

    import elastic_spawner
    import kernel_agent

    for pkg in (kernel_agent, elastic_spawner):
        compileall.compile_dir(str(Path(pkg.__file__).parent), quiet=1)


def run(args: argparse.Namespace) -> int:
    from elastic_spawner.bench import notebooks, report
    from elastic_spawner.bench.harness import (
        Bench,
        file_target,
        s3_endpoint,
        s3_target,
    )

    if args.list:
        for name in notebooks.available():
            nb = notebooks.load(name)
            print(f"{name:24s} {nb.family:12s} {len(nb.cells):3d} cells  {nb.title}")
        return 0

    default_out = not args.quick
    md = Path(args.report) if args.report else (Path("docs/benchmarks.md") if default_out else None)
    png = Path(args.plot) if args.plot else (Path("docs/benchmarks-migration.png") if default_out else None)
    js = Path(args.json) if args.json else (md.with_suffix(".json") if md else None)

    t0 = time.perf_counter()
    info: dict[str, Any]
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        results = [_result_from_dict(d) for d in data["results"]]
        info = data["info"]
    else:
        _compile_agent()
        names = args.only.split(",") if args.only else (QUICK_NOTEBOOKS if args.quick else None)
        nbs = notebooks.load_all(names, quick=args.quick)
        kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
        bad = [k for k in kinds if k not in ("file", "s3")]
        if bad:
            print(f"unknown store kind(s): {', '.join(bad)} (use file, s3)", file=sys.stderr)
            return 2
        with ExitStack() as stack:
            base = Path(args.workdir) if args.workdir else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="elastic-bench-")))
            base.mkdir(parents=True, exist_ok=True)
            stores = []
            for k in kinds:
                if k == "file":
                    stores.append(file_target(base / "file-store"))
                else:
                    try:
                        ep = stack.enter_context(s3_endpoint())
                    except Exception as e:  # noqa: BLE001 - report it and go on with the rest
                        print(f"S3 store unavailable, skipped: {type(e).__name__}: {e}", file=sys.stderr)
                        continue
                    stores.append(s3_target(ep))
            print(f"benchmark: {len(nbs)} notebooks, stores: {', '.join(s.description for s in stores)}")
            bench = Bench(base / "work", stores, kishu=not args.no_kishu)
            results = []
            partial = (js or base / "results.json").with_suffix(".partial.json")
            for i, nb in enumerate(nbs, 1):
                print(f"[{i}/{len(nbs)}] {nb.name} ({nb.title})", flush=True)
                results.append(bench.run(nb))
                # a long run that dies late still leaves its measurements behind
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps({"info": {"partial": True},
                                               "results": [r.to_dict() for r in results]}, indent=1))
            if bench.errors:
                err_log = (md.parent if md else base) / "benchmarks-errors.log"
                if md:
                    err_log = md.with_name("benchmarks-errors.log")
                try:
                    err_log.write_text("\n\n".join(bench.errors))
                    print(f"full tracebacks of failures: {err_log}")
                except OSError:
                    pass
            info = {
                "command": " ".join(["elastic-spawner bench", shlex.join(_cli_args())]).strip(),
                "date": report.now(),
                "elapsed_s": time.perf_counter() - t0,
                "machine": report.machine_info(base),
                "versions": report.versions(),
                "stores": [s.description for s in stores],
                "quick": bool(args.quick),
            }

    if not args.from_json:
        partial.unlink(missing_ok=True)
    report.print_tables(results)
    if js:
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps({"info": info, "results": [r.to_dict() for r in results]}, indent=1))
    if png:
        png.parent.mkdir(parents=True, exist_ok=True)
        report.write_plot(png, results)
        print(f"plot: {png}")
    if md:
        md.parent.mkdir(parents=True, exist_ok=True)
        plot_ref = None
        if png:
            try:
                plot_ref = str(png.resolve().relative_to(md.resolve().parent))
            except ValueError:
                plot_ref = str(png.resolve())
        report.write_markdown(md, results, info=info, plot_name=plot_ref)
        print(f"report: {md}")
    ok = all(m.correct for r in results for m in r.methods if m.method == "ours")
    return 0 if ok and results else 1


def _cli_args() -> list[str]:
    """The arguments after ``bench`` (or after the module name with ``python -m``)."""
    argv = sys.argv[1:]
    return argv[argv.index("bench") + 1:] if "bench" in argv else argv


def _result_from_dict(d: dict[str, Any]) -> Any:
    from elastic_spawner.bench.harness import MethodResult, NotebookResult, Runtime

    d = dict(d)
    d["methods"] = [MethodResult(**m) for m in d.get("methods", [])]
    for k in ("runtime_plain", "runtime_agent", "runtime_kishu"):
        if d.get(k):
            d[k] = Runtime(**d[k])
    return NotebookResult(**d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elastic-spawner bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
