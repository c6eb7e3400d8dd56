"""Restore a checkpointed session into a fresh kernel: load, re-run, verify, resume monitoring.

Runs in the kernel process. Everything that can be checked before the namespace is touched is
checked first (manifest schema and authentication, every blob's hash), so bad input leaves the
kernel as it was. Then cells are re-run in their original order with the shipped co-variables
loaded right after the cell that produced them, and every co-variable is verified against the
digest recorded at checkpoint time: the result is the same session, or a report that says
precisely which variables are not.
"""

from __future__ import annotations
import __future__

import ast
import asyncio
import enum
import gc
import importlib
import inspect
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from types import CodeType, ModuleType
from typing import Any

from IPython.utils.capture import capture_output

from kernel_agent import carried, effects, environment, rng
from kernel_agent.changes import digest_report, id_tokens
from kernel_agent.checkpointing import KEY_NOTE, PRIVATE_NOTE, id_anchor_names, identity_note
from kernel_agent.manifest import CovariableEntry, Manifest, signing_key
from kernel_agent.serialize import loads_deferred
from kernel_agent.store import Store, StoreError, open_store

log = logging.getLogger("kernel_agent")


_replay = threading.local()


def replaying() -> bool:
    """True while a restore re-runs recorded cells (they must not checkpoint or restore)."""
    return getattr(_replay, "active", False)


class RestoreError(RuntimeError):
    """The checkpoint cannot be restored here; the message says why and what to do."""


def _shell_and_monitor(shell: Any) -> tuple[Any, Any]:
    from kernel_agent.extension import get_monitor

    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        raise RestoreError("kernel_agent.restore() must run inside an IPython kernel")
    mon = get_monitor(shell)
    if mon is None:
        shell.extension_manager.load_extension("kernel_agent")
        mon = get_monitor(shell)
    return shell, mon


def _check(entry: CovariableEntry, values: Mapping[str, Any]) -> tuple[bool, Any, str | None]:
    """Whether `values` (the co-variable's names) match the recorded digest: (ok, the digest
    report or None, a detail worth reporting or None)."""
    try:
        report = digest_report({n: values[n] for n in entry.names}, like=entry.digest)
    except Exception as e:  # noqa: BLE001 - a hostile __eq__/__reduce__ must not stop a restore
        return False, None, f"digest failed: {type(e).__name__}: {e}"
    if report.digest == entry.digest:
        return True, report, None
    if entry.digest_loaded and report.digest == entry.digest_loaded:
        return True, report, ("equal to the checkpointed value as its library pickles it (state "
                              "the library computes lazily was filled in on load)")
    return False, report, None


def _check_ids(graph: Any, ns: Mapping[str, Any], entry: CovariableEntry,
               present: set[str]) -> bool:
    """Whether the re-run values of `entry` match its `digest_ids` (`identity_digest`)."""
    try:
        anchors = id_anchor_names(graph, entry.names, present)
        tokens = id_tokens({n: ns[n] for n in anchors})
        return digest_report({n: ns[n] for n in entry.names}, ids=tokens).digest == entry.digest_ids
    except Exception:  # noqa: BLE001 - not verified, as without it
        log.debug("kernel_agent: id digest of %s failed", entry.names, exc_info=True)
        return False


def _reattach_streams(captured: Any) -> None:
    """Give what re-run cells took of ``sys.stdout``/``sys.stderr`` the kernel's streams back.

    Re-run cells run with both replaced by the capture that keeps their output out of the
    notebook, so ``logging.basicConfig()``, ``StreamHandler()``, ``out = sys.stdout`` or a
    progress bar made in them held that capture's StringIO after the restore: the session's
    log lines vanished from then on. The dicts and lists that hold one of the captures (a
    handler's ``stream``, a variable) get the real stream in its place.
    """
    own = {id(vars(captured))}
    for fake, real in ((captured._stdout, sys.stdout), (captured._stderr, sys.stderr)):
        if fake is None:
            continue
        for holder in gc.get_referrers(fake):
            if id(holder) in own:
                continue
            if type(holder) is list:
                for i, v in enumerate(holder):
                    if v is fake:
                        holder[i] = real
                continue
            if type(holder) is not dict:
                # (an instance whose attributes Python keeps inline, without a dict object)
                try:
                    holder = object.__getattribute__(holder, "__dict__")
                except Exception:  # noqa: BLE001 - no instance dict: nothing we can rebind
                    continue
                if type(holder) is not dict:
                    continue
            for k, v in list(holder.items()):
                if v is fake:
                    holder[k] = real


def _import_modules(entry: CovariableEntry) -> dict[str, ModuleType]:
    """The values of an "import" co-variable: each library module it names, imported here."""
    return {n: importlib.import_module(m) for n, m in (entry.modules or {}).items()}


def _rerunnable(graph: Any, cells: list[int]) -> str | None:
    """Why these cells cannot be safely re-run, or None."""
    for i in cells:
        c = graph.cells[i]
        if c.failed:
            return f"cell {i} failed when it ran"
        reasons = c.rerun_blockers()
        if reasons:
            return f"cell {i} cannot be re-run ({'; '.join(reasons)})"
    return None


