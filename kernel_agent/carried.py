"""Process state carried by value: what the session set that shipped variables do not bring back.

A restore re-runs the cells that set process state (`checkpointing.process_state_cells`), but not
one that cannot be re-run: the usual first cell imports, sets options and the environment, and
also makes an output directory (``os.makedirs('out', exist_ok=True)``), which is an effect. What
it set was then missing after the restore, with a warning. The checkpoint records the final
values of the parts that can be set again from plain data — environment variables the session
changed, the working directory, import paths it added, pandas options away from their defaults,
the decimal context, the warning filters, numpy's error handling and print options, the
recursion limit, ``int_max_str_digits``, the garbage collector's switch and thresholds,
matplotlib's rcParams, and torch's default dtype, grad mode, deterministic and anomaly modes and
print options — in the manifest's ``environment["process"]``; the restore sets them
after its re-runs, for whatever the re-runs did not set already. Only what changed since
monitoring started is recorded: the restoring pod's own environment (host name, tokens, its
``-W`` options) is left as it is. The warning filters, numpy, interpreter and matplotlib parts
are recorded whole (against the baseline): a setting not recorded is set back to the restoring
kernel's baseline, which undoes a re-run cell's setting that a cell not re-run had undone.

A filter's warning class of the notebook's own is a notebook value: it is looked up in the
restored namespace, unless the session had bound its name to another class since (then the
filter is named, not bound to the wrong class). numpy's formatter and error callback are
functions, the matplotlib backend is the restored kernel's own; these, logging handlers, other
libraries' options and patched functions are not carried: a cell that set those and was not
re-run is still named in a warning, and so is what the record holds but could not be set.

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
import gc
import json
import logging
import operator
import os
import re
import sys
import warnings
from collections.abc import Callable
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
        self.warning_filters = list(warnings.filters)  # (the tuples: compared by identity)
        self._warning_digest: str | None = None
        now = _numpy_now()
        self.numpy: tuple[dict, dict] | None = now[:2] if now is not None else None
        self.interpreter = _interpreter_now()

    def warning_digest(self) -> str:
        """A digest of the baseline's filters as plain data (made once, at checkpoint time)."""
        if self._warning_digest is None:
            plains = []
            for f in self.warning_filters:
                try:
                    plains.append(_filter_plain(f))
                except Exception:  # noqa: BLE001
                    plains.append({"odd": repr(f)})
            self._warning_digest = _digest(plains)
        return self._warning_digest


def _plain(value: Any) -> bool:
    if value is None or type(value) in (str, int, bool):
        return True
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
    # the status flags an operation raised (``Decimal(1) / 7`` sets Inexact and Rounded):
    # sticky until cleared, and read by code that checks whether a result was rounded
    flags = sorted(t.__name__ for t, on in ctx.flags.items() if on)
    if flags:
        out["flags"] = flags
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
        _set_signals(ctx.traps, recorded["traps"], "traps", done)
    _set_signals(ctx.flags, recorded.get("flags", ()), "flags", done)
    return done


def _set_signals(signals: dict, names: Any, what: str, done: list[str]) -> None:
    """Turn on exactly the signals named in `names` (traps, or status flags) of a decimal
    context's `signals`; `what` goes into `done` if any changed."""
    want = set(names)
    for t in list(signals):
        on = t.__name__ in want
        if bool(signals[t]) != on:
            signals[t] = on
            if what not in done:
                done.append(what)


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
    # (each recorded whole, not only when it differs from the baseline: where nothing is
    # recorded for a setting the restore sets it back to its own baseline, as a cell not
    # re-run that undid a re-run cell's setting left it)
    for key, part in (("warnings", _warning_filters), ("numpy", _numpy_state),
                      ("interpreter", _interpreter_changes), ("matplotlib", _matplotlib_part),
                      ("torch", _torch_state)):
        try:
            value = part(baseline)
            if value is not None:
                out[key] = value
        except Exception:  # noqa: BLE001 - the checkpoint goes on without it
            log.exception("kernel_agent: could not capture %s", key)
    return out


def _interpreter_changes(baseline: Baseline) -> dict[str, Any]:
    now = _interpreter_now()
    return {k: v for k, v in now.items() if baseline.interpreter.get(k) != v}


