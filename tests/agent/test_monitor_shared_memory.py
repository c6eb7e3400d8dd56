"""Memory shared at an offset in a monitored kernel: the co-variable and the mutations a cell
makes through either side (see test_shared_memory.py for the tracker's own tests).

The first test runs before anything imports torch in the module's kernel: arrays walked then
have recorded no memory spans (numpy-only sessions pay nothing for them), and a tensor made
over one later must still join it.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")


def test_a_tensor_over_a_slice_of_an_array_made_before_torch_was_imported_joins_it(agent):
    assert agent.value("'torch' in __import__('sys').modules") is False
    agent.ok("import numpy as np\nlate_a = np.arange(8.0)\nlate_other = np.zeros(3)")
    agent.ok("import torch\nlate_t = torch.from_numpy(late_a[2:])")
    assert agent.covariable("late_a") == ["late_a", "late_t"]
    rec = agent.cell("late_a[5] = 1.0")
    assert set(rec["mutated"]) == {"late_a", "late_t"}


def test_a_tensor_over_an_array_slice_is_mutated_by_writes_into_the_array(agent):
    agent.ok("import numpy as np, torch\nsl_a = np.arange(10.0)\nsl_t = torch.from_numpy(sl_a[4:])")
    assert agent.covariable("sl_a") == ["sl_a", "sl_t"]
    rec = agent.cell("sl_t.add_(1)")
    assert set(rec["mutated"]) == {"sl_a", "sl_t"}


def test_an_arrow_array_over_an_array_slice_is_one_co_variable_with_it(agent):
    agent.ok("import numpy as np, pyarrow as pa\npa_x = np.arange(10)\npa_ax = pa.array(pa_x[3:])")
    assert agent.covariable("pa_x") == ["pa_ax", "pa_x"]
    rec = agent.cell("pa_x[5] = 50")
    assert set(rec["mutated"]) == {"pa_ax", "pa_x"}
