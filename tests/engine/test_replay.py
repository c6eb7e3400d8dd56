"""Recomputation paths: a session rebuilt by re-running its cells is the same session.

A zero deadline makes the planner ship only what it must, so these notebooks are restored
almost entirely by replay: in-place mutation chains, mutation through functions and aliases,
`global` writes, exec, star imports, magics, randomness and redefinitions.
"""

from __future__ import annotations

import os

import pytest

from tests.engine.migrate import assert_verified, run_and_migrate
from tests.kernels import Kernel, set_order_under_seed


def migrate_by_replay(make_kernel, url: str, cells: list[str]) -> tuple[Kernel, Kernel, dict, dict]:
    return run_and_migrate(make_kernel, url, cells, deadline_s=0.0)


NOTEBOOKS = {
    "mutation-chain": [
        "items = []",
        "items.append(1)",
        "snapshot = list(items)",
        "items.extend([2, 3])",
        "def bump(d):\n    d['n'] = d.get('n', 0) + 1",
        "state = {}",
        "bump(state); bump(state)",
        "alias = state",
        "alias['via_alias'] = True",
        "nested = {'inner': items}",
        "nested['inner'].append(4)",
    ],
    "globals-exec-star": [
        "counter = 0",
        "def incr():\n    global counter\n    counter += 1",
        "incr(); incr(); incr()",
        "exec('made_by_exec = counter * 10')",
        "globals()['made_by_globals'] = made_by_exec + 1",
        "from math import *",
        "root2 = sqrt(2)",
        "squares = [i * i for i in range(5)]",
        "total = sum(squares)",
        "if (n := len(squares)) > 3:\n    big = True",
        "for loop_var in range(3):\n    pass",
        "with open(__import__('os').devnull) as devnull_handle:\n    devnull_name = devnull_handle.name",
    ],
    "numpy-inplace": [
        "import numpy as np",
        "a = np.zeros(1000)",
        "a[10:20] = 5",
        "view = a[100:200]",
        "view += 1",
        "np.add(a, 1, out=a)",
        "b = a.reshape(10, 100)",
        "b[0, 0] = -7",
        "col_means = b.mean(axis=0)",
    ],
    "randomness-and-redefinition": [
        "import random\nimport numpy as np",
        "first = random.random()",
        "x = np.random.rand(3)",
        "def f(v):\n    return v + first",
        "y = f(1)",
        "def f(v):\n    return v * 2",
        "z = f(x)",
        "rng = np.random.default_rng(7)",
        "draw = rng.normal(size=4)",
        "draw2 = rng.normal(size=2)",
    ],
    "magics-and-classes": [
        "%time t = sum(range(1000))",
        "%%capture captured\nprint('hidden')\nfrom_capture = 3",
        "class Acc:\n    def __init__(self):\n        self.vals = []\n    def add(self, v):\n        self.vals.append(v)\n        return self",
        "acc = Acc().add(1).add(2)",
        "acc.add(t)",
        "Acc.label = 'accumulator'",
    ],
    "pandas-inplace": [
        "import pandas as pd",
        "df = pd.DataFrame({'a': [1, 2, 3], 'b': [4.0, 5.0, 6.0]})",
        "df['c'] = df['a'] * 2",
        "df.drop(columns=['b'], inplace=True)",
        "df.loc[0, 'a'] = 100",
        "df.rename(columns={'c': 'double'}, inplace=True)",
        "summary = df.describe()",
    ],
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_replayed_notebook_verifies(make_kernel, tmp_path, name):
    a, b, c, r = migrate_by_replay(make_kernel, (tmp_path / "s").as_uri(), NOTEBOOKS[name])
    assert c["recomputed"], c  # the replay path is what is under test
    assert_verified(r)
    assert r["errors"] == []


def test_replayed_mutation_chain_has_the_right_values(make_kernel, tmp_path):
    _, b, _, r = migrate_by_replay(make_kernel, (tmp_path / "s").as_uri(), NOTEBOOKS["mutation-chain"])
    assert_verified(r)
    assert b.value("[items, snapshot, state, alias is state, nested['inner'] is items]") == [
        [1, 2, 3, 4], [1], {"n": 2, "via_alias": True}, True, True]


def test_replayed_globals_and_exec_have_the_right_values(make_kernel, tmp_path):
    _, b, _, r = migrate_by_replay(make_kernel, (tmp_path / "s").as_uri(), NOTEBOOKS["globals-exec-star"])
    assert_verified(r)
    assert b.value("[counter, made_by_exec, made_by_globals, round(root2, 6), total, big, n]") == [
        3, 30, 31, 1.414214, 30, True, 5]


def test_replay_leaves_no_temporaries_behind(make_kernel, tmp_path):
    cells = ["tmp = [1, 2]", "kept = sum(tmp)", "del tmp", "other = 3"]
    _, b, _, r = migrate_by_replay(make_kernel, (tmp_path / "s").as_uri(), cells)
    assert_verified(r)
    assert b.value("['tmp' in globals(), kept, other]") == [False, 3, 3]


def test_a_restored_kernel_records_new_cells_and_migrates_again_by_replay(make_kernel, tmp_path):
    _, b, _, r = migrate_by_replay(make_kernel, (tmp_path / "s1").as_uri(), NOTEBOOKS["mutation-chain"])
    assert_verified(r)
    b.ok("items.append(5)")
    b.ok("grand = len(items) + state['n']")
    url2 = (tmp_path / "s2").as_uri()
    b.ok(f"_c2 = _ka.checkpoint({url2!r}, deadline_s=0.0)")
    c = make_kernel()
    c.ok(f"import kernel_agent as _ka; _r2 = _ka.restore({url2!r})")
    r2 = c.value("_r2")
    assert_verified(r2)
    assert c.value("[items, grand]") == [[1, 2, 3, 4, 5], 7]


def test_a_replayed_cell_that_checkpointed_does_not_checkpoint_again(make_kernel, tmp_path):
    url = (tmp_path / "s").as_uri()
    other = (tmp_path / "other").as_uri()
    a = make_kernel()
    a.ok(f"import kernel_agent\nx = [1, 2]\nfirst = kernel_agent.checkpoint({other!r})['checkpoint_id']")
    a.ok("y = len(x)")
    a.ok(f"_c = kernel_agent.checkpoint({url!r}, strategy='recompute-all')")
    assert "x" in a.value("_c['recomputed']")
    b = make_kernel()
    b.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
    assert b.value("[x, y]") == [[1, 2], 2]
    ids = [p.name for p in (tmp_path / "other" / "checkpoints").iterdir()]
    assert len(ids) == 1  # the restore's replay took no second checkpoint


@pytest.mark.parametrize("strategy", ["ship-all", "recompute-all"])
def test_forced_strategies_restore_the_same_session(make_kernel, tmp_path, strategy):
    url = (tmp_path / "s").as_uri()
    a = make_kernel()
    for c in NOTEBOOKS["mutation-chain"]:
        a.ok(c)
    a.ok(f"_c = __import__('kernel_agent').checkpoint({url!r}, strategy={strategy!r})")
    c = a.value("_c")
    assert (c["recomputed"] == []) if strategy == "ship-all" else (c["shipped"] == [])
    b = make_kernel()
    b.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
    assert_verified(b.value("_r"))


def test_a_replayed_cell_does_not_see_a_name_the_session_had_deleted(make_kernel, tmp_path):
    # re-running `list = [1, 2]` (to recompute `total`) must not leave the shadowing list bound
    # when `again = list(range(3))` is re-run: the original cell saw the builtin again
    cells = ["list = [1, 2]", "total = sum(list)", "del list", "again = list(range(3))",
             "x = 5", "def getx():\n    return x", "y = getx()", "del x", "x = 7", "z = getx()"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="recompute-all")
    assert {"again", "total", "y", "z"} <= set(c["recomputed"]), c
    assert r["errors"] == []
    assert_verified(r)
    assert b.value("[again, total, y, z, 'list' in globals(), getx()]") == [[0, 1, 2], 3, 5, 7, False, 7]


def test_a_cell_reading_the_output_history_is_shipped_not_replayed(make_kernel, tmp_path):
    # a replay displays nothing and the new kernel's Out is its own: `prev = _` re-run is wrong
    cells = ["41 + 1", "prev = _", "total = 0\nfor _ in range(3):\n    total += 1"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="recompute-all")
    assert "prev" in c["shipped"], c
    assert "total" in c["recomputed"], c  # a `_` the cell binds itself is no history read
    assert_verified(r)
    assert b.value("[prev, total]") == [42, 3]


def test_process_state_cells_are_replayed_even_when_every_variable_is_shipped(make_kernel, tmp_path):
    cells = ["import os, sys", "sys.setrecursionlimit(4321)", "os.environ['ELASTIC_TEST_FLAG'] = 'on'",
             "x = [1, 2]", "print(len(x), os.getpid())"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert c["recomputed"] == [], c
    assert r["errors"] == []
    assert_verified(r)
    assert b.value("[sys.getrecursionlimit(), os.environ.get('ELASTIC_TEST_FLAG'), x]") == [4321, "on", [1, 2]]


def test_state_set_by_an_import_cell_that_also_defines_variables_comes_back(make_kernel, tmp_path):
    # the usual first cell: imports, options, environment, a constant or two
    cells = ["import os, sys, warnings, decimal\nimport pandas as pd\nos.environ['ELASTIC_TEST_MODE'] = 'fast'\n"
             "pd.set_option('display.max_rows', 7)\nwarnings.filterwarnings('ignore', message='elastic-test')\n"
             "sys.path.insert(0, '/elastic/test/path')\ndecimal.getcontext().prec = 40\nDATA_DIR = '/data'",
             "mode = os.environ['ELASTIC_TEST_MODE'] + '!'", "x = [1, 2]"]
    probe = ("[os.environ.get('ELASTIC_TEST_MODE'), pd.get_option('display.max_rows'), sys.path[0], "
             "decimal.getcontext().prec, any(f[1] and f[1].pattern == 'elastic-test' for f in warnings.filters), "
             "DATA_DIR, mode, x]")
    for strategy in ("ship-all", "recompute-all"):
        _, b, c, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
        assert r["errors"] == [] and r["rerun_cells"][:1] == [0], (strategy, r["rerun_cells"])
        assert_verified(r)
        assert b.value(probe) == ["fast", 7, "/elastic/test/path", 40, True, "/data", "fast!", [1, 2]], strategy


def test_autoreload_is_loaded_and_set_again_after_a_restore(make_kernel, tmp_path):
    # `%load_ext autoreload` reads the source of every imported module (the notebook's own
    # utils.py too): it was not replayed, and the replayed `%autoreload 2` raised a UsageError
    (tmp_path / "helpers.py").write_text("def twice(v):\n    return 2 * v\n")
    cells = ["import helpers", "%load_ext autoreload", "%autoreload 2", "x = helpers.twice(21)"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert r["errors"] == [], r["errors"]
    assert r["rerun_cells"] == [1, 2], r["rerun_cells"]
    assert_verified(r)
    assert b.value("[any(e.endswith('autoreload') for e in get_ipython().extension_manager.loaded), x]"
                   ) == [True, 42]
    # and it works: the module's new source is used by the next call
    (tmp_path / "helpers.py").write_text("def twice(v):\n    return 2 * v + 1\n")
    b.ok("after_edit = helpers.twice(1)")  # (autoreload acts before a cell, not an expression)
    assert b.value("after_edit") == 3


def test_environment_variables_a_cell_read_from_a_file_are_set_again(make_kernel, tmp_path):
    # what `load_dotenv()` does: the cell read a file, and was not replayed
    (tmp_path / ".env").write_text("ELASTIC_API_URL=https://example.test\nELASTIC_API_KEY=k-123\n")
    cells = ["import os\nfor line in open('.env'):\n    key, _, val = line.strip().partition('=')\n"
             "    os.environ[key] = val",
             "x = [1, 2]"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert r["errors"] == [] and r["warnings"] == [], r
    assert r["rerun_cells"] == [0], r["rerun_cells"]
    assert_verified(r)
    assert b.value("[os.environ.get('ELASTIC_API_URL'), os.environ.get('ELASTIC_API_KEY'), x]") == [
        "https://example.test", "k-123", [1, 2]]


def test_a_first_cell_that_cannot_be_re_run_still_leaves_its_settings_behind(make_kernel, tmp_path):
    # imports, options, environment, paths, and an output directory (an effect: not re-run)
    (tmp_path / "work").mkdir()
    cells = ["import os, sys\nimport pandas as pd\nos.makedirs('out', exist_ok=True)\n"
             "open('out/log.txt', 'w').write('started')\npd.set_option('display.max_rows', 9)\n"
             "os.environ['ELASTIC_FIRST_CELL'] = 'yes'\nsys.path.insert(0, '/elastic/first/cell')\n"
             "os.chdir('work')\nimport decimal\ndecimal.getcontext().prec = 12\n"
             "decimal.getcontext().traps[decimal.Inexact] = True",
             "df = pd.DataFrame({'a': [1, 2]})"]
    probe = ("[pd.get_option('display.max_rows'), os.environ.get('ELASTIC_FIRST_CELL'), "
             "sys.path[0], os.path.basename(os.getcwd()), df.a.tolist(), decimal.getcontext().prec,"
             " bool(decimal.getcontext().traps[decimal.Inexact])]")
    for plan in ("optimal", "replay"):
        kw = {"deadline_s": 0.0} if plan == "replay" else {}
        _, b, c, r = run_and_migrate(make_kernel, (tmp_path / plan).as_uri(), cells, **kw)
        assert 0 not in r["rerun_cells"], r["rerun_cells"]
        assert_verified(r)
        assert b.value(probe) == [9, "yes", "/elastic/first/cell", "work", [1, 2], 12, True], plan
        assert r["process_state_set"] == [
            "environment variables ELASTIC_FIRST_CELL", "import paths /elastic/first/cell",
            f"working directory {tmp_path / 'work'}", "pandas options display.max_rows",
            "decimal context prec, traps"], plan


def test_warning_filters_numpy_and_interpreter_settings_of_a_first_cell_not_re_run_come_back(
        make_kernel, tmp_path):
    """The usual first cell silences warnings and sets numpy's error handling and print
    options and the recursion limit; it also reads a data file a later cell rewrites, so the
    restore cannot re-run it. These used to be only named in a warning: RuntimeWarnings showed
    again, arrays printed with 8 digits, deep recursion failed. They are carried by value."""
    (tmp_path / "data.txt").write_text("1")
    cells = ["import sys, gc, warnings, numpy as np\n"
             "warnings.filterwarnings('ignore', category=RuntimeWarning)\n"
             "np.seterr(all='ignore'); np.set_printoptions(precision=3)\n"
             "sys.setrecursionlimit(5000); gc.set_threshold(900, 11, 12)\n"
             "data = open('data.txt').read()",
             "open('data.txt', 'w').write('2')"]
    for plan in ("optimal", "ship-all"):
        kw = {"strategy": plan} if plan == "ship-all" else {}
        _, b, c, r = run_and_migrate(make_kernel, (tmp_path / plan).as_uri(), cells, **kw)
        assert 0 not in r["rerun_cells"], r["rerun_cells"]
        assert_verified(r)
        b.ok("import warnings as _w\nwith _w.catch_warnings(record=True) as _seen:\n"
             "    _w.warn('shown?', RuntimeWarning)\n    _w.warn('shown!', UserWarning)\n"
             "_shown = [str(x.message) for x in _seen]")
        assert b.value("_shown") == ["shown!"], plan
        assert b.value("[repr(np.array([1.23456])), str(np.float64(1) / np.zeros(1)), "
                       "sys.getrecursionlimit(), list(gc.get_threshold())]") == [
            "array([1.235])", "[inf]", 5000, [900, 11, 12]], plan
        assert b.value("np.geterr()") == dict.fromkeys(("divide", "over", "under", "invalid"),
                                                       "ignore"), plan
        assert any(s.startswith("warning filters ignore::RuntimeWarning")
                   for s in r["process_state_set"]), r["process_state_set"]
        named = [w for w in r["warnings"] if "process state" in w]
        assert named and "warning filters" not in named[0].split("Other state")[1], named


def test_a_slow_import_cell_that_sets_process_state_is_still_replayed(make_kernel, tmp_path):
    # importing pandas took over a second on a busy machine, and its options were not restored
    # (the sleep stands in for a slow import: a local module would be a file the cell read)
    cells = ["import os, time\nos.environ['ELASTIC_SLOW_MODE'] = 'on'\ntime.sleep(1.5)",
             "time.sleep(1.2)\nos.environ['ELASTIC_NOT_QUICK'] = 'on'"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert r["rerun_cells"] == [0], r["rerun_cells"]  # a slow cell without imports is not
    assert_verified(r)
    assert b.value("os.environ.get('ELASTIC_SLOW_MODE')") == "on"


def test_a_function_calling_a_method_of_a_module_its_cell_imports_verifies_when_recomputed(
        make_kernel, tmp_path):
    # IPython compiles a cell statement by statement, and the bytecode of `fetch` differs from
    # that of the whole cell compiled at once: the replay must compile it the same way
    cells = ["import asyncio\nasync def fetch(i):\n    await asyncio.sleep(0)\n    return i * 2\n"
             "import json\ndef dump(v):\n    return json.dumps(v)"]
    _, b, c, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="recompute-all")
    assert {"fetch", "dump"} <= set(c["recomputed"]), c
    assert_verified(r)
    assert b.value("dump([1])") == "[1]"


WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def _migrate_with_seeds(make_kernel, tmp_path, seed_a: str, seed_b: str) -> dict:
    seeds = iter((seed_a, seed_b))
    _, _, c, r = run_and_migrate(
        lambda: make_kernel(env={**os.environ, "PYTHONHASHSEED": next(seeds)}),
        (tmp_path / f"s{seed_a}-{seed_b}").as_uri(),
        [f"words = set({WORDS!r})", "order = list(words)"], strategy="recompute-all")
    assert "order" in c["recomputed"]
    return r


def test_a_replayed_set_of_strings_verifies_under_one_hash_seed_and_is_explained_otherwise(
        make_kernel, tmp_path):
    assert_verified(_migrate_with_seeds(make_kernel, tmp_path, "7", "7"))
    other = next(s for s in ("8", "9", "10", "11")
                 if set_order_under_seed(WORDS, s) != set_order_under_seed(WORDS, "7"))
    r = _migrate_with_seeds(make_kernel, tmp_path, "7", other)
    assert r["mismatched"] == ["order"]
    assert "PYTHONHASHSEED 7 there, " + other + " here" in r["variables"]["order"]["detail"]
