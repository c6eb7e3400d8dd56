"""Side effects and non-determinism that make a cell unsafe to re-run at restore time.

Runs inside the user's kernel process. Two sources:

* an audit hook (`sys.addaudithook`, PEP 578) that notes, while a recorded cell runs, files opened
  for writing, files and directories removed/renamed/created, network connections, subprocesses
  and shell commands. Re-running such a cell on the new machine would repeat the effect (append
  to a file twice, send a request twice), so the checkpoint ships its outputs instead;
* static markers in the cell's bytecode and in the notebook functions it reaches (`analysis`
  calls `static_markers`): reading the clock, OS entropy, unseeded generators.

Audit hooks cannot be removed, so the hook is installed once per process and costs one global
lookup when no cell is being recorded. The kernel's own machinery (history sqlite, its sockets,
its threads, caches, `__pycache__`) is filtered out: threads that existed when recording was set
up are ignored (the kernel's IO, heartbeat, control and history threads), and so are paths under
the IPython profile, the Jupyter runtime directory and cache directories.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import itertools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kernel_agent")

MAX_EFFECTS = 20  # per cell; more are summarized
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

# --------------------------------------------------------------------------------------------
# Static markers of non-determinism (bytecode of one code object)
# --------------------------------------------------------------------------------------------

CLOCK = "reads the clock"
ENTROPY = "reads OS entropy"
UNSEEDED = "uses an unseeded random generator"
IDENTITY = "reads the process's identity (process id, host name, thread id)"
#: not a reason against re-running the cell, the opposite: what it computes from ``id()`` (an
#: index ``{id(o): o for o in objs}``, a set of ids seen) holds this process's addresses, which
#: a copy loaded elsewhere keeps although its objects now live at others (see
#: `graph.HistoryGraph.identity_cells`). The monitor keeps it apart from the effects.
USES_ID = "calls id()"

# attribute or bare-name loads that always mean "clock" / "entropy" when called
_CLOCK_NAMES = frozenset({
    "perf_counter", "perf_counter_ns", "time_ns", "monotonic", "monotonic_ns", "process_time",
    "process_time_ns", "thread_time", "thread_time_ns", "clock_gettime", "clock_gettime_ns",
    "utcnow", "now", "today",
})
_TIME_MODULE_CLOCK = frozenset({"time", "localtime", "gmtime", "ctime", "asctime", "strftime"})
_ENTROPY_NAMES = frozenset({
    "urandom", "getrandom", "uuid1", "uuid4", "SystemRandom", "token_bytes", "token_hex",
    "token_urlsafe", "randbits", "secrets",
})
# what another process (in another pod) answers differently: `pid = os.getpid()` re-run there
_IDENTITY_NAMES = frozenset({
    "getpid", "getppid", "gethostname", "getfqdn", "get_ident", "get_native_id", "getnode",
})
# generators that seed themselves from OS entropy when called without a seed
_SEEDABLE = frozenset({"default_rng", "RandomState", "Random", "seed", "SeedSequence"})
_CALL_OPS = frozenset({"PRECALL", "CALL"})
_LOAD_NAME_OPS = frozenset({"LOAD_NAME", "LOAD_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_DEREF",
                            "LOAD_FAST", "LOAD_CLASSDEREF"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_STORE_OPS = frozenset({"STORE_NAME", "STORE_GLOBAL", "STORE_FAST", "STORE_DEREF"})


def _called_without_seed(instrs: Sequence[Any], i: int) -> bool:
    nxt = instrs[i + 1] if i + 1 < len(instrs) else None
    if nxt is None:
        return False
    if nxt.opname in _CALL_OPS:
        return nxt.arg == 0
    after = instrs[i + 2] if i + 2 < len(instrs) else None
    return (nxt.opname == "LOAD_CONST" and nxt.argval is None and after is not None
            and after.opname in _CALL_OPS and after.arg == 1)


def static_markers(instrs: Sequence[Any]) -> set[str]:
    """Non-determinism markers in one code object's instructions (from `dis.get_instructions`).

    Heuristic by design: names are matched, not resolved (a `now` attribute is taken to be a
    clock read). A false positive only makes the planner ship the cell's outputs instead of
    recomputing them; a missed marker could make a restore silently differ, which the
    restore-time digest check then reports.
    """
    out: set[str] = set()
    prev = None
    for i, ins in enumerate(instrs):
        op = ins.opname
        if op in _ATTR_OPS or op in _LOAD_NAME_OPS or op == "IMPORT_NAME":
            name = ins.argval
            if isinstance(name, str):
                if name in _CLOCK_NAMES and op != "LOAD_FAST":
                    out.add(CLOCK)
                elif name in _ENTROPY_NAMES and op != "LOAD_FAST" and op != "IMPORT_NAME":
                    # (`import secrets` draws nothing: `secrets.token_hex()`, or a name bound
                    # to the module read by a later cell (`value_markers`), does)
                    out.add(ENTROPY)
                elif name in _IDENTITY_NAMES and op != "LOAD_FAST":
                    out.add(IDENTITY)
                elif name == "id" and op in _LOAD_NAME_OPS and op != "LOAD_FAST":
                    # the builtin (or a global named so by another cell: counted too), called
                    # or passed on (`map(id, objs)`, `key=id`); not an attribute (`row.id`)
                    # nor a name this code binds (`for id, row in rows:`)
                    if not any(j.opname in _STORE_OPS and j.argval == "id" for j in instrs):
                        out.add(USES_ID)
                elif name in _TIME_MODULE_CLOCK and op in _ATTR_OPS and (
                        (prev is not None and prev.argval == "time" and prev.opname != "LOAD_CONST")
                        or (name != "strftime" and _called_without_seed(instrs, i))):
                    out.add(CLOCK)  # time.time(), tm.time(), time.localtime(), ...
                elif name == "time" and op in _LOAD_NAME_OPS and op != "LOAD_FAST":
                    nxt = instrs[i + 1] if i + 1 < len(instrs) else None
                    if nxt is not None and nxt.opname in _CALL_OPS:
                        out.add(CLOCK)  # from time import time; time()
                elif name in _SEEDABLE and op != "IMPORT_NAME" and _called_without_seed(instrs, i):
                    out.add(UNSEEDED)
        prev = ins
    return out


def value_markers(value: Any) -> set[str]:
    """Markers for a notebook variable bound to a known non-deterministic builtin (`now = time.time`)."""
    import types

    if type(value) is types.ModuleType:
        return {ENTROPY} if getattr(value, "__name__", "") == "secrets" else set()
    if type(value) is not types.BuiltinFunctionType:
        return set()
    name = getattr(value, "__name__", "")
    owner = getattr(value, "__self__", None)
    owner_name = getattr(owner, "__name__", "")
    if name in _CLOCK_NAMES or (owner_name == "time" and name in _TIME_MODULE_CLOCK):
        return {CLOCK}
    if name in _ENTROPY_NAMES:
        return {ENTROPY}
    if name in _IDENTITY_NAMES:
        return {IDENTITY}
    return set()


# --------------------------------------------------------------------------------------------
# Audit hook
# --------------------------------------------------------------------------------------------


def _path(p: Any) -> str | None:
    if isinstance(p, int):
        return None
    try:
        s = os.fsdecode(os.fspath(p))
    except Exception:  # noqa: BLE001
        return str(p)
    return os.path.abspath(s)


def _addr(a: Any) -> str:
    if isinstance(a, tuple) and len(a) >= 2:
        host, port = a[0], a[1]
        return f"[{host}]:{port}" if isinstance(host, str) and ":" in host else f"{host}:{port}"
    if isinstance(a, (bytes, bytearray)):
        return os.fsdecode(bytes(a))
    return str(a)


def _short(s: str, n: int = 160) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."


MAX_FILES = 64  # file paths read / changed remembered per cell (beyond: see FileActivity)


@dataclass
class FileActivity:
    """Files a cell read and changed, for replay hazards the cell's own effects cannot show.

    A cell that only *reads* a file is safe to re-run, unless the file is different at restore
    time: a later cell (or the user) rewrote or deleted it, or the cell opened a relative path
    while the working directory was not the kernel's starting one. The monitor matches these
    paths across cells (`graph.HistoryGraph.note_file_changes`).
    """

    read: list[str] = field(default_factory=list)  # absolute paths, in first-read order
    relative: list[str] = field(default_factory=list)  # of `read`: opened by a relative path
    changed: list[str] = field(default_factory=list)  # written, removed, renamed, truncated
    overflow: bool = False  # more than MAX_FILES paths: the lists are incomplete


def _library_prefixes() -> tuple[str, ...]:
    """Where installed code lives: its files are not the notebook's data."""
    import site
    import sysconfig

    out: set[str] = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        if p:
            out.add(os.path.join(os.path.abspath(p), ""))
    try:
        for p in [*site.getsitepackages(), site.getusersitepackages(),
                  *sysconfig.get_paths().values()]:
            if p:
                out.add(os.path.join(os.path.abspath(p), ""))
    except Exception:  # noqa: BLE001
        pass
    # our own packages: an editable install lives outside site-packages, and `%load_ext
    # autoreload` (which stats and reads every loaded module's source) then read the agent's
    # sources as if they were the notebook's files
    for pkg in ("kernel_agent", "elastic_spawner"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for p in (spec.submodule_search_locations or []) if spec is not None else []:
            out.add(os.path.join(os.path.abspath(p), ""))
    out.add("/proc/")
    out.add("/sys/")
    out.add("/dev/")
    # the system's time zone database (pandas and datetime read it): part of the environment,
    # and watching it cost a stat per cell for every notebook that imports pandas
    try:
        import zoneinfo

        tzpath = list(zoneinfo.TZPATH)
    except Exception:  # noqa: BLE001
        tzpath = []
    for p in [*tzpath, "/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo"]:
        out.add(os.path.join(os.path.abspath(p), ""))
    return tuple(sorted(out))


def source_of_cached(p: str) -> str:
    """`pkg/__pycache__/mod.cpython-311.pyc` -> `pkg/mod.py`: importing reads the cache, but
    what the import depends on is the source it was compiled from."""
    head, tail = os.path.split(p)
    if os.path.basename(head) == "__pycache__" and tail.endswith(".pyc"):
        return os.path.join(os.path.dirname(head), tail.split(".", 1)[0] + ".py")
    return p


class _Recorder:
    """Collects effect descriptions for one cell; filters the kernel's own activity."""

    __slots__ = ("effects", "ignored_threads", "ignored_prefixes", "ignored_ports", "busy",
                 "files", "library_prefixes", "threads", "user_prefixes", "figures", "futures",
                 "clock", "varies")

    def __init__(self, ignored_threads: set[int], ignored_prefixes: tuple[str, ...],
                 ignored_ports: set[int], library_prefixes: tuple[str, ...] = (),
                 user_prefixes: tuple[str, ...] = ()):
        self.effects: list[str] = []
        self.ignored_threads = ignored_threads
        self.ignored_prefixes = ignored_prefixes
        self.user_prefixes = user_prefixes  # under ignored_prefixes, but the user's data
        self.ignored_ports = ignored_ports
        self.library_prefixes = library_prefixes
        self.files = FileActivity()
        self.busy = False
        self.threads: list[tuple[threading.Thread, str]] = []  # started, running notebook code
        self.futures: list[tuple[Any, str]] = []  # thread-pool jobs running notebook code
        self.figures: dict[int, Any] = {}  # id -> pyplot's current figure, as the cell used it
        self.clock = False  # code the cell ran read the clock (noted once, in `varies`)
        self.varies: list[str] = []  # why a re-run may make other values (not an effect)

    def _file_read(self, raw: Any) -> None:
        if isinstance(raw, int):
            return
        if isinstance(raw, str) and raw in sys.path:
            # an entry of the import path probed as a file by the import machinery or
            # `importlib.metadata` (an editable install's ``__editable__...__path_hook__``, a
            # relative name that is no file): no data the cell read, and taken for a relative
            # read it kept the first cell importing a library from being re-run as one that
            # sets process state
            return
        p = _path(raw)
        if p is None:
            return
        p = source_of_cached(p)
        if p in self.files.read or p.startswith(self.library_prefixes) or self._ignored_path(p):
            return
        if len(self.files.read) >= MAX_FILES:
            self.files.overflow = True
            return
        self.files.read.append(p)
        try:
            if not os.path.isabs(os.fsdecode(os.fspath(raw))):
                self.files.relative.append(p)
        except Exception:  # noqa: BLE001
            pass

    def _file_changed(self, p: str | None) -> None:
        if p is None or p in self.files.changed:
            return
        if len(self.files.changed) >= MAX_FILES:
            self.files.overflow = True
            return
        self.files.changed.append(p)

    def _ignored_path(self, p: str | None) -> bool:
        if p is None:
            return False
        if p.startswith(self.ignored_prefixes) or p == os.devnull:
            return not (self.user_prefixes and p.startswith(self.user_prefixes))
        return "__pycache__" in p or p.endswith((".pyc", ".pyc.tmp")) or "/.pyc" in p

    def _note(self, text: str) -> None:
        text = _short(text)
        if text not in self.effects:
            self.effects.append(text)

    def _kernel_socket(self, address: Any) -> bool:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in self.ignored_ports:
            return str(address[0]) in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")
        return False

    def handle(self, event: str, args: tuple) -> None:
        if threading.get_ident() in self.ignored_threads:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if mode is not None:
                writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            else:
                writing = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            if not writing:
                self._file_read(path)
                return
            if isinstance(path, int):
                self._note(f"writes file descriptor {path}")
                return
            p = _path(path)
            if not self._ignored_path(p):
                self._note(f"writes file {p}")
                self._file_changed(p)
        elif event in _PATH_EVENTS:
            verb, npaths = _PATH_EVENTS[event]
            paths = [_path(a) for a in args[:npaths]]
            if all(self._ignored_path(p) for p in paths):
                return
            self._note(f"{verb} {' -> '.join(str(p) for p in paths)}")
            if event not in _METADATA_EVENTS:
                for p in paths:
                    self._file_changed(p)
        elif event in ("socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind"):
            address = args[1] if len(args) > 1 else None
            if address is None or self._kernel_socket(address):
                return
            kind = {"socket.bind": "network listen", "socket.connect": "network connect"}.get(
                event, "network send")
            self._note(f"{kind} {_addr(address)}")
        elif event == "socket.getaddrinfo":
            host = args[0] if args else None
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if host and host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
                self._note(f"network lookup {host}")
        elif event == "subprocess.Popen":
            argv = args[1] if len(args) > 1 else args
            if _read_only_probe(argv):
                return
            self._note(f"runs subprocess {_short(repr(argv), 120)}")
        elif event == "os.system":
            self._note(f"runs shell command {_short(repr(args[0] if args else ''), 120)}")
        elif event in ("os.exec", "os.spawn", "os.posix_spawn"):
            self._note(f"runs program {_short(repr(args[1] if event == 'os.spawn' else args[0]), 120)}")
        elif event in ("os.fork", "os.forkpty"):
            self._note("forks the process")
        elif event == "os.kill":
            self._note(f"sends signal {args[1] if len(args) > 1 else '?'} to process "
                       f"{args[0] if args else '?'}")
        elif event == "urllib.Request":
            self._note(f"network request {_short(str(args[0] if args else ''), 120)}")
        elif event == "webbrowser.open":
            self._note(f"opens a browser at {_short(str(args[0] if args else ''), 120)}")
        elif event == "sqlite3.connect":
            db = args[0] if args else None
            if db in (None, "", ":memory:", b":memory:") or (
                    isinstance(db, str) and db.startswith("file::memory:")):
                return
            p = _path(db)
            if not self._ignored_path(p):
                self._note(f"opens sqlite database {p}")


# Programs libraries run on their own to probe the machine; they change nothing (matplotlib runs
# fc-list when it builds its font cache on first import, platform/psutil-style code runs uname).
READ_ONLY_PROBES = frozenset({"fc-list", "fc-match", "uname", "nproc", "lscpu", "nvidia-smi",
                              "ldconfig", "which", "locale", "getconf"})


def _read_only_probe(argv: Any) -> bool:
    try:
        first = argv.split()[0] if isinstance(argv, (str, bytes)) else list(argv)[0]
        return os.path.basename(os.fsdecode(first)) in READ_ONLY_PROBES
    except Exception:  # noqa: BLE001
        return False


# event -> (description, how many leading args are paths)
_PATH_EVENTS: dict[str, tuple[str, int]] = {
    "os.remove": ("deletes file", 1),
    "os.rmdir": ("removes directory", 1),
    "os.mkdir": ("creates directory", 1),
    "os.rename": ("renames", 2),
    "os.link": ("hard-links", 2),
    "os.symlink": ("symlinks", 2),
    "os.truncate": ("truncates file", 1),
    "os.chmod": ("changes mode of", 1),
    "os.chown": ("changes owner of", 1),
    "os.utime": ("changes times of", 1),
    "os.setxattr": ("sets extended attribute on", 1),
    "os.removexattr": ("removes extended attribute from", 1),
    "shutil.copyfile": ("copies file", 2),
    "shutil.copymode": ("copies mode", 2),
    "shutil.copystat": ("copies metadata", 2),
    "shutil.copytree": ("copies tree", 2),
    "shutil.rmtree": ("removes tree", 1),
    "shutil.move": ("moves", 2),
    "shutil.make_archive": ("writes archive", 1),
    "shutil.unpack_archive": ("unpacks archive", 2),
    "shutil.chown": ("changes owner of", 1),
}
# path events that leave a file's content as it was (a reader re-run later reads the same)
_METADATA_EVENTS = frozenset({"os.chmod", "os.chown", "os.utime", "os.setxattr",
                              "os.removexattr", "shutil.copymode", "shutil.copystat",
                              "shutil.chown", "os.mkdir"})
_EVENTS = frozenset(_PATH_EVENTS) | {
    "open", "socket.connect", "socket.sendto", "socket.sendmsg", "socket.bind",
    "socket.getaddrinfo", "subprocess.Popen", "os.system", "os.exec", "os.spawn",
    "os.posix_spawn", "os.fork", "os.forkpty", "os.kill", "urllib.Request", "webbrowser.open",
    "sqlite3.connect",
}

_current: _Recorder | None = None
_installed = False
_install_lock = threading.Lock()


def _from_agent() -> bool:
    """True when the event comes from the agent's own code (a checkpoint or restore the cell
    called: its store writes are not the cell's side effects, and would otherwise make the
    cell "unsafe to re-run" and pin everything it touched to being shipped)."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_globals.get("__name__")
        if type(name) is str and name.startswith(_AGENT_PREFIX):
            return True
        f = f.f_back
    return False


_AGENT_PREFIX = "kernel_agent."


#: events after which the working directory's path may read otherwise (a rename or removal of
#: a directory above it changes it as much as a chdir does)
_CWD_EVENTS = frozenset({"os.chdir", "os.rename", "os.rmdir"})
_cwd_moves = 0  # such events seen, from any thread, recorded or not
_cwd_seen: tuple[int, str] | None = None


def getcwd() -> str | None:
    """The working directory (None: it was removed), read again only after an event that
    may have moved it. getcwd(2) releases the GIL, and in the monitor's hooks the kernel's
    IO thread, busy with the execution's messages just then, took it for about 0.2 ms each
    time: two reads a cell were a fifth of a short cell's hook time. Python code changes
    directory through `os.chdir`/`os.fchdir` (`%cd`, `pathlib`, libraries), which the audit
    hook sees; a C library calling chdir(2) itself is not seen."""
    global _cwd_seen
    seen = _cwd_seen
    if seen is not None and seen[0] == _cwd_moves and _installed:
        return seen[1]
    moves = _cwd_moves
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    if _installed:  # (before, a move would not be counted)
        _cwd_seen = (moves, cwd)
    return cwd


def _audit_hook(event: str, args: tuple) -> None:
    if event in _CWD_EVENTS:
        global _cwd_moves
        _cwd_moves += 1
    rec = _current
    if rec is None or event not in _EVENTS or rec.busy:
        return
    rec.busy = True  # our own calls (os.path.abspath, ...) must not recurse into the hook
    try:
        if _from_agent():
            return
        rec.handle(event, args)
    except Exception:  # noqa: BLE001 - an audit hook must never raise into user code
        pass
    finally:
        rec.busy = False


# Frames of the kernel's own machinery: OS entropy drawn under them (jupyter_client's message
# ids for every output a cell prints or displays, a display formatter's element ids) is not the
# cell's doing
_MACHINERY = ("IPython.", "ipykernel.", "jupyter_client.", "zmq.", "tornado.", "comm.",
              "traitlets.", "matplotlib_inline.", "asyncio.", "threading", "kernel_agent.")
ENTROPY_AT_RUNTIME = ENTROPY + " (os.urandom, called from code the cell ran)"
# Libraries that draw entropy for internal identifiers only, which never reach their results:
# joblib names every Parallel call with uuid4() and scikit-learn every fit's callback context
# (its fits and cross-validation run through both); flagging those would pin every model to
# being shipped
_INTERNAL_IDS = ("joblib.", "sklearn.callback.")
# IPython's display API: the id `display(x, display_id=True)` draws is the user's (a handle kept
# in a variable), not the kernel's; walked through like a library's frame (the kernel's own
# messages draw theirs in jupyter_client, which ends the walk)
_USER_DISPLAY = ("IPython.core.display_functions", "IPython.core.display")


def _cell_drew_entropy() -> bool:
    """Whether the os.urandom call being made comes from the cell: walking out from the caller,
    a notebook frame (``__main__``: the cell or a notebook function) comes before any frame
    of the kernel's machinery. Libraries in between (pandas' Styler naming itself with
    ``uuid4()``) are the cell's doing; a module
    being imported is not (sklearn's import draws some: the cell importing it is as
    reproducible as any import)."""
    # _cell_drew_entropy <- _note_entropy <- _probe's wrapper <- caller
    return _from_cell(sys._getframe(3), through=_USER_DISPLAY, not_from=_INTERNAL_IDS)


def _machinery(module: str) -> bool:
    """A module of the kernel's machinery (`_MACHINERY`), whose doings are not the cell's."""
    return module.startswith(_MACHINERY) or module in ("IPython", "ipykernel")


def _from_cell(f: Any, *, through: tuple[str, ...] = (), not_from: tuple[str, ...] = ()) -> bool:
    """Whether frame `f` runs for the cell: walking out, a notebook frame (``__main__``: the
    cell or a notebook function) comes before the kernel's machinery, before module code being
    imported, and before a frame of a module in `not_from` (a prefix). Frames of the modules
    in `through` are walked through like a library's."""
    while f is not None:
        name = f.f_globals.get("__name__")
        if type(name) is str:
            if name == "__main__":
                return True
            if name in through:
                f = f.f_back
                continue
            if _machinery(name) or (not_from and name.startswith(not_from)):
                return False
            if f.f_code.co_name == "<module>" or name.startswith("importlib"):
                return False  # module code run by an import
        f = f.f_back
    return False


