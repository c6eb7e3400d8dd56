"""Process state carried by value (kernel_agent.carried) beyond the environment and options.

A cell that set warning filters, numpy's error handling or print options, the recursion limit,
the garbage collector or matplotlib's rcParams, and that the restore cannot re-run (it read a
file a later cell rewrote, or it also changed a variable in place), used to leave the restored
session without them, with only a warning. The checkpoint records them as plain data and the
restore sets them after its re-runs; what cannot be carried is named.
"""

from __future__ import annotations

from tests.engine.migrate import assert_verified, run_and_migrate

#: a cell reading this file, which the next cell rewrites, cannot be re-run
READS = "data = open('data.txt').read()"
REWRITES = "open('data.txt', 'w').write('2')"

SHOWN = ("import warnings as _w\nwith _w.catch_warnings(record=True) as _seen:\n"
         "    _w.warn('one', {0})\n"
         "_shown = [type(x.message).__name__ for x in _seen]")


def test_a_filter_on_a_warning_class_of_the_notebook_comes_back_with_the_class(
        make_kernel, tmp_path):
    """The category is a notebook value: the restore looks it up in the restored namespace,
    so the filter holds the class the session goes on with."""
    (tmp_path / "data.txt").write_text("1")
    cells = ["import warnings\nclass Noisy(UserWarning):\n    pass\n"
             "warnings.simplefilter('ignore', Noisy)\n" + READS, REWRITES]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert 0 not in r["rerun_cells"], r["rerun_cells"]
    assert_verified(r)
    b.ok(SHOWN.format("Noisy"))
    assert b.value("_shown") == [], r["warnings"]
    b.ok(SHOWN.format("UserWarning"))
    assert b.value("_shown") == ["UserWarning"]


def test_a_filter_on_a_warning_class_redefined_since_is_named_not_moved_to_the_new_class(
        make_kernel, tmp_path):
    """The session's filter holds the first `Noisy`; the name now holds another class, whose
    warnings the session shows. Binding the filter to it would silence them: it is named."""
    (tmp_path / "data.txt").write_text("1")
    cells = ["import warnings\nclass Noisy(UserWarning):\n    pass\n"
             "warnings.simplefilter('ignore', Noisy)\n" + READS, REWRITES,
             "class Noisy(UserWarning):\n    pass"]
    a, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert_verified(r)
    a.ok(SHOWN.format("Noisy"))
    assert a.value("_shown") == ["Noisy"]
    b.ok(SHOWN.format("Noisy"))
    assert b.value("_shown") == ["Noisy"]
    named = [w for w in r["warnings"] if "ignore::__main__.Noisy" in w]
    assert named and "no longer bound" in named[0], r["warnings"]


def test_settings_a_re_run_cell_made_and_a_cell_not_re_run_undid_stay_undone(
        make_kernel, tmp_path):
    """Cell 0 is re-run (it only sets options), cell 2 is not (it also appends to a list):
    the re-run turned UserWarnings into errors and floating-point errors into exceptions,
    which cell 2 had undone. The session's final filters and error modes are set again."""
    cells = ["import warnings, numpy as np\nwarnings.filterwarnings('error', category=UserWarning)"
             "\nnp.seterr(all='raise')",
             "lst = []",
             "warnings.filterwarnings('always', category=UserWarning)\nnp.seterr(all='warn')\n"
             "lst.append(1)"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells,
                                 strategy="ship-all")
    assert 0 in r["rerun_cells"] and 2 not in r["rerun_cells"], r["rerun_cells"]
    assert_verified(r)
    b.ok(SHOWN.format("UserWarning"))
    assert b.value("_shown") == ["UserWarning"]
    assert b.value("np.geterr()['divide']") == "warn"


def test_gc_disabled_by_a_cell_is_seen_as_process_state_and_re_run(make_kernel, tmp_path):
    """The monitor's hooks hold cyclic collection off while they run, and the process-state
    snapshot they take read `gc.isenabled()` as False before and after every cell: a cell
    calling ``gc.disable()`` (and binding a name: else it is a context cell, re-run anyway)
    was no process-state cell, and a restore did not re-run it."""
    cells = ["import gc", "x = 1", "gc.disable()\ny = 2"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells,
                                 strategy="ship-all")
    assert 2 in r["rerun_cells"], r["rerun_cells"]
    assert b.value("gc.isenabled()") is False


def test_matplotlib_rcparams_of_a_cell_not_re_run_come_back_and_its_backend_is_named(
        make_kernel, tmp_path):
    """rcParams are validated values (a cycler is set from its text, as a matplotlibrc has
    it); the backend is the restored kernel's own, and the one the session chose is named."""
    (tmp_path / "data.txt").write_text("1")
    cells = ["import matplotlib\nmatplotlib.use('Agg')\n"
             "matplotlib.rcParams['lines.linewidth'] = 3\n"
             "matplotlib.rcParams['axes.prop_cycle'] = matplotlib.cycler(color=['r', 'g'])\n"
             + READS, REWRITES]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert 0 not in r["rerun_cells"], r["rerun_cells"]
    assert_verified(r)
    assert b.value("[matplotlib.rcParams['lines.linewidth'], "
                   "matplotlib.rcParams['axes.prop_cycle'].by_key()['color']]") == [3.0, ["r", "g"]]
    assert "matplotlib rcParams lines.linewidth, axes.prop_cycle" in r["process_state_set"]
    assert any("matplotlib backend agg" in w.lower() for w in r["warnings"]), r["warnings"]


def test_the_decimal_flags_a_cell_not_re_run_raised_come_back(make_kernel, tmp_path):
    """``Decimal(1) / 7`` raises the context's Inexact and Rounded flags, which stay up until a
    cell clears them (code checks them to tell whether a result was rounded). The checkpoint
    carried the precision and the traps, not the flags: the restored context had none up,
    and the restore said the decimal context was as the checkpoint recorded it."""
    (tmp_path / "data.txt").write_text("1")
    cells = ["import decimal\ndecimal.getcontext().prec = 5\nthird = decimal.Decimal(1) / 3\n" + READS,
             REWRITES]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert 0 not in r["rerun_cells"], r["rerun_cells"]
    assert_verified(r)
    assert b.value("[decimal.getcontext().prec, sorted(t.__name__ for t, on in "
                   "decimal.getcontext().flags.items() if on), str(third)]") == [
        5, ["Inexact", "Rounded"], "0.33333"]
