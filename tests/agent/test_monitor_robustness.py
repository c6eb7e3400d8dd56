"""The monitor never breaks the user's session: failures, silent runs, hostile objects, reloads."""

from __future__ import annotations

MON = "__import__('kernel_agent.extension').extension.get_monitor()"


def test_failing_cell_is_recorded_as_failed_with_its_error(agent):
    rec = agent.cell("fl_x = 1\nraise ValueError('boom')", must_succeed=False)
    assert rec["failed"] is True
    assert rec["error"] == "ValueError: boom"
    assert "fl_x" in rec["writes"]  # state changed before the failure


def test_monitoring_continues_after_a_failing_cell(agent):
    agent.run("1/0")
    rec = agent.cell("fl_after = 2")
    assert rec["failed"] is False and rec["writes"] == ["fl_after"]


def test_syntax_error_cell_is_recorded_as_failed_before_execution(agent):
    rec = agent.cell("fl_bad = = 1", must_succeed=False)
    assert rec["failed"] is True
    assert rec["error"].startswith("SyntaxError")
    assert rec["writes"] == [] and rec["reads"] == []


def test_silent_execution_is_not_recorded_and_prints_nothing(agent):
    n = len(agent.history()["cells"])
    res = agent.run("sl_x = 5", silent=True)
    assert res.ok and res.stdout == "" and res.stderr == ""
    assert len(agent.history()["cells"]) == n
    assert agent.value("sl_x") == 5


def test_empty_cell_is_not_recorded(agent):
    n = len(agent.history()["cells"])
    agent.ok("   ")
    assert len(agent.history()["cells"]) == n


def test_recording_prints_nothing(agent):
    rec = agent.cell("pn_x = [1, 2]\npn_y = pn_x")
    assert rec["_stdout"] == "" and rec["_stderr"] == ""


def test_agent_warnings_go_to_the_kernel_log_not_into_the_cell_output(agent):
    # (a background round's failure is logged from a thread while some cell runs)
    res = agent.run("import logging, threading\n"
                    "t = threading.Thread(target=logging.getLogger('kernel_agent').warning, "
                    "args=('kernel_agent: agent noise',))\nt.start(); t.join()\n"
                    "logging.getLogger('kernel_agent').warning('kernel_agent: more noise')")
    assert res.ok and "noise" not in res.stderr and "noise" not in res.stdout


def test_objects_whose_dunders_raise_never_crash_the_hook(agent):
    agent.ok(
        "class Hostile:\n"
        "    def __eq__(self, o): raise RuntimeError('eq')\n"
        "    def __hash__(self): raise RuntimeError('hash')\n"
        "    def __getattr__(self, n): raise RuntimeError('getattr ' + n)\n"
        "    def __getattribute__(self, n):\n"
        "        if n in ('__class__', '__dict__'):\n"
        "            return object.__getattribute__(self, n)\n"
        "        raise RuntimeError('getattribute ' + n)\n"
        "    def __len__(self): raise RuntimeError('len')\n"
        "    def __repr__(self): raise RuntimeError('repr')\n"
        "    def __reduce__(self): raise RuntimeError('reduce')\n"
        "class HostileList(list):\n"
        "    def __len__(self): raise RuntimeError('len')\n"
        "    def __iter__(self): raise RuntimeError('iter')\n"
        "class HostileDict(dict):\n"
        "    def __getattr__(self, n): raise RuntimeError(n)\n"
        "    def values(self): raise RuntimeError('values')\n"
    )
    rec = agent.cell("ho_h = Hostile()\nho_l = HostileList([1, ho_h])\nho_d = HostileDict(a=ho_h)")
    assert rec["_stdout"] == "" and rec["_stderr"] == ""
    assert {"ho_h", "ho_l", "ho_d"} <= set(rec["writes"])
    rec = agent.cell("ho_r = [ho_h, ho_l, ho_d]")
    assert rec["_stdout"] == "" and rec["_stderr"] == ""
    assert {"ho_h", "ho_l", "ho_d"} <= set(rec["reads"])
    assert agent.cell("ho_ok = 1")["writes"] == ["ho_ok"]


def test_exception_raising_on_user_values_is_not_a_cell_failure(agent):
    agent.ok("class BadLen:\n    def __len__(self):\n        raise MemoryError('no')\nbl = BadLen()")
    rec = agent.cell("bl2 = [bl]")
    assert rec["failed"] is False


def test_loading_the_extension_twice_keeps_one_monitor(agent):
    agent.ok("%load_ext kernel_agent")
    agent.ok("import kernel_agent\nkernel_agent.load_ipython_extension(get_ipython())")
    n = len(agent.history()["cells"])
    agent.ok("twice_x = 1")
    assert len(agent.history()["cells"]) == n + 1
    assert agent.value(
        "sum(1 for cb in get_ipython().events.callbacks['post_run_cell'] "
        "if getattr(cb, '__qualname__', '') == 'Monitor.post_run_cell')") == 1


