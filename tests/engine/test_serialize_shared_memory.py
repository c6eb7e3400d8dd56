"""Memory shared at an offset through `serialize` and the portable digest, in process.

A co-variable's pickle must bring a tensor, an arrow buffer or an array back over the memory
it shared, at the same offset inside it (``torch.from_numpy(a[2:])``: the tensor's storage
begins 16 bytes into ``a``), whichever of the two is pickled first; and the digest must tell a
value that lost that sharing (each side over a copy) from the original, with fewer identity
links, so that a load that lost it does not verify.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernel_agent.buffers import BlobBuffer
from kernel_agent.changes import digest_report
from kernel_agent.serialize import dumps, loads

torch = pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")


def roundtrip(values: dict) -> dict:
    s = dumps(values)
    assert s.error is None, s.error
    return loads(BlobBuffer(b"".join(s.parts)))


def _addr(x: object) -> int:
    return int(x.__array_interface__["data"][0])


@pytest.mark.parametrize("names", [("a", "t"), ("z", "t")])
def test_a_tensor_over_a_slice_comes_back_over_the_array_at_its_offset(names):
    """("z", "t"): the tensor is pickled first, before the array it lies in (a second pass)."""
    arr_name, t_name = names
    a = np.arange(8.0)
    values = {arr_name: a, t_name: torch.from_numpy(a[2:6])}
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    b, t = out[arr_name], out[t_name]
    assert t.untyped_storage().data_ptr() == _addr(b) + 16
    assert t.untyped_storage().nbytes() == 32  # (its storage, not the whole array)
    b[3] = 42.0
    assert t.tolist() == [2.0, 42.0, 4.0, 5.0]


def test_a_tensor_over_a_fortran_ordered_array_comes_back_over_it():
    a = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    values = {"a": a, "t": torch.from_numpy(a[:, 1:])}
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    assert out["t"].stride() == values["t"].stride()
    out["a"][0, 2] = -1.0
    assert out["t"][0, 1].item() == -1.0


@pytest.mark.parametrize("arrow_name", ["ax", "zx"])
def test_an_arrow_array_over_a_tensors_memory_comes_back_over_it(arrow_name):
    """"ax": the arrow buffer is pickled before the tensor (a second pass over their union)."""
    t = torch.arange(10)
    values = {"t": t, arrow_name: pa.array(t.numpy()[4:])}
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    out["t"][5] = 50
    assert out[arrow_name].to_pylist() == [4, 50, 6, 7, 8, 9]


def test_a_tensor_over_part_of_a_bytearray_comes_back_over_the_bytearray():
    buf = bytearray(32)
    values = {"buf": buf, "tb": torch.from_numpy(np.frombuffer(buf, dtype=np.int64)[1:])}
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    out["tb"][0] = 5
    assert out["buf"][8] == 5


@pytest.mark.parametrize("make", [
    lambda: (lambda a: {"a": a, "t": torch.from_numpy(a[2:])})(np.arange(8.0)),
    lambda: (lambda x: {"x": x, "ax": pa.array(x[2:])})(np.arange(6)),
    lambda: (lambda b: {"b": b, "t": torch.from_numpy(np.frombuffer(b, dtype=np.int64)[1:])})(
        bytearray(32)),
    lambda: (lambda t: {"t": t, "s": t.numpy()[3:]})(torch.zeros(8)),
], ids=["tensor-in-array", "arrow-in-array", "tensor-in-bytearray", "array-in-tensor"])
def test_a_copy_that_lost_the_sharing_digests_differently_with_fewer_links(make):
    """What a load that brought each side back over its own memory would give: not the value
    (`checkpointing.check_loaded_digest` refuses a loaded digest with fewer links)."""
    values = make()
    apart = {k: (v.clone() if isinstance(v, torch.Tensor) else
                 pa.array(v.to_numpy()) if isinstance(v, pa.Array) else
                 bytearray(v) if isinstance(v, bytearray) else v.copy())
             for k, v in values.items()}
    whole, split = digest_report(values), digest_report(apart)
    assert whole.digest != split.digest
    assert split.links < whole.links


@pytest.mark.parametrize("cut", [(slice(0, 6), slice(2, 8)), (slice(0, 6), slice(2, 4)),
                                 (slice(2, 4), slice(0, 6))],
                         ids=["overlapping", "second-inside-first", "first-inside-second"])
def test_tensors_over_overlapping_slices_of_an_array_nobody_holds_come_back_sharing(cut):
    """No numpy array of the stream holds both storages (the array they were made from is
    gone): they are rebuilt over one copy of the memory they span together."""
    h = np.arange(8.0)
    values = {"t1": torch.from_numpy(h[cut[0]]), "t2": torch.from_numpy(h[cut[1]])}
    del h
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    for v in (out, values):  # the same writes, through each tensor: seen by the other
        v["t1"][-1] = -1.0
        v["t2"][0] = 42.0
    assert {k: out[k].tolist() for k in out} == {k: values[k].tolist() for k in values}


def test_a_tensor_over_all_of_a_bytearray_comes_back_over_the_bytearray():
    """Its storage is exactly the bytearray's memory (`torch.frombuffer`): not an array of the
    stream met after the tensor, so the second pass must still run."""
    buf = bytearray(range(16))
    values = {"buf": buf, "t": torch.frombuffer(buf, dtype=torch.uint8)}
    out = roundtrip(values)
    assert digest_report(out).digest == digest_report(values).digest
    out["t"][3] = 99
    assert out["buf"][3] == 99
