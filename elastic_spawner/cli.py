"""`elastic-spawner`: the command line (console script). Runs in the user's shell, not in the hub.

Subcommands:
  demo          run a real local JupyterHub, a notebook, a migration between two nodes, and verify
  bench         benchmark tables: ours vs dill, re-run-everything and Kishu (elastic_spawner.bench)

Planned, same entry point (one module each, registered in `SUBCOMMANDS`): `migrate` (checkpoint and
move a user's server, optionally resized), `checkpoints` (list a server's checkpoints from the hub).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a local JupyterHub, run a notebook, migrate it to another node, verify",
        description=(
            "Start a real JupyterHub on 127.0.0.1 with the local elastic spawner (two nodes, a file "
            "store), run the bundled notebook in a user's server, migrate the server to the other "
            "node through the hub, and compare every variable before and after. Prints the plan, "
            "timings against dump-everything and re-run-everything, and the verification. Exit "
            "status 0 only when verified."
        ),
    )
    p.add_argument("--dir", metavar="DIR",
                   help="demo directory (hub database, store, nodes, home); default ./demo-run, "
                        "recreated at each run")
    p.add_argument("--keep", action="store_true",
                   help="leave the hub running after the demo and print the URL to open; Ctrl-C stops it")

    def run(args: argparse.Namespace) -> int:
        from elastic_spawner.demo.runner import main_demo

        return main_demo(args)

    p.set_defaults(func=run)


def _add_bench(sub: Any) -> None:
    from elastic_spawner.bench.run import add_arguments

    p = sub.add_parser(
        "bench",
        help="benchmark migration against dump-everything (dill), re-run-everything and Kishu",
        description=(
            "Run the benchmark notebooks on real kernels through every method (ours, dill, rerun, "
            "Kishu) with the file and S3 (loopback) stores, print the tables, and write "
            "docs/benchmarks.md and docs/benchmarks-migration.png. Exit status 0 only when ours "
            "restored every notebook correctly."
        ),
    )
    add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        from elastic_spawner.bench.run import run as run_bench

        return run_bench(args)

    p.set_defaults(func=run)


# name -> function adding the subparser; `migrate`, `checkpoints` go here.
SUBCOMMANDS: dict[str, Callable[[Any], None]] = {"demo": _add_demo, "bench": _add_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elastic-spawner",
        description="Live migration of Jupyter notebook sessions for JupyterHub.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
