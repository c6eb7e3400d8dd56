"""In-place mutation detection, co-variable partition and portable value digests.

Runs inside the user's kernel process, after every recorded cell (called by `monitor`) and at
checkpoint/restore time (called by `checkpoint` and `restore`). It must therefore be cheap, never
raise into the user's cell, never call user-defined ``__eq__``/``__hash__``/``__getattr__`` and
never print: internal failures degrade to "this value is opaque, treat it as modified" plus a log
line on the ``kernel_agent`` logger.

Three services:

* `Tracker`: per tracked name, a *fingerprint* of everything reachable from the value (an
  iterative walk of the object graph: containers, instance ``__dict__``/``__slots__``, notebook
  functions and classes, numpy buffers hashed with xxh3, pandas blocks, ...) plus the set of ids
  of the mutable / identity-bearing objects reached. Names whose id sets intersect are one
  *co-variable* (ElasticNotebook's "linked variables", Kishu's co-variables). Only the
  co-variables containing a touched name are re-walked, so the per-cell cost is proportional to
  what the cell touched, not to the namespace (ElasticNotebook re-fingerprinted everything, and
  Kishu pickled every touched variable into memory: both avoided here).
* `value_digest`: a *portable* digest (no ``id()``, no salted ``hash()``) of the values of one
  co-variable and of their alias structure, used to verify that a restored session equals the
  checkpointed one.
* `reachable_size`: a cheap size estimate that counts buffers (ElasticNotebook costed an object
  holding an 8 MB array at 56 bytes because it used ``sys.getsizeof``).

What a fingerprint does not see (by design or by limit):

* State held only in C structures that neither expose ``__dict__``/slots nor pickle (sockets,
  locks, generators, C iterators, files, sqlite connections...): such values are *opaque* and
  count as modified whenever touched. C state under a Python subclass (``random.Random``) is
  read through the library's own ``__reduce_ex__``.
* Objects reachable only through a module or a library function/class (by reference: identity
  only); a notebook function's *globals* (they are other variables, not part of its value).
* Graphs beyond ``max_nodes`` (default 2M): opaque, modified when touched.
* Mutations made behind the monitor's back (other threads, callbacks) until a name of the
  co-variable is touched again.
"""

from __future__ import annotations

import array as _array_mod
import bisect
import builtins
import collections
import datetime as _dt
import decimal
import enum
import fractions
import functools
import gc
import hashlib
import io
import itertools
import logging
import marshal
import mmap
import os
import random
import re
import socket
import sqlite3
import struct
import sys
import threading
import types
import weakref
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from kernel_agent import libobjects
from kernel_agent.buffers import array_interface_base

__all__ = [
    "DigestReport",
    "Tracker",
    "TrackerUpdate",
    "digest_report",
    "opaque_names",
    "reachable_size",
    "stale_keys",
    "value_digest",
]

log = logging.getLogger("kernel_agent")

# --------------------------------------------------------------------------------------------
# Type classification
# --------------------------------------------------------------------------------------------

_NoneType = type(None)
#: Atoms that ``marshal`` (version 2: no refs, no interning flags, so byte-identical in every
#: process) encodes by value. Big containers made only of these are hashed in C.
MARSHAL_ATOMS: frozenset[type] = frozenset({int, float, complex, str, bytes, bool, _NoneType})
#: Other value types (immutable, no identity semantics) hashed through a token.
_EXT_ATOMS: frozenset[type] = frozenset(
    {
        _dt.datetime,
        _dt.date,
        _dt.time,
        _dt.timedelta,
        _dt.timezone,
        decimal.Decimal,
        fractions.Fraction,
        range,
        type(Ellipsis),
        type(NotImplemented),
        re.Pattern,
        np.dtype,
    }
)

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE
#: what one atom of a list/tuple/dict counts against the hash budget: roughly the memory it
#: holds (a small int is 28 bytes plus its slot), and type-checking plus marshalling it costs
#: about as much as hashing that many bytes of an array would
_ATOM_BYTES = 32
_BIG_ATOM = 1 << 16  # str/bytes longer than this are hashed instead of copied into the stream
_SMALL_SEQ = 256  # atom sequences shorter than this go into the stream verbatim

# kinds
(
    K_ATOM,
    K_LIST,
    K_TUPLE,
    K_DICT,
    K_SET,
    K_FROZENSET,
    K_DEQUE,
    K_NDARRAY,
    K_DATAFRAME,
    K_SERIES,
    K_INDEX,
    K_EXTARRAY,
    K_TORCH,
    K_FUNCTION,
    K_CLASS,
    K_BYREF,
    K_CODE,
    K_CELL,
    K_METHOD,
    K_BUILTIN_METHOD,
    K_PARTIAL,
    K_BUFFER,
    K_OPAQUE,
    K_INSTANCE,
    K_REDUCE,
    K_DESCRIPTOR_WRAPPER,
    K_MAPPINGPROXY,
    K_SLICE,
    K_WEAKREF,
    K_DICTVIEW,
    K_ITERATOR,
    K_ARROW,
) = range(32)

#: ``d.keys()``, ``d.values()``, ``d.items()`` (of a dict or an OrderedDict): live views of
#: their dict, which they hold (``gc.get_referents``) but do not expose. Walked as that dict
#: (and a mapping proxy as the mapping it wraps), so
#: ``kv = d.keys()`` and ``d`` are one co-variable (a cell that mutates ``d`` changes ``kv``).
_DICT_VIEW_TYPES: frozenset[type] = frozenset(
    type(getattr(m, name)())
    for m in ({}, collections.OrderedDict())
    for name in ("keys", "values", "items")
)

_OPAQUE_BASES: tuple[type, ...] = (
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
    io.IOBase,
    socket.socket,
    sqlite3.Connection,
    sqlite3.Cursor,
    weakref.ReferenceType,
    weakref.ProxyType,
    weakref.CallableProxyType,
    type(threading.Lock()),
    type(threading.RLock()),
)

#: Library types whose pickled state is by design not their live state, so the *portable
#: digest* checks them by type only (change detection and co-variables still walk them: a
#: figure and its axes stay one co-variable). matplotlib's artists drop callbacks and caches
#: when pickled (``stale_callback``, the CallbackRegistry renumbers what it keeps, pyplot
#: renumbers figures), so every restored figure "differed" although it draws the same; scipy's
#: cKDTree pickles uninitialised tree memory (it differs between two runs of the same cell).
#: Threads and processes (and the notebook's subclasses of them) hold the ids the operating
#: system gave them, which no other process reproduces. Found by name: the libraries are
#: never imported here.
_DIGEST_OPAQUE_QUALNAMES = frozenset({
    "scipy.spatial._ckdtree.cKDTree",
    "scipy.spatial._kdtree.KDTree",
    "threading.Thread",
    "multiprocessing.process.BaseProcess",
})
_DIGEST_OPAQUE_MODULES = ("matplotlib.",)


@functools.lru_cache(maxsize=20_000)  # per type: classes are few, objects many
def _digest_opaque(tp: type) -> bool:
    module = getattr(tp, "__module__", None) or ""
    if module.startswith(_DIGEST_OPAQUE_MODULES):
        return True
    mro = getattr(tp, "__mro__", None) or (tp,)
    return any(f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}"
               in _DIGEST_OPAQUE_QUALNAMES for c in mro)


@functools.lru_cache(maxsize=20_000)
def derives_from(tp: type, qualname: str) -> bool:
    """Whether `tp` is the library class ``module.Qualname`` or a subclass of it, found by name
    along its MRO: the library is never imported for the question."""
    return any(f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}" == qualname
               for c in getattr(tp, "__mro__", ()))


def _is_widget(tp: type) -> bool:
    """An ipywidgets widget."""
    return derives_from(tp, "ipywidgets.widgets.widget.Widget")


def _widget_state(d: dict[str, Any]) -> Any:
    """A widget's attributes without its link to the frontend: the comm and the model id are
    a new random id in each process (a re-run slider made the same slider, with another id,
    and every widget re-run at a restore was reported as differing)."""
    values = d.get("_trait_values")
    pairs = []
    for k, v in d.items():
        if k == "_model_id":
            continue
        if k == "_trait_values" and type(values) is dict:
            v = _Synth(_Synth(kv) for kv in values.items() if kv[0] != "comm")
        pairs.append(_Synth((k, v)))
    return _Synth(pairs)


def _is_fitpack_spline(tp: type) -> bool:
    """scipy's `UnivariateSpline` (and its Interpolated/LSQ subclasses)."""
    return derives_from(tp, "scipy.interpolate._fitpack2.UnivariateSpline")


def _fitpack_spline_state(d: dict[str, Any]) -> Any:
    """A UnivariateSpline's attributes without FITPACK's work arrays. ``_data`` keeps
    ``fpint`` and ``nrdata`` (per knot interval: the residual and the number of points; and
    where a later ``set_smoothing_factor`` restarts from), which FITPACK fills only on some of
    its paths (not for an interpolating spline, nor for a fit that needed no interior knot)
    and never past what it uses: the rest is uninitialised memory, other in every process, so
    every spline a restore re-made "differed" from the checkpointed one. The spline itself
    (knots, coefficients, degree, residual, the data and the smoothing factor) is kept; what
    the work arrays hold follows from the same data and calls, which re-making it repeats.
    None: not the layout this expects."""
    data = d.get("_data")
    if type(data) is not tuple or len(data) != 14:
        return None
    cut = _Synth((*data[:11], *data[13:]))
    return _Synth(_Synth((key, cut if key == "_data" else v)) for key, v in d.items())


#: Instance slots that are a library's memo of what was asked of an immutable value, or a
#: number it drew for it, not the value: by class (module-qualified, found by name along the
#: MRO: the libraries are never imported here) -> slot names the *portable digest* leaves out. sympy's ``_assumptions``
#: (``StdFactKB``) caches every fact deduced about an expression so far, in the order deduced:
#: which facts and in which order depend on what the process asked before and on sympy's
#: generators, seeded from OS entropy at import and drawn from while importing. A restore that
#: loaded ``from sympy import ...`` instead of re-running it imported sympy otherwise, and every
#: recomputed symbol, expression and matrix said "value differs". The facts follow from the
#: expression's type, its args and a symbol's given assumptions (``_assumptions0``), which are
#: walked. Change detection still walks the memo (a cell that only asked ``x.is_integer`` counts
#: as touching `x`: over-approximation).
_DIGEST_MEMO_ATTRS: dict[str, frozenset[str]] = {
    # (``_mhash``: the expression's hash, cached at its first ``hash()``: a dict lookup, or
    # IPython rendering it with ``init_printing()``, filled it in kernel A and not in the
    # loaded copy, and every sympy variable of the tutorial came back "value differs")
    "sympy.core.basic.Basic": frozenset({"_assumptions", "_mhash"}),
    # a Dummy's number is drawn from a generator seeded per process plus a process-wide count:
    # it tells dummies apart (`_value_id` keeps it: distinct dummies stay distinct objects in
    # the stream), but no re-run gives the same number, so every recomputed Dummy "differed"
    "sympy.core.symbol.Dummy": frozenset({"dummy_index"}),
}
_memo_attrs_cache: dict[type, frozenset[str]] = {}

#: Library classes whose instances are immutable values the library itself interchanges with
#: any equal one: sympy hash-conses expressions through a process-wide cache (``cacheit``), so
#: whether the ``-x`` inside ``exp(-x)`` is the same object as the ``-x`` of an earlier
#: expression depends on what that cache held, not on anything the notebook did; a restore
#: re-running the cells in a process whose cache had been filled otherwise brought back equal
#: expressions that shared other subterms, and they "differed". The portable digest refers
#: back to the first equal instance of the same type met (as if they were one object) instead
#: of to the first identical one, so equal values digest alike whatever the cache shared.
#: Equality is the library's own (sympy's structural ``==``, same exact type only).
_DIGEST_VALUE_CLASSES = frozenset({"sympy.core.basic.Basic"})
_value_class_cache: dict[type, bool] = {}
_VALUE_REF = object()  # (marks a value-class instance's number in a `_value_id` key)
_ATOM_TYPE_NAMES = frozenset({"mpz", "mpq"})  # gmpy2's numbers, in sympy's numbers' content


def _typed_atom(c: Any) -> Any:
    """`c` (an atom, or a tuple of them) with each atom's type beside it, so that ``True`` and
    ``1``, ``1`` and ``1.0`` are different keys; None when `c` holds anything else."""
    ct = type(c)
    if ct is tuple:
        out = []
        for e in c:
            a = _typed_atom(e)
            if a is None:
                return None
            out.append(a)
        return (tuple, tuple(out))
    if ct is float:
        return (ct, c.hex())  # (-0.0 == 0.0, and nan is no nan)
    if ct in (str, int, bool, bytes, type(None)) or ct.__name__ in _ATOM_TYPE_NAMES:
        return (ct, c)
    return None


def _digest_value_class(tp: type) -> bool:
    """Whether the portable digest identifies `tp`'s equal instances (`_DIGEST_VALUE_CLASSES`)."""
    got = _value_class_cache.get(tp)
    if got is None:
        got = any(f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}"
                  in _DIGEST_VALUE_CLASSES for c in getattr(tp, "__mro__", None) or (tp,))
        if len(_value_class_cache) > 20_000:
            _value_class_cache.clear()
        _value_class_cache[tp] = got
    return got


def _digest_memo_attrs(tp: type) -> frozenset[str]:
    """Attributes of `tp`'s instances that the portable digest leaves out (`_DIGEST_MEMO_ATTRS`);
    cached per type."""
    got = _memo_attrs_cache.get(tp)
    if got is None:
        names: set[str] = set()
        for c in getattr(tp, "__mro__", None) or (tp,):
            extra = _DIGEST_MEMO_ATTRS.get(f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}")
            if extra:
                names |= extra
        got = frozenset(names)
        if len(_memo_attrs_cache) > 20_000:
            _memo_attrs_cache.clear()
        _memo_attrs_cache[tp] = got
    return got


#: type names of Cython's function objects (`def` functions of compiled modules)
_CYTHON_FUNCTIONS = frozenset({"cython_function_or_method", "fused_cython_function"})

#: dicts of the process that a value may hold (an `exec` namespace's ``__builtins__``,
#: ``m = sys.modules``): rewritten by IPython, ipykernel and every import, never walked
_BUILTINS_DICT = builtins.__dict__
_SYS_MODULES = sys.modules

#: The IPython shell and kernel: one per process, and they reach the whole user namespace
#: (``user_ns``, the output history). Walked like instances, a variable holding
#: ``get_ipython()`` made every other variable one co-variable with it, which cannot be shipped
#: (the shell does not pickle) and did not verify (its counters moved). Like loggers, they are
#: the process's, referenced by identity. Found by name: IPython is never imported here.
#: ``env = os.environ`` is the process's environment too: walked as an instance, its content
#: (the host's name, the pod's variables) is no session state of the notebook.
_PROCESS_SINGLETONS = frozenset({
    "IPython.core.interactiveshell.InteractiveShell",
    "ipykernel.kernelbase.Kernel",
    "os._Environ",
})


def _process_singleton(tp: type) -> str | None:
    """The singleton base `tp` derives from (see `_PROCESS_SINGLETONS`), or None."""
    for c in getattr(tp, "__mro__", None) or (tp,):
        name = f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}"
        if name in _PROCESS_SINGLETONS:
            return name
    return None


_BYREF_TYPES: tuple[type, ...] = (
    types.ModuleType,
    types.BuiltinFunctionType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.MethodWrapperType,
)


def _pandas() -> Any:
    """pandas if the user already imported it (never import it ourselves: it costs ~0.5 s)."""
    return sys.modules.get("pandas")


def _torch() -> Any:
    """torch if the user already imported it (never imported here: it costs seconds)."""
    return sys.modules.get("torch")


def _dense_cpu(t: Any, torch: Any) -> bool:
    """A strided tensor in this process's memory, whose bytes its storage holds as they are."""
    return (t.layout is torch.strided and t.device.type == "cpu" and not t.is_quantized
            and not getattr(t, "is_nested", False))


def storage_key(t: Any) -> int | None:
    """A key of a dense CPU tensor's storage: minus its address, the same for every view of
    it (`reachable_size` counts a storage once); None if it has no memory of its own (empty,
    sparse, another device). Links to the memory it shares are by span (`_Walker.spans`)."""
    torch = _torch()
    try:
        if torch is None or not _dense_cpu(t, torch):
            return None
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - an exotic tensor: no link
        return None
    return -ptr if ptr else None


def storage_bytes(t: Any) -> np.ndarray:
    """The whole storage of a dense CPU tensor as a uint8 numpy array over its memory (no
    copy; it holds the storage alive). Works for every dtype, bfloat16 included, which
    ``t.numpy()`` refuses."""
    torch = _torch()
    return torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage()).numpy()


def raw_dtype(itemsize: int) -> np.dtype:
    """A numpy dtype of `itemsize` bytes to see a tensor's elements as raw bytes."""
    return np.dtype({1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}.get(itemsize, f"V{itemsize}"))


def _foreign_loaded() -> bool:
    """torch or pyarrow is loaded: numpy memory may be shared with tensors or arrow buffers."""
    return "torch" in sys.modules or "pyarrow" in sys.modules


def _pyarrow() -> Any:
    """pyarrow if something already imported it (pandas does when it is installed)."""
    return sys.modules.get("pyarrow")


def _arrow_types(pa: Any) -> tuple[type, ...]:
    """pyarrow's data containers: immutable arrays and tables over reference-counted buffers."""
    return (pa.Array, pa.ChunkedArray, pa.RecordBatch, pa.Table, pa.Buffer)


_kind_cache: dict[type, int] = {}


def _classify(tp: type) -> int:
    """Kind of a type; cached per type (classes are few, objects are many)."""
    k = _kind_cache.get(tp)
    if k is not None:
        return k
    k = _classify_uncached(tp)
    if len(_kind_cache) > 20_000:  # notebooks that define classes in a loop: stay bounded
        _kind_cache.clear()
    _kind_cache[tp] = k
    return k


def _classify_uncached(tp: type) -> int:
    if tp in MARSHAL_ATOMS or tp in _EXT_ATOMS:
        return K_ATOM
    if tp is list:
        return K_LIST
    if tp is tuple:
        return K_TUPLE
    if tp is dict:
        return K_DICT
    if tp is set:
        return K_SET
    if tp is frozenset:
        return K_FROZENSET
    if tp is slice:
        return K_SLICE
    if tp is types.FunctionType:
        return K_FUNCTION
    if tp is types.CodeType:
        return K_CODE
    if tp is types.CellType:
        return K_CELL
    if tp is types.MethodType:
        return K_METHOD
    if tp is types.BuiltinMethodType or tp is types.MethodWrapperType:
        # (a builtin function is a BuiltinMethodType bound to its module: split per object.
        # A method-wrapper, ``setd = d.__setitem__``, ``nxt = it.__next__``, is bound to its
        # object as ``d.get`` is: by name alone it was no co-variable with ``d``, which a
        # restore shipped apart, and ``setd`` wrote into a copy while both verified)
        return K_BUILTIN_METHOD
    if tp.__name__ in _CYTHON_FUNCTIONS:
        # a compiled library's function (numpy's `__pyx_unpickle_SeedSequence`, in the reduce
        # value of every Generator): by reference, as a builtin is. Walked as an object, two
        # generators reaching it were one co-variable
        return K_BYREF
    if tp is functools.partial:
        return K_PARTIAL
    if tp is types.MappingProxyType:
        return K_MAPPINGPROXY
    if tp in _DICT_VIEW_TYPES:
        return K_DICTVIEW
    if tp in (staticmethod, classmethod, property, functools.cached_property):
        return K_DESCRIPTOR_WRAPPER
    if issubclass(tp, (logging.Logger, logging.PlaceHolder)):
        return K_BYREF  # process-wide singletons by name; their handlers hold locks
    if _process_singleton(tp):
        return K_BYREF
    if issubclass(tp, type):
        return K_CLASS
    if issubclass(tp, _BYREF_TYPES):
        return K_BYREF
    if issubclass(tp, enum.Enum) or issubclass(tp, np.generic):
        return K_ATOM
    if issubclass(tp, np.ndarray):
        return K_NDARRAY
    if issubclass(tp, weakref.ReferenceType):
        return K_WEAKREF
    if issubclass(tp, _OPAQUE_BASES):
        return K_OPAQUE
    if tp is mmap.mmap or tp in (bytearray, memoryview, _array_mod.array):
        return K_BUFFER
    if tp is collections.deque:
        return K_DEQUE
    pd = _pandas()
    if pd is not None:
        try:
            if issubclass(tp, pd.DataFrame):
                return K_DATAFRAME
            if issubclass(tp, pd.Series):
                return K_SERIES
            if issubclass(tp, pd.Index):
                return K_INDEX
            if issubclass(tp, pd.api.extensions.ExtensionArray):
                return K_EXTARRAY
        except Exception:  # pragma: no cover - exotic pandas builds
            pass
    torch = _torch()
    if torch is not None:
        try:
            if issubclass(tp, torch.Tensor):
                return K_TORCH
        except Exception:  # pragma: no cover
            pass
    pa = _pyarrow()
    if pa is not None:
        try:
            if issubclass(tp, _arrow_types(pa)):
                return K_ARROW
        except Exception:  # pragma: no cover - exotic pyarrow builds
            pass
    if _python_defined(tp):
        return K_INSTANCE  # instance state + whatever its C solid base holds
    # C type: instance state if it has a real __dict__, else its reduce value, else opaque
    if "__next__" in dir(tp):  # C iterators (itertools, list_iterator, ...): state hidden
        return K_ITERATOR
    if _dict_descriptor(tp) is not None:
        return K_INSTANCE
    return K_REDUCE


def _abc_registered(cls: type) -> list[type]:
    """The classes ``cls.register(...)`` made virtual subclasses of the abstract class `cls`,
    by name. The registry is in C (``_abc_impl``), not in the class dict: a cell that only
    registered one (``Shape.register(Square)``) changed nothing the walk saw, so a replay did
    not re-run it, and ``isinstance(sq, Shape)`` was False after a verified restore."""
    try:
        import _abc

        refs = _abc._get_dump(cls)[0]
    except Exception:  # noqa: BLE001 - the pure-Python abc, or not an ABC after all
        refs = getattr(cls, "_abc_registry", ())
    try:
        found = [c for r in list(refs) if isinstance(c := r(), type)]
    except Exception:  # noqa: BLE001 - a registry we cannot read: none
        return []
    return sorted(found, key=_type_name)


def _global_generator(obj: Any) -> bool:
    """Whether `obj` is numpy's global RandomState (what ``np.random.rand`` draws from).

    Like `random`'s hidden instance, it is the process's: held by a value (a scipy
    distribution's ``_random_state``, ``pick = random.choice``) it is referenced by identity,
    and its state is the generators' state the restore sets apart. Walked by value, its seed
    sequence's entropy (drawn from the OS in every process) made every value holding it
    differ from the checkpointed one when recomputed.
    """
    mtrand = sys.modules.get("numpy.random.mtrand")
    return mtrand is not None and obj is getattr(mtrand, "_rand", None)


def _python_defined(cls: type) -> bool:
    """True if `cls` comes from a ``class`` statement (its instances hold no C state of its
    own): a heap type whose instance size grows over its base's by at most the ``__dict__``,
    ``__weakref__`` and ``__slots__`` pointers it declares. C heap types (``_random.Random``,
    sqlite3...) add struct fields and fail the test."""
    if not cls.__flags__ & _HEAPTYPE:
        return False
    base = cls.__base__
    if base is None:
        return False
    own = type.__dict__["__dict__"].__get__(cls)
    n = sum(type(v) is types.MemberDescriptorType for v in own.values())
    n += ("__dict__" in own) + ("__weakref__" in own)
    return cls.__basicsize__ - base.__basicsize__ <= 8 * n


_solid_cache: dict[type, type] = {}


def _solid_base(tp: type) -> type:
    """The first class in the MRO whose instances carry C-level state (``object`` if none)."""
    solid = _solid_cache.get(tp)
    if solid is None:
        solid = object
        for cls in tp.__mro__:
            if cls is object or not _python_defined(cls):
                solid = cls
                break
        if len(_solid_cache) > 20_000:
            _solid_cache.clear()
        _solid_cache[tp] = solid
    return solid


_layout_cache: dict[type, tuple[Any, tuple[tuple[str, Any], ...]]] = {}


def _dict_descriptor(tp: type) -> Any:
    """The C-level ``__dict__`` getset descriptor of `tp`, found without calling user code.

    A class may override ``__dict__``/``__getattr__``/``__getattribute__``; reading the
    descriptor from the MRO's type dicts and calling its C ``__get__`` bypasses all of them.
    """
    for cls in tp.__mro__:
        d = type.__dict__["__dict__"].__get__(cls)
        desc = d.get("__dict__")
        if desc is not None:
            ok = (types.GetSetDescriptorType, types.MemberDescriptorType)
            return desc if type(desc) in ok else None
    return None


def _layout(tp: type) -> tuple[Any, tuple[tuple[str, Any], ...]]:
    """(``__dict__`` descriptor or None, ((slot name, member descriptor), ...)) for `tp`."""
    lay = _layout_cache.get(tp)
    if lay is not None:
        return lay
    slots: list[tuple[str, Any]] = []
    for cls in tp.__mro__:
        cd = type.__dict__["__dict__"].__get__(cls)
        names = cd.get("__slots__")
        if names is None:
            continue
        if isinstance(names, str):
            names = (names,)
        try:
            names = tuple(names)
        except Exception:
            continue
        for name in names:
            if not isinstance(name, str) or name in ("__dict__", "__weakref__"):
                continue
            mangled = name
            if name.startswith("__") and not name.endswith("__"):
                mangled = "_" + cls.__name__.lstrip("_") + name
            desc = cd.get(mangled)
            if type(desc) is types.MemberDescriptorType:
                slots.append((mangled, desc))
    lay = (_dict_descriptor(tp), tuple(slots))
    if len(_layout_cache) > 20_000:
        _layout_cache.clear()
    _layout_cache[tp] = lay
    return lay


def _type_name(tp: type) -> str:
    """Module-qualified name of a type, read without triggering metaclass ``__getattr__``."""
    try:
        mod = type.__dict__["__module__"].__get__(tp)
        qn = type.__dict__["__qualname__"].__get__(tp)
        return f"{mod if type(mod) is str else '?'}.{qn}"
    except Exception:
        return "?"


def enum_member_state(member: Any) -> dict[str, Any] | None:
    """The attributes of an enum member beyond what the enum machinery keeps on it (its value,
    name, class and sort order): what the class's ``__init__`` set (``self.mass = mass``, the
    enum docs' ``Planet``) or a cell did (``Status.OPEN.note = 'x'``). None when there are none."""
    try:
        d = object.__getattribute__(member, "__dict__")
    except AttributeError:
        return None
    if len(d) <= len(_ENUM_MEMBER_KEYS) and all(k in _ENUM_MEMBER_KEYS for k in d):
        return None
    extra = {k: v for k, v in d.items() if k not in _ENUM_MEMBER_KEYS}
    return extra or None