def _matplotlib_part(baseline: Baseline) -> dict[str, Any] | None:
    return _matplotlib_state()


def apply(recorded: dict[str, Any], baseline: Baseline | None, ns: dict | None = None,
          missed: list[str] | None = None) -> list[str]:
    """Set what `recorded` holds where this process differs; returns what was set, by kind
    (for the restore's report), and adds to `missed` what the session had set that is still
    not in place (a filter whose warning class was not restored, numpy's formatter
    functions). `ns`: the notebook's namespace (its own warning classes). Never raises: what
    cannot be set is left as it is."""
    done: list[str] = []
    missed = missed if missed is not None else []
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
    # (warning filters last: setting the options before them may warn)
    setters: tuple[tuple[str, str, Callable[[Any], str | None]], ...] = (
        ("interpreter", "the interpreter's settings", lambda r: _set_interpreter(r, baseline)),
        ("numpy", "numpy's error handling and print options",
         lambda r: _set_numpy(r, baseline, missed)),
        ("matplotlib", "matplotlib rcParams", lambda r: _set_matplotlib(r, missed)),
        ("torch", "torch's default dtype, grad mode and print options", _set_torch),
        ("warnings", "warning filters", lambda r: _set_warning_filters(r, baseline, ns, missed)),
    )
    for key, label, setter in setters:
        rec = recorded.get(key)
        if rec is None:
            continue
        try:
            what = setter(rec)
            if what:
                done.append(what)
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not set %s", label)
            missed.append(label)
    return done


# -- warning filters, numpy, the interpreter, matplotlib -------------------------------------


def _pattern(p: Any) -> Any:
    """A filter's message or module: None, an exact text (Python's own defaults), or a regex."""
    if p is None:
        return None
    if isinstance(p, str):
        return {"text": p}
    if isinstance(getattr(p, "pattern", None), str) and isinstance(getattr(p, "flags", None), int):
        return {"re": p.pattern, "flags": p.flags}
    raise TypeError(f"not a pattern: {type(p).__name__}")


def _unpattern(p: Any) -> Any:
    if p is None:
        return None
    if "text" in p:
        return p["text"]
    return re.compile(p["re"], p["flags"])


def _resolve_class(module: str, qualname: str, ns: dict | None, load: bool) -> Any:
    """The class named `module`.`qualname`, or None. ``__main__``: the notebook's namespace."""
    if module == "__main__" and ns is not None:
        parts = qualname.split(".")
        obj: Any = ns.get(parts[0])
        rest = parts[1:]
    else:
        obj = sys.modules.get(module)
        if obj is None and load and module != "__main__":
            import importlib

            obj = importlib.import_module(module)
        rest = qualname.split(".")
    for part in rest:
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _filter_plain(f: Any, ns: dict | None = None) -> dict:
    """A warning filter as plain data (raises TypeError for one that is not a 5-tuple of the
    usual kinds). The category is named by module and qualified name; ``bound`` is False when
    that name no longer leads to it (a class redefined since, or made in a function)."""
    action, message, category, module, lineno = f
    if not isinstance(category, type) or not isinstance(action, str) or type(lineno) is not int:
        raise TypeError("an odd warning filter")
    out = {"action": action, "message": _pattern(message),
           "category": [category.__module__, category.__qualname__], "module": _pattern(module),
           "lineno": lineno}
    try:
        bound = _resolve_class(category.__module__, category.__qualname__, ns, load=False) is category
    except Exception:  # noqa: BLE001
        bound = False
    if not bound:
        out["bound"] = False
    return out


def _filter_key(plain: dict) -> str:
    return json.dumps({k: v for k, v in plain.items() if k != "bound"}, sort_keys=True)


def _filter_text(plain: dict) -> str:
    """-W syntax: ``ignore::RuntimeWarning``."""
    def pat(p: Any) -> str:
        return "" if p is None else p.get("text", p.get("re", ""))

    mod, qual = plain["category"]
    cat = qual if mod == "builtins" else f"{mod}.{qual}"
    parts = [plain["action"], pat(plain["message"]), cat, pat(plain["module"]),
             str(plain["lineno"]) if plain["lineno"] else ""]
    while parts and not parts[-1]:
        parts.pop()
    return ":".join(parts)


def _main_ns() -> dict | None:
    main = sys.modules.get("__main__")
    return getattr(main, "__dict__", None)


