"""Records every cell execution of the kernel into the Application History Graph.

Runs inside the user's ipykernel process, in the IPython `pre_run_cell` / `post_run_cell`
events (registered by `kernel_agent.extension`). Per recorded cell: raw code, wall time,
execution count, names read (`analysis`), written and deleted (static stores plus a namespace
id-diff), mutated in place (`changes.Tracker`), failure, side effects (`effects`) and the random
generators' state (`rng`); the result goes into `self.graph` (`graph.HistoryGraph`).

The contract with the user: a silent execution is neither recorded nor disturbed; nothing here
ever raises into the cell or prints. Any internal failure degrades to "every touched name was
modified" (and, if even that fails, to a cell marked as not re-runnable so its outputs get
shipped) plus a log line on the ``kernel_agent`` logger.
"""

from __future__ import annotations

import _signal
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from kernel_agent import analysis, carried, procstate, rng
from kernel_agent.changes import (
    Tracker,
    dynamic_module,
    local_source,
    note_local_loads,
    source_stat,
)
from kernel_agent.dictversion import dict_version
from kernel_agent.effects import (
    ENTROPY,
    ENTROPY_AT_RUNTIME,
    MAX_FILES,
    UNSEEDED,
    USES_ID,
    EffectWatcher,
    getcwd,
    install_pyplot_probe,
    notebook_code,
)
from kernel_agent.graph import OUTSIDE_CHANGE_CODE, CellExecution, HistoryGraph

log = logging.getLogger("kernel_agent")

RUNS_WITH_CALLBACK = ("ran with a pre_run_cell callback of the notebook's, which a restore does "
                      "not run")

# Never user variables even when IPython does not list them as hidden.
EXCLUDED_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
#: IPython's own `_` names: output history (``_``, ``__``, ``___``, ``_3``, ``_oh``), input
#: history (``_i``, ``_ii``, ``_iii``, ``_i3``, ``_ih``), ``_dh``, and ``!cmd``'s ``_exit_code``
_IPYTHON_PRIVATE = re.compile(r"_{1,3}|_\d+|_i{1,3}|_i\d+|_ih|_oh|_dh|_exit_code")
UNTRACKED_READ = "reads {names} whose value predates monitoring (created before %load_ext or in a silent execution)"
INTERNAL_ERROR = "not recorded precisely (internal monitor error; see the kernel_agent log)"
# the user interrupted the cell and its code caught the KeyboardInterrupt (`except
# KeyboardInterrupt:` around a training loop): it ended without failing, where the interrupt
# stopped it
INTERRUPTED = ("it was interrupted (KeyboardInterrupt) and went on: a re-run would run to "
               "the end, not stop where it did")


@dataclass
class _Pending:
    """What pre_run_cell saw, for post_run_cell."""

    info: Any
    code: str
    snap: _Snap  # keys and value ids of the whole namespace before the cell
    user_before: set[str]
    analysis: analysis.CellAnalysis | None  # None: the cell does not compile
    rng_before: Any = None
    rng_fp: bytes | None = None  # rng.fingerprint() before the cell
    numpy_before: bool = False
    problems: list[str] = field(default_factory=list)
    t0: float = 0.0
    hidden: frozenset[str] = frozenset()  # _hidden_names() before the cell
    hook_s: float = 0.0  # time spent in pre_run_cell
    hook_cpu_s: float = 0.0  # CPU time of this thread in pre_run_cell
    cwd: str | None = None  # working directory the cell started in
    process: procstate.ProcessState | None = None  # environment, options, paths before it
    modules: tuple[int, int | None] = (0, None)  # len and version tag of sys.modules before it
    #: the cell runs no code but its own `name = constant` lines (see `_runs_nothing`): it
    #: cannot draw random numbers nor change process state, which are then not read for it
    inert: bool = False

    @property
    def ids(self) -> dict[Any, int]:
        """{name: id(value)} of the namespace before the cell, built on demand: a checkpoint
        taken inside a cell (`checkpointing._changed_by_running_cell`) reads it."""
        return dict(zip(self.snap.keys, self.snap.ids.tolist(), strict=True))


