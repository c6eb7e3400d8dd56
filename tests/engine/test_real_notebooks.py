"""Scenarios reduced from public notebooks their authors wrote (tutorials, books, courses),
run through `elastic-spawner demo --notebook`: each is the few cells that made a restore fail
or report a difference, migrated with both plans (tests/engine/adversarial.py)."""

from __future__ import annotations

import os

import pytest

from tests.engine.adversarial import assert_verified, migrate_both


def _seeded(make_kernel):
    """Kernels with one string-hash seed, as the server starts every kernel of a user."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return lambda: make_kernel(env=env)


def test_a_model_built_in_the_cell_that_imports_torch_is_rebuilt_with_the_same_weights(
        make_kernel, tmp_path):
    """PyTorch's optimization tutorial imports torch and builds its network in one cell, with
    no seed. torch seeds its default generator from OS entropy in every process, and the state
    before that cell had no torch in it: the monitor took the cell for one that drew nothing,
    and a replay built other weights ("value differs", the model and its optimizer mismatched).
    The state torch was seeded with is recorded for the cell and set again before its re-run."""
    pytest.importorskip("torch")
    cells = [
        "import torch\nfrom torch import nn\n\n"
        "class NeuralNetwork(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = nn.Linear(4, 2)\n\n"
        "    def forward(self, x):\n"
        "        return self.lin(x)\n\n"
        "model = NeuralNetwork()",
        "optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)",
    ]
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    probe = "[model.lin.weight.tolist(), model.lin.bias.tolist()]"
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan
    assert "model" in out["replay"].restore["recomputed"]


def test_a_sympy_expression_whose_hash_was_taken_comes_back_verified(make_kernel, tmp_path):
    """The SymPy tutorial calls `init_printing()`; IPython then renders each expression a cell
    shows, which hashes it, and sympy caches that hash in the expression (`_mhash`). The loaded
    copy has not been hashed yet: every sympy variable of the notebook came back "value
    differs"."""
    pytest.importorskip("sympy")
    cells = [
        "from sympy import symbols, cos, init_printing\nx, y = symbols('x y')\n"
        "init_printing(use_unicode=True)",
        "expr = cos(x) + 1\nexpr.subs(x, y)",
    ]
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    # (the replay plan cannot re-run the rendering cell, which writes LaTeX files: lost there)
    r = out["optimal"]
    assert_verified(r)
    assert r.kernel.value("str(expr)") == a.value("str(expr)")
