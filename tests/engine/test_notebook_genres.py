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


def test_a_gif_opened_from_a_file_since_removed_is_named_not_verified_without_its_frames(
        make_kernel, tmp_path):
    """Pillow pickles an opened image as its pixels: the `GifImageFile` it rebuilds has no frame
    count, no position, no file. Shipped (its file gone, its cell cannot re-open it), it verified
    (its loaded copy was taken for the value with state filled in) and `gif.n_frames` raised
    AttributeError in the restored kernel."""
    pytest.importorskip("PIL")
    cells = [
        "import os\nimport numpy as np\nfrom PIL import Image",
        "frames = [Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)) for i in range(3)]\n"
        "frames[0].save('anim.gif', save_all=True, append_images=frames[1:])",
        "gif = Image.open('anim.gif')",
        "os.remove('anim.gif')",
    ]
    probe = "[gif.n_frames, gif.tell()]"
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    want = a.value(probe)
    for r in out.values():
        v = r.restore["variables"]["gif"]
        if v.get("verified"):
            assert r.kernel.value(probe) == want, r.plan
        else:
            assert v.get("detail"), r.plan


def test_a_set_items_were_removed_from_takes_later_adds_in_the_order_it_did(make_kernel,
                                                                            tmp_path):
    """A set keeps its table size and a dummy per removed item; where later adds land, hence
    the order `list(basket)` gives after them, depends on both. Pickle rebuilt `basket` as a
    fresh set of the four items left: it iterated as it did and verified, but after
    `basket.add('zz')` in the restored kernel the order differed from the original kernel's.
    Shipped (its cell reads OS entropy), its very table is now rebuilt."""
    cells = [
        "import os\nsalt = os.urandom(2)\nbasket = {'apple', 'kiwi', 'fig', 'pear', 'plum', 'lime'}",
        "basket.discard('kiwi')\nbasket.discard('pear')",
    ]
    follow_up = "basket.add(1)\nbasket.add('zz')\nbasket.add(1000)"
    probe = "[str(x) for x in basket]"
    _, out, want = _continued(make_kernel, tmp_path, cells, follow_up, probe)
    for r in out.values():
        if r.restore["variables"]["basket"].get("verified"):
            r.kernel.ok(follow_up)
            assert r.kernel.value(probe) == want, r.plan
        else:
            assert "basket" in r.restore["lost"], r.plan


def test_torch_settings_made_by_a_cell_that_cannot_be_re_run_are_set_again(make_kernel,
                                                                           tmp_path):
    """`torch.set_default_dtype(torch.float64)`, `torch.set_grad_enabled(False)` (as a
    statement) and `torch.set_printoptions(precision=2)` hold for every later cell. Set by a cell
    that cannot be re-run (it reads OS entropy), they were not carried, only warned about in
    general terms: after a restore that verified every variable, new tensors were float32 and
    had a graph where the session made neither."""
    pytest.importorskip("torch")
    cells = [
        "import os\nimport torch",
        "salt = os.urandom(2)\ntorch.set_default_dtype(torch.float64)\n"
        "torch.set_grad_enabled(False)\ntorch.set_printoptions(precision=2)",
        "salt2 = os.urandom(2)\nw = torch.ones(2, requires_grad=True)",
    ]
    probe = ("[str(torch.zeros(1).dtype), torch.is_grad_enabled(), (torch.ones(1, requires_grad=True)"
             " * 2).requires_grad, repr(torch.tensor([1.23456]))]")
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    want = a.value(probe)
    assert want == ["torch.float64", False, False, "tensor([1.23])"]
    for r in out.values():
        assert r.kernel.value(probe) == want, r.plan



def test_a_model_whose_training_cell_cannot_be_re_run_is_kept_without_the_loss_left_over(
        make_kernel, tmp_path):
    """`loss` left over from the training loop holds an autograd graph over `model`'s
    parameters: one co-variable with `model` and `opt`, and its graph does not pickle. The loop
    saved a file, so it cannot be re-run: the whole was lost, the trained model with it. Only
    `loss` is lost now; `model` and `opt` are shipped against a digest of their own."""
    pytest.importorskip("torch")
    cells = [
        "import torch\nfrom torch import nn",
        "torch.manual_seed(0)\nmodel = nn.Linear(3, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)\nX = torch.randn(8, 3)",
        "for _ in range(3):\n    opt.zero_grad()\n    loss = model(X).pow(2).mean()\n"
        "    loss.backward()\n    opt.step()\nopen('ckpt.txt', 'w').write('saved')",
    ]
    probe = "[model.weight.tolist(), opt.param_groups[0]['params'][0] is model.weight]"
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    want = a.value(probe)
    r = out["optimal"]
    variables = r.restore["variables"]
    assert variables["loss"]["action"] == "lost" and "autograd" in variables["loss"]["detail"]
    assert variables["model"].get("verified") and variables["opt"].get("verified"), variables
    assert r.kernel.value(probe) == want
    assert r.kernel.value("'loss' in dir()") is False


def test_a_model_its_optimizer_and_lr_scheduler_ship_when_the_training_cell_cannot_be_re_run(
        make_kernel, tmp_path):
    """An LR scheduler wraps `opt.step` in a closure over `weakref.ref(opt)`, which had no
    pickle: model, optimizer and scheduler were lost when the training cell (it saved a file)
    could not be re-run. They ship now, and the next training step in the restored kernel gives
    the weights and learning rate it gives in the original one."""
    pytest.importorskip("torch")
    cells = [
        "import torch\nfrom torch import nn",
        "torch.manual_seed(0)\nmodel = nn.Linear(3, 1)\nX = torch.randn(8, 3)\n"
        "opt = torch.optim.Adam(model.parameters(), lr=0.1)\n"
        "sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)",
        "for _ in range(3):\n    opt.zero_grad()\n    model(X).pow(2).mean().backward()\n"
        "    opt.step()\n    sched.step()\nopen('ckpt.txt', 'w').write('saved')",
    ]
    follow_up = "opt.zero_grad()\nmodel(X).pow(2).mean().backward()\nopt.step()\nsched.step()"
    probe = "[model.weight.tolist(), sched.get_last_lr(), sched.optimizer is opt]"
    _, out, want = _continued(make_kernel, tmp_path, cells, follow_up, probe)
    r = out["optimal"]
    variables = r.restore["variables"]
    assert all(variables[n].get("verified") for n in ("model", "opt", "sched")), variables
    r.kernel.ok(follow_up)
    assert r.kernel.value(probe) == want
