"""Identity with objects outside the shipped values: kept by a restore, or reported.

A shipped co-variable can hold objects that also live elsewhere: the globals dict a function
was defined in by ``exec``, a notebook module's global, the ``__dict__`` of an instance, the
pattern a match object came from, the bytes object a view writes into, the process's own
``sys.path``. A pickle that copies them comes back equal (and the restore used to verify it,
against the digest of the value "as its library pickles it"), yet writes through one name no
longer reach the other. Every scenario runs both plans (`migrate_both`) and holds each name to
the promise: the identity is there after the restore, or the name is not verified.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import Restored, assert_verified, migrate_both
from tests.engine.migrate import assert_verified as assert_restore_verified
from tests.engine.migrate import run_and_migrate


def assert_kept_or_reported(r: Restored, names: list[str], expr: str) -> bool:
    """`expr` holds in the restored kernel, unless one of `names` is reported as not verified
    there (with a detail); True when it was verified and held."""
    variables = r.restore["variables"]
    bad = [n for n in names if not variables[n].get("verified")]
    if bad:
        assert all(variables[n].get("detail") for n in bad), (r.plan, {n: variables[n] for n in bad})
        return False
    assert r.kernel.value(expr) is True, f"{r.plan} plan: {expr} is False, but the restore verified {names}"
    return True


EXEC_GLOBALS = [
    "G = {'K': 3}\nexec('def f(x):\\n    return x * K', G)\nf = G['f']",
    "open('made.txt', 'w').close()\nG['K'] = 4",  # a side effect: G and f cannot be recomputed
]


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_a_function_made_by_exec_keeps_its_globals_dict(make_kernel, tmp_path, strategy):
    # cloudpickle gives such a function a fresh globals dict with the names it reads: restored,
    # `f.__globals__ is G` was False, `G['K'] = 1` no longer reached `f`, and it verified
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), EXEC_GLOBALS,
                                 strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[f.__globals__ is G, f(2)]") == [True, 8]
    b.ok("G['K'] = 1")
    assert b.value("f(2)") == 2


def test_a_function_made_by_exec_is_one_covariable_with_its_globals(kernel):
    # they share the dict: a cell that mutates `G` changes what `f` computes, so the tracker
    # must put them in one co-variable (shipped in one pickle, or recomputed together)
    kernel.ok(EXEC_GLOBALS[0])
    kernel.ok("from kernel_agent.extension import get_monitor\n"
              "_mon = get_monitor(get_ipython())")
    assert kernel.value("sorted(_mon.tracker.covariable_of('f'))") == ["G", "f"]


def test_a_method_bound_to_the_namespace_is_no_link_to_every_variable(kernel):
    # `globals().get` (a builtin method) and `globals().__getitem__` (a method-wrapper) hold
    # the notebook's namespace: walked through it, every variable became one co-variable
    kernel.ok("big = [1]\nother = {'a': 1}\nget = globals().get\nitem = globals().__getitem__")
    kernel.ok("from kernel_agent.extension import get_monitor\n"
              "_mon = get_monitor(get_ipython())")
    assert kernel.value("[sorted(_mon.tracker.covariable_of(n)) for n in ('get', 'item', 'big')]") == [
        ["get"], ["item"], ["big"]]


def test_a_function_made_by_exec_keeps_its_globals_in_both_plans(make_kernel, tmp_path):
    # (no side effect: the replay plan re-runs the cells)
    _, out = migrate_both(make_kernel, tmp_path, [EXEC_GLOBALS[0], "G['K'] = 4"])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[f.__globals__ is G, f(2)]") == [True, 8], r.plan


LOCAL_MODULE = ("open('mod_ident.py', 'w').write('A = [1]\\nB = {\"k\": 1}\\n"
                "def get():\\n    return A\\n')")


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_a_module_global_held_inside_a_variable_stays_the_modules(make_kernel, tmp_path, strategy):
    # `cfg = {'a': mod.A}` with no variable bound to the module: the list is a global of the
    # notebook's own module, shipped inside `cfg` as a copy; the module imported again held
    # the file's [1], and `cfg['a'] is mod.A` was False in a verified restore
    cells = [LOCAL_MODULE, "cfg = {'a': __import__('mod_ident').A, 'b': [__import__('mod_ident').B]}",
             "cfg['a'].append(2)\nopen('made.txt', 'w').close()"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[cfg['a'] is mod_ident.A, cfg['b'][0] is mod_ident.B, mod_ident.A, "
                   "mod_ident.get() is cfg['a']]".replace("mod_ident.", "__import__('mod_ident').")
                   ) == [True, True, [1, 2], True]


def test_a_module_global_the_restore_cannot_put_back_is_not_verified(make_kernel, tmp_path):
    # the file is gone: `cfg` comes back, the binding of its list to the module cannot
    cells = [LOCAL_MODULE, "cfg = {'a': __import__('mod_ident').A}",
             "cfg['a'].append(2)\nimport os\nos.remove('mod_ident.py')"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / "s").as_uri(), cells, strategy="ship-all")
    assert not r["variables"]["cfg"]["verified"], r["variables"]


def test_a_module_global_held_inside_a_variable_in_both_plans(make_kernel, tmp_path):
    cells = [LOCAL_MODULE, "import mod_ident\ncfg = {'a': mod_ident.A}", "mod_ident.A.append(2)"]
    _, out = migrate_both(make_kernel, tmp_path, cells)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[cfg['a'] is mod_ident.A, cfg['a']]") == [True, [1, 2]], r.plan


NAMESPACE_DICT = ["import types\nns = types.SimpleNamespace(a=1)\nv = vars(ns)",
                  "v['b'] = [2]\nopen('made.txt', 'w').close()"]


def test_the_dict_of_a_simple_namespace_stays_its_dict_or_is_reported(make_kernel, tmp_path):
    # pickle copies the state into the new namespace's own dict (which cannot be replaced):
    # `v` came back a dict of its own, and the restore took it for "the library's pickle" of
    # the value. Such a load has lost an identity relation: it is not verified (or recomputed)
    _, out = migrate_both(make_kernel, tmp_path, NAMESPACE_DICT)
    for r in out.values():
        assert_kept_or_reported(r, ["ns", "v"], "v is vars(ns)")


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_the_dict_of_a_notebook_instance_stays_its_dict(make_kernel, tmp_path, strategy):
    cells = ["class Box:\n    pass\nbox = Box()\nbox.x = 1\nattrs = box.__dict__",
             "attrs['y'] = 2\nopen('made.txt', 'w').close()"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("attrs['z'] = 3")
    assert b.value("[attrs is vars(box), box.z]") == [True, 3]


MATCHES = ["import re\ns = 'abc-123'\npat = re.compile(r'(\\w+)-(\\d+)')\nm = pat.match(s)",
           "found = [pat.search('x-1'), m]\nopen('made.txt', 'w').close()"]


def test_a_match_keeps_its_pattern_and_string(make_kernel, tmp_path):
    # (a pattern and a string are values, as numbers are: their identity is not kept)
    _, out = migrate_both(make_kernel, tmp_path, MATCHES)
    for r in out.values():
        assert_kept_or_reported(r, ["m", "pat", "s", "found"],
                                "m.re == pat and m.string == s and found[0].re == pat and found[1] is m")
        # m comes back whatever happens to `found`: cell 0 alone recreates it
        assert r.restore["variables"]["m"].get("verified"), (r.plan, r.restore["variables"])
        assert r.kernel.value("[m.group(2), m.span()]") == ["123", [0, 7]]


VIEWS = ["import io, numpy as np\nba = bytearray(b'abcdefgh')\nrev = memoryview(ba)[::-1]\n"
         "arr = np.arange(12, dtype=np.int32).reshape(3, 4)\ncols = memoryview(arr[:, ::2])\n"
         "bio = io.BytesIO(b'0123456789')\nbuf = bio.getbuffer()",
         "open('made.txt', 'w').close()"]


def test_memoryviews_with_strides_and_a_bytesio_buffer_keep_writing_through(make_kernel, tmp_path):
    _, out = migrate_both(make_kernel, tmp_path, VIEWS)
    for r in out.values():
        k = r.kernel
        if assert_kept_or_reported(r, ["rev", "ba"], "rev.obj is ba"):
            k.ok("rev[0] = ord('H')")
            assert k.value("bytes(ba).decode()") == "abcdefgH", r.plan
        if assert_kept_or_reported(r, ["cols", "arr"], "bool(np.shares_memory(cols, arr))"):
            k.ok("cols[1, 1] = -1")
            assert k.value("int(arr[1, 2])") == -1, r.plan
        if assert_kept_or_reported(r, ["buf", "bio"], "True"):
            k.ok("buf[0] = ord('X')")
            assert k.value("bio.getvalue().decode()") == "X123456789", r.plan


PROCESS_OBJECTS = ["import os, sys\np = sys.path\ne = os.environ\nmods = sys.modules\n"
                   "holder = {'p': p, 'e': e, 'm': mods}\nopen('made.txt', 'w').close()"]


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_aliases_of_sys_path_and_sys_modules_are_the_processs(make_kernel, tmp_path, strategy):
    # shipped (their cell wrote a file), `p` and `holder['p']` came back as a copy of the old
    # kernel's sys.path, verified: a later `p.insert(0, 'lib')` no longer reached the imports
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), PROCESS_OBJECTS,
                                 strategy=strategy)
    assert_restore_verified(r)
    assert b.value("[p is sys.path, holder['p'] is sys.path, e is os.environ, holder['e'] is e, "
                   "mods is sys.modules, holder['m'] is sys.modules]") == [True] * 6


def test_aliases_of_sys_path_and_sys_modules_in_both_plans(make_kernel, tmp_path):
    _, out = migrate_both(make_kernel, tmp_path, [PROCESS_OBJECTS[0].replace("\nopen", "\n#")])
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value("[p is sys.path, holder['m'] is sys.modules, e is os.environ]") == [
            True, True, True], r.plan


@pytest.mark.parametrize("strategy", ["ship-all", "optimal"])
def test_shipped_memoryviews_with_strides_and_a_bytesio_buffer_write_through(make_kernel, tmp_path,
                                                                            strategy):
    # shipped (their cell wrote a file), a reversed memoryview, one over a strided array and
    # a BytesIO's buffer came back as copies (bytes) over nothing, which the restore verified
    cells = [VIEWS[0] + "\nopen('made.txt', 'w').close()"]
    _, b, _, r = run_and_migrate(make_kernel, (tmp_path / strategy).as_uri(), cells, strategy=strategy)
    assert_restore_verified(r)
    b.ok("rev[0] = ord('H')\ncols[1, 1] = -1\nbuf[0] = ord('X')")
    assert b.value("[bytes(ba).decode(), int(arr[1, 2]), bio.getvalue().decode(), "
                   "type(rev).__name__]") == ["abcdefgH", -1, "X123456789", "memoryview"]