def restore(
    url: str,
    checkpoint_id: str | None = None,
    *,
    force: bool = False,
    store_options: dict | None = None,
    shell: Any = None,
    store: Store | None = None,
) -> dict:
    """Restore the checkpoint `checkpoint_id` (default: the latest) from `url` into this kernel.

    A restore that does not finish (the user's interrupt, an error of the engine's own) puts
    the namespace back as it found it before raising: half of a replay (a list a re-run loop
    had filled halfway, names not yet loaded) was left in the kernel, unverified and with no
    history, and the next checkpoint shipped it as the session's state, which the restore after
    that then verified."""
    if replaying():
        # a recorded cell that called restore() is being re-run by this restore
        return {"skipped": "a restore is re-running recorded cells; nothing restored"}
    effects.note_agent_call("restore", effect=True)
    shell, mon = _shell_and_monitor(shell)
    ns = shell.user_ns
    saved, graph = dict(ns), mon.graph
    try:
        return _restore(url, checkpoint_id, force=force, store_options=store_options,
                        shell=shell, store=store)
    except BaseException as e:
        if mon.graph is graph:  # (not adopted yet: nothing of the checkpoint is the session's)
            undone = _put_back(ns, saved)
            if undone:
                note = (f"kernel_agent: the restore did not finish ({type(e).__name__}); the "
                        f"names it had bound ({', '.join(undone[:8])}"
                        f"{', ...' if len(undone) > 8 else ''}) were removed or set back as "
                        "they were before it: run the restore again")
                log.warning("%s", note)
                if hasattr(e, "add_note"):
                    e.add_note(note)
        raise


def _put_back(ns: dict, saved: dict) -> list[str]:
    """Make `ns` what `saved` holds again (by identity); the user names that changed."""
    changed = []
    for n in [n for n in ns if n not in saved]:
        del ns[n]
        changed.append(n)
    for n, v in saved.items():
        if n not in ns or ns[n] is not v:
            ns[n] = v
            changed.append(n)
    return sorted(n for n in changed if type(n) is str and not n.startswith("_"))