def _lcs(a: list, b: list) -> dict[int, int]:
    """A longest common subsequence of `a` and `b` (by equality): index in `b` -> in `a`."""
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if a[i] == b[j]
                           else max(table[i + 1][j], table[i][j + 1]))
    i = j = 0
    out: dict[int, int] = {}
    while i < n and j < m:
        if a[i] == b[j]:
            out[j] = i
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _matching(a: list, b: list) -> dict[int, int]:
    """`_lcs` after the common tail (the baseline's entries usually end the list), bounded:
    past a quarter million cells of the table (a library adding a filter per call) the rest
    is matched greedily, which still gives a common subsequence."""
    n, m = len(a), len(b)
    k = 0
    while k < min(n, m) and a[n - 1 - k] == b[m - 1 - k]:
        k += 1
    out = {m - 1 - t: n - 1 - t for t in range(k)}
    ra, rb = a[:n - k], b[:m - k]
    if len(ra) * len(rb) <= 250_000:
        out.update(_lcs(ra, rb))
        return out
    i = 0
    for j, key in enumerate(rb):
        at = next((x for x in range(i, len(ra)) if ra[x] == key), None)
        if at is not None:
            out[j] = at
            i = at + 1
    return out


def _key_of(f: Any) -> str:
    try:
        return _filter_key(_filter_plain(f))
    except Exception:  # noqa: BLE001 - an odd entry: by its text
        return "odd:" + repr(f)


def _digest(plains: list[dict]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([_filter_key(p) for p in plains]).encode()).hexdigest()[:16]


def _warning_filters(baseline: Baseline) -> dict[str, Any]:
    """The session's filter list against the baseline's: each entry either the index of a
    baseline entry kept (in a longest common subsequence) or the entry as plain data; and a
    digest of the baseline, so that a restore whose own baseline differs keeps its own."""
    base, now = baseline.warning_filters, list(warnings.filters)
    if len(base) == len(now) and all(map(operator.is_, base, now)):
        return {"filters": [{"baseline": i} for i in range(len(base))],
                "baseline_digest": baseline.warning_digest()}
    ns = _main_ns()
    base_keys = [_key_of(f) for f in base]
    plains: list[dict | None] = []
    for f in now:
        try:
            plains.append(_filter_plain(f, ns))
        except Exception:  # noqa: BLE001 - not plain data: named, not carried
            plains.append(None)
    now_keys = [_filter_key(p) if p is not None else "odd:" + repr(f)
                for p, f in zip(plains, now, strict=True)]
    j_base = _matching(base_keys, now_keys)
    out: list[dict] = []
    odd: list[str] = []
    for j, p in enumerate(plains):
        if j in j_base:
            out.append({"baseline": j_base[j]})
        elif p is None:
            odd.append(repr(now[j])[:200])
        else:
            out.append(p)
    rec: dict[str, Any] = {"filters": out, "baseline_digest": baseline.warning_digest()}
    if odd:
        rec["not_plain"] = odd
    return rec


def _set_warning_filters(rec: dict, baseline: Baseline | None, ns: dict | None,
                         missed: list[str]) -> str | None:
    """The session's filter list again, in its order and with its duplicates: baseline entries
    from this kernel's own baseline (all of them where it differs from the recorded one), the
    others reused from the current list where a re-run cell made them (the notebook's own
    warning classes), else made from their plain data. Filters the current list has beyond
    these (a re-run cell's that the session removed later) are dropped: the session's list is
    the truth."""
    current = list(warnings.filters)
    base = list(baseline.warning_filters) if baseline is not None else []
    same_base = baseline is not None and rec.get("baseline_digest") == baseline.warning_digest()
    pool: dict[str, list] = {}
    for f in current:
        try:
            pool.setdefault(_filter_key(_filter_plain(f)), []).append(f)
        except Exception:  # noqa: BLE001
            continue
    target: list = []
    added: list[str] = []
    base_placed = False
    for item in rec.get("filters") or ():
        if "baseline" in item:
            if same_base:
                i = item["baseline"]
                if 0 <= i < len(base):
                    target.append(base[i])
            elif not base_placed:
                target.extend(base)
                base_placed = True
            continue
        key = _filter_key(item)
        if pool.get(key):
            target.append(pool[key].pop(0))
            continue
        text = _filter_text(item)
        if item.get("bound") is False:
            missed.append(f"warning filter {text} (its category class is no longer bound "
                          "under its name)")
            continue
        try:
            category = _resolve_class(*item["category"], ns, load=True)
        except Exception:  # noqa: BLE001
            category = None
        if category is None:
            missed.append(f"warning filter {text} (its category class was not restored)")
            continue
        target.append((item["action"], _unpattern(item["message"]), category,
                       _unpattern(item["module"]), item["lineno"]))
        added.append(text)
    for odd in rec.get("not_plain") or ():
        missed.append(f"warning filter {odd} (not plain data)")
    if len(target) == len(current) and all(a == b for a, b in zip(target, current, strict=True)):
        return None
    _set_filters(target)
    return "warning filters " + (", ".join(added) if added else "(order and removals)")