def _note_entropy(*_args: Any) -> None:
    rec = _current
    if rec is None or rec.busy or threading.get_ident() in rec.ignored_threads:
        return
    rec.busy = True
    try:
        if _cell_drew_entropy():
            rec._note(ENTROPY_AT_RUNTIME)
    except Exception:  # noqa: BLE001 - never raise into the caller of os.urandom
        pass
    finally:
        rec.busy = False


def _probe(real: Any, name: str, note: Callable[..., None], module: str) -> Any:
    """`real` (a function of positional arguments), calling `note` with its arguments first
    while a cell is recorded: one global lookup otherwise. ``_kernel_agent`` marks it as ours
    (installed once). It is installed as ``module.name``, and says so: a variable holding it
    (``from time import perf_counter`` after ``%load_ext``) is pickled by reference to that
    attribute, the restoring process's own, not by value as a copy of the wrapper."""
    def probe(*args: Any) -> Any:
        if _current is not None:
            note(*args)
        return real(*args)

    return _as_installed(probe, real, name, module)


def _as_installed(probe: Any, real: Any, name: str, module: str) -> Any:
    """`probe`, named and documented as `real` installed at ``module.name``, and marked ours."""
    probe.__name__ = probe.__qualname__ = name
    probe.__module__ = module
    probe.__doc__ = real.__doc__
    probe.__wrapped__ = real
    probe._kernel_agent = True
    return probe