def _restore(
    url: str,
    checkpoint_id: str | None,
    *,
    force: bool,
    store_options: dict | None,
    shell: Any,
    store: Store | None,
) -> dict:
    from kernel_agent.graph import HistoryGraph

    t0 = time.perf_counter()
    shell, mon = _shell_and_monitor(shell)
    ns = shell.user_ns
    # Imported modules are not state (`import kernel_agent` before calling restore is expected).
    before = set(mon.user_names(ns))
    before_ids = {n: id(ns[n]) for n in before}
    existing = sorted(n for n in before if not isinstance(ns[n], ModuleType))
    if existing and not force:
        raise RestoreError(
            f"this kernel already has variables ({', '.join(existing[:8])}"
            f"{', ...' if len(existing) > 8 else ''}): restore into a fresh kernel, or pass "
            "force=True to overwrite them"
        )
    store = store or open_store(url, **(store_options or {}))
    cid = checkpoint_id or store.latest()
    if cid is None:
        raise RestoreError(f"there is no checkpoint at {store.url}: check the URL")
    manifest = Manifest.from_bytes(store.get_manifest(cid), signing_key())
    graph = HistoryGraph.from_dict(manifest.graph)
    warnings: list[str] = []
    # loaded rather than re-run: blobs, and the library modules the manifest names (imported)
    shipped = [c for c in manifest.covariables if c.action in ("ship", "import")]
    loaded_keys = {c.key for c in shipped}
    blobs: dict[str, bytearray] = {}
    failed: dict[str, str] = {}

    def fetch(entry: CovariableEntry) -> tuple[str, bytearray | None, str | None]:
        try:
            return entry.key, store.get_blob(entry.blob, entry.nbytes), None
        except StoreError as e:
            return entry.key, None, str(e)

    # Phase 1: fetch and verify every shipped blob before anything is unpickled. The downloads
    # (I/O, in threads) overlap the library imports of the version check below, which the
    # unpickling needs anyway: on a large state the two are of the same order.
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kernel-agent-fetch")
    try:
        futures = [pool.submit(fetch, entry) for entry in shipped if entry.action == "ship"]
        drift = environment.differences(manifest.environment)
        for pkg, (then, now) in drift.items():
            warnings.append(f"{pkg} was {then} at checkpoint time and is {now} here")
        prepare_s = time.perf_counter() - t0  # manifest, authentication, library versions

        t_fetch = time.perf_counter()
        for fut in futures:
            key, data, err = fut.result()
            if data is not None:
                blobs[key] = data
            else:
                failed[key] = err or "unknown error"
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    fetch_s = time.perf_counter() - t_fetch  # what the downloads added after the imports

    # Library drift: a shipped value from a library whose version changed is recomputed instead
    # when its cells allow it (a pickle across versions may load wrong, silently).
    drifted: dict[str, list[str]] = {}  # loaded although a library it uses changed
    for entry in shipped:
        changed = [p for p in entry.packages if p in drift]
        if not changed or entry.key in failed or entry.action == "import":
            continue
        why_not = "no recorded cell recreates it" if not entry.requires else _rerunnable(graph, entry.requires)
        if why_not is None:
            failed[entry.key] = f"library version changed ({', '.join(changed)})"
            blobs.pop(entry.key, None)
        else:
            drifted[entry.key] = changed
            warnings.append(
                f"{', '.join(entry.names)}: loaded from the checkpoint although "
                f"{', '.join(changed)} changed since it was written, and it cannot be recomputed "
                f"({why_not}); check it"
            )

    # Unpickle every verified blob now, before any cell is re-run: a value that cannot be
    # loaded here (a __setstate__ that raises, a class missing in this image) can then still
    # fall back to recomputation like a missing blob. Co-variables share no objects, so loading
    # one early cannot disturb another; each is put into the namespace at its position.
    t_load = time.perf_counter()
    pyplot_before = {id(f) for f in _pyplot_figures()}
    loaded: dict[str, dict] = {}
    # key -> writes of the state of the notebook's modules and classes it holds, made when
    # the value is put in place (serialize.loads_deferred)
    state_writes: dict[str, list[Any]] = {}
    checked: dict[str, tuple[bool, Any, str | None]] = {}  # key -> _check() right after loading
    for entry in sorted(shipped, key=lambda e: e.position):
        if entry.action == "import":
            try:
                values, writes = _import_modules(entry), []
            except Exception as e:  # noqa: BLE001 - falls back below, or is named as lost
                failed[entry.key] = f"could not be imported ({type(e).__name__}: {e})"
                continue
        else:
            data = blobs.pop(entry.key, None)
            if data is None:
                continue
            try:
                values, writes = loads_deferred(data, namespace=ns)
            except Exception as e:  # noqa: BLE001 - falls back below, or is named as lost
                failed[entry.key] = f"could not be loaded ({type(e).__name__}: {e})"
                continue
        if writes:
            state_writes[entry.key] = writes  # checked once in place, with its state
        # A value whose pickle does not reproduce it (a __reduce__ or copyreg function that
        # drops attributes, a __getstate__ that leaves a cache out, a library's lossy pickle)
        # is recomputed instead when its cells allow it, like a blob that failed
        elif all(n in values for n in entry.names):
            checked[entry.key] = found = _check(entry, values)
            # (not an enum class: its digest differs from members it makes lazily, a Flag's
            # composites, and values elsewhere hold its members unlinked, as atoms: a class
            # re-created by its cell would not be theirs)
            if (not found[0] and entry.requires and _rerunnable(graph, entry.requires) is None
                    and not any(isinstance(v, enum.EnumMeta) for v in values.values())):
                failed[entry.key] = "its pickle does not reproduce it (loaded, it differs)"
                del checked[entry.key]
                continue
        loaded[entry.key] = values
    # (figures pyplot managed at checkpoint time register themselves with it when unpickled)
    pyplot_loaded = [f for f in _pyplot_figures() if id(f) not in pyplot_before]
    load_s = time.perf_counter() - t_load

    # Phase 2: the final plan. A shipped co-variable whose blob failed falls back to re-running
    # its cells when the history allows it; otherwise it is lost, by name.
    rerun = set(manifest.plan.get("rerun", []))
    outcome: dict[str, dict] = {}
    fallback: set[str] = set()
    for entry in shipped:
        if entry.key not in failed:
            continue
        why_not = (
            "no recorded cell recreates it" if not entry.requires else _rerunnable(graph, entry.requires)
        )
        if why_not is None:
            rerun.update(entry.requires)
            fallback.add(entry.key)
            warnings.append(f"{', '.join(entry.names)}: {failed[entry.key]}; recomputed instead")
        else:
            outcome[entry.key] = {
                "action": "lost",
                "detail": f"{failed[entry.key]}, and it cannot be recomputed: {why_not}",
            }

    # Phase 3: replay in the original order.
    t_replay = time.perf_counter()
    loads_at: dict[int, list[CovariableEntry]] = {}
    for entry in shipped:
        if entry.key in loaded:
            loads_at.setdefault(entry.position, []).append(entry)
    errors: list[str] = []
    first: dict[str, dict[str, Any]] = {}  # loaded before every re-run (position -1)
    failed_cells: set[int] = set()
    deleted_at = _deletions(graph)
    awaits = _AwaitRunner()
    with (mon.paused(), capture_output(display=True) as captured, _no_input(shell),
          _closing(awaits, errors, failed_cells)):
        for pos in sorted(rerun | set(loads_at)):
            if pos in rerun:
                _unbind_deleted(ns, pos, deleted_at)
                _replay.active = True
                try:
                    err = _rerun_cell(shell, graph, pos, awaits)
                finally:
                    _replay.active = False
                if err:
                    errors.append(err)
                    failed_cells.add(pos)
            for entry in loads_at.get(pos, []):
                for write in state_writes.pop(entry.key, ()):
                    try:
                        write()
                    except Exception as e:  # noqa: BLE001 - verification names the value
                        errors.append(f"{', '.join(entry.names)}: could not set the state of a "
                                      f"module or class it holds ({type(e).__name__}: {e})")
                values = loaded.pop(entry.key)
                ns.update(values)
                if pos < 0:
                    first[entry.key] = values
        # A value no recorded cell made (as it is now: changed outside cells, or by the cell
        # taking the checkpoint) is put in place before any re-run, for the cells that read
        # it; one that rebinds it makes an earlier version (`n_cells = 0` re-run for a function
        # after `n_cells` was loaded as a pre_run_cell callback had counted it): the loaded one
        # is the value as it was, bound again
        for values in first.values():
            for n, v in values.items():
                if n not in ns or ns[n] is not v:
                    ns[n] = v
    if rerun:
        _reattach_streams(captured)
        _manage_again(pyplot_loaded)
    not_carried: list[str] = []
    carried_state = carried.apply((manifest.environment or {}).get("process") or {},
                                  getattr(mon, "baseline", None), ns, not_carried)
    reattached, not_reattached = carried.reattach(
        (manifest.environment or {}).get("attachments") or [], ns)
    carried_state += reattached
    warnings.extend(f"a library object the session gave a value no longer holds it: {why}"
                    for why in not_reattached)
    warnings.extend(_unrestored_process_state(graph, rerun, carried_state, not_carried))
    replay_s = time.perf_counter() - t_replay

    # Phase 4: verify every co-variable against its recorded digest.
    t_verify = time.perf_counter()
    seed_note = environment.hash_seed_note(manifest.environment or {})
    lost_keys = {e.key for e in manifest.covariables if e.action == "lost"} | set(outcome)
    recomputed = [e for e in manifest.covariables
                  if e.key not in lost_keys
                  and (e.key not in loaded_keys or e.key in fallback)]
    from_lost = _recomputed_from_lost(graph, manifest.covariables, lost_keys, recomputed)
    variables: dict[str, dict] = {}
    all_names: set[str] = set()
    walked: dict[frozenset[str], int] = {}  # verified co-variables -> cost of their walk
    manifest_names = {n for e in manifest.covariables for n in e.names if n in ns}
    for entry in manifest.covariables:
        all_names.update(entry.names)
        if entry.key in outcome:
            result = outcome[entry.key]
        elif entry.action == "lost":
            result = {"action": "lost", "detail": entry.reason or "lost at checkpoint time"}
        else:
            action = ("loaded" if entry.key in loaded_keys and entry.key not in fallback
                      else "recomputed")
            result = {"action": action}
            missing = [n for n in entry.names if n not in ns]
            if missing:
                result = {"action": "lost", "detail": f"not recreated by re-running its cells ({', '.join(missing)} missing)"}
                if entry.key in from_lost:
                    result["detail"] += f": {from_lost[entry.key]}"
            else:
                early = checked.get(entry.key) if action == "loaded" else None
                if early is not None and not any(i > entry.position for i in rerun):
                    ok, report, detail = early  # no cell ran after it was put in place
                else:
                    ok, report, detail = _check(entry, ns)
                ids_note = identity_note(graph, entry.names)
                if not ok and action == "recomputed" and entry.digest_ids:
                    # re-run, it holds the ids of the restored objects: equal if each is the
                    # id of the object at the place the checkpointed one's object was
                    ok = _check_ids(graph, ns, entry, manifest_names)
                    if ok:
                        detail = ("its ids are those of the restored objects at the places of "
                                  "the checkpointed ones")
                if ids_note and action == "loaded":
                    # its ints are the checkpointed process's addresses: equal to the digest,
                    # not to what they named (`HistoryGraph.identity_cells`)
                    ok, detail = False, f"loaded from its copy, which cannot be right: {ids_note}"
                if detail:
                    result["detail"] = detail
                result["verified"] = ok
                if ok and report is not None:
                    walked[frozenset(entry.names)] = report.work
                if entry.key in drifted:
                    result["library_drift"] = drifted[entry.key]
                if entry.opaque:
                    result["type_checked_only"] = list(entry.opaque)
                broken = from_lost.get(entry.key) or next(
                    (f"its cell {c} failed when re-run" for c in sorted(failed_cells)
                     if c in (entry.requires or ()) and action == "recomputed"), None)
                if not ok and entry.key in from_lost:
                    # re-run against what its cells found in place of a lost value: lost too
                    result = {"action": "lost", "detail": "recomputed, it differs from the "
                              f"checkpointed value: {from_lost[entry.key]}"}
                elif ok and entry.opaque and broken:
                    # what is checked by type only (a hash object, a connection) verifies
                    # whatever its cells did: re-run without a lost value, or with a cell that
                    # failed (`h.update(salt)` with `salt` lost), it is not what it was
                    result = {"action": "lost", "detail": f"recomputed, but {broken}, and "
                              f"{', '.join(entry.opaque)} can only be checked by type"}
                elif not ok and ids_note and action == "recomputed":
                    result["detail"] = ("re-run, it differs from the checkpointed value as "
                                        f"values holding ids of new objects do: {ids_note}")
                elif not ok:
                    result.setdefault("detail", "value differs from the checkpointed one")
                    varied = next((c for c in entry.requires or ()
                                   if 0 <= c < len(graph.cells) and graph.cells[c].varies), None)
                    if action == "recomputed" and varied is not None:
                        result["detail"] += (f"; its cell {varied} makes other values when re-run "
                                             f"({graph.cells[varied].varies[0]})")
                    elif action == "recomputed" and seed_note:
                        result["detail"] += f"; {seed_note}"
        for n in entry.names:
            variables[n] = result
    verify_s = time.perf_counter() - t_verify

    t_resume = time.perf_counter()
    # Phase 5: leave exactly the checkpointed names, the generators where they were, and resume
    # monitoring with the restored history so the session can migrate again.
    for entry in manifest.covariables:
        # A name lost at checkpoint time that a cell re-run for other variables bound in
        # passing holds an earlier version (`m = pat.match(s)` re-run, while m's last version
        # came from a cell that cannot be): it looked restored while the report said lost.
        if entry.action != "lost":
            continue
        bound = [n for n in entry.names if n in ns and before_ids.get(n) != id(ns[n])]
        if bound:
            for n in bound:
                ns.pop(n, None)
            variables[bound[0]]["detail"] += (
                f" ({', '.join(bound)}: a re-run cell bound {'it' if len(bound) == 1 else 'them'}"
                " in passing, to an earlier version; removed)")
    # Names a re-run bound that the checkpoint does not have are dropped. What they held may
    # run code as it goes (a generator's `finally`, a `__del__`, a weakref callback) and bind
    # a name in turn (``globals()['closed'] = True``): the restored session had a variable
    # the notebook never had, and nothing said so. Dropped again until none appears.
    for _ in range(4):
        extra = [n for n in mon.user_names(ns) if n not in all_names and n not in before]
        if not extra:
            break
        for n in extra:
            ns.pop(n, None)
        gc.collect()  # (what sits in a cycle goes now, not at some later cell)
    if manifest.rng_final:
        try:
            rng.apply(manifest.rng_final)
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not restore the random generators' state")
    mon.adopt(graph, walked)
    if manifest.execution_count and hasattr(shell, "execution_count"):
        shell.execution_count = max(shell.execution_count, manifest.execution_count + 1)

    not_checkpointed = {
        n: PRIVATE_NOTE + (" (bound after the restore, by a re-run cell or before it: not verified)" if n in ns
                           else " (missing)")
        for n in (manifest.stats or {}).get("private_names", [])}
    if not_checkpointed:
        warnings.append(f"{', '.join(not_checkpointed)}: {PRIVATE_NOTE}")
    odd_keys = {k: KEY_NOTE for k in (manifest.stats or {}).get("keys_not_names", [])}
    if odd_keys:
        warnings.append(f"namespace keys {', '.join(odd_keys)}: {KEY_NOTE}")
        not_checkpointed.update(odd_keys)
    verified = all(v.get("verified") for v in variables.values())
    return {
        "checkpoint_id": cid,
        "url": store.url,
        "verified": verified,
        "variables": dict(sorted(variables.items())),
        "loaded": sorted(n for n, v in variables.items() if v["action"] == "loaded"),
        "recomputed": sorted(n for n, v in variables.items() if v["action"] == "recomputed"),
        "lost": {n: v.get("detail", "") for n, v in sorted(variables.items()) if v["action"] == "lost"},
        "mismatched": sorted(n for n, v in variables.items() if v.get("verified") is False),
        "rerun_cells": sorted(rerun),
        "errors": errors,
        "warnings": warnings,
        "process_state_set": carried_state,  # set from the checkpoint's record (carried)
        "not_checkpointed": not_checkpointed,
        "timings": {
            "fetch_s": fetch_s,
            "load_s": load_s,
            "replay_s": replay_s,
            "verify_s": verify_s,
            "prepare_s": prepare_s,
            "resume_s": time.perf_counter() - t_resume,
            "total_s": time.perf_counter() - t0,
        },
    }


