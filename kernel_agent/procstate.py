"""A cheap fingerprint of process-wide state a cell can change without binding a variable.

``import os; os.environ["KEY"] = "1"``, ``pd.set_option("display.max_rows", 5)``,
``warnings.filterwarnings("ignore")``, ``sys.path.insert(0, "..")``,
``plt.rcParams["figure.dpi"] = 150``, ``decimal.getcontext().prec = 50``,
``builtins.helper = helper``: none of these shows in
the namespace, and shipping every variable does not bring them back. The monitor compares this
fingerprint before and after each cell; a cell that changed it is a context cell (see
`graph.CellExecution.context`), which a restore re-runs.

Libraries are looked at only when they are already imported, by identity of their option
values where that is enough (setting an option rebinds it; the snapshot holds the values, so a
new one cannot reuse a freed one's id), so the check costs tens of microseconds per cell. It
never raises: a part that cannot be read is left out.
"""

from __future__ import annotations

import _signal
import ast
import gc
import operator
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernel_agent import effects
from kernel_agent.dictversion import VersionWatch, dict_version

#: the last `_environ` reading: (the dict read, a watch of its tag, the items)
_environ_seen: tuple[dict, VersionWatch, tuple] | None = None


def _environ() -> Any:
    global _environ_seen
    data = getattr(os.environ, "_data", None)  # the raw bytes: no decoding per cell
    if type(data) is not dict:
        return tuple(os.environ.items())
    seen = _environ_seen
    if seen is not None and seen[0] is data and seen[1].unchanged():
        return seen[2]  # (the same tuple: compared by identity first, then it is equal)
    tag = dict_version(data)
    items = tuple(data.items())
    _environ_seen = (data, VersionWatch((data,), (tag,)), items)
    return items


#: True while the monitor's hooks hold cyclic collection off (`monitor._no_gc`): it was on
gc_held = False


def gc_enabled() -> bool:
    """Whether the user's cells left cyclic garbage collection on: inside the monitor's hooks
    `gc.isenabled()` is False whatever they did, and ``gc.disable()`` in a cell went unseen."""
    return gc_held or gc.isenabled()


def _python() -> Any:
    import warnings

    # (a filter is a tuple; `filterwarnings` inserts a new one, `catch_warnings` puts the old
    # list back: identity tells, without a repr of each pattern per cell)
    # (``sys.set_int_max_str_digits(0)`` after a ValueError printing a big int, ``gc.disable()``
    # for a benchmark: the cells that did so must run again where the session goes on)
    digits = getattr(sys, "get_int_max_str_digits", lambda: None)()
    return (tuple(sys.path), sys.getrecursionlimit(), effects.getcwd(),
            _Identity((), tuple(warnings.filters)), digits, gc_enabled(), gc.get_threshold())


def _decimal() -> Any:
    mod = sys.modules.get("decimal")
    return repr(mod.getcontext()) if mod is not None else None


def _numpy() -> Any:
    np = sys.modules.get("numpy")
    if np is None:
        return None
    ufunc_config = sys.modules.get("numpy._core._ufunc_config")
    arrayprint = sys.modules.get("numpy._core.arrayprint")
    try:
        # numpy >= 2 keeps both in context variables that `seterr`/`set_printoptions` (and
        # their context managers) set to new objects: identity tells, in a microsecond
        return _Identity((), (ufunc_config._extobj_contextvar.get(),
                              arrayprint.format_options.get()))
    except AttributeError:
        return (tuple(sorted(np.geterr().items())), repr(sorted(np.get_printoptions().items())))


def _scipy_special() -> Any:
    """scipy.special's error handling (``sc.seterr(singular='raise')``): process-wide C state
    that no variable shows; a restore that shipped the cell's `prev = sc.seterr(...)` left
    every special function ignoring what the session had made raise."""
    ufuncs = sys.modules.get("scipy.special._ufuncs")
    geterr = getattr(ufuncs, "geterr", None)
    return None if geterr is None else tuple(sorted(geterr().items()))