def _install_entropy_probe() -> None:
    """Note, while a cell is recorded, when code it runs draws OS entropy.

    There is no audit event for it. The bytecode markers see ``uuid4()`` or ``os.urandom`` in
    the notebook's own code only; a library that draws entropy (a pandas Styler's ``uuid4``
    id, ``np.random.default_rng()`` without a seed inside a library function) made a cell
    that a re-run cannot reproduce, and a plan recomputing its outputs restored values that
    did not verify. Only ``os.urandom`` is wrapped, not the copy ``random`` keeps of it
    (``SystemRandom``, ``secrets``): numpy draws from that one to seed a bit generator it then
    seeds again, deterministically (``RandomState(0)``, which scikit-learn makes for every
    ``random_state=0``). The wrapper costs a global lookup when no cell is recorded.
    """
    if not getattr(os.urandom, "_kernel_agent", False):
        os.urandom = _probe(os.urandom, "urandom", _note_entropy, "os")


CLOCK_AT_RUNTIME = CLOCK + " ({name}, called from {module})"
#: the time module's clocks, wrapped by `_install_clock_probe`
_CLOCKS = ("time", "time_ns", "perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns",
           "process_time", "process_time_ns", "thread_time", "thread_time_ns")
#: modules whose clock reads never reach their results: timeouts, progress bars, log records'
#: timestamps, joblib's batch sizing, profilers (a log line's time is the log's business)
_CLOCK_BENIGN = ("logging", "tqdm", "joblib", "queue", "concurrent", "subprocess", "selectors",
                 "socket", "ssl", "multiprocessing", "sched", "cProfile", "profile", "timeit",
                 "http", "urllib", "urllib3", "requests", "debugpy", "pydevd", "_pydevd_bundle",
                 "matplotlib", "warnings", "tempfile", "random")