def _unrestored_process_state(graph: Any, rerun: set[int], carried_state: list[str],
                              not_carried: list[str] | None = None) -> list[str]:
    """Warnings for the cells that changed process state and were not re-run.

    A cell that set an environment variable, an option, the working directory or a path and
    also changed a variable in place (``os.environ['K'] = 'v'; rows.append(1)``), or failed,
    is no process-state cell a restore re-runs (`checkpointing.process_state_cells`): re-run,
    it would change the variable again. What it set was then missing after the restore,
    and the session went on without it while the restore said nothing. What the checkpoint
    carried by value is set again (`carried`); what it could not carry is named
    (`not_carried`: a filter whose warning class was not restored, numpy's formatter).
    """
    cells = [c.index for c in graph.cells if c.process_changed and c.index not in rerun]
    missing = f"Not set again: {'; '.join(not_carried)}. " if not_carried else ""
    if not cells:
        return ([f"process state the session set could not be set again: "
                 f"{'; '.join(not_carried)}"] if not_carried else [])
    shown = ", ".join(map(str, cells[:8])) + (f" and {len(cells) - 8} more" if len(cells) > 8 else "")
    one = len(cells) == 1
    carried_note = (f"set again from the checkpoint: {'; '.join(carried_state)}. "
                    if carried_state else "environment variables, import paths, the working "
                    "directory, warning filters and numpy, pandas, matplotlib, torch, decimal "
                    "and interpreter settings are as the checkpoint recorded them. ")
    return [f"cell{'' if one else 's'} {shown} changed process state and {'was' if one else 'were'} "
            f"not re-run: {carried_note}{missing}Other state ({'it' if one else 'they'} may have "
            f"set logging handlers, other libraries' options or patched functions) is not "
            f"restored unless a re-run cell set it again; run {'it' if one else 'them'} again if "
            f"the session needs it"]