class _Identity:
    """Keys, and values compared by identity: equal when the same keys hold the same objects.

    Holds the values, so a new one cannot reuse a freed one's id. Compares them with `is`,
    not their ids: the agent's audit hook makes every `id()` call an audit event, and the
    hundreds of builtins and options cost 0.2 ms per cell that way. `ordered=False`: keys in
    another order with the same objects are the same state (a dict's)."""

    __slots__ = ("keys", "values", "ordered")

    def __init__(self, keys: tuple, values: tuple, ordered: bool = True):
        self.keys = keys
        self.values = values
        self.ordered = ordered

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is not _Identity:
            return NotImplemented
        if self.keys == other.keys and len(self.values) == len(other.values):
            return all(map(operator.is_, self.values, other.values))
        if self.ordered or other.ordered:
            return False
        return (dict(zip(self.keys, map(id, self.values), strict=True))
                == dict(zip(other.keys, map(id, other.values), strict=True)))

    __hash__ = None  # type: ignore[assignment]


_NESTED = object()  # in `_option_ids` keys: the key's value is a dict of options


#: the last `_option_ids` walk: (its root, its dicts' tags then, its result)
_options_seen: tuple[dict, VersionWatch, _Identity] | None = None


def _option_ids(d: dict) -> _Identity:
    """Keys and values of a nested option dict (setting an option rebinds its value).

    pandas keeps a few hundred options in two dozen dicts: reading them all was the largest
    part of this snapshot. When none of the dicts of the last walk has a new version tag
    (a change of a nested dict's place changes its parent's), that walk's result is reused."""
    global _options_seen
    seen = _options_seen
    if seen is not None and seen[0] is d and seen[1].unchanged():
        return seen[2]
    keys: list[Any] = []
    values: list[Any] = []
    dicts: list[dict] = []
    tags: list[int | None] = []
    stack = [d]
    while stack:
        cur = stack.pop()
        dicts.append(cur)
        tags.append(dict_version(cur))  # (before its entries: a change in between shows)
        for k, v in dict.items(cur):
            keys.append(k)
            if type(v) is dict:
                keys.append(_NESTED)
                stack.append(v)
            else:
                values.append(v)
    out = _Identity(tuple(keys), tuple(values))
    _options_seen = (d, VersionWatch(dicts, tags), out)
    return out


def _pandas() -> Any:
    if "pandas" not in sys.modules:
        return None
    cfg = sys.modules.get("pandas._config.config")
    return _option_ids(cfg._global_config) if cfg is not None else None


#: the last `_pandas_accessors` reading: (the classes, a watch of their dicts' tags, result)
_accessors_seen: tuple[tuple, VersionWatch, frozenset] | None = None


def _pandas_accessors() -> Any:
    """Accessors the notebook registered (``@pd.api.extensions.register_dataframe_accessor(
    "geo")`` sets ``DataFrame.geo``): shipping the accessor's class does not register it again,
    so the restored ``df.geo`` raised. pandas' own are left out, so that a cell importing
    pandas and registering one at once is a change (and importing it alone is none).

    Registering sets the attribute on the class, which changes the tag of the class's dict:
    while no tag has moved, the last reading stands."""
    global _accessors_seen
    pd = sys.modules.get("pandas")
    if pd is None:
        return frozenset()
    classes = tuple(getattr(pd, owner, None) for owner in ("DataFrame", "Series", "Index"))
    seen = _accessors_seen
    if seen is not None and seen[0] == classes and seen[1].unchanged():
        return seen[2]
    dicts = [gc.get_referents(vars(cls))[0] for cls in classes if isinstance(cls, type)]
    tags = [dict_version(d) for d in dicts]
    found: set[tuple[str, str, Any]] = set()
    for owner, cls in zip(("DataFrame", "Series", "Index"), classes, strict=True):
        for name in getattr(cls, "_accessors", ()):
            accessor = getattr(vars(cls).get(name), "_accessor", None)
            if accessor is not None and not str(accessor.__module__).startswith("pandas"):
                found.add((owner, name, accessor))
    out = frozenset(found)
    _accessors_seen = (classes, VersionWatch(dicts, tags), out)
    return out


