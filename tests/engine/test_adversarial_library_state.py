"""Library objects whose value the walk cannot read directly, migrated under both plans.

Each scenario holds a value whose content sits in C state, in caches of the process or in
attributes a library fills itself; a restore must bring it back equal and verified, or say
that it is not (lost, or mismatched) - never verify a value that differs.
"""

from __future__ import annotations

from tests.engine.adversarial import Restored, migrate_both


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