def _recomputed_from_lost(graph: Any, entries: list[CovariableEntry], lost: set[str],
                          recomputed: list[CovariableEntry]) -> dict[str, str]:
    """The recomputed co-variables (key -> why) whose cells read the value of a lost one,
    directly or through another such co-variable.

    The plan takes the values a re-run cell reads from other co-variables (their final
    versions) to be in place, shipped or recomputed in their own right; a lost one is
    neither. ``lst.append(4); 1/0`` (not re-runnable) with a deadline too short to ship
    ``lst``: ``after = list(lst)`` was re-run against ``lst`` as the earlier cells left it,
    and reported as a mismatch blamed on the hash seed. When such a value does not verify it
    is lost, for that reason. (Not decided at checkpoint time: a cell that reads every
    variable, ``%run -i`` or ``exec``, often does not depend on the lost one at all, and its
    values then verify.)
    """
    lost_at: dict[int, str] = {}  # final snapshot id -> names of the lost co-variable

    def mark(e: CovariableEntry) -> None:
        for n in e.names:
            sid = graph.active.get(n)
            if sid is not None:
                lost_at[sid] = ", ".join(e.names)

    for e in entries:
        if e.key in lost:
            mark(e)
    out: dict[str, str] = {}
    changed = bool(lost_at)
    while changed:
        changed = False
        for e in recomputed:
            if e.key in out:
                continue
            for c in e.requires or ():
                if not 0 <= c < len(graph.cells):
                    continue
                hit = next((s for s in graph.cells[c].input_snapshots if s in lost_at), None)
                if hit is not None:
                    out[e.key] = f"its cell {c} reads {lost_at[hit]}, which is lost"
                    mark(e)
                    changed = True
                    break
    return out