def _matplotlib() -> Any:
    mpl = sys.modules.get("matplotlib")
    if mpl is None or not hasattr(mpl, "rcParams"):
        return None
    return _Identity(tuple(dict.keys(mpl.rcParams)), tuple(dict.values(mpl.rcParams)))


#: builtins the shell and the kernel set around every execution, anew each time (IPython's
#: builtin trap, ipykernel's `input` forwarding to the frontend)
_SHELL_BUILTINS = ("get_ipython", "exit", "quit", "display", "input", "raw_input", "_", "__",
                   "___", "__IPYTHON__")


def _builtins() -> Any:
    """Names a cell put into (or replaced in) `builtins`: visible from every later cell."""
    import builtins

    d = dict(builtins.__dict__)
    for name in _SHELL_BUILTINS:
        d.pop(name, None)
    return _Identity(tuple(d), tuple(d.values()), ordered=False)


def _shell() -> Any:
    """IPython's own settings, which a cell changes without binding a variable: magics it
    registered (``@register_line_magic``, ``%alias``, ``ip.register_magic_function``),
    ``%pdb on``, ``%precision 3``, ``%xmode``, ``%automagic``, ``%autocall``. A restore that
    shipped the magic's function left the new kernel without the magic (``%shout`` not
    found), with nothing said. The magics are counted, the switches read from the traits'
    values (a traitlets attribute costs a microsecond): about 2 us per cell."""
    mod = sys.modules.get("IPython.core.interactiveshell")
    shell = getattr(getattr(mod, "InteractiveShell", None), "_instance", None)
    if shell is None:
        return None
    magics = _trait(_trait(shell, "magics_manager"), "magics")
    plain = _trait(_trait(shell, "display_formatter"), "formatters").get("text/plain")
    return (len(magics["line"]), len(magics["cell"]), shell.call_pdb, _trait(shell, "automagic"),
            _trait(shell, "autocall"), getattr(shell.InteractiveTB, "mode", None),
            None if plain is None else _trait(plain, "float_precision"))


def _trait(obj: Any, name: str) -> Any:
    """``obj.name`` for a traitlets attribute, from its stored value when it has one."""
    try:
        return obj._trait_values[name]
    except (AttributeError, KeyError, TypeError):
        return getattr(obj, name)


def _torch() -> Any:
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return None
    # (``torch.set_grad_enabled(False)`` as a statement, not a ``with``: every later tensor
    # is made without its graph; print options are read from the object torch keeps them in)
    opts = getattr(getattr(torch, "_tensor_str", None), "PRINT_OPTS", None)
    printing = None if opts is None else tuple(sorted(vars(opts).items()))
    return (torch.get_num_threads(), str(torch.get_default_dtype()), torch.is_grad_enabled(),
            torch.are_deterministic_algorithms_enabled(), torch.is_anomaly_enabled(), printing)


class _Loggers(dict):
    """Logger name -> its configuration (`_logger`). A logger made in between counts when it
    left the default configuration other than by a ``NullHandler``: what libraries do to
    their own loggers when imported, which importing them again does too."""

    def changed_since(self, before: _Loggers) -> bool:
        for name, now in self.items():
            then = before.get(name)
            if then is None:
                if now[:3] != _DEFAULT_LOGGER or not now[4]:
                    return True
            elif then != now:  # (handlers and filters compare by identity)
                return True
        return False


_DEFAULT_LOGGER = (0, True, False)  # NOTSET, propagating, enabled


def _logger(lg: Any) -> tuple:
    handlers, filters = tuple(lg.handlers), tuple(lg.filters)
    only_null = all(type(h).__name__ == "NullHandler" for h in handlers) and not filters
    return (lg.level, lg.propagate, lg.disabled, handlers, only_null, filters)


