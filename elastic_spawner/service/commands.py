"""`elastic-spawner migrate` and `elastic-spawner checkpoints`: the service's API in a terminal.

Runs in the user's shell (the `elastic-spawner` console script registers these through
`elastic_spawner.cli`). Progress bars and tables with rich; errors are one line saying what to
fix, and the exit status says how it went: 0 verified / done, 1 migrated but not verified,
2 refused or failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from elastic_spawner.service.client import ServiceClient, ServiceError, split_target

POLL_S = 0.5


def add_migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="USER[/SERVER]",
                   help="whose server: alice (default server) or alice/gpu (a named server)")
    p.add_argument("--node", metavar="NAME", help="start it on this node")
    p.add_argument("--node-selector", metavar="K=V", action="append", default=[],
                   help="start it on a node with this label (repeatable)")
    p.add_argument("--cpu", metavar="N", help="new CPU size, e.g. 4 or 500m (a resize)")
    p.add_argument("--memory", metavar="SIZE", help="new memory size, e.g. 16G or 512Mi (a resize)")
    p.add_argument("--reason", default="", help="recorded in the migration history")
    p.add_argument("--accept-lost", action="store_true",
                   help="move the server even when its checkpoint cannot restore some variables "
                        "(they are named in the record); by default it is not stopped")
    p.add_argument("--no-wait", action="store_true",
                   help="print the migration id and return at once")
    _add_common(p)


def add_checkpoints_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="USER[/SERVER]",
                   help="whose checkpoints: alice (default server) or alice/gpu")
    p.add_argument("--delete", metavar="ID", help="delete this checkpoint")
    p.add_argument("--force", action="store_true",
                   help="with --delete: also when it is the one the next start restores")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service-url", metavar="URL",
                   help="the service, e.g. https://hub.example.org/services/elastic/ "
                        "(default: $ELASTIC_SERVICE_URL)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def _err(message: str) -> int:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return 2


def run_migrate(args: argparse.Namespace) -> int:
    try:
        client = ServiceClient(args.service_url)
        user, server = split_target(args.target)
        body: dict[str, Any] = {}
        for key in ("node", "cpu", "memory", "reason"):
            if getattr(args, key):
                body[key] = getattr(args, key)
        if args.node_selector:
            body["node_selector"] = list(args.node_selector)
        if args.accept_lost:
            body["accept_lost"] = True
        resize = bool(args.cpu or args.memory)
        rec = client.migrate(user, server, body, resize=resize)
    except ServiceError as e:
        return _err(str(e))
    if args.no_wait:
        print(json.dumps(rec) if args.json else rec["id"])
        return 0
    try:
        rec = _follow(client, rec, quiet=args.json)
    except ServiceError as e:
        return _err(f"{e} (the migration {rec['id']} goes on in the service)")
    except KeyboardInterrupt:
        print(f"\nstopped following; migration {rec['id']} goes on in the service", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(rec, indent=1))
    else:
        _summary(rec)
    return {"verified": 0, "unverified": 1}.get(rec.get("outcome") or "", 2)


def _follow(client: ServiceClient, rec: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Poll the migration until it ends, with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    label = f"{rec['user']}/{rec['server']}".rstrip("/")
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[label]}"), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=quiet, transient=False) as progress:
        task = progress.add_task(rec["phase"], total=100, label=label)
        while True:
            last = (rec.get("events") or [{}])[-1].get("message", "")
            progress.update(task, completed=rec.get("progress", 0),
                            description=f"{rec['phase']}: {last}"[:80])
            if rec.get("finished"):
                return rec
            time.sleep(POLL_S)  # bounded by the service's own timeouts
            rec = client.migration(rec["id"])


def _summary(rec: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    outcome = rec.get("outcome")
    color = {"verified": "green", "unverified": "yellow"}.get(outcome or "", "red")
    label = f"{rec['user']}/{rec['server']}".rstrip("/")
    console.print(f"[bold {color}]{(outcome or '?').upper()}[/]: migration {rec['id']} of {label}"
                  + (f" ({rec['reason']})" if rec.get("reason") else ""), highlight=False)
    if rec.get("error"):
        console.print(f"  {rec['error']}", highlight=False)
    if rec.get("node_before") or rec.get("node_after"):
        console.print(f"  node {rec.get('node_before') or '?'} -> {rec.get('node_after') or '?'}",
                      highlight=False)
    d, s = rec.get("durations") or {}, rec.get("stats") or {}
    if d:
        console.print("  " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in d.items()),
                      highlight=False)
    if s:
        console.print(f"  shipped {s.get('shipped', 0)} variable(s) "
                      f"({_size(s.get('bytes_shipped', 0))}, {_size(s.get('bytes_uploaded', 0))} "
                      f"uploaded), recomputed {s.get('recomputed', 0)}, lost {s.get('lost', 0)}",
                      highlight=False)
    if rec.get("kernels"):
        t = Table("notebook", "status", "verified", "loaded", "recomputed")
        for k in rec["kernels"]:
            t.add_row(str(k.get("path") or "-"), str(k.get("status") or k.get("checkpoint")),
                      str(k.get("verified", "-")), str(k.get("loaded", "-")),
                      str(k.get("recomputed", "-")))
        console.print(t)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run_checkpoints(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    try:
        client = ServiceClient(args.service_url)
        user, server = split_target(args.target)
        if args.delete:
            res = client.delete_checkpoint(user, server, args.delete, force=args.force)
            if args.json:
                print(json.dumps(res))
            else:
                print(f"deleted {res['deleted']} ({len(res['kernel_checkpoints'])} kernel "
                      "checkpoint(s); blobs are collected by retention after the grace period)")
            return 0
        data = client.checkpoints(user, server)
    except ServiceError as e:
        if e.reason == "restores-next":
            return _err(f"{e}".replace("Add ?force=1", "Add --force"))
        return _err(str(e))
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    label = f"{user}/{server}".rstrip("/")
    if not data["checkpoints"]:
        print(f"{label} has no checkpoints in {data['store']}")
        return 0
    t = Table("id", "created", "complete", "notebooks", "size", "", title=f"{label}: {data['store']}")
    for c in data["checkpoints"]:
        lost = sum(len(k.get("lost") or {}) for k in c["kernels"])
        t.add_row(c["id"], c["created"], "yes" if c["complete"] else f"no ({lost} lost)" if lost else "no",
                  ", ".join(str(k.get("path") or "-") for k in c["kernels"]), _size(c["size"]),
                  "restores next" if c.get("restores_next") else "")
    Console().print(t)
    return 0
