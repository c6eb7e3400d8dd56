"""How people drive a notebook session: the order and the shape of its executions.

Interrupted cells, cells that fail after changing things, cells run out of order and again,
names reset and deleted and made again, magics that bind names behind the analysis' back,
long sessions of rebinds, sessions that hop again and again with different plans. Each
scenario runs in kernel A, is checkpointed with the optimal plan and with a replay plan, and
restored into fresh kernels: every variable must come back verified and equal, or be named in
`lost` with a reason — never a value that differs while the restore says nothing.
"""

from __future__ import annotations

import queue
import time

from tests.engine.adversarial import Restored, assert_never_silent, assert_verified, migrate_both
from tests.kernels import Kernel


def interrupt_midway(k: Kernel, code: str, marker: str = "started", timeout: float = 60,
                     caught: bool = False) -> dict | None:
    """Run `code` in `k`, interrupt the kernel (SIGINT, as the notebook's stop button) once the
    cell printed `marker`, and return the error it showed (a KeyboardInterrupt; with `caught`
    the cell catches it and does not fail)."""
    msg_id = k.kc.execute(code)
    out, error, interrupted = "", None, False
    end = time.monotonic() + timeout
    while True:
        assert time.monotonic() < end, f"cell neither printed {marker!r} nor ended: {out!r}"
        try:
            msg = k.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            out += c["text"]
            if marker in out and not interrupted:
                k.km.interrupt_kernel()
                interrupted = True
        elif t == "error":
            error = c
        elif t == "status" and c["execution_state"] == "idle":
            break
    reply = k.kc.get_shell_msg(timeout=k.timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = k.kc.get_shell_msg(timeout=k.timeout)
    if caught:  # (a nested cell, `%%capture`, still shows the KeyboardInterrupt)
        assert reply["content"]["status"] == "ok", (error, out)
    else:
        assert error is not None and error["ename"] == "KeyboardInterrupt", (error, out)
        assert "kernel_agent" not in "".join(error["traceback"]), error["traceback"]
    return error


def values(k: Kernel, names: list[str]) -> dict[str, object]:
    return {n: k.value(n) for n in names}


def check_all(a: Kernel, out: dict[str, Restored], names: list[str]) -> None:
    """The optimal plan restores every name verified and equal; the replay plan never silently
    differs."""
    want = values(a, names)
    assert_verified(out["optimal"])
    assert values(out["optimal"].kernel, names) == want
    assert_never_silent(out["replay"], want)


# --- interrupted cells ----------------------------------------------------------------------

LOOP = ("import time\n"
        "for i in range(100000):\n"
        "    {body}\n"
        "    if i == 3:\n"
        "        print('started', flush=True)\n"
        "    time.sleep(0.002)\n")


def test_a_list_an_interrupted_loop_appended_to_comes_back_as_it_was_left(make_kernel, tmp_path):
    """The stop button halfway through a loop appending to `lst`: the list holds what the loop
    appended before the interrupt. Re-running the cell would complete the loop (or restart it
    from the list as the earlier cells left it): the list must be shipped, or lost."""
    a = make_kernel()

    def between(i: int) -> None:
        if i == 0:
            interrupt_midway(a, LOOP.format(body="lst.append(i)"))

    cells = ["lst = [-1]", "n = len(lst)", "head = lst[:3]", "more = 1"]
    out = _migrate_with(make_kernel, tmp_path, a, cells, between)
    n = a.value("len(lst)")
    assert 5 <= n < 100000
    check_all(a, out, ["lst", "n", "head", "more"])


def _migrate_with(make_kernel, tmp_path, a: Kernel, cells: list[str], between) -> dict[str, Restored]:
    """`migrate_both` with kernel A made beforehand (`between` needs it)."""
    made = iter([a])

    def make(*args, **kw) -> Kernel:
        try:
            return next(made)
        except StopIteration:
            return make_kernel(*args, **kw)

    _, out = migrate_both(make, tmp_path, cells, between)
    return out


def test_a_dict_an_interrupted_loop_filled_is_not_replayed_to_completion(make_kernel, tmp_path):
    """Same for a dict filled in place, read by later cells and aliased."""
    a = make_kernel()

    def between(i: int) -> None:
        if i == 1:
            interrupt_midway(a, LOOP.format(body="d[i] = i * i"))

    cells = ["d = {}", "alias = d", "keys = sorted(d)", "size = len(alias)", "d['x'] = 0"]
    out = _migrate_with(make_kernel, tmp_path, a, cells, between)
    check_all(a, out, ["keys", "size"])
    for r in out.values():
        v = r.restore["variables"]
        if v["d"].get("verified"):
            assert r.kernel.value("[alias is d, len(d)]") == a.value("[alias is d, len(d)]"), r.plan


def test_an_array_an_interrupted_loop_wrote_into_comes_back_half_written(make_kernel, tmp_path):
    """A numpy array written row by row in place, interrupted: a re-run would write every row."""
    a = make_kernel()

    def between(i: int) -> None:
        if i == 1:
            interrupt_midway(a, LOOP.format(body="arr[i % 4000] = i"))

    cells = ["import numpy as np", "arr = np.zeros(4000)", "s = float(arr.sum())", "top = float(arr.max())"]
    out = _migrate_with(make_kernel, tmp_path, a, cells, between)
    want = a.value("arr.tolist()")
    check_all(a, out, ["s", "top"])
    for r in out.values():
        if r.restore["variables"]["arr"].get("verified"):
            assert r.kernel.value("arr.tolist()") == want, r.plan
        else:
            assert "arr" in r.restore["lost"], r.plan


def test_a_name_an_interrupted_cell_rebound_before_the_loop_is_not_replayed(make_kernel, tmp_path):
    """The interrupted cell first rebinds `acc` to a new list, then appends in a loop: the
    earlier binding is gone, and the replay must not re-run the cell to completion nor bring
    back the earlier list."""
    a = make_kernel()

    def between(i: int) -> None:
        if i == 0:
            interrupt_midway(a, "acc = []\n" + LOOP.format(body="acc.append(i)"))

    cells = ["acc = ['old']", "first = acc[0]", "count = len(acc)"]
    out = _migrate_with(make_kernel, tmp_path, a, cells, between)
    assert a.value("acc[0]") == 0
    check_all(a, out, ["acc", "first", "count"])


def test_a_cell_that_caught_the_interrupt_is_not_replayed_to_the_end(make_kernel, tmp_path):
    """`try: <loop> except KeyboardInterrupt: pass`, the way training loops are stopped: the
    cell ends without failing, with the list as far as the loop got. It was recorded as a
    cell like any other, and the replay ran the loop to its end (2000 items, not 5; on a real
    training loop, for hours), reported as mismatched and blamed on the hash seed."""
    a = make_kernel()
    caught = ("import time\ntry:\n" + "\n".join("    " + line for line in
              LOOP.format(body="lst.append(i)").replace("100000", "2000").splitlines()[1:])
              + "\nexcept KeyboardInterrupt:\n    print('stopped')\n")

    def between(i: int) -> None:
        if i == 0:
            interrupt_midway(a, caught, caught=True)

    out = _migrate_with(make_kernel, tmp_path, a, ["lst = [-1]", "n = len(lst)", "more = 1"],
                        between)
    assert 5 <= a.value("len(lst)") < 2001
    check_all(a, out, ["lst", "n", "more"])
    replay = out["replay"].restore
    assert replay["mismatched"] == []
    assert "interrupted" in replay["lost"]["lst"]


def test_a_captured_cell_interrupted_halfway_is_not_replayed_to_the_end(make_kernel, tmp_path):
    """`%%capture` runs its body as a nested cell, which shows the KeyboardInterrupt and goes
    on: the cell itself does not fail, and the replay ran its loop to the end."""
    a = make_kernel()
    body = LOOP.format(body="lst.append(i)").replace("100000", "2000")

    def between(i: int) -> None:
        if i == 0:  # (stdout passes through: the test sees the loop start)
            interrupt_midway(a, "%%capture --no-stdout cap\n" + body, caught=True)

    out = _migrate_with(make_kernel, tmp_path, a, ["lst = [-1]", "n = len(lst)"], between)
    assert 5 <= a.value("len(lst)") < 2001
    check_all(a, out, ["lst", "n"])
    assert out["replay"].restore["mismatched"] == []
    assert "interrupted" in out["replay"].restore["lost"]["lst"]


# --- failed cells ---------------------------------------------------------------------------

def test_names_a_failed_cell_bound_before_raising_are_not_recomputed_without_it(
        make_kernel, tmp_path):
    """A cell binds `y` and `z` and then raises; a later cell reads `y`. The failed cell is no
    cell to re-run, and `w` must not be recomputed against an older `y`."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "x = 1\ny = 'old'",
        "y = x + 1\nz = [y]\n1/0",
        "w = y * 2",
        "other = 3",
    ])
    check_all(a, out, ["x", "y", "z", "w", "other"])


def test_a_name_a_failed_cell_rebound_keeps_the_value_it_was_given(make_kernel, tmp_path):
    """`x = 10` then a failure in the same cell: the value is 10, the cell that bound 5 must
    not be replayed for it, nor `w = x` against 5."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "x = 5",
        "x = 10\n1/0",
        "w = x + 1",
    ])
    assert a.value("[x, w]") == [10, 11]
    check_all(a, out, ["x", "w"])


