"""Replay hazards: state outside the namespace that re-running a cell depends on.

A cell is re-run at restore time only if re-running it recreates what it made. These notebooks
read files that later cells (or the user) change, import a local module that is rewritten,
depend on the working directory and on process state set by cells that wrote no variable. The
optimal plan must restore them verified; the replay plan must either recompute them correctly
or name them as lost with the reason — never re-run a cell into a different value.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_never_silent, assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import restore, run_all, run_and_migrate


def test_cell_reading_a_file_later_deleted_is_shipped_not_replayed(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "import os",
        "open('tmp.txt', 'w').write('hello')",
        "content = open('tmp.txt').read()",
        "os.remove('tmp.txt')",
    ])
    assert out["optimal"].checkpoint["variables"]["content"] == "ship"
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("content") == "hello"
    replay = out["replay"]
    assert_never_silent(replay, {"content": "hello"})
    assert "later changed it" in replay.restore["lost"]["content"]
    assert replay.restore["errors"] == []  # the reader was not re-run into FileNotFoundError


def test_cell_reading_a_file_later_overwritten_is_shipped_not_replayed(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "import pathlib",
        "pathlib.Path('cfg.txt').write_text('1')",
        "v = open('cfg.txt').read()",
        "pathlib.Path('cfg.txt').write_text('2')",
    ])
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("v") == "1"
    assert_never_silent(out["replay"], {"v": "1"})
    assert out["replay"].restore["mismatched"] == []


def test_cell_reading_an_unchanged_file_is_replayed(make_kernel, tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    a, out = migrate_both(make_kernel, tmp_path, [
        "rows = open('data.csv').read().splitlines()",
        "n = len(rows)",
    ])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[rows, n]") == [["a,b", "1,2", "3,4"], 3]
    assert out["replay"].restore["variables"]["rows"]["action"] == "recomputed"


def test_file_changed_outside_the_notebook_makes_its_reader_not_replayable(make_kernel, tmp_path):
    (tmp_path / "params.txt").write_text("first")

    def user_edits(i: int) -> None:
        if i == 0:  # the user rewrites the file in an editor between two cells
            (tmp_path / "params.txt").write_text("second version")

    a, out = migrate_both(make_kernel, tmp_path, ["p = open('params.txt').read()", "q = 1"],
                          between=user_edits)
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("p") == "first"
    assert_never_silent(out["replay"], {"p": "first"})
    assert "changed since" in out["replay"].restore["lost"]["p"]


def test_local_module_rewritten_and_reloaded_keeps_both_values(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "open('mymod.py', 'w').write('V = 1\\n')",
        "import mymod",
        "old = mymod.V",
        "open('mymod.py', 'w').write('V = 2\\n')",
        "import importlib; importlib.reload(mymod)",
        "new = mymod.V",
    ])
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("[old, new]") == [1, 2]
    assert_never_silent(out["replay"], {"old": 1, "new": 2})
    assert out["replay"].restore["mismatched"] == []


def test_relative_read_after_chdir_is_not_replayed_from_another_directory(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "import os",
        "os.makedirs('sub', exist_ok=True); open('sub/f.txt', 'w').write('in sub')",
        "os.chdir('sub')",
        "v = open('f.txt').read()",
        "os.chdir('..')",
    ])
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("v") == "in sub"
    assert_never_silent(out["replay"], {"v": "in sub"})
    assert out["replay"].restore["errors"] == []


def test_environment_set_by_a_cell_without_outputs_is_replayed_first(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "import os",
        "os.environ['ELASTIC_TEST_VAR'] = 'hello'",
        "v = os.environ['ELASTIC_TEST_VAR'] + '!'",
    ])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("v") == "hello!"
    assert out["replay"].restore["variables"]["v"]["action"] == "recomputed"
    assert out["replay"].kernel.value("os.environ.get('ELASTIC_TEST_VAR')") == "hello"


def test_sys_path_set_by_a_cell_is_replayed_before_the_import(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, [
        "import os, sys",
        "os.makedirs('lib', exist_ok=True); open('lib/helper.py', 'w').write('K = 41\\n')",
        "sys.path.insert(0, 'lib')",
        "import helper",
        "k = helper.K + 1",
    ])
    for r in out.values():
        assert_never_silent(r, {"k": 42})
    assert_verified(out["optimal"])


def test_working_directory_ends_where_the_notebook_left_it_after_replay(make_kernel, tmp_path):
    (tmp_path / "sub").mkdir()
    a, out = migrate_both(make_kernel, tmp_path, [
        "import os",
        "os.chdir('sub')",
        "x = [1, 2]",
        "os.chdir('..')",
        "x.append(3)",
    ])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("os.getcwd()") == str(tmp_path)


NOTEBOOK_MODULE = ("open('counter_mod.py', 'w').write('counter = 0\\ncache = {}\\n"
                   "def bump():\\n    global counter\\n    counter += 1\\n    return counter\\n')")


@pytest.mark.parametrize("strategy", ["ship-all", "optimal", "recompute-all"])
def test_globals_of_the_notebooks_own_module_changed_by_cells_come_back(make_kernel, tmp_path,
                                                                        strategy):
    # counter_mod.py is the notebook's, not a library: what its functions did to its globals is
    # session state. It came back as the file's initial values (counter 0, cache empty), and
    # verified: the module was only referenced by name.
    cells = [NOTEBOOK_MODULE,
             "import counter_mod\nfrom counter_mod import bump, cache",
             "bump()",
             "x = bump()\ncache['x'] = x",
             "counter_mod.cache['y'] = 'through the module'"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[counter_mod.counter, cache, counter_mod.cache is cache, x]") == [
        2, {"x": 2, "y": "through the module"}, True, 2]
    assert b.value("[bump(), counter_mod.counter]") == [3, 3]


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_checkpointing_leaves_the_notebook_modules_globals_the_very_objects_cells_hold(
        make_kernel, tmp_path, strategy):
    # The checkpoint loaded a copy of each shipped co-variable back in the kernel to digest it
    # as loaded, and loading a notebook module re-applies its globals to the module it finds
    # imported: the live one. `cache` in the namespace then no longer was counter_mod.cache,
    # and bump() counted in a fresh copy, in the session being checkpointed.
    cells = [NOTEBOOK_MODULE, "from counter_mod import *", "import counter_mod",
             "bump()\ncache['k'] = 1"]
    a, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    probe = "[counter_mod.cache is cache, bump(), counter_mod.counter]"
    assert a.value(probe) == [True, 2, 2]
    assert b.value(probe) == [True, 2, 2]


def test_a_changed_global_of_a_notebook_module_does_not_verify_as_equal(make_kernel, tmp_path):
    a = make_kernel()
    run_all(a, [NOTEBOOK_MODULE, "import counter_mod"])
    digest = "__import__('kernel_agent.changes').changes.value_digest({'m': counter_mod})"
    before = a.value(digest)
    a.ok("counter_mod.bump()")
    assert a.value(digest) != before


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_a_notebooks_logging_setup_still_logs_after_the_migration(make_kernel, tmp_path, strategy):
    # levels and handlers are the process's, not a variable's: shipping every variable left
    # the restored session logging nothing, and the handler's list missed its later appends
    cells = ["import logging\nrecords = []",
             "log = logging.getLogger('nb.migrated')\nlog.setLevel(logging.DEBUG)",
             "class ToList(logging.Handler):\n    def emit(self, r):\n        records.append(r.getMessage())",
             "h = ToList()\nlog.addHandler(h)",
             "log.debug('one')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[records, log.level, len(log.handlers)]") == [["one"], 10, 1]
    b.ok("log.debug('two')")
    assert b.value("records") == ["one", "two"]


CONFIG_MODULE = ("open('cfg_mod.py', 'w').write('class Config:\\n    batch = 32\\n    layers = [64]\\n"
                 "    seen = {}\\n    @classmethod\\n    def note(cls, k):\\n        cls.seen[k] = len(cls.seen)\\n"
                 "    def describe(self):\\n        return f\"{self.batch}/{self.layers}\"\\n')")


@pytest.mark.parametrize("strategy", ["ship-all", "optimal", "recompute-all"])
def test_class_attributes_of_the_notebooks_own_module_changed_by_cells_come_back(
        make_kernel, tmp_path, strategy):
    # `from cfg_mod import Config; Config.batch = 64`: the class was shipped by name and came
    # back as the file defines it (batch 32, nothing noted), verified; recomputed, the cells
    # changing it were not known to have changed anything
    cells = [CONFIG_MODULE, "from cfg_mod import Config", "Config.batch = 64",
             "Config.layers.append(10)\nConfig.note('a')", "c = Config()\ndesc = c.describe()",
             "layers = Config.layers"]
    a, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert a.value("layers is Config.layers")  # the checkpoint left the live class alone
    assert b.value("[Config.batch, Config.layers, Config.seen, desc, layers is Config.layers,"
                   " type(c) is Config]") == [64, [64, 10], {"a": 0}, "64/[64, 10]", True, True]


def test_a_cell_re_run_before_a_shipped_module_reads_the_module_as_it_was_then(make_kernel,
                                                                              tmp_path):
    # The restore unpickles every blob before it re-runs a cell, and unpickling a notebook
    # module wrote its final globals into the module at once: the generator's cell, re-run
    # (a generator cannot be shipped), then counted to 3 instead of 2.
    cells = ["open('gen_mod.py', 'w').write('counter = 2\\ndef bump():\\n    global counter\\n"
             "    counter += 1\\n')",
             "import gen_mod",
             "upto = (i for i in range(gen_mod.counter))",
             "gen_mod.bump()"]
    a, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert c["variables"]["gen_mod"] == "ship" and c["variables"]["upto"] == "recompute"
    assert_restore_verified(r)
    assert b.value("[list(upto), gen_mod.counter]") == a.value("[list(upto), gen_mod.counter]") == [
        [0, 1], 3]


DATA_MODULE = ("open('data_mod.py', 'w').write('A = [1]\\nB = {\"k\": 1}\\n"
               "def get():\\n    return A\\n')")


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_data_names_imported_from_the_notebooks_own_module_stay_the_modules_objects(
        make_kernel, tmp_path, strategy):
    # `from data_mod import A, B` then `A.append(2)`: A was shipped as a plain list, and the
    # module, imported again, held the file's [1]; get() no longer saw the notebook's A, and
    # the restore verified it (nothing checked the binding)
    cells = [DATA_MODULE, "from data_mod import A, B", "A.append(2)"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[A, B, __import__('data_mod').A is A, __import__('data_mod').get() is A,"
                   " __import__('data_mod').B is B]") == [[1, 2], {"k": 1}, True, True, True]


def test_a_module_global_whose_module_is_gone_is_not_verified(make_kernel, tmp_path):
    # the file was deleted: the value comes back, its binding to the module cannot, and the
    # restore says so instead of verifying a detached list
    cells = [DATA_MODULE, "from data_mod import A", "A.append(2)",
             "import os\nos.remove('data_mod.py')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert not r["variables"]["A"]["verified"]
    assert b.value("A") == [1, 2]


def test_a_later_cells_implicit_plot_does_not_draw_on_an_earlier_cells_figure(make_kernel, tmp_path):
    # Jupyter's inline backend shows and closes every pyplot figure at the end of a cell, so
    # `s.plot()` and `plt.title(...)` in a later cell draw on a new figure. Re-run back to back
    # without the end-of-cell hooks, they drew on `fig`, and a figure is checked by type only:
    # `ax` came back with a second line and a title, verified
    pytest.importorskip("matplotlib_inline")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import matplotlib.pyplot as plt\nimport pandas as pd",
        "fig, ax = plt.subplots()\nax.plot([1, 2, 3])",
        "s = pd.Series([3, 1, 2])\ns.plot()\nplt.title('another figure')",
    ])
    check = "[len(ax.lines), ax.get_title(), plt.get_fignums()]"
    assert a.value(check) == [1, "", []]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(check) == [1, "", []], r.plan



def test_a_value_the_checkpointing_cell_changed_is_not_set_back_by_a_re_run_cell(make_kernel,
                                                                                 store_url):
    """`count` changed in the cell that takes the checkpoint: no recorded cell made it, so it
    was loaded before every re-run, and re-running `count = 0` (for the lock, recomputed)
    bound the earlier version over it (reported mismatched). (recompute-all: whether the
    optimal plan re-runs the cell for the lock or ships it depends on the machine's timings)"""
    a = make_kernel()
    run_all(a, ["import threading\ncount = 0\nguard = threading.Lock()", "y = 1"])
    a.ok(f"count = 7\nimport kernel_agent as _ka\n"
         f"_c = _ka.checkpoint({store_url!r}, strategy='recompute-all')")
    assert a.value("_c")["variables"]["guard"] == "recompute"
    b = make_kernel()
    r = restore(b, store_url)
    assert_restore_verified(r)
    assert b.value("[count, y]") == [7, 1]
