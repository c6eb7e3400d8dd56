"""Process state carried by value: what the session set that shipped variables do not bring back.

A restore re-runs the cells that set process state (`checkpointing.process_state_cells`), but not
one that cannot be re-run: the usual first cell imports, sets options and the environment, and
also makes an output directory (``os.makedirs('out', exist_ok=True)``), which is an effect. What
it set was then missing after the restore, with a warning. The checkpoint records the final
values of the parts that can be set again from plain data — environment variables the session
changed, the working directory, import paths it added, pandas options away from their defaults,
the decimal context —
in the manifest's ``environment["process"]``; the restore sets them after its re-runs, for
whatever the re-runs did not set already. Only what changed since monitoring started is
recorded: the restoring pod's own environment (host name, tokens) is left as it is.

Warning filters, logging handlers, other libraries' options and patched functions are not plain
data: a cell that set those and was not re-run is still named in a warning.

A library's object the session gave one of its values (``stats.norm.random_state = rng``: the
module-level distribution then draws from the notebook's generator) is recorded as the
statement and the name (`attachments`), when the library's attribute still is that variable's
object at checkpoint time; the restore makes the statement again with the restored object
(`reattach`). Re-running the cell was not enough: when the variable was shipped, the re-run
attached an earlier version that a cell before it re-made in passing, and the restore then bound
the loaded one to the name, so ``stats.norm`` drew from an orphan generator and ``rng`` was no
longer advanced by it, while everything verified.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
import warnings
from types import ModuleType
from typing import Any

from kernel_agent.effects import getcwd

log = logging.getLogger("kernel_agent")


class Baseline:
    """The process state when monitoring started: what a later capture is compared with."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.sys_path = [p for p in sys.path if isinstance(p, str)]
        self.cwd = getcwd()


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _pandas_options() -> dict[str, Any]:
    if "pandas" not in sys.modules:
        return {}
    cfg = sys.modules.get("pandas._config.config")
    if cfg is None:
        return {}
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated options warn when read
        for key, opt in list(cfg._registered_options.items()):
            try:
                value = cfg.get_option(key)
                if value != opt.defval and _plain(value):
                    out[key] = value
            except Exception:  # noqa: BLE001 - an option that cannot be read is left out
                continue
    return out


_DECIMAL_FIELDS = ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")


def _decimal_context() -> dict[str, Any]:
    """The decimal context of the kernel's thread where it differs from the one a new process
    starts with (`decimal.DefaultContext`): ``getcontext().prec = 12`` set in a cell that was
    not re-run left later cells computing with 28 digits after a restore."""
    decimal = sys.modules.get("decimal")
    if decimal is None:
        return {}
    ctx, default = decimal.getcontext(), decimal.DefaultContext
    out: dict[str, Any] = {f: getattr(ctx, f) for f in _DECIMAL_FIELDS
                           if getattr(ctx, f) != getattr(default, f)}
    traps = sorted(t.__name__ for t, on in ctx.traps.items() if on)
    if traps != sorted(t.__name__ for t, on in default.traps.items() if on):
        out["traps"] = traps
    return out


def _set_decimal_context(recorded: dict[str, Any]) -> list[str]:
    import decimal

    ctx = decimal.getcontext()
    done = []
    for f in _DECIMAL_FIELDS:
        if f in recorded and getattr(ctx, f) != recorded[f]:
            setattr(ctx, f, recorded[f])
            done.append(f)
    if "traps" in recorded:
        want = set(recorded["traps"])
        for t in list(ctx.traps):
            on = t.__name__ in want
            if bool(ctx.traps[t]) != on:
                ctx.traps[t] = on
                if "traps" not in done:
                    done.append("traps")
    return done