def test_a_failed_cell_mutating_a_dict_before_raising_then_read(make_kernel, tmp_path):
    """The partial effect of a failed cell (one key set, then a KeyError) read by a later cell."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "cfg = {'a': 1}",
        "snap = dict(cfg)",
        "cfg['b'] = 2\ncfg['missing_key_1/0']",
        "keys = sorted(cfg)",
    ])
    check_all(a, out, ["cfg", "snap", "keys"])


# --- out of order ---------------------------------------------------------------------------

def test_a_cell_re_run_after_its_input_was_rebound_twice_keeps_the_middle_value(
        make_kernel, tmp_path):
    """Cell 3 run, cell 1 run again with another input, cell 3 again, cell 1 restored to the
    first value: `b` was computed from the middle value of `a`."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "a = 1",
        "b = a * 10",
        "a = 2",
        "b = a * 10",
        "a = 1",
        "c = a + b",
    ])
    assert a.value("[a, b, c]") == [1, 20, 21]
    check_all(a, out, ["a", "b", "c"])
    assert_verified(out["replay"])


def test_a_value_made_by_a_function_since_redefined_keeps_the_old_definitions_result(
        make_kernel, tmp_path):
    """`y` was computed with the first `f`; `f` was then redefined and `z` computed with the
    new one. A replay must re-run the old definition for `y`."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "def f(v):\n    return v + 1",
        "y = f(10)",
        "def f(v):\n    return v * 100",
        "z = f(10)",
        "def g():\n    return f(1)",
        "h = g()",
        "def f(v):\n    return -v",
        "h2 = g()",
    ])
    assert a.value("[y, z, h, h2, g()]") == [11, 1000, 100, -1, -1]
    check_all(a, out, ["y", "z", "h", "h2"])
    assert_verified(out["replay"])
    assert out["replay"].kernel.value("g()") == -1


def test_a_helper_a_function_reads_rebound_between_its_calls(make_kernel, tmp_path):
    """`total()` reads the global `rate`; it is called, `rate` rebound, called again."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "rate = 2",
        "def total(n):\n    return n * rate",
        "t1 = total(5)",
        "rate = 3",
        "t2 = total(5)",
        "rate = 2",
    ])
    assert a.value("[t1, t2]") == [10, 15]
    check_all(a, out, ["rate", "t1", "t2"])
    assert_verified(out["replay"])