#: the last `_logging` reading: (the loggers read, a watch of the tags of the manager's
#: dict and their dicts, copies of their handler and filter lists, the result)
_logging_seen: tuple[tuple, VersionWatch, tuple, _Loggers] | None = None


def _logging() -> Any:
    """Levels, handlers and filters of every logger: ``logging.basicConfig(level=...)``,
    ``log.addHandler(h)``, ``log.setLevel(...)`` configure the process, not a variable, and a
    restore that only shipped variables left the session logging nothing.

    Levels and flags are attributes (setting one changes the tag of the logger's dict), new
    loggers are entries of the manager's dict, handlers and filters are lists changed in place
    (compared with copies): while none of these moved, the last reading stands."""
    global _logging_seen
    mod = sys.modules.get("logging")
    if mod is None:
        return None
    manager = mod.root.manager
    seen = _logging_seen
    if seen is not None and seen[0][0] is manager.loggerDict and seen[1].unchanged():
        loggers, lists = seen[0][1:], seen[2]
        if all(lg.handlers == h and lg.filters == f
               for lg, (h, f) in zip(loggers, lists, strict=True)):
            return seen[3]
    registry = manager.loggerDict
    tag = dict_version(registry)
    pairs = [("", mod.root)] + [(name, lg) for name, lg in list(registry.items())
                                 if isinstance(lg, mod.Logger)]
    loggers = tuple(lg for _, lg in pairs)
    dicts = [registry] + [getattr(lg, "__dict__", None) for lg in loggers]
    tags = [tag] + [dict_version(d) for d in dicts[1:]]
    out = _Loggers((name, _logger(lg)) for name, lg in pairs)
    lists = tuple((list(lg.handlers), list(lg.filters)) for lg in loggers)
    # (a logger without a plain dict has no tag: read every time)
    _logging_seen = (((registry, *loggers), VersionWatch(dicts, tags), lists, out)
                     if all(type(d) is dict for d in dicts) else None)
    return out


#: the signals a notebook handles (a timeout on SIGALRM, a clean stop on SIGTERM, a dump on
#: SIGUSR1...); not SIGINT, which the kernel sets around each request itself
_SIGNALS = tuple(int(getattr(signal, n)) for n in ("SIGALRM", "SIGTERM", "SIGUSR1", "SIGUSR2",
                                                   "SIGHUP") if hasattr(signal, n))


def _hooks() -> Any:
    """Handlers the process calls, which a cell installs without binding a variable:
    ``signal.signal(signal.SIGALRM, on_timeout)``, ``threading.excepthook = report``. A
    restore that shipped the cell's variables (`handler`, the old handler `signal.signal`
    returned) left the new kernel with the default handler: the next alarm killed it, and both
    verified. Compared by identity. (Not `sys.excepthook`, which the shell sets around each
    cell, nor atexit's count, which importing many libraries raises.)"""
    import threading

    # (the C module's getsignal: `signal.getsignal` turns the answer into an enum member, a
    # few microseconds per signal; SIG_DFL and SIG_IGN are then the small ints 0 and 1, as
    # unique as the members)
    return _Identity((), (*map(_signal.getsignal, _SIGNALS), threading.excepthook))


#: each reads one part of the state
_PARTS: tuple[Callable[[], Any], ...] = (_environ, _python, _decimal, _numpy, _scipy_special,
                                         _torch, _builtins, _pandas, _pandas_accessors,
                                         _matplotlib, _logging, _hooks, _shell)


#: numpy's error handling and print options as importing it sets them
_NUMPY_DEFAULTS = ({"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"},
                   {"edgeitems": 3, "threshold": 1000, "floatmode": "maxprec", "precision": 8,
                    "suppress": False, "linewidth": 75, "nanstr": "nan", "infstr": "inf",
                    "sign": "-", "formatter": None, "legacy": False})


def _numpy_configured() -> bool:
    np = sys.modules["numpy"]
    printing = np.get_printoptions()
    return np.geterr() != _NUMPY_DEFAULTS[0] or any(
        printing.get(k, v) != v for k, v in _NUMPY_DEFAULTS[1].items())