def capture(baseline: Baseline | None) -> dict[str, Any]:
    """What the session changed since `baseline`, as plain data (never raises)."""
    if baseline is None:
        return {}
    out: dict[str, Any] = {}
    try:
        now = dict(os.environ)
        changed = {k: v for k, v in now.items() if baseline.environ.get(k) != v}
        unset = sorted(k for k in baseline.environ if k not in now)
        if changed or unset:
            out["environ"] = {"set": dict(sorted(changed.items())), "unset": unset}
        start = set(baseline.sys_path)
        added = [p for p in sys.path if isinstance(p, str) and p not in start]
        if added:
            first = next((i for i, p in enumerate(sys.path) if p in start), len(sys.path))
            out["sys_path"] = {"front": [p for p in sys.path[:first] if p in added],
                               "back": [p for p in sys.path[first:] if p in added]}
        cwd = getcwd()
        if cwd and baseline.cwd and cwd != baseline.cwd:
            out["cwd"] = {"path": cwd, "relative": os.path.relpath(cwd, baseline.cwd)}
        options = _pandas_options()
        if options:
            out["pandas_options"] = options
        context = _decimal_context()
        if context:
            out["decimal_context"] = context
    except Exception:  # noqa: BLE001 - the checkpoint goes on without it
        log.exception("kernel_agent: could not capture the process state")
    return out


def apply(recorded: dict[str, Any], baseline: Baseline | None) -> list[str]:
    """Set what `recorded` holds where this process differs; returns what was set, by kind
    (for the restore's report). Never raises: what cannot be set is left as it is."""
    done: list[str] = []
    env = recorded.get("environ") or {}
    try:
        names = [k for k, v in (env.get("set") or {}).items() if os.environ.get(k) != v]
        for k in names:
            os.environ[k] = env["set"][k]
        gone = [k for k in env.get("unset") or () if k in os.environ]
        for k in gone:
            del os.environ[k]
        if names or gone:
            done.append("environment variables " + ", ".join(sorted(names + gone)))
    except Exception:  # noqa: BLE001
        log.exception("kernel_agent: could not set the environment")
    paths = recorded.get("sys_path") or {}
    try:
        front = [p for p in paths.get("front") or () if p not in sys.path]
        back = [p for p in paths.get("back") or () if p not in sys.path]
        sys.path[:0] = front
        sys.path.extend(back)
        if front or back:
            done.append("import paths " + ", ".join(front + back))
    except Exception:  # noqa: BLE001
        log.exception("kernel_agent: could not set the import path")
    cwd = recorded.get("cwd")
    if cwd:
        try:
            here = getcwd()
            start = baseline.cwd if baseline is not None and baseline.cwd else here
            for target in (cwd.get("path"), os.path.join(start or "", cwd.get("relative") or "")):
                if target and os.path.isdir(target):
                    if os.path.realpath(target) != os.path.realpath(here or ""):
                        os.chdir(target)
                        done.append(f"working directory {target}")
                    break
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not set the working directory")
    options = recorded.get("pandas_options") or {}
    if options:
        try:
            import pandas as pd

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                set_now = []
                for key, value in options.items():
                    try:
                        if pd.get_option(key) != value:
                            pd.set_option(key, value)
                            set_now.append(key)
                    except Exception:  # noqa: BLE001 - an option this pandas does not have
                        continue
            if set_now:
                done.append("pandas options " + ", ".join(set_now))
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not set pandas options")
    context = recorded.get("decimal_context") or {}
    if context:
        try:
            fields = _set_decimal_context(context)
            if fields:
                done.append("decimal context " + ", ".join(fields))
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not set the decimal context")
    return done


