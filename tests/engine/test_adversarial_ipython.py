"""IPython-level forms that notebooks use besides plain Python: magics, shell escapes, output
history, top-level await, interrupted and failing cells.

The optimal plan must restore them verified; the replay plan (nothing may be shipped) must
recompute them or name them as lost with the reason, never leave a value that differs with
another explanation.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_never_silent, assert_verified, migrate_both


def test_a_value_recomputed_from_a_lost_one_is_lost_not_mismatched(make_kernel, tmp_path):
    """A cell that raised after mutating `lst` cannot be re-run, and with nothing shipped `lst`
    is lost; `after` was then re-run against `lst` as the earlier cells left it (re-run for
    `n`) and reported as a mismatch blamed on the hash seed, while the kernel held the wrong
    list."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "lst = [1, 2]",
        "n = len(lst)",
        "lst.append(3)\nm = 1\n1/0",
        "after = list(lst)",
        "unrelated = 5",
    ])
    want = {n: a.value(n) for n in ("lst", "n", "after", "unrelated")}
    assert_verified(out["optimal"])
    replay = out["replay"]
    assert_never_silent(replay, want)
    assert replay.restore["mismatched"] == []
    assert "lst" in replay.restore["lost"]
    assert "which is lost" in replay.restore["lost"]["after"]
    assert replay.restore["variables"]["n"]["verified"]
    assert replay.restore["variables"]["unrelated"]["verified"]
