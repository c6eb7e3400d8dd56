"""Memory shared at an offset, migrated: a tensor over a numpy slice (``torch.from_numpy(a[2:])``),
numpy arrays over part of a tensor, arrow data over part of a numpy array, an array over part of
a bytearray. Under both plans every variable comes back verified with its memory shared again
at the same offset: a write into one side after the restore shows in the other, as in kernel A.
(Before, the two sides were separate co-variables, shipped as two copies, and both verified.)
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate

#: the optimal and the replay plan (`migrate_both`: small cells are cheap, so both mostly
#: re-run them), and a plan that ships every variable (the serializer must share the memory)
STRATEGIES = ["plans", "ship-all"]


def _check_shared(make_kernel, tmp_path, strategy: str, cells: list[str], write: str,
                  expr: str) -> None:
    """Run `cells`, migrate; after `write` in A and in each B, `expr` is equal."""
    if strategy == "ship-all":
        a, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells,
                                     strategy="ship-all")
        assert_restore_verified(r)
        a.ok(write)
        b.ok(write)
        assert b.value(expr) == a.value(expr)
        return
    a, out = migrate_both(make_kernel, tmp_path, cells)
    a.ok(write)
    want = a.value(expr)
    for r in out.values():
        assert_verified(r)
        r.kernel.ok(write)
        assert r.kernel.value(expr) == want, r.plan


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_tensor_over_a_numpy_slice_still_shares_its_memory_after_a_restore(make_kernel, tmp_path, strategy):
    pytest.importorskip("torch")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, torch",
        "a = np.arange(8.0)\nt = torch.from_numpy(a[2:])",
        "a += 1",
    ], "a[3] = 42.0; t[4] = -1.0", "[a.tolist(), t.tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_tensor_over_a_numpy_slice_pickled_before_the_array_still_shares_it(make_kernel, tmp_path, strategy):
    """Names are serialized in order: `t` (the tensor) before `u` (the array it is over)."""
    pytest.importorskip("torch")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, torch",
        "u = np.arange(8.0)\nt = torch.from_numpy(u[3:7])",
    ], "u[4] = 42.0; t[3] = -1.0", "[u.tolist(), t.tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_numpy_slices_of_a_tensor_still_share_its_memory_after_a_restore(make_kernel, tmp_path, strategy):
    pytest.importorskip("torch")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, torch",
        "t = torch.zeros(8)\ns = t.numpy()[3:]\nh = t[5:].numpy()[1:]",
    ], "t[4] = 7.0; s[4] = 8.0; h[1] = 9.0", "[t.tolist(), s.tolist(), h.tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_arrow_array_over_a_numpy_slice_still_reads_it_after_a_restore(make_kernel, tmp_path, strategy):
    pytest.importorskip("pyarrow")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, pyarrow as pa",
        "x = np.arange(6)\nax = pa.array(x[2:])\nb = pa.py_buffer(x[1:3])",
    ], "x[3] = 42; x[1] = 7",
        "[ax.to_pylist(), __import__('numpy').frombuffer(b, dtype=x.dtype).tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_arrow_array_over_a_numpy_slice_pickled_before_the_array_still_reads_it(make_kernel, tmp_path, strategy):
    pytest.importorskip("pyarrow")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, pyarrow as pa",
        "y = np.arange(6)\nay = pa.array(y[2:])",
    ], "y[3] = 42", "ay.to_pylist()")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_array_over_part_of_a_bytearray_still_writes_into_it_after_a_restore(make_kernel, tmp_path, strategy):
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np",
        "buf = bytearray(32)\nf = np.frombuffer(memoryview(buf)[8:], dtype=np.int64)",
    ], "f[1] = 5; buf[8] = 3", "[list(buf), f.tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_tensor_over_part_of_a_bytearray_still_writes_into_it_after_a_restore(make_kernel, tmp_path, strategy):
    pytest.importorskip("torch")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np, torch",
        "buf = bytearray(32)\ntb = torch.from_numpy(np.frombuffer(buf, dtype=np.int64)[1:])",
    ], "tb[0] = 5; buf[31] = 3", "[list(buf), tb.tolist()]")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_tensor_made_after_torch_is_imported_over_an_older_array_still_shares_it(
        make_kernel, tmp_path, strategy):
    """`a` was walked before torch was loaded (no memory spans then): the tensor made over its
    tail in a later cell must still be one co-variable with it, and come back over it."""
    pytest.importorskip("torch")
    _check_shared(make_kernel, tmp_path, strategy, [
        "import numpy as np\na = np.arange(8.0)",
        "import torch\nt = torch.from_numpy(a[2:])",
        "a += 1",
    ], "a[3] = 42.0; t[4] = -1.0", "[a.tolist(), t.tolist()]")
