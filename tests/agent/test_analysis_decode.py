"""The analysis decodes bytecode itself (dis builds far more than it needs); what it reads of
each instruction must be what `dis.get_instructions` says."""

from __future__ import annotations

import dis
import importlib
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_agent.analysis import _instructions

_JUMPS = ("JUMP", "POP_JUMP", "FOR_ITER", "SEND")  # targets are left as raw args


def _codes(co: types.CodeType):
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def _fields(instrs):
    return [(i.opname, i.arg, None if i.opname.startswith(_JUMPS) else i.argval) for i in instrs]


@pytest.mark.parametrize("modname", ["json", "dataclasses", "argparse", "asyncio.base_events",
                                     "kernel_agent.changes"])
def test_fast_decoding_matches_dis(modname):
    mod = importlib.import_module(modname)
    with open(mod.__file__) as f:
        top = compile(f.read(), mod.__file__, "exec")
    for co in _codes(top):
        assert _fields(_instructions(co)) == _fields(dis.get_instructions(co)), co.co_name


def test_fast_decoding_of_a_cell_with_every_kind_of_name():
    src = ("import os as o\nx = 1\nglobal_y = x + len([1])\ndel x\n"
           "def f(a, *, k=2):\n    global z\n    z = a\n    return f'{a!r:>3}' + str(k)\n"
           "class C:\n    v = [i for i in range(3)]\nf(1, k=3)\nprint(o.path.join('a', 'b'))\n")
    for co in _codes(compile(src, "<cell>", "exec")):
        assert _fields(_instructions(co)) == _fields(dis.get_instructions(co))


@pytest.mark.parametrize("src", [
    "a = 1\nb = [1, 'x']\nc = d = (1, 2)\ne, f = 1, 2\ng = {'k': 1, 'j': [2]}\nh = {1, 2}\n"
    "i = -1.5\nj = [1, [2, 3], {4: 5}]\nk = b''\nl = None\nm = [1, 2, 3, 4, 5, 6]\n",
    "\n".join(f"v{i} = {i}" if i % 3 else f"v{i} = [{i}, 'x{i}']" for i in range(400)),
    "x = [1, 2]\ny = x\n",  # loads a name: decoded
    "z = [i for i in (1, 2)]\n",  # nested code: decoded
    "import time\nt = 1\n",
    "s = {1: 2, **{3: 4}}\nu = {*(1, 2), 3}\n",
])
def test_data_only_fast_path_matches_the_decoding_analysis(src, monkeypatch):
    from kernel_agent import analysis

    co = compile(src, "<cell>", "exec")
    fast = analysis._compute_code_info(co)
    monkeypatch.setattr(analysis, "_data_only_info", lambda code: None)
    assert fast == analysis._compute_code_info(co)


_ALPHABET = "av_1209x.-=,'\"[]() \\\n\r\t#:;f{}é\x00"
_ATOMS = st.one_of(st.integers(-10**17, 10**17).map(str),
                   st.floats(allow_nan=False, allow_infinity=False).map(repr),
                   st.text(_ALPHABET, max_size=8).map(repr),
                   st.sampled_from(["None", "True", "False", "0", "-0", "'x'", '"y"', "''"]))
_VALUES = st.one_of(_ATOMS, st.lists(_ATOMS, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
                    st.lists(_ATOMS, max_size=4).map(lambda xs: "(" + ", ".join(xs) + ",)"))
_NAMES = st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
                   st.sampled_from(["True", "None", "if", "__debug__", "match", "_", "print"]))
_LINES = st.one_of(st.tuples(_NAMES, st.sampled_from(["=", " = ", "= ", " =  "]), _VALUES)
                   .map("".join), st.text(_ALPHABET, max_size=12), st.just(""))


@given(st.lists(_LINES, min_size=1, max_size=6))
@settings(max_examples=400, deadline=None)
def test_constant_cell_fast_path_only_takes_cells_it_reads_as_compile_does(lines):
    from kernel_agent import analysis

    src = "\n".join(lines)
    fast = analysis._constant_cell_info(src)
    if fast is None:
        return
    assert fast == analysis.code_info(compile(src, "<cell>", "exec", dont_inherit=True))


def test_constant_cell_fast_path_takes_cells_of_constant_assignments():
    from kernel_agent import analysis

    src = "\n".join(f"v{i} = {i}" if i % 3 else f"v{i} = [{i}, 'x{i}']" for i in range(300))
    src += "\n\ncfg = ('a', -1.5, None, True)\ns = \"it's\"\nempty = []\n"
    fast = analysis._constant_cell_info(src)
    assert fast is not None and len(fast.stores) == 303
    assert fast == analysis.code_info(compile(src, "<cell>", "exec", dont_inherit=True))
    for other in ("v = x", "v = 017", "True = 1", "__debug__ = 1", "v = f'x'", "v = [1, [2]]",
                  "v = 1;w = 2", "v = 'a\\n'", "x.v = 1", "v = 1\r\nw = 2", " v = 1", "v = 1  # c"):
        assert analysis._constant_cell_info(other) is None, other
