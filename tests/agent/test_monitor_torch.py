"""PyTorch tensors in a monitored kernel: in-place changes are mutations, shared storage is one
co-variable, and a big tensor read by a cell stays within the per-cell hash budget.

One kernel for the module (the `agent` fixture): importing torch costs a second or two, so it is
imported once by the first test that needs it and every test uses its own names.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

IMPORT = "import torch, numpy as np"


def test_in_place_tensor_ops_are_mutations_of_the_tensor_only(agent):
    """`add_`, item assignment and `mul_` change a tensor without rebinding it: the cell must be
    recorded as mutating it (a missed one makes a replay restore an older value)."""
    agent.ok(f"{IMPORT}\nip_t = torch.zeros(1000)\nip_other = torch.ones(10)")
    for code in ("ip_t.add_(1)", "ip_t[0] = 5", "ip_t.mul_(2)"):
        rec = agent.cell(code)
        assert rec["mutated"] == ["ip_t"], code
        assert rec["writes"] == []
    assert agent.value("[float(ip_t[0]), float(ip_t[1])]") == [10.0, 2.0]


def test_in_place_op_inside_a_called_function_is_a_mutation(agent):
    agent.ok(f"{IMPORT}\ndef fn_bump(x):\n    x.add_(1)\nfn_t = torch.zeros(4)")
    rec = agent.cell("fn_bump(fn_t)")
    assert rec["mutated"] == ["fn_t"]


def test_reading_a_tensor_is_not_a_mutation(agent):
    agent.ok(f"{IMPORT}\nrd_t = torch.arange(100.0)")
    rec = agent.cell("rd_s = float(rd_t.sum())")
    assert rec["mutated"] == []
    assert "rd_t" in rec["reads"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8", "bool", "complex64"])
def test_in_place_change_of_a_tensor_of_each_dtype_is_a_mutation(agent, dtype):
    """bfloat16 has no numpy dtype (`.numpy()` raises): its bytes must still be hashed."""
    name = f"dt_{dtype}"
    agent.ok(f"{IMPORT}\n{name} = torch.zeros(64, dtype=torch.{dtype})")
    rec = agent.cell(f"{name}[3] = 1")
    assert rec["mutated"] == [name]
    rec = agent.cell(f"{name}_n = int({name}.sum().real) if {name}.is_complex() else int({name}.sum())")
    assert rec["mutated"] == []


@pytest.mark.parametrize("make", ["vw_t[2:5]", "vw_t.view(-1)", "vw_t.T", "vw_t.detach()",
                                  "vw_t[:, ::2]", "vw_t.reshape(-1)"])
def test_a_view_is_one_co_variable_with_its_base_and_writes_through_it_mutate_both(agent, make):
    agent.ok(f"{IMPORT}\nvw_t = torch.zeros(6, 4)\nvw_v = {make}")
    assert agent.covariable("vw_t") == ["vw_t", "vw_v"]
    rec = agent.cell("vw_v.add_(1)")
    assert set(rec["mutated"]) == {"vw_t", "vw_v"}


def test_views_of_one_storage_are_one_co_variable_without_their_base(agent):
    """Two slices of a tensor no variable holds share its storage: `a.add_` can change `b`."""
    agent.ok(f"{IMPORT}\nsl_a = torch.zeros(10)[:6]")
    agent.ok("sl_b = sl_a._base[4:]")
    assert agent.covariable("sl_a") == ["sl_a", "sl_b"]
    rec = agent.cell("sl_a.fill_(1)")
    assert set(rec["mutated"]) == {"sl_a", "sl_b"}


def test_numpy_of_a_tensor_shares_its_memory_and_its_co_variable(agent):
    agent.ok(f"{IMPORT}\nnp_t = torch.zeros(8)\nnp_a = np_t.numpy()\nnp_s = np_t[2:].numpy()")
    assert agent.covariable("np_t") == ["np_a", "np_s", "np_t"]
    rec = agent.cell("np_a[0] = 7")
    assert set(rec["mutated"]) == {"np_a", "np_t"}  # (np_s is elements 2 on: unchanged)
    rec = agent.cell("np_a[3] = 7")
    assert set(rec["mutated"]) == {"np_a", "np_s", "np_t"}


def test_from_numpy_shares_the_arrays_memory_and_its_co_variable(agent):
    agent.ok(f"{IMPORT}\nfn_a = np.zeros(8)\nfn_t = torch.from_numpy(fn_a)")
    assert agent.covariable("fn_a") == ["fn_a", "fn_t"]
    rec = agent.cell("fn_a += 1")
    assert set(rec["mutated"]) == {"fn_a", "fn_t"}


def test_making_the_first_optimizer_is_no_side_effect(agent):
    """The first optimizer imports torch._dynamo, which creates torch's compiler cache
    directory: a cache, not the notebook's doing. Taken for an effect, it made the cell that
    builds a model and its optimizer impossible to re-run, and a replay restore lost them."""
    rec = agent.cell(f"{IMPORT}\nfx_model = torch.nn.Linear(2, 1)\n"
                     "fx_opt = torch.optim.SGD(fx_model.parameters(), lr=0.1)")
    assert rec["effects"] == []


def test_backward_and_an_optimizer_step_mutate_the_model_and_the_optimizer(agent):
    """`loss.backward()` fills `.grad` of the parameters (the model's state: a C attribute, not
    in the instance dict), and `opt.step()` changes them in place and fills the optimizer's
    state: both are mutations of `model`, the step one of `opt` too."""
    agent.ok(f"{IMPORT}\ntorch.manual_seed(0)\nop_model = torch.nn.Linear(3, 2)\n"
             "op_opt = torch.optim.Adam(op_model.parameters(), lr=0.1)\nop_x = torch.randn(5, 3)")
    assert agent.covariable("op_model") == ["op_model", "op_opt"]
    rec = agent.cell("op_model(op_x).sum().backward()")
    assert "op_model" in rec["mutated"]
    assert "op_x" not in rec["mutated"]
    rec = agent.cell("op_opt.step()")
    assert {"op_model", "op_opt"} <= set(rec["mutated"])
    rec = agent.cell("op_w = float(op_model.weight.sum())")
    assert rec["mutated"] == []


def test_setting_grad_by_hand_is_a_mutation(agent):
    agent.ok(f"{IMPORT}\ngr_t = torch.zeros(3, requires_grad=True)")
    rec = agent.cell("gr_t.grad = torch.ones(3)")
    assert rec["mutated"] == ["gr_t"]
    rec = agent.cell("gr_t.grad.add_(1)")
    assert rec["mutated"] == ["gr_t"]
    rec = agent.cell("gr_t.requires_grad_(False)")
    assert rec["mutated"] == ["gr_t"]


def test_in_place_change_of_a_sparse_tensor_is_a_mutation(agent):
    agent.ok(f"{IMPORT}\nsp_t = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,)).coalesce()")
    rec = agent.cell("sp_t.values().mul_(3)")
    assert rec["mutated"] == ["sp_t"]


def test_a_cell_drawing_from_torchs_generator_records_its_state_and_replays_identically(agent):
    """`torch.randn` draws from torch's own generator: without its state before the cell, a
    restore that re-ran that cell alone drew other numbers (and lost the value)."""
    agent.ok(f"{IMPORT}\ntorch.manual_seed(3)\nrg_skip = torch.rand(2)")
    rec = agent.cell("rg_x = torch.randn(4).tolist()")
    state = json.dumps(agent.history()["rng_states"][rec["rng_state"]])
    agent.ok("rg_more = torch.rand(9)")
    agent.ok("__import__('kernel_agent.rng').rng.apply(__import__('json').loads("
             f"{state!r}))\nrg_again = torch.randn(4).tolist()")
    assert agent.value("rg_again == rg_x") is True
    assert agent.cell("rg_none = 1 + 1")["rng_state"] is None


def test_a_cell_reading_a_100_mb_tensor_costs_the_tracker_milliseconds(agent):
    """The tracker hashes at most `Tracker.hash_budget` bytes per cell: a 100 MB tensor a cell
    only reads is not hashed again (it is deferred, like a numpy array over the budget)."""
    agent.ok(f"{IMPORT}\nbig_t = torch.ones(25_000_000)")
    stats = "__import__('kernel_agent.extension').extension.get_monitor().stats['tracker_s']"
    costs = []
    for _ in range(3):
        before = agent.value(stats)
        agent.ok("big_n = big_t.shape[0]")
        costs.append(agent.value(stats) - before)
    # (cold: the first read after the cell that made it; then a plain reading cell)
    assert min(costs) < 0.005, costs
    rec = agent.cell("big_t[0] = 2")
    assert "big_t" in rec["mutated"]


def test_reading_a_torch_generator_is_not_a_mutation(agent):
    """A generator reduces to a new state tensor at every walk: its address was part of the
    fingerprint, so every cell naming the generator mutated it, and a checkpoint found it
    changed outside recorded cells (which no replay recreates)."""
    agent.ok(f"{IMPORT}\ngen_g = torch.Generator().manual_seed(3)")
    # (tensors the size of its state keep the memory its last walk's state tensor freed, so
    # the next one cannot land at the same address by chance)
    rec = agent.cell("gen_seed = gen_g.initial_seed()\n"
                     "gen_hold = [torch.empty(5056, dtype=torch.uint8) for _ in range(8)]")
    assert rec["mutated"] == []
    assert "gen_g" in rec["reads"]
    assert agent.cell("gen_x = torch.rand(2, generator=gen_g)")["mutated"] == ["gen_g"]