def _set_filters(target: list) -> None:
    """`warnings.filters` becomes `target` (in place), and the caches of warnings already
    shown are invalidated, as `filterwarnings` does."""
    mutated = getattr(warnings, "_filters_mutated", None)
    held = getattr(warnings, "_filters_mutated_lock_held", None)
    lock = getattr(warnings, "_lock", None)
    if mutated is not None:
        warnings.filters[:] = target
        mutated()
    elif held is not None and lock is not None:  # (Python >= 3.14)
        with lock:
            warnings.filters[:] = target
            held()
    else:  # (public calls only: resetting invalidates the caches)
        warnings.resetwarnings()
        warnings.filters[:] = target


#: numpy's error handling and print options as importing it sets them (procstate's)
def _numpy_defaults() -> tuple[dict, dict]:
    from kernel_agent.procstate import _NUMPY_DEFAULTS

    return dict(_NUMPY_DEFAULTS[0]), {**_NUMPY_DEFAULTS[1], "override_repr": None}


def _numpy_now() -> tuple[dict, dict, Any] | None:
    np = sys.modules.get("numpy")
    if np is None or not hasattr(np, "geterr"):
        return None
    return dict(np.geterr()), dict(np.get_printoptions()), np.geterrcall()


#: print options that hold functions: not carried (left as they are when set)
_NUMPY_FUNCTIONS = ("formatter", "override_repr")


def _numpy_state(baseline: Baseline) -> dict[str, Any] | None:
    now = _numpy_now()
    if now is None:
        return None
    err, printing, call = now
    base_err, base_print = baseline.numpy or _numpy_defaults()
    rec: dict[str, Any] = {
        "errstate": {k: v for k, v in err.items() if base_err.get(k) != v},
        "printoptions": {k: v for k, v in printing.items()
                         if k not in _NUMPY_FUNCTIONS and base_print.get(k) != v and _plain(v)}}
    functions = [k for k in _NUMPY_FUNCTIONS if printing.get(k) is not None]
    if call is not None:
        functions.append("seterrcall")
    if functions:
        rec["functions"] = functions
    return rec


def _set_numpy(rec: dict, baseline: Baseline | None, missed: list[str]) -> str | None:
    """Each error mode and print option to the recorded value, or to this kernel's baseline
    where none is recorded (a re-run cell set it and a cell not re-run set it back), set the
    way a cell sets them (in the current context: numpy 2 keeps them in context variables)."""
    np = sys.modules.get("numpy")
    if np is None:
        if not (rec.get("errstate") or rec.get("printoptions") or rec.get("functions")):
            return None  # (nothing to set: not imported for it)
        import numpy as np

    base_err, base_print = (baseline.numpy if baseline is not None and baseline.numpy
                            else _numpy_defaults())
    err, printing = np.geterr(), np.get_printoptions()
    functions = rec.get("functions") or []
    want_err = {**base_err, **(rec.get("errstate") or {})}
    set_err = {k: v for k, v in want_err.items() if k in err and err[k] != v}
    if "seterrcall" in functions and np.geterrcall() is None:
        missed.append("numpy's error callback (np.seterrcall: a function)")
        set_err = {k: v for k, v in set_err.items() if v not in ("call", "log")}
    want_print = {k: v for k, v in {**base_print, **(rec.get("printoptions") or {})}.items()
                  if k not in _NUMPY_FUNCTIONS}
    set_print = {k: v for k, v in want_print.items() if k in printing and printing[k] != v}
    keep = {}
    for k in _NUMPY_FUNCTIONS:
        if k not in printing:
            continue
        if k in functions:
            keep[k] = printing[k]  # (set by a re-run cell, or missing: named)
            if printing[k] is None:
                missed.append(f"numpy's print option {k} (functions)")
        elif printing[k] is not None and base_print.get(k) is None:
            set_print[k] = None
    done = []
    if set_err:
        np.seterr(**set_err)
        done.append("error handling " + ", ".join(sorted(set_err)))
    if set_print:
        options = {k: v for k, v in set_print.items() if k not in _NUMPY_FUNCTIONS}
        # (set_printoptions resets the function options it is not given)
        np.set_printoptions(**options, **{k: set_print.get(k, keep.get(k))
                                          for k in _NUMPY_FUNCTIONS if k in printing})
        done.append("print options " + ", ".join(sorted(set_print)))
    return "numpy " + "; ".join(done) if done else None