def _pyplot_figures() -> list[Any]:
    """The figures pyplot manages, the active one last (none while pyplot is not imported)."""
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return []
    try:
        return [m.canvas.figure for m in helpers.Gcf.get_all_fig_managers()]
    except Exception:  # noqa: BLE001 - a matplotlib we do not know: as it is
        return []


def _manage_again(figures: list[Any]) -> None:
    """Give pyplot back the loaded `figures` (it managed them at checkpoint time) that a re-run
    cell closed, the last loaded one active.

    They registered with pyplot when unpickled, before any cell was re-run; a re-run
    ``matplotlib.use('Agg')`` (a cell that sets process state, re-run whatever the plan)
    closes every figure, as does the inline backend at the end of a re-run cell. The session
    then went on without them: ``plt.savefig`` wrote an empty figure, ``plt.title`` drew on a
    new one. Registered again as matplotlib's own unpickling does."""
    plt = sys.modules.get("matplotlib.pyplot")
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if not figures or plt is None or helpers is None:
        return
    managed = {id(f) for f in _pyplot_figures()}
    for figure in figures:
        if id(figure) in managed:
            continue
        try:
            nums = plt.get_fignums()
            manager = plt._get_backend_mod().new_figure_manager_given_figure(
                max(nums) + 1 if nums else 1, figure)
            helpers.Gcf._set_new_active_manager(manager)
        except Exception:  # noqa: BLE001 - the figure stays as loaded, unmanaged
            log.debug("kernel_agent: could not give pyplot a restored figure back", exc_info=True)


def _deletions(graph: Any) -> dict[str, list[tuple[int, bool]]]:
    """Per name, the cells that bound (False) or deleted (True) it, in order."""
    events: dict[str, list[tuple[int, bool]]] = {}
    for c in graph.cells:
        for n in c.writes:
            events.setdefault(n, []).append((c.index, False))
        for n in c.deletes:
            events.setdefault(n, []).append((c.index, True))
    return {n: ev for n, ev in events.items() if any(d for _, d in ev)}


def _unbind_deleted(ns: dict, index: int, deleted_at: dict[str, list[tuple[int, bool]]]) -> None:
    """Before re-running cell `index`, remove the names that were deleted when it first ran.

    A replay re-runs only some cells, so a name bound by a re-run cell can still be bound where
    the original session had deleted it: ``list = [1, 2]``, ``del list``, ``again =
    list(range(3))`` re-ran the last cell against the shadowing list. Every cell must find the
    namespace as it was in this respect: what was deleted then is absent now (a builtin shows
    through again). All such names, not only the cell's recorded reads: a name that resolves to
    a builtin is no user variable, so the read analysis does not list it.
    """
    for n, events in deleted_at.items():
        if n not in ns:
            continue
        before = [d for i, d in events if i < index]
        if before and before[-1]:
            ns.pop(n, None)