def _attribute_path(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``['a', 'b', 'c']``: Names and attributes only (no call, no subscript)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or not parts:
        return None
    parts.append(node.id)
    return parts[::-1]


def _resolve(ns: dict[str, Any], path: list[str]) -> Any:
    obj = ns[path[0]]
    for attr in path[1:]:
        obj = getattr(obj, attr)
    return obj


#: a line that may assign a plain name to an attribute (``a.b.c = name``): the cheap test
#: before a cell's code is parsed for `attached_objects`
_ATTRIBUTE_ASSIGNMENT = re.compile(r"(?m)^[ \t]*[A-Za-z_]\w*(?:[ \t]*\.[ \t]*[A-Za-z_]\w*)+"
                                   r"[ \t]*=[ \t]*[A-Za-z_]\w*[ \t]*(?:[;#].*)?$")


def _library_assignments(code: str, ns: dict[str, Any]) -> list[tuple[list[str], str]]:
    """(target path, value name) of the ``module.obj.attr = name`` statements of `code`
    rooted at a library module `ns` holds (not one of the notebook's own modules)."""
    if not code or not _ATTRIBUTE_ASSIGNMENT.search(code):
        return []
    from kernel_agent.changes import local_module

    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []  # (IPython syntax)
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.value, ast.Name)):
            continue
        path = _attribute_path(node.targets[0])
        if path is None:
            continue
        root = ns.get(path[0])
        if isinstance(root, ModuleType) and not local_module(root):
            out.append((path, node.value.id))
    return out


def attached_objects(code: str, ns: dict[str, Any]) -> list[tuple[str, Any]]:
    """(top-level package, object) for each of the notebook's values `code` gave a library's
    object (``stats.norm.random_state = rng``: ``('scipy', rng)``): a later cell using that
    library may change the object through it (`Monitor`). Never raises."""
    try:
        out = []
        for path, name in _library_assignments(code, ns):
            if name in ns and not isinstance(ns[name], ModuleType):
                package = str(getattr(ns[path[0]], "__name__", "")).partition(".")[0]
                out.append((package, ns[name]))
        return out
    except Exception:  # noqa: BLE001 - never raise into the monitor
        return []


def attachments(cells: Any, ns: dict[str, Any]) -> list[list[str]]:
    """``[target, name]`` of the statements ``module.obj.attr = name`` the recorded `cells`
    made (their code, parsed) whose target still is the object `name` holds: a library's
    object holding one of the notebook's (never raises; the last statement of a target wins).

    Only targets rooted at a library module the namespace holds (the notebook's own modules
    carry their globals themselves), and only a plain name as the value (what the library
    holds is that very object, which `reattach` gives it again)."""
    found: dict[str, str] = {}
    try:
        for cell in cells:
            for path, name in _library_assignments(getattr(cell, "code", "") or "", ns):
                found.pop(".".join(path), None)
                found[".".join(path)] = name
        out: list[list[str]] = []
        for target, name in found.items():
            value = ns.get(name)
            if name not in ns or isinstance(value, ModuleType):
                continue
            try:
                if _resolve(ns, target.split(".")) is value:
                    out.append([target, name])
            except Exception:  # noqa: BLE001 - a property that raises: not recorded
                continue
        return out
    except Exception:  # noqa: BLE001 - the checkpoint goes on without them
        log.exception("kernel_agent: could not record the library objects holding values")
        return []


def reattach(recorded: list[list[str]], ns: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Make each recorded ``target = name`` statement again where the target is not the
    restored object of `name`: (what was set, what could not be). Never raises."""
    done: list[str] = []
    failed: list[str] = []
    for item in recorded or ():
        try:
            target, name = item
            if name not in ns:
                continue  # (lost, and named so)
            path = target.split(".")
            if path[0] not in ns:
                failed.append(f"{target} = {name}: {path[0]} is not bound")
                continue
            parent = _resolve(ns, path[:-1])
            value = ns[name]
            if getattr(parent, path[-1], None) is value:
                continue
            setattr(parent, path[-1], value)
            if getattr(parent, path[-1]) is not value:
                failed.append(f"{target} = {name}: it does not hold {name} when set again")
                continue
            done.append(f"{target} = {name}")
        except Exception as e:  # noqa: BLE001 - named in the restore's warnings
            failed.append(f"{item!r}: {type(e).__name__}: {e}")
    return done, failed