#: torch's global settings as importing it leaves them
_TORCH_DEFAULTS: dict[str, Any] = {
    "default_dtype": "float32", "grad_enabled": True, "deterministic": False, "anomaly": False,
    "print_precision": 4, "print_threshold": 1000, "print_edgeitems": 3, "print_linewidth": 80,
    "print_sci_mode": None}


def _torch_now() -> dict[str, Any] | None:
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_default_dtype"):
        return None
    out: dict[str, Any] = {
        "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "grad_enabled": torch.is_grad_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "anomaly": torch.is_anomaly_enabled()}
    opts = getattr(getattr(torch, "_tensor_str", None), "PRINT_OPTS", None)
    for key in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode"):
        value = getattr(opts, key, None)
        if _plain(value):
            out["print_" + key] = value
    return out


def _torch_state(baseline: Baseline) -> dict[str, Any] | None:
    """torch's settings away from what importing it sets: ``torch.set_default_dtype(
    torch.float64)``, ``torch.set_grad_enabled(False)`` (as a statement: off until set back),
    ``torch.set_printoptions(precision=2)``, ``torch.use_deterministic_algorithms(True)``. Set
    in a cell that could not be re-run, they were missing after the restore: later cells made
    float32 tensors, and tensors with a graph, where the session made neither, while every
    variable verified."""
    now = _torch_now()
    if now is None:
        return None
    return {k: v for k, v in now.items() if _TORCH_DEFAULTS.get(k) != v}


def _set_torch(rec: dict) -> str | None:
    """Each torch setting to the recorded value, or to what importing torch sets where none is
    recorded (a re-run cell set it and a cell not re-run set it back)."""
    torch = sys.modules.get("torch")
    if torch is None:
        if not rec:
            return None  # (nothing to set: not imported for it)
        import torch
    now = _torch_now() or {}
    want = {**_TORCH_DEFAULTS, **rec}
    done = []
    printing = {}
    for key, value in want.items():
        if key not in now or now[key] == value:
            continue
        if key == "default_dtype":
            torch.set_default_dtype(getattr(torch, value))
        elif key == "grad_enabled":
            torch.set_grad_enabled(value)
        elif key == "deterministic":
            torch.use_deterministic_algorithms(value)
        elif key == "anomaly":
            torch.set_anomaly_enabled(value)
        elif key.startswith("print_"):
            printing[key.removeprefix("print_")] = value
            continue
        else:
            continue
        done.append(key.replace("_", " "))
    if printing:
        torch.set_printoptions(**printing)
        done.append("print options " + ", ".join(sorted(printing)))
    return "torch " + ", ".join(done) if done else None


def _interpreter_now() -> dict[str, Any]:
    from kernel_agent.procstate import gc_enabled

    out: dict[str, Any] = {"recursion_limit": sys.getrecursionlimit(),
                           "gc_enabled": gc_enabled(), "gc_threshold": list(gc.get_threshold())}
    digits = getattr(sys, "get_int_max_str_digits", None)
    if digits is not None:
        out["int_max_str_digits"] = digits()
    return out


def _set_interpreter(rec: dict, baseline: Baseline | None) -> str | None:
    now = _interpreter_now()
    base = baseline.interpreter if baseline is not None else {}
    want = {**base, **rec}
    done = []
    for key, value in want.items():
        if key not in now or now[key] == value:
            continue
        try:
            if key == "recursion_limit":
                sys.setrecursionlimit(value)
            elif key == "gc_enabled":
                (gc.enable if value else gc.disable)()
            elif key == "gc_threshold":
                gc.set_threshold(*value)
            elif key == "int_max_str_digits":
                sys.set_int_max_str_digits(value)
            else:
                continue
        except Exception:  # noqa: BLE001 - left as it is
            log.exception("kernel_agent: could not set %s", key)
            continue
        done.append(("gc enabled" if value else "gc disabled") if key == "gc_enabled"
                    else key.replace("_", " ") + f" {value}")
    return ", ".join(done) or None


#: rcParams not carried: the backend is the restored kernel's own (ipykernel's inline one)
_MPL_SKIPPED = ("backend", "backend_fallback", "interactive")


def _matplotlib_state() -> dict[str, Any] | None:
    mpl = sys.modules.get("matplotlib")
    if mpl is None or not hasattr(mpl, "rcParams") or not hasattr(mpl, "rcParamsOrig"):
        return None
    rc, orig = mpl.rcParams, mpl.rcParamsOrig
    values: dict[str, Any] = {}
    cyclers: dict[str, str] = {}
    odd: list[str] = []
    for key, value in dict.items(rc):
        if key in _MPL_SKIPPED:
            continue
        try:
            if value == dict.get(orig, key):
                continue
        except Exception:  # noqa: BLE001 - compared as different
            pass
        if _plain(value):
            values[key] = json.loads(json.dumps(value))
        elif type(value).__name__ == "Cycler":
            cyclers[key] = repr(value)
        else:
            odd.append(key)
    rec: dict[str, Any] = {"rcParams": values}
    if cyclers:
        rec["cyclers"] = cyclers
    if odd:
        rec["not_plain"] = odd
    backend = dict.get(rc, "backend")
    if isinstance(backend, str) and backend.lower() not in {
            str(dict.get(orig, "backend")).lower(), (os.environ.get("MPLBACKEND") or "").lower()}:
        rec["backend"] = backend
    return rec


def _set_matplotlib(rec: dict, missed: list[str]) -> str | None:
    """rcParams to the recorded values (validated as a cell's assignment is), those not
    recorded back to matplotlib's defaults (a re-run cell's that a later cell undid)."""
    if "matplotlib" not in sys.modules and not (rec.get("rcParams") or rec.get("cyclers")
                                                 or rec.get("not_plain") or rec.get("backend")):
        return None  # (nothing to set: not imported for it)
    import matplotlib as mpl

    rc, orig = mpl.rcParams, mpl.rcParamsOrig
    values = rec.get("rcParams") or {}
    cyclers = rec.get("cyclers") or {}
    odd = set(rec.get("not_plain") or ())
    done = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (deprecated parameters warn when set)
        for key, now in list(dict.items(rc)):
            if key in _MPL_SKIPPED or key in odd:
                continue
            try:
                if key in cyclers:
                    if repr(now) != cyclers[key]:
                        rc[key] = cyclers[key]
                        done.append(key)
                elif key in values:
                    if json.loads(json.dumps(now)) != values[key]:
                        rc[key] = values[key]
                        done.append(key)
                elif now != dict.get(orig, key):
                    rc[key] = dict.get(orig, key)
                    done.append(key)
            except Exception:  # noqa: BLE001 - left as it is, named
                missed.append(f"matplotlib rcParams[{key!r}]")
        for key in sorted(odd):
            try:
                if dict.get(rc, key) == dict.get(orig, key):
                    missed.append(f"matplotlib rcParams[{key!r}] (not plain data)")
            except Exception:  # noqa: BLE001
                missed.append(f"matplotlib rcParams[{key!r}] (not plain data)")
    backend = rec.get("backend")
    if backend and str(dict.get(rc, "backend")).lower() != backend.lower():
        missed.append(f"matplotlib backend {backend} (the restored kernel keeps its own)")
    return "matplotlib rcParams " + ", ".join(done) if done else None


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
    # (every match has a dot: the search alone cost 35 us per hundred lines without one)
    if not code or "." not in code or not _ATTRIBUTE_ASSIGNMENT.search(code):
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