class Monitor:
    """Watches one IPython shell; the checkpoint/restore engine reads `graph` and `tracker`.

    Engine-facing API: `graph`, `tracker`, `shell`, `user_names(ns)`, `paused()`, `adopt(graph)`.
    """

    #: bytes of arrays a cell's update may hash per second the cell ran, on top of
    #: `Tracker.hash_budget`: xxh3 hashes several GB/s, so about 1 % of the cell's time. A
    #: cell that trains a model for 20 s on a 100 MB array is then checked for changing it
    #: (it did not: the features derived from the array stay cheap to recompute) instead of
    #: being taken for its writer, which would make everything derived from it later require
    #: that 20 s cell.
    hash_budget_per_s = 64 << 20

    #: between cells, the kernel's event loop finishes fingerprints that a cell's update left
    #: partial (over its hash budget), one co-variable per loop step, each at most this many
    #: bytes (~30 ms at xxh3 speed: what a cell submitted meanwhile may wait). A later cell
    #: that only reads such an array is then not taken for its writer. 0 = off.
    idle_hash_limit = 256 << 20

    #: ... once no cell has started for this long. 0: right after the execution replied, so a
    #: cell already queued ("Run All") waits for at most one step; hashing costs about 0.11 ms
    #: per MB, paid once per big array a cheap cell made or touched. A delay longer than the
    #: gap between queued cells (a few ms) keeps "Run All" free of it, and its plans then
    #: treat every cell that touched a big array as a possible writer of it.
    idle_delay_s = 0.0

    def __init__(self, shell: Any):
        self.shell = shell
        self.graph = HistoryGraph()
        self.tracker = Tracker()
        self.effects = EffectWatcher(shell)
        self._reach_cache: dict[str, tuple[int, analysis.Reach]] = {}
        # top-level package -> the notebook's objects a cell gave one of its objects
        # (``stats.norm.random_state = rng``, `carried.attached_objects`): a cell using the
        # library may change them without naming them (``stats.norm.rvs()`` draws from `rng`)
        self._attached: dict[str, list[Any]] = {}
        self._pending: _Pending | None = None
        self._paused = 0
        self._registered = False
        # relative paths opened in another directory would open other files on a re-run
        self.start_cwd = getcwd()
        # environment, import paths, working directory and options as monitoring found them:
        # a checkpoint carries what the session changed since (kernel_agent.carried)
        self.baseline = carried.Baseline()
        # files read by recorded cells -> (mtime_ns, size) when read: see check_files()
        self._watched: dict[str, tuple[int, int] | None] = {}
        # the notebook's own modules loaded so far, with their files as they are now: one
        # changed later is shipped by value (`changes.stale_local_modules`)
        note_local_loads()
        # the namespace after the last recorded cell and its user names: the next cell's
        # "before" is derived from it by a diff, not rebuilt from all names (see _user_before)
        self._last: _After | None = None
        # (rng.fingerprint(), raw state) after the last recorded cell: the next cell's state
        # before, while no draw happened in between
        self._rng_last: tuple[bytes, Any] | None = None
        # process state after the last recorded cell: the next cell's "before" (a change made
        # between cells, by a silent execution, is then counted as the next cell's: safe side)
        self._process_last: procstate.ProcessState | None = None
        # (number of hidden names, the last of them, those that could be the user's)
        self._hidden_cache: tuple[int, Any, frozenset[str]] = (0, None, frozenset())
        # Notebook code that runs outside recorded cells and that the agent knows of (a
        # thread, pool job or event-loop task a cell started, still running at its end; a
        # shell event callback the notebook registered, which runs after the monitor's
        # `post_run_cell`; a comm message's handler, a widget's observers): `_outside_epoch`
        # counts the cells that began while some may have run since the cell before;
        # `_touch_epoch` holds, once it is not 0, the count when each name was last touched
        # by a recorded cell. A change found in a name touched before the count last grew may
        # be that code's, not the cell's that found it (an append a task made between two
        # cells, found by `n = len(res)`, was taken for that cell's, which its re-run does
        # not make): see `outside_stale`
        self._outside_epoch = 0
        self._touch_epoch: dict[str, int] = {}
        self._comm_ran = False  # a comm message was handled since the last recorded cell
        # recorded cells started: a completion step scheduled before one waits for a pause
        self._executions = 0
        # the notebook's code catches KeyboardInterrupt (or everything): from then on cells
        # run under `_noting_int_handler`, so that one that caught the user's interrupt and
        # went on is known (`INTERRUPTED`). Only then: that handler is one more frame at the
        # end of the traceback of every interrupted cell
        self._catches_interrupt = False
        self._completing = False  # a completion step is scheduled on the event loop
        # time spent in our hooks (for the overhead benchmark and for users who wonder)
        # (hook_cpu_s: this thread's CPU time in them, which other load on the machine does
        # not inflate as it does wall time, nor the kernel's IO thread running while the hooks
        # wait for the GIL, as the process's CPU time would)
        self.stats: dict[str, float] = {"cells": 0, "hook_s": 0.0, "hook_max_s": 0.0,
                                         "hook_cpu_s": 0.0,
                                         "tracker_s": 0.0}
        try:
            ns = shell.user_ns
            self.tracker.reset(ns, self.user_names(ns))
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not fingerprint the existing variables")
        _warm_up()

    # -- engine-facing API ------------------------------------------------------------------

    def user_names(self, ns: Mapping[str, Any] | None = None) -> list[str]:
        """The user's variables: not `_`-prefixed, not IPython's own (`user_ns_hidden`, In, Out...).

        A hidden name the user rebinds (`exit = 3`) is theirs again, as in IPython's `%who`.
        """
        if ns is None:
            ns = self.shell.user_ns
        hidden = getattr(self.shell, "user_ns_hidden", None) or {}
        # fast path in C-ish comprehension: the namespace can hold thousands of names
        out = [n for n in ns if type(n) is str and n[:1] != "_" and n not in EXCLUDED_NAMES
               and n not in hidden]
        for n, v in list(hidden.items()):
            if (type(n) is str and n[:1] != "_" and n not in EXCLUDED_NAMES and n in ns
                    and ns[n] is not v):
                out.append(n)
        return out

    def private_names(self, ns: Mapping[str, Any] | None = None) -> list[str]:
        """Names the user bound with a leading ``_`` (``_cache = {}``, ``import numpy as _np``),
        which `user_names` leaves out, as IPython's ``%who`` does: no checkpoint keeps them.
        Listed so that a checkpoint and its restore say so; not IPython's own (``_``, ``_3``,
        ``_i3``, ``_ih``, ``_exit_code``...), dunder names (``__builtins__``) nor modules
        (``import kernel_agent as _ka``: imported again, and a name left unbound is loud)."""
        if ns is None:
            ns = self.shell.user_ns
        hidden = getattr(self.shell, "user_ns_hidden", None) or {}
        return sorted(
            n for n, v in list(ns.items())
            if type(n) is str and n[:1] == "_" and not _IPYTHON_PRIVATE.fullmatch(n)
            and not (n[:2] == "__" and n[-2:] == "__")
            and not (n in hidden and hidden[n] is v) and type(v) is not ModuleType)

    def keys_not_names(self, ns: Mapping[Any, Any] | None = None) -> list[str]:
        """The namespace's keys that are not plain strings (``globals()[1] = 'x'``, a key of a
        ``str`` subclass), as their repr: no variable (no code can name them), so neither
        `user_names` nor any checkpoint keeps them. Listed so that the checkpoint and its restore
        say so, not left out without a word."""
        if ns is None:
            ns = self.shell.user_ns
        out = []
        for k in list(ns):
            if type(k) is not str:
                try:
                    r = repr(k)
                except Exception:  # noqa: BLE001 - a key whose repr raises is still named
                    r = f"<{type(k).__qualname__} object>"
                out.append(r if len(r) <= 200 else r[:197] + "...")
        return sorted(out)

    def tracker_names(self) -> set[str]:
        """Names the tracker has fingerprinted (the engine links the others before planning)."""
        return self.tracker.tracked()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Record nothing inside (the restore engine re-runs cells and loads values here)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def adopt(self, graph: HistoryGraph,
              verified: Mapping[frozenset[str], int] | None = None) -> None:
        """Continue the history of a restored checkpoint, so the session can migrate again.

        The tracker is rebuilt from the current namespace; names of the graph that are no
        longer present (lost at restore) leave `active`. `verified`: co-variables the restore
        checked against their digests, with the cost of that walk (see `Tracker.reset`).
        """
        ns = self.shell.user_ns
        names = self.user_names(ns)
        present = set(names)
        for n in [n for n in graph.active if n not in present]:
            log.warning("kernel_agent: %s is in the restored history but not in the namespace", n)
            del graph.active[n]
        self.graph = graph
        self._watched = {p: source_stat(p) for c in graph.cells for p in c.files_read
                         if not c.effects}
        self._attached = {}
        for c in graph.cells:
            self._note_attached(c.code, ns)
        self._reach_cache.clear()
        self._last = None
        self._rng_last = None
        self._process_last = None
        self.tracker.reset(ns, names, verified)
        # (the restore checked every value against its digest: none is stale)
        self._outside_epoch, self._touch_epoch = 0, {}
        p = self._pending
        if p is not None:
            # adopt() runs inside the cell that called restore: what the restore put into the
            # namespace is the adopted history's, not that cell's writes
            p.snap = _Snap(ns)
            p.user_before = set(names)
            # nor is the process state its re-run cells set: that cell is no process-state
            # cell (`process_changed`, `process_state`) a later restore re-runs or names
            p.process = None

    # -- registration -----------------------------------------------------------------------

    def register(self) -> None:
        if not self._registered:
            self.shell.events.register("post_execute", self._schedule_completion)
            self.shell.events.register("pre_execute", self._note_comm_message)
            self.shell.events.register("pre_run_cell", self.pre_run_cell)
            self.shell.events.register("post_run_cell", self.post_run_cell)
            self._registered = True

    def unregister(self) -> None:
        if self._registered:
            for event, cb in (("post_execute", self._schedule_completion),
                              ("pre_execute", self._note_comm_message),
                              ("pre_run_cell", self.pre_run_cell),
                              ("post_run_cell", self.post_run_cell)):
                with contextlib.suppress(ValueError):
                    self.shell.events.unregister(event, cb)
            self._registered = False
        self.effects.cancel()
        self._pending = None

    # -- events -----------------------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Snapshot what the cell could change (ids, analysis, RNG) and start effect recording."""
        if not self._catches_interrupt:
            code = getattr(info, "raw_cell", None)
            self._catches_interrupt = type(code) is str and _catches_interrupt(code)
        with _no_gc(), _interrupts_held(
                "before the cell started",
                then=lambda: self._pending is not None and self._catches_interrupt):
            self._pre_run_cell(info)

    def _pre_run_cell(self, info: Any) -> None:
        t_in = time.perf_counter()
        c_in = time.thread_time()
        self._executions += 1
        try:
            if self._pending is not None:
                if _inside_user_code():
                    return  # get_ipython().run_cell(...) inside a recorded cell: part of it
                log.warning("kernel_agent: previous cell was never completed; dropping it")
                self.effects.cancel()
                self._pending = None
            _interrupted_in_cell.clear()  # (a cell starts: what was noted was another's)
            if getattr(info, "silent", False) or self._paused:
                return
            self.check_files()
            install_pyplot_probe()
            events = self._notebook_callbacks()
            self._pending = self._snapshot_before(info, events)
            self.effects.begin()
            if self.effects.background_ran or self._comm_ran or self.effects.background or events:
                self._outside_epoch += 1
                self._comm_ran = False
            if "pre_run_cell" in events:
                # what it changes is found as the cell's doing, and a restore re-runs cells
                # without it
                self._pending.problems.append(RUNS_WITH_CALLBACK)
            self._pending.t0 = time.perf_counter()
            self._pending.hook_s = self._pending.t0 - t_in
            self._pending.hook_cpu_s = time.thread_time() - c_in
        except Exception:  # noqa: BLE001 - never raise into the user's cell
            log.exception("kernel_agent: pre_run_cell failed; this cell is not recorded")
            self.effects.cancel()
            self._pending = None

    def post_run_cell(self, result: Any) -> None:
        """Diff, re-fingerprint and add the cell to the history graph."""
        with _no_gc(), _interrupts_held("after the cell had finished"):
            self._post_run_cell(result)

    def _post_run_cell(self, result: Any) -> None:
        p = self._pending
        if p is None or result is None or getattr(result, "info", None) is not p.info:
            return  # silent, paused, nested, or an empty cell (which gets no pre_run_cell)
        self._pending = None
        t_in = time.perf_counter()
        c_in = time.thread_time()
        runtime = t_in - p.t0
        try:
            fx = self.effects.end()
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: effect recording failed")
            fx = [INTERNAL_ERROR]
        if _interrupted_in_cell:
            _interrupted_in_cell.clear()
            fx = [*fx, INTERRUPTED]
        install_pyplot_probe()  # (imported by this cell: the next one is probed)
        _note_loads(p)
        try:
            self._record(p, result, runtime, fx)
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not record cell %r precisely; treating every "
                          "variable as modified by it", _short(p.code))
            try:
                self._record_degraded(p, result, runtime, fx)
            except Exception:  # noqa: BLE001
                log.exception("kernel_agent: could not record cell %r at all", _short(p.code))
        spent = p.hook_s + time.perf_counter() - t_in
        self.stats["hook_cpu_s"] += p.hook_cpu_s + time.thread_time() - c_in
        self.stats["cells"] += 1
        self.stats["hook_s"] += spent
        self.stats["hook_max_s"] = max(self.stats["hook_max_s"], spent)

    # -- between cells ----------------------------------------------------------------------

    def _schedule_completion(self) -> None:
        """After an execution (post_execute comes before post_run_cell, so the steps see this
        cell's update): finish partial fingerprints on the kernel's event loop once no cell
        has started for `idle_delay_s`."""
        try:
            if self.idle_hash_limit <= 0 or self._completing:
                return
            io_loop = getattr(getattr(self.shell, "kernel", None), "io_loop", None)
            if io_loop is None or not self.tracker.incomplete(self.idle_hash_limit):
                return
            self._completing = True
            io_loop.call_later(self.idle_delay_s, self._complete_step, io_loop, self._executions,
                               set())
        except Exception:  # noqa: BLE001 - never raise into the user's cell
            self._completing = False
            log.exception("kernel_agent: could not schedule work between cells")

    def _complete_step(self, io_loop: Any, executions: int, tried: set[str]) -> None:
        """One co-variable per event-loop step: a cell submitted meanwhile runs in between; one
        that started since the step was scheduled postpones the rest to the next pause."""
        if executions != self._executions or self._pending is not None or self._paused:
            io_loop.call_later(self.idle_delay_s, self._complete_step, io_loop,
                               self._executions, set())
            return
        t0 = time.perf_counter()
        more = False
        try:
            names = [n for n in self.tracker.incomplete(self.idle_hash_limit) if n not in tried]
            if names:
                tried.add(names[0])  # (one left partial, or rebound meanwhile: not again)
                with _no_gc():
                    self.tracker.complete(self.shell.user_ns, names[:1])
                more = len(names) > 1
        except Exception:  # noqa: BLE001 - never break the kernel's event loop
            log.exception("kernel_agent: finishing a fingerprint between cells failed")
        finally:
            self.stats["idle_s"] = self.stats.get("idle_s", 0.0) + time.perf_counter() - t0
            if more:
                io_loop.call_later(0, self._complete_step, io_loop, executions, tried)
            else:
                self._completing = False

    def _note_comm_message(self) -> None:
        """`pre_execute` also comes before a comm message's handler (a widget's: ``observe``
        callbacks of the notebook's run on a slider the user moves): code that runs between
        cells. Noted for the next cell (`_outside_epoch`). A look at two frames per event."""
        try:
            if self._pending is not None or self._comm_ran:
                return
            f = sys._getframe(2)  # <- EventManager.trigger <- the caller
            if f.f_code.co_name == "handle_msg" and "comm" in str(f.f_globals.get("__name__")):
                self._comm_ran = True
        except Exception:  # noqa: BLE001 - never raise into the kernel
            pass

    def _outside_since(self) -> bool:
        """Whether notebook code may have run outside recorded cells since the last one: a comm
        message was handled, background work a cell started is running, or the notebook has
        registered shell event callbacks."""
        return self._comm_ran or bool(self.effects.background) or bool(self._notebook_callbacks())

    def _notebook_callbacks(self) -> list[str]:
        """The shell events the notebook registered callbacks of its own for (their code runs
        between cells, or, for `pre_run_cell`, inside the cell's recording, after the monitor's
        snapshot: `events.register('post_run_cell', count)`). A look at a few short lists."""
        callbacks = getattr(getattr(self.shell, "events", None), "callbacks", None)
        if not isinstance(callbacks, dict):
            return []
        return [event for event in ("pre_execute", "pre_run_cell", "post_execute", "post_run_cell")
                if any(notebook_code(cb) is not None for cb in callbacks.get(event, ()))]

    def outside_stale(self, names: Collection[str], in_cell: bool = False) -> set[str]:
        """Names among `names` that notebook code running outside recorded cells may have
        changed since a recorded cell last touched them (see `_outside_epoch`). `in_cell`: as
        the cell being recorded found them, else now (a checkpoint, maybe between cells)."""
        epoch = self._outside_epoch + (not in_cell and self._outside_since())
        if not epoch:
            return set()
        last = self._touch_epoch
        return {n for n in names if last.get(n, 0) < epoch}

    def record_outside_changes(self, names: Collection[str],
                               user: Collection[str] | None = None) -> int | None:
        """Record that `names` changed outside recorded cells (`Tracker.drifted`), as an
        execution (`CellExecution.outside`, a comment) that mutated them; returns its index
        (None: nothing recorded). The history then says that re-running their cells does not
        recreate them. The tracker takes their current state, so the next cell is compared
        with it."""
        ns = self.shell.user_ns
        user = set(self.user_names(ns)) if user is None else set(user)
        changed = sorted(n for n in names if n in user)
        if not changed:
            return None
        self.tracker.update(ns, changed, (), defer=False)
        if self._outside_epoch:
            for n in changed:
                self._touch_epoch[n] = self._outside_epoch
        cell = CellExecution(
            index=len(self.graph.cells),
            code=OUTSIDE_CHANGE_CODE,
            mutated=changed,
        )
        self.graph.record(cell, self.tracker.covariable_of, user)
        log.info("kernel_agent: %s changed outside recorded cells; recorded as cell %d",
                 ", ".join(changed), cell.index)
        return cell.index

    def check_files(self) -> list[int]:
        """Mark cells whose input files changed since they read them (outside recorded cells).

        Changes made by recorded cells are matched when those cells are recorded; this catches
        the rest (the user edits `mymod.py` or replaces `data.csv` between cells). It runs
        before every recorded cell, so before the cell that calls `checkpoint()`; a checkpoint
        taken without a cell (server extension, background) should call it first. Cost: one
        `stat` per distinct file read by a still re-runnable cell (capped by MAX_WATCHED).
        Returns the cells newly marked.
        """
        marked: list[int] = []
        try:
            for path, seen in list(self._watched.items()):
                now = source_stat(path)
                if now != seen:
                    del self._watched[path]
                    what = "it was deleted since" if now is None else "it changed since"
                    marked += self.graph.file_changed(path, what)
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not check the files cells read")
        return marked

    # -- internals --------------------------------------------------------------------------

    def _snapshot_before(self, info: Any, events: Collection[str] = ()) -> _Pending:
        shell = self.shell
        ns = shell.user_ns
        code = getattr(info, "raw_cell", None) or ""
        hidden = self._hidden_names()
        snap, user = self._before(ns, hidden)
        p = _Pending(info=info, code=code, snap=snap, user_before=user, analysis=None,
                     cwd=getcwd(), hidden=hidden,
                     process=self._process_last or procstate.snapshot(),
                     modules=(len(sys.modules), dict_version(sys.modules)))
        try:
            transformed = getattr(info, "transformed_cell", None)
            if transformed is None:
                # IPython transforms a cell after pre_run_cell, and its transforms (magics, !,
                # ?, prompts, indentation) only ever turn invalid Python into valid Python: a
                # cell that compiles as it is needs no transform, which costs milliseconds
                # per hundred lines
                try:
                    p.analysis = analysis.analyze_cell(shell, code, ns, cache=self._reach_cache,
                                                       plain=self.tracker.plain)
                except SyntaxError:
                    transformed = shell.transform_cell(code)
            if p.analysis is None:
                p.analysis = analysis.analyze_cell(shell, transformed, ns, cache=self._reach_cache,
                                                   plain=self.tracker.plain)
        except (SyntaxError, ValueError, TypeError, OverflowError, MemoryError, RecursionError):
            p.analysis = None  # IPython reports it and runs nothing (error_before_exec)
        except Exception as e:  # noqa: BLE001
            log.exception("kernel_agent: read analysis failed; the cell reads every variable")
            p.analysis = analysis.CellAnalysis(dynamic=f"analysis failed: {type(e).__name__}")
        p.inert = (p.analysis is not None and not events and not self.effects.background
                   and _runs_nothing(p.analysis, ns))
        if p.inert:
            # (`_rng_last` stays: the next cell compares its generators' fingerprint with it)
            return p
        try:
            p.rng_fp = fp = rng.fingerprint()
            last = self._rng_last
            self._rng_last = None
            if fp is not None and last is not None and last[0] == fp:
                p.rng_before = last[1]
            else:
                p.rng_before = rng.raw_state()
            p.numpy_before = "numpy" in sys.modules
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not capture the RNG state")
            p.problems.append("random generator state not captured")
        return p

    def _hidden_names(self) -> frozenset[str]:
        """Names of IPython's hidden variables that `user_names` could count as the user's
        (the `_`-prefixed ones, most of them, never are).

        IPython adds keys to the hidden names at every execution and otherwise mostly rebinds
        them, so the keys after the last one seen, read backwards from the end, are the new
        ones when their number accounts for the whole growth (no key deleted meanwhile; else
        all are read again). Copying and comparing every key instead grew with the session:
        about 160 us a cell after 3,000 executions."""
        hidden = getattr(self.shell, "user_ns_hidden", None) or {}
        n, last, names = self._hidden_cache
        new: list[Any] = []
        try:
            found = False
            if n:
                for k in reversed(hidden):
                    if k is last:
                        found = True
                        break
                    new.append(k)
            if not found or len(hidden) != n + len(new):
                new, names = list(hidden), frozenset()
            last = next(reversed(hidden), None)
        except TypeError:  # a mapping that cannot be read backwards: all of it, every time
            new, names, last = list(hidden), frozenset(), None
        if new:
            names = names | {k for k in new
                             if type(k) is str and k[:1] != "_" and k not in EXCLUDED_NAMES}
        self._hidden_cache = (len(hidden) if last is not None else 0, last, names)
        return names

    def _before(self, ns: Mapping[str, Any], hidden: frozenset[str]) -> tuple[_Snap, set[str]]:
        """The namespace snapshot and user names before a cell, derived from those after the
        last recorded cell: reused as they are when the namespace dict has not changed since
        (its version tag), else updated by a diff (IPython's `_iN`, silent executions, comm
        callbacks). O(changes) rather than O(names), except for the id snapshot of a diff."""
        last = self._last
        self._last = None
        if last is not None and last.version is not None and dict_version(ns) == last.version:
            return last.snap, last.user
        snap = _Snap(ns)
        if last is None:
            return snap, set(self.user_names(ns))
        changed, deleted = _diff(last.snap, snap)
        user = self._apply_diff(ns, last.user, changed, deleted, hidden | last.hidden)
        # user names bound since the last recorded cell, by no recorded cell: an event-loop
        # task or callback, a thread, a shell event callback (`post_run_cell`, which runs after
        # the monitor's), a widget's or comm's callback, a silent execution. Recorded as
        # changed outside cells now, before a cell reads them: recorded at the checkpoint, the
        # value a reader read was the one the history said its cells made (`counter = 0`,
        # then `y = counter`: recomputed as 0 where y was 3, where `counter` had come to be).
        # Names new since are not: no recorded cell made them, so they are shipped, and a cell
        # reading them is not re-run (`UNTRACKED_READ`)
        outside = changed & user & last.user
        if outside:
            try:
                self.record_outside_changes(outside, user)
            except Exception:  # noqa: BLE001 - never raise into the user's cell
                log.exception("kernel_agent: could not record names bound outside cells")
        return snap, user

    def _apply_diff(self, ns: Mapping[str, Any], user: set[str], changed: set[Any],
                    deleted: set[Any], hidden_names: frozenset[str]) -> set[str]:
        """`user` (the user names before; not modified) updated for keys new or rebound, keys
        deleted, and `hidden_names` (hidden before or now: their status is recomputed)."""
        out = user - deleted
        recheck = changed | hidden_names
        if recheck:
            out -= recheck
            hidden = getattr(self.shell, "user_ns_hidden", None) or {}
            for n in recheck:
                if (type(n) is str and n[:1] != "_" and n not in EXCLUDED_NAMES and n in ns
                        and (n not in hidden or ns[n] is not hidden[n])):
                    out.add(n)
        return out

    def _record(self, p: _Pending, result: Any, runtime: float, fx: list[str]) -> None:
        ns = self.shell.user_ns
        version = dict_version(ns)
        snap = _Snap(ns)
        changed, gone = _diff(p.snap, snap)  # new or rebound keys, deleted keys
        hidden = self._hidden_names()
        recheck = hidden | p.hidden
        user_after = self._apply_diff(ns, p.user_before, changed, gone, recheck)
        self._last = _After(snap, user_after, hidden, version)
        written = changed & user_after
        # only keys deleted or rechecked can have left the user names (see _apply_diff): not
        # a difference of two sets of every name
        before = p.user_before
        deleted = {n for n in gone | changed | recheck if n in before and n not in user_after}
        ana = p.analysis
        if ana is None:
            reads: set[str] = set()
            stores: set[str] = set()
        elif ana.dynamic:
            reads = set(p.user_before)
            stores = ana.stores | ana.maybe_written
        else:
            reads = ana.reads & p.user_before
            stores = ana.stores | ana.maybe_written
            # a module of the notebook's it imported for the first time (or reloaded) may
            # read the notebook's variables through its caller's frame: known only now
            ana.dynamic = (analysis.imported_dynamic(ana.imports, submodules=True)
                           or analysis.imported_dynamic(_imported_by(p, ns, reads)))
            if ana.dynamic:
                reads = set(p.user_before)
            elif ana.injected:
                # what the notebook put in builtins (`builtins.G = gen`) and the cell loads by
                # name: the variables holding it are read (and may change) too
                reads |= self.tracker.holders([id(v) for v in ana.injected]) & p.user_before
            if self._attached:
                reads |= self._attached_holders(ns, reads, p.user_before)
        self._note_attached(p.code, ns)
        touched = (reads | written | stores) & user_after
        figures = self.effects.figures
        if figures:
            # what holds a figure the cell drew on through pyplot's current one (`plt.title`,
            # `s.plot()`), which it need not have named (see `effects.install_pyplot_probe`)
            touched |= self.tracker.holders(figures) & user_after
            self.effects.figures = {}  # (not kept alive until the next cell)
        opaque: set[str] = set()
        t_track = time.perf_counter()
        try:
            upd = self.tracker.update(ns, touched=sorted(touched), removed=sorted(deleted),
                                      hash_budget=int(runtime * self.hash_budget_per_s))
            opaque = set(upd.opaque)
            mutated = ((set(upd.mutated) | (opaque & touched)) & user_after) - written
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: change detection failed; touched names count as modified")
            mutated = touched - written
        self.stats["tracker_s"] = self.stats.get("tracker_s", 0.0) + time.perf_counter() - t_track
        if self._outside_epoch:
            # a change of a name untouched since notebook code ran outside the cells may be
            # that code's: recorded as made outside the cells (before this one), so no plan
            # recomputes it by re-running cells that did not make it
            stale = self.outside_stale(mutated, in_cell=True)
            if stale:
                try:
                    self.record_outside_changes(stale, user_after)
                except Exception:  # noqa: BLE001
                    log.exception("kernel_agent: could not record changes made outside cells")
            epoch = self._outside_epoch
            for n in touched:
                self._touch_epoch[n] = epoch
            for n in deleted:
                self._touch_epoch.pop(n, None)
        cache = self._reach_cache
        for n in written | deleted:
            cache.pop(n, None)
        for n in (mutated | opaque) - written - deleted:
            hit = cache.get(n)
            # a "reads everything" verdict (typically: the object graph exceeds the analysis
            # budget) is the most conservative answer there is, so it stays right however the
            # same object changes; dropping it re-walked 20,000 objects after every touch of a
            # big deferred co-variable (which always counts as mutated)
            if hit is not None and not hit[1].dynamic:
                del cache[n]

        error = result.error_before_exec or result.error_in_exec
        effects = list(fx) + list(p.problems)
        if ana is not None:
            if ENTROPY in ana.markers and ENTROPY_AT_RUNTIME in effects:
                effects.remove(ENTROPY_AT_RUNTIME)  # the cell's own code says it already
            effects += sorted(ana.markers - {USES_ID})
            if ana.dynamic:
                log.debug("kernel_agent: cell reads every variable: %s", ana.dynamic)
        untracked = sorted(n for n in (reads | mutated) & p.user_before if n not in self.graph.active)
        if untracked:
            shown = ", ".join(untracked[:5]) + (f" and {len(untracked) - 5} more" if len(untracked) > 5 else "")
            effects.append(UNTRACKED_READ.format(names=shown))
        rng_key = self._rng_key(p, effects)
        files = self.effects.files
        files_read = list(files.read)
        for path in _module_sources(ns, reads):
            if path not in files_read:
                files_read.append(path)
        if files.relative and p.cwd is not None and p.cwd != self.start_cwd:
            effects.append(
                f"opened {files.relative[0]} by a relative path in working directory {p.cwd}, "
                f"not the kernel's starting directory {self.start_cwd}"
            )
        if files.overflow:
            log.debug("kernel_agent: cell %r touched more than %d files", _short(p.code), MAX_FILES)
        changed_ns = bool(written or mutated or deleted)
        context = (not changed_ns and error is None and not effects
                   and (any(type(ns.get(n)) is ModuleType and not dynamic_module(ns[n])
                            for n in reads)
                        or (ana is not None and ana.uses_shell)))
        # (a cell that ran no code of its own left it as it was; a change made meanwhile by
        # anything else is the next cell's, as one made between cells is)
        process = p.process if p.inert and p.process is not None else procstate.snapshot()
        self._process_last = process
        # it changed the environment, paths, warnings or library options, whatever else it
        # bound (`import os; os.environ["K"] = "1"; DATA = "/data"`). Not one that changed
        # variables in place (re-running it would change them again), nor one of imports only
        # (what importing did, importing does again: sklearn sets KMP_* variables).
        process_changed = (p.process is not None and p.process.differs(process)
                           and not procstate.only_imports(p.code))
        process_state = (process_changed and error is None and not effects and not mutated
                         and not deleted)
        cell = CellExecution(
            index=len(self.graph.cells),
            code=p.code,
            runtime_s=runtime,
            execution_count=getattr(result, "execution_count", None),
            reads=sorted(reads),
            writes=sorted(written),
            mutated=sorted(mutated),
            deletes=sorted(deleted),
            failed=error is not None,
            error=_describe(error) if error is not None else None,
            effects=_dedupe(effects),
            rng_state=rng_key,
            files_read=files_read,
            files_relative=list(files.relative),
            files_changed=list(files.changed),
            context=context,
            process_state=process_state,
            process_changed=process_changed,
            varies=list(self.effects.varies),
            uses_id=ana is not None and USES_ID in ana.markers,
        )
        self.graph.record(cell, self.tracker.covariable_of, user_after)
        if not cell.effects and not cell.failed:
            for path in files_read:
                if path not in self._watched and len(self._watched) < MAX_WATCHED:
                    self._watched[path] = source_stat(path)
        for path in files.changed:
            self._watched.pop(path, None)  # record() already marked its readers

    def _note_attached(self, code: str, ns: Mapping[str, Any]) -> None:
        """Remember the notebook's objects `code` gave a library's objects (`_attached`)."""
        for package, obj in carried.attached_objects(code, ns):
            held = self._attached.setdefault(package, [])
            if not any(o is obj for o in held):
                held.append(obj)

    def _attached_holders(self, ns: Mapping[str, Any], reads: set[str],
                          before: Collection[str]) -> set[str]:
        """Names holding objects given to a library whose modules the cell reads: read (and
        maybe changed) through the library. By top-level package (``scipy`` for
        ``scipy.stats``): over-approximating is safe."""
        objs: list[Any] = []
        for n in reads:
            v = ns.get(n)
            if type(v) is ModuleType:
                held = self._attached.get(str(getattr(v, "__name__", "")).partition(".")[0])
                if held:
                    objs += held
        if not objs:
            return set()
        return self.tracker.holders([id(o) for o in objs]) & set(before)

    def _rng_key(self, p: _Pending, effects: list[str]) -> str | None:
        """Store the generators' state before the cell if the cell drew from them."""
        if p.rng_before is None:
            return None
        try:
            fp = rng.fingerprint()
            if fp is not None and fp == p.rng_fp:
                self._rng_last = (fp, p.rng_before)
                return None
            after = rng.raw_state()
            if fp is not None:
                self._rng_last = (fp, after)
            if p.rng_before[2] is None and after[2] is not None:
                # torch imported by the cell, its generator seeded from OS entropy: the state
                # the cell's draws started from is the one torch was seeded with, set again
                # before a re-run (else every weight `nn.Linear` drew came back different)
                start = rng.torch_import_state()
                if start is not None and start != after[2]:
                    p.rng_before = (*p.rng_before[:2], start, *p.rng_before[3:])
            if rng.raw_equal(p.rng_before, after):
                return None
            if not p.numpy_before and after[1] is not None and "seed" not in p.code:
                # numpy was imported by this cell and seeded itself from OS entropy: the state
                # its draws started from was never observable
                pos = after[1].get("state", {}).get("pos")
                if pos != 624:
                    effects.append(UNSEEDED + " (numpy's global generator, first used here)")
            state = rng.to_json(p.rng_before)
            key = rng.state_key(state)
            self.graph.rng_states.setdefault(key, state)
            return key
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not record the RNG state")
            effects.append("random generator state not captured")
            return None

    def _record_degraded(self, p: _Pending, result: Any, runtime: float, fx: list[str]) -> None:
        """Last resort: the cell read and rewrote everything, and must not be re-run."""
        ns = self.shell.user_ns
        self._last = None
        self._process_last = None
        user_after = set(self.user_names(ns))
        try:
            self.tracker.reset(ns, sorted(user_after))
            covariable_of = self.tracker.covariable_of
        except Exception:  # noqa: BLE001
            def covariable_of(name: str) -> frozenset[str]:
                return frozenset((name,))
        error = getattr(result, "error_before_exec", None) or getattr(result, "error_in_exec", None)
        self._reach_cache.clear()
        cell = CellExecution(
            index=len(self.graph.cells),
            code=p.code,
            runtime_s=runtime,
            execution_count=getattr(result, "execution_count", None),
            reads=sorted(p.user_before),
            writes=sorted(user_after),
            deletes=sorted(p.user_before - user_after),
            failed=error is not None,
            error=_describe(error) if error is not None else None,
            effects=_dedupe(list(fx) + [INTERNAL_ERROR]),
        )
        self.graph.record(cell, covariable_of, user_after)


