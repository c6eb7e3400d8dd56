"""Code the benchmark runs *inside* each kernel: timing hooks, digests and the migration methods.

Loaded by file path (``importlib``) as the module ``_elastic_bench_probe``, so it never imports
``elastic_spawner`` (hub-side code) into a kernel and never adds a name to the user namespace:
whatever the harness does must not change the state it is measuring. Every entry point is called
from a *silent* execution, which IPython neither records in its history nor reports to
``pre_run_cell``/``post_run_cell`` hooks, so the agent (and Kishu) do not see the harness either.

Timing hooks bracket the monitoring tools. Stage 0 hooks are registered before the tool is
loaded and stage 1 hooks after it; IPython calls callbacks in registration order, so per cell:

    pre0 -> [tool pre_run_cell] -> pre1 -> cell -> post0 -> [tool post_run_cell] -> post1

``post1 - pre0`` is the cell as the user waits for it, and ``(pre1 - pre0) + (post1 - post0)``
is the time spent in the tool's hooks alone (a precise overhead figure, free of the run-to-run
noise that the with/without comparison has on a busy 2-core machine).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

#: names that belong to the harness or the tools, never to the notebook's state
HARNESS_NAMES = frozenset(
    {"In", "Out", "exit", "quit", "get_ipython", "kernel_agent", "dill", "kishu", "init_kishu"}
)

cells: list[dict[str, float]] = []
_cur: dict[str, float] = {}
last: Any = None


def _shell() -> Any:
    from IPython import get_ipython

    return get_ipython()


def _hook(tag: str) -> Any:
    def hook(*_: Any) -> None:
        _cur[tag] = time.perf_counter()
        if tag == "post1":
            cells.append(dict(_cur))
            _cur.clear()

    hook.__name__ = f"bench_{tag}"
    return hook


def install(stage: int) -> None:
    """Register the stage 0 (before the tool) or stage 1 (after the tool) timing hooks."""
    ip = _shell()
    ip.events.register("pre_run_cell", _hook(f"pre{stage}"))
    ip.events.register("post_run_cell", _hook(f"post{stage}"))


def timings() -> dict[str, float]:
    """Sum over recorded cells: total wall time, time in the tool's hooks, number of cells."""
    total = sum(c["post1"] - c["pre0"] for c in cells)
    hooks = sum((c["pre1"] - c["pre0"]) + (c["post1"] - c["post0"]) for c in cells)
    return {"total_s": total, "hooks_s": hooks, "cells": len(cells),
            "max_hook_s": max(((c["pre1"] - c["pre0"]) + (c["post1"] - c["post0"]) for c in cells),
                              default=0.0)}


def user_names() -> list[str]:
    """The notebook's variables: not ``_``-prefixed, not IPython's own, not the tools'.

    Stricter than the agent's ``Monitor.user_names`` on one point: a name IPython hides is never
    compared, even when rebound. dill's ``load_module`` rebinds IPython's own ``open`` to an
    unpickled copy, which is not the notebook's state; no benchmark notebook rebinds a hidden name.
    """
    ip = _shell()
    ns, hidden = ip.user_ns, ip.user_ns_hidden
    return sorted(k for k in list(ns)
                  if not k.startswith("_") and k not in HARNESS_NAMES and k not in hidden)


def digest() -> dict[str, Any]:
    """Whole-state digest (values and aliasing across variables) plus one digest per variable.

    The whole digest decides "restored correctly"; the per-variable ones say *which* variable
    broke. When only the whole digest differs, the breakage is in the aliasing between variables.
    """
    from kernel_agent.changes import digest_report, value_digest

    ns = _shell().user_ns
    names = user_names()
    report = digest_report({n: ns[n] for n in names})
    per = {}
    for n in names:
        try:
            per[n] = value_digest({n: ns[n]})
        except Exception as e:  # noqa: BLE001 - reported as a mismatch, by name
            per[n] = f"error:{type(e).__name__}"
    return {"all": report.digest, "vars": per, "opaque": sorted(report.opaque)}


def call(fn: str, *args: Any, **kwargs: Any) -> None:
    """Run one entry point and keep its JSON-able result in `last` (read back silently)."""
    global last
    last = None
    last = globals()[fn](*args, **kwargs)


def result_json() -> str:
    return json.dumps(last)


# --------------------------------------------------------------------------------------------
# ours
# --------------------------------------------------------------------------------------------


def load_agent() -> dict[str, Any]:
    """``%load_ext kernel_agent``: start monitoring (between the stage 0 and stage 1 hooks)."""
    t0 = time.perf_counter()
    _shell().extension_manager.load_extension("kernel_agent")
    return {"wall_s": time.perf_counter() - t0}


def ours_checkpoint(url: str, strategy: str = "optimal", reuse: bool = True) -> dict[str, Any]:
    import kernel_agent

    t0 = time.perf_counter()
    summary = kernel_agent.checkpoint(url, strategy=strategy, reuse=reuse)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def ours_restore(url: str) -> dict[str, Any]:
    """Load the agent and restore; the agent's import is part of what a restore costs."""
    t0 = time.perf_counter()
    ip = _shell()
    ip.extension_manager.load_extension("kernel_agent")
    import kernel_agent

    summary = kernel_agent.restore(url)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------------------------
# dill: dump everything / load everything, shipped through the same store as ours
# --------------------------------------------------------------------------------------------


def _store(url: str) -> Any:
    from kernel_agent.store import open_store

    return open_store(url)