#: code objects of `_CLOCK_BENIGN` modules and the machinery that called a clock: decided once
_clock_ignored: set[Any] = set()
_MAIN_THREAD = threading.main_thread().ident


def _benign_clock_caller(module: Any) -> bool:
    if type(module) is not str:
        return True
    return module.partition(".")[0] in _CLOCK_BENIGN or _machinery(module)


def _note_clock(name: str) -> None:
    """A clock was read while a cell is recorded: noted when library code the cell called
    read it (scikit-learn's ``cv_results_`` and ``cross_validate`` hold fit and score times:
    re-run, such a cell made another value, which did not verify). The notebook's own code
    is covered by the bytecode markers; the kernel's machinery, imports and the libraries in
    `_CLOCK_BENIGN` are not the cell's doing.

    Noted in the cell's `varies`, not its effects: most library clock reads time a verbose
    printout (a histogram gradient boosting's iterations), and such a cell is safe to re-run.
    The planner ships what it made when it can and re-runs it only when it must (a deadline,
    a value with no pickle); the restore's verification then tells."""
    rec = _current
    if rec is None or rec.busy or rec.clock or threading.get_ident() in rec.ignored_threads:
        return
    rec.busy = True
    try:
        f = sys._getframe(2)  # _note_clock <- probe <- caller
        code = f.f_code
        if code in _clock_ignored:
            return
        module = f.f_globals.get("__name__")
        if _benign_clock_caller(module):
            if len(_clock_ignored) < 10_000:
                _clock_ignored.add(code)
            return
        # in another thread (not the kernel's): a worker of the cell's (joblib's threading
        # backend fits and times in its threads), whose stack does not reach the cell
        if threading.get_ident() == _MAIN_THREAD and not _from_cell(f):
            return  # (an import, the kernel's machinery: not cached, the same code may be
            # called from the cell next)
        rec.clock = True
        rec.varies.append(CLOCK_AT_RUNTIME.format(name=f"time.{name}", module=module))
    except Exception:  # noqa: BLE001 - never raise into the caller of a clock
        pass
    finally:
        rec.busy = False


