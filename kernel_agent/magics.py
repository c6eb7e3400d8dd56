"""`%checkpoint` and `%restore` line magics: the in-kernel contract for people at a notebook.

Runs in the kernel process. The magics print a short human summary and return nothing, so the
notebook shows what happened without a wall of JSON; the functions in `kernel_agent` return
the full dict for programs.
"""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@magics_class
class ElasticMagics(Magics):
    @magic_arguments()
    @argument("url", help="file:///abs/dir or s3://bucket/prefix")
    @argument("--deadline", type=float, default=None, help="seconds the checkpoint may take")
    @argument("--keep", type=int, default=None, help="keep only the last N checkpoints")
    @argument("--strategy", default="optimal", choices=["optimal", "ship-all", "recompute-all"],
              help="override the plan: ship everything, or recompute everything it can")
    @line_magic
    def checkpoint(self, line: str) -> None:
        """Checkpoint this session: %checkpoint file:///abs/dir [--deadline S] [--keep N]."""
        import kernel_agent

        args = parse_argstring(self.checkpoint, line)
        s = kernel_agent.checkpoint(
            args.url, deadline_s=args.deadline, keep_last=args.keep, strategy=args.strategy
        )
        if "skipped" in s:
            # re-run by a restore (a setting cell, as a magic is): it takes no checkpoint
            return
        print(
            f"checkpoint {s['checkpoint_id']}: shipped {len(s['shipped'])} variables "
            f"({_fmt_bytes(s['stats']['bytes_shipped'])}), will recompute "
            f"{len(s['recomputed'])} by re-running {len(s['rerun_cells'])} cells"
            + (f"; LOST: {s['lost']}" if s["lost"] else "")
        )

    @magic_arguments()
    @argument("url", help="file:///abs/dir or s3://bucket/prefix")
    @argument("--id", default=None, help="checkpoint id (default: the latest)")
    @argument("--force", action="store_true", help="overwrite existing variables")
    @line_magic
    def restore(self, line: str) -> None:
        """Restore a session: %restore file:///abs/dir [--id ID] [--force]."""
        import kernel_agent

        args = parse_argstring(self.restore, line)
        s = kernel_agent.restore(args.url, checkpoint_id=args.id, force=args.force)
        if "skipped" in s:
            return
        state = "verified equal" if s["verified"] else "NOT fully verified"
        print(
            f"restored {s['checkpoint_id']}: loaded {len(s['loaded'])} variables, recomputed "
            f"{len(s['recomputed'])} by re-running {len(s['rerun_cells'])} cells; {state}"
            + (f"; lost: {s['lost']}" if s["lost"] else "")
            + (f"; mismatched: {s['mismatched']}" if s["mismatched"] else "")
        )
        for w in s["warnings"]:
            print("warning:", w)


@magics_class
class BackgroundMagics(Magics):
    @magic_arguments()
    @argument("url", nargs="?", default=None, help="file:///abs/dir or s3://bucket/prefix, or 'off'")
    @argument("--interval", type=float, default=None, help="seconds idle before a round (0: off)")
    @argument("--keep", type=int, default=2, help="background checkpoints kept per store")
    @line_magic
    def checkpoint_background(self, line: str) -> None:
        """Background checkpoints: %checkpoint_background URL [--interval S] | off | (status)."""
        from kernel_agent.backgrounding import background

        args = parse_argstring(self.checkpoint_background, line)
        if args.url == "off":
            background(interval=0)
            print("background checkpoints off")
            return
        if args.url is None and args.interval is None:
            s = background()
        else:
            s = background(args.url, args.interval, keep=args.keep)
        if not s.get("enabled"):
            print("background checkpoints off")
            return
        print(
            f"background checkpoints to {s['url']} every {s['interval_s']:g}s idle: "
            f"{s['rounds_committed']} committed, {_fmt_bytes(s['bytes_uploaded'])} uploaded"
            + (f"; last error: {s['last_error']}" if s.get("last_error") else "")
        )
