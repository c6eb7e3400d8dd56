"""Serialize one co-variable (``{name: object}``) into one framed, zero-copy blob.

Runs in the kernel process, synchronously, at checkpoint time (``dumps``, the *trial*
serialization that also decides "ship or must recompute") and at restore time (``loads``).

Why it looks like this
----------------------
* **One pickle stream per co-variable.** Names that share objects (``b = a``, ``pair = [a, a]``,
  ``view = a[10:20]``) are one co-variable; pickling the whole ``{name: value}`` dict in *one*
  stream lets pickle's memo restore the aliasing exactly.
* **Protocol 5 with out-of-band buffers.** numpy (and therefore pandas) hand their data to
  ``buffer_callback`` as ``PickleBuffer``\\ s. They are never copied: ``dumps`` returns them as
  ``memoryview`` parts (the store writes them as-is), and ``loads`` hands memoryview *slices of the
  blob* back to numpy, so restoring a 1 GiB array costs no second GiB.
* **cloudpickle** pickles what the notebook defined in ``__main__`` (functions, lambdas, closures,
  classes, dataclasses, instances of notebook classes) *by value*; modules and importable code go
  by reference. Two things cloudpickle alone gets wrong for a notebook are fixed here:

  - a notebook function's ``__globals__`` must be *the kernel's user namespace* after a restore,
    not a private snapshot dict: otherwise ``def f(): return x`` keeps returning the old ``x``
    after the user rebinds it, and loading ``f`` would copy stale values of every global it
    reads. Functions whose ``__globals__`` is the dump-time namespace are therefore re-bound to
    the load-time namespace (``loads(..., namespace=)``; default ``__main__.__dict__``, which *is*
    the user namespace inside ipykernel), and the globals they read are **not** shipped with
    them: those are variables of their own, shipped or recomputed by the engine.
  - ``functools.lru_cache``/``functools.cache`` wrappers of notebook functions are pickled by
    value (``lru_cache(maxsize, typed)(wrapped)``). The C cache has no way to put entries back,
    so a non-empty one comes back empty; that is not the same function (its cached results
    answer for a state that may be gone: ``f(1)`` cached before ``base.append(2)``), so the
    stream says so (``Serialized.lossy``) and the checkpoint recomputes it when it can.

* **numpy views stay views.** ``view = a[10:20]`` pickled next to ``a`` is reduced to
  ``(rebuild-view, (a, byte offset, shape, strides, dtype))`` so after ``loads`` the view shares
  memory with the restored ``a`` (writes go through). The base is the end of the ``.base`` chain
  (the memory owner); it counts as present when it is in the stream itself or when an array in
  the stream covers all of its memory (``a = np.arange(60).reshape(6, 10)``: ``a`` is a view of a
  hidden 1-D owner, which is then shipped once, in ``a``'s place). A view whose base is not
  present is copied (only the viewed elements are shipped). Views of object arrays, of ndarray
  subclasses and of non-contiguous bases are copied too.
* **torch tensors keep their storage.** A dense CPU tensor is rebuilt over one numpy array
  holding its storage's bytes (out of band, like an array's), shared by every tensor over that
  storage and by the numpy arrays over it (``v = t[2:5]``, ``t.numpy()``, ``torch.from_numpy(a)``),
  with its exact dtype (bfloat16 too), strides and ``.grad``; torch's own pickle copied each
  tensor's storage in band and dropped ``.grad``. A restored storage is not resizable (it is
  the blob's memory). A tensor computed with autograd does not ship (its graph cannot).
  Memory shared at an offset (``torch.from_numpy(a[2:])``, ``pa.array(x[2:])``, a tensor over
  part of a bytearray) is rebuilt over the array holding all of it, at that offset
  (`_MemoryMap`).
* **Trial serialization never raises** for an unpicklable value (generator, lock, socket, open
  file, sqlite connection, ...): ``Serialized.error`` says why, and the engine plans to recompute
  that co-variable instead of shipping it.

"Pickles but cannot be loaded back" (a ``__reduce__`` whose reconstructor fails, a class pickled
by reference from a module the restoring kernel cannot import, ...) is only detected when
``dumps(..., verify=True)``: the stream is then unpickled once in the kernel (arrays zero-copy,
functions bound to a scratch namespace), unless it holds notebook classes or modules, whose
state a load in this process would write into the live ones. It is off by default because
unpickling in-band Python objects costs about as much time and memory again as pickling them,
which a checkpoint racing an eviction grace period may not have; the restore side verifies
digests regardless.

Blob format (version 1, little-endian)
--------------------------------------
::

    0   8s  magic  b"ESPKL\\x00\\r\\n"  (the CR/LF catches text-mode mangling, like PNG)
    8   H   format version (1)
    10  H   flags: bit 0 (`FLAG_ANCHORED`) -- the stream names objects of the loading process
            (persistent ids: ``sys.path``, the builtins) and may be followed by a second
            pickle, the notebook modules' globals it holds (see `_anchors_met`)
    12  I   number of out-of-band buffers N
    16  Q   pickle stream offset (64-aligned)
    24  Q   pickle stream length
    32  Q   total blob length (detects truncation before anything is unpickled)
    40  I   CRC-32 of bytes [0, 48 + 16 N) with this field zeroed
    44  4x  reserved
    48  N x (Q offset, Q length)   out-of-band buffer table; every offset 64-aligned
    ... zero padding to 64, pickle stream, zero padding, buffer 0, padding, buffer 1, ...

The 64-byte alignment is relative to the start of the blob; memory returned by the store is
allocator-aligned (at least 16 bytes), which covers every numpy itemsize.
"""

from __future__ import annotations

import array
import bisect
import builtins
import collections
import csv
import ctypes
import enum
import functools
import gc
import io
import itertools
import logging
import mmap
import os
import pickle
import random
import re
import stat
import struct
import subprocess
import sys
import threading
import types
import typing
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import xxhash

from kernel_agent import libobjects
from kernel_agent.buffers import BlobBuffer, array_interface_base
from kernel_agent.changes import (
    _BYTESIO_BUFFER,
    MARSHAL_ATOMS,
    _byte_span,
    _dense_cpu,
    _dict_descriptor,
    _final_base,
    _solid_base,
    derives_from,
    enum_member_state,
    exec_globals,
    local_class,
    local_source,
    may_self_overlap,
    memoryview_exporter,
    module_global_of,
    module_globals,
    module_namespace,
    module_state,
    registered_module,
    stale_keys,
    stale_local_modules,
    storage_bytes,
)
from kernel_agent.effects import notebook_code

__all__ = ["MAGIC", "FORMAT_VERSION", "Serialized", "dumps", "loads"]

MAGIC = b"ESPKL\x00\r\n"
FORMAT_VERSION = 1
FLAG_ANCHORED = 1  # header flags: persistent ids and a second pickle (see the format above)
ALIGN = 64

_HEADER = struct.Struct("<8sHHIQQQI4x")  # 48 bytes
_ENTRY = struct.Struct("<QQ")
_CRC_OFFSET = 40


@dataclass
class Serialized:
    """One co-variable as a framed blob, kept as a list of parts (never concatenated).

    ``parts`` reference the live objects' memory (numpy buffers are ``memoryview``\\ s of the
    arrays), so write them before the kernel runs another cell.
    """

    names: list[str]
    parts: list[memoryview | bytes] = field(repr=False)
    nbytes: int
    error: str | None = None
    loads_into_live: bool = False  # notebook classes or modules: never load it back in this process
    lossy: str | None = None  # what the stream cannot bring back (it loads, but not the same)


# --------------------------------------------------------------------------------------------
# load-time helpers: referenced by name from the pickle stream, keep them importable and stable


_load_ctx = threading.local()


def _builtins_dict() -> dict:
    return builtins.__dict__


def _bound_namespace() -> dict[str, Any]:
    """The namespace notebook functions are bound to while ``loads`` runs (see module doc)."""
    ns = getattr(_load_ctx, "namespace", None)
    if ns is None:
        ns = sys.modules["__main__"].__dict__
    return ns


def _read_only_later(arr: Any) -> None:
    """Make `arr` read-only once the blob is loaded (at once outside a load). Views made before
    the owner was (``v = a[1:]; a.setflags(write=False)``) stay writeable: numpy refuses a
    writeable view of a read-only array, so a base made read-only as soon as it was rebuilt
    turned `v` read-only too, and the loaded copy's digest was then accepted as the value's."""
    pending = getattr(_load_ctx, "read_only", None)
    if pending is None:
        arr.flags.writeable = False
    else:
        pending.append(arr)


def _rebuild_owner(buf: Any, dtype: Any, shape: tuple, order: str, writeable: bool) -> Any:
    """An array directly over its buffer (no intermediate array: see `_reduce_owner`)."""
    import numpy as np

    mv = memoryview(buf)
    if not mv.readonly:
        arr = np.ndarray(shape, dtype=dtype, buffer=mv, order=order)
    else:  # an in-band (read-only bytes) buffer: copy once (views of it may be writeable)
        arr = np.ndarray(shape, dtype=dtype, buffer=bytearray(mv), order=order)
    if not writeable:
        _read_only_later(arr)
    return arr


def _same_object(obj: Any) -> Any:
    """`obj` itself: a reduce value naming an object pickled earlier in the stream."""
    return obj


def _memory_bytes(root: Any) -> Any:
    """The memory of a C- or F-contiguous numpy array as a flat uint8 array (a view, in memory
    order)."""
    np = sys.modules["numpy"]
    return root.reshape(-1, order="A").view(np.uint8)


def _arrow_buffer_over(root: Any, offset: int, size: int) -> Any:
    """An arrow buffer over `size` bytes of numpy array `root`'s memory at `offset` (see
    `_Pickler._reduce_arrow_buffer`): arrow reads that array's memory again, without a copy."""
    import pyarrow as pa

    return pa.py_buffer(_memory_bytes(root)[offset : offset + size])


def _rebuild_flatiter(base: Any, index: int) -> Any:
    flat = base.flat
    for _ in range(index):  # (no setter: stepped to where it was, in C)
        next(flat)
    return flat


def _rebuild_view(base: Any, offset: int, shape: tuple, strides: tuple, dtype: Any,
                  writeable: bool = True, subtype: type | None = None) -> Any:
    """Re-create a numpy view on the (already restored) base array, sharing its memory
    (a ``subtype`` view, ``mm[1:3]`` of a memmap, is made as that subtype)."""
    import numpy as np

    if base.flags.c_contiguous:
        # directly on the base, so that `view.base is base` holds as it did before
        buffer = base
    else:
        flat = base.ravel(order="K")  # F-contiguous base: a view in memory order
        buffer = flat.view(np.uint8)
    view = np.ndarray.__new__(subtype or np.ndarray, shape, dtype=dtype, buffer=buffer,
                              offset=offset, strides=strides)
    if type(view) is np.memmap and isinstance(base, np.memmap):
        # (numpy's __array_finalize__ does this for a slice, not for an array made on a buffer)
        view._mmap, view.filename = base._mmap, base.filename
        view.offset, view.mode = base.offset, base.mode
    if not writeable:
        _read_only_later(view)  # (`np.broadcast_to` gives read-only views)
    return view


def _rebuild_tensor(memory: Any, dtype: str, offset: int, size: tuple, stride: tuple,
                    requires_grad: bool, parameter: bool, start: int = 0,
                    nbytes: int | None = None) -> Any:
    """A dense CPU tensor over `memory`, the restored numpy array holding its storage's bytes
    (one for every tensor and array that shared that storage: see `_Pickler._reduce_tensor`):
    its storage is `nbytes` bytes from byte `start` of that memory (default: all of it)."""
    import numpy as np
    import torch

    u8 = _memory_bytes(memory) if memory.size else np.zeros(0, np.uint8)
    if start or nbytes is not None:
        u8 = u8[start : start + (len(u8) - start if nbytes is None else nbytes)]
    storage = torch.from_numpy(u8).untyped_storage()
    t = torch.empty(0, dtype=getattr(torch, dtype)).set_(storage, offset, size, stride)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(requires_grad) if requires_grad else t


def _set_tensor_state(t: Any, state: tuple) -> None:
    grad, attributes = state
    if grad is not None:
        t.grad = grad
    if attributes:
        vars(t).update(attributes)


def _new_optimizer(cls: type) -> Any:
    """A torch optimizer to set the state of, its class's ``step`` already wrapped as torch
    wraps it for the first optimizer of a process (``_patch_step_function``): the closure an
    LR scheduler put on the optimizer refers to that wrapper by name, and loaded before the
    optimizer's own state had wrapped it, it held the bare ``step`` (no step hooks)."""
    obj = cls.__new__(cls)
    patch = getattr(obj, "_patch_step_function", None)
    if patch is not None:
        try:
            patch()
        except Exception:  # noqa: BLE001 - another torch: its __setstate__ does it, as before
            pass
        vars(obj).clear()  # (what it set on the instance comes with the state, in its order)
    return obj


class _Gone:
    """What a dead weak reference pointed to (`_dead_weakref`)."""


def _dead_weakref() -> Any:
    """A weak reference whose object is gone, as one was when it was pickled."""
    return weakref.ref(_Gone())


def _rebuild_lru_cache(wrapped: Any, maxsize: int | None, typed: bool) -> Any:
    return functools.lru_cache(maxsize=maxsize, typed=typed)(wrapped)


def _rebuild_exception(cls: type, args: tuple) -> BaseException:
    """An exception made without calling its ``__init__``; its ``__dict__`` follows as state."""
    e = cls.__new__(cls, *args)
    e.args = args
    return e


def _reduce_exception(e: BaseException) -> Any:
    """Exceptions whose class has an ``__init__`` of its own, rebuilt without calling it.

    Pickle rebuilds an exception as ``cls(*e.args)``. With ``def __init__(self, code):
    super().__init__(f"code {code}")`` that calls ``__init__("code 7")``: the restored error
    said "code code 7" (and one whose ``__init__`` takes other arguments than it passes up does
    not load at all). ``args`` and ``__dict__`` are what the exception is; set them directly,
    as copy.copy would. Classes that define their own reduce or ``__new__`` are left alone.
    """
    cls = type(e)
    if (cls.__reduce__ is not BaseException.__reduce__
            or cls.__reduce_ex__ is not object.__reduce_ex__
            or not isinstance(cls.__init__, types.FunctionType)
            or isinstance(cls.__new__, types.FunctionType)):
        return NotImplemented
    return (_rebuild_exception, (cls, tuple(e.args)), dict(e.__dict__) or None)


def _with_exception_chain(e: BaseException, rv: Any) -> Any:
    """`rv` (a reduce value of `e`) plus its ``__cause__``/``__context__``, which pickle drops:
    ``raise ValueError(...) from err`` came back with no cause (``err2.__cause__ is err`` no
    longer held). The traceback stays behind: frames cannot leave the process."""
    if not isinstance(rv, tuple) or not 2 <= len(rv) <= 3:
        return rv
    state = rv[2] if len(rv) == 3 else None
    return (rv[0], rv[1], (state, e.__cause__, e.__context__, e.__suppress_context__), None, None,
            _set_exception_state)


def _set_exception_state(e: BaseException, state: tuple) -> None:
    inner, cause, context, suppress = state
    if inner is not None:
        e.__setstate__(inner)
    e.__cause__ = cause
    e.__context__ = context
    e.__suppress_context__ = suppress