def _install_clock_probe() -> None:
    """Note, while a cell is recorded, when library code it runs reads the clock.

    Only calls through the time module's attributes are seen (``time.time()``, as
    scikit-learn's model selection reads it); a library that bound ``from time import time``
    before ``%load_ext`` holds the clock itself. Outside a cell a wrapper costs a global
    lookup; inside, a decided caller costs a set lookup."""
    import time as time_module

    for name in _CLOCKS:
        real = getattr(time_module, name, None)
        if real is None or getattr(real, "_kernel_agent", False):
            continue
        setattr(time_module, name, _clock_probe(real, name))


def _clock_probe(real: Any, name: str) -> Any:
    """`_probe` for a clock (no arguments), with the check whether the cell already read one
    inlined: a loop polling ``time.perf_counter()`` pays an attribute read per call."""
    def probe() -> Any:
        rec = _current
        if rec is not None and not rec.clock:
            _note_clock(name)
        return real()

    return _as_installed(probe, real, name, "time")


#: a cell that asked the user for input (``input()``, ``getpass.getpass()``, a debugger's
#: prompt): re-run at a restore it asks again, in the middle of the restore, and the answer
#: given then (or none: a server-driven restore allows no stdin) makes another value
READS_INPUT = "asks the user for input (input(), getpass)"


