"""In-place mutation through calls, and aliasing (co-variables) forming and splitting."""

from __future__ import annotations


def test_mutation_of_an_argument_inside_a_called_function_is_recorded(agent):
    agent.ok("class Counter:\n    def __init__(self):\n        self.x = 0\n"
             "def bump(c):\n    c.x += 1\nm_cnt = Counter()")
    rec = agent.cell("bump(m_cnt)")
    assert "m_cnt" in rec["mutated"]
    assert agent.value("m_cnt.x") == 1


def test_dict_setdefault_is_a_mutation(agent):
    agent.ok("m_d = {}")
    rec = agent.cell("m_d.setdefault('k', []).append(1)")
    assert rec["mutated"] == ["m_d"]


def test_a_read_without_change_is_not_a_mutation(agent):
    agent.ok("m_ro = {'a': 1}")
    rec = agent.cell("m_ro_v = m_ro['a']")
    assert rec["mutated"] == []
    assert rec["writes"] == ["m_ro_v"]


def test_append_through_an_alias_mutates_both_names(agent):
    agent.ok("m_a = [1]\nm_b = m_a")
    rec = agent.cell("m_b.append(2)")
    assert set(rec["mutated"]) == {"m_a", "m_b"}
    assert agent.covariable("m_a") == ["m_a", "m_b"]


def test_numpy_in_place_operation_is_a_mutation(agent):
    agent.ok("import numpy as np\nm_arr = np.zeros(1000)")
    rec = agent.cell("m_arr += 1")
    assert rec["mutated"] == ["m_arr"] and rec["writes"] == []
    rec = agent.cell("np.add(m_arr, 1, out=m_arr)")
    assert rec["mutated"] == ["m_arr"]


def test_pandas_inplace_drop_is_a_mutation(agent):
    agent.ok("import pandas as pd\nm_df = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})")
    rec = agent.cell("m_df.drop(columns=['b'], inplace=True)")
    assert rec["mutated"] == ["m_df"]


def test_sklearn_fit_mutates_the_model(agent):
    agent.ok("import numpy as np\nfrom sklearn.linear_model import LinearRegression\n"
             "m_X = np.arange(20.0).reshape(10, 2)\nm_y = m_X.sum(axis=1)\nm_model = LinearRegression()")
    rec = agent.cell("m_model.fit(m_X, m_y)")
    assert "m_model" in rec["mutated"]
    assert "m_X" not in rec["mutated"] and "m_y" not in rec["mutated"]
    assert {"m_X", "m_y", "m_model"} <= set(rec["reads"])


def test_mutated_co_variable_reads_its_previous_snapshot(agent):
    agent.ok("m_prev = [1]")
    old = agent.history()["active"]["m_prev"]
    rec = agent.cell("m_prev.append(2)")
    assert old in rec["input_snapshots"]
    snap = agent.history()["snapshots"][agent.history()["active"]["m_prev"]]
    assert snap["producers"] == [rec["index"]]


def test_plain_alias_makes_one_co_variable(agent):
    agent.ok("al_a = [1, 2]")
    agent.ok("al_b = al_a")
    assert agent.covariable("al_a") == ["al_a", "al_b"]
    assert agent.covariable("al_b") == ["al_a", "al_b"]


def test_container_holding_the_same_object_twice_is_one_co_variable(agent):
    agent.ok("pr_a = {'k': 1}")
    agent.ok("pr_pair = [pr_a, pr_a]")
    assert agent.covariable("pr_a") == ["pr_a", "pr_pair"]


def test_numpy_view_shares_a_co_variable_with_its_base(agent):
    agent.ok("import numpy as np\nvw_base = np.arange(100.0)")
    agent.ok("vw_view = vw_base[10:20]")
    assert agent.covariable("vw_base") == ["vw_base", "vw_view"]


def test_attribute_reference_makes_one_co_variable(agent):
    agent.ok("class Box:\n    pass\nbx_box = Box()\nbx_a = [1]")
    rec = agent.cell("bx_box.v = bx_a")
    assert "bx_box" in rec["mutated"]
    assert {"bx_a", "bx_box"} <= set(agent.covariable("bx_a"))


def test_rebinding_one_alias_splits_the_co_variable_and_keeps_the_producer(agent):
    rec_make = agent.cell("sp_a = [1]\nsp_b = sp_a")
    assert agent.covariable("sp_a") == ["sp_a", "sp_b"]
    rec = agent.cell("sp_b = 1")
    h = agent.history()
    assert agent.covariable("sp_a") == ["sp_a"]
    assert agent.covariable("sp_b") == ["sp_b"]
    split = h["snapshots"][h["active"]["sp_a"]]
    assert split["producers"] == [rec_make["index"]]  # inherited: cell `sp_b = 1` did not make it
    assert split["id"] in rec["output_snapshots"]


def test_deleting_one_alias_splits_the_co_variable(agent):
    agent.ok("dl_a = [1]\ndl_b = dl_a")
    rec = agent.cell("del dl_b")
    assert agent.covariable("dl_a") == ["dl_a"]
    assert rec["deletes"] == ["dl_b"]


def test_breaking_a_link_by_mutation_splits_the_co_variable(agent):
    agent.ok("lk_x = [1]\nlk_holder = [lk_x]")
    assert agent.covariable("lk_x") == ["lk_holder", "lk_x"]
    rec = agent.cell("lk_holder.clear()")
    assert "lk_holder" in rec["mutated"]
    assert agent.covariable("lk_x") == ["lk_x"]
    assert agent.covariable("lk_holder") == ["lk_holder"]


def test_function_that_rebinds_a_global_to_an_alias_links_them(agent):
    agent.ok("fa_src = [1]\nfa_dst = None\ndef link_fa():\n    global fa_dst\n    fa_dst = fa_src")
    rec = agent.cell("link_fa()")
    assert rec["writes"] == ["fa_dst"]
    assert agent.covariable("fa_dst") == ["fa_dst", "fa_src"]


def test_requirements_of_a_mutated_variable_include_its_creation(agent):
    rec_make = agent.cell("rq_list = [1]")
    rec_mut = agent.cell("rq_list.append(2)")
    reqs = agent.value(
        "sorted(__import__('kernel_agent.extension').extension.get_monitor().graph.requirements("
        "__import__('kernel_agent.extension').extension.get_monitor().graph.active['rq_list']))")
    assert reqs == [rec_make["index"], rec_mut["index"]]


def test_a_log_call_mutates_what_a_notebook_handler_appends_to(agent):
    # `lg_log.info` reads no variable of the handler: the handler's emit() runs inside logging
    agent.ok("import logging\nlg_records = []\n"
             "class LgHandler(logging.Handler):\n    def emit(self, r):\n        lg_records.append(r.getMessage())\n"
             "lg_log = logging.getLogger('nb.lg')\nlg_log.addHandler(LgHandler())\nlg_log.setLevel(logging.INFO)")
    assert "lg_records" in agent.cell("lg_log.info('one')")["mutated"]
    # propagated to the root logger's handlers, or logged through the module
    agent.ok("lg_root = LgHandler()\nlogging.getLogger().addHandler(lg_root)")
    try:
        assert "lg_records" in agent.cell("logging.warning('two')")["mutated"]
        assert "lg_records" in agent.cell("logging.getLogger('nb.other').warning('three')")["mutated"]
    finally:
        agent.ok("logging.getLogger().removeHandler(lg_root)")


def test_a_change_through_a_name_imported_from_a_notebook_module_mutates_the_module(agent):
    """The cell reaches `m_util.CACHE` through the import system, not through the name
    `m_util`: the module's co-variable is walked after it all the same."""
    agent.ok("open('m_util.py', 'w').write('CACHE = {}\\n')")
    agent.ok("import m_util")
    rec = agent.cell("from m_util import CACHE as m_cache\nm_cache['k'] = 1")
    assert "m_util" in rec["mutated"] and rec["writes"] == ["m_cache"]
    rec = agent.cell("from m_util import CACHE as m_cache2")  # an alias only: no change
    assert rec["mutated"] == []


def test_a_change_through_a_module_the_notebook_registered_mutates_it(agent):
    agent.ok("import sys, types\nm_pkg = types.ModuleType('m_regpkg')\nm_pkg.data = {'k': 1}\n"
             "sys.modules['m_regpkg'] = m_pkg")
    rec = agent.cell("from m_regpkg import data as m_data\nm_data['k'] = 2")
    assert "m_pkg" in rec["mutated"]


def test_a_change_through_the_output_history_mutates_the_displayed_variable(agent):
    # `_` is IPython's, not a user name: the cell touched no user name, so its change
    # detection looked at nothing and the append was found only at the next checkpoint
    agent.ok("oh_lst = [1, 2]\noh_other = {'k': 1}")
    agent.ok("oh_lst")
    rec = agent.cell("_.append(3)")
    assert "oh_lst" in rec["mutated"] and "oh_other" not in rec["mutated"]
    agent.ok("oh_lst")
    rec = agent.cell("Out[len(Out) and max(Out)].append(4)")
    assert "oh_lst" in rec["mutated"] and "oh_other" not in rec["mutated"]


def test_calls_of_functions_a_run_script_defined_mutate_the_scripts_namespace(agent, tmp_path):
    # `%run` (without -i) gives the script a namespace of its own, copied into the notebook's
    # after: its functions' globals are that namespace, and `counter` is in both
    script = tmp_path / "rn_script.py"
    script.write_text("rn_K = 1\nrn_counter = [0]\n"
                      "def rn_set(v):\n    global rn_K\n    rn_K = v\n"
                      "def rn_inc():\n    rn_counter.append(1)\n")
    agent.ok(f"%run {script}")
    rec = agent.cell("rn_set(5)")
    assert "rn_set" in rec["mutated"]
    rec = agent.cell("rn_inc()")
    assert {"rn_inc", "rn_counter"} <= set(rec["mutated"])


def test_registering_a_virtual_subclass_mutates_the_abstract_class(agent):
    """The registry of an abstract class is in C, not in its dict: ``Shape.register(Square)``
    changed nothing the walk saw, so a replay did not re-run it and ``isinstance(sq, Shape)``
    was False after a restore that verified."""
    agent.ok("import abc\nclass AbcShape(abc.ABC):\n    @abc.abstractmethod\n"
             "    def area(self): ...\nclass AbcSquare:\n    def area(self): return 4")
    assert agent.cell("AbcShape.register(AbcSquare)")["mutated"] == ["AbcShape"]
    assert agent.cell("abc_n = isinstance(AbcSquare(), AbcShape)")["mutated"] == []


def test_a_change_through_a_holder_made_again_mutates_the_value(agent):
    """Running `m_a_h = [m_v]; m_a_h[0]['k'].append(..)` twice: the second time the holder is a
    new list, walked before m_v (sorted first), so m_v's own walk only linked to it and did
    not change; the change to m_v was missed, and its history said it still held [1]."""
    cell = "m_a_h = [m_v]\nm_a_h[0]['k'].append(len(m_v['k']))"
    agent.ok("m_v = {'k': [1]}")
    agent.cell(cell)
    rec = agent.cell(cell)
    assert rec["mutated"] == ["m_v"] and agent.value("m_v") == {"k": [1, 1, 2]}


def test_appending_to_a_holder_does_not_mutate_what_it_holds(agent):
    """A co-variable was mutated as a whole: the cell that appended to the holder became a
    requirement of the value it holds, which then could not be recomputed without it."""
    agent.ok("m_held = {'k': [1]}\nm_a_holder = [m_held]")
    rec = agent.cell("m_a_holder.append(5)")
    assert rec["mutated"] == ["m_a_holder"]
    rec = agent.cell("del m_a_holder")
    assert rec["mutated"] == [] and rec["deletes"] == ["m_a_holder"]


def test_a_write_through_a_ctypes_view_mutates_the_bytearray_under_it(agent):
    # its reduce value (a copy of the bytes) hides the bytearray it holds: `ba` was not in its
    # co-variable, so the write was not seen as a change of `ba`
    agent.ok("import ctypes\nm_ct_ba = bytearray(8)\nm_ct = (ctypes.c_int * 2).from_buffer(m_ct_ba)")
    rec = agent.cell("m_ct[0] = 7")
    assert set(rec["mutated"]) == {"m_ct", "m_ct_ba"}
