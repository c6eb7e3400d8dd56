"""Tensors through `serialize` and the portable digest, in process (no kernel).

A co-variable's pickle must bring back what the digest checks: every tensor over one storage
still over one memory (and numpy arrays sharing it), the exact dtype (bfloat16 has no numpy
dtype), strides, ``.grad`` and parameters as parameters; the bytes go out of band, not copied
into the pickle stream. The digest must tell those apart and be the same in every process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from kernel_agent.buffers import BlobBuffer
from kernel_agent.changes import reachable_size, value_digest
from kernel_agent.serialize import dumps, loads

torch = pytest.importorskip("torch")


def roundtrip(values: dict) -> dict:
    s = dumps(values)
    assert s.error is None, s.error
    return loads(BlobBuffer(b"".join(s.parts)))


def same_memory(x, y) -> bool:
    return x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()


def test_views_of_a_tensor_come_back_over_one_storage_with_their_strides():
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    values = {"t": t, "v": t[1:3], "flat": t.view(-1), "tr": t.T, "cols": t[:, ::2]}
    out = roundtrip(values)
    for name, x in values.items():
        y = out[name]
        assert torch.equal(x, y) and y.dtype == x.dtype and y.stride() == x.stride(), name
        assert same_memory(y, out["t"]), name
    assert value_digest(out) == value_digest(values)
    out["t"][1, 0] = -5
    assert float(out["v"][0, 0]) == -5 and float(out["tr"][0, 1]) == -5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8", "bool", "complex64", "float64"])
def test_every_dtype_comes_back_bit_for_bit(dtype):
    x = (torch.arange(-8, 8) * 0.37).to(getattr(torch, dtype))
    y = roundtrip({"x": x})["x"]
    assert y.dtype == x.dtype and torch.equal(y, x)
    assert value_digest({"x": y}) == value_digest({"x": x})


def test_the_bytes_go_out_of_band_not_into_the_stream():
    big = torch.ones(1 << 18, dtype=torch.bfloat16)  # 512 KB
    s = dumps({"big": big, "view": big[10:]})
    assert s.error is None
    assert len(s.parts[1]) < 4096  # the pickle stream: the storage is one out-of-band buffer
    assert sum(len(memoryview(p).cast("B")) for p in s.parts[2:]) < 2 * big.nbytes


def test_grad_and_parameters_come_back():
    w = torch.randn(3, requires_grad=True)
    (w * 2).sum().backward()
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 0.5)
    out = roundtrip({"w": w, "p": p})
    assert out["w"].requires_grad and out["w"].is_leaf and torch.equal(out["w"].grad, w.grad)
    assert type(out["p"]) is torch.nn.Parameter and torch.equal(out["p"].grad, p.grad)
    assert value_digest(out) == value_digest({"w": w, "p": p})


def test_memory_shared_with_numpy_arrays_stays_shared_in_either_order():
    a = np.arange(6.0)
    tn = torch.zeros(5)
    values = {"a": a, "ta": torch.from_numpy(a), "tn": tn, "na": tn.numpy(),
              "tail": tn[2:].numpy()}
    for order in (list(values), list(reversed(values))):
        out = roundtrip({k: values[k] for k in order})
        assert np.shares_memory(out["a"], out["ta"].numpy())
        assert np.shares_memory(out["na"], out["tn"].numpy())
        assert np.shares_memory(out["tail"], out["na"])
        assert value_digest(out) == value_digest(values)


def test_a_non_leaf_tensor_that_requires_grad_is_reported_not_shipped():
    """torch would pickle it as a leaf, without the graph it was computed through (a different
    value, which the digest tells apart): the engine recomputes it instead."""
    w = torch.ones(2, requires_grad=True)
    y = w * 2
    s = dumps({"y": y})
    assert s.error is not None and "autograd" in s.error
    assert value_digest({"y": y}) != value_digest({"y": y.detach().requires_grad_()})


def test_an_optimizer_comes_back_with_its_hooks_over_the_models_parameters():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(3)).sum().backward()
    opt.step()
    opt.register_step_post_hook(print)
    out = roundtrip({"model": model, "opt": opt})
    params = list(out["model"].parameters())
    assert all(p in out["opt"].state for p in params)
    assert out["opt"].param_groups[0]["params"][0] is params[0]
    assert list(out["opt"]._optimizer_step_post_hooks.values()) == [print]
    assert value_digest(out) == value_digest({"model": model, "opt": opt})


def test_the_digest_tells_a_view_from_a_copy_and_sees_grad():
    t = torch.arange(10.0)
    assert value_digest({"t": t, "v": t[2:5]}) != value_digest({"t": t, "v": t[2:5].clone()})
    w = torch.zeros(3, requires_grad=True)
    before = value_digest({"w": w})
    w.grad = torch.ones(3)
    assert value_digest({"w": w}) != before


_SRC = textwrap.dedent(
    """
    import torch, numpy as np
    torch.manual_seed(0)
    t = torch.randn(6, 4)
    a = np.arange(5.0)
    data = {"t": t, "v": t[1:3], "tr": t.T, "bf": t.to(torch.bfloat16), "a": a,
            "ta": torch.from_numpy(a), "sp": torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,)),
            "big": torch.arange(6 * 2**20, dtype=torch.float32),  # 24 MB: hashed in chunks
            "model": torch.nn.Linear(3, 2)}
    """
)


def test_the_digest_of_tensors_is_the_same_in_another_process(tmp_path):
    script = tmp_path / "dig.py"
    script.write_text(_SRC + "from kernel_agent.changes import value_digest\nprint(value_digest(data))\n")
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (sparse invariant checks)
        exec(_SRC, ns)
    here = value_digest(ns["data"])
    for seed in ("1", "2"):
        res = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True,
                             text=True, check=True, env=dict(os.environ, PYTHONHASHSEED=seed))
        assert res.stdout.strip() == here


def test_the_digest_never_calls_a_tensor_subclass_torch_function():
    """A subclass's ``__torch_function__`` is user code, run by every method and attribute of
    its tensors: the agent must not run it (it may print, count, or fail)."""
    calls: list[str] = []

    class Logged(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(getattr(func, "__name__", str(func)))
            return super().__torch_function__(func, types, args, kwargs or {})

    x = torch.arange(4.0).as_subclass(Logged)
    calls.clear()
    first = value_digest({"x": x})
    x.add_(1)
    calls.clear()
    assert value_digest({"x": x}) != first
    assert calls == []


def test_views_of_one_storage_count_its_bytes_once_in_the_size_estimate():
    """The planner costs shipping by this estimate: a tensor and three views of it ship one
    storage, not four."""
    t = torch.zeros(1 << 20)
    assert reachable_size([t, t[1:], t.view(-1), t.reshape(2, -1)]) < 1.1 * t.nbytes
