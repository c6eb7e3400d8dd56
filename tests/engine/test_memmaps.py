"""A memory-mapped file (``np.memmap``) comes back mapped over its file, or named as lost.

numpy pickles a memmap as its bytes: restored, ``m`` was an array in memory that only looked
like a memmap (no file name, no mode), writes no longer reached the file, and the restore
verified it. A memmap is a window on a file, so the restore maps the file again when it still
holds the bytes of the checkpoint, and says why not when it does not.
"""

from __future__ import annotations

import pytest

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all

MAKE = ("import numpy as np\n"
        "m = np.memmap({path!r}, dtype='float32', mode='w+', shape=(4, 5), offset=16, order='F')\n"
        "m[:] = np.arange(20).reshape(4, 5)\nv = m[1:3]")


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_memmap_is_mapped_again_over_its_file_and_its_view_stays_a_view_of_it(
        make_kernel, store_url, tmp_path, strategy):
    path = str(tmp_path / "data.bin")
    a = make_kernel()
    run_all(a, [MAKE.format(path=path), "v[0, 0] = 100"])
    checkpoint(a, store_url, strategy=strategy)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    probe = ("[type(m).__name__, m.filename, m.mode, m.offset, m.dtype.str, list(m.shape),"
             " bool(m.flags.f_contiguous), type(v).__name__, v.base is m, v.filename]")
    assert b.value(probe) == a.value(probe)
    # writes through the map and through its view reach the file
    b.ok("m[0, 0] = 42; v[1, 4] = 7; m.flush()")
    assert b.value(f"np.fromfile({path!r}, dtype='float32', offset=16).reshape(4, 5, order='F')"
                   "[[0, 2], [0, 4]].tolist()") == [42.0, 7.0]


def test_a_view_of_a_memmap_no_variable_holds_is_still_a_window_on_the_file(
        make_kernel, store_url, tmp_path):
    path = str(tmp_path / "tail.bin")
    a = make_kernel()
    run_all(a, [f"import numpy as np\ntail = np.memmap({path!r}, dtype='int64', mode='w+', "
                "shape=(10,))[6:]\ntail[:] = 5"])
    checkpoint(a, store_url, strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("tail[-1] = 9; tail.flush()")
    assert b.value(f"np.fromfile({path!r}, dtype='int64').tolist()") == [0] * 6 + [5, 5, 5, 9]
    assert b.value("(type(tail).__name__, tail.filename)") == ["memmap", path]


def test_a_memmap_whose_file_was_written_after_the_checkpoint_is_lost_with_the_reason(
        make_kernel, store_url, tmp_path):
    """The kernel wrote on through the map, then died: the file no longer holds the values of
    the checkpoint, so mapping it again would be a silently different `m`."""
    path = str(tmp_path / "data.bin")
    a = make_kernel()
    run_all(a, [MAKE.format(path=path)])
    checkpoint(a, store_url)
    a.ok("m[3, 3] = -1; m.flush()")
    b = make_kernel()
    r = restore(b, store_url)
    assert "changed since the checkpoint" in r["lost"]["m"]
    assert r["variables"]["v"]["action"] == "lost"


def test_a_memmap_whose_file_is_missing_is_lost_by_name_and_not_made_again(
        make_kernel, store_url, tmp_path):
    path = tmp_path / "node-local.bin"
    a = make_kernel()
    run_all(a, [MAKE.format(path=str(path)), "n = 1"])
    checkpoint(a, store_url)
    path.unlink()
    b = make_kernel()
    r = restore(b, store_url)
    assert str(path) in r["lost"]["m"] and "does not exist here" in r["lost"]["m"]
    assert not path.exists()
    assert b.value("n") == 1


def test_a_copy_on_write_memmap_keeps_its_own_changes_and_leaves_the_file_alone(
        make_kernel, store_url, tmp_path):
    path = tmp_path / "base.bin"
    path.write_bytes(bytes(range(8)))
    a = make_kernel()
    run_all(a, [f"import numpy as np\nc = np.memmap({str(path)!r}, dtype='uint8', mode='c')",
                "c[0] = 200"])
    checkpoint(a, store_url, strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("(c.mode, c.filename, c.tolist())") == ["c", str(path), [200, 1, 2, 3, 4, 5, 6, 7]]
    b.ok("c[1] = 201; c.flush()")
    assert path.read_bytes() == bytes(range(8))
