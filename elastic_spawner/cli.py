"""`elastic-spawner`: the command line (console script). Runs in the user's shell, not in the hub.

Subcommands:
  demo          run a real local JupyterHub, a notebook, a migration between two nodes, and verify
  bench         benchmark tables: ours vs dill, re-run-everything and Kishu (elastic_spawner.bench)
  migrate       migrate/resize a user's server through the elastic service (elastic_spawner.service)
  checkpoints   list or delete a user's server checkpoints through the service
  service       run the elastic JupyterHub service itself
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
            "store), run the bundled notebook (or yours: --notebook) in a user's server, migrate "
            "the server to the other node through the hub, and compare every variable before and "
            "after. Prints the plan, "
            "timings against dump-everything and re-run-everything, and the verification. Exit "
            "status 0 only when verified."
        ),
    )
    p.add_argument("--dir", metavar="DIR",
                   help="demo directory (hub database, store, nodes, home); default ./demo-run, "
                        "recreated at each run")
    p.add_argument("--keep", action="store_true",
                   help="leave the hub running after the demo and print the URL to open; Ctrl-C stops it")
    p.add_argument("--notebook", metavar="IPYNB",
                   help="run and migrate this notebook instead of the bundled one (a Python "
                        "notebook that runs top to bottom in a fresh kernel)")
    p.add_argument("--with", dest="data", metavar="PATH", action="append",
                   help="a file or directory the notebook reads, copied next to it in the home "
                        "every node shares (repeat for more)")

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


def _add_service_commands(sub: Any) -> None:
    """`migrate`, `checkpoints` (clients of the migrator service) and `service` (the service)."""
    from elastic_spawner.service.commands import add_checkpoints_arguments, add_migrate_arguments

    p = sub.add_parser(
        "migrate", help="migrate (and optionally resize) a user's server through the service",
        description="Checkpoint a user's server, stop it, start it again (on another node, with "
                    "new sizes) and wait for the verified restore, through the elastic service. "
                    "Needs ELASTIC_SERVICE_URL and a token (ELASTIC_TOKEN or JUPYTERHUB_API_TOKEN) "
                    "with the custom:elastic:migrate scope. Exit status 0 only when verified.")
    add_migrate_arguments(p)

    def migrate(args: argparse.Namespace) -> int:
        from elastic_spawner.service.commands import run_migrate

        return run_migrate(args)

    p.set_defaults(func=migrate)

    p = sub.add_parser(
        "checkpoints", help="list (or delete) a user's server checkpoints through the service",
        description="List the checkpoints of a user's server from the store, through the elastic "
                    "service (ELASTIC_SERVICE_URL, ELASTIC_TOKEN or JUPYTERHUB_API_TOKEN).")
    add_checkpoints_arguments(p)

    def checkpoints(args: argparse.Namespace) -> int:
        from elastic_spawner.service.commands import run_checkpoints

        return run_checkpoints(args)

    p.set_defaults(func=checkpoints)

    p = sub.add_parser(
        "service", help="run the elastic JupyterHub service (migrate API, metrics, retention)",
        description="Run the elastic JupyterHub service; its options pass through "
                    "(`elastic-spawner service --help-all` lists them). See docs/service.md.",
        add_help=False)
    p.add_argument("service_args", nargs="*", help=argparse.SUPPRESS)

    def service(args: argparse.Namespace) -> int:
        from elastic_spawner.service.app import main as service_main

        service_main([a for a in args.service_args if a != "--"])
        return 0

    p.set_defaults(func=service)


# name -> function adding the subparser(s).
SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "demo": _add_demo, "bench": _add_bench, "migrate": _add_service_commands,
}


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
    # `service` hands its options to the service's own (traitlets) parser, e.g.
    # `elastic-spawner service --drain --keep-checkpoints=10`: let them through.
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "service":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.service_args = [*extra, *args.service_args]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
