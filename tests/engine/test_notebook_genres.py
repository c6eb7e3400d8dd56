"""Notebooks of genres the other engine tests had not covered, each cut down to the scenario that
came back silently different: a torch training loop split over cells, image processing with
pillow, simulations, app-style code. Each is migrated with both plans (tests/engine/adversarial.py)
and then continued in kernel A and in each restored kernel: what a later cell observes must be the
same, or the restore must have named the variable it could not bring back.
"""

from __future__ import annotations

import os

import pytest

from tests.engine.adversarial import Restored, migrate_both
from tests.kernels import Kernel


def _seeded(make_kernel):
    """Kernels with one string-hash seed, as the server starts every kernel of a user."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return lambda: make_kernel(env=env)


def _continued(make_kernel, tmp_path, cells: list[str], follow_up: str, probe: str
               ) -> tuple[Kernel, dict[str, Restored], object]:
    """Migrate `cells` with both plans, then run `follow_up` in A and in each B; A's `probe`."""
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    a.ok(follow_up)
    return a, out, a.value(probe)


def test_a_loss_re_made_by_its_cell_still_backpropagates_into_the_notebooks_model(make_kernel,
                                                                                 tmp_path):
    """`loss` holds an autograd graph (it does not pickle, so its cell is re-run); `model.eval()`
    changed `model` later, and the optimal plan shipped it. The walk did not follow the graph to
    the parameters, so the two were planned apart: `loss` came back over the parameters of a model
    the restore had re-made for its cell and then dropped for the shipped one, both verified, and
    `loss.backward()` left the notebook's `model.weight.grad` at None."""
    pytest.importorskip("torch")
    cells = [
        "import torch\nfrom torch import nn",
        "torch.manual_seed(3)\nmodel = nn.Linear(3, 1)\nX = torch.randn(5, 3)",
        "loss = model(X).pow(2).mean()",
        "model.eval()",
    ]
    follow_up = "loss.backward()"
    probe = "None if model.weight.grad is None else model.weight.grad.tolist()"
    _, out, want = _continued(make_kernel, tmp_path, cells, follow_up, probe)
    assert want is not None
    for r in out.values():
        assert r.restore["verified"] or "loss" in r.restore["lost"], r.plan
        r.kernel.ok(follow_up)
        assert r.kernel.value(probe) == want, r.plan

