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


RUN_SCRIPT = ("K = 41\ncounter = [0]\n"
              "def kf():\n    return K + 1\n"
              "def setk(v):\n    global K\n    K = v\n"
              "def inc():\n    counter[0] += 1\n    return counter[0]\n")


def test_functions_a_run_script_defined_keep_the_scripts_namespace(make_kernel, tmp_path):
    """`%run script.py` (without -i) runs the script in a namespace of its own: its functions
    read and write that one (`setk(5)` changes what `kf()` returns, not the notebook's `K`)
    and share its objects with the notebook (`counter`). Neither the change nor the sharing
    was recorded, and a shipped `kf` came back verified returning 42 instead of 6, its
    `counter` another list than the notebook's."""
    (tmp_path / "rs.py").write_text(RUN_SCRIPT)
    a, out = migrate_both(make_kernel, tmp_path, [
        "%run rs.py",
        "setk(5)",
        "inc()",
        "r = kf()",
        "K = 1000",
    ])
    expr = "[kf(), r, K, counter[0], inc.__globals__['counter'] is counter, inc(), counter[0]]"
    want = a.value(expr)
    assert want == [6, 6, 1000, 1, True, 2, 2]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_a_script_run_inside_a_capture_is_replayed_with_what_it_read(make_kernel, tmp_path):
    """`%%capture` around `%run -i s.py` (to silence it): the read of `hx` by the script was
    missed, so the replay re-ran the cell against the later `hx` (a mismatch)."""
    (tmp_path / "s.py").write_text("sr = hx * 2\n")
    a, out = migrate_both(make_kernel, tmp_path, [
        "hx = 4",
        "%%capture cap\n%run -i s.py",
        "hx = 100",
    ])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[sr, hx]") == [8, 100], r.plan
    assert out["replay"].restore["variables"]["sr"]["action"] == "recomputed"


def test_a_cell_reading_the_exit_code_of_a_shell_command_is_shipped_not_replayed(make_kernel,
                                                                                 tmp_path):
    """`_exit_code` is IPython's, set by `!cmd`, which a restore does not re-run (a side
    effect): a re-run of `code = _exit_code` failed with a NameError."""
    a, out = migrate_both(make_kernel, tmp_path, ["!false", "code = _exit_code", "x = 1"])
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("code") == 1
    replay = out["replay"]
    assert "output history" in replay.restore["lost"]["code"]
    assert not replay.restore["errors"]
