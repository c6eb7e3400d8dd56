"""Writes and deletes: every way a cell can create, rebind or delete a user variable."""

from __future__ import annotations


def test_assignment_is_a_write(agent):
    assert agent.cell("w_assign = [1]")["writes"] == ["w_assign"]


def test_augmented_assignment_of_an_immutable_is_a_write(agent):
    agent.ok("w_aug = 1")
    rec = agent.cell("w_aug += 1")
    assert rec["writes"] == ["w_aug"]
    assert "w_aug" in rec["reads"]


def test_augmented_assignment_of_a_list_is_a_mutation(agent):
    agent.ok("w_auglist = [1]")
    rec = agent.cell("w_auglist += [2]")
    assert rec["writes"] == []
    assert rec["mutated"] == ["w_auglist"]


def test_del_is_a_delete_and_leaves_active(agent):
    agent.ok("w_del = 1")
    rec = agent.cell("del w_del")
    assert rec["deletes"] == ["w_del"]
    h = agent.history()
    assert "w_del" not in h["active"]
    snap = h["snapshots"][rec["output_snapshots"][-1]]
    assert snap["deleted"] and snap["names"] == ["w_del"]


def test_import_is_a_write(agent):
    rec = agent.cell("import json as w_json\nfrom os import path as w_path")
    assert {"w_json", "w_path"} <= set(rec["writes"])


def test_star_import_writes_every_imported_name(agent):
    rec = agent.cell("from math import *")
    assert {"pi", "sqrt", "floor"} <= set(rec["writes"])


def test_def_and_class_are_writes(agent):
    rec = agent.cell("def w_fn():\n    pass\nclass WCls:\n    pass")
    assert {"w_fn", "WCls"} <= set(rec["writes"])


def test_for_and_with_targets_are_writes(agent):
    rec = agent.cell("import contextlib\nfor w_i in range(3):\n    pass\n"
                     "with contextlib.nullcontext(5) as w_ctx:\n    pass")
    assert {"w_i", "w_ctx", "contextlib"} <= set(rec["writes"])


def test_walrus_target_is_a_write(agent):
    rec = agent.cell("if (w_walrus := 10) > 5:\n    pass")
    assert "w_walrus" in rec["writes"]


def test_walrus_inside_a_comprehension_is_a_write(agent):
    rec = agent.cell("w_vals = [w_last := i for i in range(3)]")
    assert {"w_vals", "w_last"} <= set(rec["writes"])


def test_globals_subscript_assignment_is_a_write(agent):
    rec = agent.cell("globals()['w_' + 'gsub'] = 3")
    assert "w_gsub" in rec["writes"]


def test_exec_of_a_computed_string_write_is_a_write(agent):
    rec = agent.cell("src_w = 'w_exec = 1'\nexec(src_w)")
    assert "w_exec" in rec["writes"]


def test_global_statement_in_a_called_function_is_a_write(agent):
    agent.ok("w_glob = 0\ndef set_glob():\n    global w_glob\n    w_glob = 42")
    rec = agent.cell("set_glob()")
    assert rec["writes"] == ["w_glob"]


def test_global_del_in_a_called_function_is_a_delete(agent):
    agent.ok("w_gdel = 0\ndef del_glob():\n    global w_gdel\n    del w_gdel")
    rec = agent.cell("del_glob()")
    assert rec["deletes"] == ["w_gdel"]


def test_redefinition_makes_a_new_snapshot(agent):
    agent.ok("w_redef = 1")
    first = agent.history()["active"]["w_redef"]
    rec = agent.cell("w_redef = 2")
    assert rec["writes"] == ["w_redef"]
    assert agent.history()["active"]["w_redef"] not in (first,)


def test_a_store_that_did_not_happen_is_not_a_write(agent):
    agent.ok("w_maybe = 1")
    rec = agent.cell("if False:\n    w_maybe = 2")
    assert rec["writes"] == []
    assert rec["output_snapshots"] == []


def test_rebinding_to_the_same_object_is_not_a_write(agent):
    agent.ok("w_same = [1]")
    rec = agent.cell("w_same = w_same")
    assert rec["writes"] == [] and rec["mutated"] == []


