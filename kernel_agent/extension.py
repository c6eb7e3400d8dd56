"""`%load_ext kernel_agent`: start monitoring this kernel (and expose the monitor to the engine).

Runs inside the user's ipykernel process. Loading is idempotent: one `Monitor` per shell, however
often the extension is loaded (by the user, by the server extension's `extra_extensions`, or by
`kernel_agent.restore`). The `%checkpoint` / `%restore` magics are registered here too.
"""

from __future__ import annotations

import json
import logging
import weakref
from typing import Any

from kernel_agent.monitor import Monitor

log = logging.getLogger("kernel_agent")

_monitors: weakref.WeakKeyDictionary[Any, Monitor] = weakref.WeakKeyDictionary()


def _log_to_the_kernel_log() -> None:
    """Send the agent's warnings where the kernel's own log goes, never into a cell's output.

    With no handler on the way, `logging` falls back to writing to ``sys.stderr``, which
    ipykernel forwards to whichever cell is running at that moment, even from a background
    thread. IPKernelApp's handlers write to the kernel process's original stderr (the Jupyter
    server's log): the agent uses those. Outside such a kernel, or once the user configured
    logging for `kernel_agent`, nothing is changed.
    """
    if log.handlers:
        return
    try:
        from ipykernel.kernelapp import IPKernelApp
    except ImportError:
        return
    if IPKernelApp.initialized():
        for h in IPKernelApp.instance().log.handlers:
            log.addHandler(h)


def load_ipython_extension(ip: Any) -> None:
    """Start monitoring `ip` (no-op if it is already monitored)."""
    _log_to_the_kernel_log()
    mon = _monitors.get(ip)
    if mon is None:
        mon = Monitor(ip)
        _monitors[ip] = mon
    mon.register()
    try:
        from kernel_agent.magics import ElasticMagics

        ip.register_magics(ElasticMagics)
        from kernel_agent.magics import BackgroundMagics

        ip.register_magics(BackgroundMagics)
    except Exception:  # noqa: BLE001 - monitoring works without the magics
        log.exception("kernel_agent: could not register the %%checkpoint/%%restore magics")
    try:
        from kernel_agent import backgrounding as background

        background.autostart(ip)  # ELASTIC_BACKGROUND_INTERVAL / ELASTIC_BACKGROUND_URL
    except Exception:  # noqa: BLE001 - monitoring works without background checkpoints
        log.exception("kernel_agent: could not start background checkpoints")


def unload_ipython_extension(ip: Any) -> None:
    """Stop monitoring `ip` and forget its history."""
    mon = _monitors.pop(ip, None)
    if mon is not None:
        mon.unregister()
    from kernel_agent import backgrounding as background

    background.stop(ip)


def get_monitor(shell: Any = None) -> Monitor | None:
    """The monitor of `shell` (default: the running IPython), or None if not loaded."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            return None
    return _monitors.get(shell)


def history_json(shell: Any = None) -> str:
    """The history graph as JSON (for tests and debugging: `kernel.value(...)` reads it)."""
    mon = get_monitor(shell)
    return json.dumps(mon.graph.to_dict() if mon is not None else None)


def history(shell: Any = None) -> dict | None:
    """The history graph as plain data (`HistoryGraph.to_dict()`), or None if not monitoring."""
    mon = get_monitor(shell)
    return mon.graph.to_dict() if mon is not None else None