@contextmanager
def _no_input(shell: Any) -> Iterator[None]:
    """No re-run cell may ask the user for input: ``input()`` raises (ipykernel's
    ``StdinNotImplementedError``) for the length of the replay, as it does in a kernel whose
    frontend allows no stdin. A cell that asked for input is not planned for a re-run (its
    effect `effects.READS_INPUT`); one re-run nonetheless (recorded before that was noted)
    then fails and what it makes is named as lost, instead of the restore prompting in the
    user's cell or hanging on an answer that a server-driven restore never sends."""
    kernel = getattr(shell, "kernel", None)
    allowed = getattr(kernel, "_allow_stdin", None)
    if not isinstance(allowed, bool):
        yield
        return
    try:
        kernel._allow_stdin = False
    except Exception:  # noqa: BLE001 - a kernel that refuses: as before
        yield
        return
    try:
        yield
    finally:
        try:
            kernel._allow_stdin = allowed
        except Exception:  # noqa: BLE001
            log.debug("kernel_agent: could not allow input again after a restore", exc_info=True)


def _execution_event(shell: Any, event: str) -> None:
    """Run the shell's `event` callbacks (``pre_execute``, ``post_execute``) around a re-run
    cell, as the shell ran them around the cell when it first ran; the agent's own excepted.

    What they do between two cells is state the next cell sees. The inline matplotlib backend
    (Jupyter's default) shows and closes every pyplot figure at the end of a cell
    (``flush_figures``), so ``plt.title(...)`` or ``s.plot()`` in a later cell draws on a new
    figure; re-run back to back without it, the later cell drew on the figure an earlier cell
    had made and a variable holds (a figure is checked by type only: it verified). Errors are
    the callbacks' (the shell prints and ignores them too), never the restore's."""
    callbacks = getattr(getattr(shell, "events", None), "callbacks", None)
    if not isinstance(callbacks, dict):
        return
    for callback in list(callbacks.get(event, ())):
        if (getattr(callback, "__module__", None) or "").startswith("kernel_agent"):
            continue
        try:
            callback()
        except KeyboardInterrupt:
            raise
        except Exception:  # noqa: BLE001 - a hook's failure, as the shell ignores it
            log.debug("kernel_agent: %s callback %r failed during a restore", event, callback,
                      exc_info=True)


_CANCEL_WAIT_S = 5.0  # how long the restore waits for the tasks it cancels to end


