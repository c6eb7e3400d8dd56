"""Side effects and non-determinism mark a cell as unsafe to re-run; the kernel's own activity does not."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from kernel_agent.effects import BACKGROUND
from tests.agent.conftest import AgentKernel
from tests.kernels import Kernel


def test_cell_writing_a_file_is_marked(agent, tmp_path):
    target = tmp_path / "out.csv"
    rec = agent.cell(f"with open({str(target)!r}, 'w') as fh:\n    fh.write('a,b')")
    assert rec["effects"] == [f"writes file {target}"]


def test_cell_appending_to_a_file_is_marked(agent, tmp_path):
    target = tmp_path / "log.txt"
    rec = agent.cell(f"open({str(target)!r}, 'a').close()")
    assert rec["effects"] == [f"writes file {target}"]


def test_cell_writing_through_pathlib_and_numpy_is_marked(agent, tmp_path):
    rec = agent.cell(
        f"import pathlib, numpy as np\npathlib.Path({str(tmp_path / 'p.txt')!r}).write_text('x')\n"
        f"np.save({str(tmp_path / 'a.npy')!r}, np.zeros(3))"
    )
    assert f"writes file {tmp_path / 'p.txt'}" in rec["effects"]
    assert f"writes file {tmp_path / 'a.npy'}" in rec["effects"]


def test_cell_reading_a_file_is_not_marked(agent, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    rec = agent.cell(f"with open({str(src)!r}) as fh:\n    rd_text = fh.read()")
    assert rec["effects"] == []


def test_file_removal_rename_and_mkdir_are_marked(agent, short_tmp):
    # (a short directory: an effect's text is cut at 160 characters, and pytest's tmp_path
    # grows with its run counter, past that once it reached pytest-1000)
    tmp_path = short_tmp
    (tmp_path / "a").write_text("x")
    rec = agent.cell(
        f"import os\nos.rename({str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r})\n"
        f"os.remove({str(tmp_path / 'b')!r})\nos.mkdir({str(tmp_path / 'd')!r})"
    )
    assert rec["effects"] == [
        f"renames {tmp_path / 'a'} -> {tmp_path / 'b'}",
        f"deletes file {tmp_path / 'b'}",
        f"creates directory {tmp_path / 'd'}",
    ]


def test_subprocess_and_shell_commands_are_marked(agent):
    rec = agent.cell("import subprocess, os\nsubprocess.run(['true'])\nos.system('true')")
    assert any(e.startswith("runs subprocess") for e in rec["effects"])
    assert any(e.startswith("runs shell command") for e in rec["effects"])


def test_network_connection_is_marked(agent):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        rec = agent.cell(f"import socket\nsocket.create_connection(('127.0.0.1', {port})).close()")
    finally:
        server.close()
    assert f"network connect 127.0.0.1:{port}" in rec["effects"]


def test_kernel_machinery_activity_is_not_counted(tmp_path):
    # output, rich display, history, matplotlib's first import (font cache built with fc-list,
    # written to its config dir) and inline rendering, and compiling an imported module (a
    # __pycache__ write) all happen between pre_run_cell and post_run_cell
    k = Kernel(cwd=str(tmp_path), env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    try:
        k.ok("%load_ext kernel_agent")
        _check_machinery_not_counted(AgentKernel(k))
    finally:
        k.shutdown()


def test_store_magic_writing_the_profiles_stored_variables_is_a_side_effect(tmp_path):
    """The profile directory is the kernel's, but `%store x` keeps x there for any later
    session: a restore re-ran it (a context cell: it changes no variable) and put the old x
    back over what another notebook had stored since. `%cd` also writes the profile's
    database (its directory history) and stays a re-runnable setting."""
    (tmp_path / "d").mkdir()
    k = Kernel(cwd=str(tmp_path), env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipy")})
    try:
        k.ok("%load_ext kernel_agent")
        agent = AgentKernel(k)
        agent.ok("st_x = [1]")
        rec = agent.cell("%store st_x")
        assert any("autorestore" in e for e in rec["effects"]), rec
        assert not rec["context"]
        rec = agent.cell("%store -r st_x")
        assert any(p.endswith("autorestore/st_x") for p in rec["files_read"]), rec
        rec = agent.cell("%cd d")
        assert rec["effects"] == [] and rec["process_state"], rec
    finally:
        k.shutdown()


def _check_machinery_not_counted(agent):
    agent.ok("with open('nb_helper_mod.py', 'w') as fh:\n    fh.write('X = 1\\n')")
    rec = agent.cell(
        "import nb_helper_mod\n"
        "%matplotlib inline\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "from IPython.display import display, HTML\n"
        "display(HTML('<b>x</b>'))\n"
        "print('out')\n"
        "get_ipython().history_manager.writeout_cache()\n"
        "km_x = nb_helper_mod.X"
    )
    assert rec["effects"] == []


def test_events_from_threads_started_by_the_cell_are_counted(agent, tmp_path):
    target = tmp_path / "thread.txt"
    rec = agent.cell(
        "import threading\n"
        f"th = threading.Thread(target=lambda: open({str(target)!r}, 'w').close())\n"
        "th.start()\nth.join()"
    )
    assert f"writes file {target}" in rec["effects"]


def test_clock_reads_are_marked(agent):
    for code in ("import time\nck1 = time.time()", "from time import perf_counter\nck2 = perf_counter()",
                 "import datetime\nck3 = datetime.datetime.now()", "import time as tm\nck4 = tm.time()"):
        assert "reads the clock" in agent.cell(code)["effects"], code


def test_clock_read_inside_a_called_notebook_function_is_marked(agent):
    agent.ok("import time\ndef stamp():\n    return time.time()")
    assert "reads the clock" in agent.cell("ck_f = stamp()")["effects"]


def test_entropy_and_unseeded_generators_are_marked(agent):
    assert "reads OS entropy" in agent.cell("import uuid\nen_u = uuid.uuid4()")["effects"]
    assert "reads OS entropy" in agent.cell("import os\nen_b = os.urandom(4)")["effects"]
    rec = agent.cell("import numpy as np\nen_rng = np.random.default_rng()")
    assert "uses an unseeded random generator" in rec["effects"]
    rec = agent.cell("en_rng0 = np.random.default_rng(0)")
    assert rec["effects"] == []


def test_os_entropy_drawn_inside_a_library_the_cell_calls_is_marked(agent):
    # the cell's own bytecode names no entropy source: pandas' Styler calls uuid4() itself
    agent.ok("import pandas as pd\nen_df = pd.DataFrame({'a': [1, 3]})")
    rec = agent.cell("en_sty = en_df.style.highlight_max()")
    assert "reads OS entropy (os.urandom, called from code the cell ran)" in rec["effects"]
    # a notebook helper module calling uuid4 for the cell counts too
    agent.ok("import types, uuid\nen_mod = types.ModuleType('en_mod')\n"
             "exec('import uuid\\ndef tag():\\n    return uuid.uuid4().hex', en_mod.__dict__)")
    assert any(e.startswith("reads OS entropy") for e in agent.cell("en_tag = en_mod.tag()")["effects"])


def test_entropy_the_kernel_or_an_import_draws_is_not_the_cells(agent):
    # jupyter_client gives every output message a random id, in the kernel's main thread;
    # scipy draws entropy while it is imported; numpy's RandomState(0) seeds from entropy first;
    # joblib and scikit-learn name their parallel calls and fit contexts with uuid4()
    for code in ("print('en_print')", "en_shown = 3\nen_shown",
                 "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))",
                 "import scipy.stats\nimport numpy as np\nen_rs = np.random.RandomState(0)",
                 "from sklearn.model_selection import train_test_split\n"
                 "en_tr, en_te = train_test_split(list(range(10)), random_state=0)",
                 "from sklearn.linear_model import LogisticRegression\n"
                 "from sklearn.model_selection import cross_val_score\n"
                 "en_cv = cross_val_score(LogisticRegression(), [[0], [1]] * 3, [0, 1] * 3, cv=2)"):
        assert agent.cell(code)["effects"] == [], code


def test_importing_secrets_is_not_drawing_entropy_but_using_it_is(agent):
    # `import uuid, secrets, time` was marked as reading OS entropy: every module it imports
    # could only be shipped, and under a deadline was lost
    assert agent.cell("import uuid, secrets as sc_mod, time")["effects"] == []
    assert "reads OS entropy" in agent.cell("sc_tok = sc_mod.token_hex(4)")["effects"]
    assert "reads OS entropy" in agent.cell("sc_pick = sc_mod.choice('abc')")["effects"]


def test_reads_of_the_process_identity_are_marked(agent):
    # a re-run in another pod answers otherwise: the value must be shipped
    for code in ("import os\npi_pid = os.getpid()", "import socket\npi_host = socket.gethostname()",
                 "import threading\npi_tid = threading.get_ident()"):
        assert "reads the process's identity (process id, host name, thread id)" in agent.cell(code)["effects"], code


def test_plain_computation_has_no_effects(agent):
    assert agent.cell("pc_x = sum(range(10))")["effects"] == []


def test_effects_stop_when_the_cell_ends(agent, tmp_path):
    agent.ok("import threading\n_evt = threading.Event()\n"
             f"_late = threading.Thread(target=lambda: (_evt.wait(), open({str(tmp_path / 'late')!r}, 'w').close()))\n"
             "_late.start()")
    rec = agent.cell("_evt.set()\n_late.join()\nes_x = 1")
    # (the thread, started by the cell before, ran while this one did)
    assert rec["effects"] == [f"writes file {tmp_path / 'late'}", BACKGROUND]
    rec = agent.cell("es_y = 2")
    assert rec["effects"] == []


def test_a_cell_starting_a_thread_that_runs_notebook_code_is_marked(agent):
    """Re-run at a restore, the thread would run again and change the namespace after the
    restore verified it (tests/engine/test_threads.py): the cell must not be re-run."""
    agent.ok("import threading\nth_res = []\nth_go = threading.Event()\n"
             "def th_fill():\n    th_go.wait()\n    th_res.append(1)\n"
             "class ThWorker(threading.Thread):\n    def run(self):\n        th_go.wait()")
    rec = agent.cell("th_t = threading.Thread(target=th_fill)\nth_t.start()")
    assert rec["effects"] == ["starts a thread running notebook code (th_fill)"]
    # the cells after it run while th_t does (BACKGROUND), and th_t, waiting on th_go, may have
    # changed it since the cell before (recorded as changed outside cells)
    rec = agent.cell("th_w = ThWorker()\nth_w.start()", outside=True)
    assert rec["effects"] == [BACKGROUND, "starts a thread running notebook code (ThWorker.run)"]
    rec = agent.cell("import functools\nth_p = threading.Thread(target=functools.partial(th_fill))\n"
                     "th_p.start()", outside=True)
    assert rec["effects"] == [BACKGROUND, "starts a thread running notebook code (th_fill)"]
    rec = agent.cell("th_later = threading.Timer(0, th_fill)\nth_later.start()", outside=True)
    assert rec["effects"] == [BACKGROUND, "starts a thread running notebook code (th_fill)"]
    agent.ok("th_go.set()\nfor th in (th_t, th_w, th_p, th_later):\n    th.join()")


def test_a_thread_that_ended_within_its_cell_or_runs_library_code_is_not_marked(agent):
    """A joined thread did all it does within the cell, as a re-run does it again."""
    agent.ok("import threading, time\nth2_res = []\ndef th2_fill():\n    th2_res.append(1)")
    rec = agent.cell("th2_t = threading.Thread(target=th2_fill)\nth2_t.start()\nth2_t.join()")
    assert rec["effects"] == []
    rec = agent.cell("th2_gate = threading.Event()\n"
                     "th2_lib = threading.Thread(target=th2_gate.wait)\nth2_lib.start()")
    assert rec["effects"] == []
    agent.ok("th2_gate.set()\nth2_lib.join()")


def test_timeit_keeping_its_timings_is_marked_as_reading_the_clock(agent):
    # `res = %timeit -o f()`: res holds the measured times, which a replay measures anew (the
    # restore reported it mismatched); the clock is read inside IPython, not by the cell's code
    rec = agent.cell("ti_res = %timeit -o -n1 -r1 sum(range(10))")
    assert any(e.startswith("reads the clock") for e in rec["effects"]), rec["effects"]
    rec = agent.cell("%timeit -n1 -r1 sum(range(10))")
    assert not any(e.startswith("reads the clock") for e in rec["effects"]), rec["effects"]


def test_timeit_choosing_its_number_of_runs_by_the_clock_is_marked_as_reading_it(agent):
    """Without -n, %timeit runs its code as many times as its first timings say: what the
    code changes (`next(g)`: a generator's position, checked by type only) a re-run changes
    another number of times."""
    agent.ok("tc_g = iter(range(10**9))\ntc_l = []")
    for code in ("%timeit -r1 next(tc_g)", "%%timeit -r1\ntc_l.append(1)"):
        rec = agent.cell(code)
        assert any(e.startswith("reads the clock") for e in rec["effects"]), (code, rec["effects"])
    rec = agent.cell("%%timeit -n2 -r1\ntc_l.append(1)")
    assert not any(e.startswith("reads the clock") for e in rec["effects"]), rec["effects"]


def test_non_determinism_in_the_body_a_cell_magic_runs_is_marked(agent):
    # the body of %%time / %%capture is a string to the cell's code: `stamp = time.time()` in
    # it was not seen, and the replay re-ran it into another value (reported mismatched)
    rec = agent.cell("%%time\nimport time\nbm_stamp = time.time()")
    assert "reads the clock" in rec["effects"], rec["effects"]
    rec = agent.cell("%%capture bm_out\n%time bm_s = sum(range(10))")
    assert any(e.startswith("reads the clock") for e in rec["effects"]), rec["effects"]
    # timing a deterministic body (the usual %%time cell) pins nothing
    assert agent.cell("%%time\nbm_total = sum(range(100))")["effects"] == []


def test_a_display_handle_kept_by_the_cell_is_marked_as_drawing_entropy(agent):
    # IPython names the display with os.urandom: its frames counted as the kernel's own, and
    # the replay re-made the handle with another id (reported mismatched)
    rec = agent.cell("from IPython.display import display as dh_display\n"
                     "dh_h = dh_display('x', display_id=True)")
    assert any(e.startswith("reads OS entropy") for e in rec["effects"]), rec["effects"]
    assert agent.cell("dh_display('y')")["effects"] == []


def test_a_library_timing_what_the_cell_asked_for_makes_its_results_vary(agent):
    # cross_validate's fit and score times are part of its result: re-run, the cell makes
    # another value. Safe to re-run (not an effect), but what it made is shipped when it can be
    agent.ok("from sklearn.linear_model import LogisticRegression as CkLR\n"
             "from sklearn.model_selection import cross_validate as ck_cv")
    rec = agent.cell("ck_res = ck_cv(CkLR(), [[0], [1]] * 6, [0, 1] * 6, cv=2)")
    assert rec["effects"] == []
    assert rec["varies"] == [
        "reads the clock (time.time, called from sklearn.model_selection._validation)"]
    # a notebook function in between is still the cell's doing
    agent.ok("def ck_run(m):\n    return ck_cv(m, [[0], [1]] * 6, [0, 1] * 6, cv=2)")
    assert agent.cell("ck_res2 = ck_run(CkLR())")["varies"] != []


def test_clock_reads_of_the_kernel_logs_plots_and_imports_do_not_vary(agent):
    for code in ("print('ck_print')", "%%time\nck_t = sum(range(10))",
                 "import logging\nlogging.getLogger('ck').warning('ck_log')",
                 "import threading\nck_ev = threading.Event()\nck_ev.wait(0.001)",
                 "import queue\nck_q = queue.Queue()\ntry:\n    ck_q.get(timeout=0.001)\n"
                 "except queue.Empty:\n    pass",
                 "import sklearn.ensemble, sklearn.model_selection",
                 "from sklearn.linear_model import LogisticRegression\n"
                 "ck_m = LogisticRegression().fit([[0], [1]] * 3, [0, 1] * 3)"):
        rec = agent.cell(code)
        assert rec["varies"] == [] and rec["effects"] == [], (code, rec["varies"], rec["effects"])


def test_clock_functions_stay_the_time_modules_own(agent):
    # the probe is installed as time.perf_counter: a name bound to it is that attribute
    rec = agent.cell("import time\nfrom time import perf_counter as ck_pc\nck_same = ck_pc is time.perf_counter")
    assert agent.value("[ck_same, ck_pc.__module__, ck_pc.__name__, type(ck_pc()) is float]") == [
        True, "time", "perf_counter", True]
    assert rec["varies"] == []


def test_cells_that_call_id_are_marked_but_stay_re_runnable(agent):
    # what they compute may hold this process's addresses (`{id(o): o for o in objs}`): a copy
    # of it loaded in another process verified while its keys named nothing there
    agent.ok("class IdNode:\n    pass\nid_objs = [IdNode() for _ in range(3)]\n"
             "def id_key(o):\n    return id(o)")
    direct = agent.cell("id_index = {id(o): o for o in id_objs}")
    through = agent.cell("id_keys = sorted(map(id_key, id_objs))")
    assert direct["uses_id"] and through["uses_id"]
    assert direct["effects"] == [] and through["effects"] == []  # re-running them is what helps


def test_an_id_attribute_or_a_variable_named_id_is_not_a_call_of_id(agent):
    agent.ok("import types\nid_row = types.SimpleNamespace(id=7)")
    assert not agent.cell("id_of_row = id_row.id")["uses_id"]
    assert not agent.cell("id_sum = 0\nfor id in range(3):\n    id_sum += id")["uses_id"]


@pytest.fixture
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="fx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
