"""Library objects whose value the walk cannot read directly, migrated under both plans.

Each scenario holds a value whose content sits in C state, in caches of the process or in
attributes a library fills itself; a restore must bring it back equal and verified, or say
that it is not (lost, or mismatched) - never verify a value that differs.
"""

from __future__ import annotations

from tests.engine.adversarial import Restored, assert_verified, migrate_both


def assert_equal_or_named(r: Restored, name: str, expr: str, want: object) -> None:
    """`name` is verified with `expr` evaluating to `want` in the restored kernel, or the restore
    names it (lost, or not verified)."""
    v = r.restore["variables"][name]
    if v.get("verified"):
        assert r.kernel.value(expr) == want, f"{r.plan} plan: {name} verified but differs"
    else:
        assert name in r.restore["lost"] or name in r.restore["mismatched"], (
            f"{r.plan} plan: {name} neither verified nor named: {v}")


def test_an_image_re_run_with_other_pixels_is_not_verified(make_kernel, tmp_path):
    """A PIL image keeps its pixels in a C object the walk checks by type only, so a re-run
    cell that drew other pixels verified. `Image.effect_noise` draws from the C library's
    `rand()`, which no generator capture sees: `n2`, re-run in a fresh kernel while `n1` (its
    cell wrote a file) is loaded, gets the pixels `n1` had, and came back verified."""
    cells = ["from PIL import Image",
             "n1 = Image.effect_noise((8, 8), 50); open('log.txt', 'w').write('x')",
             "n2 = Image.effect_noise((8, 8), 50)"]
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value("list(n2.getdata())")
    for r in out.values():
        assert_equal_or_named(r, "n2", "list(n2.getdata())", want)


def test_a_compressor_re_run_without_the_lost_value_it_was_fed_is_lost(make_kernel, tmp_path):
    """`z.compress(salt)` re-run with `salt` lost (its cell drew OS entropy and wrote a file,
    and the deadline left no time to ship it) fails, and `z` stayed as the earlier cells made
    it; a zlib compressor is checked by type only, so it verified, and went on compressing
    another stream. Re-run without a lost value it reads, or through a cell that failed, a
    value checked by type only is lost."""
    cells = ["import zlib, os",
             "z = zlib.compressobj(); head = z.compress(b'abc' * 100)",
             "salt = os.urandom(4); open('log.txt', 'w').write('x')",
             "z.compress(salt)"]
    expr = "list(zlib.decompress(head + z.copy().flush()))"
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value(expr)
    for r in out.values():
        assert_equal_or_named(r, "z", expr, want)


def test_a_hash_re_run_over_a_set_in_another_order_is_not_verified(make_kernel, tmp_path):
    """A hash fed the words of a set in iteration order: re-run in a kernel with another string
    hash seed it is fed them in another order, a different digest. A hash object does not
    pickle and was checked by type only, so it came back verified; its value is what it was
    fed so far (the digest of a copy)."""
    words = [f"w{i}" for i in range(40)]
    cells = ["import hashlib",
             f"h = hashlib.sha256()\nfor w in set({words!r}):\n    h.update(w.encode())",
             "hs = [h, h]"]
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value("[h.hexdigest(), hs[1] is h]")
    for r in out.values():
        assert_equal_or_named(r, "h", "[h.hexdigest(), hs[1] is h]", want)


def test_an_in_memory_database_re_filled_with_other_rows_is_not_verified(make_kernel, tmp_path):
    """SQLite's `random()` draws from SQLite's own generator, which no capture sees: the
    re-run cells fill an in-memory database with other rows. A connection does not pickle and
    was checked by type only, so it came back verified; its value is its database's dump."""
    cells = ["import sqlite3",
             "con = sqlite3.connect(':memory:'); con.execute('create table t(x)')",
             "con.execute('insert into t values (random())')"]
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value("con.execute('select x from t').fetchall()")
    for r in out.values():
        assert_equal_or_named(r, "con", "con.execute('select x from t').fetchall()", want)


def test_paths_used_as_keys_verify_when_re_run(make_kernel, tmp_path):
    """A path caches its hash in a slot the first time it is hashed (a dict key), and string
    hashes are salted per process: every re-run path, and the dict keyed by it, differed from
    the checkpointed one and did not verify."""
    cells = ["import pathlib",
             "p = pathlib.Path('/data') / 'x.csv'; pp = pathlib.PurePosixPath('a/b')",
             "index = {p: 1, pp: 2}"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[str(p), index[pathlib.Path('/data/x.csv')], index[pp]]") == [
            "/data/x.csv", 1, 2]


def test_a_struct_layout_whose_cell_cannot_be_re_run_is_shipped(make_kernel, tmp_path):
    """A `struct.Struct` does not pickle (C), so it, and the record list holding it, were lost
    when their cell could not be re-run; its format is all it holds."""
    cells = ["import struct",
             "rec = struct.Struct('<ih'); layouts = [rec, rec]; open('log.txt', 'w').write('x')"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    r = out["optimal"]
    assert_verified(r)
    assert r.kernel.value("[rec.format, rec.size, layouts[1] is rec, list(rec.unpack(rec.pack(3, 4)))]"
                          ) == ["<ih", 6, True, [3, 4]]