MAX_WATCHED = 512  # distinct files whose changes check_files() looks for


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the hooks: a collection the user's cell made due
    (a million short-lived objects) would otherwise run inside them, and with it the user's
    ``__del__`` methods and weakref callbacks, in the middle of a namespace snapshot. The
    collection happens at the user's next allocations instead, as it would without the agent."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    procstate.gc_held = True  # (what the process-state snapshot reads as the user's setting)
    try:
        yield
    finally:
        procstate.gc_held = False
        gc.enable()


_SIGINT = int(getattr(_signal, "SIGINT", 2))


_interrupted_in_cell: list[int] = []
# `except KeyboardInterrupt`, `except (ValueError, BaseException) as e`, a bare `except:`;
# and code run by a nested `run_cell` (`%%capture`), which shows its errors and goes on
_CATCHES_INTERRUPT = re.compile(r"\bexcept\s*(?::|[^:\n]*\b(?:KeyboardInterrupt|BaseException)\b)"
                                r"|%%capture\b|\brun_cell\(")


#: values whose end runs no code: what the old value of a name a cell rebinds must be for
#: the cell to run none (see `_runs_nothing`)
_INERT_TYPES = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _runs_nothing(ana: analysis.CellAnalysis, ns: Mapping[str, Any]) -> bool:
    """Whether the cell analysed by `ana` runs no code but its own: nothing but ``name =
    constant`` lines (which call nothing and load no name) into a plain dict, rebinding only
    names unbound or bound to numbers, strings, or short lists and tuples of them, whose end
    runs no finalizer (a `__del__`, a generator's `finally`, a weakref callback)."""
    if not ana.constant or ana.dynamic or type(ns) is not dict:
        return False
    inert = _INERT_TYPES
    for name in ana.stores:
        v = ns.get(name)
        tp = type(v)
        if tp in inert:
            continue
        if (tp is list or tp is tuple) and len(v) <= 64 and all(type(x) in inert for x in v):
            continue
        return False
    return True


