"""The analysis decodes bytecode itself (dis builds far more than it needs); what it reads of
each instruction must be what `dis.get_instructions` says."""

from __future__ import annotations

import dis
import importlib
import types

import pytest

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