# --- names made and unmade by IPython -------------------------------------------------------

def test_a_session_reset_with_reset_f_comes_back_as_after_the_reset(make_kernel, tmp_path):
    """`%reset -f` clears the namespace: what came before it must not come back, and names
    bound after it are restored."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "old = [1, 2]\nkeep = 3",
        "%reset -f",
        "new = 5",
        "lst = [new]",
    ])
    check_all(a, out, ["new", "lst"])
    for r in out.values():
        assert r.kernel.value("'old' in globals() or 'keep' in globals()") is False, r.plan


def test_reset_selective_drops_only_the_matching_names(make_kernel, tmp_path):
    """`%reset_selective -f ^tmp_` drops the tmp_ names and keeps the others."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "tmp_a = 1\ntmp_b = [2]\nkept = tmp_b",
        "%reset_selective -f ^tmp_",
        "after = len(kept)",
    ])
    check_all(a, out, ["kept", "after"])
    for r in out.values():
        assert r.kernel.value("'tmp_a' in globals() or 'tmp_b' in globals()") is False, r.plan


def test_a_name_deleted_and_made_again_with_another_type(make_kernel, tmp_path):
    """`del x` and `x` bound again to a dict: the list must not come back, nor the value read
    from it before the del be recomputed from the dict."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "x = [1, 2, 3]",
        "n = len(x)",
        "del x",
        "x = {'k': 'v'}",
        "m = len(x)",
    ])
    check_all(a, out, ["x", "n", "m"])
    assert_verified(out["replay"])


def test_names_bound_through_user_ns_and_main_and_globals_update(make_kernel, tmp_path):
    """Writes the parser cannot see as assignments: `get_ipython().user_ns[...]`,
    `__main__.y = ...`, `globals().update(...)`, then read and rebound."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "base = 4",
        "get_ipython().user_ns['u'] = base * 2",
        "import __main__\n__main__.m = base + 1",
        "globals().update({'g1': base, 'g2': [base]})",
        "total = u + m + g1 + g2[0]",
        "base = 100",
        "g2.append(base)",
    ])
    check_all(a, out, ["base", "u", "m", "g1", "g2", "total"])


