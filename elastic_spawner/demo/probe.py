"""Kernel-side probe: a structural digest of every user variable, aliasing included.

Runs INSIDE a kernel: the demo sends this file's text and evaluates `probe(user_ns)` in a private
globals dict, silently, so the agent neither records it nor sees new names. The hub package never
imports it. It is independent of the agent's own digests on purpose: the demo checks the agent
with a second opinion.

Each variable's digest covers its type and value, recursively. Objects get an index within the
variable that reaches them first (variables in sorted name order); a later reference hashes
that (variable, index), so `b = a`, `[arr, arr]` and one dict shared by two names are part of the
digests, while a difference inside one variable does not shift the others'. Arrays hash dtype,
shape and bytes, plus the earlier array they share memory with. Notebook code hashes bytecode,
constants and names, not file names or line numbers (they differ between kernels); library
functions and classes hash as references, true when the name is the library's own object;
matplotlib's artists by their type only (their pickle is by design not their live state).
Instances hash the attributes their class's copy protocol keeps (`__setstate__`): what a class
deliberately drops on copy or pickle is not state.
"""

from __future__ import annotations

import collections
import copy
import datetime
import decimal
import fractions
import hashlib
import logging
import re
import threading
import types
from typing import Any

SKIP = {"In", "Out", "exit", "quit", "get_ipython", "open"}
# values without identity semantics (immutable; equal ones are interchangeable), as the agent
# treats them (`changes.MARSHAL_ATOMS`, `changes._EXT_ATOMS`, slices walked without an id):
# hashed by value, never aliased
ATOMS = (type(None), bool, int, float, complex, str, bytes, datetime.datetime, datetime.date,
         datetime.time, datetime.timedelta, datetime.timezone, decimal.Decimal, fractions.Fraction,
         range, re.Pattern, type(Ellipsis), slice)