#: what `enum` itself keeps in a member's ``__dict__``
_ENUM_MEMBER_KEYS = frozenset({"_value_", "_name_", "__objclass__", "_sort_order_"})


#: types of enum values that are values (nothing in them can change): a member with one is its
#: name in a digest
_ENUM_ATOM_VALUES = frozenset({int, float, str, bytes, bool, complex})


def _is_notebook_class(cls: type, ns: Any) -> bool:
    try:
        mod = type.__dict__["__dict__"].__get__(cls).get("__module__")
    except Exception:
        return False
    return mod == "__main__" or (
        ns is not None and isinstance(ns, dict) and mod == ns.get("__name__", "__main__")
    )


def _is_session_class(cls: type, ns: Any) -> bool:
    """A class whose attributes are the session's data: the notebook's, or one of a module
    imported from the notebook's own files (``from config import Config; Config.lr = 0.1``,
    a registry's class-level dict a classmethod fills). Referenced by name, such a class came
    back from a restore as the file defines it, and verified."""
    return _is_notebook_class(cls, ns) or local_class(cls)


def local_class(cls: type) -> bool:
    """A class defined in one of the notebook's own modules (`local_module`). Cached per
    class: a walk meets every instance, and the pickler every class."""
    hit = _local_class_cache.get(cls)
    if hit is None:
        try:
            mod = type.__dict__["__dict__"].__get__(cls).get("__module__")
        except Exception:  # noqa: BLE001
            return False
        hit = type(mod) is str and local_module(sys.modules.get(mod))
        if len(_local_class_cache) > 20_000:
            _local_class_cache.clear()
        _local_class_cache[cls] = hit
    return hit


_local_class_cache: dict[type, bool] = {}


def _is_notebook_function(fn: types.FunctionType, ns: Any) -> bool:
    return (ns is not None and fn.__globals__ is ns) or fn.__module__ == "__main__"


def exec_globals(fn: types.FunctionType) -> dict | None:
    """The globals dict of a function the notebook made by ``exec`` into a dict of its own
    (``G = {'K': 3}; exec('def f(x): return x * K', G)``), else None.

    That dict is data the function reads at every call (``G['K'] = 1`` changes what ``f``
    returns): ``f`` and ``G`` are one value. Not a module's namespace (a library function's,
    or the notebook's own namespace, which is ``__main__``'s), and not a function of an
    imported module.

    So is the namespace ``%run script.py`` (without ``-i``) ran a script in: IPython copies
    its names into the notebook's, but the script's functions read and write their own
    (``setk(5)`` with ``global K`` changes what ``kf()`` returns, not the notebook's ``K``),
    and the objects both hold (``counter``) are the same. Told by its functions being of
    ``__main__`` while the dict has no ``__name__`` (IPython removes it after the run, and the
    dict a restore rebuilds is the same); a function cloudpickle copied from the notebook
    keeps a ``__name__`` in the dict it gets, and stays a notebook function.
    """
    g = fn.__globals__
    mod = fn.__module__
    if type(g) is not dict or module_namespace(g):
        return None
    if mod == "__main__":
        return g if "__name__" not in g else None
    if type(mod) is str and (mod in sys.modules or g.get("__name__") == mod):
        # (a library function cloudpickle copied, with a dict of the globals it reads, names
        # its module: not the notebook's; so does a function of a notebook module shipped by
        # value, whose module the restoring kernel may not have imported)
        return None
    return g


_LRU_WRAPPER = functools._lru_cache_wrapper


def _lru_state(wrapper: Any, ns: Any) -> tuple:
    """What a notebook function's ``lru_cache``/``cache`` remembers, as far as C shows it.

    Its results are part of its value: ``f(1)`` cached before ``base.append(2)`` keeps
    answering 2, a fresh cache answers 3. The cache's content is hidden in C; its size and
    miss count change exactly when a call stores a result, so a cell that fills it mutates
    the function (its cells are replayed to recreate it) and a restore that comes back with
    another cache is not verified. Hits (which store nothing) are left out: a cell that only
    reads the cache does not change it. A library's cache is its own business: not followed.
    """
    fn = getattr(wrapper, "__wrapped__", None)
    if type(fn) is not types.FunctionType or not _is_notebook_function(fn, ns):
        return ("lru",)
    try:
        info = wrapper.cache_info()
    except Exception:  # noqa: BLE001 - a wrapper we cannot read: its type says enough
        return ("lru",)
    if not info.currsize:
        return ("lru",)  # empty (or maxsize=0): a fresh cache behaves the same
    return ("lru", int(info.misses), int(info.currsize))


def _shared_by_code(o: Any, tp: type) -> bool:
    """What many unrelated objects hold because their code does: classes (a C object holds
    its heap type), modules, library functions and builtins (`len`, a ctor). A link through
    one would make every holder one co-variable (two `itemgetter`s, two `methodcaller`s)."""
    if isinstance(o, type) or tp is types.ModuleType:
        return True
    if tp is types.FunctionType:
        return getattr(o, "__module__", None) != "__main__"
    if tp is types.BuiltinFunctionType:
        self_ = getattr(o, "__self__", None)
        return self_ is None or type(self_) is types.ModuleType
    return False


def dynamic_module(mod: types.ModuleType) -> bool:
    """A module object the notebook made (``types.ModuleType("m")``), not one it imported.

    It is nobody's import, so it is the user's data: pickled by value (cloudpickle's rule: its
    name is not in ``sys.modules``), walked like an instance, and a cell that changes it
    mutates a variable, which re-running that cell after the restore would change again.
    """
    name = getattr(mod, "__name__", None)
    return name not in sys.modules or registered_module(mod)


#: spec-less modules C code makes at import (Cython's shared runtime module): not the notebook's
_C_MADE_MODULES = ("__main__", "__mp_main__", "cython_runtime", "_cython_")


def registered_module(mod: types.ModuleType) -> bool:
    """A module the notebook made and put in ``sys.modules`` itself (``sys.modules['fake'] =
    types.ModuleType('fake')``, then ``import fake``): no import made it, so it has no spec and
    no file. It is data like one it did not register (a restore cannot import it). C extensions
    make such modules at import too (``pyexpat.errors``): those are submodules of a package
    that has a spec."""
    name = getattr(mod, "__name__", None)
    if type(name) is not str or sys.modules.get(name) is not mod or name.startswith(_C_MADE_MODULES):
        return False
    for _ in range(name.count(".") + 1):
        m = sys.modules.get(name)
        if (m is None or type(m) is not types.ModuleType or getattr(m, "__spec__", None) is not None
                or hasattr(m, "__file__")):
            return False
        name = name.rpartition(".")[0]
    return True


#: packages of our own, never the notebook's (an editable install is not under site-packages)
_OWN_PACKAGES = frozenset({"kernel_agent", "elastic_spawner"})


def local_module(mod: types.ModuleType) -> bool:
    """A module imported from one of the notebook's own files (``utils.py`` next to it).

    Its globals (a cache dict, a counter, a registry) are the session's data as much as a
    variable is: `bump()` in it changes what a restore must bring back. Installed libraries'
    modules are not (their state is the process's: options, context cells).
    """
    name = getattr(mod, "__name__", None)
    return (type(name) is str and name.partition(".")[0] not in _OWN_PACKAGES
            and local_source(mod) is not None)


def local_source(mod: Any) -> str | None:
    """The absolute source file of `mod` when it is a ``.py`` file outside the installed
    library paths (the notebook's own code), else None. Any object: None has no file."""
    f = getattr(mod, "__file__", None)
    if type(f) is not str or not f.endswith(".py"):
        return None
    return _local_file(f)


@functools.lru_cache(maxsize=4096)
def _local_file(path: str) -> str | None:
    from kernel_agent.effects import _library_prefixes

    global _LIB_PREFIXES
    if _LIB_PREFIXES is None:
        _LIB_PREFIXES = _library_prefixes()
    path = os.path.abspath(path)
    return None if path.startswith(_LIB_PREFIXES) else path


_LIB_PREFIXES: tuple[str, ...] | None = None

# the notebook's own modules as loaded: name -> (the spec of the load, the source file's
# (mtime_ns, size) then). A load is an import or a reload, each of which makes a new spec.
_local_loads: dict[str, tuple[Any, tuple[int, int] | None]] = {}