def dill_dump(url: str) -> dict[str, Any]:
    """``dill.dump_module`` of ``__main__`` into memory, then one blob into the store."""
    t0 = time.perf_counter()
    import dill

    buf = io.BytesIO()
    dill.dump_module(buf)
    dump_s = time.perf_counter() - t0
    view = buf.getbuffer()
    t1 = time.perf_counter()
    ref = _store(url).put_blob([view])
    upload_s = time.perf_counter() - t1
    n = len(view)
    del view
    return {"key": ref.key, "bytes": n, "dump_s": dump_s, "upload_s": upload_s,
            "wall_s": time.perf_counter() - t0}


def dill_load(url: str, key: str, size: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    import dill

    data = _store(url).get_blob(key, size)
    fetch_s = time.perf_counter() - t0
    dill.load_module(io.BytesIO(data))
    del data
    return {"fetch_s": fetch_s, "wall_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# Kishu (kishu on PyPI): per-cell commits into <notebook>.kishudb, checkout in a fresh kernel
# --------------------------------------------------------------------------------------------


def kishu_init() -> dict[str, Any]:
    """``init_kishu`` for the notebook named by TEST_NOTEBOOK_PATH (Kishu's headless mode)."""
    t0 = time.perf_counter()
    from kishu import init_kishu

    init_kishu(os.environ["TEST_NOTEBOOK_PATH"])
    return {"wall_s": time.perf_counter() - t0}


def kishu_commit() -> dict[str, Any]:
    """An explicit commit: what a migration would ask Kishu for before moving the session."""
    t0 = time.perf_counter()
    kishu = _shell().user_ns["_kishu"]
    commit_id = str(kishu.commit("benchmark migration"))
    return {"commit_id": commit_id, "wall_s": time.perf_counter() - t0}


def kishu_checkout(commit_id: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from kishu import init_kishu

    init_kishu(os.environ["TEST_NOTEBOOK_PATH"])
    kishu = _shell().user_ns["_kishu"]
    kishu.checkout(commit_id, skip_notebook=True)
    return {"wall_s": time.perf_counter() - t0}


def file_copy_to_store(url: str, path: str) -> dict[str, Any]:
    """Ship a file (Kishu's database) through a store: Kishu itself only writes a local file."""
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    ref = _store(url).put_blob([data])
    return {"key": ref.key, "bytes": len(data), "wall_s": time.perf_counter() - t0}


def file_copy_from_store(url: str, key: str, size: int, path: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = _store(url).get_blob(key, size)
    with open(path, "wb") as f:
        f.write(data)
    return {"wall_s": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# raw sequential write (the throughput reference for the large-state notebook)
# --------------------------------------------------------------------------------------------


def raw_write(directory: str, names: list[str]) -> dict[str, Any]:
    """Write the raw buffers of `names` sequentially to one file and fsync, as a plain copy would.

    The file store fsyncs its blobs too, so both sides pay for durability.
    """
    import numpy as np

    ns = _shell().user_ns
    path = os.path.join(directory, "raw-write.bin")
    nbytes = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for n in names:
            mv = memoryview(np.ascontiguousarray(ns[n])).cast("B")
            while mv:
                written = os.write(fd, mv[: 64 << 20])
                mv = mv[written:]
                nbytes += written
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    os.unlink(path)
    return {"bytes": nbytes, "wall_s": dt, "Bps": nbytes / dt if dt else 0.0}


def array_names() -> list[str]:
    import numpy as np

    ns = _shell().user_ns
    return [n for n in user_names() if isinstance(ns[n], np.ndarray)]



# --------------------------------------------------------------------------------------------
# import floor: what any restore into a fresh kernel pays before it holds a single object
# --------------------------------------------------------------------------------------------


def state_modules() -> list[str]:
    """Modules defining the state's objects: the variables' types and, one level down, the
    types of what containers and instances hold, plus the variables that are modules, classes
    or functions themselves. Every method that rebuilds this state in a fresh kernel (loading,
    re-running, Kishu's checkout) has to import at least these."""
    import types

    ns = _shell().user_ns
    found: set[str] = set()

    def note(obj: Any) -> None:
        if isinstance(obj, types.ModuleType):
            found.add(obj.__name__)
            return
        found.add(getattr(type(obj), "__module__", None) or "")
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            found.add(getattr(obj, "__module__", None) or "")

    for n in user_names():
        v = ns[n]
        note(v)
        try:
            if isinstance(v, dict):
                inner = list(v.values())[:1000]
            elif isinstance(v, (list, tuple, set, frozenset)):
                inner = list(v)[:1000]
            else:
                inner = list(getattr(v, "__dict__", {}).values())[:1000]
        except Exception:  # noqa: BLE001 - an odd object: its own type is noted already
            inner = []
        for x in inner:
            note(x)
    return sorted(m for m in found
                  if m and m not in ("builtins", "__main__") and m in sys.modules)


def import_floor(modules: list[str]) -> dict[str, Any]:
    """Import `modules` in this (fresh, tool-less) kernel: a lower bound of any restore's time."""
    import importlib

    t0 = time.perf_counter()
    failed = []
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception:  # noqa: BLE001 - a module the notebook made (a class defined in a cell)
            failed.append(m)
    return {"wall_s": time.perf_counter() - t0, "failed": failed}


if __name__ == "__main__":  # pragma: no cover
    sys.exit("this module runs inside a benchmark kernel")