def test_exec_of_a_file_binds_names_that_read_notebook_globals(make_kernel, tmp_path):
    """`exec(open('s.py').read())` binds names computed from notebook globals; the file is
    then changed."""
    (tmp_path / "s.py").write_text("ex = seed * 3\nexl = [seed]\n")
    a = make_kernel()

    def between(i: int) -> None:
        if i == 1:
            (tmp_path / "s.py").write_text("ex = -1\nexl = []\n")

    out = _migrate_with(make_kernel, tmp_path, a, [
        "seed = 7",
        "exec(open('s.py').read())",
        "seed = 8",
        "exl.append(seed)",
    ], between)
    assert a.value("[ex, exl]") == [21, [7, 8]]
    check_all(a, out, ["seed", "ex", "exl"])


def test_run_of_a_script_reading_notebook_globals_then_script_changed(make_kernel, tmp_path):
    """`%run -i` a script that reads notebook globals and defines names; the script is then
    rewritten on disk, and the global it read rebound."""
    (tmp_path / "r.py").write_text("rv = base * 2\nrl = list(range(base))\n")
    a = make_kernel()

    def between(i: int) -> None:
        if i == 1:
            (tmp_path / "r.py").write_text("rv = 'rewritten'\nrl = None\n")

    out = _migrate_with(make_kernel, tmp_path, a, [
        "base = 3",
        "%run -i r.py",
        "base = 30",
        "rl.append(base)",
    ], between)
    assert a.value("[rv, rl]") == [6, [0, 1, 2, 30]]
    check_all(a, out, ["base", "rv", "rl"])