def probe(ns: dict[str, Any]) -> dict[str, Any]:
    """{"digests": {name: hex}, "aliases": [[names of one object]], "sharing": ["a~b"], "bytes": n}."""
    import sys

    import numpy as np

    owner: dict[int, tuple[str, int]] = {}  # id -> (variable that reached it first, its index there)
    keep: list[Any] = []  # keeps probed objects alive so ids stay unique during the walk
    arrays: list[tuple[tuple[str, int], Any]] = []
    nbytes = [0]
    sharing: set[str] = set()  # "a~b": an array reached from b shares memory with one from a
    current = [""]
    local = [0]

    def feed(h: Any, obj: Any, depth: int) -> None:
        if depth > 60:
            h.update(b"<deep>")
            return
        t = type(obj)
        if t in ATOMS:
            h.update(f"{t.__name__}:{obj!r};".encode())
            return
        if isinstance(obj, types.ModuleType):
            h.update(f"module:{obj.__name__};".encode())
            return
        module = getattr(obj, "__module__", None)
        if (isinstance(obj, (type, types.FunctionType)) and module not in (None, "__main__")) or isinstance(
            obj, (types.BuiltinFunctionType, types.BuiltinMethodType)
        ):
            # library code: what matters is that it is the library's own object
            qual = getattr(obj, "__qualname__", "")
            target: Any = sys.modules.get(module or "")
            for part in qual.split("."):
                target = getattr(target, part, None)
            h.update(f"ref:{module}.{qual}:{target is obj};".encode())
            return
        oid = id(obj)
        if oid in owner:
            name, idx = owner[oid]
            h.update((f"@{idx};" if name == current[0] else f"@{name}#{idx};").encode())
            return
        if isinstance(obj, np.dtype) or is_extension_dtype(t):
            # a dtype is a value (pandas caches and shares its dtype objects, a restore makes
            # equal ones anew): hashed as what it describes, never aliased
            h.update(f"dtype:{t.__module__}.{t.__qualname__};".encode())
            if isinstance(obj, np.dtype):
                h.update(f"{obj.descr if obj.fields else obj.str};{obj};".encode())
            else:
                for part in obj.__reduce_ex__(4)[1:3]:
                    feed(h, part, depth + 1)
            return
        if t is tuple:
            h.update(b"tuple(")
            for x in obj:
                feed(h, x, depth + 1)
            h.update(b")")
            return
        here = (current[0], local[0])
        owner[oid] = here
        local[0] += 1
        keep.append(obj)
        h.update(f"#{here[1]}:{t.__module__}.{t.__qualname__};".encode())
        if isinstance(obj, np.ndarray):
            for where, other in arrays:
                if np.may_share_memory(obj, other):
                    h.update(f"shares:{where[0] if where[0] != current[0] else ''}#{where[1]};".encode())
                    if where[0] != current[0]:
                        sharing.add(f"{where[0]}~{current[0]}")
                    break
            arrays.append((here, obj))
            h.update(f"{obj.dtype.str}{obj.shape};".encode())
            if obj.dtype.hasobject:
                for x in obj.ravel().tolist():
                    feed(h, x, depth + 1)
            else:
                h.update(hashlib.sha256(np.ascontiguousarray(obj).view(np.uint8).data).digest())
                nbytes[0] += obj.nbytes
            return
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            # its pickle holds `torch.save` bytes that differ between processes: hashed as its
            # dtype, shape, gradient flag and content (a numpy view: memory it shares with an
            # earlier array or tensor is seen), and its gradient
            h.update(f"tensor:{obj.dtype};{tuple(obj.shape)};{obj.requires_grad};".encode())
            data = obj.detach()
            if data.device.type != "cpu" or data.dtype in (torch.bfloat16,) or data.is_sparse:
                data = data.to("cpu", torch.float64).to_dense() if data.is_sparse else data.to("cpu", torch.float64)
            feed(h, data.resolve_conj().resolve_neg().numpy(), depth + 1)
            feed(h, obj.grad, depth + 1)
            return
        if isinstance(obj, np.generic):
            h.update(repr(obj.item()).encode())
            return
        if isinstance(obj, (list, collections.deque)):
            for x in obj:
                feed(h, x, depth + 1)
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                feed(h, k, depth + 1)
                feed(h, v, depth + 1)
            if type(obj) is not dict and hasattr(obj, "__dict__"):
                feed(h, instance_state(obj), depth + 1)
            return
        if isinstance(obj, (set, frozenset)):
            subs = []
            for x in obj:
                sub = hashlib.sha256()
                feed(sub, x, depth + 1)
                subs.append(sub.hexdigest())
            h.update(",".join(sorted(subs)).encode())
            return
        if isinstance(obj, types.FunctionType):
            feed_code(h, obj.__code__, depth)
            h.update(f"{obj.__qualname__};globals={'user' if obj.__globals__ is ns else 'other'};".encode())
            feed(h, obj.__defaults__, depth + 1)
            feed(h, obj.__kwdefaults__, depth + 1)
            for cell in obj.__closure__ or ():
                try:
                    feed(h, cell.cell_contents, depth + 1)
                except ValueError:
                    h.update(b"<empty cell>")
            return
        if isinstance(obj, types.MethodType):
            feed(h, obj.__func__, depth + 1)
            feed(h, obj.__self__, depth + 1)
            return
        if isinstance(obj, type):  # a class defined in the notebook
            h.update(obj.__qualname__.encode())
            for k, v in sorted(vars(obj).items()):
                # (`__slotnames__`: copyreg's cache, set on a class once an instance was copied
                # or pickled, by a checkpoint say; not the class's own)
                if k not in ("__dict__", "__weakref__", "__module__", "__doc__", "__slotnames__"):
                    h.update(k.encode())
                    feed(h, v, depth + 1)
            return
        if isinstance(obj, threading.Thread):
            # a thread holds ids the operating system gave it; the agent checks it by type too
            h.update(f"thread:{t.__qualname__};".encode())
            return
        if isinstance(obj, logging.Logger):
            # the process's logger of that name: what the notebook set on it, not the registry
            # of every logger the process made (`manager`) or its level cache (`_cache`)
            h.update(f"logger:{obj.name};{obj.level};{obj.propagate};{obj.disabled};".encode())
            feed(h, list(obj.handlers), depth + 1)
            feed(h, list(obj.filters), depth + 1)
            return
        if any(c.__module__ == "ipywidgets.widgets.widget" and c.__qualname__ == "Widget"
               for c in t.__mro__):
            # a widget: its traits, without its comm to the frontend (a new id in each process)
            h.update(f"widget:{t.__qualname__};".encode())
            traits = getattr(obj, "_trait_values", {})
            feed(h, {k: v for k, v in traits.items() if k != "comm"}, depth + 1)
            return
        if str(module or "").startswith("matplotlib.") or t.__module__.startswith("matplotlib."):
            # artists: matplotlib's pickle renumbers callback registries and drops caches, so a
            # loaded figure never equals the live one attribute by attribute; checked by type,
            # as the agent's own digest does (`changes._DIGEST_OPAQUE_MODULES`)
            h.update(f"matplotlib:{t.__qualname__};".encode())
            return
        if hasattr(obj, "__dict__") and not library_pickled(t):
            feed(h, instance_state(obj), depth + 1)
            for slot in getattr(t, "__slots__", ()) or ():
                if hasattr(obj, slot):
                    feed(h, getattr(obj, slot), depth + 1)
            return
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:  # noqa: BLE001
            h.update(f"opaque:{t.__qualname__};".encode())
            return
        if isinstance(reduced, str):
            h.update(f"global:{reduced};".encode())
            return
        for part in reduced[1:3]:
            feed(h, without_caches(part), depth + 1)

    def without_caches(part: Any) -> Any:
        """A library's pickled state without its `_cache` (pandas' `cache_readonly` values,
        which a datetime array pickles: filled by whatever property was read, `unit` say)."""
        if type(part) is dict and "_cache" in part:
            return {k: v for k, v in part.items() if k != "_cache"}
        if type(part) is tuple:
            return tuple(without_caches(p) for p in part)
        return part

    def is_extension_dtype(t: type) -> bool:
        pandas = sys.modules.get("pandas")
        return pandas is not None and issubclass(t, pandas.api.extensions.ExtensionDtype)

    def library_pickled(t: type) -> bool:
        """A library class whose own pickling says what its value is.

        Its instance attributes can be caches (a pandas `Index` keeps `_cache`, filled by a
        groupby: an equal index came back NOT VERIFIED) while its content sits where `vars`
        does not reach (a DataFrame's `BlockManager` keeps its blocks in C slots: every
        DataFrame hashed alike, a changed one was "equal"). Its `__reduce_ex__` is the value
        a migration keeps, as the agent reads such objects (`changes._library_pickling`).
        """
        if t.__module__ == "__main__":
            return False
        for klass in t.__mro__:
            if klass is object:
                return False
            own = vars(klass)
            if "__getstate__" in own or "__reduce__" in own or "__reduce_ex__" in own:
                return True
        return False

    def instance_state(obj: Any) -> dict[str, Any]:
        """The instance attributes the class's own copy protocol keeps.

        A class with a custom `__setstate__` decides what survives a copy or a pickle (sklearn's
        `Bunch` drops its `_deprecated_key_to_warnings`, by design): hash the attributes of a
        shallow copy, as any migration would produce them. Cheap: values are not copied.
        """
        if getattr(type(obj), "__setstate__", None) is not None:
            try:
                return dict(vars(copy.copy(obj)))
            except Exception:  # noqa: BLE001 - fall back to the raw attributes
                pass
        return dict(vars(obj))

    def feed_code(h: Any, code: types.CodeType, depth: int) -> None:
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        h.update(repr(code.co_varnames).encode())
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                feed_code(h, c, depth + 1)
            else:
                feed(h, c, depth + 1)

    digests: dict[str, str] = {}
    by_object: dict[int, list[str]] = {}
    for name in sorted(ns):
        if name.startswith("_") or name in SKIP:
            continue
        value = ns[name]
        current[0], local[0] = name, 0
        h = hashlib.sha256()
        try:
            feed(h, value, 0)
        except Exception as e:  # noqa: BLE001 - an object that cannot be looked at (a user's
            # notebook, `--notebook`): said in its digest, the same on both sides if it stays so
            h = hashlib.sha256(f"unprobeable:{type(value).__qualname__}:{type(e).__name__}".encode())
        digests[name] = h.hexdigest()[:16]
        if type(value) not in ATOMS:
            by_object.setdefault(id(value), []).append(name)
    aliases = [names for names in by_object.values() if len(names) > 1]
    return {"digests": digests, "aliases": aliases, "sharing": sorted(sharing), "bytes": nbytes[0]}
