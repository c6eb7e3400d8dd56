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


def test_globals_read_by_functions_in_a_numpy_object_array_are_reads(agent):
    # an object array keeps its elements in C storage no attribute shows
    agent.ok("import numpy as np\ndef oa_f(v):\n    return v + oa_k\ndef oa_g(v):\n    return v\n"
             "oa_fs = np.array([oa_f, oa_g], dtype=object)\n"
             "oa_grid = np.array([[oa_g, oa_g], [oa_g, lambda: oa_j]], dtype=object)\n"
             "oa_k = oa_j = 1")
    assert "oa_k" in agent.cell("oa_r = oa_fs[0](3)")["reads"]
    assert "oa_j" in agent.cell("oa_r2 = oa_grid[1, 1]()")["reads"]


def test_globals_read_by_functions_in_a_list_of_arrays_are_reads(agent):
    # over 32 elements the list is type-scanned in C: the object array among numeric ones counts
    agent.ok("import numpy as np\nla_k = 1\ndef la_f():\n    return la_k\n"
             "la_arrs = [np.zeros(2) for _ in range(40)] + [np.array([la_f], dtype=object)]")
    assert "la_k" in agent.cell("la_r = la_arrs[-1][0]()")["reads"]


def test_globals_read_by_functions_in_a_pandas_object_column_are_reads(agent):
    # a DataFrame's columns live in blocks of compiled code, a Series' values likewise
    agent.ok("import pandas as pd\npc_k = 2\ndef pc_f(v):\n    return v + pc_k\n"
             "pc_df = pd.DataFrame({'a': [1, 2]})\npc_df['fn'] = [pc_f, pc_f]\n"
             "pc_s = pd.Series([pc_f])\npc_cat = pd.Series([pc_f], dtype='category')")
    assert "pc_k" in agent.cell("pc_r = pc_df['fn'].map(lambda h: h(2)).tolist()")["reads"]
    assert "pc_k" in agent.cell("pc_r2 = pc_s[0](1)")["reads"]
    assert "pc_k" in agent.cell("pc_r3 = pc_cat[0](1)")["reads"]


def test_a_pandas_frame_of_strings_and_numbers_leads_to_no_reads(agent):
    # precision: scanning object columns finds only data
    agent.ok("import pandas as pd\nps_df = pd.DataFrame({'a': [1, 2], 's': ['x', 'y']})\n"
             "class PsHolder:\n    pass\nps_h = PsHolder()\nps_h.df = ps_df\nps_other = 1")
    rec = agent.cell("ps_n = len(ps_h.df)")
    assert "ps_other" not in rec["reads"]


def test_a_sqlite_connection_with_a_python_function_reads_every_variable(agent):
    # sqlite keeps the registered function where Python cannot see it: the SQL may call it
    agent.ok("import sqlite3\nsq_k = 4\ndef sq_f(v):\n    return v + sq_k\n"
             "sq_conn = sqlite3.connect(':memory:')\nsq_conn.create_function('sq_f', 1, sq_f)\n"
             "sq_cur = sq_conn.cursor()")
    assert "sq_k" in agent.cell("sq_r = sq_conn.execute('select sq_f(1)').fetchone()[0]")["reads"]
    assert "sq_k" in agent.cell("sq_r2 = sq_cur.execute('select sq_f(2)').fetchone()[0]")["reads"]


def test_a_sqlite_connection_without_python_functions_reads_only_itself(agent):
    # precision: listing the functions runs no user code and finds none
    agent.ok("import sqlite3\nsn_conn = sqlite3.connect(':memory:')\n"
             "sn_conn.row_factory = lambda cur, row: row[0] * sn_m\nsn_m = 2\nsn_other = 1")
    rec = agent.cell("sn_r = sn_conn.execute('select 21').fetchone()")
    assert {"sn_conn", "sn_m"} <= set(rec["reads"])  # the row factory runs
    assert "sn_other" not in rec["reads"]
    assert agent.value("sn_r") == 42


def test_globals_read_by_a_ctypes_callback_are_reads(agent):
    # the callback keeps its Python function in C fields; qsort calls it from C
    agent.ok("import ctypes\ncc_libc = ctypes.CDLL(None)\n"
             "CC_CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), "
             "ctypes.POINTER(ctypes.c_int))\n"
             "def cc_by(x, y):\n    return (x[0] * cc_k) % 7 - (y[0] * cc_k) % 7\n"
             "cc_cmp = CC_CMP(cc_by)\ncc_k = 3")
    rec = agent.cell("cc_arr = (ctypes.c_int * 4)(5, 1, 7, 2)\n"
                     "cc_libc.qsort(cc_arr, 4, ctypes.sizeof(ctypes.c_int), cc_cmp)\n"
                     "cc_out = list(cc_arr)")
    assert {"cc_k", "cc_by"} <= set(rec["reads"])


def test_a_call_into_a_c_library_after_ctypes_callbacks_were_made_reads_every_variable(agent):
    # libc keeps the signal handler it was given; `raise` calls it from C later, in a cell that
    # names neither the handler nor its function (ignored again at the end: SIGUSR1 kills)
    agent.ok("import ctypes, signal\ncr_libc = ctypes.CDLL(None)\n"
             "CR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)\ncr_seen = []\n"
             "def cr_on(sig):\n    cr_seen.append(cr_k)\n"
             "cr_h = CR_HANDLER(cr_on)\ncr_libc.signal(signal.SIGUSR1, cr_h)")
    agent.ok("cr_k = 3")
    try:
        rec = agent.cell("getattr(cr_libc, 'raise')(signal.SIGUSR1)")
        assert agent.value("cr_seen") == [3]
        assert "cr_k" in rec["reads"]
    finally:
        agent.ok("cr_libc.signal(signal.SIGUSR1, ctypes.c_void_p(1))")  # SIG_IGN