def _install_input_probe(shell: Any) -> None:
    """Note, while a cell is recorded, when code it runs asks the frontend for input.

    ipykernel points ``input``, ``getpass.getpass`` (and so ``pdb``, ``breakpoint()``) at its
    kernel's ``raw_input``/``getpass``, which both send the request through
    ``_input_request``: wrapped once on the kernel instance, it sees every such prompt,
    whoever called it, at no cost to cells that ask for nothing. Before, the planner took
    ``name = input()`` for a cheap cell to re-run: the restore prompted the user again and
    the value made from the new answer was reported as differing, blamed on the hash seed."""
    kernel = getattr(shell, "kernel", None)
    real = getattr(kernel, "_input_request", None)
    if real is None or getattr(real, "_kernel_agent", False):
        return

    def probe(*args: Any, **kwargs: Any) -> Any:
        rec = _current
        if rec is not None and threading.get_ident() not in rec.ignored_threads:
            rec._note(READS_INPUT)
        return real(*args, **kwargs)

    functools.update_wrapper(probe, real)
    probe._kernel_agent = True  # type: ignore[attr-defined]
    try:
        kernel._input_request = probe
    except Exception:  # noqa: BLE001 - a kernel that refuses: no probe, as before
        log.debug("kernel_agent: could not watch the kernel's input requests", exc_info=True)


#: a cell that called the agent itself: what `kernel_agent.checkpoint()` / `restore()` return
#: is this session's, and re-run by a restore they do nothing (`restoring.replaying`), so
#: ``summary = kernel_agent.restore(url)`` recomputed was another dict, reported as differing
#: and blamed on the hash seed
CALLS_AGENT = "calls kernel_agent.{what}(), which a re-run inside a restore skips"


def note_agent_call(what: str, effect: bool) -> None:
    """The cell being recorded (if any) called the agent's `what` (checkpoint, restore).

    A restore is an `effect`: the cell is never re-run (its re-run restores nothing, and what
    it binds is the restored session's). A checkpoint makes the cell one whose re-run `varies`:
    what the cell made is shipped whenever it can be; re-run when it must (a deadline), the
    summary it bound is another value, which the restore names with this reason."""
    rec = _current
    if rec is None or threading.get_ident() in rec.ignored_threads:
        return
    text = CALLS_AGENT.format(what=what)
    if effect:
        rec._note(text)
    elif text not in rec.varies:
        rec.varies.append(text)


STARTS_THREAD = "starts a thread running notebook code"


def notebook_code(target: Any) -> str | None:
    """The name of `target` if calling it runs the notebook's code or changes an object the
    notebook holds: a function or method defined in ``__main__`` (or a partial of one), or a
    builtin method of a container (``res.append``). None for a library's own thread."""
    for _ in range(8):
        inner = getattr(target, "func", None)  # functools.partial
        if inner is None or not callable(inner):
            break
        target = inner
    func = getattr(target, "__func__", target)
    if getattr(func, "__module__", None) == "__main__":
        return getattr(func, "__qualname__", None) or repr(func)
    owner = getattr(target, "__self__", None)
    if type(target).__name__ == "builtin_function_or_method" and type(owner) in _CONTAINERS:
        return f"{type(owner).__name__}.{getattr(target, '__name__', '?')}"
    return None


_CONTAINERS = (list, dict, set, bytearray)


def _thread_code(function: Any) -> str | None:
    """What notebook code a thread started with `function` runs (see `_notebook_code`)."""
    thread = getattr(function, "__self__", None)
    if not isinstance(thread, threading.Thread):  # `_thread.start_new_thread(f, args)`
        return notebook_code(function)
    if isinstance(thread, threading.Timer):  # (its run() calls `function` after a delay)
        return notebook_code(thread.function)
    run = type(thread).run
    if run is not threading.Thread.run:  # a Thread subclass with a run() of its own
        return notebook_code(run)
    return notebook_code(getattr(thread, "_target", None))


def _note_thread(function: Any, *_args: Any) -> None:
    rec = _current
    if rec is None or rec.busy or threading.get_ident() in rec.ignored_threads:
        return
    rec.busy = True
    try:
        code = _thread_code(function)
        if code is None:
            return
        thread = getattr(function, "__self__", None)
        if isinstance(thread, threading.Thread):
            rec.threads.append((thread, code))  # noted if it still runs when the cell ends
        else:
            rec._note(f"{STARTS_THREAD} ({code})")
    except Exception:  # noqa: BLE001 - never raise into Thread.start
        pass
    finally:
        rec.busy = False


def _install_thread_probe() -> None:
    """Note, while a cell is recorded, when it starts a thread that runs notebook code.

    There is no audit event for it (before Python 3.13). Re-run at a restore, such a cell
    starts the thread again, and the thread goes on changing the namespace after the restore
    verified it: ``t = Thread(target=fill); t.start()`` with ``res`` shipped (filled by the
    thread after the cell) came back with ``fill`` appending to the loaded ``res`` a second
    time, verified. The cell is then not re-run: what it made is shipped (or named as lost).
    A thread that ended before its cell did (``t.start(); t.join()``) is not noted: all it did
    was done within the cell, as a re-run does it again. ``Thread.start`` calls
    ``threading._start_new_thread``, which is wrapped; the wrapper costs a global lookup when
    no cell is recorded.
    """
    if not getattr(threading._start_new_thread, "_kernel_agent", False):
        threading._start_new_thread = _probe(threading._start_new_thread, "_start_new_thread",
                                              _note_thread, "threading")