class _NamespaceToken:
    """Stands for "the user namespace" in a stream; reduced to ``_bound_namespace()``."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# pickler


class _MemoryMap:
    """The memory of the stream's buffers by address: spans ``[lo, hi)``, each with the numpy
    array (its holder) the stream rebuilds that memory as, so that whatever else lies in it (a
    tensor's storage, an arrow buffer, a numpy array over a tensor) is rebuilt over that holder
    at the same offset and shares it again after a load, wherever in it the sharing starts
    (``torch.from_numpy(a[2:])``, ``pa.array(x[2:])``).

    Two kinds: the numpy arrays owning (or exporting) memory met in the stream (`roots`), and
    the memory of tensors over no such array (a uint8 array over the storage, `tensors`).
    Disjoint spans (separate allocations: the usual case) are kept sorted, and the one that may
    contain a span is found by bisection; a span overlapping one already there (two arrays
    over parts of one bytearray, a tensor over a slice of another's memory) is kept in a short
    list scanned in full."""

    def __init__(self) -> None:
        self.lows: list[int] = []
        self.sorted: list[tuple[int, int, Any, bool]] = []  # (lo, hi, holder, is a root)
        self.nested: list[tuple[int, int, Any, bool]] = []
        self.ids: set[int] = set()

    def add(self, lo: int, hi: int, holder: Any, root: bool) -> None:
        if id(holder) in self.ids or hi <= lo:
            return
        self.ids.add(id(holder))
        i = bisect.bisect_right(self.lows, lo)
        if (i and self.sorted[i - 1][1] > lo) or (i < len(self.lows) and self.lows[i] < hi):
            self.nested.append((lo, hi, holder, root))
            return
        self.lows.insert(i, lo)
        self.sorted.insert(i, (lo, hi, holder, root))

    def find(self, lo: int, hi: int, roots: bool = True) -> tuple[int, Any] | None:
        """(start, holder) of a span containing ``[lo, hi)``, of a numpy array of the stream
        (`roots`) or of a tensor's memory (not `roots`); None if there is none."""
        i = bisect.bisect_right(self.lows, lo)
        if i:
            a, b, holder, is_root = self.sorted[i - 1]
            if b >= hi and is_root == roots:
                return a, holder
        for a, b, holder, is_root in self.nested:
            if a <= lo and hi <= b and is_root == roots:
                return a, holder
        return None

    def find_any(self, lo: int, hi: int) -> tuple[int, Any] | None:
        return self.find(lo, hi, True) or self.find(lo, hi, False)

    def roots(self) -> list[tuple[int, int, Any]]:
        return [(a, b, h) for a, b, h, r in self.sorted + self.nested if r]


#: iterators over a sequence that can shrink, whose ``__setstate__`` clamps a position to
#: its length (`_reduce_sequence_iterator`)
_SEQUENCE_ITERATORS = (type(iter([])), type(reversed([])), type(iter(bytearray())),
                       type(iter(array.array("b"))), reversed)


def _reduce_sequence_iterator(it: Any) -> tuple | None:
    """An iterator over a list, a bytearray or an ``array.array`` (or a reversed one)
    rebuilt at its very position, or None (pickle's way: exhausted, or over another
    sequence).

    Its ``__setstate__`` clamps a position to the sequence's length: ``it = iter(data)``
    advanced twice, then ``data.clear()``, came back at 0 (a reversed one exhausted), so once
    ``data`` grew again ``list(it)`` listed every item instead of those from the third on, and
    it verified (an iterator is checked by type). The position is set by
    `_set_iterator_position`, over the sequence padded for that moment if it is shorter."""
    try:
        rv = it.__reduce__()
    except Exception:  # noqa: BLE001 - left to pickle, which reports it
        return None
    if len(rv) != 3 or not isinstance(rv[1], tuple) or len(rv[1]) != 1:
        return None
    make, (seq,), index = rv
    if type(index) is not int or not isinstance(seq, (list, bytearray, array.array)):
        return None
    return (make, (seq,), (seq, index), None, None, _set_iterator_position)


def _set_iterator_position(it: Any, state: tuple) -> None:
    seq, index = state
    short = index + 1 - len(seq)  # (a reversed iterator reads seq[index]: clamped to len - 1)
    if short <= 0:
        it.__setstate__(index)
        return
    n = len(seq)
    try:
        if isinstance(seq, list):
            list.extend(seq, [None] * short)
        elif isinstance(seq, bytearray):
            bytearray.extend(seq, bytes(short))
        else:  # an array.array
            type(seq).frombytes(seq, bytes(short * seq.itemsize))
    except BufferError:  # its memory is exported (a memoryview of it): clamped, as pickle does
        it.__setstate__(index)
        return
    try:
        it.__setstate__(index)
    finally:
        base = list if isinstance(seq, list) else bytearray if isinstance(seq, bytearray) else type(seq)
        base.__delitem__(seq, slice(n, None))


class _Pickler(cloudpickle.CloudPickler):
    """cloudpickle + numpy views + namespace re-binding + lru_cache by value.

    ``reducer_override`` chains to cloudpickle's (functions and classes by value) for
    everything it does not handle itself.
    """

    def __init__(
        self,
        file: io.BytesIO,
        buffer_callback: Any,
        namespace: dict[str, Any] | None,
        view_roots: set[int] | None,
        owners: list[tuple[int, int, Any]] | None = None,
    ) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self._namespace = namespace
        self._token = _NamespaceToken()
        # pass 2: ids of arrays known to be in the stream; pass 1: None (decide on the fly)
        self._view_roots = view_roots
        self._np = sys.modules.get("numpy")  # no numpy imported -> no ndarray can exist
        # (numpy.ma not imported for the check: 0.1 s, and then no masked array exists)
        self._masked = getattr(sys.modules.get("numpy.ma"), "MaskedArray", None)
        # ids of arrays pickled so far; the arrays are kept alive until the dump ends so that a
        # temporary array made by some __reduce__ cannot free its id for another array
        self.seen_arrays: set[int] = set()
        self._alive: list[Any] = []
        self.deferred_roots: set[int] = set()
        self.covered_roots: set[int] = set()
        self.view_spans: dict[int, list[tuple[int, int]]] = {}  # hidden base -> views' bytes
        self.aliased_roots: set[int] = set()  # hidden bases of views whose elements alias
        # the memory of the arrays and tensors pickled so far (pass 2: and of every numpy
        # array owning memory of pass 1, `owners`), and the spans of the tensors' storages and
        # arrow buffers met over none of them (see `_MemoryMap`, `dumps`)
        self._pa = sys.modules.get("pyarrow")
        self.memory = _MemoryMap()
        for lo, hi, root in owners or ():
            self.memory.add(lo, hi, root, True)
        self.unmatched: list[tuple[int, int, bool]] = []  # (lo, hi, a tensor's storage)
        self._arrow_first: dict[tuple[int, int], Any] = {}  # (address, size) -> first buffer
        # notebook classes pickled by value, and the notebook's modules with their globals:
        # loading them again in this process would re-apply their state to the live class
        # (cloudpickle's class tracker) or module (`_set_module_state` on the imported one),
        # so callers must not
        self.loads_into_live = False
        self.lossy: str | None = None  # state the stream drops (a non-empty lru_cache)
        # an object whose class hashes in Python (its hash may read state that changed since
        # it went into a set or dict: `_stale_containers`) was pickled
        self.python_hashed = False
        # id of an array under object-array views copied -> (its span, the views' spans)
        self.object_view_spans: dict[int, tuple[tuple[int, int], list[tuple[int, int]]]] = {}
        # id -> name in `sys` of the kernel's standard streams (ipykernel's OutStreams)
        self._stdio = {id(v): n for n in _STDIO_NAMES if (v := getattr(sys, n, None)) is not None}
        self._process_objects = _process_objects()
        self._torch = sys.modules.get("torch")  # not imported: no tensor can exist
        # the objects plain weak references in the stream point to (`_reduce_weakref`)
        self.weak_targets: list[Any] = []
        # Pillow's image read from a file (`Image.open`): not imported, none can exist
        self._pil_file = getattr(sys.modules.get("PIL.ImageFile"), "ImageFile", None)
        # storage address -> (its holder's address, numpy array holding its bytes) of the
        # tensors pickled so far: a numpy owner array it lies in (``torch.from_numpy(a[2:])``)
        # or an array over the storage made here (their ids in `_holders`)
        self._tensor_memory: dict[int, tuple[int, Any]] = {}
        self._holders: set[int] = set()
        # pandas not imported: no block can exist
        self._pandas_block = getattr(sys.modules.get("pandas._libs.internals"), "Block", None)
        managers = getattr(sys.modules.get("pandas.core.internals.managers"), "BaseBlockManager",
                           None)
        self._pandas_types = (self._pandas_block, *(() if managers is None else (managers,)))
        self._pandas_frame = getattr(sys.modules.get("pandas.core.generic"), "NDFrame", None)
        self._refs_tokens: dict[int, _RefsToken] = {}  # id(BlockValuesRefs) -> its token
        self._arrow_ea = getattr(sys.modules.get("pandas.core.arrays.arrow.array"),
                                 "ArrowExtensionArray", None)
        # the notebook's modules whose file changed since they were loaded (`_stale_code`)
        self._stale = stale_local_modules()

    def _stale_code(self, obj: Any) -> bool:
        """A function or class of one of the notebook's modules whose file changed since it
        was loaded (`changes.stale_local_modules`), which cloudpickle pickles by reference."""
        if type(obj) is not types.FunctionType and not isinstance(obj, type):
            return False
        module = getattr(obj, "__module__", None)
        return (type(module) is str and module in self._stale
                and cloudpickle.cloudpickle._should_pickle_by_reference(obj))

    # cloudpickle calls this for functions it pickles by value
    def _dynamic_function_reduce(self, func: Any) -> Any:
        rv = self._shared_cells(func, super()._dynamic_function_reduce(func))
        own = exec_globals(func) if func.__globals__ is not self._namespace else None
        if own is not None:
            # made by `exec` into a dict of the notebook's (`exec(src, G)`): cloudpickle gives
            # it a new dict holding the names it reads, so after a restore `G['K'] = 1` no
            # longer reached `f` (and it verified). Its globals are that dict, by memo the
            # very one a variable holds (it is the same co-variable: `changes.exec_globals`)
            try:
                _make, newargs, (state, slotstate), listitems, dictitems, _setter = rv
                code, _globals, *more = newargs
            except (TypeError, ValueError):  # a cloudpickle we do not know: keep its behaviour
                return rv
            slotstate = {k: v for k, v in slotstate.items() if k != "__globals__"}
            return (_make_exec_function, (code, own, *more), (state, slotstate), listitems,
                    dictitems, _set_exec_function_state)
        if self._namespace is None or func.__globals__ is not self._namespace:
            return rv
        try:
            make, newargs, (state, slotstate), *rest = rv
            code, _globals, *more = newargs
        except (TypeError, ValueError):  # a cloudpickle we do not know: keep its behaviour
            return rv
        slotstate = dict(slotstate)
        slotstate["__globals__"] = {}  # globals are variables of their own, not a snapshot
        return (make, (code, self._token, *more), (state, slotstate), *rest)

    @staticmethod
    def _shared_cells(func: Any, rv: Any) -> Any:
        """Pickle the function's real closure cells, so closures that share a cell still do.

        cloudpickle gives every function fresh empty cells and copies the contents in later, so
        ``inc, get = make_pair()`` over one ``nonlocal n`` came back as two closures with two
        different ``n``: ``inc()`` no longer changed what ``get()`` returns (a silently different
        session). Passing the cells themselves lets pickle's memo share them; each cell is
        reduced to an empty cell whose contents are set by a state setter (`_reduce_cell`), so
        a closure that refers to itself (a recursive inner function) still pickles.
        """
        closure = func.__closure__
        if closure is None:
            return rv
        try:
            make, newargs, (state, slotstate), *rest = rv
            *head, fresh = newargs
        except (TypeError, ValueError):  # a cloudpickle we do not know: keep its behaviour
            return rv
        if not isinstance(fresh, tuple) or len(fresh) != len(closure):
            return rv
        slotstate = dict(slotstate)
        slotstate["__closure__"] = None  # the cells carry their contents themselves
        return (make, (*head, closure), (state, slotstate), *rest)

    def reducer_override(self, obj: Any) -> Any:
        if not self.python_hashed and type(getattr(type(obj), "__hash__", None)) is types.FunctionType:
            self.python_hashed = True
        if type(obj) in _SEQUENCE_ITERATORS:
            rv = _reduce_sequence_iterator(obj)
            if rv is not None:
                return rv
        np = self._np
        ct = sys.modules.get("ctypes")
        if ct is not None:
            rv = _reduce_ctypes(obj, ct, np)
            if rv is not None:
                return rv
        if isinstance(obj, type) and not cloudpickle.cloudpickle._should_pickle_by_reference(obj):
            self.loads_into_live = True
        if np is not None and (type(obj) is np.ndarray or type(obj) is np.memmap
                               or _plain_array_subclass(type(obj), np)):
            return self._reduce_ndarray(obj)
        if type(obj) is self._masked:
            return self._reduce_masked(obj)
        if np is not None and isinstance(obj, np.dtype) and obj.isbuiltin == 1:
            # numpy's own pickle of a dtype makes a new dtype object, equal to `float64` but not
            # numpy's: `np.asarray(x, dtype=np.float64)` then returns a new view of a loaded `x`
            # instead of `x` itself, and what a library built over the notebook's array holds
            # no longer is that array (`KDTree(pts).data is pts`). The process's own instead
            name = obj.str
            if np.dtype(name) is obj:
                return (np.dtype, (name,))
        torch = self._torch
        if torch is not None and isinstance(obj, torch.Tensor):
            rv = self._reduce_tensor(obj, torch)
            if rv is not None:
                return rv
        if self._pil_file is not None and self.lossy is None and isinstance(obj, self._pil_file):
            self._note_image_file(obj)
        if (torch is not None and isinstance(obj, torch.optim.Optimizer)
                and getattr(type(obj), "__getstate__", None) is torch.optim.Optimizer.__getstate__):
            # its own pickle keeps three of its attributes and its __setstate__ makes the rest
            # anew after them: the hooks registered on it were dropped and its attributes came
            # back in another order (the restore did not verify). Its __setstate__ takes them
            # all, in their order, and keeps what it is given
            return (_new_optimizer, (type(obj),), dict(vars(obj)))
        if np is not None and isinstance(obj, np.void) and type(obj.base) in (np.ndarray,
                                                                              np.recarray):
            rv = _reduce_void_view(obj, np)
            if rv is not None:
                return rv
        if np is not None and type(obj) is np.flatiter:
            # (numpy does not pickle it) `img.flat` over that same `img`, where it was
            return (_rebuild_flatiter, (obj.base, obj.index))
        if self._pa is not None and type(obj) is self._pa.Buffer:
            rv = self._reduce_arrow_buffer(obj)
            if rv is not None:
                return rv
        if obj is self._token:
            return (_bound_namespace, ())
        if obj is builtins.__dict__:  # an `exec` namespace's __builtins__: the process's own
            return (_builtins_dict, ())
        if type(obj) is types.CellType:
            return _reduce_cell(obj)
        if type(obj) is weakref.ReferenceType:
            rv = self._reduce_weakref(obj)
            if rv is not None:
                return rv
        if type(obj) is memoryview:
            rv = self._reduce_memoryview(obj)
            if rv is not None:
                return rv
        if type(obj) is types.ModuleType:
            source = local_source(obj) if type(getattr(obj, "__name__", None)) is str else None
            if source is not None:
                # imported again, then its globals as they were (a cache it filled, a counter
                # a cell bumped): the import alone would give the file's initial values
                state = module_state(obj)
                if not state:
                    return (_import_module, (obj.__name__, source))
                self.loads_into_live = True
                return (_import_module, (obj.__name__, source), state, None, None,
                        _set_module_state)
            if registered_module(obj):
                # one the notebook put in sys.modules itself: by reference (cloudpickle's rule
                # for a registered name) it would not load where no cell registered it yet
                self.loads_into_live = True
                return (_registered_module, (obj.__name__,), module_state(obj), None, None,
                        _set_registered_module_state)
        if isinstance(obj, type):
            rv = _reduce_local_class(obj)
            if rv is not None:
                self.loads_into_live = True
                return rv
        rv = self._process_objects.get(id(obj))
        if rv is not None:
            return rv
        stream = self._stdio.get(id(obj))
        if stream is not None:
            # the kernel's output streams: the restoring kernel's own (a StreamHandler on
            # sys.stderr writes into the new notebook, not into a copy or a reopened fd 2)
            return (_sys_stream, (stream,))
        if isinstance(obj, logging.Logger):
            return self._reduce_logger(obj)
        if isinstance(obj, _OS_FILES):
            # cloudpickle would ship a read-mode file's *content* as a StringIO: a different
            # object. A regular file is re-opened at its place instead (a write-mode one
            # without truncating it); anything else is kernel state we cannot move, which the
            # engine re-opens by re-running the cell that did.
            return _reduce_file(obj)
        if isinstance(obj, type) and "__slots__" in type.__dict__["__dict__"].__get__(obj):
            rv = self._reduce_slotted_class(obj)
            if rv is not None:
                return _keep_inherited_entries(obj, rv)
        if isinstance(obj, BaseException):
            rv = _reduce_exception(obj)
            if obj.__cause__ is not None or obj.__context__ is not None or obj.__suppress_context__:
                return _with_exception_chain(obj, obj.__reduce_ex__(4) if rv is NotImplemented else rv)
            if rv is not NotImplemented:
                return rv
        view_of = _DICT_VIEWS.get(type(obj))
        if view_of is None and type(obj) is types.MappingProxyType:
            view_of = types.MappingProxyType
        if view_of is not None:
            # cloudpickle copies the keys/values into a new dict (a proxy over a copy): a view
            # of the notebook's dict came back as a view of nothing (``d['n'] = 1`` no longer
            # showed through ``kv``). The namespace's view is one of the restoring namespace.
            mapping = gc.get_referents(obj)[0]
            if mapping is self._namespace:
                return (view_of, (self._token,))
            if not module_namespace(mapping):
                return (view_of, (mapping,))
        if type(obj) in _DICT_ITERATORS:
            rv = _reduce_dict_iterator(obj, self._namespace)
            if rv is not None:
                return rv
        if type(obj) is _ODICT_ITERATOR:
            rv = _reduce_odict_iterator(obj)
            if rv is not None:
                return rv
        if type(obj) in _LOCKS:
            return _reduce_lock(obj)
        if isinstance(obj, threading.Thread):
            return _reduce_thread(obj)
        if isinstance(obj, subprocess.Popen):
            _refuse_unwaited_child(obj)
        if type(obj) is itertools.groupby:
            _refuse_groupby_between_items(obj)
        if isinstance(obj, random.SystemRandom):
            # it draws from the OS and has no state to pickle (its getstate raises), so it
            # and the cell that made it (which reads OS entropy, never re-run) were lost; a
            # new one draws from the same source
            return (type(obj), (), dict(vars(obj)), None, None, _set_instance_state)
        if isinstance(obj, weakref.finalize):
            rv = _reduce_finalizer(obj)
            if rv is not None:
                self.loads_into_live = True  # (a copy loaded here would run its callback)
                return rv
        if type(obj) is typing.TypeVar:
            rv = cloudpickle.cloudpickle._typevar_reduce(obj)
            if rv[0] is cloudpickle.cloudpickle._make_typevar:
                # made by value in cloudpickle's function, it took cloudpickle's module for its
                # own (``T.__module__``: the notebook's TypeVar and its generic classes did
                # not verify): its module is set back
                return (*rv, getattr(obj, "__module__", None), None, None, _set_typevar_module)
            return rv
        if type(obj) is struct.Struct:
            # its format is all it holds; C, it does not pickle, and it (and whatever held
            # it) was lost when its cell could not be re-run
            return (struct.Struct, (obj.format,))
        if type(obj) is re.Match:
            rv = _reduce_match(obj)
            if rv is not None:
                return rv
        if _is_kd_tree(type(obj)):
            rv = _reduce_kd_tree(obj)
            if rv is not None:
                return rv
        if type(obj) is _CSV_WRITER:
            return _reduce_csv_writer(obj)
        if type(obj) is _CSV_READER:
            return _reduce_csv_reader(obj)
        tp = type(obj)
        if (getattr(tp, "__getattr__", None) is not None and not isinstance(obj, type)
                and getattr(tp, "__setstate__", None) is None
                and tp.__reduce_ex__ is object.__reduce_ex__ and tp.__reduce__ is object.__reduce__):
            rv = object.__reduce_ex__(obj, 4)
            if type(rv) is tuple and 3 <= len(rv) <= 5 and rv[2] is not None:
                return (*rv, *(None,) * (5 - len(rv)), _set_instance_state)
        if _is_figure(tp):
            rv = _reduce_figure(obj)
            if rv is not None:
                return rv
        if tp.__name__ == "CallbackRegistry" and tp.__module__ == "matplotlib.cbook":
            self._note_dropped_callbacks(obj)
        if self._pandas_block is not None and isinstance(obj, self._pandas_types):
            rv = self._reduce_pandas(obj)
            if rv is not None:
                return rv
        if self._pandas_frame is not None and isinstance(obj, self._pandas_frame):
            rv = _reduce_keeping_attrs(obj)
            if rv is not None:
                return rv
        if self._arrow_ea is not None and isinstance(obj, self._arrow_ea):
            rv = _reduce_arrow_extension_array(obj)
            if rv is not None:
                return rv
        if isinstance(obj, _BUILTIN_CONTAINERS) and tp not in self.dispatch_table:
            rv = _reduce_container_subclass(obj, tp)
            if rv is not None:
                return rv
        rv = None if tp in self.dispatch_table else _reduce_keeping_dict(obj, tp)
        if rv is not None:
            return rv
        if isinstance(obj, functools._lru_cache_wrapper) and not _importable(obj):
            params = obj.cache_parameters()
            self._note_lost_cache(obj)
            return (_rebuild_lru_cache, (obj.__wrapped__, params["maxsize"], params["typed"]))
        if self._stale and self._stale_code(obj):
            # code of a module file changed since it was imported: the import at restore would
            # give the file's new code, so it travels by value, as after a reload
            if isinstance(obj, type):
                self.loads_into_live = True
                rv = cloudpickle.cloudpickle._dynamic_class_reduce(obj)
            else:
                rv = self._dynamic_function_reduce(obj)
        else:
            rv = super().reducer_override(obj)
        if isinstance(obj, type) and type(rv) is tuple and rv[:1] == (_MAKE_SKELETON_CLASS,):
            return _keep_inherited_entries(obj, rv)
        if isinstance(obj, enum.EnumMeta) and type(rv) is tuple and rv[:1] == (_MAKE_SKELETON_ENUM,):
            return _with_member_state(obj, _with_pseudo_members(obj, _with_enum_aliases(obj, rv)))
        return rv

    def _refs_token(self, blk: Any) -> _RefsToken | None:
        """The token of a pandas block's copy-on-write references when another block shares
        them (`_reduce_pandas`), else None."""
        refs = getattr(blk, "refs", None)
        if refs is None or not refs.has_reference():
            return None
        token = self._refs_tokens.get(id(refs))
        if token is None:
            token = self._refs_tokens[id(refs)] = _RefsToken()
            self._alive.append(refs)  # (its id names it until the dump ends)
        return token

    def _reduce_pandas(self, obj: Any) -> tuple | None:
        """A pandas block, or a manager pickling its blocks' values, with the copy-on-write
        references of its blocks.

        Under copy-on-write a column (``col = df['a']``), a row slice, a shallow copy or a
        ``dropna()`` that dropped nothing shares the frame's memory, and pandas copies it when
        either is written, because their blocks hold one ``BlockValuesRefs``. Its pickle has
        no references: loaded, the blocks shared memory (this stream keeps views views) but
        each believed itself alone, so ``df.loc[0, 'a'] = 100`` after a restore wrote into
        ``col`` too, a value the restore had verified. Each block that shares its references
        with another is pickled with a token, one per references object in the stream, and
        the blocks loaded with one token share one references object again
        (`_set_block_refs`, `_set_manager_state`). A block referenced by nothing else is
        pickled as pandas does, and so is an array the blocks share memory with without
        references (``pd.Series(arr, copy=False)``: a write through either still shows
        through the other, as it did). None: pandas' own pickle.

        A block is reduced by its ``__reduce__``: its ``__reduce_ex__`` copies values that are
        neither C- nor F-contiguous under protocol 5 (a frame over the notebook's array,
        ``copy=False``, split by a write to one column, or a Series over ``x[::2]``): loaded,
        the block no longer shared the notebook's array (a write to ``arr`` no longer showed
        in ``df``), and the restore verified both. Its values go through the stream's view
        logic like any array.
        """
        try:
            if isinstance(obj, self._pandas_block):
                rv = obj.__reduce__()
                if type(rv) is not tuple or len(rv) != 2:
                    return None
                token = self._refs_token(obj)
                if token is None:
                    return rv
                return (rv[0], rv[1], token, None, None, _set_block_refs)
            # (a BlockManager pickles its blocks; a SingleBlockManager their values only)
            tokens = [self._refs_token(blk) for blk in obj.blocks]
            if all(t is None for t in tokens):
                return None
            rv = obj.__reduce_ex__(5)
        except Exception:  # noqa: BLE001 - a pandas we do not know: its own pickle
            return None
        if type(rv) is not tuple or not 3 <= len(rv) <= 5 or rv[2] is None:
            return None
        rv = (*rv, *(None,) * (5 - len(rv)))
        return (rv[0], rv[1], (rv[2], tokens), rv[3], rv[4], _set_manager_state)

    def _reduce_masked(self, m: Any) -> tuple:
        """A masked array is its data, as a plain view of its memory, and its attributes.

        numpy's pickle copies the data and the mask into new arrays and drops the hard mask
        (`m.harden_mask()`): restored, ``sl = m[1:]`` and ``d = m.data`` no longer wrote into
        ``m``, and ``m[1] = 5`` unmasked what the session kept masked (the restore verified
        both, as the library's pickle of the value). The data view goes through the view logic
        like any array (a view of the memory it shares with them) and so does the mask (a
        slice's mask is a view of its parent's); the attributes are set as they were.
        """
        return (_rebuild_masked, (m.view(self._np.ndarray), type(m)), dict(vars(m)), None, None,
                _set_instance_state)

    def _note_lost_cache(self, wrapper: Any) -> None:
        """Record that `wrapper` comes back with an empty cache while its cache holds results."""
        try:
            size = wrapper.cache_info().currsize
        except Exception:  # noqa: BLE001 - unreadable: assume it is empty, as it will be
            return
        if size and self.lossy is None:
            name = getattr(wrapper, "__qualname__", "?")
            self.lossy = f"the cache of {name} ({size} results) cannot be rebuilt from a pickle"

    def _reduce_weakref(self, ref: Any) -> tuple | None:
        """A plain weak reference (no callback) is made again to the loaded object it points
        to, or dead. They had no pickle: ``refs = [weakref.ref(c) for c in cells]``, and an
        optimizer an LR scheduler was attached to (torch wraps ``opt.step`` in a closure over
        ``weakref.ref(opt)``), made their whole co-variable unserializable: lost, a trained
        model with it, when its cells could not be re-run. Loaded, the reference keeps its
        object alive only if the stream holds it otherwise: `_weakly_held` checks that after the
        dump (the digest checks a weak reference by type only)."""
        if ref.__callback__ is not None:
            return None  # (a callback is the owner's code: as before)
        target = ref()
        if target is None:
            return (_dead_weakref, ())
        self.weak_targets.append(target)
        return (weakref.ref, (target,))

    def _note_image_file(self, img: Any) -> None:
        """Record that an image Pillow opened from a file comes back without what it read there.

        Pillow pickles an image as its pixels, mode, size, palette and info, and its
        ``__setstate__`` rebuilds a bare image of the plugin's class: what the plugin keeps
        (``GifImageFile``'s frame count and position, ``PngImageFile``'s text chunks, the open
        file the frames not yet read come from) is dropped. A shipped ``Image.open('a.gif')``
        verified (its loaded copy was taken for the value with lazily filled state) and
        ``img.n_frames`` or ``img.seek(1)`` then raised AttributeError. The checkpoint re-opens
        it by its cell when it can, and names it otherwise."""
        self.lossy = (f"Pillow's pickle of an image opened from a file ({type(img).__name__}) "
                      "drops the state its plugin read from the file (frames, position, chunks)")

    def _note_dropped_callbacks(self, registry: Any) -> None:
        """Record that a matplotlib callback registry comes back without the notebook's callbacks.

        matplotlib pickles a registry with only the callbacks it connected itself as picklable
        (``_pickled_cids``): ``ax.callbacks.connect('xlim_changed', on_zoom)`` or
        ``fig.canvas.mpl_connect`` made by the notebook are dropped, so a shipped figure no
        longer called them, and a figure is checked by type only (it verified). The stream says
        so, and the checkpoint recomputes the figure when it can. Callbacks of matplotlib's own
        (a colorbar following its image) are its own choice and not counted."""
        if self.lossy is not None:
            return
        try:
            kept = registry._pickled_cids
            for signal, proxies in registry.callbacks.items():
                for cid, proxy in proxies.items():
                    func = proxy() if cid not in kept else None
                    code = notebook_code(func) if func is not None else None
                    if code is not None:
                        self.lossy = (f"matplotlib drops the callback {code} the notebook "
                                      f"connected to {signal!r} from its pickle")
                        return
        except Exception:  # noqa: BLE001 - a registry we do not know: matplotlib's pickle as is
            return

    def _reduce_logger(self, logger: Any) -> tuple:
        """A logger is the process's logger of that name, configured as it was.

        Loggers pickle by name only, so a restore gave a logger with no handlers and no level
        (and verified it): the cell that configured it is seldom re-run (a FileHandler makes
        it a side effect). Its level, handlers and filters now travel with it and are set
        when the value is put in place."""
        state: dict[str, Any] = {"level": logger.level, "propagate": logger.propagate,
                                 "disabled": logger.disabled}
        # only logging's own handlers and filters and the notebook's: a library's handler
        # (which importing the library adds again) may hold something unpicklable, and would
        # make every object holding that logger so
        for key in ("handlers", "filters"):
            items = getattr(logger, key)
            if type(items) is list and all(
                    type(h).__module__ in ("logging", "logging.handlers", "__main__") for h in items):
                state[key] = items  # the list itself: `hs = log.handlers` stays that list
        self.loads_into_live = True
        name = None if logger is logging.root else logger.name
        return (logging.getLogger, (name,), state, None, None, _set_logger_state)

    def _reduce_over_bytearray(self, obj: Any) -> Any:
        """An array over a bytearray (``np.frombuffer(ba)``) is rebuilt over that bytearray
        (or over that ``array.array``).

        numpy's own reduce copies the bytes, so after a restore ``ba[0] = 1`` no longer showed
        through the array. The bytearray goes into the stream (pickle's memo makes it the same
        object as a ``ba`` variable next to it) and the array is a window on it again.
        """
        np = self._np
        exporter = obj.base
        while isinstance(exporter, np.ndarray):
            exporter = exporter.base
        for _ in range(8):
            if type(exporter) is not memoryview:
                break
            exporter = exporter.obj
        if (type(exporter) not in _WRITABLE_EXPORTERS or obj.dtype.hasobject
                or type(obj) is not np.ndarray):
            return None
        size = memoryview(exporter).nbytes  # (an array.array's len counts items)
        if size == 0:
            return None
        start = np.frombuffer(exporter, dtype=np.uint8).__array_interface__["data"][0]
        offset = obj.__array_interface__["data"][0] - start
        lo = hi = offset
        for n, st in zip(obj.shape, obj.strides, strict=True):
            if st < 0:
                lo += st * (n - 1)
            else:
                hi += st * (n - 1)
        if lo < 0 or hi + obj.itemsize > size:
            return None
        return (_rebuild_over_buffer, (exporter, offset, obj.shape, obj.strides, obj.dtype,
                                       bool(obj.flags.writeable)))

    def _reduce_memoryview(self, mv: memoryview) -> Any:
        """A memoryview comes back as a memoryview on the same exporter: bytes, a bytearray,
        an ``array.array`` or a C-contiguous numpy array.

        cloudpickle turns it into ``bytes``: another type, and writes through it no longer
        reached the bytearray (a silently different session, and the restore's digest of the
        loaded value was taken as "the library's pickle" of it). The exporter goes into the
        stream, so pickle's memo makes it the same object as a variable holding it. A
        one-dimensional view with a step (``memoryview(ba)[::2]``) is sliced again with that
        step. Other exporters (mmaps) or views numpy does not describe are left to cloudpickle.
        """
        np = self._np
        try:
            exporter = mv.obj
            if (np is not None and type(exporter) is np.ndarray and mv.shape == exporter.shape
                    and mv.strides == exporter.strides and mv.format == exporter.data.format):
                # all of an array (`memoryview(a[:, ::2])`): a memoryview of that array, which
                # is rebuilt as a view of its base like any array
                return (_memoryview_of, (exporter, mv.readonly))
            owner = memoryview_exporter(mv) if type(exporter) is _BYTESIO_BUFFER else exporter
            if not (type(owner) in (bytes, bytearray, array.array, io.BytesIO)
                    or (np is not None and type(owner) is np.ndarray
                        and owner.flags.c_contiguous)):
                return None
            whole = memoryview(exporter).cast("B")
            if mv.c_contiguous:
                step, span = 1, mv.nbytes
            elif mv.ndim == 1 and mv.strides[0] != 0 and mv.strides[0] % mv.itemsize == 0:
                # (a negative step: `offset` is where its first item is, the highest address)
                step, span = mv.strides[0] // mv.itemsize, mv.itemsize
            else:
                return None
            if mv.c_contiguous and mv.nbytes == whole.nbytes:
                offset = 0
            elif np is not None and mv.nbytes:
                start = np.frombuffer(whole, dtype=np.uint8).__array_interface__["data"][0]
                offset = np.asarray(mv).__array_interface__["data"][0] - start
            else:
                return None
            if not 0 <= offset <= whole.nbytes - span:
                return None
            return (_rebuild_memoryview, (owner, offset, mv.nbytes, mv.format, tuple(mv.shape),
                                          mv.readonly, step))
        except (ValueError, TypeError):  # released, or a format cast() cannot express
            return None

    def _reduce_slotted_class(self, cls: type) -> Any:
        """cloudpickle rebuilds a notebook class without its ``__slots__`` (it creates the class
        first and sets ``__slots__`` afterwards, which makes no slot descriptors), so slot values
        land in a ``__dict__`` the class never had. Declare the slots at creation instead."""
        cp = cloudpickle.cloudpickle
        if cp._should_pickle_by_reference(cls) or isinstance(cls, enum.EnumMeta):
            return None
        rv = list(cp._dynamic_class_reduce(cls))
        args = list(rv[1])
        own = type.__dict__["__dict__"].__get__(cls)
        if typing.NamedTuple in own.get("__orig_bases__", ()):
            # a typing.NamedTuple: made from ``(NamedTuple,)`` its metaclass makes a new
            # namedtuple of the annotations, and refuses the ``__slots__`` it makes itself
            # ("Cannot overwrite NamedTuple attribute __slots__": the class and its instances
            # were lost). It is a tuple subclass like any namedtuple: made from its real bases
            args[2] = type.__dict__["__bases__"].__get__(cls)
        args[3] = {**args[3], "__slots__": own["__slots__"]}
        rv[1] = tuple(args)
        return tuple(rv)

    def _reduce_owner(self, obj: Any) -> Any:
        """An array owning its memory, rebuilt directly over its out-of-band buffer.

        numpy's own reduce rebuilds it as a reshape of a flat array, so the restored array no
        longer owns its memory, and a view made on it later (or rebuilt by `_rebuild_view`)
        has the flat array as `.base`: `view.base is arr` no longer held after a restore.
        """
        np = self._np
        if (
            type(obj) is not np.ndarray
            or obj.dtype.hasobject
            or obj.size == 0
            or not (obj.flags.c_contiguous or obj.flags.f_contiguous)
        ):
            return None
        order = "C" if obj.flags.c_contiguous else "F"
        # bytes in memory order, as a uint8 view (datetime64 and friends export no buffer)
        flat = (obj if order == "C" else obj.T).reshape(-1).view(np.uint8)
        buf = pickle.PickleBuffer(flat)
        return (_rebuild_owner, (buf, obj.dtype, obj.shape, order, bool(obj.flags.writeable)))

    def _tensor_holder(self, t: Any) -> tuple[int, int, Any]:
        """(storage address, holder address, numpy array) of the memory of dense CPU tensor
        `t`: the one array every tensor and numpy array sharing that memory is rebuilt over
        (pickle's memo makes it one object in the stream). A numpy array owning memory the
        storage lies in (``torch.from_numpy(a)``, ``torch.from_numpy(a[2:])``; met so far, or
        in pass 1, see `dumps`) is that array; else a uint8 array over the storage."""
        st = t.untyped_storage()
        ptr, n = st.data_ptr(), st.nbytes()
        got = self._tensor_memory.get(ptr)
        if got is not None and got[0] + got[1].nbytes < ptr + n:
            got = None  # (another storage at that address, larger: `t.resize_`, a new slice)
        if got is None:
            found = self.memory.find_any(ptr, ptr + n) if ptr and n else None
            if found is not None:
                got = found
            else:
                got = (ptr, storage_bytes(t))
                self._holders.add(id(got[1]))
                if ptr and n:
                    self.unmatched.append((ptr, ptr + n, True))
                    self.memory.add(ptr, ptr + n, got[1], False)
            self._alive.append(got[1])
            if ptr:
                self._tensor_memory[ptr] = got
        return ptr, got[0], got[1]

    def _reduce_tensor(self, t: Any, torch: Any) -> Any:
        """A dense CPU tensor (or parameter) over the numpy array holding its storage's bytes
        (`_tensor_holder`), with its ``.grad`` and its attributes.

        torch's own pickle copies each tensor's storage into the stream through ``torch.save``
        (in band, once per tensor: ``v = t[2:5]`` came back not sharing ``t``'s memory, and a
        ``t.numpy()`` array next to it as a copy) and drops ``.grad`` (a model restored after
        ``loss.backward()`` had none). None (torch's own pickle): another device or layout, a
        subclass. A non-leaf tensor that requires grad does not pickle (the engine recomputes it).
        """
        if t.requires_grad and not t.is_leaf:
            # torch pickles it as a leaf without its graph: not the same value (backward()
            # through it no longer reaches what it was computed from)
            raise pickle.PicklingError(
                "a tensor computed with autograd (requires grad, not a leaf): its graph "
                "cannot be pickled")
        tp = type(t)
        if (tp is not torch.Tensor and tp is not torch.nn.Parameter) or not _dense_cpu(t, torch) \
                or t.is_conj() or t.is_neg():
            return None
        ptr, low, memory = self._tensor_holder(t)
        args: tuple = (memory, str(t.dtype).removeprefix("torch."), t.storage_offset(),
                       tuple(t.shape), tuple(t.stride()), bool(t.requires_grad),
                       tp is torch.nn.Parameter)
        n = t.untyped_storage().nbytes()
        if low != ptr or memory.nbytes != n:  # (its storage is a part of that memory)
            args += (ptr - low, n)
        attributes = dict(vars(t))
        grad = t.grad if t.is_leaf else None
        if grad is None and not attributes:
            return (_rebuild_tensor, args)
        return (_rebuild_tensor, args, (grad, attributes), None, None, _set_tensor_state)

    def _over_tensor_memory(self, obj: Any) -> Any:
        """A numpy array over a tensor's memory (``t.numpy()``; an array a tensor was made
        from, ``torch.from_numpy(a)``, pickled after it): a view of the array that tensor is
        rebuilt over, so that the two share memory again after a restore. None: another array."""
        torch = self._torch
        if torch is None or id(obj) in self._holders or obj.dtype.hasobject or obj.size == 0:
            return None
        fb = _final_base(obj)
        lo, hi = _byte_span(obj)
        if isinstance(fb.base, torch.Tensor):
            try:
                _, low, memory = self._tensor_holder(fb.base)
            except Exception:  # noqa: BLE001 - a tensor without such memory: numpy's way
                return None
        else:
            # in the memory of a tensor pickled before it, over no numpy array then
            # (`torch.from_numpy(a)` pickled before `a`): a view of that tensor's holder
            found = self.memory.find(lo, hi, roots=False) if self._holders else None
            if found is None:
                return None
            low, memory = found
        if memory is obj or memory.nbytes < hi - low or lo < low:
            return None
        return (_rebuild_view, (memory, obj.__array_interface__["data"][0] - low, obj.shape,
                                obj.strides, obj.dtype, bool(obj.flags.writeable)))

    def _reduce_arrow_buffer(self, buf: Any) -> Any:
        """An arrow buffer over the memory of a numpy array of the stream, as a buffer over
        that array's memory again.

        arrow wraps numpy memory without a copy (``ax = pa.array(x)``, the numeric columns of
        ``pa.Table.from_pandas(df)``): writing into ``x`` changes ``ax``. Pickled by arrow, the
        buffer was a copy of its own, and after a restore ``x[0] = 7`` no longer showed in
        ``ax``. None (arrow's own pickling) for a buffer over no such array."""
        addr, size = int(buf.address), int(buf.size)
        if size and buf.is_cpu:
            found = self.memory.find_any(addr, addr + size)
            if found is not None:
                return (_arrow_buffer_over, (found[1], addr - found[0], size))
            self.unmatched.append((addr, addr + size, False))
            # a table and its slices hold the same buffers, each time as a new Python object:
            # the first one met stands for the others (shipped once, shared again after a load)
            first = self._arrow_first.setdefault((addr, size), buf)
            if first is not buf:
                return (_same_object, (first,))
            self._alive.append(buf)
        return None

    def _note_owner(self, obj: Any) -> None:
        """Record the memory of the numpy array owning (or exporting) `obj`'s memory, its final
        base (through the holders stride tricks leave, as `_reduce_ndarray` rebuilds views):
        tensors and arrow buffers over it are rebuilt over it (`_MemoryMap`)."""
        np = self._np
        root = _final_base(obj)
        if (type(root) is np.ndarray and not root.dtype.hasobject and root.size
                and (root.flags.c_contiguous or root.flags.f_contiguous)
                and id(root) not in self.memory.ids):
            lo = int(root.__array_interface__["data"][0])
            self.memory.add(lo, lo + int(root.nbytes), root, True)

    def _reduce_ndarray(self, obj: Any) -> Any:
        np = self._np
        self.seen_arrays.add(id(obj))
        self._alive.append(obj)
        if self._pa is not None or self._torch is not None:
            self._note_owner(obj)
        rv = self._over_tensor_memory(obj)
        if rv is not None:
            return rv
        base = obj.base
        if type(obj) is np.memmap and type(base) is mmap.mmap:
            return _reduce_memmap(obj, np)
        if not isinstance(base, np.ndarray):
            base = array_interface_base(base)  # an `as_strided` / `sliding_window_view` result
        if not isinstance(base, np.ndarray):
            rv = self._reduce_over_bytearray(obj)
            if rv is None:
                rv = self._reduce_owner(obj)
            return rv if rv is not None else super().reducer_override(obj)
        root = base
        while isinstance(root.base, np.ndarray) or array_interface_base(root.base) is not None:
            root = root.base if isinstance(root.base, np.ndarray) else array_interface_base(root.base)
        if not isinstance(root.base, np.ndarray) and root.base is not None:
            rv = self._reduce_over_bytearray(obj)
            if rv is not None:
                return rv
        if (
            (type(root) is not np.ndarray and type(root) is not np.memmap
             and not _plain_array_subclass(type(root), np))
            or obj.dtype.hasobject
            or root.dtype.hasobject
            or obj.size == 0
            or not (root.flags.c_contiguous or root.flags.f_contiguous)
        ):
            if (obj.dtype.hasobject or root.dtype.hasobject) and obj.size and root.size:
                # its elements are its base's slots (`view = arr[::2]; view[1] = b` stores in
                # `arr`): copied, it is no longer over `arr` (see `dumps`)
                self.object_view_spans.setdefault(id(root), (_byte_span(root), []))[1].append(
                    _byte_span(obj))
            return super().reducer_override(obj)  # copied by numpy's own reduce
        if obj.nbytes == root.nbytes and (obj.flags.c_contiguous or obj.flags.f_contiguous):
            # covers all of its base's memory (``np.arange(60).reshape(6, 10)``, ``a.T``): ship
            # the hidden base once and rebuild this array and every other view of it on top
            self.covered_roots.add(id(root))
        offset = obj.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        lo = hi = offset
        for n, s in zip(obj.shape, obj.strides, strict=True):
            if s < 0:
                lo += s * (n - 1)
            else:
                hi += s * (n - 1)
        if lo < 0 or hi + obj.itemsize > root.nbytes:
            return super().reducer_override(obj)
        if type(root) is np.memmap and type(root.base) is mmap.mmap:
            # a view of a memory-mapped file: of that file mapped again, however the stream
            # holds the map (it is a reference to the file, not a copy of its bytes)
            return (_rebuild_view, (root, offset, obj.shape, obj.strides, obj.dtype,
                                    bool(obj.flags.writeable), type(obj)))
        if self._view_roots is None:
            if id(root) not in self.seen_arrays and id(root) not in self.covered_roots:
                # maybe later in the stream, or hidden (``X = data[:, :-1]; rows = X[:5]``):
                # see dumps, which ships a hidden base when views of it overlap each other
                self.deferred_roots.add(id(root))
                self.view_spans.setdefault(id(root), []).append((lo, hi + obj.itemsize))
                if may_self_overlap(obj):
                    # (its elements alias each other: copied, `w[0, 1] = 5` no longer showed
                    # in `w[1, 0]`; its base is shipped, as for views overlapping each other)
                    self.aliased_roots.add(id(root))
                return super().reducer_override(obj)
        elif id(root) not in self._view_roots:
            return super().reducer_override(obj)
        if type(obj) is not np.ndarray:
            # a recarray or a matrix over a hidden array is a view of it of its own type
            return (_rebuild_view, (root, offset, obj.shape, obj.strides, obj.dtype,
                                    bool(obj.flags.writeable), type(obj)))
        if not obj.flags.writeable:
            return (_rebuild_view, (root, offset, obj.shape, obj.strides, obj.dtype, False))
        return (_rebuild_view, (root, offset, obj.shape, obj.strides, obj.dtype))


def _reduce_memmap(m: Any, np: Any) -> tuple:
    """A memory-mapped file (``np.memmap``) is that file mapped again, checked to be unchanged.

    numpy pickles a memmap as its bytes, so ``m = np.memmap(path, mode='r+', ...)`` came back
    as an array in memory that only looked like a memmap (no file, no mode): writes no longer
    reached the file, a multi-gigabyte map was copied into the checkpoint, and the restore
    verified it as equal. Now the stream holds the path, dtype, shape, offset, order and mode,
    and a digest of the mapped bytes (flushed to the file first: they are the file's bytes).
    The restore maps the file again only if those bytes are still there; a file missing or
    changed since (more writes through the map after the checkpoint, before the kernel died)
    fails the load with the reason, so the variable is re-made by its cells or named as lost.
    It is not shipped as a copy instead: the point of a memmap is that the file holds the data
    (often more of it than memory), and a copy would take writes meant for the file silently.
    A copy-on-write map (``mode='c'``) ships its bytes, which may differ from the file's, and
    is mapped again over the file with them written into its private pages.
    """
    name = m.filename
    if not isinstance(name, str) or not os.path.isabs(name):
        raise TypeError("cannot pickle a memmap that is not over a named file")
    if not (m.flags.c_contiguous or m.flags.f_contiguous) or m.size == 0:
        raise TypeError(f"cannot pickle a memmap of {name!r} that is not contiguous")
    order = "C" if m.flags.c_contiguous else "F"
    flat = (m if order == "C" else m.T).reshape(-1).view(np.uint8).view(np.ndarray)
    if m.mode == "c":
        return (_remap_memmap, (name, m.dtype, m.mode, m.offset, m.shape, order,
                                bool(m.flags.writeable), None, pickle.PickleBuffer(flat)))
    if m.mode in ("r+", "w+"):
        m.flush()  # the file holds what the map holds (another node reads the file)
    return (_remap_memmap, (name, m.dtype, m.mode, m.offset, m.shape, order,
                            bool(m.flags.writeable), xxhash.xxh3_128_hexdigest(flat), None))


def _remap_memmap(name: str, dtype: Any, mode: str, offset: int, shape: tuple, order: str,
                  writeable: bool, digest: str | None, data: Any) -> Any:
    """Map the file of `_reduce_memmap` again, or raise saying why it cannot be."""
    import numpy as np

    if not os.path.isfile(name):
        raise FileNotFoundError(
            f"memory-mapped file {name} does not exist here: keep files a notebook maps on "
            "storage every node sees (the home directory), or map it again")
    try:
        # (never "w+" again: that would make the file anew, empty)
        m = np.memmap(name, dtype=dtype, mode="r+" if mode == "w+" else mode, offset=offset,
                      shape=shape, order=order)
    except ValueError as e:  # shorter than the map
        raise ValueError(f"memory-mapped file {name} is no longer as it was at the checkpoint "
                         f"({e}): map it again") from None
    flat = (m if order == "C" else m.T).reshape(-1).view(np.uint8).view(np.ndarray)
    if digest is not None and xxhash.xxh3_128_hexdigest(flat) != digest:
        raise ValueError(
            f"memory-mapped file {name} changed since the checkpoint (written after it, or "
            "replaced): mapped again it would not hold the values it had; map it again")
    if data is not None:
        flat[...] = np.frombuffer(data, dtype=np.uint8)  # a copy-on-write map's own bytes
    m.mode = mode
    if not writeable:
        m.flags.writeable = False
    return m


def _plain_array_subclass(tp: type, np: Any) -> bool:
    """An ndarray subclass pickled as numpy pickles an ndarray (``np.recarray``,
    ``np.matrix``, most subclasses a notebook defines), which is rebuilt as a view like one.

    Copied by numpy's reduce, ``rec = np.rec.array(...)`` and ``col = rec.f`` came back as two
    arrays: ``col[0] = 9`` no longer changed ``rec`` (and the restore verified it, as the
    library's pickle of the value). A subclass with a pickle of its own (a masked array: mask,
    fill value) keeps it.
    """
    return (issubclass(tp, np.ndarray) and tp is not np.memmap
            and tp.__reduce_ex__ is np.ndarray.__reduce_ex__
            and tp.__reduce__ is np.ndarray.__reduce__
            and tp.__setstate__ is np.ndarray.__setstate__)


def _reduce_void_view(row: Any, np: Any) -> tuple | None:
    """A record of a structured array (``row = arr[1]``) is a view of it: rebuilt over it.

    numpy pickles it by value, so after a restore ``row['x'] = 5`` no longer wrote into ``arr``
    (and the restore verified it: a scalar is compared by value). None: pickled by value.
    """
    base = row.base
    offset = row.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    stride = base.strides[0] if base.ndim == 1 else 0
    if stride <= 0 or offset % stride or not 0 <= offset // stride < len(base):
        return None
    return (_record_of, (base, offset // stride))


def _record_of(base: Any, index: int) -> Any:
    return base[index]


def _rebuild_over_buffer(buffer: bytearray, offset: int, shape: tuple, strides: tuple,
                         dtype: Any, writeable: bool) -> Any:
    import numpy as np

    arr = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset, strides=strides)
    if not writeable:
        _read_only_later(arr)
    return arr


def _memoryview_of(exporter: Any, readonly: bool) -> memoryview:
    m = memoryview(exporter)
    return m.toreadonly() if readonly and not m.readonly else m


def _rebuild_memoryview(exporter: Any, offset: int, nbytes: int, fmt: str,
                        shape: tuple, readonly: bool, step: int = 1) -> memoryview:
    # (a BytesIO's: its `getbuffer()`, which writes into it)
    whole = (exporter.getbuffer() if type(exporter) is io.BytesIO
             else memoryview(exporter)).cast("B")
    if step < 0:  # one dimension, every step-th item backwards from offset
        size = struct.calcsize(fmt)
        items = whole[(offset + size) % size : offset + size]
        m = items.cast(fmt)[:: step][: shape[0]]
    elif step != 1:  # one dimension, every step-th item from offset
        items = whole[offset:]
        size = struct.calcsize(fmt)
        usable = (len(items) // size) * size
        m = items[:usable].cast(fmt)[:: step][: shape[0]]
    else:
        m = whole[offset : offset + nbytes]
        if fmt != "B" or len(shape) != 1:
            m = m.cast(fmt, shape)
    if readonly and not m.readonly:
        m = m.toreadonly()
    return m


def _keep_inherited_entries(cls: type, rv: Any) -> Any:
    """Put back the class-dict entries cloudpickle drops because a base has the same object.

    ``class E: __hash__ = object.__hash__`` (the usual way to keep instances hashable next to
    an ``__eq__``) came back without ``__hash__`` in its dict: a different class as far as the
    restore's verification can tell, so the variable was reported as not restored. Entries the
    class really defines are its value; only cloudpickle's own exclusions stay out.
    """
    try:
        make, args, (clsdict, slotstate), *rest = rv
        own = type.__dict__["__dict__"].__get__(cls)
        bases = type.__dict__["__bases__"].__get__(cls)
    except (TypeError, ValueError, KeyError):  # a cloudpickle we do not know: keep its behaviour
        return rv
    added = {}
    for name, value in own.items():
        if name in clsdict or name in _CLASS_DICT_SKIP or type(value) not in _READDABLE:
            continue
        if any(type.__dict__["__dict__"].__get__(b).get(name, _MISSING) is value for b in bases):
            added[name] = value
    qualname = type.__dict__["__qualname__"].__get__(cls)
    if qualname != type.__dict__["__name__"].__get__(cls) and "__qualname__" not in clsdict:
        # a nested class (``Outer.Inner``) is made by its name alone and came back as
        # ``Inner``: it and its instances did not verify. Its class state sets it back
        added["__qualname__"] = qualname
    if make is _MAKE_SKELETON_CLASS and _quiet_creation(cls):
        make = _make_quiet_skeleton_class
        rv = (make, args, (clsdict, slotstate), *rest)
        if not added and "__parameters__" not in clsdict:
            return rv
    params = clsdict.get("__parameters__", _MISSING)
    if params is not _MISSING and any(getattr(b, "__parameters__", None) is params
                                      for b in own.get("__orig_bases__", ())):
        # ``class Box(Generic[T])``: Generic.__init_subclass__ gives the class the very tuple
        # of its ``Generic[T]`` base, which it does again when the class is made from its
        # ``__orig_bases__``; set from the class dict, it was a copy (the class did not verify)
        clsdict = {k: v for k, v in clsdict.items() if k != "__parameters__"}
    elif not added:
        return rv
    return (make, args, ({**clsdict, **added}, slotstate), *rest)


def _notebook_defined(cls: Any) -> bool:
    return type.__dict__["__dict__"].__get__(cls).get("__module__") == "__main__"


def _notebook_metaclass(meta: type) -> bool:
    """A metaclass the notebook defined on `type` alone (no library metaclass in between,
    whose ``__new__`` may build what the class needs: ABCMeta's registry)."""
    return meta is not type and all(m in (type, object) or _notebook_defined(m)
                                    for m in meta.__mro__)


def _quiet_creation(cls: type) -> bool:
    """Whether making `cls` again runs notebook code: its notebook metaclass's ``__new__`` or
    ``__init__``, or an ``__init_subclass__`` of a notebook base (`_make_quiet_skeleton_class`)."""
    try:
        return _notebook_metaclass(type(cls)) or any(
            _notebook_defined(b) and "__init_subclass__" in type.__dict__["__dict__"].__get__(b)
            for b in cls.__mro__[1:])
    except Exception:  # noqa: BLE001 - a class we cannot read: cloudpickle's way
        return False


def _no_init_subclass(cls: type, **kwargs: Any) -> None:
    pass


def _make_quiet_skeleton_class(type_constructor: type, name: str, bases: tuple,
                               type_kwargs: dict, class_tracker_id: Any, extra: Any) -> type:
    """cloudpickle's skeleton class, made without running the notebook's class-creation code.

    A registry filled by ``__init_subclass__`` or by a metaclass's ``__new__`` (``REG.append(
    cls)``) is in the checkpoint already, with the classes in it; made again while loading,
    that code ran against a namespace without the names it uses (``NameError: Plugin`` or
    ``REG``: the classes, the registry and every instance were lost), or would have
    registered the class twice. A notebook metaclass makes it with ``type.__new__`` (the
    attributes its ``__new__`` set are in the class state), and notebook bases'
    ``__init_subclass__`` are set aside while it is made.
    """
    type_kwargs = {sys.intern(k): v for k, v in type_kwargs.items()}
    resolved = types.resolve_bases(bases)
    quiet = {b: type.__dict__["__dict__"].__get__(b)["__init_subclass__"]
             for base in resolved for b in base.__mro__
             if _notebook_defined(b) and "__init_subclass__" in type.__dict__["__dict__"].__get__(b)}
    for b in quiet:
        type.__setattr__(b, "__init_subclass__", classmethod(_no_init_subclass))
    try:
        if _notebook_metaclass(type_constructor):
            ns = dict(type_kwargs)
            if resolved is not bases:
                ns["__orig_bases__"] = bases
            skeleton = type.__new__(type_constructor, name, resolved, ns)
        else:
            skeleton = types.new_class(name, bases, {"metaclass": type_constructor},
                                       lambda ns: ns.update(type_kwargs))
    finally:
        for b, f in quiet.items():
            type.__setattr__(b, "__init_subclass__", f)
    return cloudpickle.cloudpickle._lookup_class_or_track(class_tracker_id, skeleton)


def _with_enum_aliases(cls: Any, rv: Any) -> Any:
    """Make a notebook enum again with its aliases (``ALIAS = 1`` next to ``A = 1``).

    cloudpickle makes it from its canonical members only (iterating the class skips aliases):
    the restored class had ``ALIAS`` as a plain attribute, not in ``__members__``, so
    ``Corner['ALIAS']`` raised, and the class did not verify. Every name of ``__members__``,
    in definition order, is given to the class statement as it was, which makes the same
    aliases again.
    """
    try:
        make, args, (clsdict, slotstate), *rest = rv
        members = {name: m._value_ for name, m in cls.__members__.items()}
    except (TypeError, ValueError, AttributeError):  # a cloudpickle we do not know
        return rv
    if len(args) < 4 or not isinstance(args[3], dict) or len(members) == len(args[3]):
        return rv
    clsdict = {k: v for k, v in clsdict.items() if k not in members}
    return (make, (*args[:3], members, *args[4:]), (clsdict, slotstate), *rest)


def _with_member_state(cls: Any, rv: Any) -> Any:
    """Make a notebook enum's members again with their own attributes.

    cloudpickle makes the members from their values before the class has its methods, so the
    class's ``__init__`` never ran for them: ``Planet.EARTH.mass`` raised AttributeError after
    a restore, and an attribute a cell set on a member (``Status.OPEN.note = 'x'``) was gone,
    while the class verified (a member was digested by its name). The class state now ends
    with each member's attributes, set after the methods (pickled with the class, so a list a
    member holds stays the list another variable holds), in the order the member had them.
    """
    try:
        members = type.__getattribute__(cls, "_member_map_")
    except AttributeError:
        return rv
    state = {name: (extra, list(object.__getattribute__(m, "__dict__")))
             for name, m in members.items() if (extra := enum_member_state(m)) is not None}
    if not state:
        return rv
    try:
        make, args, cls_state, *rest = rv
    except (TypeError, ValueError):  # a cloudpickle we do not know
        return rv
    if len(rest) != 3:
        return rv
    if rest[2] is _set_enum_state:
        class_state, pseudo = cls_state
    elif rest[2] is _CLASS_SETSTATE:
        class_state, pseudo = cls_state, []
    else:
        return rv
    return (make, args, (class_state, pseudo, state), rest[0], rest[1], _set_enum_state)


def _with_pseudo_members(cls: Any, rv: Any) -> Any:
    """Make a notebook enum's pseudo-members again, in the order the notebook made them.

    A ``Flag`` combination (``Perm.R | Perm.W``, ``Perm(0)``) is a pseudo-member the class
    makes on first use and caches in ``_value2member_map_``. cloudpickle rebuilds that cache
    from the canonical members only, and each pickled combination (``Perm(6)``) is made again
    when the load reaches it, in the pickle's order (sorted variable names), not the
    notebook's: the class's cache came back in another order, and the class with every
    variable holding it did not verify. The class state now ends with making them, in the
    cache's order, before anything in the blob can ask for one.
    """
    try:
        make, args, state, *rest = rv
        cache = type.__getattribute__(cls, "_value2member_map_")
        members = {id(m) for m in type.__getattribute__(cls, "_member_map_").values()}
    except (TypeError, ValueError, AttributeError):  # a cloudpickle we do not know
        return rv
    pseudo = [v for v, m in cache.items() if id(m) not in members]
    if not pseudo or len(rest) != 3 or rest[2] is not _CLASS_SETSTATE:
        return rv
    return (make, args, (state, pseudo), rest[0], rest[1], _set_enum_state)


def _set_enum_state(cls: Any, state: tuple) -> Any:
    class_state, pseudo, *more = state
    _CLASS_SETSTATE(cls, class_state)
    members = type.__getattribute__(cls, "_member_map_")
    for name, (attrs, order) in (more[0] if more else {}).items():
        member = members.get(name)
        if member is None:
            continue
        d = object.__getattribute__(member, "__dict__")
        d.update(attrs)
        for k in order:  # in the order the member had them (``vars(member)``)
            if k in d:
                d[k] = d.pop(k)
    cache = type.__getattribute__(cls, "_value2member_map_")
    for value in pseudo:
        if value not in cache:
            try:
                cls(value)
            except Exception:  # noqa: BLE001 - the restore's verification names the class
                pass
    return cls


_MISSING = object()
_CLASS_SETSTATE = getattr(cloudpickle.cloudpickle, "_class_setstate", None)
_MAKE_SKELETON_CLASS = getattr(cloudpickle.cloudpickle, "_make_skeleton_class", None)
_MAKE_SKELETON_ENUM = getattr(cloudpickle.cloudpickle, "_make_skeleton_enum", None)
# kinds of inherited entries put back: a slot wrapper (``object.__hash__``) or a function pickles
# by reference; C method descriptors (``__init_subclass__`` of a builtin base) do not pickle
_READDABLE = frozenset({types.WrapperDescriptorType, types.FunctionType, type(None)})
# what cloudpickle leaves out on purpose (descriptors rebuilt by type(), abc caches)
_CLASS_DICT_SKIP = frozenset({"__dict__", "__weakref__", "_abc_impl", "_abc_cache",
                              "_abc_negative_cache", "_abc_negative_cache_version",
                              "_abc_registry", "__annotate_func__"})


def _registered_module(name: str) -> types.ModuleType:
    """The module the notebook registered as `name` (see `changes.registered_module`): the one
    in ``sys.modules`` if a cell already made it again, else a new one, registered; its
    attributes follow as state."""
    module = sys.modules.get(name)
    if type(module) is not types.ModuleType:
        module = types.ModuleType(name)
        sys.modules[name] = module
    return module


def _import_module(name: str, source: str) -> types.ModuleType:
    """Import a notebook-local module by name; failing that, from the file it came from.

    A module is shipped by reference, but a local one is often importable only because a cell
    put its directory on ``sys.path`` (``sys.path.insert(0, 'lib')``): the restoring kernel's
    path does not have it until that cell runs again, if it runs at all. The file is on the
    same volume, so load it from there, under its name, as the import did.
    """
    import importlib
    import importlib.util

    try:
        return importlib.import_module(name)
    except ImportError:
        if not os.path.isfile(source):
            raise
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load module {name!r} from {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _write_state(write: Any, *args: Any) -> None:
    """Write the state of a notebook module or class now, or, inside `loads_deferred`, leave
    the write to the caller."""
    deferred = getattr(_load_ctx, "deferred", None)
    if deferred is not None:
        deferred.append(functools.partial(write, *args))
    else:
        write(*args)


class _ModuleGlobal:
    """A variable that is a global of one of the notebook's modules (``from exp import A``),
    in the stream: the value, and where it lives, so that the load puts it back there."""

    __slots__ = ("value", "home")

    def __init__(self, value: Any, home: tuple[str, str, str]) -> None:
        self.value, self.home = value, home

    def __reduce__(self) -> tuple:
        return (_module_global, (self.value, *self.home))


def _module_global(value: Any, modname: str, source: str, key: str) -> Any:
    """The loaded value, made the module's attribute again (when the value is put in place:
    the module is imported then, as the file is then; a file changed since still gets the
    session's object, which its functions saw)."""
    _write_state(_put_in_module, value, modname, source, key)
    return value


def _put_in_module(value: Any, modname: str, source: str, key: str) -> None:
    setattr(_import_module(modname, source), key, value)


def _with_module_homes(values: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`values` with each global of a notebook module wrapped (`_ModuleGlobal`); whether any
    is. A stream holding one writes into the module when loaded: never in this process."""
    out, any_home = {}, False
    for name, value in values.items():
        home = module_global_of(value, name)
        if home is not None:
            out[name], any_home = _ModuleGlobal(value, home), True
        else:
            out[name] = value
    return out, any_home


def _set_module_state(module: types.ModuleType, state: dict[str, Any]) -> None:
    _write_state(vars(module).update, state)


def _set_registered_module_state(module: types.ModuleType, state: dict[str, Any]) -> None:
    _write_state(_register_with_state, module, state)


def _register_with_state(module: types.ModuleType, state: dict[str, Any]) -> None:
    # registered again when put in place: a cell the restore re-ran before (for another name
    # it binds) may have registered a module of its own under the name meanwhile
    sys.modules[module.__name__] = module
    vars(module).update(state)


def _reduce_local_class(cls: type) -> Any:
    """A class of one of the notebook's own modules, with the data its attributes hold now.

    It is imported by name like any module's class, but what cells did to its class-level
    attributes (``Config.lr = 0.1``, a registry dict a classmethod fills) is session state:
    the import alone gives the file's values. Methods and other descriptors come from the
    file; plain data attributes are set again after the import. None: pickle it as usual.
    """
    if isinstance(cls, enum.EnumMeta) or not local_class(cls):
        return None
    try:
        d = type.__dict__["__dict__"].__get__(cls)
        modname, qualname = d["__module__"], type.__dict__["__qualname__"].__get__(cls)
    except Exception:  # noqa: BLE001 - a hostile metaclass: cloudpickle's way
        return None
    mod = sys.modules[modname]  # (local_class found it there)
    found: Any = mod
    for part in str(qualname).split("."):
        found = getattr(found, part, None)
    if found is not cls:
        return None  # not reachable by its name (redefined, or made in a function)
    state = {k: v for k, v in d.items()
             if type(k) is str and not (k.startswith("__") and k.endswith("__"))
             and k not in _CLASS_DICT_SKIP and not hasattr(type(v), "__get__")}
    if not state:
        return None
    return (_local_class, (modname, local_source(mod), qualname), state, None, None,
            _set_class_state)


def _local_class(modname: str, source: str, qualname: str) -> type:
    found: Any = _import_module(modname, source)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _set_class_state(cls: type, state: dict[str, Any]) -> None:
    _write_state(_set_class_attributes, cls, state)


def _set_class_attributes(cls: type, state: dict[str, Any]) -> None:
    for k, v in state.items():
        type.__setattr__(cls, k, v)


def _make_exec_function(code: types.CodeType, globals_: dict, *more: Any) -> types.FunctionType:
    return types.FunctionType(code, globals_, *more)


def _set_exec_function_state(func: Any, state: tuple) -> None:
    """cloudpickle's function state setter, without its writes into the function's globals:
    they are the notebook's dict (`_Pickler._dynamic_function_reduce`), loaded as it was
    (cloudpickle's setter and its maker put ``__builtins__`` into it, before the dict's own
    items were loaded: another order, so another value)."""
    inner, slotstate = state
    slotstate = dict(slotstate)
    closure = slotstate.pop("__closure__", None)
    slotstate.pop("_cloudpickle_submodules", None)
    func.__dict__.update(inner)
    for cell, filled in zip(func.__closure__ or (), closure or (), strict=False):
        try:
            cell.cell_contents = filled.cell_contents
        except ValueError:  # an empty cell
            pass
    for k, v in slotstate.items():
        setattr(func, k, v)


def _reduce_keeping_dict(obj: Any, tp: type) -> tuple | None:
    """An instance pickled the default way, whose ``__dict__`` comes back as the dict itself.

    Pickle makes a new instance and copies the state dict into the instance's own: with
    ``attrs = vars(box)`` next to ``box`` (one co-variable, one stream, so one dict by memo)
    the restored ``attrs`` was no longer ``box``'s dict, and writes through it no longer
    reached ``box``. The state dict is made the instance's dict instead (`_set_instance_state`).
    None: not an instance of that kind (its class has a reduce or a setstate of its own, or a
    reducer in the pickler's dispatch table), or its dict is held by nothing else.
    """
    if (isinstance(obj, type) or tp.__reduce_ex__ is not object.__reduce_ex__
            or tp.__reduce__ is not object.__reduce__
            or getattr(tp, "__getstate__", None) is not _OBJECT_GETSTATE
            or getattr(tp, "__setstate__", None) is not None):
        return None
    desc = _instance_dict_descriptor(tp)
    if desc is None:
        return None
    try:
        own = desc.__get__(obj, tp)
        # held by the instance, `own` and the call's argument only: nothing else can alias it,
        # and pickle's own way is kept
        if sys.getrefcount(own) <= 3:
            return None
        rv = object.__reduce_ex__(obj, 5)
    except Exception:  # noqa: BLE001 - left to pickle, which reports it
        return None
    if type(rv) is not tuple or not 2 <= len(rv) <= 5 or type(own) is not dict:
        return None
    rv = (*rv, *(None,) * (5 - len(rv)))
    state = rv[2]
    if state is None:  # (an empty dict: pickle would set nothing)
        state = own
    elif not (state is own or (type(state) is tuple and len(state) == 2 and state[0] is own)):
        return None
    return (rv[0], rv[1], state, rv[3], rv[4], _set_instance_state)


_OBJECT_GETSTATE = getattr(object, "__getstate__", None)

_BUILTIN_CONTAINERS = (dict, list, set, frozenset)


def _reduce_container_subclass(obj: Any, tp: type) -> tuple | None:
    """A notebook subclass of dict, list, set or frozenset whose items pickle's way would put
    back through its own code, or None (pickle's way, which gives it back as it is).

    Pickle fills a dict subclass through its ``__setitem__`` and a list subclass through its
    ``extend``, before the instance's attributes are set, and rebuilds a set or frozenset
    subclass by calling the class with the items: ``__setitem__`` doubling values stored them
    doubled again, one counting writes in ``self.writes`` failed (no attribute yet, so the
    value was lost), and ``class Named(set): def __init__(self, name)`` came back empty (a
    verification failure each time). The items go in as the base type stores them, then the
    attributes, as pickle sets them (`_set_instance_state`). Classes with a reduce, a
    getstate or a setstate of their own are left to it.
    """
    base = next(b for b in _BUILTIN_CONTAINERS if isinstance(obj, b))
    if (tp is base or tp.__reduce_ex__ is not object.__reduce_ex__
            or tp.__reduce__ is not base.__reduce__
            or getattr(tp, "__getstate__", None) is not _OBJECT_GETSTATE
            or getattr(tp, "__setstate__", None) is not None or _solid_base(tp) is not base):
        return None
    if base is dict:
        own_code = tp.__setitem__ is not dict.__setitem__
    elif base is list:
        own_code = tp.extend is not list.extend
    else:
        own_code = tp.__new__ is not base.__new__ or tp.__init__ is not base.__init__
    if not own_code:
        return None
    try:
        state = obj.__getstate__()
    except Exception:  # noqa: BLE001 - left to pickle, which reports it
        return None
    if base is frozenset:
        return (frozenset.__new__, (tp, list(frozenset.__iter__(obj))), state, None, None,
                _set_instance_state)
    if base is set:
        return (set.__new__, (tp,), (list(set.__iter__(obj)), state), None, None,
                _set_container_state)
    try:  # (made as pickle makes it: ``tp.__new__``, with its __getnewargs__ if any)
        make, args = object.__reduce_ex__(obj, 5)[:2]
    except Exception:  # noqa: BLE001 - left to pickle, which reports it
        return None
    items = list(dict.items(obj)) if base is dict else list(list.__iter__(obj))
    return (make, args, (items, state), None, None, _set_container_state)


def _set_typevar_module(tv: Any, module: Any) -> None:
    """A TypeVar loaded by value back in the module it was made in (`_Pickler.reducer_override`)."""
    if type(module) is str:
        try:
            tv.__module__ = module
        except (AttributeError, TypeError):  # (a C TypeVar of a later Python that refuses it)
            pass


def _set_container_state(obj: Any, state: tuple) -> None:
    """The items of a container subclass as its base type stores them, then its attributes
    (`_reduce_container_subclass`)."""
    items, attrs = state
    if isinstance(obj, dict):
        dict.update(obj, items)
    elif isinstance(obj, list):
        list.extend(obj, items)
    else:
        set.update(obj, items)
    if attrs is not None:
        _set_instance_state(obj, attrs)


def _reduce_ctypes(obj: Any, ct: Any, np: Any) -> tuple | None:
    """ctypes array types and objects over another's memory, or None (pickle's way).

    An array type made in the notebook (``ctypes.c_int * 2``) is ``c_int * 2`` again (ctypes
    caches array types): cloudpickle, rebuilding it as a class, failed to load it. An object
    made by ``from_buffer(ba, offset)`` is made so again, over the `ba` of the same stream:
    its own pickle is a copy of the bytes, and the restored ``x.value = 9`` no longer wrote
    into `ba`, while both verified.
    """
    if isinstance(obj, type):
        try:
            if (issubclass(obj, ct.Array) and obj is not ct.Array
                    and obj._type_ * obj._length_ is obj):  # (not a subclass of its own)
                return (_ctypes_array_type, (obj._type_, obj._length_, obj.__module__))
        except Exception:  # noqa: BLE001 - pickle's own way
            pass
        return None
    if np is None or not isinstance(obj, ct._SimpleCData.__base__):
        return None
    try:
        held = obj._objects
        if type(held) is dict and len(held) == 1:
            held = next(iter(held.values()))
        if type(held) is not memoryview:
            return None
        exporter = memoryview_exporter(held)
        if exporter is None:
            return None
        base = np.frombuffer(held, dtype=np.uint8).__array_interface__["data"][0]
        offset = ct.addressof(obj) - base
    except Exception:  # noqa: BLE001 - pickle's own way
        return None
    if not 0 <= offset <= held.nbytes - ct.sizeof(obj):
        return None
    return (_ctypes_over, (type(obj), exporter, offset))


def _ctypes_array_type(item: type, length: int, module: str) -> type:
    """``item * length``, named as where it was first made in the checkpointed process (the
    type is ctypes' one per item and length: made here by the unpickler, its __module__ was
    ctypes', and values of it digested differently)."""
    tp = item * length
    if tp.__module__ != module:
        tp.__module__ = module
    return tp


def _ctypes_over(tp: type, exporter: Any, offset: int) -> Any:
    return tp.from_buffer(exporter, offset)


def _reduce_keeping_attrs(obj: Any) -> tuple | None:
    """A pandas frame or series whose ``attrs`` dict something else holds (``meta =
    df.attrs``), pickled so that it comes back with that dict itself.

    pandas' ``__setstate__`` assigns the pickled ``attrs`` through the property, which copies
    it: the restored ``meta`` was no longer ``df.attrs``, so ``meta['k'] = 1`` no longer
    reached the frame, and (the digest walked ``attrs`` without its identity) it verified.
    None: its attrs are its own alone, or pandas' state is not the dict this expects.
    """
    try:
        attrs = obj._attrs
        if type(attrs) is not dict or sys.getrefcount(attrs) <= 3:  # obj, `attrs`, the call
            return None
        rv = obj.__reduce_ex__(5)
    except Exception:  # noqa: BLE001 - left to pickle, which reports it
        return None
    if (type(rv) is not tuple or not 3 <= len(rv) <= 5 or type(rv[2]) is not dict
            or rv[2].get("attrs") is not attrs):
        return None
    return (*rv, *(None,) * (5 - len(rv)), _set_frame_state)


def _set_frame_state(obj: Any, state: dict) -> None:
    """pandas' ``__setstate__``, then the pickled ``attrs`` dict itself as the object's."""
    obj.__setstate__(state)
    object.__setattr__(obj, "_attrs", state["attrs"])


def _instance_dict_descriptor(tp: type) -> Any:
    """The C ``__dict__`` getset descriptor of instances of `tp`, or None (another kind, or
    none: `changes._dict_descriptor`)."""
    desc = _dict_descriptor(tp)
    return desc if type(desc) is types.GetSetDescriptorType else None


def _set_instance_state(obj: Any, state: Any) -> None:
    """Pickle's own setting of an instance's state, without asking the instance for
    ``__setstate__`` first.

    A class with ``def __getattr__(self, name): return getattr(self._target, name)`` (a proxy,
    a wrapper, ``tempfile.NamedTemporaryFile``) answers that question from an empty instance:
    ``self._target`` is missing too, and the lookup recursed until a RecursionError, so the
    value could not be loaded and was lost with everything sharing its co-variable."""
    slots = None
    if type(state) is tuple and len(state) == 2:
        state, slots = state
    if type(state) is dict:
        own = object.__getattribute__(obj, "__dict__")
        desc = _instance_dict_descriptor(type(obj)) if not own else None
        if desc is not None:
            # the state dict becomes the instance's dict (an alias of it stays one,
            # `_reduce_keeping_dict`); a dict the new instance filled already is updated
            desc.__set__(obj, state)
        elif state:
            own.update(state)
    elif state:
        object.__getattribute__(obj, "__dict__").update(state)
    for name, value in (slots or {}).items():
        setattr(obj, name, value)


def _reduce_cell(cell: types.CellType) -> Any:
    """An empty cell now, its contents through a state setter once the cell is memoized.

    Creating the cell first and filling it afterwards is what makes shared and self-referencing
    closure cells pickle: the contents may lead back to the function that owns the cell.
    """
    try:
        contents = cell.cell_contents
    except ValueError:  # an empty cell (a free variable not bound yet)
        return (_make_empty_cell, ())
    return (_make_empty_cell, (), (contents,), None, None, _fill_cell)


def _make_empty_cell() -> types.CellType:
    return types.CellType()


def _fill_cell(cell: types.CellType, state: tuple[Any]) -> None:
    cell.cell_contents = state[0]


#: writable buffers of the standard library an array can be a window on (`np.frombuffer(ba)`)
_WRITABLE_EXPORTERS = (bytearray, array.array)

#: a dict view's type -> the method that makes it, called on the view's dict at load
_DICT_VIEWS: dict[type, Any] = {
    type(getattr(m, name)()): getattr(type(m), name)
    for m in ({}, collections.OrderedDict())
    for name in ("keys", "values", "items")
}

# a dict's iterators: (view of the dict it walks, backwards)
_DICT_ITERATORS: dict[type, tuple[Any, bool]] = {
    type(make(view({}))): (view, make is reversed)
    for view in (dict.keys, dict.values, dict.items)
    for make in (iter, reversed)
}


def _reduce_dict_iterator(it: Any, namespace: Any) -> tuple | None:
    """A dict's iterator is an iterator over that dict, as far along as it was.

    Python's own pickle of one is ``iter(list_of_what_is_left)``: `it = iter(d.values())`
    came back walking a copy (``d['b'] = 200`` no longer showed in ``next(it)``) and a
    ``list_iterator``, and the restore verified it (an iterator is checked by its type, and
    the loaded copy's type is accepted as what its pickle makes). None (Python's pickle) for
    one that is done, over a module's namespace, or over a dict changed in size since (it
    raises at its next step, and so does its pickle).

    One at the end that has not yet said so still holds its dict: once the dict grows, its
    next step raises ("dictionary changed size during iteration"). Pickled as an empty
    ``list_iterator`` it stopped instead, and verified; it is rebuilt at the end of the dict.
    """
    referents = gc.get_referents(it)
    mapping = referents[0] if referents else None
    if not isinstance(mapping, dict) or mapping is namespace or module_namespace(mapping):
        return None
    left = it.__length_hint__()
    if left == 0:  # at the end, or over a dict that changed size (then its pickle raises)
        try:
            it.__reduce__()  # (walks a copy of the iterator)
        except RuntimeError:
            return None
    if _reaches(mapping, it):
        return None
    view, backwards = _DICT_ITERATORS[type(it)]
    return (_rebuild_dict_iterator, (view, mapping, len(mapping) - left, backwards))


_ODICT_ITERATOR = type(iter(collections.OrderedDict()))
_ODICT_VIEWS = (collections.OrderedDict.keys, collections.OrderedDict.values,
                collections.OrderedDict.items)


def _reduce_odict_iterator(it: Any) -> tuple | None:
    """An OrderedDict's iterator is one over that OrderedDict, as far along as it was (as for
    a dict's, `_reduce_dict_iterator`). Its one type serves keys, values, items and reversed:
    which one it is is read from what is left of it, by identity; None (Python's pickle, a
    copy) when that does not tell.
    """
    referents = gc.get_referents(it)
    od = referents[0] if referents else None
    if not isinstance(od, collections.OrderedDict) or _reaches(od, it):
        return None
    try:
        left = list(it.__reduce__()[1][0])  # (a copy of the iterator is walked)
    except Exception:  # noqa: BLE001 - changed during iteration: Python's pickle raises too
        return None
    done = len(od) - len(left)
    if not left or done < 0:
        return None
    found = [(view, backwards) for view in _ODICT_VIEWS for backwards in (False, True)
             if _same_items(list(reversed(view(od))) if backwards else list(view(od)), done, left)]
    if len(found) != 1:
        return None
    view, backwards = found[0]
    return (_rebuild_dict_iterator, (view, od, done, backwards))


def _same_items(seq: list, start: int, left: list) -> bool:
    if len(seq) - start != len(left):
        return False
    for a, b in zip(seq[start:], left, strict=True):
        if type(a) is tuple and type(b) is tuple and len(a) == len(b) == 2:
            if not (a[0] is b[0] and a[1] is b[1]):
                return False
        elif a is not b:
            return False
    return True


def _reaches(start: Any, target: Any, budget: int = 10_000) -> bool:
    """Whether `target` may be reachable from `start` (True when the walk runs out of budget).

    A dict holding its own iterator (in a list among its values) is still being loaded when
    the iterator is rebuilt: made over the half-filled dict, it would raise at its next step.
    """
    seen = {id(start)}
    todo = [start]
    while todo:
        for o in gc.get_referents(todo.pop()):
            if o is target:
                return True
            if id(o) not in seen and gc.is_tracked(o):
                seen.add(id(o))
                if len(seen) > budget:
                    return True
                todo.append(o)
    return False


def _rebuild_dict_iterator(view: Any, mapping: dict, done: int, backwards: bool) -> Any:
    it = reversed(view(mapping)) if backwards else iter(view(mapping))
    for _ in itertools.islice(it, done):
        pass
    return it


_OS_FILES = (io.FileIO, io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper)


def _reduce_file(f: Any) -> tuple:
    """Reduce an open (or closed) file object to what re-opens it: path, mode, position.

    Writing cells are side effects and never re-run, so a log file or an output CSV open for
    writing used to be lost at every migration, and the lines written into its buffer were
    lost with the old kernel (nobody flushed them). Buffered data is flushed here: the path
    then holds everything written. Files that are no regular file on a path (pipes, sockets,
    unlinked files, descriptors passed by number) raise TypeError as before.
    """
    text = f if isinstance(f, io.TextIOWrapper) else None
    try:
        buffered = text.buffer if text is not None else f
        raw = buffered.raw if isinstance(buffered, _BUFFERED_FILES) else buffered
        name, raw_mode = raw.name, raw.mode
    except (AttributeError, ValueError) as e:  # a detached wrapper
        raise TypeError(f"cannot pickle open file {f!r}: {e}") from None
    if not isinstance(raw, io.FileIO):  # a text layer over a gzip or bz2 file, a socket's
        raise TypeError(f"cannot pickle open file {f!r} over {type(raw).__name__}")
    layers = (type(buffered) if buffered is not raw else None,
              None if text is None else (text.encoding, text.errors, text.line_buffering,
                                         text.write_through, getattr(text, "mode", None),
                                         _text_newline(text)))
    if f.closed:
        return (_reopen_file, (name, raw_mode, layers, None, None))
    if not isinstance(name, str):
        raise TypeError(f"cannot pickle open file on descriptor {name!r} (not opened by path)")
    try:
        if f.writable():
            f.flush()
        st = os.fstat(raw.fileno())
        path = _fd_path(raw.fileno(), name)
        if path is None or not stat.S_ISREG(st.st_mode):
            raise TypeError(f"cannot pickle open file {name!r}: not a regular file on a path")
        # (after that check: finding a text file's place may read the rest of it)
        position = f.tell() if text is None else _text_position(text, raw.fileno())
    except (OSError, ValueError) as e:
        raise TypeError(f"cannot pickle open file {name!r}: {e}") from None
    if f.writable() and "a" not in raw_mode:
        # what the file was when its place was taken: see `_reopen_file`
        return (_reopen_file, (name, raw_mode, layers, path, position,
                               (st.st_size, st.st_mtime_ns)))
    return (_reopen_file, (name, raw_mode, layers, path, position))


_BUFFERED_FILES = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)

_NEWLINES = ("", "\n", "\r", "\r\n")


def _text_newline(f: io.TextIOWrapper) -> str | None:
    """The ``newline=`` a text file was opened (or reconfigured) with.

    No attribute says it, so a restored file had the default: lines written to a
    ``newline='\\r\\n'`` file ended in "\\n" from then on, and one read with ``newline=''``
    (as csv wants) translated "\\r\\n" to "\\n", verified either way. The C object keeps it
    next to its encoding and errors (``encoding, encoder, decoder, readnl, errors``): the
    slot is found by the addresses of those two, which the file hands out, and read only as
    the address of one of the strings the file itself references. A layout that does not
    match raises TypeError (the file is then not shipped), never a guess.
    """
    import ctypes

    size = type(f).__basicsize__ // ctypes.sizeof(ctypes.c_void_p)
    words = (ctypes.c_void_p * size).from_address(id(f))
    encoding, errors = id(f.encoding), id(f.errors)
    for i in range(2, size - 4):
        if words[i] == encoding and words[i + 4] == errors:
            readnl = words[i + 3]
            if not readnl:
                return None
            for r in gc.get_referents(f):
                if id(r) == readnl and type(r) is str and r in _NEWLINES:
                    return r
            break
    raise TypeError(f"cannot pickle open file {getattr(f, 'name', f)!r}: its newline= "
                    "setting was not found")


_TEXT_REST_LIMIT = 64 << 20


def _text_position(f: io.TextIOWrapper, fd: int) -> int:
    """The place of a text file, also one iterated by ``next()`` (``for line in f: break``,
    ``header = next(csv.reader(f))``), whose ``tell()`` refuses to answer.

    Such a file was unpicklable, so the file, the reader over it and whatever shared a cell
    with them were lost at every migration. The text the wrapper has decoded but not handed
    out is visible through no API, so the rest is read, the byte where it starts found (one
    more byte on disk per newline read as "\\r\\n"), and checked by seeking there and reading
    it again; the file is left at that byte, where it reads on exactly as before.
    """
    try:
        return f.tell()
    except OSError:
        if not f.seekable():
            raise
    if "\r\n".encode(f.encoding) != b"\r\n" or f.errors not in ("strict", "surrogateescape"):
        # (a BOM per encode, or a lossy decode: the seek below would not land where it read)
        raise OSError(f"position of a text file iterated by next() in {f.encoding!r} with "
                      f"errors={f.errors!r}")
    remaining = os.fstat(fd).st_size - f.buffer.tell()
    if remaining > _TEXT_REST_LIMIT:
        # (every checkpoint, background rounds too, would read it: a log of gigabytes iterated
        # line by line stays unpicklable, re-opened by re-running its cells where they can)
        raise OSError(f"a text file iterated by next() {remaining} bytes from its end: its "
                      "position is found by reading the rest, which is too much here")
    rest = f.read()
    end = f.buffer.tell()
    size = len(rest.encode(f.encoding, f.errors))
    kept = rest.count("\r\n")  # (none were translated if the file was opened newline="")
    extra = 0
    while True:
        start = end - size - extra
        crlf = os.pread(fd, end - start, start).count(b"\r\n") - kept if start >= 0 else extra
        if crlf <= extra:
            break
        extra = crlf
    if start >= 0:
        f.seek(start)
        if f.read() == rest:
            f.seek(start)
            return start
    raise OSError("the position of a text file iterated by next() was not found")


class _RefsToken:
    """One pandas copy-on-write references object of a stream (`_Pickler._reduce_pandas`):
    pickled as nothing but itself, so pickle's memo makes the blocks that shared it share one
    token when loaded; `refs` is then the references object of the first block loaded."""

    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs: Any = None

    def __reduce__(self) -> tuple:
        return (_RefsToken, ())


def _reduce_arrow_extension_array(ea: Any) -> tuple | None:
    """A pandas array over arrow data (``ArrowStringArray``, pandas' default ``str`` column with
    pyarrow installed; ``dtype_backend='pyarrow'`` columns) with the arrow array it holds
    itself, not a copy.

    pandas pickles ``_pa_array.combine_chunks()``, a new array each time: a frame's string
    column and the Series a held groupby keeps of it (``gb = df.groupby('g')``) hold one arrow
    array, and came back each with its own, so the two "differed" from their checkpoint and
    were not verified (re-run instead, or reported as differing when their cells could not be
    re-run). Its cache is left out, as pandas does. None: not the layout this expects."""
    state = getattr(ea, "__dict__", None)
    if type(state) is not dict or "_pa_array" not in state:
        return None
    state = dict(state)
    state["_cache"] = {}
    return (_new_instance, (type(ea),), state, None, None, _update_instance_dict)


def _new_instance(cls: type) -> Any:
    return cls.__new__(cls)


def _update_instance_dict(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


def _set_block_refs(blk: Any, token: _RefsToken) -> None:
    """Give a loaded pandas block the copy-on-write references its token stands for
    (`_Pickler._reduce_pandas`): the first block loaded with the token lends its own."""
    if token.refs is None:
        token.refs = blk.refs
    elif blk.refs is not token.refs:
        blk.refs = token.refs
        token.refs.add_reference(blk)


def _set_manager_state(mgr: Any, state: tuple) -> None:
    """A block manager's own state, then its blocks' copy-on-write references."""
    own, tokens = state
    mgr.__setstate__(own)
    for blk, token in zip(mgr.blocks, tokens, strict=False):
        if token is not None:
            _set_block_refs(blk, token)


def _rebuild_masked(data: Any, cls: type) -> Any:
    return data.view(cls)


def _set_logger_state(logger: Any, state: dict[str, Any]) -> None:
    _write_state(_apply_logger_state, logger, state)


def _apply_logger_state(logger: Any, state: dict[str, Any]) -> None:
    logger.setLevel(state["level"])
    logger.propagate, logger.disabled = state["propagate"], state["disabled"]
    for key in ("handlers", "filters"):
        if key in state:
            setattr(logger, key, state[key])


_STDIO_NAMES = ("stdout", "stderr", "__stdout__", "__stderr__", "stdin", "__stdin__")


def _process_objects() -> dict[int, tuple]:
    """id -> reduce value of the objects of the process a variable can alias, which come back
    as the restoring process's own (the generators' state is set by the restore itself).

    Copied, ``env = os.environ`` and ``ctx = decimal.getcontext()`` were detached after a
    restore (verified, their content being equal): ``env['CUDA_VISIBLE_DEVICES'] = '1'`` no
    longer reached the process's environment and ``ctx.prec = 50`` no longer changed a
    computation. Their content is process state, which the restore brings back by re-running
    the cells that changed it (see `procstate`). The decimal context is the current thread's.
    """
    found = {id(os.environ): (_os_attribute, ("environ",))}
    if hasattr(os, "environb"):
        found[id(os.environb)] = (_os_attribute, ("environb",))
    dec = sys.modules.get("decimal")
    if dec is not None:
        found[id(dec.getcontext())] = (_decimal_context, ())
    # the global generators (`pick = random.choice`, a scipy distribution's `_random_state`):
    # copied, a value drew from a private copy instead of the session's one stream
    rnd = getattr(sys.modules.get("random"), "_inst", None)
    if rnd is not None:
        found[id(rnd)] = (_global_random, ())
    mtrand = getattr(sys.modules.get("numpy.random.mtrand"), "_rand", None)
    if mtrand is not None:
        found[id(mtrand)] = (_global_numpy_random, ())
    # libraries' configuration objects (`from matplotlib import rcParams`): see `libobjects`
    for i, qualname in libobjects.by_id().items():
        found[i] = (libobjects.load, (qualname,))
    return found


def _global_random() -> Any:
    import random

    return random._inst


def _global_numpy_random() -> Any:
    import numpy.random.mtrand

    return numpy.random.mtrand._rand


def _os_attribute(name: str) -> Any:
    return getattr(os, name)


def _decimal_context() -> Any:
    import decimal

    return decimal.getcontext()


def _sys_stream(name: str) -> Any:
    return getattr(sys, name)


_LOCKS = (type(threading.Lock()), type(threading.RLock()))


def _reduce_lock(lock: Any) -> tuple:
    """A lock no thread holds is a new lock: a logging handler, a queue, an Event or a
    Condition held in a variable then ships (before, the lock inside made it unpicklable, and
    the file handler's writing cell made it lost). A held lock still raises: a thread is in
    the middle of something a new process would not be."""
    if type(lock) is _LOCKS[0]:
        if lock.locked():
            raise TypeError("cannot pickle a lock that is held")
        return (threading.Lock, ())
    if lock._is_owned() or not lock.acquire(blocking=False):
        raise TypeError("cannot pickle a lock that is held")
    lock.release()
    return (threading.RLock, ())


def _refuse_unwaited_child(p: subprocess.Popen) -> None:
    """A child process not waited for (running, or exited unreaped) cannot be carried.

    Pickled as an object, the handle came back verified with `returncode` None and the old
    pid: in the new kernel `poll()` found no child of its own and answered 0 (exited, success)
    for a process still running on the old node, and `kill()` would signal whatever process has
    that pid here. A handle whose child was waited for (`wait`, `communicate`, `poll`) holds
    only its answers and ships as it is. Not polled here: that would change the value the
    checkpoint's digest already describes.
    """
    if p.returncode is None:
        raise TypeError(f"cannot pickle subprocess.Popen (pid {p.pid}): its child process was "
                        "not waited for; a new kernel is not its parent")


def _refuse_groupby_between_items(gb: itertools.groupby) -> None:
    """A `groupby` whose current group has just handed out an item cannot be pickled as it is.

    Its reduce keeps its position only while it holds the item it looked ahead at: once the
    group iterator has yielded that item (``key, grp = next(gb); next(grp)``), CPython's reduce
    drops the key it is in, and the copy starts over at the rest of that group (``next(gb)``
    gave the same key again), while the digest (taken from that same reduce) verified it. It
    holds its iterator and key function, and past its first step its target and current key:
    more than two referents with a reduce carrying no state is that lossy case.
    """
    rv = gb.__reduce__()
    if len(rv) < 3 and len(gc.get_referents(gb)) > 2:
        raise TypeError("cannot pickle an itertools.groupby between two items of a group: "
                        "its pickle would start that group over")


#: a thread's attributes that are the process's (its OS thread's lock, the stderr and the
#: excepthook it reports to), made anew for the thread a stream rebuilds
_THREAD_MACHINERY = frozenset({"_tstate_lock", "_started", "_stderr", "_invoke_excepthook"})


def _reduce_thread(t: threading.Thread) -> tuple:
    """A thread that is not running (finished, or not started yet) is a thread object in the
    same state: its name, ident, daemon flag, target and arguments (until it ran), and the
    attributes of a subclass. A running thread still raises: a new process would not be in
    the middle of what it does.

    Its excepthook closure reaches the kernel (the shell, the history database), so ``t =
    Thread(target=fill); t.start(); t.join()`` made `t` unpicklable, and with it the target
    function it holds, which a cell starting a thread (never re-run) then left lost.
    """
    if t.is_alive():
        raise TypeError(f"cannot pickle {t!r}: it is running")
    state = {k: v for k, v in vars(t).items() if k not in _THREAD_MACHINERY}
    return (_new_thread, (type(t), t._started.is_set()), state)


def _new_thread(cls: type, started: bool) -> Any:
    t = cls.__new__(cls)
    t._tstate_lock = None
    t._started = threading.Event()
    if started:
        t._started.set()
    t._stderr = sys.stderr
    t._invoke_excepthook = threading._make_invoke_excepthook()
    return t


def _reduce_finalizer(fin: weakref.finalize) -> tuple | None:
    """A live ``weakref.finalize`` is made again, armed on the object it watches.

    Its state is in its class's registry, not in itself: pickled as an object it came back
    dead, and its callback (removing a ``TemporaryDirectory``, closing a resource) never ran.
    The object, the callback and its arguments travel in its state (the object may hold the
    finalizer, ``td._finalizer``), and it is armed when the value is put in place, never when
    a copy is loaded only to be checked and dropped. None (a dead finalizer): as pickled.
    """
    info = weakref.finalize._registry.get(fin)
    target = info.weakref() if info is not None else None
    if target is None:
        return None
    state = (target, info.func, info.args or (), info.kwargs or {}, bool(info.atexit))
    return (_new_finalizer, (type(fin),), state, None, None, _set_finalizer_state)


def _new_finalizer(cls: type) -> Any:
    return object.__new__(cls)


def _set_finalizer_state(fin: Any, state: tuple) -> None:
    _write_state(_arm_finalizer, fin, state)


def _arm_finalizer(fin: Any, state: tuple) -> None:
    target, func, args, kwargs, at_exit = state
    weakref.finalize.__init__(fin, target, func, *args, **kwargs)
    fin.atexit = at_exit


_CSV_WRITER = type(csv.writer(io.StringIO()))
_DIALECT_FIELDS = ("delimiter", "quotechar", "escapechar", "doublequote", "skipinitialspace",
                   "lineterminator", "quoting", "strict")


def _dialect_of(csv_object: Any) -> dict[str, Any]:
    """A csv reader's or writer's dialect, as the keyword arguments that make it again."""
    return {k: getattr(csv_object.dialect, k) for k in _DIALECT_FIELDS}


def _is_kd_tree(tp: type) -> bool:
    """scipy's cKDTree or a subclass (`KDTree`, the notebook's own)."""
    return derives_from(tp, "scipy.spatial._ckdtree.cKDTree")


def _is_figure(tp: type) -> bool:
    """matplotlib's Figure or a subclass."""
    return derives_from(tp, "matplotlib.figure.Figure")


def _reduce_figure(fig: Any) -> tuple | None:
    """matplotlib's pickle of a figure, plus the stale callbacks its artists had.

    matplotlib drops every artist's ``stale_callback`` when it pickles one and never sets them
    again: in a loaded figure, ``ax.plot(...)`` no longer marked the axes' figure stale, so an
    interactive backend (ipympl, Qt: IPython redraws the stale figures after each cell) never
    redrew it. The callbacks are matplotlib's own functions (pickled by reference), set again
    on the same artists once the figure's state is set."""
    try:
        rv = fig.__reduce_ex__(4)
    except Exception:  # noqa: BLE001 - matplotlib's own pickle decides (and says) what fails
        return None
    if type(rv) is not tuple or not 3 <= len(rv) <= 5 or rv[2] is None:
        return None
    wired: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack = [fig]
    while stack and len(seen) < 100_000:
        artist = stack.pop()
        if id(artist) in seen:
            continue
        seen.add(id(artist))
        callback = getattr(artist, "stale_callback", None)
        if (type(callback) is types.FunctionType
                and str(getattr(callback, "__module__", "")).startswith("matplotlib.")):
            wired.append((artist, callback))
        try:
            stack.extend(artist.get_children())
        except Exception:  # noqa: BLE001 - an artist of a library's that cannot list them
            continue
    rest = (*rv[3:], *(None,) * (5 - len(rv)))
    return (rv[0], rv[1], (rv[2], wired), *rest, _set_figure_state)


def _set_figure_state(fig: Any, state: tuple[Any, list[tuple[Any, Any]]]) -> None:
    """Inverse of `_reduce_figure`: matplotlib's own ``__setstate__``, then the callbacks, once
    the whole blob is loaded (an artist reached before the figure, `ax` pickled first, gets its
    own state, without its callback, after this runs)."""
    own, wired = state
    fig.__setstate__(own)

    def wire() -> None:
        for artist, callback in wired:
            try:
                artist.stale_callback = callback
            except Exception:  # noqa: BLE001 - an artist that refuses: left as loaded
                continue

    after = getattr(_load_ctx, "after", None)
    if after is None:
        wire()
    else:
        after.append(wire)


def _reduce_kd_tree(tree: Any) -> tuple | None:
    """A k-d tree rebuilt over its data array, which the pickle keeps shared.

    cKDTree's own pickle copies the points it was built on: `tree = KDTree(pts)` holds `pts`
    itself (no copy), and came back over a copy of it, so `tree.data is pts` no longer held
    while the restore verified (a tree is checked by type only: its pickle also carries
    uninitialised memory). Rebuilt with the options that give the tree the notebook built (its
    `indices`, the order the build put the points in); None if none does.
    """
    from scipy.spatial import cKDTree  # (scipy is loaded: the tree is one of its objects)

    data, leafsize, boxsize = tree.data, tree.leafsize, tree.boxsize
    for compact, balanced in ((True, True), (True, False), (False, True), (False, False)):
        try:
            probe = cKDTree(data, leafsize=leafsize, compact_nodes=compact,
                            balanced_tree=balanced, boxsize=boxsize)
        except Exception:
            return None
        if probe.indices.shape == tree.indices.shape and (probe.indices == tree.indices).all():
            extra = dict(vars(tree)) if hasattr(tree, "__dict__") else {}
            if not extra:
                return (_rebuild_kd_tree, (type(tree), data, leafsize, compact, balanced, boxsize))
            return (_rebuild_kd_tree, (type(tree), data, leafsize, compact, balanced, boxsize),
                    extra, None, None, _set_instance_state)
    return None


def _rebuild_kd_tree(cls: type, data: Any, leafsize: int, compact: bool, balanced: bool,
                     boxsize: Any) -> Any:
    """Inverse of `_reduce_kd_tree`: the tree built again over `data` (not a copy of it)."""
    from scipy.spatial import cKDTree

    tree = cls.__new__(cls)
    cKDTree.__init__(tree, data, leafsize=leafsize, compact_nodes=compact, copy_data=False,
                     balanced_tree=balanced, boxsize=boxsize)
    return tree


#: how far into ``finditer`` a match is looked for (a match from the 100,000th step of a loop
#: over ``finditer`` does not pickle: its cell is re-run, or it is reported)
MATCH_SCAN_MAX = 100_000


def _reduce_match(m: re.Match) -> tuple | None:
    """A regex match as the call on its pattern and string that makes it again, or None.

    C, it has no pickle, and whatever held one (``found = [m, ...]``) was lost when its cell
    could not be re-run. The regex engine is deterministic, so the same pattern over the same
    string with the same bounds finds the same match; which call found it (match, fullmatch,
    search, or the how-manyth step of finditer, which is also what ``sub`` and ``split`` hand
    their callbacks) is found out here and the groups' spans are checked when it is made again.
    """
    pat, string, pos, endpos = m.re, m.string, m.pos, m.endpos
    try:
        for how in ("match", "search", "fullmatch"):
            got = getattr(pat, how)(string, pos, endpos)
            if got is not None and got.regs == m.regs and got.lastindex == m.lastindex:
                return (_rebuild_match, (pat, string, pos, endpos, how, 0, m.regs))
        start = m.start()
        for i, got in enumerate(pat.finditer(string, pos, endpos)):
            if i >= MATCH_SCAN_MAX or got.start() > start:
                break
            if got.regs == m.regs and got.lastindex == m.lastindex:
                return (_rebuild_match, (pat, string, pos, endpos, "finditer", i, m.regs))
    except Exception:  # noqa: BLE001 - a buffer released since: it does not pickle
        return None
    return None


def _rebuild_match(pat: re.Pattern, string: Any, pos: int, endpos: int, how: str, index: int,
                   regs: tuple) -> re.Match:
    if how == "finditer":
        got = next(itertools.islice(pat.finditer(string, pos, endpos), index, None), None)
    else:
        got = getattr(pat, how)(string, pos, endpos)
    if got is None or got.regs != regs:
        raise ValueError(f"the match of {pat.pattern!r} at {regs[0]} was not found again")
    return got


def _reduce_csv_writer(w: Any) -> tuple:
    """A ``csv.writer`` is rebuilt on the object it writes to (a file re-opened at its place),
    with the same dialect; it has no pickle of its own, and its file is what matters."""
    dialect = _dialect_of(w)
    write = next((r for r in gc.get_referents(w) if callable(r) and not isinstance(r, type)),
                 None)
    if write is None:
        raise TypeError(f"cannot pickle {w!r}: its target was not found")
    target = getattr(write, "__self__", None)
    if target is None or getattr(target, "write", None) != write:
        target = types.SimpleNamespace(write=write)  # (csv.writer takes any object's write)
    return (_rebuild_csv_writer, (target, dialect))


def _rebuild_csv_writer(target: Any, dialect: dict[str, Any]) -> Any:
    return csv.writer(target, **dialect)


_CSV_READER = type(csv.reader(io.StringIO()))


def _reduce_csv_reader(r: Any) -> tuple:
    """A ``csv.reader`` is rebuilt over what it iterates (a file re-opened at its place),
    with its dialect and its line count; it has no pickle of its own, and ``header =
    next(csv.reader(f))`` made it, its file and ``DictReader`` over it lost."""
    dialect = _dialect_of(r)
    source = [x for x in gc.get_referents(r) if x is not r.dialect and not isinstance(x, type)]
    if len(source) != 1:  # (a record half parsed, or no iterator found)
        raise TypeError(f"cannot pickle {r!r} in the middle of a record")
    return (_rebuild_csv_reader, (source[0], dialect, r.line_num))


def _rebuild_csv_reader(source: Any, dialect: dict[str, Any], line_num: int) -> Any:
    # `line_num` is read-only: count that many empty lines first (each an empty row)
    r = csv.reader(itertools.chain(itertools.repeat("", line_num), source), **dialect)
    for _ in range(line_num):
        next(r)
    return r


def _fd_path(fd: int, name: str) -> str | None:
    """The absolute path of an open descriptor (the name may be relative to a cwd since left)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.abspath(name)
    if not path.startswith("/") or path.endswith(" (deleted)"):
        return None
    return path


def _reopen_file(name: Any, raw_mode: str, layers: tuple, path: str | None,
                 position: Any, written: tuple[int, int] | None = None) -> Any:
    """Rebuild a file object of `_reduce_file`: the same layers, name and mode, at its place.

    The path is opened without O_CREAT or O_TRUNC: a file missing on this node is an error
    naming it (storage the old node alone saw), never a new empty file.

    `written` (a file written at its place, not appended to): its size and modification time
    at the checkpoint. A file changed since (the kernel wrote on after the checkpoint, then
    died) is an error too: re-opened at the checkpoint's place, the file object wrote over
    what followed, and the restore verified it. It is left as it is, and the variable named
    as lost (its cells, a side effect, are not re-run): truncating it back would throw away
    what the session wrote, which the user may want.
    """
    buffered_type, text = layers
    readable = "r" in raw_mode or "+" in raw_mode
    writable = any(c in raw_mode for c in "wxa+")
    flags = os.O_RDWR if readable and writable else os.O_WRONLY if writable else os.O_RDONLY
    if "a" in raw_mode:
        flags |= os.O_APPEND
    if path is None:  # closed at the checkpoint: a closed file of the same kind and name
        fd = os.open(os.devnull, os.O_RDWR)
    else:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"file {name!r} was open at the checkpoint, but {path} does not exist here: "
                "keep files a notebook holds open on storage every node sees (the home "
                "directory), or re-open it") from None
    if written is not None:
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) != tuple(written):
            os.close(fd)
            raise OSError(
                f"file {name!r} ({path}) was written after the checkpoint ({written[0]} bytes "
                f"then, {st.st_size} now): re-opened at its place of then, it would write over "
                "what follows; re-open it")
    raw = io.FileIO(fd, raw_mode, closefd=True)
    raw.name = name
    f: Any = raw
    if buffered_type is not None:
        blksize = getattr(raw, "_blksize", 0)
        f = buffered_type(raw, blksize if blksize > 1 else io.DEFAULT_BUFFER_SIZE)
    if text is not None:
        encoding, errors, line_buffering, write_through, mode, *more = text
        f = io.TextIOWrapper(f, encoding=encoding, errors=errors, newline=more[0] if more else None,
                             line_buffering=line_buffering, write_through=write_through)
        if mode is not None:
            f.mode = mode
    if path is None:
        f.close()
    elif position:
        f.seek(position)
    return f


def _importable(obj: Any) -> bool:
    """True if pickle can find ``obj`` by module + qualname in another process (not __main__)."""
    module_name = getattr(obj, "__module__", None)
    if not module_name or module_name == "__main__":
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    target: Any = module
    for part in getattr(obj, "__qualname__", "<>").split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


class _AnchoringPickler(_Pickler):
    """`_Pickler` that names the loading process's own containers by persistent id."""

    def __init__(self, *args: Any, pids: dict[int, tuple]) -> None:
        super().__init__(*args)
        self._pids = pids

    def persistent_id(self, obj: Any) -> tuple | None:
        return self._pids.get(id(obj))


class _AnchoredUnpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) == 2 and pid[0] == "proc" and pid[1] in _PROCESS_CONTAINERS:
            return _process_container(pid[1])
        if type(pid) is tuple and len(pid) in (4, 5) and pid[0] == "set-layout":
            # (`_reordered_sets`) one set however often it is met: the id is memoized, so
            # each reference loads the same tuple
            made = self.__dict__.setdefault("_sets", {})
            hit = made.get(id(pid))
            if hit is None:
                _, size, fillers, order, *grow = pid
                built = _build_set(size, fillers, order, bool(grow))
                hit = made[id(pid)] = (pid, set(order) if built is None else built)
            return hit[1]
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")


#: the process's containers a value may hold (`p = sys.path`, an `exec` namespace's
#: ``__builtins__``): loaded as the loading process's own, never as copies. Exact dicts and
#: lists are pickled without `reducer_override`, so they are named by persistent id
#: (`_anchors_met`); the digest refers to them by name (`changes._Walker`)
_PROCESS_CONTAINERS = ("builtins", "modules", "path")


def _process_container(name: str) -> Any:
    return builtins.__dict__ if name == "builtins" else getattr(sys, name)


def _anchors_met(pickler: _Pickler) -> tuple[dict[int, tuple], list[tuple]]:
    """What a dump met that lives outside the values: the process's containers (their
    persistent ids) and the globals of the notebook's modules (object, module, source,
    attribute), found in the pickler's memo (everything pickled there but atoms)."""
    containers = {id(c): ("proc", name) for name in _PROCESS_CONTAINERS
                  if (c := _process_container(name)) is not None}
    homes = module_globals()
    memo = pickler.memo.copy()
    pids: dict[int, tuple] = {i: pid for i, pid in containers.items() if i in memo}
    pids.update(_reordered_sets(memo))
    found = [g for i, g in homes.items() if i in memo and i not in pids]
    return pids, found


#: sets bigger than this are pickled as pickle does (`_reordered_sets`: ~50 us an item)
ORDERED_SET_MAX = 5_000
_HASH_BITS = (1 << 64) - 1


def _atomic(x: Any) -> bool:
    t = type(x)
    return t in MARSHAL_ATOMS or (t is tuple and all(_atomic(e) for e in x))


class _SlotFiller:
    """A placeholder that lands in slot `h` of an empty set's table (its hash is `h`), so that
    an item probing past that slot finds it taken (`_set_layout`)."""

    __slots__ = ("h",)

    def __init__(self, h: int) -> None:
        self.h = h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return self is other


@functools.cache
def _set_layout_known() -> bool:
    """Whether `_table_slots` may read sets: CPython 3.10 to 3.13, 64-bit, with the GIL and
    no debug header (whose `PySetObject` is the layout its offsets assume)."""
    import ctypes
    import sysconfig

    return (sys.implementation.name == "cpython" and (3, 10) <= sys.version_info[:2] <= (3, 13)
            and ctypes.sizeof(ctypes.c_void_p) == 8 and not hasattr(sys, "gettotalrefcount")
            and not sysconfig.get_config_var("Py_GIL_DISABLED"))


def _table_slots(s: set) -> tuple[dict[int, int], int]:
    """{id(item): slot} of a set's hash table, and its mask (CPython's ``PySetObject``:
    ``fill, used, mask, table`` after the object header; entries of key and hash)."""
    where, mask, _ = _table_state(s)
    return where, mask


def _table_state(s: set) -> tuple[dict[int, int], int, tuple[int, ...]]:
    """`_table_slots` and the slots holding a removed item's dummy, in order: what decides
    where later adds go and when the table is resized (its ``fill`` is the items and those)."""
    import ctypes

    if not _set_layout_known():
        raise ValueError("not a set layout this reads")
    base = id(s)
    fill, used, mask = (ctypes.c_ssize_t.from_address(base + o).value for o in (16, 24, 32))
    table = ctypes.c_void_p.from_address(base + 40).value
    # (each field checked against what it must be before the table is read: a layout other
    # than the one assumed is refused here, never read as addresses)
    if (used != len(s) or fill < used or mask < 7 or mask & (mask + 1) or mask > 1 << 22
            or not table or (mask == 7) != (table == base + 64)):
        raise ValueError("set fields not as expected")
    ids = {id(x) for x in s}
    where = {}
    dummies = []
    for i in range(mask + 1):
        key = ctypes.c_void_p.from_address(table + 16 * i).value
        if key in ids:
            where[key] = i
        elif key:
            dummies.append(i)
    if len(dummies) != fill - used:
        raise ValueError("set table not as its fields say")
    return where, mask, tuple(dummies)


def _probed_before(h: int, mask: int, stop: int) -> list[int] | None:
    """The slots a set probes for hash `h` before slot `stop` (``set_add_entry``: 9 linear
    probes where they fit, then a perturbed jump)."""
    h &= _HASH_BITS
    i, perturb, seen = h & mask, h, []
    for _ in range(10 * (mask + 1)):
        for slot in range(i, i + (9 if i + 9 <= mask else 0) + 1):
            if slot == stop:
                return seen
            seen.append(slot)
        perturb >>= 5
        i = (i * 5 + 1 + perturb) & mask
    return None


def _set_layout(s: set, every_dummy: bool = False
                ) -> tuple[int, tuple[int, ...], tuple] | None:
    """(table size, slots to hold with fillers, items in the order to add them) that rebuild
    `s`'s table, hence its iteration order; None if they cannot (`_build_set`). `every_dummy`:
    fillers at every slot a removed item left, not only those the items probe past, so that
    the rebuilt table is the same one (later adds land where they did, `_exact_layout`)."""
    where, mask, dummies = _table_state(s)
    if len(where) != len(s):
        return None
    at = {where[id(x)]: x for x in s}
    before: dict[int, list] = {}
    fillers: set[int] = set(dummies) if every_dummy else set()
    for x in s:
        path = _probed_before(hash(x), mask, where[id(x)])
        if path is None:
            return None
        before[id(x)] = [at[p] for p in path if p in at]
        fillers.update(p for p in path if p not in at)
    order: list = []
    done: set[int] = set()
    for x in s:  # each item after those in slots it probes first (iteratively: no recursion)
        stack = [(x, iter(before[id(x)]))]
        while stack:
            item, deps = stack[-1]
            dep = next((d for d in deps if id(d) not in done), None)
            if dep is None:
                stack.pop()
                if id(item) not in done:
                    done.add(id(item))
                    order.append(item)
            elif any(dep is it for it, _ in stack):
                return None  # a cycle: not a table adds can make
            else:
                stack.append((dep, iter(before[id(dep)])))
    return mask + 1, tuple(sorted(fillers)), tuple(order)


def _build_set(size: int, fillers: tuple[int, ...], order: tuple, grow: bool = False
               ) -> set | None:
    """A set of `order` with a table of `size` slots where `_set_layout` saw them: the
    fillers first, then the items, added after presizing (an update from a dict of ``len``
    keys sizes the table to the power of 2 above ``2 len``, then adds in order: up to half,
    the rest one by one), the fillers removed after. `grow`: all added one by one to an
    empty set instead, its table grown as adds grow it (a set built up item by item, then
    some removed: presizing would have needed spare keys, whose dummies would stay). None if
    the table cannot be that size so (the caller checks the order it gives)."""
    held = [_SlotFiller(i) for i in fillers]
    n = len(held) + len(order)
    s: set = set()
    if grow:
        for x in (*held, *order):
            s.add(x)
    elif size == 8:  # the set's own small table: grown at the 5th item
        if n > 4:
            return None
        for x in (*held, *order):
            s.add(x)
    else:
        # up to half the table at once, the rest one by one (a table is grown when 3/5 full)
        entries = [*held, *order]
        head = size // 2 - 1
        spare = [object() for _ in range(max(0, max(5, size // 4) - len(entries)))]
        s.update(dict.fromkeys([*entries[:head], *spare]))
        for x in spare:
            s.discard(x)
        for x in entries[head:]:
            s.add(x)
    for x in held:
        s.discard(x)
    return s


def _reordered_sets(memo: dict) -> dict[int, tuple]:
    """Persistent ids of the sets of plain values (strings, numbers, tuples of them) that
    pickle would bring back iterating in another order, though equal.

    Pickle adds a set's items in its iteration order to an empty set, and the table it
    builds may differ: ``s = {'ee', 'f', 'hh', 'c', 1, 2.5}`` (a set literal is made from a
    frozenset constant) came back iterating ``'hh'`` before ``'c'`` with the kernel's same
    string-hash seed, so ``list(s)`` and every later cell that depends on the order differed,
    and ``s`` verified (a set's digest has no order). Such a set is named by
    ``("set-layout", size, fillers, items)`` (`_set_layout`), checked here to rebuild its
    order, and loaded by `_AnchoredUnpickler.persistent_load` (`_build_set`); one that cannot
    be rebuilt so (a dense table) is left to pickle."""
    out: dict[int, tuple] = {}
    for _, obj in memo.values():
        if type(obj) is not set or not 1 < len(obj) <= ORDERED_SET_MAX:
            continue
        order = list(obj)
        if not all(_atomic(x) for x in order):
            continue
        try:
            exact = _exact_layout(obj, order)
            if exact is not None:
                out[id(obj)] = ("set-layout", *exact)
                continue
            if list(set(order)) == order:
                continue
            layout = _set_layout(obj)
            rebuilt = _build_set(*layout) if layout is not None else None
        except Exception:  # noqa: BLE001 - a layout not understood: pickle's way
            continue
        if rebuilt is not None and list(rebuilt) == order:
            out[id(obj)] = ("set-layout", *layout)
    return out


def _exact_layout(s: set, order: list) -> tuple | None:
    """The layout (`_set_layout`, and whether `_build_set` grows it) that rebuilds `s`'s very
    table, when pickle's rebuild would not: None when pickle's is that table already, or when
    no layout rebuilds it (then only its order is kept, `_reordered_sets`).

    Pickle adds the items to a fresh set, whose table has no dummies and the size their count
    gives. A set that items were removed from keeps its size and a dummy per removed item, and
    later adds go where those decide: ``s = {'apple', 'kiwi', 'fig', ...}; s.discard('kiwi')``
    came back iterating as it did, but after ``s.add('zz')`` in the restored kernel ``list(s)``
    was in another order than in the original kernel (as was ``set(range(100))`` narrowed to
    three numbers, then added to)."""
    import ctypes

    if not _set_layout_known():
        return None
    fill, used, mask = (ctypes.c_ssize_t.from_address(id(s) + o).value for o in (16, 24, 32))
    again = set(order)
    if fill == used and ctypes.c_ssize_t.from_address(id(again) + 32).value == mask \
            and list(again) == order:
        return None  # (no dummies, same size and order: the same slots)
    where, mask, dummies = _table_state(s)
    want = ({where[id(x)] for x in s}, mask, dummies)
    layout = _set_layout(s, every_dummy=True)
    if layout is None:
        return None
    for grow in (False, True):
        rebuilt = _build_set(*layout, grow=grow)
        if rebuilt is None or list(rebuilt) != order:
            continue
        got, got_mask, got_dummies = _table_state(rebuilt)
        if (set(got.values()), got_mask, got_dummies) == want:
            return (*layout, True) if grow else layout
    return None


def _pickle(
    values: dict[str, Any], namespace: dict[str, Any] | None, view_roots: set[int] | None,
    pids: dict[int, tuple] | None = None,
    owners: list[tuple[int, int, Any]] | None = None,
) -> tuple[io.BytesIO, list[memoryview], _Pickler, Exception | None]:
    """Pickle `values`; the error is returned (the pickler's memo says what it had met)."""
    stream = io.BytesIO()
    buffers: list[memoryview] = []

    def buffer_callback(pb: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(pb.raw())
        except BufferError:  # non-contiguous exporter: let pickle copy it in-band
            return True
        return False

    if pids:
        pickler: _Pickler = _AnchoringPickler(stream, buffer_callback, namespace, view_roots,
                                              owners, pids=pids)
    else:
        pickler = _Pickler(stream, buffer_callback, namespace, view_roots, owners)
    try:
        pickler.dump(values)
    except Exception as exc:  # noqa: BLE001 - the caller decides (see dumps)
        return stream, buffers, pickler, exc
    return stream, buffers, pickler, None


def _stale_containers(pickler: _Pickler) -> str | None:
    """Why the stream cannot bring back a set or dict it holds, else None.

    Unpickled, a set or dict is rebuilt by hashing its keys anew, so one whose key's hash
    changed since the key went in (``s = {k}; k.v = 2``: ``k in s`` is False) came back
    rebuilt, ``k in s`` True, and verified. Checked when an object whose class hashes in
    Python was pickled (`_Pickler.python_hashed`), over what the dump met (its memo)."""
    for _, obj in pickler.memo.copy().values():
        if not isinstance(obj, (set, frozenset, dict)):
            continue
        stale = stale_keys(obj)
        if stale:
            return (f"a {type(obj).__name__} holds {stale} key(s) whose hash or equality "
                    "changed since they went in; rebuilt by a pickle, it would not be the same")
    return None


def _buffer_roots(pickler: _Pickler) -> list[tuple[int, int, Any]]:
    """The bytearrays and ``array.array``s the stream holds, as uint8 arrays over them (a
    tensor over one's memory, ``torch.from_numpy(np.frombuffer(buf)[1:])``, is rebuilt over
    such an array, which `_Pickler._reduce_over_bytearray` rebuilds over the bytearray)."""
    np = sys.modules.get("numpy")
    out = []
    for _, obj in pickler.memo.copy().values():
        if type(obj) in _WRITABLE_EXPORTERS and np is not None and len(obj):
            flat = np.frombuffer(obj, dtype=np.uint8)
            lo = int(flat.__array_interface__["data"][0])
            out.append((lo, lo + flat.nbytes, flat))
    return out


def _union_roots(spans: list[tuple[int, int, bool]], memory: _MemoryMap) -> list[tuple[int, int, Any]]:
    """Arrays over the memory of tensors whose storages overlap (or hold an arrow buffer met
    before them), each pickled over a copy of its own and no numpy array of the stream holding
    them all (two slices of an array nobody holds: ``torch.from_numpy(h[:6])``,
    ``torch.from_numpy(h[2:])``; ``pa.array(t.numpy()[4:])`` pickled before ``t``): a uint8
    array over the union of each overlapping group, for a second pass to rebuild them all over.
    Every byte of a union lies in a live storage or buffer of the values (kept alive until the
    dump ends). Groups of arrow buffers only are left to arrow."""
    np = sys.modules.get("numpy")
    if np is None:
        return []
    loose = sorted((lo, hi, tensor) for lo, hi, tensor in spans if memory.find(lo, hi) is None)
    groups: list[list[int]] = []  # [lo, hi, members, tensors]
    for lo, hi, tensor in loose:
        if groups and lo < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], hi)
            groups[-1][2] += 1
            groups[-1][3] += tensor
        else:
            groups.append([lo, hi, 1, int(tensor)])
    out = []
    for lo, hi, members, tensors in groups:
        if members > 1 and tensors:
            raw = (ctypes.c_ubyte * (hi - lo)).from_address(lo)
            out.append((lo, hi, np.frombuffer(raw, dtype=np.uint8)))
    return out


def _within_roots(spans: list[tuple[int, int, bool]], memory: _MemoryMap,
                  pickled: set[int]) -> bool:
    """Whether a tensor's storage or an arrow buffer pickled over no numpy array lies within
    the memory of a numpy array of the stream (or a bytearray's) after all. (Not when that is
    an array `pickled` whose memory is all of the tensor's: met after the tensor, it was
    rebuilt over the tensor's, see `_Pickler._over_tensor_memory`.)"""
    for lo, hi, tensor in spans:
        found = memory.find(lo, hi)
        if found is not None and not (tensor and found[0] == lo and found[1].nbytes == hi - lo
                                      and id(found[1]) in pickled):
            return True
    return False


def _any_overlap(spans: list[tuple[int, int]]) -> bool:
    reach = None
    for lo, hi in sorted(spans):
        if reach is not None and lo < reach:
            return True
        reach = hi if reach is None else max(reach, hi)
    return False


def _pad(n: int) -> int:
    return -n % ALIGN


#: stack of the thread that pickles a value too deep for the calling thread's recursion limit
DEEP_STACK_BYTES = 512 << 20
DEEP_RECURSION_LIMIT = 1_000_000


def dumps(
    values: Mapping[str, Any],
    *,
    namespace: dict[str, Any] | None = None,
    verify: bool = False,
) -> Serialized:
    """Trial-serialize one co-variable. Never raises for unpicklable values: see ``.error``.

    ``namespace`` is the user namespace notebook functions are bound to (default
    ``sys.modules["__main__"].__dict__``, the user namespace in ipykernel). ``verify=True``
    also unpickles the result once to catch "pickles but does not load" (see module doc).

    A value nested deeper than the recursion limit (a linked list, a tree of 5000 levels) is
    pickled again in a thread with a big stack and a high limit: pickling recurses, while
    loading and the digest do not, so it was lost for no reason when its cells could not be
    re-run.
    """
    out = _dumps(values, namespace=namespace, verify=verify)
    if out.error is None or "RecursionError" not in out.error:
        return out
    result: list[Serialized] = []

    def deep() -> None:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, DEEP_RECURSION_LIMIT))
        try:
            result.append(_dumps(values, namespace=namespace, verify=verify))
        finally:
            sys.setrecursionlimit(limit)

    try:
        size = threading.stack_size(DEEP_STACK_BYTES)
        try:
            t = threading.Thread(target=deep, name="kernel_agent-deep-pickle", daemon=True)
            t.start()
        finally:
            threading.stack_size(size)
        t.join()
    except Exception:  # noqa: BLE001 - no thread of that size here: the first answer stands
        logging.getLogger(__name__).debug(
            "kernel_agent: could not pickle %s in a deep-stack thread", list(values),
            exc_info=True)
    return result[0] if result else out


#: objects `_weakly_held` visits at most (past it: taken as not held, the safe side)
WEAK_HELD_MAX_NODES = 1_000_000


def _weakly_held(values: Any, targets: list[Any]) -> bool:
    """Whether some object of `targets` is reached from `values` only through weak references
    (or modules, or what pickle takes by reference): loaded, nothing would keep it alive.

    Follows what the collector sees (``gc.get_referents``: a weak reference does not hold its
    object), except a function's globals (the notebook's namespace, not in the stream) and
    modules, classes and functions pickled by reference (their content is the loading
    process's, not the stream's)."""
    want = {id(t) for t in targets}
    seen: set[int] = set()
    stack: list[Any] = [values]
    while stack and want:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if len(seen) > WEAK_HELD_MAX_NODES:
            return True
        want.discard(id(o))
        if isinstance(o, types.ModuleType | weakref.ReferenceType | weakref.ProxyType
                      | weakref.CallableProxyType):
            continue
        if isinstance(o, type | types.FunctionType) and \
                cloudpickle.cloudpickle._should_pickle_by_reference(o):
            continue
        if type(o) is types.FunctionType:
            stack.extend((o.__closure__, o.__defaults__, o.__kwdefaults__, o.__dict__))
            continue
        stack.extend(gc.get_referents(o))
    return bool(want)


def _dumps(
    values: Mapping[str, Any],
    *,
    namespace: dict[str, Any] | None = None,
    verify: bool = False,
) -> Serialized:
    names = list(values)
    if namespace is None:
        namespace = getattr(sys.modules.get("__main__"), "__dict__", None)
    try:
        data, homes = _with_module_homes(dict(values))
        stream, buffers, pickler, failure = _pickle(data, namespace, None)
        # the process's containers (by value they are wrong, or do not pickle at all: the
        # builtins while ipykernel has replaced `input`) are named instead: pickle again
        pids, module_homes = _anchors_met(pickler)
        if pids:
            stream, buffers, pickler, failure = _pickle(data, namespace, None, pids)
        if failure is not None:
            raise failure
        present = pickler.seen_arrays | pickler.covered_roots
        # views of a base nobody references that overlap each other (or themselves) must keep
        # sharing memory: ship that base once and rebuild them on it (disjoint views are
        # copied, cheaper)
        present |= {
            root for root, spans in pickler.view_spans.items()
            if root not in present and (_any_overlap(spans) or root in pickler.aliased_roots)
        }
        loads_into_live = pickler.loads_into_live or homes or bool(module_homes)
        lossy = pickler.lossy
        if lossy is None and pickler.weak_targets and _weakly_held(data, pickler.weak_targets):
            lossy = ("a weak reference points to an object nothing else it holds keeps: "
                     "loaded, that object would be gone")
        if lossy is None and pickler.python_hashed:
            lossy = _stale_containers(pickler)
        for root, (span, spans) in pickler.object_view_spans.items():
            # object-array views copied that overlapped each other or their base, also in the
            # stream: a store through one no longer shows in the other once loaded (the
            # digest records that they overlap), so the checkpoint recomputes them
            if lossy is None and _any_overlap(spans + [span] if root in pickler.seen_arrays else spans):
                lossy = "views of an object array ship as copies, apart from their base"
        roots: set[int] | None = None
        if pickler.deferred_roots & present:
            # a view was met before its base: pickle again knowing which bases are present
            keep = pickler  # (pass 1 keeps ids alive)
            roots = present
            stream, buffers, pickler, failure = _pickle(data, namespace, roots, pids)
            del keep
            if failure is not None:
                raise failure
        owners = pickler.memory.roots()
        if pickler.unmatched and not _within_roots(pickler.unmatched, pickler.memory,
                                                   pickler.seen_arrays):
            owners += _buffer_roots(pickler)
            owners += _union_roots(pickler.unmatched, pickler.memory)
            memory = _MemoryMap()
            for lo, hi, root in owners:
                memory.add(lo, hi, root, True)
        else:
            memory = pickler.memory
        if pickler.unmatched and _within_roots(pickler.unmatched, memory, pickler.seen_arrays):
            # an arrow buffer or a tensor over numpy memory met before that array (or over a
            # bytearray's): pickle again knowing every array's memory (`_MemoryMap`)
            keep = pickler
            stream, buffers, pickler, failure = _pickle(data, namespace, roots, pids,
                                                        owners=owners)
            del keep
            if failure is not None:
                raise failure
        if module_homes:
            # the notebook modules' globals the values hold (`cfg = {'a': mod.A}`) are put
            # back into their modules where the values are put in place: a second pickle in
            # the stream, on the same memo, so each is the object the values hold
            pickler.dump(("homes", [(g[0], g[1], g[2], g[3]) for g in module_homes]))
        anchored = bool(pids or module_homes)
        del pickler
    except Exception as exc:  # trial serialization: any failure means "cannot ship"
        return Serialized(names=names, parts=[], nbytes=0, error=_describe(exc))

    payload = stream.getbuffer()
    n = len(buffers)
    pickle_off = _HEADER.size + _ENTRY.size * n
    pickle_off += _pad(pickle_off)
    pos = pickle_off + len(payload)
    table: list[tuple[int, int]] = []
    tail: list[memoryview | bytes] = []
    for buf in buffers:
        pad = _pad(pos)
        if pad:
            tail.append(bytes(pad))
            pos += pad
        table.append((pos, buf.nbytes))
        tail.append(buf if buf.format == "B" and buf.ndim == 1 else buf.cast("B"))
        pos += buf.nbytes
    total = pos

    header = bytearray(pickle_off)
    _HEADER.pack_into(header, 0, MAGIC, FORMAT_VERSION, FLAG_ANCHORED if anchored else 0, n,
                      pickle_off, len(payload), total, 0)
    for i, (off, length) in enumerate(table):
        _ENTRY.pack_into(header, _HEADER.size + i * _ENTRY.size, off, length)
    crc = zlib.crc32(memoryview(header)[: _HEADER.size + _ENTRY.size * n])
    struct.pack_into("<I", header, _CRC_OFFSET, crc)

    result = Serialized(
        names=names,
        parts=[bytes(header), payload, *tail],
        nbytes=total,
        loads_into_live=loads_into_live,
        lossy=lossy,
    )
    if verify and not loads_into_live:  # (loading it here would write into the live objects)
        try:
            scratch: dict[str, Any] = {"__name__": "__main__"}
            _unpickle(payload, [memoryview(b) for b in buffers], scratch, anchored)
        except Exception as exc:
            return Serialized(
                names=names, parts=[], nbytes=0, error=f"does not load back: {_describe(exc)}"
            )
    return result


def _describe(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, pickle.PicklingError) and cause is not None:
        msg += f" ({type(cause).__name__}: {cause})"
    return msg


# --------------------------------------------------------------------------------------------
# loading


def _parse(mv: memoryview) -> tuple[memoryview, list[memoryview], bool]:
    """Validate the framing and return (pickle stream, buffers) as slices of ``mv``, and
    whether the stream is anchored (`FLAG_ANCHORED`)."""
    size = len(mv)
    if size == 0:
        raise ValueError("not a kernel_agent serialized blob (empty)")
    if size < _HEADER.size:
        if bytes(mv[: len(MAGIC)]) != MAGIC[: min(size, len(MAGIC))]:
            raise ValueError("not a kernel_agent serialized blob (bad magic bytes)")
        raise ValueError(
            f"truncated blob: {size} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, flags, n, pickle_off, pickle_len, total, crc = _HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise ValueError(
            f"not a kernel_agent serialized blob (magic bytes {bytes(magic)!r}, expected {MAGIC!r})"
        )
    if version != FORMAT_VERSION:
        raise ValueError(
            f"unsupported blob format version {version} (this kernel_agent reads version "
            f"{FORMAT_VERSION}): restore with the kernel_agent version that wrote it"
        )
    table_end = _HEADER.size + _ENTRY.size * n
    if size < table_end:
        raise ValueError(f"truncated blob: {size} bytes, header says {total}")
    check = bytearray(mv[:table_end])
    struct.pack_into("<I", check, _CRC_OFFSET, 0)
    if zlib.crc32(check) != crc:
        raise ValueError("corrupted blob: header checksum mismatch")
    if size != total:
        what = "truncated" if size < total else "oversized"
        raise ValueError(f"{what} blob: {size} bytes, header says {total}")
    if pickle_off < table_end or pickle_off + pickle_len > total:
        raise ValueError("corrupted blob: pickle stream out of bounds")
    buffers = []
    for i in range(n):
        off, length = _ENTRY.unpack_from(mv, _HEADER.size + i * _ENTRY.size)
        if off < pickle_off + pickle_len or off + length > total:
            raise ValueError(f"corrupted blob: buffer {i} out of bounds")
        buffers.append(mv[off : off + length])
    return mv[pickle_off : pickle_off + pickle_len], buffers, bool(flags & FLAG_ANCHORED)


def _unpickle(stream: memoryview, buffers: list[memoryview], namespace: dict[str, Any],
              anchored: bool = False) -> Any:
    previous = getattr(_load_ctx, "namespace", None)
    previous_ro = getattr(_load_ctx, "read_only", None)
    previous_after = getattr(_load_ctx, "after", None)
    missing = object()
    builtins_before = namespace.get("__builtins__", missing)
    _load_ctx.namespace = namespace
    _load_ctx.read_only = read_only = []
    _load_ctx.after = after = []  # fix-ups once every object's state is set (`_set_figure_state`)
    try:
        if not anchored:
            values = pickle.loads(stream, buffers=buffers)
        else:
            up = _AnchoredUnpickler(io.BytesIO(stream), buffers=buffers)
            values = up.load()
            try:
                extra = up.load()
            except EOFError:
                extra = None
            if type(extra) is tuple and len(extra) == 2 and extra[0] == "homes":
                for value, modname, source, key in extra[1]:
                    _write_state(_put_in_module, value, modname, source, key)
        for fix in after:
            fix()
        for arr in read_only:
            arr.flags.writeable = False
        return values
    finally:
        _load_ctx.namespace = previous
        _load_ctx.read_only = previous_ro
        _load_ctx.after = previous_after
        # cloudpickle's function setstate overwrites the namespace's __builtins__: put it back
        if builtins_before is not missing:
            namespace["__builtins__"] = builtins_before


def loads_deferred(
    blob: bytes | bytearray | memoryview, *, namespace: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """`loads`, but the state of the notebook's modules and classes it holds is not written
    into them yet: returns the values and the calls that write it.

    A restore unpickles every blob before it re-runs any cell, and the modules and classes
    it imports are the process's: written at once, a re-run cell before the value's place in
    the history (``from counter_mod import *``) read their final state instead of the state
    it read then. The restore makes the calls when it puts the value in place.
    """
    previous = getattr(_load_ctx, "deferred", None)
    _load_ctx.deferred = deferred = []
    try:
        return loads(blob, namespace=namespace), deferred
    finally:
        _load_ctx.deferred = previous


def loads(
    blob: bytes | bytearray | memoryview, *, namespace: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load a blob made by ``dumps``; returns ``{name: object}``.

    Zero-copy: numpy buffers are memoryview slices of ``blob``, so keep it alive (the restored
    arrays do) and pass a writable buffer (``bytearray``, what ``Store.get_blob`` returns). A
    read-only blob (``bytes``) is copied once, so restored arrays stay writable as they were.

    Raises ``ValueError`` naming the problem (foreign, truncated, corrupted header, unknown
    version) before anything is unpickled; errors raised while unpickling (a module missing in
    this kernel, ...) propagate unchanged. Notebook functions are bound to ``namespace``
    (default ``sys.modules["__main__"].__dict__``).
    """
    mv = memoryview(blob)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    if mv.readonly:
        mv = memoryview(BlobBuffer(mv))
    stream, buffers, anchored = _parse(mv)
    if namespace is None:
        namespace = sys.modules["__main__"].__dict__
    values = _unpickle(stream, buffers, namespace, anchored)
    if not isinstance(values, dict):
        raise ValueError(f"corrupted blob: holds a {type(values).__name__}, not a co-variable dict")
    return values