def test_private_and_ipython_names_are_not_recorded(agent):
    rec = agent.cell("_w_private = 1\n__w_dunder = 2\n3")
    assert rec["writes"] == []
    assert "_w_private" not in agent.history()["active"]
    names = agent.value("__import__('kernel_agent.extension').extension.get_monitor().user_names()")
    assert not {"In", "Out", "exit", "quit", "get_ipython", "_", "_w_private"} & set(names)


def test_each_write_gets_a_snapshot_produced_by_the_cell(agent):
    rec = agent.cell("w_p1 = 1\nw_p2 = 'x'")
    h = agent.history()
    for n in ("w_p1", "w_p2"):
        snap = h["snapshots"][h["active"][n]]
        assert snap["producers"] == [rec["index"]]
        assert snap["id"] in rec["output_snapshots"]


def test_an_import_cell_that_also_sets_process_state_is_marked_so(agent):
    assert not agent.cell("import fractions, pandas as ctx_pd")["process_state"]
    rec = agent.cell("import os\nos.environ['ELASTIC_TEST_CTX'] = '1'\nctx_dir = '/data'")
    assert rec["process_state"] and not rec["context"] and rec["writes"] == ["ctx_dir", "os"]
    assert not agent.cell("ctx_list = [1]\nctx_list.append(os.environ['ELASTIC_TEST_CTX'])")["process_state"]


def test_a_constant_cell_ending_an_object_whose_finalizer_sets_the_environment_changed_it(agent):
    """A cell of `name = constant` lines calls nothing, so the monitor does not read the
    process state after it; but rebinding a name ends its old value, and a `__del__` of the
    notebook's runs then: that cell set the variable, and must say so."""
    agent.ok("import os\nclass EnvOnDel:\n    def __del__(self):\n"
             "        os.environ['ELASTIC_TEST_FIN'] = '1'")
    agent.ok("fin_env = EnvOnDel()")
    rec = agent.cell("fin_env = 1")
    assert rec["process_changed"], rec


def test_every_way_of_moving_the_working_directory_is_process_state(agent, tmp_path):
    # the monitor reads the working directory again only after an event that can move it
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    home = agent.k.value("__import__('os').getcwd()")
    try:
        moves = {
            "os.chdir": f"import os\nos.chdir({str(tmp_path / 'a')!r})",
            "%cd": f"%cd {tmp_path / 'c'}",
            "os.fchdir": f"fd_cwd = os.open({str(tmp_path / 'a' / 'b')!r}, os.O_RDONLY)\n"
                         "os.fchdir(fd_cwd)\nos.close(fd_cwd)",
            # (the directory above the working one renamed: getcwd() reads otherwise)
            "rename": f"os.rename({str(tmp_path / 'a')!r}, {str(tmp_path / 'moved')!r})",
        }
        for how, code in moves.items():
            rec = agent.cell(code)
            # (a rename is a side effect: that cell is never re-run, whatever it changed)
            assert rec["process_state"] if how != "rename" else rec["effects"], (how, rec)
            where = agent.k.value("__import__('kernel_agent.effects').effects.getcwd()")
            assert where == agent.k.value("__import__('os').getcwd()"), how
            assert not agent.cell("cwd_probe = 1")["process_state"], how
        assert where == str(tmp_path / "moved" / "b")
    finally:
        agent.k.ok(f"import os; os.chdir({home!r})")



def test_a_name_the_shell_hides_after_many_cells_stops_being_the_users_and_comes_back(agent):
    """The hidden names are read incrementally (IPython appends `_iN` at every execution): a
    name hidden later, bound to the same object, is no longer recorded as the user's, and one
    no longer hidden is again."""
    for i in range(5):
        agent.cell(f"hide_probe_{i} = {i}")
    agent.cell("hidden_later = [1]")
    agent.cell("get_ipython().user_ns_hidden['hidden_later'] = hidden_later")
    rec = agent.cell("hidden_later.append(2)")
    assert "hidden_later" not in rec["reads"] and "hidden_later" not in rec["mutated"], rec
    agent.cell("del get_ipython().user_ns_hidden['hidden_later']")
    rec = agent.cell("hidden_later.append(3)")
    assert "hidden_later" in rec["mutated"], rec