STARTS_TASK = "schedules notebook code on the event loop"
# what a cell is marked with while notebook code a thread, a pool job or an event-loop task of
# an earlier cell runs on: what changed during it (or since the cell before) may be its doing
BACKGROUND = "ran while notebook code an earlier cell started in the background was running"


def _install_executor_probe() -> None:
    """Note, while a cell is recorded, the jobs it submits to a thread pool that run notebook
    code (``pool.submit(fill)``, ``loop.run_in_executor(None, fill)``).

    The thread probe misses them: the pool's threads run ``concurrent.futures``' worker loop,
    and one started by an earlier job runs the next without starting any. A job still running
    when its cell ends is the thread case again: re-run at a restore, it runs again after the
    restore verified the namespace (appending to a shipped list a second time)."""
    from concurrent.futures import thread as cf_thread

    real = cf_thread.ThreadPoolExecutor.submit
    if getattr(real, "_kernel_agent", False):
        return

    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        future = real(self, fn, *args, **kwargs)
        rec = _current
        if rec is not None and not rec.busy and threading.get_ident() not in rec.ignored_threads:
            try:
                code = notebook_code(fn)
                if code is not None:
                    rec.futures.append((future, code))
            except Exception:  # noqa: BLE001 - never raise into submit
                pass
        return future

    functools.update_wrapper(submit, real)
    submit._kernel_agent = True  # type: ignore[attr-defined]
    cf_thread.ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]


def _coroutine_code(coro: Any, depth: int = 2) -> str | None:
    """The notebook code a coroutine runs: its own (defined in ``__main__``), or, for a
    library coroutine not yet started (``asyncio.wait_for(fill(), 5)``), a notebook coroutine
    or callable among its arguments."""
    frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    if frame is None:
        return None
    if frame.f_globals.get("__name__") == "__main__":
        return getattr(coro, "__qualname__", None) or repr(coro)
    if depth <= 0:
        return None
    for v in list(frame.f_locals.values()):
        code = (_coroutine_code(v, depth - 1) if hasattr(v, "cr_frame") or hasattr(v, "gi_frame")
                else notebook_code(v))
        if code is not None:
            return code
    return None


def _loop_work(seen: weakref.WeakSet) -> list[tuple[Any, str]]:
    """Tasks and callbacks pending on the running event loop (the kernel's) that run notebook
    code and are not in `seen`; every pending one is added to `seen` (examined once)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return []
    out: list[tuple[Any, str]] = []
    for task in asyncio.all_tasks(loop):
        if task in seen:
            continue
        seen.add(task)
        code = _coroutine_code(task.get_coro())
        if code is not None:
            out.append((task, code))
    for handle in itertools.chain(getattr(loop, "_ready", ()), getattr(loop, "_scheduled", ())):
        try:
            if handle in seen or handle.cancelled():
                continue
            seen.add(handle)
        except TypeError:  # not weakly referenceable: not an asyncio Handle
            continue
        code = notebook_code(getattr(handle, "_callback", None))
        if code is not None:
            out.append((handle, code))
    return out


def _finished(work: Any) -> bool:
    """Whether a thread, a pool job, a task or an event-loop callback is over."""
    if isinstance(work, threading.Thread):
        return not work.is_alive()
    done = getattr(work, "done", None)
    if done is not None:
        return bool(done())
    if work.cancelled():
        return True
    loop = getattr(work, "_loop", None)
    return not (work in getattr(loop, "_ready", ()) or work in getattr(loop, "_scheduled", ()))


def _note_figure(figure: Any) -> None:
    rec = _current
    if rec is None or threading.get_ident() in rec.ignored_threads:
        return
    rec.figures[id(figure)] = figure  # (held until the cell ends: its id stays its own)


def install_pyplot_probe() -> None:
    """Note, while a cell is recorded, the figures it drew on through pyplot's current figure.

    ``plt.plot(...)``, ``plt.title(...)``, a pandas ``s.plot()`` or a seaborn plot change the
    figure pyplot holds as current, which a variable (``fig, ax = plt.subplots()`` in an
    earlier cell) may hold too, without naming it: the cell was not known to change ``fig``.
    Its re-run was left out of a replay, or it was re-run on top of the shipped figure (a
    second line); either way the figure came back different, and a figure is checked by type
    only. pyplot reaches its current figure through its module global ``gcf`` (``gca()`` is
    ``gcf().gca()``), which is wrapped once pyplot is imported (called before and after each
    cell: a dictionary lookup until then); the wrapper notes what it returns. The monitor
    then counts the variables that reach a noted figure as touched by the cell."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    real = getattr(plt, "gcf", None)
    if real is None or not callable(real) or getattr(real, "_kernel_agent", False):
        return

    def gcf(*args: Any, **kwargs: Any) -> Any:
        figure = real(*args, **kwargs)
        if _current is not None:
            try:
                _note_figure(figure)
            except Exception:  # noqa: BLE001 - never raise into pyplot
                pass
        return figure

    functools.update_wrapper(gcf, real)
    gcf._kernel_agent = True  # type: ignore[attr-defined]
    plt.gcf = gcf