def test_nothing_is_recorded_while_paused(agent):
    agent.ok(f"_pause = {MON}.paused()\n_pause.__enter__()")
    n = len(agent.history()["cells"])
    agent.ok("pz_x = 1")
    agent.ok("_pause.__exit__(None, None, None)")
    assert len(agent.history()["cells"]) == n
    assert agent.cell("pz_y = 2")["writes"] == ["pz_y"]


def test_nested_run_cell_is_part_of_the_outer_cell(agent):
    n = len(agent.history()["cells"])
    agent.ok("get_ipython().run_cell('nest_x = 1')\nnest_y = 2")
    cells = agent.history()["cells"]
    assert len(cells) == n + 1
    assert {"nest_x", "nest_y"} <= set(cells[-1]["writes"])


def test_records_carry_code_runtime_and_execution_count(agent):
    rec = agent.cell("import time\ntime.sleep(0.05)\nrt_x = 1")
    assert rec["code"] == "import time\ntime.sleep(0.05)\nrt_x = 1"
    assert 0.04 < rec["runtime_s"] < 5
    assert rec["execution_count"] == agent.value("get_ipython().execution_count") - 1


def test_adopt_takes_over_a_history_and_keeps_recording(agent):
    agent.ok("ad_x = [1]")
    agent.ok(
        "from kernel_agent.graph import HistoryGraph as _HG\n"
        f"_mon = {MON}\n"
        "_mon.adopt(_HG.from_dict(_mon.graph.to_dict()))"
    )
    n = len(agent.history()["cells"])
    rec = agent.cell("ad_x.append(2)")
    assert rec["index"] == n
    assert rec["mutated"] == ["ad_x"]


def test_adopt_drops_names_missing_from_the_namespace(agent):
    agent.ok("ad_gone = 1")
    setup = (
        "from kernel_agent.graph import HistoryGraph as _HG\n"
        f"_mon = {MON}\n_g = _HG.from_dict(_mon.graph.to_dict())\ndel ad_gone"
    )
    assert agent.run(setup, silent=True).ok  # silent: the deletion itself is not recorded
    assert "ad_gone" in agent.history()["active"]
    assert agent.run("_mon.adopt(_g)", silent=True).ok
    assert "ad_gone" not in agent.history()["active"]


def test_unloading_stops_recording(make_kernel):
    k = make_kernel()
    k.ok("%unload_ext kernel_agent")
    k.ok("ul_x = 1")
    assert k.value("__import__('kernel_agent.extension').extension.history()") is None


def test_variables_created_before_loading_are_flagged_when_read(make_kernel):
    k = make_kernel(load_agent=False)
    k.ok("pre_x = [1, 2]")
    k.ok("%load_ext kernel_agent")
    k.ok("pre_y = len(pre_x)")
    h = k.value("__import__('kernel_agent.extension').extension.history()")
    rec = h["cells"][-1]
    assert rec["reads"] == ["pre_x"]
    assert any("predates monitoring" in e for e in rec["effects"])
    assert "pre_x" not in h["active"]


def test_an_interrupt_arriving_while_the_monitor_records_a_cell_loses_nothing(agent):
    # the user interrupts what looks like a running cell while post_run_cell hashes what it
    # changed: the KeyboardInterrupt was raised in the hook, IPython printed "Error in
    # callback", and the cell was never recorded (its new names then "predated monitoring")
    agent.ok("from kernel_agent.extension import get_monitor as _ir_get\nimport signal as _ir_sig\n"
             "_ir_m = _ir_get(get_ipython())\n_ir_orig = _ir_m.tracker.update\n"
             "def _ir_update(*a, **kw):\n    _ir_m.tracker.update = _ir_orig\n"
             "    _ir_sig.raise_signal(_ir_sig.SIGINT)\n    return _ir_orig(*a, **kw)\n"
             "ir_x = [1]")
    agent.ok("_ir_arm = lambda: setattr(_ir_m.tracker, 'update', _ir_update)")
    before = len(agent.history()["cells"])
    res = agent.run("_ir_arm()\nir_x.append(2)\nir_y = 5")
    assert res.ok and res.error is None and "KeyboardInterrupt" not in res.stdout + res.stderr
    cells = agent.history()["cells"]
    assert len(cells) == before + 1
    assert cells[-1]["writes"] == ["ir_y"] and "ir_x" in cells[-1]["mutated"]
    assert agent.value("type(_ir_m.tracker.update).__name__") == "method"  # it did run