#: scipy.special's error handling as importing it sets it
_SCIPY_SPECIAL_DEFAULT = "ignore"
_SCIPY_SPECIAL_DEFAULTS = {"memory": "raise"}


def _scipy_special_configured() -> bool:
    return any(action != _SCIPY_SPECIAL_DEFAULTS.get(code, _SCIPY_SPECIAL_DEFAULT)
               for code, action in sys.modules["scipy.special._ufuncs"].geterr().items())


def _pandas_configured() -> bool:
    cfg = sys.modules["pandas._config.config"]
    deprecated = cfg._deprecated_options
    return any(cfg._get_option_impl(k, warn=False) != o.defval
               for k, o in cfg._registered_options.items() if k not in deprecated)


#: rcParams set by the kernel's environment rather than by a cell: the backend comes from
#: ``MPLBACKEND`` (ipykernel's inline one), IPython switches interactive mode on with it
_MPL_ENVIRONMENT_KEYS = ("backend", "interactive")


def _matplotlib_configured() -> bool:
    mpl = sys.modules["matplotlib"]
    rc, orig = mpl.rcParams, mpl.rcParamsOrig
    for key, value in dict.items(rc):
        if key not in _MPL_ENVIRONMENT_KEYS and value != dict.get(orig, key):
            return True
    backend = dict.__getitem__(rc, "backend")
    if not isinstance(backend, str):
        return False  # (the sentinel: not chosen yet)
    chosen = (os.environ.get("MPLBACKEND") or "", str(dict.get(orig, "backend")))
    return backend.lower() not in {c.lower() for c in chosen}


#: part -> whether the library, imported by the cell, is no longer as importing it leaves it
_CONFIGURED_AFTER_IMPORT: dict[str, Callable[[], bool]] = {
    "_numpy": _numpy_configured,
    "_scipy_special": _scipy_special_configured,
    "_pandas": _pandas_configured,
    "_matplotlib": _matplotlib_configured,
}


@dataclass(eq=False)
class ProcessState:
    parts: dict[str, Any]

    def differs(self, later: ProcessState) -> bool:
        """Whether `later` shows a change. A library imported in between (its part was None)
        is not one by itself: what importing it sets, importing it again sets; but a cell that
        imported it and set it up (``import matplotlib.pyplot as plt; plt.style.use(...)``,
        ``matplotlib.use('Agg')``, ``pd.set_option(...)`` next to the import) left it otherwise
        than an import does, which only that cell's re-run brings back
        (`_CONFIGURED_AFTER_IMPORT`: compared with the library's defaults)."""
        for name, before in self.parts.items():
            if before is None:
                check = _CONFIGURED_AFTER_IMPORT.get(name)
                if check is not None and later.parts.get(name) is not None:
                    try:
                        if check():
                            return True
                    except Exception:  # noqa: BLE001 - an unknown version: as before
                        pass
                continue
            try:
                after = later.parts.get(name)
                if after is before:
                    continue
                if type(before) is _Loggers and type(after) is _Loggers:
                    if after.changed_since(before):
                        return True
                elif before != after:
                    return True
            except Exception:  # noqa: BLE001 - an odd comparison: a change (the safe side)
                return True
        return False


def snapshot() -> ProcessState:
    """The process state above; equal before and after a cell that changed none of it."""
    parts: dict[str, Any] = {}
    for part in _PARTS:
        try:
            parts[part.__name__] = part()
        except Exception:  # noqa: BLE001 - an odd library state is left out, never fatal
            parts[part.__name__] = "unreadable"
    return ProcessState(parts)


def only_imports(code: str) -> bool:
    """The cell is nothing but import statements: what it changed in the process, importing
    the same modules in another kernel changes too (numpy and pandas add warning filters)."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return False
    return bool(body) and all(isinstance(node, ast.Import | ast.ImportFrom) for node in body)