def test_shell_captures_and_sx_bind_their_output(make_kernel, tmp_path):
    """`files = !ls` and `%sx` bind a list of the shell's output; `%%capture cap` binds the
    captured output. A later file change must not make a replay bind other output."""
    (tmp_path / "one.txt").write_text("1")
    a = make_kernel()

    def between(i: int) -> None:
        if i == 1:
            (tmp_path / "two.txt").write_text("2")

    out = _migrate_with(make_kernel, tmp_path, a, [
        "files = !ls *.txt",
        "sx = %sx ls *.txt",
        "%%capture cap\nprint('hello')",
        "nfiles = len(files)",
        "text = cap.stdout",
    ], between)
    assert a.value("[list(files), list(sx), text]") == [["one.txt"], ["one.txt"], "hello\n"]
    want = values(a, ["nfiles", "text"])
    assert_verified(out["optimal"])
    for r in out.values():
        assert_never_silent(r, want)
        for name in ("files", "sx"):
            v = r.restore["variables"][name]
            if v.get("verified"):
                assert r.kernel.value(f"list({name})") == ["one.txt"], (r.plan, name)
            else:
                assert name in r.restore["lost"]


def test_a_module_written_imported_rewritten_and_reloaded(make_kernel, tmp_path):
    """`%%writefile mod.py`, `import mod`, a value from it, the file rewritten by another
    `%%writefile`, `importlib.reload(mod)`, another value: each value from its version."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "%%writefile wmod.py\ndef val():\n    return 1\n",
        "import wmod\nimport importlib",
        "v1 = wmod.val()",
        "%%writefile wmod.py\ndef val():\n    return 2\n",
        "importlib.reload(wmod)",
        "v2 = wmod.val()",
    ])
    assert a.value("[v1, v2]") == [1, 2]
    check_all(a, out, ["v1", "v2"])
    for r in out.values():
        if r.restore["variables"]["wmod"].get("verified"):
            assert r.kernel.value("wmod.val()") == 2, r.plan
        else:  # (the replay plan: the cell importing it read a file changed since)
            assert "wmod" in r.restore["lost"], r.plan


def test_store_magic_values_come_back(make_kernel, tmp_path):
    """`%store x` then `del x` and `%store -r x`: x is the stored value again."""
    env = {"IPYTHONDIR": str(tmp_path / "ipy")}
    kernels: list[Kernel] = []

    def make(*args, **kw) -> Kernel:
        k = make_kernel(env={**__import__("os").environ, **env})
        kernels.append(k)
        return k

    a, out = migrate_both(make, tmp_path, [
        "sv = [1, 2]",
        "%store sv",
        "del sv",
        "sv2 = 5",
        "%store -r sv",
        "sv.append(3)",
        "n = len(sv)",
    ])
    check_all(a, out, ["sv", "sv2", "n"])


# --- the input history ----------------------------------------------------------------------

def test_a_cell_running_rerun_is_shipped_not_replayed_against_the_new_kernels_history(
        make_kernel, tmp_path):
    """`%rerun -l 1` ran `x += 1` again; re-run by a restore it re-ran the restoring kernel's
    last input instead, and `x` and `y` came back different, reported as mismatched and blamed
    on the hash seed. The cell is no cell to re-run: `x` is shipped, or named as lost."""
    a, out = migrate_both(make_kernel, tmp_path, ["x = 1", "x += 1", "%rerun -l 1", "y = x"])
    assert a.value("[x, y]") == [3, 3]
    check_all(a, out, ["x", "y"])
    assert out["replay"].restore["mismatched"] == []
    assert "%rerun" in out["replay"].restore["lost"]["x"]


def test_a_macro_of_history_lines_is_shipped_not_made_again_from_the_new_kernels_history(
        make_kernel, tmp_path):
    """`%macro mm 2` binds the code of input line 2 of this kernel; made again by a restore it
    held line 2 of the restoring kernel, and running it changed `x` otherwise."""
    a, out = migrate_both(make_kernel, tmp_path, ["x = 1", "x += 10", "%macro -q mm 2", "mm",
                                                  "y = x"])
    want = a.value("[x, y, str(mm)]")
    check_all(a, out, ["x", "y"])
    assert out["optimal"].kernel.value("[x, y, str(mm)]") == want
    assert out["replay"].restore["mismatched"] == []
    assert "%macro" in out["replay"].restore["lost"]["mm"]


def test_code_read_from_the_history_manager_is_shipped_not_recomputed(make_kernel, tmp_path):
    """`get_ipython().history_manager.input_hist_raw[-2]` is the cell before in this kernel; the
    optimal plan recomputed it (cheap) in the restoring kernel, where it is the restore call."""
    a, out = migrate_both(make_kernel, tmp_path, [
        "x = 1",
        "prev = get_ipython().history_manager.input_hist_raw[-2]",
        "n = len(prev)",
    ])
    assert a.value("prev") == "x = 1"
    check_all(a, out, ["x", "prev", "n"])
    assert out["optimal"].restore["mismatched"] == []


def test_a_rerun_typed_without_the_percent_is_not_replayed_either(make_kernel, tmp_path):
    """Automagic: `rerun -l 1` is the same magic, and no Python the transformer turns into a
    call; a restore re-ran it against the restoring kernel's history all the same."""
    a, out = migrate_both(make_kernel, tmp_path, ["x = 1", "x += 1", "rerun -l 1", "y = x"])
    assert a.value("[x, y]") == [3, 3]
    check_all(a, out, ["x", "y"])
    assert out["replay"].restore["mismatched"] == []
    assert "%rerun" in out["replay"].restore["lost"]["x"]


