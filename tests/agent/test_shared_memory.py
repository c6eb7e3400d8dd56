"""Memory shared at an offset between numpy arrays, torch tensors, arrow buffers and buffers.

Two names whose values read or write the same bytes are one co-variable: a plan that ships one
and recomputes (or ships apart) the other leaves them over two memories after a restore, and a
write into one no longer shows in the other while both verify. The sharing is not always from
the start of an allocation: ``torch.from_numpy(a[2:])``, ``pa.array(x[2:])`` and
``np.frombuffer(buf, offset=8)`` wrap memory from inside another object's, so the link is by
overlapping address spans, not by start address.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_agent.changes import Tracker


def _groups(ns: dict) -> set[frozenset[str]]:
    t = Tracker()
    t.update(ns, sorted(ns), [])
    return set(t.covariables())


def _tracker(ns: dict) -> Tracker:
    t = Tracker()
    t.update(ns, sorted(ns), [])
    return t


def test_a_tensor_from_a_numpy_slice_is_one_covariable_with_the_array():
    torch = pytest.importorskip("torch")
    a = np.arange(10.0)
    assert frozenset({"a", "t"}) in _groups({"a": a, "t": torch.from_numpy(a[2:])})


def test_a_tensor_from_a_numpy_slice_walked_in_a_later_cell_joins_the_array():
    """The array's span is in the tracker's index from an earlier update; the tensor, new in
    this one, must find it there (not only among the names walked together)."""
    torch = pytest.importorskip("torch")
    ns: dict = {"a": np.arange(10.0), "other": np.zeros(3)}
    t = _tracker(ns)
    ns["t"] = torch.from_numpy(ns["a"][4:])
    t.update(ns, ["t"], [])
    assert frozenset({"a", "t"}) in set(t.covariables())
    assert frozenset({"other"}) in set(t.covariables())


def test_a_write_into_the_array_mutates_the_tensor_over_its_tail():
    torch = pytest.importorskip("torch")
    ns: dict = {"a": np.arange(10.0)}
    ns["t"] = torch.from_numpy(ns["a"][2:])
    t = _tracker(ns)
    ns["a"][5] = 99.0
    assert t.update(ns, ["a"], []).mutated == {"a", "t"}


def test_a_tensor_from_an_array_over_part_of_a_bytearray_is_one_covariable_with_it():
    torch = pytest.importorskip("torch")
    buf = bytearray(64)
    t = torch.from_numpy(np.frombuffer(buf, dtype=np.int64)[2:])
    assert frozenset({"buf", "t"}) in _groups({"buf": buf, "t": t})


def test_a_tensor_made_by_torch_frombuffer_at_an_offset_is_one_covariable_with_the_bytearray():
    torch = pytest.importorskip("torch")
    buf = bytearray(64)
    t = torch.frombuffer(buf, dtype=torch.int64, offset=16)
    assert frozenset({"buf", "t"}) in _groups({"buf": buf, "t": t})


def test_an_arrow_array_over_a_numpy_slice_is_one_covariable_with_the_array():
    pa = pytest.importorskip("pyarrow")
    x = np.arange(10)
    assert frozenset({"x", "ax"}) in _groups({"x": x, "ax": pa.array(x[2:])})


def test_an_arrow_buffer_over_part_of_a_numpy_array_is_one_covariable_with_it():
    pa = pytest.importorskip("pyarrow")
    x = np.arange(10)
    assert frozenset({"x", "b"}) in _groups({"x": x, "b": pa.py_buffer(x[3:7])})


def test_an_arrow_array_over_a_tensor_slice_is_one_covariable_with_the_tensor():
    torch = pytest.importorskip("torch")
    pa = pytest.importorskip("pyarrow")
    t = torch.arange(10)
    assert frozenset({"t", "ax"}) in _groups({"t": t, "ax": pa.array(t.numpy()[4:])})


def test_arrays_over_disjoint_memory_stay_apart():
    """Spans that only touch (one ends where the next begins) share no byte: not linked."""
    torch = pytest.importorskip("torch")
    pa = pytest.importorskip("pyarrow")
    a = np.arange(10.0)
    ns = {"a": a, "t": torch.zeros(4), "x": np.arange(5), "ax": pa.array([1, 2, 3]),
          "buf": bytearray(16)}
    assert _groups(ns) == {frozenset({n}) for n in ns}


def test_disjoint_slices_of_one_tensor_in_two_names_are_one_covariable():
    """They share a storage (a later `t.resize_` or write through the storage touches both)."""
    torch = pytest.importorskip("torch")
    base = torch.arange(10.0)
    assert frozenset({"lo", "hi"}) in _groups({"lo": base[:3].numpy(), "hi": base[6:]})