def _catches_interrupt(code: str) -> bool:
    """`_CATCHES_INTERRUPT` matches in `code`. Each of its branches holds one of three words,
    looked for first: the regular expression has no literal prefix to skip ahead by, and cost
    about 0.1 ms per hundred lines of a cell that has none of them."""
    if "except" not in code and "%%capture" not in code and "run_cell(" not in code:
        return False
    return _CATCHES_INTERRUPT.search(code) is not None


def _noting_int_handler(signum: int, frame: Any) -> None:
    """Python's default SIGINT handler (raise KeyboardInterrupt), noting that it ran."""
    __tracebackhide__ = True  # noqa: F841 - IPython leaves this frame out of tracebacks
    _interrupted_in_cell.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_held(when: str, then: Callable[[], bool] | None = None) -> Iterator[None]:
    """No KeyboardInterrupt inside the hooks: the user's interrupt (the kernel's SIGINT) that
    arrives while they run is noted and dropped, as it would be a moment later, when the
    kernel is idle. Raised in them, IPython caught it ("Error in callback") and the cell was
    never recorded: its writes and mutations were missing from the history (its new names
    then "predated monitoring"). Typically the user interrupting what looks like a cell still
    running, while the hook hashes what a long cell changed. Only when the handler is
    Python's default one (which raises); a handler of the user's is left alone.

    `then` (before a cell): whether the cell is recorded; if so its code runs under
    `_noting_int_handler`, which raises as the default one does and notes the interrupt, so
    that a cell that caught it is known as interrupted (`INTERRUPTED`)."""
    # (the C module: the `signal` module's enum conversions made this 25 us, now 1 us)
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _signal.getsignal(_SIGINT)
    if handler is not _signal.default_int_handler and handler is not _noting_int_handler:
        yield
        return
    arrived: list[int] = []
    _signal.signal(_SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        noting = then is not None and then()
        _signal.signal(_SIGINT, _noting_int_handler if noting else _signal.default_int_handler)
        if arrived:
            log.warning("kernel_agent: an interrupt arrived while the monitor recorded a cell "
                        "(%s); ignored", when)


def _warm_up() -> None:
    """Pay the one-off costs of the hooks at `%load_ext`, not inside the user's first cells:
    reading numpy's generator state imports numpy.random (about 30 ms), the library prefixes
    scan sys.path, a first walk and partition fill the type caches."""
    try:
        rng.raw_state()
        _module_sources({"os": os}, {"os"})
        shared: list[Any] = []
        t = Tracker()
        ns = {"a": [shared, {"k": (1, shared)}], "b": shared}
        t.reset(ns, ["a", "b"])
        ns["c"] = [shared]
        t.update(ns, ["c"], [])
    except Exception:  # noqa: BLE001 - only a warm-up
        log.debug("kernel_agent: warm-up failed", exc_info=True)


_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


def _note_loads(p: _Pending) -> None:
    """Note the notebook's own modules the cell imported or reloaded, with their files as
    they are now (`changes.note_local_loads`); nothing when ``sys.modules`` is unchanged."""
    n, version = p.modules
    if version is not None and dict_version(sys.modules) == version:
        return
    try:
        new = max(len(sys.modules) - n, 0)
        note_local_loads(itertools.islice(reversed(sys.modules), new))
    except Exception:  # noqa: BLE001 - never fail the cell's recording for this
        log.exception("kernel_agent: noting the modules a cell loaded failed")


def _imported_by(p: _Pending, ns: Mapping[str, Any], reads: set[str]) -> set[str]:
    """Modules a cell may have run code of that the analysis before it could not see (besides
    those its import statements name): those that joined sys.modules while it ran (imported
    by `importlib.import_module` or inside a function; new entries are at the end of the
    dict, and an unchanged version tag says none joined) and those it read (a reload)."""
    out: set[str] = set()
    n, version = p.modules
    if version is None or dict_version(sys.modules) != version:
        new = len(sys.modules) - n
        if new > 0:
            # (per top-level package: importing sklearn adds 1,500 modules, 7 us each to check)
            names = list(itertools.islice(reversed(sys.modules), new))
            local = {top for top in {n.partition(".")[0] for n in names} - _STDLIB
                     if analysis.local_module_name(top)}
            if local:
                out.update(n for n in names if n.partition(".")[0] in local)
    for name in reads:
        v = ns.get(name)
        if type(v) is ModuleType and type(v.__name__) is str:
            out.add(v.__name__)
    return out


def _module_sources(ns: Mapping[str, Any], names: set[str]) -> list[str]:
    """Source files of the notebook's own modules that the cell's reads lead to.

    Reading `mymod.V` reads mymod.py as much as `open()` does: if a later cell (or the user)
    rewrites it and reloads, re-running this cell would see the new code. Installed libraries
    are left out (they change only with the environment, which the restore checks).
    """
    out: list[str] = []
    for n in names:
        v = ns.get(n)
        if type(v) is ModuleType:
            mod = v
        else:
            modname = getattr(v, "__module__", None) if callable(v) else None
            if type(modname) is not str or modname in ("__main__", "builtins"):
                continue
            mod = sys.modules.get(modname)
        f = local_source(mod)
        if f is not None and f not in out:
            out.append(f)
    return out


_PTR_SIZE = ctypes.sizeof(ctypes.c_void_p)
_ID_IS_ADDRESS = (sys.implementation.name == "cpython"
                  and np.dtype(np.uintp).itemsize == _PTR_SIZE)


@dataclass
class _After:
    """The namespace after the last recorded cell (see Monitor._before)."""

    snap: _Snap
    user: set[str]
    hidden: frozenset[str]
    version: int | None


class _Snap:
    """Keys and value ids of a namespace, in its order, built in C. Holds no reference to the
    values, so a cell that drops a big object frees it. A dict of ids cost about 1 ms per 4,000
    names twice per cell, and a diff of two of them as much again."""

    __slots__ = ("keys", "ids")

    def __init__(self, ns: Mapping[str, Any]):
        self.keys = tuple(ns)
        self.ids = _ids(ns.values(), len(self.keys))


def _ids(values: Any, n: int) -> np.ndarray:
    """id() of every value as an array. On CPython an id is the object's address, which is
    what an object array stores: copying those out is 4x faster than calling id() 4,000 times
    (the array's references are dropped on return)."""
    if _ID_IS_ADDRESS and n:
        try:
            objs = np.fromiter(values, dtype=object, count=n)
            # (not a ctypes array type of n items: a new type per namespace size, 20-100 us)
            addr = objs.__array_interface__["data"][0]
            return np.frombuffer(ctypes.string_at(addr, n * _PTR_SIZE), dtype=np.uintp)
        except Exception:  # noqa: BLE001 - fall back to id()
            pass
    return np.array(list(map(id, values)), dtype=np.uintp)


def _diff(before: _Snap, after: _Snap) -> tuple[set[Any], set[Any]]:
    """(keys new or bound to another object, keys deleted) from `before` to `after`.

    Dicts keep insertion order and only append, so when the old keys are a prefix of the new
    ones (no deletion: the usual cell) the rebound keys are where the id arrays differ.
    """
    n = len(before.keys)
    if len(after.keys) >= n and after.keys[:n] == before.keys:
        keys = after.keys
        changed = {keys[i] for i in np.flatnonzero(after.ids[:n] != before.ids).tolist()}
        changed.update(keys[n:])
        return changed, set()
    b = dict(zip(before.keys, before.ids.tolist(), strict=True))
    a = dict(zip(after.keys, after.ids.tolist(), strict=True))
    return {k for k, _ in a.items() - b.items()}, set(b.keys() - a.keys())


def _describe(error: BaseException) -> str:
    try:
        msg = str(error)
    except Exception:  # noqa: BLE001 - a hostile __str__
        msg = "<unprintable>"
    return f"{type(error).__name__}: {msg}"[:500]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _short(code: str) -> str:
    first = code.strip().splitlines()[0] if code.strip() else ""
    return first[:60]


def _inside_user_code() -> bool:
    """Whether we are called from inside InteractiveShell.run_code (a nested run_cell)."""
    f = sys._getframe(2)
    while f is not None:
        co = f.f_code
        if co.co_name == "run_code" and "interactiveshell" in co.co_filename:
            return True
        f = f.f_back
    return False