# --- the notebook's module files rewritten without a reload --------------------------------

def _rewrite_after(a: Kernel, tmp_path, cell: int, name: str, text: str):
    """`between` for migrate_both: rewrite `name` in the kernels' directory after cell `cell`
    (the user edits the file in another tab and does not reload it)."""
    def between(i: int) -> None:
        if i == cell:
            (tmp_path / name).write_text(text)
    return between


def test_a_function_imported_from_a_module_file_rewritten_since_keeps_its_old_code(
        make_kernel, tmp_path):
    """`from lm import f`, then lm.py rewritten (another body) and not reloaded: the session's
    `f` is the old code. Pickled by reference (module and name), the restore imported the new
    file and `f` verified (a function of a module was digested by its name) while `f()`
    returned 2 instead of 1. It travels by value now, and its digest holds its code."""
    (tmp_path / "lm.py").write_text("def f():\n    return 1\n")
    a = make_kernel()
    out = _migrate_with(make_kernel, tmp_path, a, ["from lm import f", "v = f()", "w = f()"],
                        _rewrite_after(a, tmp_path, 1, "lm.py", "def f():\n    return 2\n"))
    assert a.value("[v, w, f()]") == [1, 1, 1]
    check_all(a, out, ["v", "w"])
    for r in out.values():
        if r.restore["variables"]["f"].get("verified"):
            assert r.kernel.value("f()") == 1, r.plan
        else:
            assert "f" in r.restore["lost"], r.plan
    assert out["optimal"].restore["variables"]["f"]["verified"]


def test_a_module_whose_file_changed_since_its_import_keeps_its_old_functions(
        make_kernel, tmp_path):
    """`import lm` then lm.py rewritten and not reloaded: `lm.f` is the old code. The module is
    shipped with its globals, and its functions were shipped by reference: the file's new
    ones."""
    (tmp_path / "lm.py").write_text("def f():\n    return 1\n")
    a = make_kernel()
    out = _migrate_with(make_kernel, tmp_path, a, ["import lm", "v = lm.f()", "w = lm.f()"],
                        _rewrite_after(a, tmp_path, 1, "lm.py", "def f():\n    return 2\n"))
    assert a.value("[v, w, lm.f()]") == [1, 1, 1]
    check_all(a, out, ["v", "w"])
    for r in out.values():
        if r.restore["variables"]["lm"].get("verified"):
            assert r.kernel.value("lm.f()") == 1, r.plan
        else:
            assert "lm" in r.restore["lost"], r.plan
    assert out["optimal"].restore["variables"]["lm"]["verified"]


