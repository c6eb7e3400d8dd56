"""PyTorch state migrated from kernel A to fresh kernels (optimal plan and replay plan).

Tensors must come back equal (values, dtype, shape, strides), views must still share storage
with their base (a write through one shows through the other), memory shared with numpy arrays
must stay shared, and a model with its optimizer must come back in the state training left
them in (parameters, their `.grad`, the optimizer's moments, keyed by the model's very
parameters), so that training on after the restore gives what it gives in A; a loss computed
with autograd comes back computed again (its graph does not pickle).

Kernels import torch (a second or two each): scenarios are grouped into a few notebooks.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_verified, migrate_both

torch = pytest.importorskip("torch")

TENSOR_CELLS = [
    "import torch, numpy as np\ntorch.manual_seed(0)",
    "t = torch.arange(24, dtype=torch.float32).reshape(4, 6)",
    "v = t[1:3]\nflat = t.view(-1)\ntr = t.T\ncols = t[:, ::2]",
    "t.add_(1)\nv[0, 0] = 100",
    "bf = torch.linspace(0, 1, 10, dtype=torch.bfloat16)\nhf = torch.randn(7).half()\n"
    "i8 = torch.arange(-5, 5, dtype=torch.int8)\nbl = i8 > 0",
    "bf.mul_(3)\nbl[0] = True",
    "w = torch.randn(3, 3, requires_grad=True)\n(w * 2).sum().backward()",
    "sp = torch.sparse_coo_tensor([[0, 2], [1, 0]], [1.0, 2.0], (3, 3))",
]

TENSOR_EXPR = (
    "[(n, str(x.dtype), list(x.shape), list(x.stride()), x.float().tolist()) for n, x in "
    "[('t', t), ('v', v), ('flat', flat), ('tr', tr), ('cols', cols), ('bf', bf), ('hf', hf), "
    "('i8', i8), ('bl', bl), ('w', w)]] + [w.grad.tolist(), w.requires_grad, w.is_leaf, "
    "sp.to_dense().tolist(), sp.is_sparse] + "
    "[x.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() for x in (v, flat, tr, cols)]"
)


def test_tensors_views_and_dtypes_come_back_equal_and_sharing_storage(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, TENSOR_CELLS)
    want = a.value(TENSOR_EXPR)
    assert want[-4:] == [True] * 4
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(TENSOR_EXPR) == want, r.plan
        # writes through the base show through every view, and the other way
        r.kernel.ok("t[1, 0] = -5\ncols[0, 1] = -7")
        assert r.kernel.value("[float(v[0, 0]), float(flat[6]), float(tr[0, 1]), float(t[0, 2])]") \
            == [-5.0, -5.0, -5.0, -7.0], r.plan


NUMPY_CELLS = [
    "import torch, numpy as np",
    "a = np.arange(6.0)\nta = torch.from_numpy(a)",
    "a += 1",
    "tn = torch.zeros(5)\nna = tn.numpy()\ntail = tn[2:].numpy()",
    "na[1] = 3\ntail[0] = 4",
]

NUMPY_EXPR = ("[a.tolist(), ta.tolist(), tn.tolist(), na.tolist(), tail.tolist(), "
              "bool(np.shares_memory(a, ta.numpy())), bool(np.shares_memory(na, tn.numpy())), "
              "bool(np.shares_memory(tail, na))]")


def test_memory_shared_between_tensors_and_numpy_arrays_stays_shared(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, NUMPY_CELLS)
    want = a.value(NUMPY_EXPR)
    assert want[-3:] == [True, True, True]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(NUMPY_EXPR) == want, r.plan
        r.kernel.ok("a[0] = 42\ntn[4] = 9")
        assert r.kernel.value("[float(ta[0]), float(na[4]), float(tail[2])]") == [42.0, 9.0, 9.0]


TRAIN_CELLS = [
    "import torch\ntorch.manual_seed(0)",
    "model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))\n"
    "opt = torch.optim.Adam(model.parameters(), lr=0.01)\n"
    "x = torch.randn(16, 4)\ny = torch.randn(16, 1)",
    "def train_step():\n    opt.zero_grad()\n    loss = ((model(x) - y) ** 2).mean()\n"
    "    loss.backward()\n    opt.step()\n    return loss.item()",
    "losses = [train_step() for _ in range(3)]",
    "loss = ((model(x) - y) ** 2).mean()",  # computed with autograd: recomputed, not shipped
]

TRAIN_EXPR = (
    "[{k: v.tolist() for k, v in model.state_dict().items()}, "
    "[p.grad.tolist() for p in model.parameters()], "
    "[(float(s['step']), s['exp_avg'].tolist(), s['exp_avg_sq'].tolist()) for s in opt.state.values()], "
    "all(p in opt.state for p in model.parameters()), "
    "[p is q for p, q in zip(opt.param_groups[0]['params'], model.parameters())], losses, "
    "[loss.item(), loss.requires_grad, loss.is_leaf, type(loss.grad_fn).__name__]]"
)


def test_a_model_and_its_optimizer_come_back_as_training_left_them(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, TRAIN_CELLS)
    want = a.value(TRAIN_EXPR)
    a.ok("more = [train_step() for _ in range(2)]")
    after = a.value("[more, {k: v.tolist() for k, v in model.state_dict().items()}]")
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(TRAIN_EXPR) == want, r.plan
        # training on gives what it gives in A: the optimizer steps the restored parameters
        r.kernel.ok("more = [train_step() for _ in range(2)]")
        assert r.kernel.value("[more, {k: v.tolist() for k, v in model.state_dict().items()}]") \
            == after, r.plan


def test_a_generator_the_notebook_drew_from_is_recomputed_by_replay(make_kernel, tmp_path):
    """The generator looked changed at every walk (`test_reading_a_torch_generator_is_not_a_
    mutation`): the checkpoint recorded it as changed outside recorded cells, so the replay
    plan named it lost instead of re-running the two cells that made it."""
    cells = ["import torch\ng = torch.Generator().manual_seed(3)", "x = torch.rand(2, generator=g)"]
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value("torch.rand(2, generator=g).tolist()")
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("torch.rand(2, generator=g).tolist()") == want, r.plan


def test_the_default_generator_manual_seed_returns_stays_torchs(make_kernel, tmp_path):
    """``gen = torch.manual_seed(42)`` is torch's global generator: shipped as a copy, a later
    ``gen.manual_seed(1)`` no longer reseeded ``torch.rand`` (verified all the same), and the
    replay plan named it lost (no cell re-creates a copy)."""
    a, out = migrate_both(make_kernel, tmp_path, ["import torch\ngen = torch.manual_seed(42)",
                                                  "first = torch.rand(2)"])
    probe = "[gen is torch.default_generator, torch.rand(1).tolist(), gen.manual_seed(1) is gen, " \
            "torch.rand(1).tolist()]"
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan
