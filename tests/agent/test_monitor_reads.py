"""Reads: every way a cell can read a user variable ends up in the cell's `reads`.

A missed read is a silent wrong restore (ElasticNotebook's `r = obj.m()` case, prior-art §4), so
each form is checked on a real kernel. Over-approximation is allowed, precision is checked for
plain cells only.
"""

from __future__ import annotations


def test_global_read_inside_a_called_method_is_a_read(agent):
    agent.ok("g_m = 5\nclass WithMethod:\n    def m(self):\n        return g_m * 2")
    agent.ok("obj_m = WithMethod()")
    rec = agent.cell("r_m = obj_m.m()")
    assert {"g_m", "obj_m"} <= set(rec["reads"])


def test_global_read_inside_a_called_function_is_a_read(agent):
    agent.ok("g_f = 1\ndef uses_g_f():\n    return g_f + 1")
    rec = agent.cell("r_f = uses_g_f()")
    assert {"g_f", "uses_g_f"} <= set(rec["reads"])


def test_reads_follow_call_chains_through_several_functions(agent):
    agent.ok("g_deep = 3\ndef inner_deep():\n    return g_deep\ndef outer_deep():\n    return inner_deep()")
    rec = agent.cell("r_deep = outer_deep()")
    assert {"outer_deep", "inner_deep", "g_deep"} <= set(rec["reads"])


def test_global_read_inside_a_property_is_a_read(agent):
    agent.ok("g_p = 2\nclass WithProp:\n    @property\n    def p(self):\n        return g_p")
    agent.ok("obj_p = WithProp()")
    rec = agent.cell("r_p = obj_p.p")
    assert "g_p" in rec["reads"]


def test_global_read_inside_an_inherited_static_and_class_method_is_a_read(agent):
    agent.ok(
        "g_s = 1\ng_c = 2\n"
        "class BaseSC:\n    @staticmethod\n    def s():\n        return g_s\n"
        "    @classmethod\n    def c(cls):\n        return g_c\n"
        "class ChildSC(BaseSC):\n    pass"
    )
    rec = agent.cell("r_sc = ChildSC.s() + ChildSC.c()")
    assert {"g_s", "g_c"} <= set(rec["reads"])


def test_global_read_through_a_bound_method_variable_is_a_read(agent):
    agent.ok("g_bm = 4\nclass BM:\n    def m(self):\n        return g_bm\nbound_bm = BM().m")
    rec = agent.cell("r_bm = bound_bm()")
    assert "g_bm" in rec["reads"]


def test_global_read_through_functools_partial_is_a_read(agent):
    agent.ok("import functools\ng_part = 7\ndef add_part(a):\n    return a + g_part\n"
             "part = functools.partial(add_part, 1)")
    rec = agent.cell("r_part = part()")
    assert "g_part" in rec["reads"]


def test_global_read_through_a_decorated_function_is_a_read(agent):
    agent.ok(
        "import functools\ng_dec = 1\n"
        "def logged(f):\n    @functools.wraps(f)\n    def wrapper(*a):\n        return f(*a)\n    return wrapper\n"
        "@logged\ndef decorated():\n    return g_dec"
    )
    rec = agent.cell("r_dec = decorated()")
    assert "g_dec" in rec["reads"]


def test_global_read_through_an_lru_cache_wrapper_is_a_read(agent):
    agent.ok("import functools\ng_lru = 1\n@functools.lru_cache\ndef cached():\n    return g_lru")
    rec = agent.cell("r_lru = cached()")
    assert "g_lru" in rec["reads"]


def test_global_read_through_a_closure_is_a_read(agent):
    agent.ok("g_clo = 1\ndef target_clo():\n    return g_clo\n"
             "def make_clo():\n    f = target_clo\n    return lambda: f()\nclo = make_clo()")
    rec = agent.cell("r_clo = clo()")
    assert "g_clo" in rec["reads"]


def test_global_read_through_a_default_argument_is_a_read(agent):
    agent.ok("g_dflt = 1\ndef helper_dflt():\n    return g_dflt\n"
             "def with_dflt(cb=helper_dflt):\n    return cb()")
    rec = agent.cell("r_dflt = with_dflt()")
    assert "g_dflt" in rec["reads"]


def test_global_read_through_functions_held_in_containers_is_a_read(agent):
    agent.ok("g_box = 1\ndef boxed():\n    return g_box\nfuncs_box = {'a': [boxed]}")
    rec = agent.cell("r_box = funcs_box['a'][0]()")
    assert "g_box" in rec["reads"]


def test_global_read_through_a_callable_stored_on_an_instance_is_a_read(agent):
    agent.ok("g_cb = 1\ndef cb_fn():\n    return g_cb\nclass Holder:\n    pass\n"
             "holder = Holder()\nholder.cb = cb_fn")
    rec = agent.cell("r_cb = holder.cb()")
    assert "g_cb" in rec["reads"]


def test_global_read_through_a_notebook_function_inside_a_library_object_is_a_read(agent):
    agent.ok("from sklearn.preprocessing import FunctionTransformer\ng_ft = 2\n"
             "def scale_ft(X):\n    return X * g_ft\nft = FunctionTransformer(scale_ft)")
    rec = agent.cell("r_ft = ft.fit_transform([[1.0]])")
    assert "g_ft" in rec["reads"]


def test_comprehension_reads_are_reads(agent):
    agent.ok("k_comp = 3\nsrc_comp = [1, 2]")
    rec = agent.cell("r_comp = [x * k_comp for x in src_comp]")
    assert {"k_comp", "src_comp"} <= set(rec["reads"])


def test_lambda_and_generator_bodies_are_reads(agent):
    agent.ok("k_lam = 2\nk_gen = 3")
    rec = agent.cell("f_lam = lambda: k_lam\nr_gen = sum(k_gen for _ in range(2))")
    assert {"k_lam", "k_gen"} <= set(rec["reads"])


def test_decorator_expressions_are_reads(agent):
    agent.ok("def deco_expr(f):\n    return f")
    rec = agent.cell("@deco_expr\ndef decorated_expr():\n    pass")
    assert "deco_expr" in rec["reads"]


def test_default_argument_expressions_are_reads(agent):
    agent.ok("dflt_val = 10")
    rec = agent.cell("def f_dv(x=dflt_val):\n    return x")
    assert "dflt_val" in rec["reads"]


def test_class_body_reads_are_reads(agent):
    agent.ok("class_attr_src = 5")
    rec = agent.cell("class WithAttr:\n    a = class_attr_src + 1")
    assert "class_attr_src" in rec["reads"]


def test_literal_eval_string_names_are_reads(agent):
    agent.ok("ev_a = 1\nev_b = 2")
    rec = agent.cell("r_ev = eval('ev_a + 1')")
    assert "ev_a" in rec["reads"]
    assert "ev_b" not in rec["reads"]


def test_literal_exec_string_names_are_reads(agent):
    agent.ok("ex_a = 1")
    rec = agent.cell("exec('r_ex = ex_a * 2')")
    assert "ex_a" in rec["reads"]
    assert "r_ex" in rec["writes"]


def test_eval_of_a_computed_string_reads_every_variable(agent):
    agent.ok("dyn_target = 1\ndyn_other = 2\nexpr_dyn = 'dyn_' + 'target + 1'")
    rec = agent.cell("r_dyn = eval(expr_dyn)")
    assert {"dyn_target", "dyn_other", "expr_dyn"} <= set(rec["reads"])


def test_globals_subscript_reads_every_variable(agent):
    agent.ok("gs_target = 1\ngs_other = 2")
    rec = agent.cell("r_gs = globals()['gs' + '_target']")
    assert {"gs_target", "gs_other"} <= set(rec["reads"])


def test_vars_and_locals_without_argument_read_every_variable(agent):
    agent.ok("vl_x = 1")
    assert "vl_x" in agent.cell("r_vl = vars()['vl_x']")["reads"]
    assert "vl_x" in agent.cell("r_vl2 = locals()['vl_x']")["reads"]


def test_user_ns_access_reads_every_variable(agent):
    agent.ok("un_x = 1")
    rec = agent.cell("r_un = get_ipython().user_ns['un' + '_x']")
    assert "un_x" in rec["reads"]


def test_sys_modules_main_access_reads_every_variable(agent):
    agent.ok("sm_x = 1")
    rec = agent.cell("import sys\nr_sm = getattr(sys.modules['__main__'], 'sm_x')")
    assert "sm_x" in rec["reads"]


def test_dynamic_access_inside_a_called_function_reads_every_variable(agent):
    agent.ok("fd_x = 1\ndef sneaky(name):\n    return globals()[name]")
    rec = agent.cell("r_fd = sneaky('fd_x')")
    assert "fd_x" in rec["reads"]


def test_line_magic_arguments_are_reads(agent):
    agent.ok("g_mag = 2\ndef f_mag(y):\n    return y + g_mag\ny_mag = 1")
    rec = agent.cell("%time r_mag = f_mag(y_mag)")
    assert {"f_mag", "y_mag", "g_mag"} <= set(rec["reads"])
    assert "r_mag" in rec["writes"]


def test_cell_magic_body_names_are_reads(agent):
    agent.ok("cm_x = 4")
    rec = agent.cell("%%time\nr_cm = cm_x + 1")
    assert "cm_x" in rec["reads"]
    assert "r_cm" in rec["writes"]


def test_namespace_wide_magics_read_every_variable(agent):
    agent.ok("who_x = 1")
    rec = agent.cell("%who_ls")
    assert "who_x" in rec["reads"]


def test_a_cell_reads_only_what_it_loads(agent):
    agent.ok("prec_a = 1\nprec_b = 2")
    rec = agent.cell("prec_c = prec_a + 1")
    assert rec["reads"] == ["prec_a"]
    assert rec["writes"] == ["prec_c"]


def test_reads_of_names_that_do_not_exist_are_dropped(agent):
    rec = agent.cell("try:\n    nope_missing\nexcept NameError:\n    pass")
    assert rec["reads"] == []


def test_reads_point_at_the_snapshot_that_was_active_before_the_cell(agent):
    agent.ok("edge_x = 1")
    h = agent.history()
    sid = h["active"]["edge_x"]
    rec = agent.cell("edge_x = edge_x + 1")
    assert sid in rec["input_snapshots"]
    assert agent.history()["active"]["edge_x"] != sid


def test_common_method_names_that_shells_also_have_do_not_read_everything(agent):
    agent.ok("import numpy as np\nclass Env:\n    def reset(self):\n        return 0\n    def modules(self):\n        return []\n"
             "cm_env = Env()\ncm_a = np.zeros(2)\ncm_unrelated = 1")
    rec = agent.cell("cm_r = (cm_env.reset(), cm_env.modules(), np.stack([cm_a, cm_a]))")
    assert "cm_unrelated" not in rec["reads"]


def test_shell_methods_read_every_variable(agent):
    agent.ok("sh_x = 1")
    rec = agent.cell("get_ipython().push({'sh_y': 2})")
    assert "sh_x" in rec["reads"]
    assert "sh_y" in rec["writes"]


def test_names_a_pandas_query_string_refers_to_are_reads(agent):
    # pandas looks `@thr` up in the calling frame: no load instruction names it
    agent.ok("import pandas as pd\npq_df = pd.DataFrame({'a': [1, 5, 9]})\npq_thr = 4\npq_k = 2\n"
             "pq_x = pd.Series([1, 2])")
    assert "pq_thr" in agent.cell("pq_res = pq_df.query('a > @pq_thr')")["reads"]
    assert "pq_k" in agent.cell("pq_col = pq_df.eval('a * @pq_k')")["reads"]
    assert "pq_x" in agent.cell("pq_tot = pd.eval('pq_x + 1')")["reads"]


def test_globals_read_by_notebook_code_an_object_holds_in_c_storage_are_reads(agent):
    # map objects, deques and numpy's frompyfunc ufuncs keep the function where no attribute
    # shows it; a later cell calling it reads the function's globals
    agent.ok("import collections\nimport numpy as np\n"
             "def cs_f(v):\n    return v + cs_k\ncs_map = map(cs_f, [1, 2])\n"
             "cs_dq = collections.deque([lambda: cs_j])\ncs_uf = np.frompyfunc(lambda v: v + cs_u, 1, 1)\n"
             "cs_k = cs_j = cs_u = 1")
    assert "cs_k" in agent.cell("cs_r1 = list(cs_map)")["reads"]
    assert "cs_j" in agent.cell("cs_r2 = cs_dq[0]()")["reads"]
    assert "cs_u" in agent.cell("cs_r3 = cs_uf(np.arange(2)).tolist()")["reads"]


def test_globals_read_by_a_function_a_library_generator_was_given_are_reads(agent):
    # heapq.merge's generator holds the key in its frame; a later cell consuming it runs it
    agent.ok("import heapq\nlg_merged = heapq.merge([1, 3], [2, 4], key=lambda v: v * lg_k)\nlg_k = 1")
    assert "lg_k" in agent.cell("lg_out = list(lg_merged)")["reads"]