def test_instances_of_a_class_whose_module_file_changed_since_keep_the_old_methods(
        make_kernel, tmp_path):
    """`from lm import C; c = C()`, then lm.py rewritten (another method body) and not
    reloaded: `c.m()` is 1 in the session. The class was pickled by reference and the
    restore gave `c` the file's new class (`c.m()` 2), verified."""
    (tmp_path / "lm.py").write_text("class C:\n    def m(self):\n        return 1\n")
    a = make_kernel()
    out = _migrate_with(
        make_kernel, tmp_path, a, ["from lm import C", "c = C()", "v = c.m()", "c2 = C()"],
        _rewrite_after(a, tmp_path, 1, "lm.py", "class C:\n    def m(self):\n        return 2\n"))
    probe = "[v, c.m(), c2.m(), type(c) is C, type(c2) is C]"
    assert a.value(probe) == [1, 1, 1, True, True]
    check_all(a, out, ["v"])
    for r in out.values():
        if r.restore["variables"]["c"].get("verified"):
            assert r.kernel.value(probe) == [1, 1, 1, True, True], r.plan
        else:
            assert "c" in r.restore["lost"], r.plan
    assert out["optimal"].restore["variables"]["c"]["verified"]


# --- long sessions and sessions that hop again and again ------------------------------------

def test_a_long_session_of_rebinds_is_replayed_right_and_in_time(make_kernel, tmp_path):
    """250 cells rebinding and mutating the same few names (a list, a dict holding it, an
    array, counters): the replay plan re-runs the whole chain, in order, within seconds."""
    ops = ["x = x + {i}", "lst.append(x)", "y = sum(lst)", "arr[{m}] += x", "d['k{k}'] = y",
           "z = [lst, d]", "x = len(lst)"]
    cells = ["import numpy as np\nx = 0\nlst = []\narr = np.zeros(10)\nd = {}"]
    cells += [ops[i % 7].format(i=i, m=i % 10, k=i % 5) for i in range(250)]
    t0 = time.monotonic()
    a, out = migrate_both(make_kernel, tmp_path, cells)
    elapsed = time.monotonic() - t0
    probe = "[x, y, lst, arr.tolist(), d, z[0] is lst, z[1] is d]"
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan
    assert len(out["replay"].restore["rerun_cells"]) > 200
    assert elapsed < 120, elapsed


HOPS = [
    ["import numpy as np", "a = [1]\nb = {'k': a}\narr = np.arange(5.0)\nv = arr[1:3]",
     "def f(x):\n    return x + len(a)", "y = f(10)"],
    ["c = a\na.append(2)\nb['new'] = c", "v *= 10", "def f(x):\n    return x * 1000", "z = f(1)",
     "w = [b, c, v]"],
    ["a.append(3)\nd = [b, c]", "del c", "y2 = f(2) + y", "arr[0] = -1", "b['k'].append(4)"],
]
HOP_PROBE = ("[a, b, d, y, y2, z, arr.tolist(), w[2].tolist(), f(1), b['k'] is a, d[0] is b, "
             "d[1] is a, w[0] is b, w[1] is a, bool(np.shares_memory(v, arr)), w[2] is v, "
             "'c' in globals()]")


def test_three_hops_with_a_different_plan_each_keep_values_and_aliases(make_kernel, tmp_path):
    """Restore, then cells that mutate restored values and alias them with new ones, then
    migrate again, three times: the optimal plan, then nothing shipped (deadline 0), then
    recompute-all. Each restore re-runs cells recorded in earlier kernels against values later
    kernels changed; the session at the end is the one that never moved, aliases included."""
    ref = make_kernel()
    for cells in HOPS:
        for c in cells:
            ref.ok(c)
    want = ref.value(HOP_PROBE)
    plans = ["", ", deadline_s=0.0", ", strategy='recompute-all'"]
    k = make_kernel()
    for i, cells in enumerate(HOPS):
        for c in cells:
            k.ok(c)
        url = (tmp_path / f"hop{i}").as_uri()
        k.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}{plans[i]})")
        k = make_kernel()
        k.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
        r = k.value("_r")
        assert r["verified"], (i, r["lost"], r["mismatched"], r["errors"])
    assert k.value(HOP_PROBE) == want

