"""What the checkpointed state depends on: Python and the versions of the libraries of its objects.

Runs in the kernel process. A pickle of a pandas frame written with one pandas may not load, or
may load wrong, with another; recording the versions lets a restore on a different image warn and
prefer re-running cells for the affected variables.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import Any


def _version(top_module: str, *, import_it: bool = False) -> str | None:
    """The installed version of a top-level package, cheapest source first.

    The module's own ``__version__`` (a restore imports the module anyway to unpickle its
    objects), then the distribution of the same name.
    """
    mod = sys.modules.get(top_module)
    if mod is None and import_it:
        try:
            mod = importlib.import_module(top_module)
        except Exception:  # noqa: BLE001 - missing here: reported as a difference
            return None
    v = getattr(mod, "__version__", None)
    if isinstance(v, str):
        return v
    from importlib import metadata  # not at import time: it costs a restore ~40 ms up front

    try:
        return metadata.version(top_module)
    except (metadata.PackageNotFoundError, ValueError):
        # unknown rather than scanning every installed distribution (seconds, worse on a
        # cold file cache at restore); a package without a version is compared as None
        return None


def top_modules(value: Any) -> set[str]:
    """Top-level packages whose code defines `value` (its type, or the module itself)."""
    if isinstance(value, ModuleType):
        name = value.__name__
    else:
        name = getattr(type(value), "__module__", None) or ""
    top = name.split(".", 1)[0]
    if not top or top in ("builtins", "__main__") or top in sys.stdlib_module_names:
        return set()
    return {top}


def capture(values: Iterable[Any]) -> dict:
    """Python version plus {package: version} for the libraries the given values come from."""
    packages: dict[str, str | None] = {}
    for v in values:
        try:
            for top in top_modules(v):
                if top not in packages:
                    packages[top] = _version(top)
        except Exception:  # noqa: BLE001 - a hostile object must not break the checkpoint
            continue
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "packages": dict(sorted(packages.items())),
        "hash_seed": os.environ.get("PYTHONHASHSEED"),  # None: random per process
    }


def hash_seed_note(recorded: dict) -> str | None:
    """Why a re-run cell may see sets of strings in another order here, or None if it cannot.

    A re-run iterates a set of strings in hash order, which depends on ``PYTHONHASHSEED``: the
    same only when both kernels were started with the same fixed seed.
    """
    if "hash_seed" not in recorded:
        return None  # written before the seed was recorded
    then, now = recorded.get("hash_seed"), os.environ.get("PYTHONHASHSEED")
    if then is not None and then == now and then != "random":
        return None
    return (f"string hashing differs from the checkpointed kernel's (PYTHONHASHSEED "
            f"{then or 'random'} there, {now or 'random'} here), so a re-run cell that iterates a "
            "set of strings can order it differently; start kernels with one fixed PYTHONHASHSEED "
            "(the server extension does: KernelAgentApp.kernel_hash_seed)")


def differences(recorded: dict) -> dict[str, tuple[str | None, str | None]]:
    """Packages whose installed version differs from the recorded one: {pkg: (then, now)}."""
    out: dict[str, tuple[str | None, str | None]] = {}
    for pkg, then in (recorded.get("packages") or {}).items():
        now = _version(pkg, import_it=True)
        if now != then:
            out[pkg] = (then, now)
    py_then = recorded.get("python")
    if py_then and py_then.rsplit(".", 1)[0] != platform.python_version().rsplit(".", 1)[0]:
        out["python"] = (py_then, platform.python_version())
    return out