def source_stat(path: str) -> tuple[int, int] | None:
    """A file's (mtime_ns, size), None when it cannot be read: enough to tell it changed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def note_local_loads(names: Iterable[str] | None = None) -> None:
    """Record the source file of each notebook-local module loaded since the last call, as it
    is now: the modules `names` (those that joined ``sys.modules``; None: every module) and
    reloads of the ones already known. The monitor calls it after a cell that changed
    ``sys.modules``: the cost is the new modules and the known local ones, not all modules."""
    candidates = list(sys.modules) if names is None else [*names, *_local_loads]
    for name in candidates:
        mod = sys.modules.get(name)
        if type(mod) is not types.ModuleType:
            continue
        spec = getattr(mod, "__spec__", None)
        seen = _local_loads.get(name)
        if seen is not None and seen[0] is spec:
            continue
        source = local_source(mod)
        if source is not None:
            _local_loads[name] = (spec, source_stat(source))


def stale_local_modules() -> frozenset[str]:
    """The notebook's own modules whose source file changed since they were loaded, and that
    were not reloaded since: their functions and classes are code the file no longer holds.
    Pickled by reference (module and name) they came back as the file's new code, and
    ``from lm import f`` then ``f()`` gave another result after a restore."""
    out = []
    for name, (spec, stat) in list(_local_loads.items()):
        mod = sys.modules.get(name)
        if mod is None or getattr(mod, "__spec__", None) is not spec:
            continue
        source = local_source(mod)
        if source is not None and source_stat(source) != stat:
            out.append(name)
    return frozenset(out)


def module_state(mod: types.ModuleType) -> dict[str, Any] | None:
    """What a restore must bring back of module `mod`, or None when it is an import like any
    other (a library's): a module the notebook made, all of it; one of the notebook's own
    files, its globals (dunder names come from the import)."""
    if dynamic_module(mod):
        return {k: v for k, v in vars(mod).items() if type(k) is str and k != "__builtins__"}
    if local_module(mod):
        return {k: v for k, v in vars(mod).items()
                if type(k) is str and not (k[:2] == "__" and k[-2:] == "__")}
    return None


def module_global_of(value: Any, name: str) -> tuple[str, str, str] | None:
    """(module, its source file, attribute) when `value` is a global of one of the notebook's
    own modules, else None.

    ``from exp import A`` binds the module's very list: a cell's ``A.append(2)`` is seen by
    the module's functions, and ``exp.A is A``. Shipped as a plain value it came back detached
    (the module, imported again, held the file's ``[1]``), and nothing checked that. Only
    objects whose identity matters: not atoms, nor functions, classes and modules (those
    already come back as the module's own, by reference). The attribute named like the
    variable is preferred; else the first by module and attribute name.
    """
    tp = type(value)
    if (tp in MARSHAL_ATOMS or tp in _EXT_ATOMS or tp is types.FunctionType
            or issubclass(tp, type) or tp is types.ModuleType):
        return None
    try:
        found = [(key != name, modname, key, source)
                 for modname, mod, source in _local_modules()
                 for key, v in list(vars(mod).items())
                 if v is value and type(key) is str and not (key[:2] == "__" and key[-2:] == "__")]
    except Exception:  # noqa: BLE001 - a module whose namespace cannot be read: none
        return None
    if not found:
        return None
    _, modname, key, source = min(found)
    return modname, source, key


_local_modules_seen: tuple[int, list[tuple[str, types.ModuleType, str]]] = (-1, [])


def _local_modules() -> list[tuple[str, types.ModuleType, str]]:
    """(name, module, source) of the notebook's own imported modules. Looked up once per change
    in the number of imported modules (a checkpoint asks once per variable, and a kernel with
    pandas has thousands of modules); a module imported again under its name is noticed."""
    global _local_modules_seen
    count, mods = _local_modules_seen
    if count == len(sys.modules) and all(sys.modules.get(n) is m for n, m, _ in mods):
        return mods
    mods = []
    for modname, mod in list(sys.modules.items()):
        if (type(mod) is not types.ModuleType or type(modname) is not str
                or modname in ("__main__", "__mp_main__")):  # (the notebook's own namespace)
            continue
        source = local_source(mod)
        if source is not None and local_module(mod):
            mods.append((modname, mod, source))
    _local_modules_seen = (len(sys.modules), mods)
    return mods


def module_globals() -> dict[int, tuple[Any, str, str, str]]:
    """id -> (object, module, source file, attribute) of the globals of the notebook's own
    modules whose identity matters (as `module_global_of`: not atoms, functions, classes or
    modules); an object bound in several places is named by the first module and attribute.
    Kept while no module namespace changes (their version tags): a checkpoint asks once per
    co-variable, and so does a restore."""
    global _module_globals_seen
    from kernel_agent.dictversion import dict_version

    mods = sorted(_local_modules(), key=lambda m: m[0])
    key = tuple((id(vars(mod)), dict_version(vars(mod))) for _, mod, _ in mods)
    if key == _module_globals_seen[0] and None not in (v for _, v in key):
        return _module_globals_seen[1]
    found: dict[int, tuple[Any, str, str, str]] = {}
    try:
        for modname, mod, source in mods:
            for key, v in sorted(((k, v) for k, v in list(vars(mod).items()) if type(k) is str
                                  and not (k[:2] == "__" and k[-2:] == "__")), key=lambda kv: kv[0]):
                tp = type(v)
                if (tp in MARSHAL_ATOMS or tp in _EXT_ATOMS or tp is types.FunctionType
                        or issubclass(tp, type) or tp is types.ModuleType):
                    continue
                found.setdefault(id(v), (v, modname, source, key))
    except Exception:  # noqa: BLE001 - a module whose namespace cannot be read: what was found
        pass
    _module_globals_seen = (key, found)
    return found


_module_globals_seen: tuple[tuple, dict[int, tuple[Any, str, str, str]]] = ((None,), {})


def module_namespace(mapping: Any) -> bool:
    """`mapping` is a module's ``__dict__`` (the notebook's namespace is ``__main__``'s)."""
    if type(mapping) is not dict:
        return False
    name = mapping.get("__name__")
    mod = sys.modules.get(name) if type(name) is str else None
    return mod is not None and getattr(mod, "__dict__", None) is mapping


def _ctypes_array_type(cls: type) -> bool:
    """`cls` is ctypes' own array type of an element type and a length (``c_int * 2``)."""
    ct = sys.modules.get("ctypes")
    try:
        return (ct is not None and issubclass(cls, ct.Array) and cls is not ct.Array
                and cls._type_ * cls._length_ is cls)
    except Exception:  # noqa: BLE001 - another kind of class
        return False


def _code_doc(co: types.CodeType) -> Any:
    """The docstring a def with code `co` gives its function (before Python 3.12: the code's
    first constant when that is a string)."""
    consts = co.co_consts
    return consts[0] if consts and type(consts[0]) is str else None


def _ref_name(obj: Any) -> str:
    """Stable by-reference name of a module, library class or library function."""
    if type(obj) is types.ModuleType:
        return "module:" + str(obj.__name__)
    if isinstance(obj, (logging.Logger, logging.PlaceHolder)):
        return "logger:" + str(getattr(obj, "name", "?"))
    singleton = _process_singleton(type(obj))
    if singleton is not None:
        return "process:" + singleton
    if isinstance(obj, type):
        return "class:" + _type_name(obj)
    mod = getattr(obj, "__module__", None)
    qn = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(mod, str):
        self_ = getattr(obj, "__self__", None)
        if self_ is not None and not isinstance(self_, types.ModuleType):
            mod = _type_name(type(self_))
    return f"ref:{mod}.{qn}:{_type_name(type(obj))}"


#: id(structured dtype) -> (the dtype, its `names` tuple then, its key): see `_dtype_key`
_struct_keys: dict[int, tuple[np.dtype, Any, str]] = {}


def _dtype_key(dt: np.dtype) -> str:
    """A dtype as the array tokens name it: its ``str`` (``'<f8'``), and for a structured
    dtype its fields too: ``'|V12'`` named ``x, y`` and ``a, b`` alike, so a replay that lost
    ``rec.dtype.names = ('a', 'b')`` verified (the in-process print missed the change too).

    A structured dtype's ``str`` costs about 15 us (a scikit-learn tree's node array: 60 of
    them in a random forest were most of its walk), so it is kept per dtype object, which is
    held (its id is not reused meanwhile). Of a dtype, only ``names`` can be set, and setting
    it stores a new tuple: the key stands while ``names`` is the same object."""
    names = dt.names
    if names is None:
        return dt.str
    hit = _struct_keys.get(id(dt))
    if hit is not None and hit[0] is dt and hit[1] is names:
        return hit[2]
    key = str(dt)
    if len(_struct_keys) >= 1024:
        _struct_keys.clear()
    _struct_keys[id(dt)] = (dt, names, key)
    return key


def _atom_token(x: Any) -> Any:
    """Marshal-able, process-independent encoding of an atom."""
    tp = type(x)
    if tp in MARSHAL_ATOMS:
        if (tp is str or tp is bytes) and len(x) > _BIG_ATOM:
            b = x.encode("utf-8", "surrogatepass") if tp is str else x
            return ("big", tp.__name__, len(x), xxhash.xxh3_128_digest(b))
        return x
    if tp is range:
        return ("range", x.start, x.stop, x.step)
    if tp is fractions.Fraction:
        return ("frac", x.numerator, x.denominator)
    if tp is decimal.Decimal:
        return ("dec", str(x))
    if tp is re.Pattern:
        p = x.pattern
        return ("re", p if isinstance(p, (str, bytes)) else repr(p), x.flags)
    if tp is np.dtype:
        return ("dtype", str(x.descr) if x.fields else x.str, str(x))
    if isinstance(x, np.generic):
        if x.dtype.hasobject:
            return ("npobj", repr(x))
        if x.dtype.char in "gG":
            return ("np", x.dtype.str, _hash_u8(_significant_bytes(np.asarray(x).reshape(-1))))
        return ("np", _dtype_key(x.dtype), x.tobytes())
    if isinstance(x, enum.Enum):
        return ("enum", _type_name(tp), str(x._name_))
    return (_type_name(tp), repr(x))


# --------------------------------------------------------------------------------------------
# Array hashing
# --------------------------------------------------------------------------------------------

# Buffers of _PAR_MIN bytes or more are hashed as _PAR_CHUNKS chunks in parallel (xxhash drops
# the GIL). Both constants are part of the digest definition: never derive them from the machine.
_PAR_MIN = 8 << 20
_PAR_CHUNKS = 4
_hash_pool: Any = None


def _hash_u8(u8: np.ndarray) -> bytes:
    """xxh3_128 of a contiguous byte array. Big buffers are cut into a FIXED number of chunks
    (so the digest is the same on every machine, whatever its CPU count) hashed in parallel:
    xxhash releases the GIL."""
    n = u8.shape[0]
    if n < _PAR_MIN:
        return xxhash.xxh3_128_digest(u8)
    global _hash_pool
    if _hash_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        workers = max(2, min(_PAR_CHUNKS, os.cpu_count() or 2))
        _hash_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kernel_agent-hash")
    step = -(-n // _PAR_CHUNKS)
    chunks = [u8[i : i + step] for i in range(0, n, step)]
    digests = list(_hash_pool.map(xxhash.xxh3_128_digest, chunks))
    return xxhash.xxh3_128_digest(b"".join(digests) + n.to_bytes(8, "little"))


def _buffer_hash(arr: np.ndarray, logical: bool) -> bytes:
    """xxh3 of an array's bytes. `logical`: C-order content (layout-independent, may copy);
    otherwise memory order without copying for C- or F-contiguous arrays."""
    if type(arr) is not np.ndarray:
        # a plain view of a subclass's memory: its Python methods (np.ma's reshape computes and
        # stores a fill value) would change the object while we hash it
        arr = np.ndarray.view(arr, np.ndarray)
    if arr.size == 0:
        return b""
    if arr.flags.c_contiguous:
        a = arr
    elif arr.flags.f_contiguous and not logical:
        a = arr.T
    else:
        a = np.ascontiguousarray(arr)
    if a.dtype.char in "gG":
        return _hash_u8(_significant_bytes(a.reshape(-1)))
    try:
        u8 = a.reshape(-1).view(np.uint8)
    except Exception:
        return xxhash.xxh3_128_digest(a.tobytes())
    return _hash_u8(u8)


def _longdouble_significant() -> int:
    """Bytes of a ``np.longdouble`` that hold its value: 10 of 16 for x87's 80-bit format."""
    fi = np.finfo(np.longdouble)
    size = np.dtype(np.longdouble).itemsize
    return 10 if (fi.nmant, fi.nexp) == (63, 15) and size > 10 else size


_LONGDOUBLE_SIGNIFICANT = _longdouble_significant()


def _significant_bytes(flat: np.ndarray) -> np.ndarray:
    """The bytes of a contiguous 1-d longdouble (or clongdouble) array without the padding of
    each value.

    x87's 80-bit values sit in 16 bytes whose last 6 arithmetic never writes: they hold
    whatever the memory held before, so two equal arrays (a recomputed one and the original)
    hashed differently and a restore that re-ran the cell reported the value as differing.
    """
    size = np.dtype(np.longdouble).itemsize
    keep = _LONGDOUBLE_SIGNIFICANT
    u8 = np.ascontiguousarray(flat).view(np.uint8).reshape(-1, size)
    if keep == size or flat.dtype.byteorder == ">":
        return u8.reshape(-1)
    return np.ascontiguousarray(u8[:, :keep]).reshape(-1)


def _final_base(arr: np.ndarray) -> np.ndarray:
    """Last ndarray in the ``.base`` chain (the array owning, or exporting, the memory).

    Seen through the array-interface holders numpy's stride tricks put in the chain
    (``as_strided``, ``sliding_window_view``, ``broadcast_to``: ``.base`` is a DummyArray whose
    own ``.base`` is the array): such a result is a view of that array.
    """
    a = arr
    for _ in range(64):
        b = a.base
        if not isinstance(b, np.ndarray):
            b = array_interface_base(b)
            if b is None:
                return a
        a = b
    return a


def _data_ptr(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


def _own_setstate(tp: type, ns: Any) -> bool:
    """True when a library class (not the notebook's) defines its own ``__setstate__``."""
    if _is_notebook_class(tp, ns):
        return False
    try:
        for klass in type.__dict__["__mro__"].__get__(tp):
            if klass in (dict, list, object):
                return False
            if "__setstate__" in type.__dict__["__dict__"].__get__(klass):
                return True
    except Exception:  # noqa: BLE001 - hostile metaclass: keep walking the instance dict
        return False
    return False


@functools.lru_cache(maxsize=20_000)  # per type: classes are few, objects many
def _library_pickling(tp: type) -> bool:
    """Whether a class of `tp`'s MRO other than ``object`` says how its instances pickle."""
    try:
        for klass in type.__dict__["__mro__"].__get__(tp):
            if klass is object:
                return False
            own = type.__dict__["__dict__"].__get__(klass)
            if "__getstate__" in own or "__reduce__" in own or "__reduce_ex__" in own:
                return True
    except Exception:  # noqa: BLE001 - hostile metaclass
        return False
    return False


def _library_pickled(tp: type, ns: Any) -> bool:
    """A library class (not the session's) whose own pickling defines its value."""
    return _library_pickling(tp) and not _is_session_class(tp, ns)


def _holds_c_object(values: Any) -> bool:
    """Whether one of `values` is a C object the walk reads through its reduce value or not at
    all (opaque): what it holds may be checked by type only."""
    for v in values:
        t = type(v)
        if t in MARSHAL_ATOMS:
            continue
        k = _classify(t)
        if k in (K_OPAQUE, K_REDUCE):
            return True
    return False


def _own_hash(obj: Any) -> int | None:
    """``hash(obj)``, or None when it has none or it fails."""
    try:
        return hash(obj)
    except Exception:  # noqa: BLE001 - unhashable, or a hostile __hash__
        return None


_HASH_MODULES = frozenset({"_hashlib", "_md5", "_sha1", "_sha2", "_sha256", "_sha512", "_sha3",
                           "_blake2"})


#: an SQLite database up to this size is digested by its content (``iterdump``)
SQLITE_DIGEST_MAX_BYTES = 64 << 20


def _c_content(obj: Any, tp: type) -> tuple | None:
    """The content of a C object that does not pickle, for the portable digest, or None
    (checked by type only).

    A hashlib object: its algorithm and the digest of what it was fed so far (of a copy: the
    object itself goes on). An SQLite connection: the SQL dump of its database, up to
    `SQLITE_DIGEST_MAX_BYTES`. An in-memory file: its content and position. Checked by type
    only, a hash re-run over other data, or an in-memory database re-filled by ``insert ...
    values (random())``, verified.
    """
    module = getattr(tp, "__module__", None)
    if module in _HASH_MODULES:
        return _hash_state(obj)
    if tp is sqlite3.Connection:
        try:
            size = (obj.execute("PRAGMA page_count").fetchone()[0]
                    * obj.execute("PRAGMA page_size").fetchone()[0])
            if size > SQLITE_DIGEST_MAX_BYTES:
                return None
            h = hashlib.blake2b(digest_size=16)
            for line in obj.iterdump():
                h.update(line.encode("utf-8", "surrogatepass"))
                h.update(b"\n")
            return ("sqlite", h.digest())
        except Exception:  # noqa: BLE001 - closed, another thread's, locked: by type
            return None
    if tp is struct.Struct:
        return ("struct", obj.format)
    state = _memfile_state(obj, tp)
    if state is not None:
        return ("memfile", _atom_token(state[0]), state[1])
    return None


def _memfile_state(obj: Any, tp: type) -> tuple[str | bytes, int] | None:
    """An in-memory file's content and position (None: another object, or closed)."""
    if tp is not io.StringIO and tp is not io.BytesIO:
        return None
    try:
        return obj.getvalue(), obj.tell()
    except Exception:  # noqa: BLE001 - closed
        return None


def _match_value(m: re.Match) -> tuple:
    """A regex match's reduce value, for the walk: what makes it (serialize._reduce_match).

    It has none of its own, so it was opaque: every cell that read it (``m.group(1)``) was
    taken to have changed it, and a name holding it could never be recomputed apart from the
    cell that read it last. It cannot change: its pattern, string, bounds and spans are it.
    """
    return (re.Match, (m.re, m.string, m.pos, m.endpos, m.regs, m.lastindex))


def _hash_state(obj: Any) -> tuple | None:
    try:
        c = obj.copy()
        try:
            d = c.digest()
        except TypeError:  # shake: the length is the caller's
            d = c.digest(64)
        return ("hashobj", str(obj.name), bytes(d))
    except Exception:  # noqa: BLE001 - not a hash object after all: opaque
        return None


def _ma_default_fill(arr: Any) -> Any:
    """The fill value numpy.ma would store for `arr` when first asked, without asking `arr`."""
    try:
        return np.ma.core._check_fill_value(None, np.ndarray.view(arr, np.ndarray).dtype)
    except Exception:  # noqa: BLE001 - older/newer numpy: keep the unset value
        return None


def _byte_span(arr: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the bytes `arr` can touch (negative strides included)."""
    lo = hi = _data_ptr(arr)
    if arr.size == 0:
        return lo, lo
    for n, st in zip(arr.shape, arr.strides, strict=True):
        if st < 0:
            lo += st * (n - 1)
        else:
            hi += st * (n - 1)
    return lo, hi + arr.itemsize


def may_self_overlap(arr: np.ndarray) -> bool:
    """Whether two elements of `arr` may lie at one address: stride tricks (``as_strided``
    windows, a stride-0 ``broadcast``) alias elements of one array, which a copy of it does
    not (a write to ``w[0, 1]`` shows in ``w[1, 0]``). Conservative: the dimensions, from the
    smallest stride up, must each step over all the smaller ones, or it may."""
    if arr.size <= 1:
        return False
    reach = arr.itemsize
    for step, n in sorted((abs(st), n) for n, st in zip(arr.shape, arr.strides, strict=True)
                          if n > 1):
        if step < reach:
            return True
        reach += step * (n - 1)
    return False


def _arrow_leaves(obj: Any) -> list[Any]:
    """The ``pa.Array`` chunks of an arrow container in order (a table's columns chunk by chunk);
    [] for a ``pa.Buffer``."""
    pa = sys.modules["pyarrow"]
    if isinstance(obj, pa.Array):
        return [obj]
    if isinstance(obj, pa.ChunkedArray):
        return list(obj.chunks)
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return [c for col in obj.columns
                for c in (col.chunks if isinstance(col, pa.ChunkedArray) else (col,))]
    return []


def _arrow_buffers(obj: Any) -> list[Any]:
    """Every non-empty buffer an arrow container reads: its arrays' (``Array.buffers()`` lists
    the children's too) and a dictionary array's dictionary's. A zero-size buffer is left out:
    arrow gives every empty allocation one static address, shared by unrelated arrays."""
    pa = sys.modules["pyarrow"]
    if isinstance(obj, pa.Buffer):
        return [obj] if obj.size else []
    out: list[Any] = []
    for arr in _arrow_leaves(obj):
        out += [b for b in arr.buffers() if b is not None and b.size]
        if pa.types.is_dictionary(arr.type):
            out += _arrow_buffers(arr.dictionary)
    return out


class _HashSink:
    """A write-only file that hashes what is written to it (arrow's IPC writer streams into it:
    no copy of the whole serialized table is ever held)."""

    def __init__(self) -> None:
        self.hasher = xxhash.xxh3_128()
        self.closed = False

    def write(self, data: Any) -> int:
        self.hasher.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _arrow_content_hash(obj: Any) -> bytes:
    """Hash of an arrow container's logical content, the same in every process: its schema and
    values as arrow's IPC stream format writes them, each column's chunks first concatenated
    into one compact array (``pa.concat_arrays`` copies only a slice's own values and rebases
    its offsets; the IPC writer alone kept a string slice's trailing bytes). So a slice or a
    re-chunked copy that holds the same values hashes the same, and no address is part of it."""
    pa = sys.modules["pyarrow"]
    if isinstance(obj, pa.Buffer):
        return _hash_u8(np.frombuffer(obj, dtype=np.uint8)) if obj.size else b""

    def compact(chunks: list[Any], typ: Any) -> Any:
        return pa.concat_arrays(chunks) if chunks else pa.array([], type=typ)

    if isinstance(obj, pa.Array):
        batch = pa.RecordBatch.from_arrays([compact([obj], obj.type)], names=[""])
    elif isinstance(obj, pa.ChunkedArray):
        batch = pa.RecordBatch.from_arrays([compact(obj.chunks, obj.type)], names=[""])
    else:  # Table, RecordBatch
        cols = [compact(c.chunks if isinstance(c, pa.ChunkedArray) else [c], c.type)
                for c in obj.columns]
        batch = pa.RecordBatch.from_arrays(cols, schema=obj.schema)
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), batch.schema) as writer:
        writer.write_batch(batch)
    return sink.hasher.digest()


# --------------------------------------------------------------------------------------------
# The walker
# --------------------------------------------------------------------------------------------


def _suspended_locals(obj: Any) -> list[Any]:
    """What a suspended generator holds: its frame's locals, what its value stack holds and the
    generator it delegates to (not its globals: the namespace). [] for other objects
    (coroutines hold the event loop).

    The value stack is where a suspended ``for x in lst:`` keeps its iterator over the list
    the global name held when the loop began: not a local, so the generator and ``lst`` were
    two co-variables, and a plan that shipped ``lst`` (changed by a later cell) and re-ran the
    generator's cell left it iterating the list that cell made, while its digest (its type
    only) verified. The collector's referents of a generator are its frame's: code, name,
    function, locals and stack; only the values are links.
    """
    if type(obj) is not types.GeneratorType:
        return []
    frame, inner = obj.gi_frame, obj.gi_yieldfrom
    held = []
    if frame is not None:
        local_vars = frame.f_locals  # (a dict the frame then holds too: not a link)
        held += local_vars.values()
        held += [o for o in gc.get_referents(obj)
                 if type(o) not in _FRAME_PARTS and o is not local_vars]
    if inner is not None:
        held.append(inner)
    return _not_namespaces(held)


#: a generator's referents that are its frame's machinery, not values it holds
_FRAME_PARTS = frozenset({types.CodeType, types.FunctionType, types.FrameType, str})


def _not_namespaces(objs: list[Any]) -> list[Any]:
    """`objs` without modules' namespaces (``iter(globals())`` holds the user namespace: every
    variable, not a link to each)."""
    return [o for o in objs if not module_namespace(o)]


def _without_holes(t: tuple) -> tuple:
    """`t`, or when one of its slots is empty (NULL), a tuple of the items it does hold.

    A C object may keep a tuple with empty slots: ``itertools.zip_longest`` empties the slot
    of each iterator it has exhausted (its ``ittuple``). The collector hands that tuple out
    as is, and reading the empty slot from Python crashed the process (``set(map(type, t))``
    in the walk, after ``next`` on a ``zip_longest('ab', 'xyz')`` had run out the shorter
    one). The slots are read as addresses (a tuple's items follow its fixed header)."""
    import ctypes

    n = len(t)
    if not n or tuple.__itemsize__ != ctypes.sizeof(ctypes.c_void_p):
        return t
    slots = (ctypes.c_void_p * n).from_address(id(t) + tuple.__basicsize__)
    if all(slots):
        return t
    return tuple(ctypes.cast(p, ctypes.py_object).value for p in slots if p)  # (held by `t`)


def c_referents(obj: Any) -> list[Any]:
    """``gc.get_referents(obj)`` for a C object, each tuple among them without empty slots
    (`_without_holes`): never a tuple that crashes the process when read."""
    return [_without_holes(o) if type(o) is tuple else o for o in gc.get_referents(obj)]


def iterator_holds(obj: Any, tp: type) -> list[Any]:
    """What a C iterator holds: its referents, and for numpy's iterators, which hide theirs
    from the collector (no tp_traverse), the arrays they iterate over: ``img.flat`` its
    ``base``, an ``nditer`` its operands, a ``broadcast`` its iterators' arrays. Without them
    ``flat = img.flat`` was no co-variable with ``img``: restored apart, ``flat`` walked over
    another ``img`` than the one the notebook held, and both verified."""
    held = c_referents(obj)
    if tp is np.flatiter:
        held.append(obj.base)
    elif tp is np.nditer:
        try:
            held.extend(obj.operands)
        except ValueError:  # closed (used as a context manager): holds nothing any more
            pass
    elif tp is np.broadcast:
        held.extend(it.base for it in obj.iters)
    return held


def hidden_referents(obj: Any, tp: type) -> list[Any]:
    """What a library's C object holds but hides from the collector (no tp_traverse), for the
    few whose layout is known: Pillow's ``px = img.load()`` (a ``PixelAccess``) holds the
    image's core (``img.im``) as the first field after its header. Without it ``px`` was no
    co-variable with ``img``: re-run apart, ``px`` wrote into another image than the
    notebook's ``img``, and both verified (``px`` by type)."""
    if (tp.__qualname__ == "PixelAccess" and tp.__module__ == "builtins"
            and "PIL._imaging" in sys.modules and tp.__basicsize__ >= object.__basicsize__ + 8):
        import ctypes

        ptr = ctypes.c_void_p.from_address(id(obj) + object.__basicsize__).value
        if ptr:
            core = ctypes.cast(ptr, ctypes.py_object).value  # (held by `obj`: alive)
            if type(core).__name__ == "ImagingCore":
                return [core]
    return []


def _buffer_exporter(arr: np.ndarray) -> bytearray | _array_mod.array | None:
    """The bytearray (or array.array) whose memory `arr` is (through its ndarray bases and a
    memoryview), if any."""
    b = _final_base(arr).base
    for _ in range(8):
        if type(b) is not memoryview:
            break
        b = b.obj
    return b if type(b) is bytearray or type(b) is _array_mod.array else None


_BYTESIO_BUFFER = type(io.BytesIO().getbuffer().obj)


def memoryview_exporter(mv: memoryview) -> Any:
    """The object a memoryview writes into (a ``BytesIO``'s for `getbuffer()`), or None for
    bytes and what has none."""
    exporter = mv.obj
    if type(exporter) is _BYTESIO_BUFFER:
        owners = [o for o in gc.get_referents(exporter) if type(o) is io.BytesIO]
        exporter = owners[0] if len(owners) == 1 else exporter
    return None if exporter is None or type(exporter) is bytes else exporter


def _exporter_ids(b: Any) -> list[int]:
    """Ids of the objects behind a memoryview base (`np.frombuffer(ba)` has a memoryview of
    `ba` as its base, not `ba`): without them the array and the bytearray it writes through
    were two co-variables, restored apart (one shipped, one recomputed) and no longer shared."""
    out = []
    for _ in range(8):
        if type(b) is not memoryview:
            break
        b = b.obj
        if b is None or type(b) is bytes:
            break
        out.append(id(b))
    return out


class _Budget(Exception):
    """Raised inside a walk when the node budget is exhausted."""


class _SetCycle(_Budget):
    """Raised when the key of a set's element leads back, through sets, to an element whose key
    is being computed; caught by the `_set` that started that element (`depth`). A `_Budget`
    so that every handler that lets the budget through lets it through too."""

    def __init__(self, depth: int) -> None:
        super().__init__(depth)
        self.depth = depth


class _SetOrder:
    """The keys that order the elements of the sets one walk meets (see `_Walker._set`).

    A key is the digest of a walk of the element on its own, which orders the sets inside it
    the same way. Without memory of those keys, a graph whose sets reach one another (an ORM's
    mappers, columns and tables: sets of objects that lead to the other sets) walked each
    element again for every path to it and again inside itself, until the recursion limit:
    a checkpoint of a notebook holding a SQLAlchemy session did not end. `keys` holds each
    element's key once known (with the element, so its id is not reused); `active` the depth of
    each element whose key is being computed. A key whose walk leads back to one of those has
    no value of its own (it depends on where the walk came from): the set that started that
    element orders all its elements by shallow keys instead (`_Walker.shallow`), which do not
    depend on any other key.
    """

    __slots__ = ("keys", "shallow_keys", "active", "cyclic")

    def __init__(self) -> None:
        self.keys: dict[int, tuple[Any, bytes]] = {}
        self.shallow_keys: dict[int, tuple[Any, bytes]] = {}
        self.active: dict[int, int] = {}
        # elements found on a cycle through sets (they lead back to themselves): a set holding
        # one orders its elements by shallow keys at once, without walking into the cycle again
        self.cyclic: dict[int, Any] = {}


#: autograd nodes `_graph_leaves` visits at most (a graph past this is linked by the leaves found)
_GRAPH_NODES = 100_000


def _graph_leaves(t: Any) -> list[Any]:
    """The leaf tensors (the model's parameters) a tensor computed with autograd was computed
    from: ``backward()`` through it accumulates into their ``.grad``. A walk reaching them links
    ``loss = model(X).mean()`` with ``model`` (one co-variable, restored together): a ``loss``
    re-made by its cell over a ``model`` that was shipped came back with a graph over the
    parameters of a model the restore had re-made and dropped, so ``loss.backward()`` left the
    notebook's ``model.weight.grad`` at None while both verified. In graph order, so the digest
    compares the same leaves in the same places."""
    out: list[Any] = []
    fn = getattr(t, "grad_fn", None)
    if fn is None:
        return out
    seen: set[int] = set()
    stack = [fn]
    while stack and len(seen) < _GRAPH_NODES:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        try:
            var = getattr(f, "variable", None)  # AccumulateGrad: the leaf it accumulates into
            if var is not None:
                out.append(var)
            nxt = f.next_functions
        except Exception:  # noqa: BLE001 - a node of an unusual kind: no leaves through it
            continue
        stack.extend(g for g, _ in reversed(nxt))
    return out


class _Synth(tuple):
    """A tuple created by the walker itself (e.g. ``(key, value)`` pairs): walked, but it has no
    identity of its own, so it is neither memoised nor recorded in the id set."""


class _Tok(tuple):
    """A token pushed on the walk stack to be emitted verbatim, in stack order."""


#: kinds of pure data: nothing reached through them can be code or lead to it
_PLAIN_KINDS = frozenset({K_ATOM, K_LIST, K_TUPLE, K_DICT, K_SET, K_FROZENSET, K_DEQUE, K_NDARRAY,
                          K_DATAFRAME, K_SERIES, K_INDEX, K_EXTARRAY, K_BUFFER, K_SLICE,
                          K_DICTVIEW, K_ARROW})

#: stdlib dict subclasses that are data as a plain dict is: no notebook code runs in their
#: methods, so a walk that meets nothing else (a `defaultdict`'s factory is walked: a lambda is
#: code) leaves the value `plain` and the read analysis does not search it for code again
_PLAIN_DICT_SUBCLASSES = frozenset({collections.Counter, collections.OrderedDict,
                                    collections.defaultdict})
#: trees of plain lists and dicts at least this long are walked in bulk (`_Walker._bulk`)
_BULK_MIN = 64
#: a failed `_Walker._bulk` this many levels down or more is not tried again below its root
_BULK_RETRY_DEPTH = 3
#: what hashing an atom of such a tree costs against the hash budget (`marshal` writes each)
_BULK_ATOM_BYTES = 128
_BULK_NESTED = frozenset({list, dict})
_BULK_TYPES = MARSHAL_ATOMS | _BULK_NESTED

#: the stdlib's dict subclasses written in C (walked as dicts: see `_Walker._c_dict`)
_C_DICTS = frozenset({collections.defaultdict, collections.OrderedDict})
#: builtin types commonly given to `defaultdict`
_BUILTIN_FACTORIES = frozenset({list, dict, set, int, float, str, tuple, bytes, frozenset,
                                bool, complex, bytearray, collections.Counter,
                                collections.OrderedDict, collections.deque})

_ENTER_NOID = object()
_EXIT_NOID = object()

_opaque_counter = itertools.count(1)
_chain = itertools.chain.from_iterable

#: Class-dict entries that are layout or caches, not state: ``__slotnames__`` is added by
#: copyreg the first time an instance is pickled (a checkpoint must not look like a mutation),
#: ``_abc_impl`` holds ABC subclass caches updated by every ``isinstance`` check.
_CLASS_SKIP = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__slotnames__",
        "_abc_impl",
        "__firstlineno__",  # 3.13+: line numbers differ between processes, like co_firstlineno
        "__static_attributes__",
        # pydantic's compiled schema, validator and serializer: made from the fields (which
        # are walked), and the schema names the class by its id(), so a model class re-created
        # by its cell never verified, nor did any instance of it. Its decorator infos too (the
        # validators and computed fields, which are walked as the class's own entries): each
        # names the class by id() in its `cls_ref`, so a model with a `field_validator` or a
        # `computed_field` re-created by its cell never verified either
        "__pydantic_core_schema__",
        "__pydantic_validator__",
        "__pydantic_serializer__",
        "__pydantic_decorators__",
    }
)


def _atomic_elements(elems: Any) -> bool:
    """True if every element is a marshal atom or a tuple of marshal atoms (hashed in C)."""
    types_ = set(map(type, elems))
    if types_ <= MARSHAL_ATOMS:
        return True
    if types_ <= _ATOMS_AND_TUPLE:
        tuples = elems if len(types_) == 1 else [t for t in elems if type(t) is tuple]
        return set(map(type, _chain(tuples))) <= MARSHAL_ATOMS  # one pass in C
    return False


_ATOMS_AND_TUPLE = MARSHAL_ATOMS | {tuple}


def _ids_digest(ids: list[int]) -> bytes:
    """Hash of a list of ids (what a bulk walk's token says of the objects' identities)."""
    return xxhash.xxh3_128_digest(np.array(ids, dtype=np.uintp).tobytes())


def _factory_token(factory: Any) -> tuple | None:
    """The token of a `defaultdict`'s `default_factory` that is no code of the notebook's
    (none, or a builtin type: `defaultdict(list)`); None: one to walk (a lambda is code)."""
    if factory is None or factory in _BUILTIN_FACTORIES:
        return ("factory", getattr(factory, "__name__", None))
    return None


def stale_keys(container: Any, keys: list[Any] | None = None) -> int:
    """How many of `keys` (those of the set or dict `container`; by default all of them, read
    through the base type's own iterator, as a subclass's cannot be trusted) a rebuild would
    not give back.

    A pickle rebuilds a set or a dict by hashing each key anew. A key whose ``__hash__`` reads
    state a cell changed after it went in (``s = {k}; k.v = 2``) sits where its old hash put
    it: a lookup of it misses (``k in s`` is False) until the container is rebuilt, when it
    is found again; and a key that has come to equal another would be absorbed by it. Keys
    hashed in C from marshal atoms never move; the others are looked up (checkpoint time only:
    a key's ``__hash__`` or ``__eq__`` that raises counts it).
    """
    is_dict = isinstance(container, dict)
    base = dict if is_dict else set if isinstance(container, set) else frozenset
    if keys is None:
        keys = list(base.__iter__(container))
    if _atomic_elements(keys):
        return 0
    contains = base.__contains__
    odd = [k for k in keys if type(k) not in MARSHAL_ATOMS]
    try:
        missing = sum(not contains(container, k) for k in odd)
        if is_dict and not missing:
            # a dict compares a key by identity before its stored hash: a stale key whose
            # new hash leads to its old slot is found. An equal copy of it is not
            missing = sum(twin is not None and twin == k and not contains(container, twin)
                          for k in odd if type(k).__hash__ is not object.__hash__
                          for twin in (_twin(k),))
        return missing + len(odd) - len(set(odd))
    except Exception:  # noqa: BLE001 - a hostile key: its container cannot be rebuilt as is
        return len(odd)


def _twin(k: Any) -> Any:
    """An equal copy of `k` that is another object, made without running its code (a tuple, a
    frozenset, an instance of a plain class with a ``__dict__``), else None."""
    tp = type(k)
    if tp is tuple:
        return tuple(list(k))
    if tp is frozenset:
        return frozenset(list(k))
    if _solid_base(tp) is not object or _dict_descriptor(tp) is None or any(
            "__slots__" in type.__dict__["__dict__"].__get__(c) for c in tp.__mro__[:-1]):
        return None
    twin = object.__new__(tp)
    object.__getattribute__(twin, "__dict__").update(object.__getattribute__(k, "__dict__"))
    return twin
_TAG_TUPLES = {"L": ("L",), "D": ("D",), "T": ("T",)}


def _noid(x: Any) -> _Synth:
    """Wrap `x` so that it is walked without recording identities (for objects the walker or a
    library builds afresh on each access, whose ids would otherwise leak into the id set)."""
    return _Synth((_ENTER_NOID, x, _EXIT_NOID))


def _fresh_token() -> bytes:
    """A fingerprint that never equals any other: opaque values are 'modified' when touched."""
    return b"opaque" + next(_opaque_counter).to_bytes(10, "little")


class _Walker:
    """One walk of an object graph (iterative: no recursion limit, bounded by `max_nodes`).

    Emits a token stream (marshal-able values, hashed in chunks) describing values *and*
    identity structure (back-references to already-visited objects by visit order). In
    in-process mode (`portable=False`) it also emits ``id()`` of identity-bearing objects,
    records them (the reachable-id set) and hashes arrays in memory order. In portable mode no
    id ever reaches the stream; numpy views are resolved after the walk.
    """

    __slots__ = (
        "ns",
        "portable",
        "work",
        "max_nodes",
        "nodes",
        "memo",
        "keep",
        "ids",
        "bulk_failed",
        "out",
        "hasher",
        "noid",
        "opaque",
        "opaque_types",
        "arrays",
        "array_cache",
        "truncated",
        "budget",
        "want",
        "partial",
        "code",
        "root_start",
        "crossed",
        "records",
        "class_links",
        "anchors",
        "library",
        "links",
        "storages",
        "wrapped",
        "exported",
        "arrow_seen",
        "spans",
        "foreign",
        "idmap",
        "setctx",
        "shallow",
        "stale",
        "values",
        "obj_arrays",
        "value_ids",
        "value_canon",
    )

    def __init__(
        self,
        ns: Any = None,
        *,
        portable: bool = False,
        max_nodes: int = 2_000_000,
        array_cache: dict[int, tuple[np.ndarray, bytes]] | None = None,
        budget: int | None = None,
    ) -> None:
        self.ns = ns
        self.portable = portable
        self.stale: frozenset[str] | None = None  # `stale_local_modules`, when first needed
        self.max_nodes = max_nodes
        self.nodes = 0
        self.work = 0  # atoms hashed in bulk (fast paths), on top of nodes: a deterministic cost
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps temporaries alive so their ids are not reused mid-walk
        self.ids: list[int] = []
        self.bulk_failed: set[int] = set()  # (see `_bulk_failed`)
        self.out: list[Any] = []
        self.hasher = xxhash.xxh3_128()
        self.noid = 0
        self.opaque = False
        self.opaque_types: list[str] = []
        self.arrays: list[np.ndarray] = []  # portable mode: arrays by slot number
        self.array_cache = array_cache
        self.truncated = False
        # bytes of buffers (and atom runs, _ATOM_BYTES an atom) this walk may still hash; None:
        # no limit. Content beyond it is left out of the stream and `partial` is set: the
        # fingerprint then proves nothing about that content (see Tracker.hash_budget)
        self.budget = budget
        self.want = 0  # bytes this root asked the budget for, granted or not (`_Print.nbytes`)
        self.partial = False
        # the walk met an object that may hold or lead to code (an instance, a function, a
        # class, a module, a reduce value...): not plain data (see Tracker.plain)
        self.code = False
        # several roots may share one walker (`next_root`): objects a previous root visited
        # (memo index < root_start) are not walked again; the stream names them by id and
        # `crossed` collects their memo indices, so the caller can link the two roots
        self.root_start = 0
        self.crossed: list[int] = []
        # a list of atoms and atom tuples (records: `("pay", who, 5.0)`) is hashed as one run;
        # False only to check digests of checkpoints written before (`digest_report(like=)`)
        self.records = True
        self.class_links: set[int] = set()  # notebook enum classes linked from this root
        # portable mode: id -> where the object lives outside the values (a global of one of
        # the notebook's modules, `module_globals`), emitted where the walk meets it, so a
        # restore that brings back a copy instead of the module's object does not verify
        self.anchors: dict[int, tuple[str, str]] | None = None
        # id -> name of the libraries' configuration objects (`libobjects`): named, not walked,
        # as ``os.environ`` is. Their content is process state (`procstate` sees a cell change
        # it, and a restore re-runs that cell), not a variable's: ``rc['lines.linewidth'] = 3``
        # mutates no variable, and the digest checks that `rc` is the restoring process's
        # object again, not a detached copy of it
        self.library: dict[int, str] | None = libobjects.by_id() or None
        # back-references and anchors met: the identity relations the stream records (a load
        # that comes back with fewer has lost some, see `DigestReport.links`)
        self.links = 0
        # portable mode: storage address -> (bytes, uint8 array over the storage) of the tensors
        # met, so that the arrays of tensors (and numpy arrays) sharing one are one owner
        self.storages: dict[int, tuple[int, np.ndarray]] = {}
        # portable mode: memory that is another object's with no Python path to that object
        # (a tensor's storage slot, an arrow buffer) by (kind, number, lo, hi), and the spans
        # of the bytearrays and array.arrays met: `resolve_arrays` records which of the arrays
        # and buffers each lies in, so a load that brings it back over a copy does not match
        self.wrapped: list[tuple[str, int, int, int]] = []
        self.exported: list[tuple[int, int]] = []
        self.arrow_seen: dict[tuple[int, int], bytes] = {}  # arrow buffer (address, size) -> hash
        # [low, high) addresses of the memory this root's buffers own or wrap (numpy arrays
        # owning or exporting memory, tensor storages, arrow buffers, bytearrays): names whose
        # spans overlap share bytes and are one co-variable (`Tracker.update`), wherever in an
        # allocation the sharing starts (``torch.from_numpy(a[2:])``, ``pa.array(x[2:])``)
        self.spans: list[tuple[int, int]] = []
        # torch or pyarrow loaded: memory can be shared with what is not a numpy array or a
        # buffer object (id links cover those among themselves: `np.frombuffer(ba)`, views),
        # so numpy arrays and bytearrays record their spans too (an address costs ~1 us)
        self.foreign = _foreign_loaded()
        # `id_tokens`: ints that are the id of an object of the session, each replaced by that
        # object's place in a walk of the names it was reached from (`digest_report(ids=)`)
        self.idmap: dict[int, int] | None = None
        # the canonical order of set elements (`_set`), shared by a walker and the walkers it
        # starts for the elements of its sets; `shallow`: this walk computes the key of an
        # element of a set whose elements lead back to one another, and only counts the
        # elements of the sets it meets
        self.setctx: _SetOrder | None = None
        self.shallow = False
        # portable mode: (type, value) -> memo index of the first instance of a value class
        # (`_DIGEST_VALUE_CLASSES`) met; an equal one is referred back to it
        self.values: dict[int, int] = {}
        self.obj_arrays: list[tuple[np.ndarray, int]] = []  # portable: object arrays, places
        self.value_ids: dict[int, int] = {}  # id -> `_value_id` of the value-class instances met
        self.value_canon: dict[Any, int] = {}  # (type, content) -> its `_value_id`

    def next_root(self) -> None:
        """Start the stream of another root; what earlier roots visited stays memoised.

        Names that reach one object graph (``bank``, ``alice = bank.accounts[0]`` with a
        back-link to the bank) then cost one walk of it, not one each. The new root's stream
        and counters start afresh; a reference into an earlier root's objects becomes
        ``("@x", id)`` (ids are stable while the objects live) and a link (`crossed`).
        """
        self.flush()
        self.root_start = len(self.memo)
        self.crossed = []
        self.nodes = 0
        self.work = 0
        self.ids = []
        self.spans = []
        self.out = []
        self.hasher = xxhash.xxh3_128()
        self.opaque = False
        self.opaque_types = []
        self.truncated = False
        self.want = 0
        self.partial = False
        self.code = False
        self.class_links = set()

    # -- stream ------------------------------------------------------------------------------
    def flush(self) -> None:
        if self.out:
            self.hasher.update(marshal.dumps(self.out, 2))
            self.out = []

    def digest(self) -> bytes:
        self.flush()
        return self.hasher.digest()

    # -- identity ----------------------------------------------------------------------------
    def _identity(self, obj: Any, tag: str) -> bool:
        """Memoise `obj`; emit a back-reference and return False if already visited."""
        i = id(obj)
        idx = self.memo.get(i)
        if idx is not None:
            self.links += 1
            if idx < self.root_start:
                self.crossed.append(idx)
                self.out.append(("@x", i))
            else:
                self.out.append(("@", idx - self.root_start))
            return False
        self.memo[i] = len(self.memo)
        self.keep.append(obj)
        if self.anchors and i in self.anchors:
            self.links += 1
            self.out.append(("anchor", *self.anchors[i]))
        if self.noid:
            self.out.append((tag,))
        else:
            self.ids.append(i)
            self.out.append((tag,) if self.portable else (tag, i))
        return True

    def _memfile(self, obj: Any, tp: type) -> tuple | None:
        """An in-memory file's content and position, for the in-process walk (None: another
        object, or closed). Walked as opaque, a buffer a cell only read (``buf.getvalue()``)
        counted as changed by every cell that touched it. Content beyond the hash budget is
        left out (the print is partial)."""
        state = _memfile_state(obj, tp)
        if state is None:
            return None
        value, pos = state
        if not self._spend(len(value)):
            return ("memfile?", pos)
        return ("memfile", _atom_token(value), pos)

    def _link_ids(self, roots: Any) -> None:
        """Record the ids of what `roots` hold (a few levels of containers, cells and bound
        methods; never into functions, classes or modules, whose globals are the namespace),
        for co-variable links only: not walked, so their values (a lock) are not part of the
        fingerprint."""
        if self.noid or self.portable:
            return
        seen: set[int] = set()
        frontier = list(roots)
        budget = 256
        for _ in range(4):
            nxt: list[Any] = []
            for o in frontier:
                tp = type(o)
                if tp in MARSHAL_ATOMS or id(o) in seen or _shared_by_code(o, tp):
                    continue
                seen.add(id(o))
                if tp is not tuple and tp is not frozenset:
                    # (immutable: the same `()` is in every object that holds an empty one)
                    self.ids.append(id(o))
                    self.keep.append(o)
                budget -= 1
                if budget <= 0:
                    return
                if tp is tuple or tp is list or tp is set or tp is frozenset:
                    nxt.extend(o)
                elif tp is dict and not module_namespace(o):
                    nxt.extend(o.values())
                elif tp is types.CellType:
                    try:
                        nxt.append(o.cell_contents)
                    except ValueError:  # empty cell
                        pass
                elif (tp is types.BuiltinMethodType or tp is types.MethodType
                      or tp is types.MethodWrapperType):
                    nxt.append(o.__self__)
                elif _classify(tp) == K_ITERATOR:
                    # what it iterates over: `tee(data)` holds a buffer object (reduced) that
                    # holds an iterator over `data`; stopped at that iterator, `lead, lag` and
                    # `data` were apart, and the restored pair walked over a copy of `data`
                    nxt.extend(_not_namespaces(iterator_holds(o, tp)))
                elif tp is memoryview:
                    # what it exports: a ctypes array made by `from_buffer(ba)` holds a view
                    # of `ba` and writes into it (`c[0] = 7` changed `ba`, not seen)
                    exporter = memoryview_exporter(o)
                    if exporter is not None:
                        nxt.append(exporter)
            frontier = nxt

    def _span(self, lo: int, hi: int) -> None:
        """Record memory `[lo, hi)` as reached by this root (see `spans`)."""
        if hi > lo and not self.noid and not self.portable:
            self.spans.append((lo, hi))

    def _mark_opaque(self, obj: Any) -> None:
        self.opaque = True
        tn = _type_name(type(obj))
        self.opaque_types.append(tn)
        self.out.append(("opaque", tn))

    # -- main loop ---------------------------------------------------------------------------
    def walk(self, root: Any) -> None:
        """Walk `root`. Lists, dicts and tuples (most nodes of a typical graph) are handled
        inline: a function call per node would double the cost."""
        stack: list[Any] = [root]
        pop = stack.pop
        push = stack.append
        extend = stack.extend
        memo = self.memo
        keep = self.keep
        ids = self.ids
        portable = self.portable
        max_nodes = self.max_nodes
        atoms = MARSHAL_ATOMS
        idmap = self.idmap
        # (mapping ids: every int goes through the loop below, none is hashed in a run)
        fast = atoms if idmap is None else frozenset()
        bulk = not portable and idmap is None
        out = self.out
        append = out.append
        base_noid = self.noid
        nodes = self.nodes
        root_start = self.root_start
        anchors = self.anchors
        sys_path = sys.path
        try:
            while stack:
                obj = pop()
                tp = type(obj)
                if tp in atoms:
                    if idmap is not None and tp is int and obj in idmap:
                        append(("idref", idmap[obj]))
                    elif (tp is str or tp is bytes) and len(obj) > _BIG_ATOM:
                        append(_atom_token(obj))
                    else:
                        append(obj)
                    continue
                nodes += 1
                if nodes > max_nodes:
                    raise _Budget
                if len(out) > 4096:
                    self.flush()
                    out = self.out
                    append = out.append
                if tp is list or tp is dict or tp is tuple:
                    if (bulk and tp is not tuple and not self.noid and len(obj) >= _BULK_MIN
                            and id(obj) not in memo):
                        self.nodes = nodes
                        if self._try_bulk(obj, tp, push):
                            nodes = self.nodes
                            if nodes > max_nodes:
                                raise _Budget
                            out = self.out
                            append = out.append
                            continue
                    if obj is _BUILTINS_DICT or obj is _SYS_MODULES or obj is sys_path:
                        # (an `exec` namespace's __builtins__, `m = sys.modules`, `p =
                        # sys.path`: the process's, which IPython, ipykernel and every import
                        # rewrite; a restore gives back the restoring process's own, whose
                        # content `procstate` brings back by re-running the cells that set it)
                        append(("ref", "builtins.__dict__" if obj is _BUILTINS_DICT
                                else "sys.modules" if obj is _SYS_MODULES else "sys.path"))
                        self.code = True  # (modules, functions: not plain data)
                        continue
                    if tp is tuple:
                        if set(map(type, obj)) <= fast:
                            append(("Ta", self._atoms(obj)))
                            continue
                        tag = "T"
                    else:
                        tag = "L" if tp is list else "D"
                    i = id(obj)
                    idx = memo.get(i)
                    if idx is not None:
                        self.links += 1
                        if idx < root_start:
                            self.crossed.append(idx)
                            append(("@x", i))
                        else:
                            append(("@", idx - root_start))
                        continue
                    memo[i] = len(memo)
                    keep.append(obj)
                    if anchors and i in anchors:
                        self.links += 1
                        append(("anchor", *anchors[i]))
                    # tags are tuples, atoms never are: the stream stays uniquely decodable
                    if self.noid:
                        append(_TAG_TUPLES[tag])
                    else:
                        ids.append(i)
                        append(_TAG_TUPLES[tag] if portable else (tag, i))
                    n = len(obj)
                    if tp is dict:
                        if set(map(type, obj)) <= fast and set(map(type, obj.values())) <= fast:
                            append(
                                ("da", self._atoms(tuple(obj)), self._atoms(tuple(obj.values())))
                            )
                            continue
                        append(n)
                        if portable and idmap is None:
                            self._note_stale(obj)
                        nodes += 2 * n
                        extend(reversed(list(_chain(obj.items()))))
                    elif tp is tuple or not set(map(type, obj)) <= fast:
                        if tp is list and self.records and _atomic_elements(obj):
                            # records as tuples (`history.append(("pay", who, 5.0))`): one C
                            # hash of the run, not a stack round per tuple
                            nodes += n
                            append(("at", self._atoms(obj)))
                            continue
                        append(n)
                        nodes += n
                        extend(reversed(obj))
                    else:
                        append(("a", self._atoms(obj)))
                    continue
                if obj is _ENTER_NOID:
                    self.noid += 1
                    continue
                if obj is _EXIT_NOID:
                    self.noid -= 1
                    continue
                if tp is _Synth:
                    append(("S", len(obj)))
                    nodes += len(obj)
                    extend(reversed(obj))
                    continue
                if tp is _Tok:
                    append(tuple(obj))
                    continue
                self.nodes = nodes
                kind = _classify(tp)
                if kind not in _PLAIN_KINDS and tp not in _PLAIN_DICT_SUBCLASSES:
                    self.code = True
                try:
                    self._visit(obj, tp, kind, push, extend)
                except _Budget:
                    raise
                except RecursionError:
                    self._mark_opaque(obj)
                except Exception as exc:  # a hostile or broken object: treat it as opaque
                    log.debug("changes: cannot inspect %s: %r", _type_name(tp), exc)
                    self._mark_opaque(obj)
                nodes = self.nodes
                out = self.out
                append = out.append
        finally:
            self.noid = base_noid
            self.nodes = nodes

    def _try_bulk(self, obj: list | dict, tp: type, push: Any) -> bool:
        """Walk a big list or dict in bulk if it is a tree of plain data (`_bulk`) or a list
        of instances of one plain class (`_bulk_instances`); False: walk it item by item."""
        if id(obj) in self.bulk_failed:
            return False
        values = obj if tp is list else dict.values(obj)
        if type(next(iter(values))) in MARSHAL_ATOMS:
            # (most likely atoms only, which the walk hashes in one run: not a pass more
            # over half a million numbers to find that out)
            return False
        kinds = set(map(type, values))
        if not _BULK_NESTED.isdisjoint(kinds):
            return self._bulk(obj)
        if tp is list and len(kinds) == 1:
            return self._bulk_instances(obj, kinds.pop(), push)
        return False

    def _bulk(self, root: list | dict) -> bool:
        """Change detection's walk of a tree of plain lists and dicts whose leaves are atoms
        (records from JSON or CSV, `{key: [values]}` indexes), level by level in C: the
        containers by `gc.get_referents`, the content by one `marshal` dump. A stack round per
        item cost 1.2 s for 200,000 four-field records, and gave up at the node limit
        (opaque: every touch a mutation, the read analysis searching it each time). False,
        with nothing emitted or memoised, for anything else: another type, an object met
        twice (shared, a cycle) or already walked, the process's own `sys.path`."""
        memo = self.memo
        level: list[Any] = [root]
        found: list[Any] = []
        seen: set[int] = {id(_BUILTINS_DICT), id(_SYS_MODULES), id(sys.path)}
        failed = self.bulk_failed
        atoms = depth = 0
        while True:
            # each level's containers met nowhere before: shared objects and cycles (met
            # again, at the level that reaches them) are left to the walk that records links
            ids = set(map(id, level))
            if (len(ids) != len(level) or not seen.isdisjoint(ids) or not failed.isdisjoint(ids)
                    or not memo.keys().isdisjoint(ids)):
                return self._bulk_failed(root, seen, depth)
            seen |= ids
            found += level
            refs = gc.get_referents(*level)
            types_ = list(map(type, refs))
            kinds = set(types_)
            if not kinds <= _BULK_TYPES:
                return self._bulk_failed(root, seen, depth)
            if kinds.isdisjoint(_BULK_NESTED):
                atoms += len(refs)
                break
            level = list(itertools.compress(refs, map(_BULK_NESTED.__contains__, types_)))
            atoms += len(refs) - len(level)
            depth += 1
            if self.nodes + len(found) + atoms > self.max_nodes:
                raise _Budget  # (where the walk item by item would have given up too)
        try:
            dumped = marshal.dumps(root, 2) if self._spend(_BULK_ATOM_BYTES * atoms) else None
        except ValueError:  # nested too deep for marshal
            return self._bulk_failed(root, seen, _BULK_RETRY_DEPTH + 1)
        content: Any = "?" if dumped is None else xxhash.xxh3_128_digest(dumped)
        order = list(map(id, found))
        self._memoise_bulk(found, order, ("bulk", len(found), atoms, content, _ids_digest(order)),
                           atoms)
        return True

    def _bulk_instances(self, items: list, tp: type, push: Any) -> bool:
        """Change detection's walk of a list of instances of one plain class whose attributes
        are atoms (`pts = [Point(x, y, label) ...]`, dataclass records): the instances'
        `__dict__`s read and dumped in C, as `_instance` would have walked them one by one
        (1.2 s of hooks for 100,000 of them). The class is walked after, as for an instance.
        False, with nothing emitted or memoised, for anything else."""
        if _classify(tp) != K_INSTANCE or _solid_base(tp) is not object:
            return False
        if tp is _LRU_WRAPPER or issubclass(tp, weakref.finalize):
            return False
        dict_desc, slots = _layout(tp)
        if dict_desc is None or slots:
            return False
        try:
            dicts = list(map(dict_desc.__get__, items, itertools.repeat(tp)))
        except Exception:  # noqa: BLE001 - the item-by-item walk marks it opaque
            return False
        if set(map(type, dicts)) != {dict}:
            return False
        values = list(_chain(map(dict.values, dicts)))
        if not set(map(type, values)) <= MARSHAL_ATOMS:
            return False
        if not set(map(type, _chain(map(dict.keys, dicts)))) <= MARSHAL_ATOMS:
            return False
        found = [items, *items, *dicts]
        ids = list(map(id, found))
        if len(set(ids)) != len(ids) or not self.memo.keys().isdisjoint(ids):
            return False  # an instance twice, or one another name walked: links to record
        content: Any = "?"
        if self._spend(_BULK_ATOM_BYTES * (len(values) + len(dicts))):
            content = xxhash.xxh3_128_digest(marshal.dumps(dicts, 2))
        self._memoise_bulk(found, ids, ("bulkI", _type_name(tp), len(items), content,
                                        _ids_digest(ids)), len(values))
        if _is_session_class(tp, self.ns):
            push(tp)  # an instance and its notebook class are one co-variable
        self.code = True  # (instances: not plain data, as `_instance` finds them)
        return True

    def _atom_items(self, keys: Any, values: Any) -> tuple | None:
        """The token of a dict's items when every key and value is a marshal atom (two runs,
        hashed in C, as the walk gives a plain dict of atoms); None otherwise."""
        if self.idmap is None and (set(map(type, keys)) <= MARSHAL_ATOMS
                                   and set(map(type, values)) <= MARSHAL_ATOMS):
            return ("da", self._atoms(tuple(keys)), self._atoms(tuple(values)))
        return None

    def _memoise_bulk(self, found: list[Any], ids: list[int], token: tuple, atoms: int) -> None:
        """Record what a bulk walk found as the walk item by item would have: memoised in
        visit order (a later name reaching one of them links to it), kept alive, ids noted;
        and emit its token."""
        start = len(self.memo)
        self.memo.update(zip(ids, range(start, start + len(ids)), strict=True))
        self.keep += found
        self.ids += ids
        self.out.append(token)
        self.nodes += len(found)
        self.work += atoms

    def _bulk_failed(self, root: Any, seen: set[int], depth: int) -> bool:
        """False, remembering the containers a failed `_bulk` met (`bulk_failed`), which the
        walk that follows it down does not try again: for a failure deep in a tree, each
        subtree tried anew on the way down was quadratic. One found near the top leaves the
        subtrees to be tried (`{"rows": records, "model": clf}`: the records in bulk)."""
        if depth > _BULK_RETRY_DEPTH:
            self.bulk_failed |= seen
        else:
            self.bulk_failed.add(id(root))
        return False

    def _note_stale(self, container: Any, keys: list[Any] | None = None) -> None:
        """Emit how many keys of the dict or set `container` a pickle's rebuild would not give
        back (`stale_keys`), when there are any: a copy of it then digests as differing."""
        stale = stale_keys(container, keys)
        if stale:
            self.out.append(("stale", stale))

    def _stale_subclass(self, obj: Any) -> bool:
        """Emit the stale keys of a dict or set subclass (defaultdict, Counter, the notebook's:
        see `_note_stale`); False, so the caller walks it as it would have."""
        if self.idmap is None and isinstance(obj, (dict, set, frozenset)):
            self._note_stale(obj)
        return False

    def _enum_member(self, member: enum.Enum, extend: Any) -> None:
        """A member of a session enum with attributes of its own (``Planet.EARTH.mass`` its
        ``__init__`` set, ``Status.OPEN.note = 'x'``) or a value that is a container: those
        are walked after its name. As a name alone, a member whose attributes a restore lost
        or a cell changed (``Planet.EARTH.moons.append(m)``, ``Cfg.A.value.append(3)``)
        verified, and the change of its class went unseen."""
        value = member._value_
        extra = enum_member_state(member)
        if extra is None and (value is None or type(value) in _ENUM_ATOM_VALUES):
            return
        if not _is_session_class(type(member), self.ns) or not self._identity(member, "EM"):
            return
        children: list[Any] = [_Tok(("enum-value",)), value]
        for k, v in (extra or {}).items():
            children.append(k)
            children.append(v)
        self.out.append(len(children))
        extend(reversed(children))

    def _visit(self, obj: Any, tp: type, kind: int, push: Any, extend: Any) -> None:
        out = self.out
        if kind == K_ATOM:
            out.append(_atom_token(obj))
            if isinstance(obj, enum.Enum):
                self._enum_member(obj, extend)
            if isinstance(obj, enum.Enum) and not (self.noid or self.portable):
                cls = type(obj)
                if id(cls) not in self.class_links and _is_session_class(cls, self.ns):
                    # a member of the notebook's enum is one co-variable with its class (a
                    # link, not part of the print): planned apart, the class was re-created
                    # by its cell while `fav` came back a member of a copy of it, and
                    # `fav is Color.BLUE` no longer held
                    self.class_links.add(id(cls))
                    self.ids.append(id(cls))
                    self.keep.append(cls)
            elif ((tp is _dt.datetime or tp is _dt.time) and obj.tzinfo is not None
                  and type(obj.tzinfo) is not _dt.timezone):
                # the zone object of an aware datetime is one the notebook may hold too
                # (`paris = tz.gettz(...)`), and which object it is matters: two datetimes with
                # the same tzinfo object subtract by wall time, with different ones through UTC.
                # Walked with its identity: one co-variable with the names holding the zone, and
                # a restore that gave it a copy of the zone no longer verifies
                extend((obj.tzinfo,))
            elif isinstance(obj, np.void) and isinstance(obj.base, np.ndarray):
                # `row = arr[0]` of a structured array is a view of it (`row['x'] = 5` writes
                # into `arr`): one co-variable, so one pickle rebuilds it over that array
                self._link_ids((obj.base,))
        elif kind in (K_SET, K_FROZENSET):
            if kind == K_FROZENSET and self.idmap is None and _atomic_elements(obj):
                out.append(("FSa", self._atom_set(obj)))
                return
            if not self._identity(obj, "SET" if kind == K_SET else "FS"):
                return
            self._set(obj, extend)
        elif kind == K_NDARRAY:
            self._ndarray(obj, tp, push)
        elif kind == K_FUNCTION:
            self._function(obj, extend)
        elif kind == K_CLASS:
            self._class(obj, extend)
        elif kind == K_BYREF:
            state = module_state(obj) if tp is types.ModuleType else None
            if isinstance(obj, logging.Logger):
                # the process's logger of that name, but configured by cells, and shipped with
                # its configuration (serialize._reduce_logger): `log.setLevel(...)` changes it,
                # and the handlers it holds are part of it (`fh` and `log` one co-variable)
                if self._identity(obj, "logger"):
                    out.append(("logger", str(obj.name), obj.level, bool(obj.propagate),
                                bool(obj.disabled)))
                    push(_Synth((_Synth(list(obj.handlers)), _Synth(list(obj.filters)))))
                    self._link_ids((obj.handlers, obj.filters))  # (`hs = log.handlers`)
            elif state is not None:
                if self._identity(obj, "smod"):
                    self.code = True
                    out.append(("smod", str(obj.__name__)))
                    push(_Synth(_Synth(kv) for kv in sorted(state.items(), key=lambda kv: kv[0])))
            else:
                out.append(("ref", _ref_name(obj)))
        elif self.library and id(obj) in self.library:
            out.append(("ref", "library:" + self.library[id(obj)]))
        elif self.portable and kind in (K_INSTANCE, K_REDUCE) and (
                self._stale_subclass(obj) or _digest_opaque(tp)):
            if self._identity(obj, "O"):
                self._mark_opaque(obj)
        elif kind == K_INSTANCE:
            self._instance(obj, tp, push, extend)
        elif kind == K_OPAQUE or (kind == K_WEAKREF and self.portable):
            # (a weak reference is live or dead by the collector's timing, not by the
            # session's state: the portable digest checks its type only)
            if self._identity(obj, "O"):
                state = None
                if kind == K_OPAQUE:
                    state = _c_content(obj, tp) if self.portable else self._memfile(obj, tp)
                if state is not None:
                    out.append(state)
                    return
                self._mark_opaque(obj)
                if not self.portable and kind == K_OPAQUE:
                    # a suspended generator's locals (`(x for x in lst)` holds an iterator
                    # over `lst`): for the links only, as for C iterators
                    extend(reversed(_Synth(_suspended_locals(obj))))
                    if isinstance(obj, io.IOBase):
                        # a text layer and the buffer it writes into (`io.TextIOWrapper(raw)`)
                        # are one co-variable: apart, one shipped and the other re-run, the
                        # wrapper wrote into a buffer of its own and `raw` never saw its text
                        self._link_ids(gc.get_referents(obj))
        elif kind == K_WEAKREF:
            # followed in process: `WeakValueDictionary({k: node})` and `nodes` are one
            # co-variable, or a restore that ships `nodes` and re-runs the cell that made both
            # leaves the dictionary pointing at nodes nothing holds
            if not self._identity(obj, "wref"):
                return
            target = obj()
            if target is None:
                out.append(("deadref",))
            elif type(target) is types.MethodType:
                # a WeakMethod makes a new bound method at every call: walk what it binds,
                # not that object (its id differed in every walk: every touch a mutation)
                out.append(("wmethod",))
                extend((target.__func__, target.__self__))
            else:
                push(target)
        elif kind == K_DATAFRAME:
            self._dataframe(obj, tp, push, extend)
        elif kind == K_SERIES:
            self._series(obj, tp, push, extend)
        elif kind == K_INDEX:
            self._index(obj, tp, push, extend)
        elif kind == K_EXTARRAY:
            self._extarray(obj, tp, push, extend)
        elif kind == K_CODE:
            self._code(obj, extend)
        elif kind == K_CELL:
            if not self._identity(obj, "cell"):
                return
            try:
                push(obj.cell_contents)
            except ValueError:
                out.append(("empty-cell",))
        elif kind == K_METHOD:
            if not self._identity(obj, "M"):
                return
            extend((obj.__self__, obj.__func__))
        elif kind == K_BUILTIN_METHOD:
            self_ = obj.__self__
            if self_ is None or type(self_) is types.ModuleType:
                out.append(("ref", _ref_name(obj)))
            elif type(self_) is dict and module_namespace(self_):
                # `get = globals().get`: bound to the namespace (pickled as the restoring
                # kernel's), not a link to every variable in it
                out.append(("bm-namespace", str(self_.get("__name__")), str(obj.__name__)))
            else:
                out.append(("bm", str(obj.__name__)))
                push(self_)
        elif kind == K_PARTIAL:
            if not self._identity(obj, "partial"):
                return
            d = _dict_descriptor(tp)
            state = d.__get__(obj) if d is not None else None
            # (no instance dict yet: None, not a `{}` made here, whose id would differ in
            # every walk and make every touch of an unchanged partial a mutation)
            extend(reversed(_Synth((obj.func, _Synth(obj.args), obj.keywords, state))))
        elif kind == K_DESCRIPTOR_WRAPPER:
            out.append(("descr", tp.__name__))
            if tp is property:
                extend(reversed(_Synth((obj.fget, obj.fset, obj.fdel))))
            elif tp is functools.cached_property:  # not its lock (3.11): that is not state
                extend(reversed(_Synth((obj.func, obj.attrname))))
            else:
                push(obj.__func__)
        elif kind in (K_MAPPINGPROXY, K_DICTVIEW):
            # the mapping it wraps, itself: `ro = MappingProxyType(d)` or `kv = d.keys()` and
            # `d` are one co-variable (a cell that mutates `d` changes them). Not a module's
            # namespace (`globals().keys()`): that is every variable, or a library's globals
            if not self._identity(obj, "dictview"):
                return
            out.append(("dictview", tp.__name__))
            mapping = gc.get_referents(obj)[0]
            if module_namespace(mapping):
                self._mark_opaque(obj)
            else:
                push(mapping)
        elif kind == K_ITERATOR:
            # its position is hidden (opaque), what it iterates over is not: `it = iter(lst)`
            # and `lst` are one co-variable (`lst.append(4)` shows in `it`), shipped in one
            # pickle, which rebuilds the iterator over that same list. Only for the links: its
            # referents include scratch (the result tuple a dict or zip iterator reuses), not
            # part of a value the portable digest could compare
            if self._identity(obj, "O"):
                self._mark_opaque(obj)
                if not self.portable:
                    extend(reversed(_Synth(_not_namespaces(iterator_holds(obj, tp)))))
        elif kind == K_SLICE:
            push(_Synth((obj.start, obj.stop, obj.step)))
            out.append(("slice",))
        elif kind == K_DEQUE:
            if not self._identity(obj, "deque"):
                return
            out.append(obj.maxlen)
            self._seq(list(obj), push, extend)
        elif kind == K_BUFFER:
            self._buffer(obj, tp, push)
        elif kind == K_TORCH:
            self._torch(obj, tp, push)
        elif kind == K_ARROW:
            self._arrow(obj, tp)
        elif kind == K_REDUCE:
            self._reduce(obj, tp, push, extend)
        else:  # pragma: no cover - every kind is handled above
            self._mark_opaque(obj)

    # -- containers --------------------------------------------------------------------------
    def _atoms(self, seq: Any) -> Any:
        """Token for a sequence made only of marshal atoms: verbatim if small, else a C hash."""
        self.work += len(seq)
        if len(seq) < _SMALL_SEQ:
            return tuple(seq)
        if not self._spend(_ATOM_BYTES * len(seq)):
            return ("?", len(seq))
        return (len(seq), xxhash.xxh3_128_digest(marshal.dumps(seq, 2)))

    def _spend(self, nbytes: int) -> bool:
        """Take `nbytes` of hashing from the budget; False (and `partial`) if it is spent."""
        self.want += nbytes
        budget = self.budget
        if budget is None:
            return True
        if nbytes > budget:
            self.partial = True
            return False
        self.budget = budget - nbytes
        return True

    def _seq(self, seq: Any, push: Any, extend: Any) -> None:
        n = len(seq)
        if self.idmap is None and set(map(type, seq)) <= MARSHAL_ATOMS:
            self.out.append(("a", self._atoms(seq if type(seq) in (list, tuple) else list(seq))))
            return
        self.out.append(n)
        extend(reversed(seq))

    def _atom_set(self, s: Any) -> Any:
        """Order-independent token of a set of marshal atoms, or of tuples of them (sets iterate
        in salted-hash order for strings: the digest must not depend on iteration order)."""
        types_ = set(map(type, s))
        if len(types_) == 1 and next(iter(types_)) in (int, str, bytes):
            return self._atoms(sorted(s))
        keys = sorted(map(marshal.dumps, s, itertools.repeat(2)))
        return self._atoms(keys)

    def _set(self, s: Any, extend: Any) -> None:
        elems = list(set.__iter__(s)) if type(s) is set else list(frozenset.__iter__(s))
        idmap = self.idmap
        if idmap is not None:  # (a set of ids: of the places of their objects)
            elems = [("idref", idmap[e]) if type(e) is int and e in idmap else e for e in elems]
        if _atomic_elements(elems):
            self.out.append(("a", self._atom_set(elems)))
            return
        # canonical order: by a standalone digest of each element, then walk them in that order
        # so that back-references to objects shared with the rest of the graph still work
        if self.shallow:
            self.out.append(("set-of", len(elems)))
            return
        ctx = self.setctx
        if ctx is None:
            ctx = self.setctx = _SetOrder()
        try:
            keyed = self._set_keys(elems, ctx)
        except _SetCycle as cycle:
            if cycle.depth != len(ctx.active):
                raise
            keyed = self._set_keys(elems, ctx, shallow=True)
        keyed.sort()
        self.out.append(len(elems))
        if self.portable and idmap is None:
            self._note_stale(s, elems)
        extend(reversed([elems[i] for _, i in keyed]))

    def _set_keys(self, elems: list[Any], ctx: _SetOrder,
                  shallow: bool = False) -> list[tuple[bytes, int]]:
        """(key, position) of each element: the digest of a walk of it on its own (`_SetOrder`);
        `shallow`: a walk that does not go into the sets it meets."""
        keys = ctx.shallow_keys if shallow else ctx.keys
        active, cyclic = ctx.active, ctx.cyclic
        depth = len(active)
        keyed = []
        for e in elems:
            i = id(e)
            known = keys.get(i)
            if known is not None:
                keyed.append((known[1], len(keyed)))
                continue
            if not shallow:
                if i in active:
                    raise _SetCycle(active[i])
                if i in cyclic:
                    raise _SetCycle(depth)
            active[i] = depth
            sub = _Walker(self.ns, portable=self.portable, max_nodes=self.max_nodes - self.nodes)
            sub.records = self.records
            sub.idmap = self.idmap
            sub.noid = 1
            sub.setctx = ctx
            sub.shallow = shallow
            try:
                sub.walk(e)
            except _SetCycle:
                cyclic[i] = e  # (on the way back from a cycle: e is on it)
                raise
            finally:
                del active[i]
            self.nodes += sub.nodes
            key = sub.digest()
            keys[i] = (e, key)
            keyed.append((key, len(keyed)))
        return keyed

    # -- instances ---------------------------------------------------------------------------
    def _instance(self, obj: Any, tp: type, push: Any, extend: Any) -> None:
        if obj is getattr(random, "_inst", None):
            self.out.append(("ref", "random._inst"))  # (see `_global_generator`)
            return
        value_id: int | None = None
        if self.portable and not self.noid and id(obj) not in self.memo and _digest_value_class(tp):
            try:
                value_id = self._value_id(obj, tp)
            except Exception:  # noqa: BLE001 - (or too deep): by identity, as others are
                value_id = None
            idx = self.values.get(value_id) if value_id is not None else None
            if idx is not None:
                self.links += 1
                self.out.append(("@", idx - self.root_start))
                return
        if not self._identity(obj, "I"):
            return
        if value_id is not None:
            self.values[value_id] = self.memo[id(obj)]
        out = self.out
        out.append(("type", _type_name(tp)))
        if _is_session_class(tp, self.ns):
            push(tp)  # an instance and its notebook class are one co-variable
        if tp is _LRU_WRAPPER:
            out.append(_lru_state(obj, self.ns))
        dict_desc, slots = _layout(tp)
        solid = _solid_base(tp)
        children: list[Any] = []
        d: Any = None
        # builtin base content, read through the base type's own C methods
        if solid is object:
            pass
        elif issubclass(tp, dict):
            children.append(_Tok(("dictbase",)))
            if issubclass(tp, collections.OrderedDict):  # its own order, not the dict's
                pairs = list(collections.OrderedDict.items(obj))
                children.append(_Synth(_Synth(kv) for kv in pairs))
            else:
                # a Counter of words, a defaultdict(int) of counts: two C hashes, as a plain
                # dict of atoms gets, not a stack round per item (300,000 words: 400 -> 40 ms
                # a walk). Change detection only: the portable digest's stream, which
                # checkpoints record, stays as it was
                atoms = (None if self.portable
                         else self._atom_items(dict.keys(obj), dict.values(obj)))
                if atoms is not None:
                    children.append(_Tok(atoms))
                else:
                    pairs = list(zip(dict.keys(obj), dict.values(obj), strict=True))
                    children.append(_Synth(_Synth(kv) for kv in pairs))
            if issubclass(tp, collections.defaultdict):
                token = None if self.portable else _factory_token(obj.default_factory)
                children.append(obj.default_factory if token is None else _Tok(token))
        elif issubclass(tp, list):
            children.append(_Synth(list.__iter__(obj)))
        elif issubclass(tp, tuple):
            children.append(_Synth(tuple.__iter__(obj)))
        elif issubclass(tp, (set, frozenset)):
            out.append(("setbase",))
            # order-independent: reuse the set logic on a plain copy (no identity of its own)
            children.append(_ENTER_NOID)
            children.append(
                set(set.__iter__(obj))
                if issubclass(tp, set)
                else frozenset(frozenset.__iter__(obj))
            )
            children.append(_EXIT_NOID)
        elif issubclass(tp, int):
            out.append(("intbase", int.__index__(obj)))
        elif issubclass(tp, float):
            out.append(("floatbase", float.__float__(obj)))
        elif issubclass(tp, str):
            out.append(("strbase", _atom_token(str.__str__(obj))))
        elif issubclass(tp, bytes):
            out.append(("bytesbase", _atom_token(bytes(memoryview(obj)))))
        elif issubclass(tp, collections.deque):
            out.append(("dequebase", collections.deque.maxlen.__get__(obj)))
            children.append(_Synth(collections.deque.__iter__(obj)))
        elif issubclass(tp, BaseException):
            children.append(_Synth(BaseException.args.__get__(obj)))
            # the chain (`raise ... from e`, or raised while handling e) is the exception's too;
            # its traceback (frames) is not data and cannot leave the process
            children.append(_Synth((BaseException.__cause__.__get__(obj),
                                    BaseException.__context__.__get__(obj),
                                    BaseException.__suppress_context__.__get__(obj))))
        elif solid is not types.SimpleNamespace:
            # hidden C state (e.g. random.Random over _random.Random): its reduce value, which
            # the library computes; if it cannot be computed the object is opaque
            try:
                rv = tp.__reduce_ex__(obj, 4)
            except Exception:
                self._mark_opaque(obj)
                rv = None
            if rv is not None:
                out.append(("cstate", _type_name(solid)))
                parts = list(rv[1:3]) if isinstance(rv, tuple) else [rv]
                children += [_ENTER_NOID, _Synth(parts), _EXIT_NOID]
            # what the C base holds (its reduce value is walked without identities), linked
            # as for a C object (`_reduce`): `tree = KDTree(pts)` holds `pts` itself; planned
            # apart, the two were shipped in two blobs and `tree.data is pts` no longer held
            self._link_ids(gc.get_referents(obj))
            ct = sys.modules.get("ctypes")
            if ct is not None and isinstance(obj, ct._SimpleCData.__base__):
                # a ctypes object over another's memory (`from_buffer(ba)`, a field of a
                # structure) holds it in `_objects` / `_b_base_`, which its reduce value leaves
                # out: linked, so a write through one changes the other's co-variable
                self._link_ids(gc.get_referents(obj))
        if issubclass(tp, weakref.finalize):
            children.append(_Synth(self._finalizer_state(obj)))
        if dict_desc is not None and not (
            self.portable and solid in (dict, list) and _own_setstate(tp, self.ns)
        ):
            # (a library dict/list subclass whose __setstate__ is its own, e.g. sklearn's Bunch,
            # decides that its instance attributes are scratch that pickling does not keep: its
            # value is its items, so the portable digest checks those)
            d = dict_desc.__get__(obj, tp)
            if d is not None and self.portable and type(d) is dict and _is_widget(tp):
                d = _widget_state(d)
            elif d is not None and self.portable and type(d) is dict and _is_fitpack_spline(tp):
                d = _fitpack_spline_state(d) or d
            if d is not None:
                children.append(d)
        held: list[Any] = []
        memo_attrs = _digest_memo_attrs(tp) if self.portable else frozenset()
        for name, desc in slots:
            if name in memo_attrs:
                continue
            try:
                v = desc.__get__(obj, tp)
            except AttributeError:
                children.append(_Tok(("unset", name)))
                continue
            children.append(name)
            if type(v) is int and self.portable and "hash" in name and _own_hash(obj) == v:
                # the object's own hash, cached (a `pathlib.Path` used as a key): salted per
                # process for strings, it differed in every kernel that re-ran the cell
                children.append(_Tok(("selfhash",)))
                continue
            children.append(v)
            held.append(v)
        if self.portable and _library_pickled(tp, self.ns) and _holds_c_object(
                itertools.chain(held, d.values() if type(d) is dict else ())):
            children += self._library_state(obj, tp)
        out.append(len(children))
        extend(reversed(children))

    def _value_id(self, obj: Any, tp: type) -> int | None:
        """A number the same for equal instances of value classes (`_DIGEST_VALUE_CLASSES`)
        met by this walk: the instance's type and its ``_hashable_content()`` (what sympy's own
        ``==`` and ``hash`` compare), with the value-class instances in it replaced by their
        numbers (hash-consing: each instance is keyed once). Neither ``hash()`` nor ``==`` of
        the library is called: sympy caches a hash in the object (``_mhash``), and the in-process
        walk would see the checkpoint change the session's values. None: content that is not
        plain atoms and value-class instances (the instance is then referred to by identity)."""
        byid = self.value_ids
        got = byid.get(id(obj))
        if got is not None:
            return got
        parts = []
        for c in tp._hashable_content(obj):
            ct = type(c)
            if _digest_value_class(ct):
                sub = self._value_id(c, ct)
                if sub is None:
                    return None
                parts.append((_VALUE_REF, sub))
            else:
                atom = _typed_atom(c)
                if atom is None:
                    return None
                parts.append(atom)
        key = (tp, tuple(parts))
        got = self.value_canon.setdefault(key, len(self.value_canon))
        byid[id(obj)] = got
        self.keep.append(obj)
        return got

    def _library_state(self, obj: Any, tp: type) -> list[Any]:
        """What a library's own pickling of `obj` keeps, walked after the instance's attributes.

        A library object's content can sit in a C object the walk cannot read (a PIL image's
        pixels are in its ``ImagingCore``, checked by type only): a re-run cell that drew other
        pixels (``Image.effect_noise`` draws from the C library's ``rand()``) came back verified.
        The class's own ``__getstate__``/``__reduce__`` says what its value is (the pixels, as
        bytes): walked too, without identities of its own (it is built afresh), so the content
        is checked. Portable digests only (checkpoint and restore); the library's pickling
        failing leaves the walk as it was.
        """
        try:
            rv = tp.__reduce_ex__(obj, 4)
        except Exception:  # noqa: BLE001 - a library that cannot pickle it: type only, as before
            return []
        if not isinstance(rv, tuple) or len(rv) < 2:
            return []
        parts: list[Any] = list(rv[1:3])
        for it in rv[3:5]:
            parts.append(None if it is None else _Synth(itertools.islice(it, self.max_nodes)))
        return [_Tok(("libstate",)), _ENTER_NOID, _Synth(parts), _EXIT_NOID]

    def _finalizer_state(self, fin: weakref.finalize) -> tuple:
        """A ``weakref.finalize``'s state, which it keeps in its class's registry, not in itself.

        Walked as an instance with no state, a live finalizer and a dead one (``fin()``,
        ``fin.detach()``) were the same value, and one shipped came back dead with the restore
        verified: its callback never ran (a ``TemporaryDirectory`` was never removed). The
        object it watches is followed in process, as a weak reference's is: they are one
        co-variable, shipped in one pickle that arms the finalizer on that very object.
        """
        info = weakref.finalize._registry.get(fin)
        if info is None:
            return ("finalize", False)
        target = info.weakref()
        if target is None:
            return ("finalize", False)
        return ("finalize", True, bool(info.atexit), info.func, _Synth(info.args or ()),
                info.kwargs or None, None if self.portable else target)

    def _by_value(self, fn: types.FunctionType, mod: Any) -> bool:
        """A function of one of the notebook's modules that a checkpoint pickles by value (or
        that a restore loaded so: globals of its own, its module maybe not even imported)."""
        if mod is None or fn.__globals__ is not vars(mod):
            file = fn.__globals__.get("__file__")
            return type(file) is str and file.endswith(".py") and _local_file(file) is not None
        if not local_module(mod):
            return False
        if self.stale is None:
            self.stale = stale_local_modules()
        if fn.__module__ in self.stale:
            return True
        import cloudpickle

        try:
            return not cloudpickle.cloudpickle._should_pickle_by_reference(fn)
        except Exception:  # noqa: BLE001 - cloudpickle could not tell: by reference, as before
            return False

    def _function(self, fn: types.FunctionType, extend: Any) -> None:
        own_globals = None if self.ns is not None and fn.__globals__ is self.ns else exec_globals(fn)
        if own_globals is not None:
            # made by `exec` into a dict of the notebook's: its code and that dict are its value
            if not self._identity(fn, "F"):
                return
            self.out.append(("fn", fn.__qualname__, "globals"))
            extend(reversed(_Synth((fn.__code__, fn.__defaults__, fn.__kwdefaults__,
                                    _Synth(fn.__closure__ or ()), fn.__dict__ or None,
                                    own_globals))))
            return
        if not _is_notebook_function(fn, self.ns):
            self.out.append(("ref", _ref_name(fn)))
            mod = sys.modules.get(fn.__module__) if type(fn.__module__) is str else None
            if self.portable and self._by_value(fn, mod):
                # code of one of the notebook's modules that the module's file no longer holds
                # (`stale_local_modules`), or that is no longer the module's (its old version
                # after a reload, or one such loaded by a restore): pickled by value, its code
                # is its value. By its name alone one whose file was rewritten verified while
                # the restore loaded the file's new code
                if not self._identity(fn, "F"):
                    return
                self.out.append(("fncode",))
                extend(reversed(_Synth((fn.__code__, fn.__defaults__, fn.__kwdefaults__,
                                        _Synth(fn.__closure__ or ()), fn.__dict__ or None))))
                return
            if mod is not None and fn.__globals__ is vars(mod) and local_module(mod):
                # `from utils import bump; bump()` changes utils' globals: they are this
                # function's state as much as a closure's cells are
                extend((mod,))
            if fn.__closure__:
                # a library's closure over the notebook's objects (ExitStack.callback(
                # log.append) keeps one): linked to what its cells hold
                self._link_ids(fn.__closure__)
            return
        if not self._identity(fn, "F"):
            return
        self.out.append(("fn", fn.__qualname__))
        co = fn.__code__
        name, doc, module = fn.__name__, fn.__doc__, fn.__module__
        if name != co.co_name or doc != _code_doc(co) or module != "__main__":
            # set after the def (``g.__name__ = 'renamed'``, ``g.__doc__ = ...``, a wrapper
            # given its target's): a re-run of the def alone verified without them. Only
            # then, so the digests of untouched functions are those older agents wrote
            self.out.append(("fnmeta", _atom_token(name), _atom_token(doc), _atom_token(module)))
        ann = fn.__annotations__
        fd = fn.__dict__
        extend(
            reversed(
                _Synth(
                    (
                        co,
                        fn.__defaults__,
                        fn.__kwdefaults__,
                        _Synth(fn.__closure__ or ()),
                        fd if fd else None,
                    )
                    # a dict of its own (``h.__annotations__['a'] = int`` changes it in place)
                    + ((ann,) if ann else ())
                )
            )
        )

    def _class(self, cls: type, extend: Any) -> None:
        if _ctypes_array_type(cls):
            # `c_int * 2` is that type wherever it was first made (ctypes caches it), and its
            # __module__ is where that was: the notebook's in one process, the unpickler's in
            # the other (`serialize._reduce_ctypes`)
            self.out.append(("ctarray", cls._length_))
            extend((cls._type_,))
            return
        notebook = _is_notebook_class(cls, self.ns)
        if not notebook and not local_class(cls):
            self.out.append(("ref", "class:" + _type_name(cls)))
            return
        if not self._identity(cls, "C"):
            return
        d = type.__dict__["__dict__"].__get__(cls)
        self.out.append(
            ("class", type.__dict__["__qualname__"].__get__(cls), _type_name(type(cls)))
        )
        children: list[Any] = [_Synth(type.__dict__["__bases__"].__get__(cls))]
        meta = type(cls)
        if meta is not type and _is_session_class(meta, self.ns):
            # a class and its notebook metaclass are one co-variable, as an instance and its
            # class are: apart, the restore re-ran ``class Meta(type)`` and loaded ``Sub`` with
            # the metaclass its pickle held, and ``type(Sub) is Meta`` became False, verified
            children.append(_Tok(("meta",)))
            children.append(meta)
        # sorted: a class rebuilt by cloudpickle or by re-running its cell may fill its dict in
        # another order, and the order of a class dict carries no meaning
        for k, v in sorted(d.items(), key=lambda kv: str(kv[0])):
            if k in _CLASS_SKIP:
                continue
            vt = type(v)
            if vt in (
                types.GetSetDescriptorType,
                types.MemberDescriptorType,
                types.WrapperDescriptorType,
            ) or (not notebook and hasattr(vt, "__get__")):
                # C descriptors: name only (the slot layout is in the bases). A class of the
                # notebook's module: its data only; its methods come from the file, and
                # walked they would bring in that module's every global
                children.append(_Tok(("d", k)))
                continue
            children.append(k)
            children.append(v)
        if "_abc_impl" in d:
            registered = _abc_registered(cls)
            if registered:
                children.append(_Tok(("abc-registered", len(registered))))
                children.append(_Synth(registered))
        self.out.append(len(children))
        extend(reversed(children))

    def _code(self, co: types.CodeType, extend: Any) -> None:
        # no co_filename / line numbers: they differ between processes for identical code
        self.out.append(
            (
                "code",
                co.co_name,
                co.co_code,
                co.co_argcount,
                co.co_posonlyargcount,
                co.co_kwonlyargcount,
                co.co_flags,
                co.co_names,
                co.co_varnames,
                co.co_freevars,
                co.co_cellvars,
                getattr(co, "co_exceptiontable", b""),
            )
        )
        extend(reversed(_Synth(co.co_consts)))

    # -- buffers -----------------------------------------------------------------------------
    def _ndarray(self, arr: np.ndarray, tp: type, push: Any) -> None:
        if not self._identity(arr, "A"):
            return
        out = self.out
        dt = arr.dtype
        if not arr.flags.writeable:
            # part of the value: ``a.setflags(write=False)`` (a cell protecting a result) came
            # back writeable from a re-run of the cell that made `a`, and verified. Emitted only
            # when set, so the digests of writeable arrays are those older agents wrote
            out.append(("ro",))
        if tp is not np.ndarray:
            out.append(("subclass", _type_name(tp)))
            lay = _layout(tp)
            if lay[0] is not None:
                d = lay[0].__get__(arr, tp)
                if d:
                    if self.portable and d.get("_fill_value", 0) is None and issubclass(tp, np.ma.MaskedArray):
                        # numpy.ma fills in its default fill value lazily (reading .fill_value,
                        # pickling): unset and default are the same value
                        d = {**d, "_fill_value": _ma_default_fill(arr)}
                    push(_Synth(_Synth((k, v)) for k, v in d.items() if type(v) is not mmap.mmap))
        if dt.hasobject:
            if self.portable:
                self.obj_arrays.append((arr, self.memo[id(arr)]))  # (`_resolve_object_arrays`)
            out.append(("Aobj", arr.shape, str(dt)))
            items = arr.ravel(order="C").tolist() if dt.fields else list(arr.ravel(order="C"))
            if dt.fields and not self.portable:
                # (each `tolist()` makes the records anew: walked as tuples, their ids made every
                # fingerprint of the array differ, and a checkpoint found it "changed outside
                # recorded cells", so no cell could re-create it. The portable digest walks
                # tuples without ids: its stream is left as older agents wrote it)
                items = [_Synth(t) if type(t) is tuple else t for t in items]
            if not self.portable and not dt.fields and set(map(type, items)) <= MARSHAL_ATOMS:
                # strings, numbers: no identities inside, so hash the run in C (a million-row
                # column of strings walked item by item cost half a second per touch)
                out.append(("a", self._atoms(items)))
            else:
                push(_Synth(items))
            if not self.portable:
                self._base_ids(arr)
            return
        if self.portable:
            # resolved after the walk (aliasing needs every array); the stream keeps a slot
            # number, the resolved tokens are appended in slot order, so the stream can be
            # flushed meanwhile
            out.append(("arr#", len(self.arrays)))
            self.arrays.append(arr)
            exporter = _buffer_exporter(arr)
            if exporter is not None:
                # an array over a bytearray (`np.frombuffer(ba)`): which bytearray it writes
                # through is part of the value (a back-reference if `ba` is walked too), so a
                # restore that ships it as a copy does not verify
                out.append(("over",))
                push(exporter)
            return
        fb = _final_base(arr)
        if fb is not arr:
            # a view: its values are the base's bytes at (offset, shape, strides); hash the base
            out.append(("view", _data_ptr(arr) - _data_ptr(fb), arr.shape, arr.strides, _dtype_key(dt)))
            push(fb)
            return
        b = fb.base
        if b is not None and type(b) is not bytes and not self.noid:
            self.ids.append(id(b))  # e.g. two arrays over one bytearray / mmap share memory
            self.ids.extend(_exporter_ids(b))
        if self.foreign and type(b) is not bytes and not self.noid:
            # the memory it owns or exports (views are walked to it): tensors and arrow buffers
            # over it (`torch.from_numpy(a[2:])`, `pa.array(x)`), or it over theirs
            # (`t.numpy()`, `np.frombuffer(buf, offset=8)`), overlap it
            if fb.flags.c_contiguous:
                lo = _data_ptr(fb)
                self._span(lo, lo + fb.nbytes)
            else:
                self._span(*_byte_span(fb))
        cache = self.array_cache
        hit = cache.get(id(arr)) if cache is not None else None
        if hit is not None and hit[0] is arr:
            h = hit[1]
        elif not self._spend(arr.nbytes):
            out.append(("buf?", _dtype_key(dt), arr.shape, arr.strides))
            return
        else:
            h = _buffer_hash(arr, logical=False)
            if cache is not None:
                cache[id(arr)] = (arr, h)  # the entry keeps arr alive: its id cannot be reused
        out.append(("buf", _dtype_key(dt), arr.shape, arr.strides, h))

    def _base_ids(self, arr: np.ndarray) -> None:
        b = arr.base
        for _ in range(64):
            if b is None or self.noid:
                return
            if type(b) is not bytes:
                self.ids.append(id(b))
                self.ids.extend(_exporter_ids(b))
            b = getattr(b, "base", None) if isinstance(b, np.ndarray) else None

    def _buffer(self, obj: Any, tp: type, push: Any) -> None:
        if not self._identity(obj, "B"):
            return
        if tp is memoryview:
            exporter = memoryview_exporter(obj)
            if not self.noid and exporter is not None and not self.portable:
                self.ids.append(id(exporter))
            data = obj.tobytes()
            self.out.append(("mv", obj.format, obj.shape, xxhash.xxh3_128_digest(data)))
            if exporter is not None:
                # what it writes into: a copy loaded over nothing (bytes) is not the same value,
                # and an array's bases are linked as the array's are (`memoryview(a[:, ::2])`)
                push(exporter)
        elif tp is _array_mod.array:
            self._buffer_span(obj)
            self.out.append(
                ("array", obj.typecode, xxhash.xxh3_128_digest(memoryview(obj).cast("B")))
            )
        elif tp is mmap.mmap:  # its file position too: `m.seek(0)` changes what `m.read()` gives
            self._buffer_span(obj, exported=False)
            self.out.append(("mmap", len(obj), obj.tell(), xxhash.xxh3_128_digest(obj)))
        else:  # bytearray
            self._buffer_span(obj)
            self.out.append((tp.__name__, len(obj), xxhash.xxh3_128_digest(obj)))

    def _buffer_span(self, obj: Any, exported: bool = True) -> None:
        """The memory of a bytearray, array.array or mmap: a tensor or arrow buffer may wrap
        part of it (``torch.frombuffer(buf, offset=8)``), linked by its span; in portable mode
        the spans of bytearrays and array.arrays (`exported`) are kept for `wrapped`. The array
        over it is dropped at once: held, it would keep the bytearray from being resized."""
        if self.portable:
            if not exported or not len(obj):
                return
        elif self.noid or not self.foreign:
            return
        try:
            lo = _data_ptr(np.frombuffer(obj, dtype=np.uint8))
            n = memoryview(obj).nbytes
        except (TypeError, ValueError, BufferError):  # closed or empty map, exotic item
            return
        if self.portable:
            self.exported.append((lo, lo + n))
        else:
            self._span(lo, lo + n)

    def _torch(self, t: Any, tp: type, push: Any) -> None:
        """A tensor: its metadata, its memory (hashed per storage like a numpy base: every view
        of a storage costs one hash of it per walk, within the hash budget), its ``.grad`` (a C
        attribute: ``loss.backward()`` changes it) and its instance dict. Tensors sharing memory
        are linked by their storages' spans (`spans`), as numpy arrays and arrow buffers over
        it are: a view, ``t.T``, ``t.detach()``, ``t.numpy()``, ``torch.from_numpy(a[2:])``."""
        if not self._identity(t, "tensor"):
            return
        torch = _torch()
        no_overrides = getattr(torch._C, "DisableTorchFunctionSubclass", None)
        if no_overrides is None or tp is torch.Tensor:
            self._tensor(t, tp, push, torch)
            return
        with no_overrides():  # a subclass's __torch_function__ is user code: never called here
            self._tensor(t, tp, push, torch)

    def _tensor(self, t: Any, tp: type, push: Any, torch: Any) -> None:
        if not (self.noid or self.portable):
            base = getattr(t, "_base", None)
            if base is not None:
                self.ids.append(id(base))
                self.keep.append(base)
        leaf = bool(t.is_leaf)
        self.out.append(("torch", _type_name(tp), str(t.dtype), tuple(t.shape),
                         bool(t.requires_grad), leaf, str(t.device), str(t.layout)))
        if t.layout is torch.sparse_coo:
            self.out.append(("coo", bool(t.is_coalesced())))
            for part in (t._indices(), t._values()):
                self.keep.append(part)
                self._tensor_data(part, torch)
        else:
            self._tensor_data(t, torch)
        children: list[Any] = []
        if leaf or t.retains_grad:  # (reading it on another non-leaf tensor warns the user)
            children.append(t.grad)
        if not leaf:
            children.extend(_graph_leaves(t))
        lay = _layout(tp)
        if lay[0] is not None:
            d = lay[0].__get__(t, tp)
            if d:
                children.append(d)
        push(_Synth(children))

    def _tensor_data(self, x: Any, torch: Any) -> None:
        out = self.out
        if not _dense_cpu(x, torch):
            # another device or layout: a copy of its values in this process (no aliasing)
            self._tensor_copy(x, torch)
            return
        st = x.untyped_storage()
        ptr, n = st.data_ptr(), st.nbytes()
        isz = x.element_size()
        stride = tuple(x.stride())
        off = x.storage_offset()
        flags = (bool(x.is_conj()), bool(x.is_neg()))
        if self.portable:
            # a numpy array over the same bytes, as the storage's one owner array: the array
            # slots then record its aliasing with the other tensors and arrays over that memory
            # (`resolve_arrays`), and its logical content hash
            got = self.storages.get(ptr) if ptr else None
            if got is None:
                got = (n, storage_bytes(x))
                self.keep.append(got[1])
                if ptr:
                    self.storages[ptr] = got
            arr = np.ndarray(tuple(x.shape), dtype=raw_dtype(isz), buffer=got[1],
                             offset=off * isz, strides=tuple(s * isz for s in stride))
            self.keep.append(arr)
            if got[1].nbytes:
                lo = _data_ptr(got[1])
                self.wrapped.append(("t", len(self.arrays), lo, lo + got[1].nbytes))
            out.append(("tdata", stride, flags, "arr#", len(self.arrays)))
            self.arrays.append(arr)
            return
        if ptr and not self.noid:
            # (its address in the stream too: the same bytes moved to another storage,
            # ``t.set_(s)``, share other memory, so the name's index entries must be renewed.
            # Not for a tensor a reduce value made (`noid`): ``torch.Generator`` reduces to a
            # new state tensor at every walk, whose fresh address made the generator look
            # changed by every cell and at every checkpoint, changed outside recorded cells,
            # which no replay recreates)
            self._span(ptr, ptr + n)
            out.append(("@m", ptr))
        cache = self.array_cache
        hit = cache.get(-ptr) if cache is not None and ptr else None
        if hit is not None:
            h = hit[1]
        elif not self._spend(n):
            out.append(("tbuf?", off, stride, n, flags))
            return
        else:
            u8 = storage_bytes(x)
            h = _hash_u8(u8) if n else b""
            if cache is not None and ptr:
                cache[-ptr] = (u8, h)  # (u8 holds the storage: its address stays its own)
        out.append(("tbuf", off, stride, n, flags, h))

    def _tensor_copy(self, x: Any, torch: Any) -> None:
        x = x.detach()
        if not self.portable and not self._spend(x.nelement() * x.element_size()):
            self.out.append(("tcopy?",))
            return
        if x.device.type != "cpu":
            x = x.cpu()
        if x.is_quantized:
            x = x.dequantize()
        if x.layout is not torch.strided:
            x = x.to_dense()
        x = x.resolve_conj().resolve_neg().contiguous().reshape(-1)
        self.out.append(("tcopy", str(x.dtype),
                         _hash_u8(x.view(torch.uint8).numpy()) if x.numel() else b""))

    def _arrow(self, obj: Any, tp: type) -> None:
        """A pyarrow array, chunked array, record batch, table or buffer.

        Arrow data is immutable: in process, the object's identity and its buffers' addresses
        tell a replaced column from the old one (pandas' ``df.loc[0, 's'] = 'x'`` swaps the
        arrow array its string column holds). The buffers' memory spans are recorded too
        (`spans`): a table, its slices, ``pa.Table.from_pandas(df)`` and the frame's arrow
        columns share buffers and are one co-variable, and so is a numpy array (or tensor)
        arrow wraps without a copy (``pa.array(x[2:])``: writing into ``x`` changes the arrow
        array). The buffers are hashed (budgeted like numpy's: that foreign memory can change)
        in C, never element by element. The portable digest hashes the logical content
        instead (`_arrow_content_hash`), and which array's memory each buffer lies in
        (`_resolve_wrapped`).
        """
        if not self._identity(obj, "pa"):
            return
        out = self.out
        if self.portable:  # (checkpoint and restore time only)
            out.append(("pa", _type_name(tp), _arrow_content_hash(obj)))
            for buf in _arrow_buffers(obj):
                if buf.is_cpu:
                    lo = int(buf.address)
                    self.wrapped.append(("pa", len(self.wrapped), lo, lo + int(buf.size)))
            return
        # the shape of the data too (a slice is its parent's buffers at an offset): walked
        # without ids (a reduce value), the stream has no identity to tell two slices apart
        schema = getattr(obj, "schema", None) or getattr(obj, "type", None)
        leaves = tuple((int(a.offset), len(a)) for a in _arrow_leaves(obj))
        bufs = _arrow_buffers(obj)
        out.append(("pa", _type_name(tp), str(schema), leaves, len(bufs)))
        seen = self.arrow_seen
        cache = self.array_cache
        for buf in bufs:
            addr, size = int(buf.address), int(buf.size)
            if buf.is_cpu:  # (device memory: another address space)
                self._span(addr, addr + size)
            h = seen.get((addr, size))
            if h is not None:
                out.append(("pab", addr, size, h))
                continue
            key = ("pa", addr, size)
            hit = cache.get(key) if cache is not None else None  # type: ignore[call-overload]
            if hit is not None:
                h = hit[1]
            elif not buf.is_cpu:
                out.append(("pabuf-dev", addr, size))
                continue
            elif not self._spend(size):
                out.append(("pabuf?", addr, size))
                continue
            else:
                h = _hash_u8(np.frombuffer(buf, dtype=np.uint8))
                if cache is not None:
                    cache[key] = (buf, h)  # type: ignore[index]  # (keeps the memory alive)
            self.keep.append(buf)
            seen[addr, size] = h
            out.append(("pab", addr, size, h))

    # -- pandas --------------------------------------------------------------------------------
    def _dataframe(self, df: Any, tp: type, push: Any, extend: Any) -> None:
        if not self._identity(df, "DF"):
            return
        self.out.append(("df", _type_name(tp), df.shape))
        if not df.flags.allows_duplicate_labels:
            # ``df.flags.allows_duplicate_labels = False`` (only when set: older digests hold)
            self.out.append(("nodup",))
        mgr = df._mgr
        # (attrs with their identity: ``meta = df.attrs`` is the frame's dict, and a restore
        # that brings back a copy of it does not verify)
        children: list[Any] = [df.columns, df.index, df.attrs]
        if self.portable:
            # one standalone value per column, in column order
            out_cols: list[Any] = []
            for blk in mgr.blocks:
                vals = blk.values
                locs = blk.mgr_locs.as_array
                for j, loc in enumerate(locs.tolist()):
                    col = vals[j] if isinstance(vals, np.ndarray) and vals.ndim == 2 else vals
                    out_cols.append((loc, col))
            out_cols.sort(key=lambda t: t[0])
            self.out.append(len(out_cols))
            children.append(_ENTER_NOID)
            for _, col in out_cols:
                if isinstance(col, np.ndarray) and not col.dtype.hasobject:
                    children.append(
                        _Tok(("col", col.dtype.str, col.shape, _buffer_hash(col, logical=True)))
                    )
                elif isinstance(col, np.ndarray):
                    children.append(_Synth(("colobj", _Synth(col.tolist()))))
                else:
                    children.append(_Synth(("colea", col)))
            children.append(_EXIT_NOID)
        else:
            for blk in mgr.blocks:
                children.append(_Synth(blk.mgr_locs.as_array.tolist()))
                children.append(blk.values)
        self.out.append(len(children))
        extend(reversed(children))

    def _series(self, s: Any, tp: type, push: Any, extend: Any) -> None:
        if not self._identity(s, "SER"):
            return
        self.out.append(("series", _type_name(tp), str(s.dtype)))
        if not s.flags.allows_duplicate_labels:
            self.out.append(("nodup",))
        vals = s._values
        children: list[Any] = [s.name, s.index, s.attrs]
        if self.portable and isinstance(vals, np.ndarray) and not vals.dtype.hasobject:
            children.append(
                _Tok(("col", vals.dtype.str, vals.shape, _buffer_hash(vals, logical=True)))
            )
        else:
            children.append(vals)
        extend(reversed(children))

    def _index(self, idx: Any, tp: type, push: Any, extend: Any) -> None:
        pd = _pandas()
        if isinstance(idx, pd.RangeIndex):
            self.out.append(("rangeindex", idx.start, idx.stop, idx.step))
            push(_Synth((idx.name,)))
            return
        if not self._identity(idx, "IDX"):
            return
        self.out.append(("index", _type_name(tp), str(idx.dtype)))
        if isinstance(idx, pd.MultiIndex):
            extend(reversed(_Synth((_Synth(idx.names), _Synth(idx.levels), _Synth(idx.codes)))))
            return
        vals = idx._values
        children: list[Any] = [idx.name]
        if self.portable and isinstance(vals, np.ndarray) and not vals.dtype.hasobject:
            children.append(
                _Tok(("col", vals.dtype.str, vals.shape, _buffer_hash(vals, logical=True)))
            )
        else:
            children.append(vals)
        extend(reversed(children))

    def _extarray(self, ea: Any, tp: type, push: Any, extend: Any) -> None:
        if not self._identity(ea, "EA"):
            return
        pd = _pandas()
        dt = ea.dtype
        self.out.append(("ea", _type_name(tp), str(type(dt).__name__)))
        children: list[Any] = []
        if isinstance(dt, pd.CategoricalDtype):
            children += [dt.categories, bool(dt.ordered)]
        else:
            children.append(str(dt))
        nd = getattr(ea, "_ndarray", None)
        pa = _pyarrow()
        pa_data = getattr(ea, "_pa_array", None) if pa is not None else None
        if pa is not None and isinstance(pa_data, pa.ChunkedArray):
            # ArrowExtensionArray, ArrowStringArray (pandas' default str dtype with pyarrow
            # installed): the arrow array it holds, whose buffers are hashed in C. Setting an
            # item swaps that array for a new one in the same extension array
            children.append(pa_data)
        elif (
            isinstance(nd, np.ndarray)
            and not self.portable
            and self.budget is not None
            and nd.dtype.hasobject
            and isinstance(dt, pd.StringDtype)
            and not self._spend(16 * nd.size)
        ):
            # a string column (str or NA items: no identities inside) too big for this walk's
            # budget: its identity only, as for an unhashed numeric buffer
            if self._identity(nd, "A"):
                self._base_ids(nd)
            children.append(_Tok(("str?", nd.shape)))
        elif isinstance(nd, np.ndarray):
            children.append(nd)
        elif isinstance(getattr(ea, "_data", None), np.ndarray) and isinstance(
            getattr(ea, "_mask", None), np.ndarray
        ):
            children += [ea._data, ea._mask]
        else:
            children.append(_ENTER_NOID)
            children.append(_Synth(np.asarray(ea, dtype=object).tolist()))
            children.append(_EXIT_NOID)
        self.out.append(len(children))
        extend(reversed(children))

    # -- fallback: C objects via their reduce value ---------------------------------------------
    def _reduce(self, obj: Any, tp: type, push: Any, extend: Any) -> None:
        if _global_generator(obj):
            self.out.append(("ref", "numpy.random.mtrand._rand"))
            return
        if not self._identity(obj, "R"):
            return
        if tp in _C_DICTS and not self.portable and self.idmap is None:
            self._c_dict(obj, tp, push, extend)
            return
        try:
            rv = tp.__reduce_ex__(obj, 4) if tp is not re.Match else _match_value(obj)
        except Exception:
            state = _c_content(obj, tp) if self.portable else None
            if state is not None:
                self.out.append(state)
                return
            self._mark_opaque(obj)
            # no pickle of its own, but what it holds is still shared: a `csv.writer(out)`
            # holds `out.write`, and writes into `out` (one co-variable, shipped together)
            if not (self.noid or self.portable):
                self._link_ids(gc.get_referents(obj) + hidden_referents(obj, tp))
            return
        if isinstance(rv, str):
            self.out.append(("global", rv))
            return
        if not isinstance(rv, tuple) or len(rv) < 2:
            self._mark_opaque(obj)
            return
        parts: list[Any] = list(rv[:3])
        for it in rv[3:5]:
            if it is None:
                parts.append(None)
            else:
                parts.append(_Synth(itertools.islice(it, self.max_nodes)))
        self.out.append(("reduce", _type_name(tp)))
        # the reduce value is freshly built (new tuples, dicts): walk it without identities;
        # linked to what the object really holds (`operator.methodcaller('append', target)`
        # holds `target`)
        self._link_ids(gc.get_referents(obj))
        extend((_EXIT_NOID, _Synth(parts), _ENTER_NOID))

    def _c_dict(self, obj: Any, tp: type, push: Any, extend: Any) -> None:
        """A `defaultdict` or `OrderedDict` for change detection: walked as a dict is (its
        items with their identities, atoms in one C hash), not through a reduce value built
        for the walk: a `defaultdict(int)` of 300,000 counts took 400 ms a walk, and a builtin
        `default_factory` no longer counts as code (the read analysis skips plain data)."""
        out = self.out
        out.append(("cdict", _type_name(tp)))
        if tp is collections.defaultdict:
            token = _factory_token(obj.default_factory)
            if token is None:
                push(obj.default_factory)
            else:
                out.append(token)
        if tp is collections.OrderedDict:  # its own order, which `move_to_end` changes
            keys = list(collections.OrderedDict.keys(obj))
            values = [dict.__getitem__(obj, k) for k in keys]
        else:
            keys, values = list(dict.keys(obj)), list(dict.values(obj))
        atoms = self._atom_items(keys, values)
        if atoms is not None:
            out.append(atoms)
            return
        out.append(len(keys))
        self.nodes += 2 * len(keys)
        extend(reversed(list(_chain(zip(keys, values, strict=True)))))

    # -- portable arrays ---------------------------------------------------------------------
    def _owner(self, fb: np.ndarray) -> int:
        """Key of the memory owner `fb` (an array's final base) is part of: the tensor storage
        its bytes lie in (``t.numpy()``, ``torch.from_numpy(a)``: one memory, two libraries),
        else itself."""
        if self.storages:
            lo, hi = _byte_span(fb)
            for ptr, (n, holder) in self.storages.items():
                if holder is fb or (lo < ptr + n and ptr < hi):
                    return id(holder)
        return id(fb)

    def resolve_arrays(self) -> None:
        """Portable mode: resolve the array slots. Arrays whose bytes overlap (a base and its
        views, overlapping views) are recorded as (group, offset from the group's lowest byte,
        shape, strides, dtype, content hash), so a view restored as a copy does not match; an
        array overlapping nothing reachable is a plain value (layout-independent)."""
        # Aliasing between arrays is *shared memory*, not a common ``.base``: two disjoint
        # slices of one hidden buffer (sklearn keeps ``coef_`` and ``intercept_`` in one) are
        # independent values, while overlapping arrays must come back overlapping. So arrays are
        # grouped by overlapping byte ranges within one memory owner, and a group is described
        # relative to its own lowest address, not to the (possibly unreachable) owner.
        by_owner: dict[int, list[int]] = {}
        for k, arr in enumerate(self.arrays):
            by_owner.setdefault(self._owner(_final_base(arr)), []).append(k)
        group_of: dict[int, tuple[int, int]] = {}  # array index -> (group number, group low ptr)
        tail: list[Any] = []
        for members in by_owner.values():
            if len(members) < 2:
                continue
            spans = sorted((*_byte_span(self.arrays[k]), k) for k in members)
            component: list[tuple[int, int, int]] = []
            reach = -1

            def close(comp: list[tuple[int, int, int]]) -> None:
                if len(comp) < 2:
                    return
                g = len(tail)
                low = comp[0][0]
                # identity relations too (`DigestReport.links`): a load that comes back over
                # two memories (a tensor over a copy of the array it was made from) has fewer
                self.links += len(comp) - 1
                tail.append(("group", g, len(comp)))
                for _, _, k in comp:
                    group_of[k] = (g, low)

            for lo, hi, k in spans:
                if component and lo >= reach:
                    close(component)
                    component = []
                component.append((lo, hi, k))
                reach = max(reach, hi)
            close(component)
        resolved: list[Any] = []
        for k, arr in enumerate(self.arrays):
            if k not in group_of:
                if may_self_overlap(arr):
                    # its elements alias each other: a copy (same values) is not it
                    resolved.append(("arr-aliased", _dtype_key(arr.dtype), arr.shape, arr.strides,
                                     _buffer_hash(arr, logical=True)))
                    continue
                resolved.append(("arr", _dtype_key(arr.dtype), arr.shape, _buffer_hash(arr, logical=True)))
                continue
            g, low = group_of[k]
            resolved.append(
                (
                    "view",
                    g,
                    _data_ptr(arr) - low,
                    arr.shape,
                    arr.strides,
                    _dtype_key(arr.dtype),
                    _buffer_hash(arr, logical=True),
                )
            )
        self.out.extend(resolved)
        self.out.extend(tail)
        self._resolve_wrapped()
        self._resolve_object_arrays()

    def _resolve_object_arrays(self) -> None:
        """Portable mode: the object arrays met whose slots overlap (`view = arr[::2]`, a field
        of a structured array and the array), each by its place in the stream, at its offset
        from the group's lowest slot, with its shape and strides. A store through one lands in
        the other; walked as lists of their items only, a restore that shipped the view as a
        copy (apart from `arr`) verified. Object arrays overlapping no other one met (a pandas
        column, whose 2-D block the walk does not meet) add nothing."""
        if len(self.obj_arrays) < 2:
            return
        by_owner: dict[int, list[tuple[int, int, int, np.ndarray]]] = {}
        for arr, place in self.obj_arrays:
            if arr.size:
                lo, hi = _byte_span(arr)
                by_owner.setdefault(id(_final_base(arr)), []).append((lo, hi, place, arr))
        for members in by_owner.values():
            if len(members) < 2:
                continue
            members.sort(key=lambda m: (m[0], m[2]))
            component: list[tuple[int, int, int, np.ndarray]] = []
            reach = -1
            for m in [*members, None]:
                if m is None or (component and m[0] >= reach):
                    if len(component) > 1:
                        low = component[0][0]
                        self.links += len(component) - 1
                        self.out.append(("objgroup", [(place, lo - low, a.shape, a.strides)
                                                      for lo, _, place, a in component]))
                    component = []
                if m is not None:
                    component.append(m)
                    reach = max(reach, m[1])

    def _resolve_wrapped(self) -> None:
        """Portable mode: for each tensor storage and arrow buffer met (`wrapped`), the array
        (by slot) or bytearray (by order met) whose memory it lies in, at which offset: an
        arrow array over a numpy array's memory (``pa.array(x[2:])``), a tensor over a
        bytearray's (``torch.from_numpy(np.frombuffer(buf)[1:])``). Each is an identity
        relation (`links`): a load that brings it back over a copy has fewer. A tensor in
        another array is already grouped with it (`resolve_arrays`)."""
        if not self.wrapped:
            return
        containers = sorted(
            [(*_byte_span(a), "a", k) for k, a in enumerate(self.arrays)
             if not a.dtype.hasobject]
            + [(lo, hi, "b", j) for j, (lo, hi) in enumerate(self.exported)])
        if not containers:
            return
        los = [c[0] for c in containers]
        reach = list(itertools.accumulate((c[1] for c in containers), max))
        for kind, k, lo, hi in self.wrapped:
            j = bisect.bisect_right(los, lo) - 1
            while j >= 0 and reach[j] >= hi:
                clo, chi, ckind, ck = containers[j]
                if chi >= hi and not (kind == "t" and ckind == "a"):
                    self.links += 1
                    self.out.append(("in", kind, k, ckind, ck, lo - clo))
                    break
                j -= 1


# --------------------------------------------------------------------------------------------
# Per-name fingerprints
# --------------------------------------------------------------------------------------------


@dataclass
class _Print:
    root_id: int
    fp: bytes
    ids: list[int]  # ids of reachable identity-bearing objects (dropped once indexed)
    opaque: bool
    work: int = 0  # nodes visited + atoms hashed: decides whether a later touch defers it
    #: the walk left content unhashed (over the hash budget) or did not walk at all (joined an
    #: expensive co-variable): `fp` proves nothing about that content, so a touch counts as a
    #: mutation until `Tracker.refresh` walks it in full
    partial: bool = False
    plain: bool = False  # only data reached: no instance, function, class, module...
    #: bytes of buffers and atom runs the walk hashed or, over the budget, left unhashed: what
    #: a full walk hashes (see `Tracker.incomplete`)
    nbytes: int = 0
    #: names walked earlier in the same update whose objects this walk reached and did not
    #: walk again (see `_Walker.next_root`): they are one co-variable with it
    links: tuple[str, ...] = ()
    #: [low, high) memory spans of the buffers reached (`_Walker.spans`; dropped once indexed)
    spans: list[tuple[int, int]] = field(default_factory=list)
    #: with `links`: the fingerprint of a walk of this name alone (None: not taken, or it was
    #: partial or opaque), which covers what it reaches through its links too. The links come
    #: and go with other names (a holder made or deleted, sorted before it), and then `fp`
    #: changes although the value did not; this one does not (see `Tracker._changed`)
    solo: bytes | None = None


def _linked(prints: Mapping[str, _Print], name: str) -> set[str]:
    """The names `name`'s fingerprint links to, and theirs (not `name`)."""
    seen = {name}
    stack = [name]
    while stack:
        p = prints.get(stack.pop())
        for m in p.links if p is not None else ():
            if m not in seen:
                seen.add(m)
                stack.append(m)
    seen.discard(name)
    return seen


def _same_print(old: _Print | None, new: _Print) -> bool:
    """Whether a walk found what the last one did (see `Tracker._unchanged_groups`)."""
    return (old is not None and old.root_id == new.root_id and old.fp == new.fp
            and old.links == new.links
            and not (old.partial or new.partial or old.opaque or new.opaque))


def _link_free(value: Any) -> bool:
    """Values that can never come to reference another object: atoms, numeric arrays."""
    tp = type(value)
    return tp in MARSHAL_ATOMS or (tp is np.ndarray and not value.dtype.hasobject)


def _atom_print(value: Any) -> _Print | None:
    """The print of a number or a short string (None: another value). Most names of a notebook
    hold one: the stream a walk would make is the value itself (no identities), and a walker
    costs more than the hash. Such a name reaches no object of another name: its co-variable
    is itself."""
    tp = type(value)
    if tp in MARSHAL_ATOMS and (tp is not str and tp is not bytes or len(value) <= _BIG_ATOM):
        return _Print(id(value), xxhash.xxh3_128_digest(marshal.dumps([value], 2)), [], False, 1,
                      plain=True)
    return None


def _flat_list_print(value: Any) -> _Print | None:
    """The print of a short list of atoms (`[18, 'x18']`; None: another value): the stream, ids
    and counts a walk of it as a root of its own makes, without a walker's set-up per root.
    Not walked by a shared walker (see `Tracker._walk_names`): it reaches no other object, so
    it links to nothing, and a name walked in the same update that reaches it walks it too and
    records its id: the two join by that id instead of by a link."""
    if type(value) is not list or len(value) >= _SMALL_SEQ or not set(map(type, value)) <= MARSHAL_ATOMS:
        return None
    i = id(value)
    stream = marshal.dumps([("L", i), ("a", tuple(value))], 2)
    return _Print(i, xxhash.xxh3_128_digest(stream), [i], False, 1 + len(value), plain=True)


def _fingerprint(
    value: Any,
    ns: Any,
    max_nodes: int,
    array_cache: dict[int, tuple[np.ndarray, bytes]] | None = None,
    budget: list[int] | None = None,
    shared: _Walker | None = None,
) -> _Print:
    """Walk one name's value. Never raises: failures make the value opaque.

    `budget`: one-element list of bytes left to hash, shared by the names of one update.
    `shared`: the walker of the names walked before in this update (see `_Walker.next_root`).
    """
    atom = _atom_print(value) or _flat_list_print(value)
    if atom is not None:
        return atom
    if shared is not None:
        w = shared
        w.next_root()
        w.budget = budget[0] if budget is not None else None
    else:
        w = _Walker(ns, portable=False, max_nodes=max_nodes, array_cache=array_cache,
                    budget=budget[0] if budget is not None else None)
    opaque = False
    try:
        w.walk(value)
        fp = w.digest()
        opaque = w.opaque
    except _Budget:
        log.info("changes: object graph larger than %d nodes; treated as opaque", max_nodes)
        opaque = True
        fp = b""
    except Exception as exc:  # pragma: no cover - defensive: walker bugs must not reach users
        log.warning("changes: fingerprint failed (%r); treated as opaque", exc)
        opaque = True
        fp = b""
    if opaque:
        fp = _fresh_token()
    if budget is not None and w.budget is not None:
        budget[0] = w.budget
    return _Print(id(value), fp, w.ids, opaque, w.nodes + w.work, w.partial and not opaque,
                  plain=not (opaque or w.code), nbytes=w.want, spans=w.spans)


# --------------------------------------------------------------------------------------------
# Id index: which tracked name reaches which object id (compact numpy storage)
# --------------------------------------------------------------------------------------------


class _IdIndex:
    """Sorted int64 id chunks with int32 owner tokens; dead tokens are filtered at lookup and
    dropped at compaction. About 12 bytes per reachable mutable object.

    And the memory spans the owners' buffers reach (`_Walker.spans`), in chunks sorted by low
    address, each with the running maximum of its high addresses (`lookup_spans`); about 28
    bytes per buffer."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray]] = []
        # (lows sorted, highs, running max of highs, owner tokens)
        self.span_chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.alive = np.zeros(1024, dtype=bool)
        self.next_token = 0
        self.dead_entries = 0
        self.total_entries = 0
        self.entries_of: dict[int, int] = {}

    def new_token(self) -> int:
        t = self.next_token
        self.next_token += 1
        if t >= len(self.alive):
            grown = np.zeros(max(2 * len(self.alive), t + 1), dtype=bool)
            grown[: len(self.alive)] = self.alive
            self.alive = grown
        self.alive[t] = True
        return t

    def kill(self, token: int) -> None:
        if self.alive[token]:
            self.alive[token] = False
            self.dead_entries += self.entries_of.pop(token, 0)

    def add_sorted(self, ids: np.ndarray, owners: np.ndarray, counts: dict[int, int]) -> None:
        """Add a chunk of (id, owner token) pairs already sorted by id."""
        if len(ids):
            self.chunks.append((ids, owners.astype(np.int32, copy=False)))
            self.total_entries += len(ids)
        self.entries_of.update(counts)
        self.maybe_compact()

    def add_spans(self, lo: np.ndarray, hi: np.ndarray, owners: np.ndarray) -> None:
        """Add (span, owner token) entries already sorted by low address (their count is in the
        `counts` of `add_sorted`)."""
        if len(lo):
            self.span_chunks.append((lo, hi, np.maximum.accumulate(hi),
                                     owners.astype(np.int32, copy=False)))
            self.total_entries += len(lo)
            self.maybe_compact()

    def lookup_spans(self, qlo: np.ndarray, qhi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the queries, alive owner tokens) of every stored span overlapping a
        query span ``[qlo[i], qhi[i])`` (a byte in common).

        Within a chunk (sorted by low) the spans whose low is below the query's high are a
        prefix, and those before the first whose running maximum of highs exceeds the query's
        low all end at or before it: only the spans between the two bounds are compared. Live
        buffers do not overlap unless they share memory, so those are (nearly) only the
        overlapping ones; many dead ones there (memory freed and reused) make the index
        compact first."""
        qpos: list[np.ndarray] = []
        toks: list[np.ndarray] = []
        total = 0
        for lo, hi, pm, own in self.span_chunks:
            left = pm.searchsorted(qlo, "right")
            cnt = lo.searchsorted(qhi, "left") - left
            hit = np.flatnonzero(cnt > 0)
            if not len(hit):
                continue
            cnt_h = cnt[hit]
            total += int(cnt_h.sum())
            if self.dead_entries and total > 64 * len(qlo) + 4096:
                self.compact()  # (then only live, hence disjoint or shared, spans are left)
                return self.lookup_spans(qlo, qhi)
            rep_q = np.repeat(hit, cnt_h)
            starts = np.repeat(left[hit], cnt_h)
            offs = np.arange(len(rep_q)) - np.repeat(np.cumsum(cnt_h) - cnt_h, cnt_h)
            at = starts + offs
            tk = own[at]
            ok = (hi[at] > qlo[rep_q]) & self.alive[tk]
            qpos.append(rep_q[ok])
            toks.append(tk[ok])
        if not qpos:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        return np.concatenate(qpos), np.concatenate(toks)

    def renumber(self) -> dict[int, int]:
        """Give the live tokens the numbers 0..k-1 (tokens are issued at every re-walk, so a
        long session would otherwise grow `alive` forever); returns {old: new}."""
        self.compact()
        live = np.nonzero(self.alive[: self.next_token])[0]
        remap = np.full(max(self.next_token, 1), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        self.chunks = [(ids, remap[own].astype(np.int32)) for ids, own in self.chunks]
        self.span_chunks = [(lo, hi, pm, remap[own].astype(np.int32))
                            for lo, hi, pm, own in self.span_chunks]
        self.alive = np.zeros(max(1024, 2 * len(live)), dtype=bool)
        self.alive[: len(live)] = True
        self.next_token = len(live)
        mapping = {int(o): int(n) for n, o in enumerate(live.tolist())}
        self.entries_of = {mapping[t]: c for t, c in self.entries_of.items() if t in mapping}
        return mapping

    def maybe_compact(self) -> None:
        """Merge chunks when there are many: the small ones (one update's names each) into one,
        leaving the largest (the namespace's bulk) as it is unless they add up to half of it,
        so a cell that touches one small name does not re-sort the whole index; all of them
        when most entries are dead."""
        if self.dead_entries > 4096 and self.dead_entries * 2 > self.total_entries:
            self.compact()
            return
        if len(self.chunks) > 8:
            self.chunks = self._tiered(self.chunks, self._merge_ids)
        if len(self.span_chunks) > 8:
            self.span_chunks = self._tiered(self.span_chunks, self._merge_spans)

    def _tiered(self, chunks: list[Any], merge: Any) -> list[Any]:
        big = max(range(len(chunks)), key=lambda i: len(chunks[i][0]))
        rest = [c for i, c in enumerate(chunks) if i != big]
        whole = 2 * sum(len(c[0]) for c in rest) > len(chunks[big][0])
        merged, dropped = merge(chunks if whole else rest)
        self.total_entries -= dropped
        self.dead_entries = max(0, self.dead_entries - dropped)
        return merged if whole else [chunks[big], *merged]

    def _merge_ids(self, chunks: list[Any]) -> tuple[list[Any], int]:
        """One chunk of the live entries of `chunks`, and how many dead ones it left out."""
        ids = np.concatenate([c[0] for c in chunks])
        own = np.concatenate([c[1] for c in chunks])
        keep = self.alive[own]
        ids, own = ids[keep], own[keep]
        order = np.argsort(ids, kind="stable")
        return ([(ids[order], own[order])] if len(ids) else []), len(keep) - len(ids)

    def _merge_spans(self, chunks: list[Any]) -> tuple[list[Any], int]:
        lo = np.concatenate([c[0] for c in chunks])
        hi = np.concatenate([c[1] for c in chunks])
        own = np.concatenate([c[3] for c in chunks])
        keep = self.alive[own]
        lo, hi, own = lo[keep], hi[keep], own[keep]
        order = np.argsort(lo, kind="stable")
        lo, hi, own = lo[order], hi[order], own[order]
        merged = [(lo, hi, np.maximum.accumulate(hi), own)] if len(lo) else []
        return merged, len(keep) - len(lo)

    def compact(self) -> None:
        if self.chunks:
            self.chunks, _ = self._merge_ids(self.chunks)
        if self.span_chunks:
            self.span_chunks, _ = self._merge_spans(self.span_chunks)
        self.total_entries = (sum(len(c[0]) for c in self.chunks)
                              + sum(len(c[0]) for c in self.span_chunks))
        self.dead_entries = 0

    def lookup(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in q, alive owner tokens) of every match of the sorted ids `q`."""
        qpos: list[np.ndarray] = []
        toks: list[np.ndarray] = []
        for ids, own in self.chunks:
            left = np.searchsorted(ids, q, "left")
            right = np.searchsorted(ids, q, "right")
            cnt = right - left
            hit = np.nonzero(cnt)[0]
            if not len(hit):
                continue
            cnt_h = cnt[hit]
            rep_q = np.repeat(hit, cnt_h)
            starts = np.repeat(left[hit], cnt_h)
            offs = np.arange(len(rep_q)) - np.repeat(np.cumsum(cnt_h) - cnt_h, cnt_h)
            tk = own[starts + offs]
            ok = self.alive[tk]
            qpos.append(rep_q[ok])
            toks.append(tk[ok])
        if not qpos:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
        return np.concatenate(qpos), np.concatenate(toks)

    def nbytes(self) -> int:
        return (sum(a.nbytes + b.nbytes for a, b in self.chunks) + self.alive.nbytes
                + sum(sum(x.nbytes for x in c) for c in self.span_chunks))


# --------------------------------------------------------------------------------------------
# Tracker
# --------------------------------------------------------------------------------------------


@dataclass
class TrackerUpdate:
    """What one cell did to the tracked names."""

    rebound: set[str] = field(default_factory=set)  # new names, or id(value) changed
    #: same object, value changed (each name for itself, see `Tracker._changed`)
    mutated: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    opaque: set[str] = field(default_factory=set)  # could not be inspected (counted as mutated)
    #: expensive co-variables touched but not re-walked: counted as mutated (see Tracker)
    deferred: set[str] = field(default_factory=set)
    #: new or rebound names whose value is an object of an expensive co-variable: they joined
    #: it without a walk (also in `rebound`; walked by `refresh`)
    joined: set[str] = field(default_factory=set)


class _UF:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        p = self.parent
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while x != root:
            nxt = p.get(x, x)
            p[x] = root
            x = nxt
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class Tracker:
    """Incremental mutation detection and co-variable partition for one namespace.

    Holds no reference to user values (only ids, 16-byte fingerprints and compact id arrays),
    so it never keeps a deleted object alive.
    """

    #: owner tokens issued beyond 4 per tracked name before they are renumbered
    renumber_slack = 65_536

    #: a co-variable whose last walk visited more than this many objects and atoms is not
    #: re-walked when a cell merely touches it: it is reported as mutated (safe: the history
    #: then re-runs every cell that touched it) and re-walked by `refresh`, which the checkpoint
    #: calls. Reading a million-row frame of strings in every cell must not cost a second per
    #: cell. Buffers (numpy, pandas numeric columns) count as one object: hashing them is fast.
    #: Counted, not timed, so that the history does not depend on the machine's load. 0 = never.
    defer_work = 200_000

    #: bytes of array buffers and atom runs one per-cell update hashes (xxh3, ~1 ms at 8 MB);
    #: content beyond it is left unhashed and the name is treated as deferred (any touch is a
    #: mutation, `refresh` hashes it). Counted in bytes, not timed, so that the history does not
    #: depend on the machine's load. None = hash everything in every update.
    hash_budget: int | None = 8 << 20

    def __init__(self, *, max_nodes: int = 2_000_000) -> None:
        self.max_nodes = max_nodes
        self._stale: set[str] = set()  # names whose fingerprint and ids may be out of date
        # the subset touched since their last walk without one (deferred, joined): what that
        # walk saw of their structure may be out of date too (partial ones were walked in full,
        # only some content was left unhashed)
        self._unwalked: set[str] = set()
        self._prints: dict[str, _Print] = {}
        self._token: dict[str, int] = {}
        self._name_of: dict[int, str] = {}
        self._group: dict[str, frozenset[str]] = {}
        self._index = _IdIndex()
        self._known: set[str] = set()  # names to track (survives a failed rebuild)
        # names whose print is partial or over defer_work: only their co-variables are
        # candidates for _join_expensive (no index lookup per cell otherwise)
        self._heavy: set[str] = set()
        self._dirty = False
        # torch or pyarrow was loaded at the last update: walks record memory spans (see
        # `_Walker.foreign`, `_index_spans`)
        self._foreign = False

    # -- queries -----------------------------------------------------------------------------
    def covariables(self) -> list[frozenset[str]]:
        """Current partition of all tracked names (each co-variable once, sorted for stability)."""
        seen: dict[frozenset[str], None] = {}
        for g in self._group.values():
            seen.setdefault(g, None)
        return sorted(seen, key=lambda g: sorted(g))

    def covariable_of(self, name: str) -> frozenset[str]:
        """The co-variable containing `name` (``frozenset({name})`` for an untracked name)."""
        g = self._group.get(name)
        return g if g is not None else frozenset((name,))

    def tracked(self) -> set[str]:
        return set(self._prints)

    def fingerprint(self, name: str) -> bytes | None:
        p = self._prints.get(name)
        return p.fp if p is not None else None

    def plain(self, name: str, value: Any) -> bool:
        """`value`, bound to `name`, was plain data (containers, atoms, arrays, frames: no
        instance, function, class or module) when last walked, and no cell has touched it
        since without a walk. The read analysis then need not look inside it for code."""
        p = self._prints.get(name)
        return (p is not None and p.plain and p.root_id == id(value)
                and name not in self._unwalked)

    def unprovable(self, names: Collection[str]) -> set[str]:
        """Names among `names` whose last walk cannot show a change (`drifted` skips them):
        untracked, deferred, partial or opaque (a generator's position, a hash's state)."""
        out = set()
        for n in names:
            p = self._prints.get(n)
            if p is None or p.partial or p.opaque or n in self._stale:
                out.add(n)
        return out

    def is_opaque(self, name: str) -> bool:
        p = self._prints.get(name)
        return bool(p and p.opaque)

    def overhead_bytes(self) -> int:
        """Approximate memory held by the tracker (for the <10 % overhead budget)."""
        return self._index.nbytes() + 200 * len(self._prints)

    # -- updates -----------------------------------------------------------------------------
    def stale(self) -> set[str]:
        """Names touched since their last walk (deferred): their partition may be out of date."""
        return set(self._stale)

    def refresh(self, ns: Mapping[str, Any]) -> TrackerUpdate:
        """Re-walk every deferred co-variable now (before a checkpoint relies on the partition)."""
        names = [n for n in self._stale if n in ns]
        self._stale.clear()
        self._unwalked.clear()
        if not names:
            return TrackerUpdate()
        return self.update(ns, names, (), defer=False)

    #: what `drifted` may walk per call: objects and atoms, and bytes of buffers
    drift_work = 1_000_000
    drift_bytes = 512 << 20

    def drifted(self, ns: Mapping[str, Any], names: Collection[str]) -> set[str]:
        """Names among `names` whose value changed since the tracker last walked it, although
        no recorded cell touched it since (that walk was the last touch's): rebound, or a
        different fingerprint; whole co-variables, of names all in `names`. Changes made
        outside recorded cells: a widget's or a comm's callback, a thread, an asyncio task,
        a silent execution. The history cannot recreate
        such a value (re-running its cells gives the value before the change), and a digest or
        blob kept from an earlier checkpoint no longer describes it.

        Only whole co-variables whose last walk was complete can tell (a partial or opaque
        fingerprint proves nothing), smallest first within `drift_work` and `drift_bytes`;
        the rest are not reported. Co-variables are disjoint, and each name is walked after
        the names its last walk linked to, as its update walked it, so an unchanged value
        gives the same fingerprint. The tracker's state is left as it is."""
        groups: dict[frozenset[str], int] = {}
        out: set[str] = set()
        wanted = set(names)
        for n in wanted:
            g = self._group.get(n)
            if g is None or g in groups or not g <= wanted or g & self._stale:
                continue
            prints = [self._prints.get(m) for m in g]
            if any(p is None or p.partial or p.opaque for p in prints):
                continue
            if any(m not in ns for m in g):
                continue
            if any(id(ns[m]) != p.root_id for m, p in zip(g, prints, strict=True)):
                out |= g  # rebound without a recorded cell
                continue
            groups[g] = sum(p.work for p in prints)
        # a name's fingerprint depends on the names walked before it in its update that it
        # reached objects of (its `links`: it did not walk those objects again), so it is
        # re-made by walking them first, as its update did (they come first in sorted order)
        work = nbytes = 0
        todo: list[list[str]] = []
        for g in sorted(groups, key=lambda g: (groups[g], sorted(g))):
            orders = [self._link_closure(n) for n in sorted(g)]
            cost = sum(self._prints[m].work for o in orders for m in o)
            size = sum(self._prints[m].nbytes for o in orders for m in o)
            if work + cost > self.drift_work or nbytes + size > self.drift_bytes:
                break
            work += cost
            nbytes += size
            todo += orders
        try:
            for order in todo:
                n = order[-1]
                p = self._walk_names(ns, sorted(order), {}, None)[n]
                old = self._prints[n]
                if p.opaque or p.fp != old.fp or p.links != old.links:
                    out |= self._group[n]
        except Exception as exc:  # noqa: BLE001 - a check: never fatal
            log.warning("changes: drift check failed (%r)", exc)
        return out

    def holders(self, ids: Collection[int]) -> set[str]:
        """Names whose last walk reached an object with one of these ids (an index lookup)."""
        if not ids:
            return set()
        q = np.array(sorted(set(ids)), dtype=np.int64)
        _, toks = self._index.lookup(q)
        return {n for t in set(toks.tolist()) if (n := self._name_of.get(t)) is not None}

    def _bound_print(self, ns: Mapping[str, Any], name: str) -> _Print | None:
        """`name`'s fingerprint if the name is still bound to the object it was taken of."""
        p = self._prints.get(name)
        if p is None or name not in ns or id(ns[name]) != p.root_id:
            return None
        return p

    def _link_closure(self, name: str) -> list[str]:
        """`name` last, after the names its fingerprint links to, and theirs."""
        return sorted(m for m in _linked(self._prints, name) if m in self._prints) + [name]

    def incomplete(self, limit: int) -> list[str]:
        """Names whose fingerprint left content unhashed, cheap to walk (within `defer_work`)
        and at most `limit` bytes to hash in full, smallest first: what `complete` can finish
        between cells. A later cell's walk can then tell that it did not change that content
        (a partial fingerprint cannot: any touch counts as a mutation)."""
        out = []
        for n in self._stale:
            p = self._prints.get(n)
            if p is None or not p.partial or not 0 < p.nbytes <= limit:
                continue
            if self.defer_work > 0 and p.work > self.defer_work:
                continue
            out.append((p.nbytes, n))
        return [n for _, n in sorted(out)]

    def complete(self, ns: Mapping[str, Any], names: Collection[str]) -> None:
        """Walk the co-variables of `names` in full now, between cells, recording nothing.

        Every touch since their last walk was already reported as a mutation (a partial or
        deferred fingerprint proves nothing), so the history lacks nothing; what changes is that
        the next cell that touches them is compared against a full fingerprint. A name rebound
        since its walk (by a silent execution: no cell ran) is left for the next cell to see.
        """
        todo = [n for n in names if self._bound_print(ns, n) is not None]
        if todo:
            self.update(ns, todo, (), defer=False)

    def reset(self, ns: Mapping[str, Any], names: Collection[str],
              known: Mapping[frozenset[str], int] | None = None) -> None:
        """Forget everything and rebuild fingerprints and partition for `names` from scratch.

        `known`: co-variables whose partition is already established (a restore verified them
        against the checkpoint), with what walking them costs. Those over `defer_work` are not
        walked now: they start as deferred co-variables do (stale, any touch a mutation, walked
        by the next `refresh`), so a restore does not pay a walk of a million objects that
        its verification has just done and the next checkpoint will do again.
        """
        self._known = {n for n in names if n in ns}
        self._stale.clear()
        self._unwalked.clear()
        self._rebuild(ns, known)

    def _seed(self, ns: Mapping[str, Any], known: Mapping[frozenset[str], int]) -> set[str]:
        seeded: set[str] = set()
        for names, work in known.items():
            g = frozenset(n for n in names if n in self._known and n in ns)
            if not g or work <= self.defer_work or self.defer_work <= 0 or g & seeded:
                continue
            for n in sorted(g):
                tok = self._index.new_token()
                self._token[n] = tok
                self._name_of[tok] = n
                self._prints[n] = _Print(id(ns[n]), _fresh_token(), [], False,
                                         work // len(g) + 1, partial=True)
                self._group[n] = g
            seeded |= g
        self._heavy |= seeded
        self._stale |= seeded
        self._unwalked |= seeded
        return seeded

    def _rebuild(self, ns: Mapping[str, Any],
                 known: Mapping[frozenset[str], int] | None = None) -> bool:
        self._prints.clear()
        self._heavy.clear()
        self._token.clear()
        self._name_of.clear()
        self._group.clear()
        self._index = _IdIndex()
        try:
            seeded = self._seed(ns, known) if known else set()
            self._update(ns, sorted(n for n in self._known if n in ns and n not in seeded), (),
                         defer=False)
        except Exception as exc:
            log.warning("changes: rebuild failed (%r); will retry at the next update", exc)
            self._dirty = True
            return False
        self._dirty = False
        return True

    def update(
        self,
        ns: Mapping[str, Any],
        touched: Collection[str],
        removed: Collection[str],
        *,
        defer: bool = True,
        hash_budget: int | None = None,
    ) -> TrackerUpdate:
        """Re-fingerprint the co-variables that contain a touched name; forget removed names.

        With `defer`, an expensive co-variable (see `defer_work`) that was only touched, not
        rebound, is reported as mutated without a walk, and content beyond the hash budget is
        left unhashed: `hash_budget` bytes if more than `Tracker.hash_budget` (the monitor
        grants a long cell more). Never raises: after an internal error every touched name is
        reported as modified and the tracker rebuilds itself from scratch at the next update.
        """
        if not self._foreign and _foreign_loaded():
            self._foreign = True
            if not self._dirty:
                self._index_spans(ns)
        if not self._dirty:
            try:
                upd = self._update(ns, touched, removed, defer=defer, hash_budget=hash_budget)
                if upd.deferred:
                    self._link_deferred(ns, touched, upd)
                self._known -= upd.removed
                self._known |= upd.rebound
                return upd
            except Exception as exc:
                log.warning("changes: update failed (%r); touched names count as modified", exc)
        # conservative answer, then a full rebuild (state may be half-updated)
        upd = TrackerUpdate()
        upd.removed = {n for n in removed if n not in ns}
        upd.removed |= {n for n in touched if n not in ns and n in self._known}
        for n in touched:
            if n in ns:
                (upd.mutated if n in self._known else upd.rebound).add(n)
        self._known = (self._known | upd.rebound) - upd.removed
        self._known = {n for n in self._known if n in ns}
        self._rebuild(ns)
        return upd

    def _index_spans(self, ns: Mapping[str, Any]) -> None:
        """torch or pyarrow has just been loaded: index the memory spans of the names walked
        before (their walks recorded none, see `_Walker.foreign`), so that a tensor or an arrow
        array made over an array's memory (``torch.from_numpy(a[2:])``) joins that array's
        co-variable. A walk without hashing (budget 0), once per session (names the update then
        walks again keep these spans if their walk finds them unchanged). Nothing can have
        shared memory with tensors or arrow data before, so the partition stays as it is."""
        w = _Walker(ns, portable=False, max_nodes=self.max_nodes, budget=0)
        for n in sorted(self._token):
            if n not in ns:
                continue
            w.next_root()
            try:
                w.walk(ns[n])
            except Exception:  # noqa: BLE001 - over the node budget, hostile: no spans then
                continue
            if not w.spans:
                continue
            spans = np.array(sorted(w.spans), dtype=np.int64)
            tok = self._token[n]
            self._index.add_spans(spans[:, 0].copy(), spans[:, 1].copy(),
                                  np.full(len(spans), tok, dtype=np.int32))
            self._index.entries_of[tok] = self._index.entries_of.get(tok, 0) + len(spans)

    def _link_deferred(self, ns: Mapping[str, Any], touched: Collection[str],
                       upd: TrackerUpdate) -> None:
        """A co-variable touched but not walked may have been linked by the cell to anything
        else the cell touched (`big.attrs["r"] = r`, `rows.append(h)`), which no walk saw. So
        it is merged with every co-variable the cell touched: later mutations through those
        names then count as its mutations too. Over-joined until `refresh` walks the stale
        names and splits what is not really linked. Numeric arrays cannot hold references:
        a co-variable made of them only is left alone."""
        groups: set[frozenset[str]] = set()
        linkable = False
        for n in upd.deferred:
            g = self._group.get(n)
            if g is None or g in groups:
                continue
            groups.add(g)
            if not all(_link_free(ns.get(m)) for m in g):
                linkable = True
        if not linkable:
            return
        for n in touched:
            g = self._group.get(n)
            if g is not None and n in ns and not _link_free(ns[n]):
                groups.add(g)
        if len(groups) < 2:
            return
        merged = frozenset().union(*groups)
        for m in merged:
            self._group[m] = merged

    def _deferrable(self, ns: Mapping[str, Any], group: frozenset[str],
                    limit: int | None) -> bool:
        """Every name of the group is still bound to the same object, and the group was costly
        to walk, or its fingerprint is partial, it holds numeric arrays only (they cannot have
        been linked to anything) and hashing them in full takes more than this update's hash
        budget `limit` (a walk within it could not tell more). Other partial co-variables are
        walked again: their structure (which is cheap: the bytes stay unhashed) is what finds
        links the cell made."""
        work = 0
        nbytes = 0
        partial = False
        for m in group:
            p = self._bound_print(ns, m)
            if p is None:
                return False
            work += p.work
            nbytes += p.nbytes
            partial = partial or p.partial
        if self.defer_work > 0 and work > self.defer_work:
            return True
        return (partial and all(_link_free(ns[m]) for m in group)
                and limit is not None and nbytes > limit)

    #: objects a probe walk visits before a new name may join an expensive co-variable whose
    #: index may be out of date (see _join_expensive)
    join_probe = 2_000

    def _join_expensive(
        self, ns: Mapping[str, Any], affected: set[str], upd: TrackerUpdate,
        suspect: set[str], limit: int | None,
    ) -> None:
        """New or rebound names bound to an object that an expensive co-variable already
        reaches join it without a walk (`alice = bank.accounts["user0"]` would walk the whole
        bank through `alice.bank`). Everything `alice` reaches, the co-variable reached at its
        last walk, so the partition is right until the co-variable changes; the name is left
        partial and stale, so touches count as mutations and `refresh` walks it in full.

        The index of a co-variable touched since its last walk may hold ids of objects freed
        since, which a new object can reuse: joined unwalked, its links to other co-variables
        would be missed until the checkpoint. So if a name of the co-variable is `suspect`
        (touched without a walk, in this cell or before), the value is probed first: its first
        `join_probe` objects must all be the co-variable's, and a value smaller than that is
        simply walked."""
        fresh: dict[int, list[str]] = {}
        for n in affected:
            p = self._prints.get(n)
            v = ns[n]
            if type(v) in MARSHAL_ATOMS:
                continue
            if p is not None and (p.root_id == id(v) or self._group.get(n, frozenset((n,))) != {n}):
                continue  # touched, not rebound; or leaving a co-variable that must be re-walked
            fresh.setdefault(id(v), []).append(n)
        if not fresh:
            return
        q = np.array(sorted(fresh), dtype=np.int64)
        qpos, toks = self._index.lookup(q)
        owners: dict[int, set[str]] = {}
        for pos, tok in zip(qpos.tolist(), toks.tolist(), strict=True):
            other = self._name_of.get(tok)
            if other is not None:
                owners.setdefault(int(q[pos]), set()).add(other)
        for i, others in owners.items():
            groups = {self._group.get(o, frozenset((o,))) for o in others}
            if len(groups) != 1:
                continue
            (g,) = groups
            names = fresh[i]
            if g & affected or g & set(names) or not self._deferrable(ns, g, limit):
                continue
            if g & suspect and not self._probe(ns[names[0]], ns, g):
                continue
            for n in names:
                self._drop_token(n)
                tok = self._index.new_token()
                self._token[n] = tok
                self._name_of[tok] = n
                self._prints[n] = _Print(i, _fresh_token(), [], False, 0, partial=True)
                self._heavy.add(n)
                self._stale.add(n)
                self._unwalked.add(n)
                affected.discard(n)
                upd.rebound.add(n)
                upd.joined.add(n)
            g = g | frozenset(names)
            for m in g:
                self._group[m] = g

    def _probe(self, value: Any, ns: Mapping[str, Any], group: frozenset[str]) -> bool:
        """Whether the first `join_probe` objects `value` reaches all belong to `group`'s last
        walk (and there are more: a smaller value is cheaper walked than guessed)."""
        w = _Walker(ns, portable=False, max_nodes=self.join_probe, budget=0)
        try:
            w.walk(value)
        except _Budget:
            pass
        except Exception:  # noqa: BLE001 - a hostile object: walk it the normal way
            return False
        else:
            return False  # walked to the end within the probe: not worth a guess
        if not w.ids:
            return False
        q = np.array(sorted(set(w.ids)), dtype=np.int64)
        qpos, toks = self._index.lookup(q)
        if len(set(qpos.tolist())) != len(q):
            return False  # an object the group's last walk did not see
        owners = {self._name_of.get(t) for t in set(toks.tolist())}
        return owners <= group

    def _walk_names(
        self, ns: Mapping[str, Any], names: list[str],
        cache: dict[int, tuple[np.ndarray, bytes]], budget: list[int] | None,
        unhashed: Collection[str] = (),
    ) -> dict[str, _Print]:
        """Fingerprint `names` (sorted) with one walker: an object graph several names reach is
        walked once, by the first of them; a later name that reaches into it records a link
        instead. So a name's fingerprint covers what it reaches first, the co-variable's
        names together cover all of it, and as every name of a touched co-variable is walked
        in each update (in the same order), a change anywhere in it still changes one of
        them. What a name reaches through a link counts for its `plain` and `opaque` too.
        Names in `unhashed` are walked without hashing (see `_over_limit`)."""
        shared = _Walker(ns, portable=False, max_nodes=self.max_nodes, array_cache=cache)
        starts: list[int] = []  # memo size when each name's walk began
        prints: dict[str, _Print] = {}
        for n in names:
            start = len(shared.memo)
            shared.crossed = []
            p = _fingerprint(ns[n], ns, self.max_nodes, cache,
                             [0] if n in unhashed else budget, shared)
            if shared.crossed:
                links = {names[bisect.bisect_right(starts, i) - 1] for i in set(shared.crossed)}
                links.discard(n)
                if links:
                    p.links = tuple(sorted(links))
                    others = [prints[m] for m in p.links]
                    p.plain = p.plain and all(o.plain for o in others)
                    if any(o.opaque for o in others) and not p.opaque:
                        p.opaque, p.fp, p.partial = True, _fresh_token(), False
            starts.append(start)
            prints[n] = p
        return prints

    def _over_limit(self, ns: Mapping[str, Any], names: list[str],
                    limit: int | None) -> set[str]:
        """Names of co-variables that this update cannot hash in full: their last walk wanted
        more bytes hashed than the update's whole budget `limit`, by names still bound to the
        same objects. Their new fingerprints are partial however much of the budget they
        take, and a partial fingerprint counts every touch as a mutation; so hashing part of
        them tells nothing, and the budget is left to the co-variables it can finish (a 40 MB
        frame read by a short cell cost 1 ms of hashing for nothing). Content that grew is
        no less over the limit; content that shrank changed, which is what a touch of a
        partial fingerprint reports."""
        if limit is None:
            return set()
        out: set[str] = set()
        done: set[str] = set()
        prints, groups = self._prints, self._group
        for n in names:
            if n in done or (n not in prints and n not in groups):
                continue  # (a new name: nothing known to want)
            group = groups.get(n) or frozenset((n,))
            done |= group
            want = 0
            for m in group:
                p = self._bound_print(ns, m)
                if p is not None:
                    want += p.nbytes
            if want > limit:
                out |= group
        return out

    def _unchanged_groups(self, walked: list[str], old: Mapping[str, _Print | None],
                          new: Mapping[str, _Print], changed: set[str]) -> set[str]:
        """Names of the co-variables every name of which was walked again to the print it had,
        reaching the same names: their entries in the id index, their tokens and their
        co-variable stay as they are (a print holds the identities it reached). A cell that
        only reads an array or a frame added a chunk to the index, and with it a
        lookup of its ids against every chunk, for nothing."""
        kept: set[str] = set()
        done: set[str] = set()
        walked_set = set(walked)
        for n in walked:
            if n in done:
                continue
            group = self._group.get(n)
            if group is None:
                continue
            done |= group
            if group <= walked_set and not group & changed and all(
                    _same_print(old[m], new[m]) and m in self._token for m in group):
                kept |= group
        return kept

    def _join_indexed(self, uf: _UF, names: list[str], labels: np.ndarray,
                      toks: np.ndarray) -> None:
        """Union ``names[labels[i]]`` with the whole co-variable of the indexed name holding
        token ``toks[i]`` (an object id or a memory span both reach)."""
        if not len(labels):
            return
        pairs = labels.astype(np.int64) * (self._index.next_token + 1) + toks
        for code in sorted(set(pairs.tolist())):
            lab, tok = divmod(code, self._index.next_token + 1)
            other = self._name_of.get(tok)
            if other is None:
                continue
            grp = self._group.get(other, frozenset((other,)))
            rep = next(iter(grp))
            for m in grp:
                uf.union(rep, m)
            uf.union(names[lab], rep)

    def _drop_token(self, name: str) -> None:
        """`name` no longer owns its entries in the id index."""
        tok = self._token.pop(name, None)
        if tok is not None:
            self._index.kill(tok)
            self._name_of.pop(tok, None)

    def _forget(self, name: str) -> None:
        self._stale.discard(name)
        self._unwalked.discard(name)
        self._prints.pop(name, None)
        self._heavy.discard(name)
        self._drop_token(name)
        g = self._group.pop(name, None)
        if g is not None and len(g) > 1:
            rest = g - {name}
            for m in rest:
                self._group[m] = rest

    def _only_reached_first(self, ns: Mapping[str, Any], name: str, old: _Print, new: _Print,
                            budget: list[int] | None) -> bool:
        """Whether `name`'s fingerprint changed only because a name walked before it in this
        update now reaches its objects first (`found = [m]`, `data = [df]`: a new name sorted
        before it), so its walk records a link where it walked them before.

        Then it changed in nothing, but it counted as mutated by the cell that made the
        holder, and its history said that cell changed it: it could no longer be recreated
        by the cells that had made it. Walked again after the names its last walk linked to
        only, as that walk was, it shows whether its own objects changed.
        """
        if (old.partial or new.partial or old.opaque or new.opaque
                or set(new.links) <= set(old.links)):
            return False
        order = self._link_closure(name)
        if any(m not in ns for m in order):
            return False
        try:
            again = self._walk_names(ns, sorted(order), {}, budget)[name]
        except Exception:  # noqa: BLE001 - a check: the conservative answer stands
            return False
        return _same_print(old, again)

    #: objects and atoms the walks of names alone (`_Print.solo`) may visit in one update:
    #: what tells a name that only reaches a changed name's objects, or lost or gained links,
    #: from one that changed. Beyond it such a name counts as changed (the safe answer)
    solo_work = 50_000
    #: the part of it that keeps a walk alone, after a cell, for a name whose links were made
    #: or changed with its value (`b = a`, `rows.append(row)` by a name walked after `row`),
    #: only for later: a value that reaches more than this many objects and atoms through its
    #: links gets none (a later change of its links, or of a name they lead to, then counts
    #: as a change of it). Updates off the cells' path (reset, refresh) keep up to `solo_work`
    solo_keep_work = 5_000

    def _alone(self, ns: Mapping[str, Any], new: Mapping[str, _Print], name: str,
               cache: dict[int, tuple[np.ndarray, bytes]], budget: list[int] | None,
               left: list[int]) -> bytes | None:
        """The fingerprint of `name`'s value walked alone, now (None: partial, opaque, or
        more to walk than `left` grants): its `fp` when it links to no name, else a walk of
        its own, kept as `p.solo`. Arrays hashed by this update's walks are not hashed again."""
        p = new[name]
        if p.partial:
            return None
        if not p.links:
            return None if p.opaque else p.fp
        if p.solo is not None:
            return p.solo
        if self._reach_work(new, name) > left[0]:
            return None
        q = _fingerprint(ns[name], ns, left[0], cache, budget)
        left[0] -= max(q.work, 1)
        if q.opaque or q.partial:
            return None
        p.solo = q.fp
        return q.fp

    def _changed(self, ns: Mapping[str, Any], names: list[str],
                 old: Mapping[str, _Print | None], new: Mapping[str, _Print],
                 rebound: set[str], cache: dict[int, tuple[np.ndarray, bytes]],
                 budget: list[int] | None, keep: int) -> set[str]:
        """The names (sorted, not rebound) of this update whose value may have changed.

        A name's fingerprint covers what it reaches first in the update; what a name walked
        before it already walked is a link. So its fingerprint changes when a holder sorted
        before it is made or deleted (`a_holder = [m]`, `del a_holder`), and stays when its
        objects change through the holder it links to (`a_holder[0].append(1)`). Every name
        of a co-variable with a change in it was reported mutated: `a_holder.append(5)`
        mutated m, and the cell that did it, if it could not be re-run, left m unable to be
        recomputed by its own cells. So, for each name:

        - fingerprint and links as before, and so for every name its links lead to: not
          changed (the walk was the same); links as before and so for the names they lead
          to, its fingerprint not: changed (no walk alone);
        - else its value walked alone (`_alone`) against the one before: its fingerprint
          when it had no links, else the walk alone kept with it (`_Print.solo`, taken when
          its links were made, carried while they stay as they were);
        - else, gaining a link only, the walk after its old links (`_only_reached_first`).

        Otherwise it changed. A name with links and no walk alone kept gets one here when
        `keep` allows (`solo_keep_work` after a cell; `solo_work` in a walk off the cells'
        path: a reset at a restore, a refresh), so that a later change of its links, or of
        the names they lead to, can be told apart.
        """
        dirty: set[str] = set()
        for n in names:
            p, o = new[n], old[n]
            if n in rebound or o is None:
                continue
            if (o.fp != p.fp or o.links != p.links or p.partial or o.partial
                    or p.opaque or o.opaque):
                dirty.add(n)
        left = [self.solo_work]
        changed: set[str] = set()
        bad = dirty | rebound
        for n in names:
            p, o = new[n], old[n]
            if n in rebound or o is None:
                continue
            reaches_bad = bool(bad) and not _linked(new, n).isdisjoint(bad)
            if bad and (n in dirty or reaches_bad):
                if (n in dirty and o.links == p.links and not (p.partial or p.opaque)
                        and not reaches_bad):
                    # walked after the same names, which walked what they did before: its
                    # own walk differs, so its value does (no walk alone can say otherwise)
                    changed.add(n)
                    continue
                # (a walk alone is kept only when it was complete and not opaque: a name
                # that reaches a lock only through its links has one)
                before = o.solo if o.links else None if o.partial or o.opaque else o.fp
                if before is not None and self._alone(ns, new, n, cache, budget, left) == before:
                    continue
                if before is None and self._gained_only(ns, n, o, p, rebound, changed, budget):
                    continue
                changed.add(n)
            elif p.links:
                p.solo = o.solo  # (the same walk as before: links and what they lead to)
        left[0] = min(left[0], keep)
        for n in names:
            p = new[n]
            if p.links and p.solo is None and (n in rebound or n in changed):
                self._alone(ns, new, n, cache, budget, left)
        return changed

    @staticmethod
    def _reach_work(new: Mapping[str, _Print], name: str) -> int:
        """What walking `name` alone may cost: its walk's work and that of every name its
        links lead to (through theirs)."""
        return sum(new[m].work for m in (name, *_linked(new, name)) if m in new)

    def _gained_only(self, ns: Mapping[str, Any], name: str, old: _Print, new: _Print,
                     rebound: set[str], changed: set[str], budget: list[int] | None) -> bool:
        """`_only_reached_first`, when what `name`'s old links lead to was walked again and
        did not change (they sort before it: decided already)."""
        if old.fp == new.fp and not new.partial:
            return False
        order = self._link_closure(name)[:-1]
        if any(m in rebound or m in changed for m in order):
            return False
        return self._only_reached_first(ns, name, old, new, budget)

    def _update(
        self,
        ns: Mapping[str, Any],
        touched: Collection[str],
        removed: Collection[str],
        *,
        defer: bool = True,
        hash_budget: int | None = None,
    ) -> TrackerUpdate:
        limit = self.hash_budget if defer else None
        if limit is not None and hash_budget is not None:
            limit = max(limit, hash_budget)
        upd = TrackerUpdate()
        affected: set[str] = set()
        # removals (a name listed as removed but present again counts as touched)
        gone = {n for n in removed if n not in ns}
        gone |= {n for n in touched if n not in ns and n in self._prints}
        split: set[str] = set()  # co-variables that lost a name: they may fall apart
        for n in gone:
            if n in self._prints:
                upd.removed.add(n)
                split |= self._group.get(n, frozenset())
            else:
                upd.removed.add(n)
        affected |= split
        for n in gone:
            self._forget(n)
        group_of = self._group
        for n in touched:
            if n in ns:
                g = group_of.get(n)
                if g is None:
                    affected.add(n)
                else:
                    affected |= g
        for n in removed:
            if n in ns:
                affected |= self._group.get(n, frozenset((n,)))
        affected -= gone
        affected = {n for n in affected if n in ns}
        if defer:
            suspect = set(self._unwalked)  # touched without a walk before this cell
            # (a group with a name never walked is not deferrable: new names are skipped)
            prints = self._prints
            for g in {self._group.get(n, frozenset((n,))) for n in affected if n in prints}:
                if self._deferrable(ns, g, limit):
                    affected -= g
                    upd.deferred |= g
                    upd.mutated |= g
                    self._stale |= g
                    self._unwalked |= g
            if affected and self._heavy and self._index.chunks:
                self._join_expensive(ns, affected, upd, suspect | upd.deferred, limit)
        self._stale -= affected  # walked now
        self._unwalked -= affected
        if not affected:
            return upd

        names = sorted(affected)
        old_prints = {n: self._prints.get(n) for n in names}
        unhashed = self._over_limit(ns, names, limit)

        cache: dict[int, tuple[np.ndarray, bytes]] = {}
        budget = [limit] if limit is not None else None
        # names bound to atoms need no walk and take no part in the partition below (no ids,
        # no links): in a cell of a hundred `v = 17` they were most of its cost
        atoms: dict[str, _Print] = {}
        walked: list[str] = []
        for n in names:
            p = _atom_print(ns[n])
            if p is None:
                walked.append(n)
            else:
                atoms[n] = p
        new_prints = self._walk_names(ns, walked, cache, budget, unhashed) if walked else {}
        new_prints.update(atoms)

        for n in names:
            p, old = new_prints[n], old_prints[n]
            if p.partial:
                self._stale.add(n)
            if old is None or old.root_id != p.root_id:
                upd.rebound.add(n)
        # names whose value may have changed (a partial fingerprint cannot show that nothing
        # did); an opaque one that is not among them reached the opaque object only through
        # its links, and its walk alone found it unchanged
        candidates = self._changed(ns, names, old_prints, new_prints, upd.rebound, cache, budget,
                                   self.solo_keep_work if defer else self.solo_work)
        cache.clear()
        upd.opaque = {n for n in names if new_prints[n].opaque
                      and (n in candidates or n in upd.rebound)}
        kept = self._unchanged_groups(walked, old_prints, new_prints,
                                      upd.rebound | candidates | split)
        for n in names:
            if n not in kept:
                self._drop_token(n)
                self._group.pop(n, None)
        for n, p in atoms.items():
            self._group[n] = frozenset((n,))
            if n in candidates:
                upd.mutated.add(n)
            self._prints[n] = p
            self._heavy.discard(n)
        names = [n for n in walked if n not in kept]
        if not names:
            return upd

        # --- partition -------------------------------------------------------------------
        uf = _UF()
        for n in names:
            uf.find(n)
            for m in new_prints[n].links:
                uf.union(n, m)
        lens = [len(new_prints[n].ids) for n in names]
        all_ids = np.fromiter(
            _chain(new_prints[n].ids for n in names), dtype=np.int64, count=sum(lens)
        )
        labels = np.repeat(np.arange(len(names), dtype=np.int64), lens)
        s_ids, s_lab = all_ids, labels
        if len(all_ids):
            order = np.argsort(all_ids, kind="stable")
            s_ids, s_lab = all_ids[order], labels[order]
            dup = np.nonzero(s_ids[1:] == s_ids[:-1])[0]
            if len(dup):
                a = s_lab[dup]
                b = s_lab[dup + 1]
                # (not np.unique: its first call imports numpy.ma, 0.1 s inside a user's cell)
                for code in sorted(set((a * len(names) + b).tolist())):
                    uf.union(names[code // len(names)], names[code % len(names)])
            uniq_mask = np.ones(len(s_ids), dtype=bool)
            uniq_mask[1:] = s_ids[1:] != s_ids[:-1]
            q = s_ids[uniq_mask]
            q_lab = s_lab[uniq_mask]
            qpos, toks = self._index.lookup(q)
            self._join_indexed(uf, names, q_lab[qpos], toks)
        # shared memory: names whose buffers' spans overlap (a byte in common) are one
        # co-variable, wherever in an allocation the sharing starts
        span_lens = [len(new_prints[n].spans) for n in names]
        sp_lo = sp_hi = sp_lab = np.empty(0, dtype=np.int64)
        if sum(span_lens):
            flat = np.fromiter(_chain(_chain(new_prints[n].spans for n in names)),
                               dtype=np.int64, count=2 * sum(span_lens))
            order = np.argsort(flat[0::2], kind="stable")
            sp_lo, sp_hi = flat[0::2][order], flat[1::2][order]
            sp_lab = np.repeat(np.arange(len(names), dtype=np.int64), span_lens)[order]
            # sorted by low: a span overlaps an earlier one iff it starts below their highest
            # high, and then it overlaps the (last) span reaching that high
            reach = np.maximum.accumulate(sp_hi)
            at = np.maximum.accumulate(np.where(sp_hi == reach, np.arange(len(sp_hi)), 0))
            ov = np.nonzero(sp_lo[1:] < reach[:-1])[0] + 1
            if len(ov):
                a, b = sp_lab[ov], sp_lab[at[ov - 1]]
                for code in sorted(set((a * len(names) + b).tolist())):
                    uf.union(names[code // len(names)], names[code % len(names)])
            qpos, toks = self._index.lookup_spans(sp_lo, sp_hi)
            self._join_indexed(uf, names, sp_lab[qpos], toks)
        # collect components
        comps: dict[Any, set[str]] = {}
        for n in list(uf.parent.keys() | set(names)):
            comps.setdefault(uf.find(n), set()).add(n)
        for members in comps.values():
            # a merged-in untouched (or kept) group brings all of its names
            full: set[str] = set()
            for m in members:
                whole = m not in affected or m in kept
                full |= self._group.get(m, frozenset((m,))) if whole else {m}
            g = frozenset(full)
            for m in g:
                self._group[m] = g
            if candidates & g or (upd.opaque & g - upd.rebound):
                # each name walked now tells for itself (`_changed`): a holder appended to
                # changed the holder, not what it holds; names merged in unwalked may have
                # been changed through the names that reach them
                upd.mutated |= {m for m in g - upd.rebound if m in candidates or m not in new_prints}
        upd.mutated -= upd.rebound

        # --- store -----------------------------------------------------------------------
        counts: dict[int, int] = {}
        toks = np.empty(len(names), dtype=np.int32)
        for k, n in enumerate(names):
            tok = self._index.new_token()
            toks[k] = tok
            self._token[n] = tok
            self._name_of[tok] = n
            p = new_prints[n]
            counts[tok] = len(p.ids) + len(p.spans)
            p.ids = []  # the ids now live in the index only (12 bytes each)
            p.spans = []
            self._prints[n] = p
            if p.partial or p.work > self.defer_work > 0:
                self._heavy.add(n)
            else:
                self._heavy.discard(n)
        self._index.add_sorted(s_ids, toks[s_lab], counts)
        self._index.add_spans(sp_lo, sp_hi, toks[sp_lab])
        if self._index.next_token > 4 * len(self._prints) + self.renumber_slack:
            mapping = self._index.renumber()
            self._token = {n: mapping[t] for n, t in self._token.items()}
            self._name_of = {t: n for n, t in self._token.items()}
        return upd


# --------------------------------------------------------------------------------------------
# Portable digest
# --------------------------------------------------------------------------------------------


@dataclass
class DigestReport:
    """Portable digest of a co-variable plus what it could not check by value."""

    digest: str
    opaque: set[str]  # names holding objects checked by type only
    truncated: set[str]  # names whose graph exceeded the node budget (checked partially)
    work: int = 0  # objects visited and atoms hashed: what walking these values costs
    # identity relations the digest records: objects met again (shared between names or
    # parts, `v = vars(ns)`) and objects that are a module's global; and the objects with an
    # identity it met. A copy loaded from a pickle with fewer links, or with more objects (one
    # became two), has lost some (see `checkpointing.check_loaded_digest`)
    links: int = 0
    objects: int = 0


#: prefix of digests whose stream hashes lists of records in one run; ``x3:`` digests (agents
#: before it) walked every tuple and are still checked that way
DIGEST_PREFIX = "x3r:"
LEGACY_DIGEST_PREFIX = "x3:"


def digest_report(values: Mapping[str, Any], *, max_nodes: int = 20_000_000,
                  like: str | None = None, ids: dict[int, int] | None = None) -> DigestReport:
    """Portable digest of `values` (one co-variable) and of their alias structure.

    Process- and machine-independent: no ``id()``, no salted ``hash()``; sets are
    order-independent, dicts keep insertion order; names are walked in sorted order with one
    shared memo, so ``b = a`` and ``[a, a]`` vs ``[a, copy(a)]`` are distinguished.
    `like`: a recorded digest this one is to be compared with; it is computed the way that one
    was (a checkpoint written by an older agent). `ids` (`id_tokens`): every int that is a key
    of it is digested as the place of the object it is the id of, so that values holding ids
    (``{id(o): o for o in objs}``) made again in another process digest as they did here.
    """
    opaque: set[str] = set()
    truncated: set[str] = set()
    legacy = like is not None and like.startswith(LEGACY_DIGEST_PREFIX)
    w = _Walker(None, portable=True, max_nodes=max_nodes)
    w.records = not legacy and ids is None
    w.idmap = ids
    if not legacy:
        w.anchors = {i: ("modglobal", m[1], m[3]) for i, m in module_globals().items()}
    for name in sorted(values):
        w.out.append(("name", name))
        n_opaque = len(w.opaque_types)
        try:
            w.walk(values[name])
        except _Budget:
            truncated.add(name)
            w.out.append(("truncated",))
            w.max_nodes = w.nodes + max_nodes  # let the remaining names be checked too
        except Exception as exc:  # pragma: no cover - defensive
            log.warning("changes: digest of %r failed: %r", name, exc)
            truncated.add(name)
            w.out.append(("failed",))
        if len(w.opaque_types) > n_opaque:
            opaque.add(name)
        home = None if legacy else module_global_of(values[name], name)
        if home is not None:  # (the module's object: a restore must give back that binding)
            w.out.append(("modglobal", home[0], home[2]))
    try:
        w.resolve_arrays()
    except Exception as exc:  # pragma: no cover - defensive
        log.warning("changes: array digest failed: %r", exc)
        w.out.append(("arrays-failed",))
    prefix = LEGACY_DIGEST_PREFIX if legacy else DIGEST_PREFIX
    return DigestReport(prefix + w.digest().hex(), opaque, truncated, w.nodes + w.work, w.links,
                        len(w.memo))


def id_tokens(values: Mapping[str, Any], *, max_nodes: int = 2_000_000) -> dict[int, int]:
    """id -> place of every object with an identity reached from `values`, walked as the
    portable digest walks them (names in sorted order, one memo): the place, unlike the id, is
    the same in a process the values were restored into. For `digest_report(ids=)`. A walk
    beyond `max_nodes` maps what it reached."""
    w = _Walker(None, portable=True, max_nodes=max_nodes)
    try:
        for name in sorted(values):
            w.walk(values[name])
    except _Budget:
        pass
    except Exception as exc:  # pragma: no cover - defensive: what was reached is mapped
        log.debug("changes: id tokens: %r", exc)
    return dict(w.memo)


def value_digest(values: Mapping[str, Any]) -> str:
    """Portable digest of one co-variable's values and alias structure (see `digest_report`)."""
    return digest_report(values).digest


def opaque_names(values: Mapping[str, Any]) -> set[str]:
    """Names in `values` whose digest checks some object by type only (generators, locks...)."""
    return digest_report(values).opaque


# --------------------------------------------------------------------------------------------
# Size estimate
# --------------------------------------------------------------------------------------------


def reachable_size(obj: Any, *, max_nodes: int = 1_000_000) -> int:
    """Cheap estimate of the memory held by `obj` and everything it reaches.

    Buffers are counted by their real size (numpy ``nbytes`` of the memory-owning base, once;
    pandas ``memory_usage(deep=False)``; bytes/str lengths); containers and instances add their
    shallow size. Modules and library classes/functions are not counted. Never raises.
    """
    total = 0
    seen: set[int] = set()
    stack: list[Any] = [obj]
    nodes = 0
    getsizeof = sys.getsizeof
    while stack and nodes < max_nodes:
        o = stack.pop()
        nodes += 1
        tp = type(o)
        if tp in MARSHAL_ATOMS:
            total += getsizeof(o)
            continue
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        try:
            if tp is list or tp is tuple or tp is dict:
                total += getsizeof(o)
                for seq in (o, o.values()) if tp is dict else (o,):
                    if set(map(type, seq)) <= MARSHAL_ATOMS:
                        total += sum(map(getsizeof, seq))
                    else:
                        stack.extend(seq)
                continue
            kind = _classify(tp)
            if kind in (K_LIST, K_TUPLE, K_SET, K_FROZENSET, K_DEQUE):
                total += getsizeof(o)
                items = list(o) if kind != K_SET else list(set.__iter__(o))
                if set(map(type, items)) <= MARSHAL_ATOMS:
                    total += sum(map(getsizeof, items))
                else:
                    stack.extend(items)
            elif kind == K_DICT:
                total += getsizeof(o)
                stack.extend(dict.keys(o))
                stack.extend(dict.values(o))
            elif kind == K_NDARRAY:
                fb = _final_base(o)
                if id(fb) not in seen or fb is o:
                    seen.add(id(fb))
                    total += int(fb.nbytes) + 112
                if o.dtype.hasobject:
                    stack.extend(o.ravel().tolist())
            elif kind == K_DATAFRAME:
                total += int(o.memory_usage(index=True, deep=False).sum())
            elif kind in (K_SERIES, K_INDEX):
                total += int(o.memory_usage(deep=False))
            elif kind == K_EXTARRAY:
                total += int(o.nbytes)
            elif kind == K_TORCH:
                key = storage_key(o)  # (views of one storage: its bytes once)
                if key is None:
                    total += int(o.element_size() * o.nelement())
                elif key not in seen:
                    seen.add(key)
                    total += int(o.untyped_storage().nbytes())
            elif kind == K_ARROW:
                for b in _arrow_buffers(o):
                    if b.address not in seen:
                        seen.add(b.address)
                        total += int(b.size)
            elif kind == K_BUFFER:
                total += len(o) if tp is not memoryview else o.nbytes
            elif kind == K_INSTANCE:
                total += getsizeof(o)
                dict_desc, slots = _layout(tp)
                if dict_desc is not None:
                    d = dict_desc.__get__(o, tp)
                    if d is not None:
                        stack.append(d)
                for _, desc in slots:
                    try:
                        stack.append(desc.__get__(o, tp))
                    except AttributeError:
                        pass
                if isinstance(o, dict):
                    stack.extend(dict.values(o))
                elif isinstance(o, (list, tuple)):
                    stack.extend(list.__iter__(o) if isinstance(o, list) else tuple.__iter__(o))
            elif kind == K_FUNCTION:
                if _is_notebook_function(o, None):
                    total += getsizeof(o)
                    stack.extend(c.cell_contents for c in (o.__closure__ or ()) if _cell_full(c))
                    stack.extend(o.__defaults__ or ())
            elif kind in (K_CLASS, K_BYREF):
                pass
            elif kind == K_METHOD:
                stack.append(o.__self__)
            else:
                total += getsizeof(o)
        except Exception:
            total += 64
    return int(total)


def _cell_full(c: Any) -> bool:
    try:
        c.cell_contents  # noqa: B018
        return True
    except ValueError:
        return False