def install() -> None:
    """Install the audit hook (once per process: audit hooks cannot be removed), the
    entropy probe and the thread probe."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit_hook)
            _install_entropy_probe()
            _install_clock_probe()
            _install_thread_probe()
            _install_executor_probe()
            _installed = True


def _torchinductor_default() -> str | None:
    """torch's default compiler cache directory (``torch._inductor.runtime.cache_dir_utils``),
    computed the way torch does without importing it."""
    import getpass
    import re
    import tempfile

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name: torch uses the uid
        getuid = getattr(os, "getuid", None)
        user = f"uid_{getuid()}" if callable(getuid) else "unknown_user"
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def kernel_paths(shell: Any = None) -> tuple[str, ...]:
    """Directories the kernel machinery writes to on its own (never the user's doing)."""
    paths: list[str] = []

    def add(p: Any) -> None:
        if p:
            try:
                paths.append(os.path.abspath(os.fsdecode(os.fspath(p))))
            except Exception:  # noqa: BLE001
                pass

    home = os.path.expanduser("~")
    add(os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"))
    add(os.environ.get("MPLCONFIGDIR"))
    add(os.path.join(home, ".matplotlib"))
    add(os.path.join(home, ".config", "matplotlib"))
    add(os.path.join(home, ".ipython"))
    # torch's compiler caches: the first optimizer a cell makes imports torch._dynamo, which
    # creates its cache directory (re-run elsewhere it is simply made again)
    add(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or _torchinductor_default())
    add(os.environ.get("TRITON_CACHE_DIR") or os.path.join(home, ".triton"))
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        add(jupyter_runtime_dir())
    except Exception:  # noqa: BLE001
        pass
    if shell is not None:
        for getter in (lambda: shell.profile_dir.location,
                       lambda: shell.history_manager.hist_file,
                       lambda: getattr(shell.kernel, "connection_file", None) if hasattr(shell, "kernel") else None):
            try:
                add(getter())
            except Exception:  # noqa: BLE001
                pass
    try:
        import tempfile

        add(os.path.join(tempfile.gettempdir(), f"ipykernel_{os.getpid()}"))
    except Exception:  # noqa: BLE001
        pass
    return tuple(sorted(set(paths)))


def user_data_paths(shell: Any = None) -> tuple[str, ...]:
    """Where, inside the kernel's own directories (`kernel_paths`), the user keeps data:
    ``%store x`` pickles x into the profile's ``db/autorestore``, for ``%store -r`` in any
    later session. Writing there is a side effect (a restore re-running ``%store x`` would put
    an old x back over what another notebook stored since) and reading it is reading a file.
    (Not the rest of ``db``: ``%cd`` keeps its directory history there.)"""
    try:
        location = shell.profile_dir.location if shell is not None else None
        if location:
            return (os.path.join(os.path.abspath(os.fsdecode(os.fspath(location))), "db",
                                 "autorestore"),)
    except Exception:  # noqa: BLE001
        pass
    return ()


def kernel_ports() -> set[int]:
    """The ports of this kernel's own ZMQ channels (from the connection file), if known."""
    ports: set[int] = set()
    try:
        from ipykernel.kernelapp import IPKernelApp

        if IPKernelApp.initialized():
            app = IPKernelApp.instance()
            for attr in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
                port = getattr(app, attr, 0)
                if port:
                    ports.add(int(port))
    except Exception:  # noqa: BLE001
        pass
    return ports


class EffectWatcher:
    """Per-monitor façade: `begin()` before a cell runs, `end()` after it returns the effects."""

    def __init__(self, shell: Any = None, ignored_threads: Iterable[int] | None = None):
        install()
        _install_input_probe(shell)
        if ignored_threads is None:
            me = threading.get_ident()
            ignored_threads = {t.ident for t in threading.enumerate()
                               if t.ident is not None and t.ident != me}
        self.ignored_threads = set(ignored_threads)
        self.ignored_prefixes = kernel_paths(shell)
        self.user_prefixes = user_data_paths(shell)
        self.ignored_ports = kernel_ports()
        self.library_prefixes = _library_prefixes()
        self.files = FileActivity()  # of the last cell `end()` returned the effects of
        self.figures: dict[int, Any] = {}  # of that cell: pyplot figures it drew on implicitly
        self.varies: list[str] = []  # of that cell: why a re-run may make other values
        # notebook code started in the background by recorded cells (threads, pool jobs,
        # event-loop tasks and callbacks), running at the end of the last cell
        self.background: list[Any] = []
        self._loop_seen: weakref.WeakSet = weakref.WeakSet()
        self._during = False  # some of it may have run since the last cell or during this one

    @property
    def background_ran(self) -> bool:
        """Whether notebook code a recorded cell started in the background (a thread, a pool
        job, an event-loop task or callback) was running at the end of the last recorded cell:
        since then it may have run, changing what the cell now beginning finds."""
        return self._during

    def begin(self) -> None:
        global _current
        self._during = bool(self.background)
        self.files = FileActivity()
        self.figures = {}
        self.varies = []
        _current = _Recorder(self.ignored_threads, self.ignored_prefixes, self.ignored_ports,
                             self.library_prefixes, self.user_prefixes)

    def end(self) -> list[str]:
        """The cell's effects; the files it read and changed are left in `self.files`."""
        global _current
        rec, _current = _current, None
        if rec is None:
            self.files = FileActivity()
            self.figures = {}
            self.varies = []
            return []
        self.files = rec.files
        self.figures = rec.figures
        self.varies = rec.varies
        if self._during:
            rec._note(BACKGROUND)
        self.background = [w for w in self.background if not _finished(w)]
        for thread, code in rec.threads:
            if thread.is_alive():
                rec._note(f"{STARTS_THREAD} ({code})")
                self.background.append(thread)
        for future, code in rec.futures:
            if not future.done():
                rec._note(f"{STARTS_THREAD} ({code})")
                self.background.append(future)
        try:
            for work, code in _loop_work(self._loop_seen):
                rec._note(f"{STARTS_TASK} ({code})")
                self.background.append(work)
        except Exception:  # noqa: BLE001 - a check: never fatal
            log.debug("kernel_agent: could not look at the event loop's tasks", exc_info=True)
        effects = rec.effects
        if len(effects) > MAX_EFFECTS:
            effects = effects[:MAX_EFFECTS] + [f"... and {len(effects) - MAX_EFFECTS} more effects"]
        return effects

    def cancel(self) -> None:
        global _current
        _current = None