class _AwaitRunner:
    """Runs the re-run cells that await at top level on a private asyncio loop on the kernel's
    own thread, one loop for the length of one restore.

    Where the restore runs decides how: inside the kernel, while it executes the cell that
    called ``restore()``, in ipykernel's running asyncio loop. The options, weighed:

    - IPython's own machinery cannot: ``shell.run_cell`` hands the coroutine to
      ``shell.loop_runner``, ``run_until_complete`` on the running kernel loop ("This event
      loop is already running"), and ``run_cell_async`` is a coroutine the restore, plain
      synchronous code, cannot await. ``_pseudo_sync_runner`` (``coro.send(None)`` once) only
      runs coroutines that never suspend: ``await asyncio.sleep(0.1)`` does.
    - ``asyncio.run`` in a helper thread, the kernel thread waiting, runs the cell's code on
      another thread: ``threading.current_thread()``, thread-bound objects of earlier cells (a
      ``sqlite3`` connection refuses other threads), ``signal.signal`` (main thread only) and
      thread-local state all differ from the original run, and an interrupt of the restore
      reaches the waiting kernel thread while the cell goes on mutating the namespace.
    - So the kernel's running loop is set aside (``asyncio._set_running_loop``, per thread)
      for the whole cell (`cell`): its statements run on the kernel thread with the restore's
      loop as the running one, and each statement that awaits is run to completion on it
      with ``run_until_complete`` (`run`). A task the cell starts in one statement
      (``t = asyncio.create_task(fetch())``) is then on the loop a later one awaits it on
      (``await t``), as it was when the cell ran on the kernel's loop. An interrupt arrives in
      the cell's code as it did when it first ran. Cells without an await keep the kernel's
      loop: what they schedule on it runs after the restore, as before.

    The coroutine runs as a task, in a copy of the context, as ipykernel runs an async cell
    (``asyncio.ensure_future``): a context variable it sets (``decimal.getcontext().prec``)
    was not kept when it first ran and is not kept here either. One loop serves every await
    cell of the restore, so a task one of them starts goes on in the next, as the kernel's
    loop ran it between the cells. What does not work is said, never silent: an object bound
    to the kernel's loop by an earlier cell without an await (a future, a task) cannot be
    awaited on this one, and the cell's re-run fails ("attached to a different loop"), so
    what it makes is named as lost; tasks still running when the restore ends are cancelled
    and reported (`close`). The planner counts such a cell as re-runnable only under
    asyncio's autoawait (`analysis.TOP_LEVEL_AWAIT` marks the others).
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started: dict[asyncio.Task, int] = {}  # tasks a re-run cell left running -> cell

    @contextmanager
    def cell(self, index: int) -> Iterator[None]:
        """The statements of await cell `index` run with the restore's loop as this thread's
        running loop (the kernel's set aside until the cell ends)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        outer = asyncio._get_running_loop()
        asyncio._set_running_loop(self.loop)
        try:
            yield
        finally:
            asyncio._set_running_loop(outer)
            for task in asyncio.all_tasks(self.loop):
                self.started.setdefault(task, index)

    def run(self, coro: Any) -> Any:
        """Run the coroutine of one statement of the current `cell` to completion on the
        restore's loop; its result (raises what it raises)."""
        assert self.loop is not None and asyncio._get_running_loop() is self.loop
        asyncio._set_running_loop(None)  # (run_until_complete refuses while one is set)
        try:
            return self.loop.run_until_complete(coro)
        finally:
            asyncio._set_running_loop(self.loop)

    def close(self) -> tuple[str | None, set[int]]:
        """Cancel the tasks re-run cells left running and close the loop: an error saying which
        cells started them (None: none left), and those cells.

        Such a task went on running on the kernel's loop after its cell when the cell first
        ran; cancelled here, what it holds is not what the session had (a task kept in a
        variable is checked by type only: it is named as lost as the value of a failed cell)."""
        loop = self.loop
        if loop is None:
            return None, set()
        pending = {t: i for t, i in self.started.items() if not t.done()}
        note = None
        if pending:
            cells = ", ".join(map(str, sorted(set(pending.values()))))
            names = ", ".join(sorted({getattr(t.get_coro(), "__qualname__", "?") for t in pending}))
            note = (f"cell{'s' if ',' in cells else ''} {cells}: started tasks ({names}) that were "
                    "still running when the restore ended; a restore cannot carry them on, so "
                    "they were cancelled")
        outer = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            for task in pending:
                task.cancel()
            if pending:  # (bounded: a task may ignore its cancellation)
                loop.run_until_complete(asyncio.wait(pending, timeout=_CANCEL_WAIT_S))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception:  # noqa: BLE001 - what is left is dropped with the loop
            log.debug("kernel_agent: closing the restore's event loop failed", exc_info=True)
        finally:
            asyncio._set_running_loop(outer)
            loop.close()
            self.loop = None
        return note, set(pending.values())


@contextmanager
def _closing(awaits: _AwaitRunner, errors: list[str], failed_cells: set[int]) -> Iterator[None]:
    """Close `awaits` when the replay ends (interrupted too): its note among the `errors`, the
    cells that left tasks running among the failed ones."""
    try:
        yield
    finally:
        note, cells = awaits.close()
        if note:
            errors.append(note)
            failed_cells.update(cells)


def _rerun_cell(shell: Any, graph: Any, index: int, awaits: _AwaitRunner) -> str | None:
    """Execute a recorded cell in the user namespace, its RNG state first, between the shell's
    execution events (`_execution_event`); returns an error.

    A statement that awaits at top level (IPython's autoawait) compiles to coroutine code: it
    is evaluated, as IPython's ``run_code`` does, and the coroutine is run to completion by
    `awaits` (see `_AwaitRunner` for why there and how)."""
    cell = graph.cells[index]
    state = graph.rng_states.get(cell.rng_state) if cell.rng_state else None
    if state:
        try:
            rng.apply(state)
        except Exception:  # noqa: BLE001
            log.exception("kernel_agent: could not set the RNG state for cell %d", index)
    _execution_event(shell, "pre_execute")
    try:
        statements = list(_compile_like_ipython(shell, shell.transform_cell(cell.code), index))
        awaiting = any(c.co_flags & inspect.CO_COROUTINE for c in statements)
        with awaits.cell(index) if awaiting else nullcontext():
            for compiled in statements:
                if compiled.co_flags & inspect.CO_COROUTINE:
                    awaits.run(eval(compiled, shell.user_ns))  # noqa: S307
                else:
                    exec(compiled, shell.user_ns)  # noqa: S102
    except BaseException as e:  # noqa: BLE001 - a failing re-run is reported, never fatal
        if isinstance(e, KeyboardInterrupt):
            raise
        return f"cell {index}: {type(e).__name__}: {e}"
    finally:
        _execution_event(shell, "post_execute")
    return None


def _compile_like_ipython(shell: Any, code: str, index: int) -> Iterator[CodeType]:
    """The cell's top-level statements compiled one by one, as IPython's `run_ast_nodes` does.

    Not only for fidelity of behaviour: the bytecode differs (a function that calls a method of
    a module the same compilation unit imports is compiled otherwise), and a restore verifies
    re-created functions by their bytecode. Flags: the shell's (the user's ``__future__``
    imports, never this module's), top-level await as IPython adds it under autoawait, and
    the features a ``from __future__`` statement of the cell itself turns on for what follows.
    Top-level await whatever this shell's ``autoawait``: a recorded cell that awaits ran under
    autoawait where it was recorded (it would have failed, and a failed cell is not re-run),
    and the flag changes nothing in code without an await.
    """
    flags = getattr(getattr(shell, "compile", None), "flags", 0)
    flags |= getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    tree = ast.parse(code, f"<restored cell {index}>", "exec")
    for node in tree.body:
        yield compile(ast.Module([node], type_ignores=[]), f"<restored cell {index}>", "exec",
                      flags=flags, dont_inherit=True)
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