def test_a_local_module_reading_its_callers_globals_reads_every_variable(agent, tmp_path_factory):
    # `sys._getframe(1).f_globals[name]` in a module next to the notebook reads the notebook's
    # variables; no code of the notebook names them
    agent.ok("open('lm_peek.py', 'w').write('import sys\\ndef peek(name):\\n"
             "    return sys._getframe(1).f_globals[name]\\n')")
    agent.ok("import lm_peek\nfrom lm_peek import peek as lm_fn\nlm_k = 5")
    assert "lm_k" in agent.cell("lm_r = lm_peek.peek('lm_k')")["reads"]
    assert "lm_k" in agent.cell("lm_r2 = lm_fn('lm_k')")["reads"]


def test_a_local_module_of_plain_functions_reads_nothing_more(agent):
    # precision: a module's own globals() is not the notebook's namespace
    agent.ok("open('lm_plain.py', 'w').write('def get(name):\\n    return globals().get(name)\\n')")
    agent.ok("import lm_plain\nlp_other = 1")
    assert "lp_other" not in agent.cell("lp_r = lm_plain.get('x')")["reads"]


def test_an_awaited_notebook_coroutine_reads_and_writes_are_recorded(agent):
    # top-level await: the coroutine's global reads are reads, its `global` writes are writes,
    # and under asyncio's autoawait the cell stays re-runnable (a restore runs it on a loop)
    agent.ok("aw_k = 6\nasync def aw_co():\n    global aw_w\n    aw_w = aw_k + 1\n    return aw_k")
    rec = agent.cell("aw_r = await aw_co()")
    assert "aw_k" in rec["reads"]
    assert {"aw_w", "aw_r"} <= set(rec["writes"])
    assert not any("awaits at top level" in e for e in rec["effects"]), rec["effects"]
    agent.ok("aw_c = aw_co()")
    rec = agent.cell("aw_r2 = await aw_c")
    assert "aw_k" in rec["reads"]


def test_an_await_cell_under_another_loop_runner_is_not_re_runnable(agent):
    # the restore re-runs await cells on asyncio only: what such a cell awaited may need
    # another library's loop (`%autoawait trio`), so it is marked and its outputs are shipped
    agent.ok("import IPython.core.async_helpers as ah_mod\n"
             "get_ipython().loop_runner = ah_mod._pseudo_sync_runner\n"
             "async def ah_co():\n    return 3")
    rec = agent.cell("ah_r = await ah_co()")
    agent.ok("get_ipython().loop_runner = ah_mod._asyncio_runner")
    assert "ah_r" in rec["writes"]
    assert any("awaits at top level under a loop runner other than asyncio's" in e
               for e in rec["effects"]), rec["effects"]


def test_a_cell_importing_a_local_module_that_reads_its_callers_globals_reads_every_variable(
        agent):
    # the module is imported by the very cell that calls it: not there to walk before the cell
    agent.ok("open('lm_first.py', 'w').write('import sys\\ndef peek(name):\\n"
             "    return sys._getframe(1).f_globals[name]\\n')\nlf_k = 7")
    rec = agent.cell("import lm_first\nlf_r = lm_first.peek('lf_k')")
    assert "lf_k" in rec["reads"]


def test_a_local_module_imported_by_a_called_function_that_reads_its_callers_globals(agent):
    # importlib inside a notebook function: no import statement of the cell names the module,
    # which joined sys.modules while the cell ran
    agent.ok("open('lm_inner.py', 'w').write('import sys\\ndef peek(name):\\n"
             "    return sys._getframe(2).f_globals[name]\\n')\nli_k = 8\n"
             "def li_get(name):\n    import importlib\n"
             "    return importlib.import_module('lm_inner').peek(name)")
    rec = agent.cell("li_r = li_get('li_k')")
    assert "li_k" in rec["reads"]
    assert agent.value("li_r") == 8


def test_a_namespace_wide_magic_inside_another_magic_reads_every_variable(agent, tmp_path):
    # `%%capture` (or `%time`) runs its body's `%run -i`: the analysis saw only the outer
    # magic's name and the identifier tokens of the body, not what the script reads
    script = tmp_path / "nm_script.py"
    script.write_text("nm_out = nm_in * 2\n")
    agent.ok("nm_in = 4")
    for code in (f"%%capture nm_cap\n%run -i {script}", f"%time %run -i {script}"):
        assert "nm_in" in agent.cell(code)["reads"], code


def test_a_magic_whose_name_is_computed_reads_every_variable(agent, tmp_path):
    script = tmp_path / "cm_script.py"
    script.write_text("cmr_out = cmr_in * 2\n")
    agent.ok("cmr_in = 4\ncmr_magic = 'run'")
    rec = agent.cell(f"get_ipython().run_line_magic(cmr_magic, '-i {script}')")
    assert "cmr_in" in rec["reads"]
    # (a method of that name on anything else is no magic)
    rec = agent.cell("import platform\ncmr_sys = platform.system()")
    assert "cmr_in" not in rec["reads"]


def test_a_function_put_into_a_big_dict_of_numbers_read_before_is_found(agent):
    # the dict is big enough to be left unwalked when touched, so the read analysis scans it,
    # and remembers it held numbers only: until the dict changes
    agent.ok("g_bd = 7\ndef f_bd():\n    return g_bd\nbig_bd = {i: i for i in range(150_000)}")
    agent.ok("n_bd = len(big_bd)")
    assert "g_bd" not in agent.cell("m_bd = big_bd[0]")["reads"]
    agent.ok("big_bd['f'] = f_bd")
    rec = agent.cell("r_bd = big_bd['f']()")
    assert {"big_bd", "g_bd"} <= set(rec["reads"]), rec["reads"]
