"""Differential fuzzing of whole notebooks: random cells run in kernel A, migrated with each
plan, and the restored namespace compared to A's structurally (values and which names and
parts share objects). Every difference must be reported (`lost`, or not verified), never
silent.

    PYTHONHASHSEED=0 python -m tests.engine.notebook_fuzz --seeds 0-200          # forked shells
    PYTHONHASHSEED=0 python -m tests.engine.notebook_fuzz --seeds 7 --real --show  # real kernels
    PYTHONHASHSEED=0 python -m tests.engine.notebook_fuzz --seeds 1000000-1000200    # extended grammar

Seeds from `EXTENDED` (1000000) on draw about half their statements from `Gen2`: library and
language objects (dataclasses, attrs, enums, caches, partials, collections, itertools
mid-iteration, numpy and pandas in place, exceptions, slots, custom hashes, cycles, buffers,
builtin subclasses); the probe draws from their iterators and calls what they cache.

The forked mode imports IPython, numpy and the agent once, then forks a fresh
`InteractiveShell` per kernel (A and one B per plan): ~20x faster than starting ipykernels.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import traceback
import types
import weakref
from typing import Any

PLANS: dict[str, str] = {
    "optimal": "",
    "replay": ", deadline_s=0.0",
    "ship-all": ", strategy='ship-all'",
    "recompute-all": ", strategy='recompute-all'",
}

# ---------------------------------------------------------------------------------------------
# the generator


class Gen:
    """Random cells over a small grammar; `names` models what each name holds (roughly: a
    cell may fail, and then the model is wrong for the rest, which is fine for a fuzzer)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.names: dict[str, str] = {}
        self.count = 0
        self.funcs: list[tuple[str, str]] = []  # (name, call template)
        self.classes: list[str] = []
        self.imported: set[str] = set()

    def fresh(self, kind: str) -> str:
        self.count += 1
        name = f"{kind[0]}{self.count}"
        return name

    def of(self, *kinds: str) -> str | None:
        c = [n for n, k in self.names.items() if k in kinds]
        return self.r.choice(c) if c else None

    def atom(self) -> str:
        return self.r.choice(["1", "2.5", "'s'", "None", "True", "-3", "'ab'", "(1, 2)", "10**30"])

    def value(self) -> str:
        """An expression: an atom or an existing name (containers holding containers)."""
        n = self.of("list", "dict", "obj", "arr", "set", "int")
        if n and self.r.random() < 0.5:
            return n
        return self.atom()

    def stmt(self) -> list[str]:
        r = self.r
        choices = [
            (3, self.new_list), (2, self.new_dict), (2, self.alias), (2, self.mutate),
            (1, self.new_set), (2, self.numpy), (2, self.func), (2, self.call), (1, self.closure),
            (2, self.cls), (2, self.instance), (1, self.delete), (1, self.rebind),
            (1, self.raising), (1, self.loop), (1, self.comp), (1, self.generator),
            (2, self.rng), (1, self.box), (1, self.globals_write), (4, self.indirect),
            (2, self.saved_handle), (1, self.decorated), (1, self.registry),
            (3, self.hidden_calls), (1, self.user_module), (1, self.lazy),
            (3, self.dynamic_reads),
        ]
        total = sum(w for w, _ in choices)
        x = r.uniform(0, total)
        for w, f in choices:
            x -= w
            if x <= 0:
                return f()
        return self.new_list()

    def new_list(self) -> list[str]:
        vals = ", ".join(self.value() for _ in range(self.r.randint(0, 4)))
        n = self.fresh("list")
        self.names[n] = "list"
        return [f"{n} = [{vals}]"]

    def new_dict(self) -> list[str]:
        items = ", ".join(f"'k{i}': {self.value()}" for i in range(self.r.randint(0, 4)))
        n = self.fresh("dict")
        self.names[n] = "dict"
        return [f"{n} = {{{items}}}"]

    def new_set(self) -> list[str]:
        n = self.fresh("set")
        self.names[n] = "set"
        return [f"{n} = {{{', '.join(repr(self.r.choice('abcdefgh') * self.r.randint(1, 3)) for _ in range(4))}, 1, 2.5}}"]

    def alias(self) -> list[str]:
        src = self.of("list", "dict", "obj", "arr", "set", "func", "gen", "rng", "int")
        if not src:
            return self.new_list()
        n = self.fresh(self.names[src])
        self.names[n] = self.names[src]
        form = self.r.choice(["{n} = {s}", "{n} = [{s}, {s}]", "{n} = ({s},)", "{n} = {{'x': {s}}}"])
        if form != "{n} = {s}":
            self.names[n] = "list" if form.startswith("{n} = [") else "other"
        return [form.format(n=n, s=src)]

    def mutate(self) -> list[str]:
        r = self.r
        n = self.of("list", "dict", "set", "obj", "arr")
        if not n:
            return self.new_list()
        k = self.names[n]
        if k == "list":
            return [r.choice([f"{n}.append({self.value()})", f"{n}.extend([{self.atom()}, {self.atom()}])",
                              f"{n}.reverse()", f"{n}.clear()", f"{n}.insert(0, {self.value()})",
                              f"{n}[:] = {n}[1:]", f"if {n}: {n}[0] = {self.value()}",
                              f"{n} += [{self.value()}]", f"if {n}: {n}.pop()"])]
        if k == "dict":
            return [r.choice([f"{n}['k9'] = {self.value()}", f"{n}.pop('k0', None)",
                              f"{n}.update(z={self.value()})", f"{n}.setdefault('k1', []).append(1)",
                              f"if 'k1' in {n}: {n}['k1'] = {n}.pop('k1')",
                              f"{n}.clear()"])]
        if k == "set":
            return [r.choice([f"{n}.add('q')", f"{n}.discard('a')", f"{n} |= {{'zz', 7}}",
                              f"{n}.pop() if {n} else None"])]
        if k == "arr":
            return [r.choice([f"{n}[0] += 1", f"{n} *= 2", f"{n}[1:3] = 7", f"{n}.sort()",
                              f"{n}[...] = {n}[::-1].copy()"])]
        return [r.choice([f"{n}.v = {self.value()}", f"{n}.w = [{n}]", f"{n}.__dict__.pop('v', None)"])]

    def numpy(self) -> list[str]:
        r = self.r
        pre = [] if "np" in self.imported else ["import numpy as np"]
        self.imported.add("np")
        src = self.of("arr")
        n = self.fresh("arr")
        self.names[n] = "arr"
        if src and r.random() < 0.7:
            return pre + [r.choice([f"{n} = {src}[1:]", f"{n} = {src}[::2]", f"{n} = {src}.reshape(-1, 1)",
                                    f"{n} = {src}.copy()", f"{n} = {src}.view()", f"{n} = {src}[{src} > 2]",
                                    f"{n} = {src}.T", f"{n} = np.asarray({src})",
                                    f"{n} = {src} + 0"])]
        return pre + [r.choice([f"{n} = np.arange({r.randint(3, 8)})",
                                f"{n} = np.zeros((2, 3))", f"{n} = np.array([{self.atom()}, [1]], dtype=object)",
                                f"{n} = np.linspace(0, 1, 5)"])]

    def func(self) -> list[str]:
        r = self.r
        g = self.of("list", "dict")
        f = self.fresh("func")
        self.names[f] = "func"
        forms: list[tuple[str, str]] = [
            (f"def {f}(x=[]):\n    x.append(1)\n    return len(x)", f"{f}()"),
            (f"def {f}(v=1):\n    global G\n    G = globals().get('G', 0) + v\n    return G", f"{f}()"),
        ]
        if g:
            forms += [
                (f"def {f}(v=2):\n    {g}{'.append(v)' if self.names[g] == 'list' else '[v] = v'}\n    return {g}", f"{f}()"),
                (f"def {f}(cap={g}):\n    cap{'.append(0)' if self.names[g] == 'list' else '[0] = 0'}\n    return cap", f"{f}()"),
                (f"def {f}():\n    global {g}\n    {g} = type({g})({g})\n    return {g}", f"{f}()"),
                (f"def {f}():\n    globals()['{g}'] = [{g}]", f"{f}()"),
                (f"def {f}(n=1):\n    for _ in range(n):\n        globals()['{g}']{'.append(n)' if self.names[g] == 'list' else '[n] = n'}", f"{f}(2)"),
            ]
        code, call = r.choice(forms)
        if "globals()['" in code and "] = [" in code and g:
            self.names[g] = "list"
        self.funcs.append((f, call))
        return [code]

    def call(self) -> list[str]:
        if not self.funcs:
            return self.func()
        f, call = self.r.choice(self.funcs)
        if f not in self.names:
            return self.func()
        if self.r.random() < 0.3 and "\n" not in call and not call.startswith(("with", "@")):
            n = self.fresh("other")
            self.names[n] = "other"
            return [f"{n} = {call}"]
        return [call]

    def closure(self) -> list[str]:
        mk = self.fresh("func")
        n = self.fresh("func")
        self.names[mk] = "func"
        self.names[n] = "func"
        self.funcs.append((n, f"{n}()"))
        code = (f"def {mk}():\n    c = []\n    k = 0\n    def inc():\n        nonlocal k\n        k += 1\n"
                f"        c.append(k)\n        return k, len(c)\n    def peek():\n        return k, c\n"
                f"    inc.peek = peek\n    return inc")
        out = [code, f"{n} = {mk}()"]
        if self.r.random() < 0.5:
            p = self.fresh("func")
            self.names[p] = "func"
            self.funcs.append((p, f"{p}()"))
            out.append(f"{p} = {n}.peek")
        return out

    def cls(self) -> list[str]:
        # a redefinition keeps the name, instances of the old class stay alive
        name = self.r.choice(self.classes) if self.classes and self.r.random() < 0.4 else f"C{self.fresh('c')}"
        if name not in self.classes:
            self.classes.append(name)
        self.names[name] = "class"
        body = self.r.choice(["return self.v", "return ('new', self.v)"])
        return [f"class {name}:\n    shared = []\n    count = 0\n    def __init__(self, v=None):\n"
                f"        self.v = v\n        type(self).count += 1\n        {name}.shared.append(self)\n"
                f"    def get(self):\n        {body}\n    def bump(self):\n        self.v = [self.v]\n"
                f"        return self"]

    def instance(self) -> list[str]:
        r = self.r
        c = self.of("class")
        if not c:
            return self.cls()
        i = self.of("obj")
        if i and r.random() < 0.4:
            return [r.choice([f"{i}.bump()", f"{c}.count += 10", f"{c}.shared.append({self.value()})",
                              f"{c}.extra = {i}", f"{i}.get = lambda: 5"])]
        v = self.value()
        n = self.fresh("obj")
        self.names[n] = "obj"
        return [f"{n} = {c}({v})"]

    def box(self) -> list[str]:
        pre = []
        if "Box" not in self.imported:
            pre = ["class Box:\n    pass"]
            self.imported.add("Box")
        v = self.value()
        n = self.fresh("obj")
        self.names[n] = "obj"
        return pre + [f"{n} = Box()\n{n}.v = {v}"]

    def delete(self) -> list[str]:
        n = self.of(*set(self.names.values()) - {"class"})
        if not n:
            return self.new_list()
        del self.names[n]
        return [self.r.choice([f"del {n}", f"del globals()['{n}']"])]

    def rebind(self) -> list[str]:
        n = self.of(*set(self.names.values()) - {"class"})
        if not n:
            return self.new_list()
        self.names[n] = "int"
        return [self.r.choice([f"{n} = 5", f"{n} = len(str({n}))", f"{n}, tmp_ = 1, {n}"])]

    def raising(self) -> list[str]:
        n = self.of("list", "dict")
        body = self.mutate() if n else self.new_list()
        m = self.fresh("int")
        self.names[m] = "int"
        return [f"{m} = 3\n{body[0]}\n" + self.r.choice(["1/0", "raise ValueError('x')", "[][1]"]) + f"\n{m} = 4"]

    def loop(self) -> list[str]:
        n = self.of("list")
        if not n:
            return self.new_list()
        return [self.r.choice([f"for i_ in range(3):\n    {n}.append(i_)",
                               f"while len({n}) < 5:\n    {n}.append(len({n}))",
                               f"for i_, x_ in enumerate(list({n})):\n    {n}[i_] = (x_, i_)"])]

    def comp(self) -> list[str]:
        src = self.of("list", "set", "dict")
        if not src:
            return self.new_list()
        n = self.fresh("list")
        self.names[n] = "list"
        return [self.r.choice([f"{n} = [x for x in {src}]", f"{n} = [[x] for x in {src}]",
                               f"{n} = sorted({src}, key=repr)", f"{n} = list({{repr(x): x for x in {src}}}.values())"])]

    def generator(self) -> list[str]:
        src = self.of("list", "arr")
        n = self.fresh("gen")
        self.names[n] = "gen"
        if src and self.r.random() < 0.6:
            return [f"{n} = (x for x in {src})\nfirst_{n} = next({n}, None)"]
        g = self.fresh("func")
        self.names[g] = "func"
        return [f"def {g}(k):\n    for i in range(k):\n        yield i * i\n{n} = {g}(5)\nnext({n})\nnext({n})"]

    def rng(self) -> list[str]:
        r = self.r
        pre = []
        if "random" not in self.imported:
            pre = ["import random"]
            self.imported.add("random")
        if "np" not in self.imported and r.random() < 0.5:
            pre.append("import numpy as np")
            self.imported.add("np")
        n = self.fresh("rng")
        g = self.of("rng")
        forms = [f"{n} = random.random()", f"random.seed({r.randint(0, 9)})\n{n} = random.randint(0, 99)",
                 f"{n} = random.Random({r.randint(0, 9)})", f"{n} = random.sample(range(100), 3)"]
        if "np" in self.imported:
            forms += [f"{n} = np.random.default_rng({r.randint(0, 9)})", f"{n} = np.random.rand(3)",
                      f"np.random.seed({r.randint(0, 9)})\n{n} = np.random.randint(0, 9, 4)",
                      f"{n} = np.random.default_rng()"]
        code = r.choice(forms)
        if g and r.random() < 0.4:
            m = self.fresh("int")
            self.names[m] = "int"
            return [f"{m} = {g}.random() if hasattr({g}, 'random') else None"]
        self.names[n] = "rng" if "Random(" in code or "default_rng(" in code else "other"
        return pre + [code]

    def indirect(self) -> list[str]:
        """Mutations and writes the cell's text does not name directly."""
        r = self.r
        n = self.of("list")
        d = self.of("dict")
        o = self.of("obj")
        a = self.of("arr")
        forms = [f"exec('globals()[\\'x{self.count}\\'] = 7')", "import __main__\n__main__.mm_ = [1]",
                 "setattr(__import__('__main__'), 'nn_', {'a': 1})"]
        if n:
            forms += [f"exec('{n}.append(8)')", f"eval('{n}.append(9)')", f"getattr({n}, 'append')(3)",
                      f"list(map({n}.append, range(2)))", f"[{n}.append(i) for i in range(2)]",
                      f"import __main__\n__main__.{n}.append(4)", f"vars()['{n}'].append(5)",
                      f"random.shuffle({n})" if "random" in self.imported else f"{n}.sort(key=repr)",
                      f"del {n}[:1]", f"[(w_ := x) for x in {n}]", f"for x_ in {n}:\n    pass",
                      f"h_ = {{'k': {n}}}\nh_['k'].append(6)", f"lam_ = lambda: {n}\nlam_().append(1)"]
            self.names.setdefault("w_", "int")
        if d:
            forms += [f"{d}.get('k0', []).append(1) if isinstance({d}.get('k0'), list) else None",
                      f"del {d}['k9']" if r.random() < 0.5 else f"{d}.popitem() if {d} else None",
                      f"import operator\noperator.setitem({d}, 'k3', [1])"]
        if o:
            forms += [f"setattr({o}, 'v', {self.value()})", f"{o}.__dict__['u'] = 1",
                      f"del {o}.v" if r.random() < 0.3 else f"vars({o}).update(v=2)",
                      f"{o}.__class__ = type('Z{self.count}', (), {{'get': lambda self: 0}})"]
        if a:
            forms += [f"np.add({a}, 1, out={a}) if {a}.dtype != object else None", f"{a}.fill(3)",
                      f"np.copyto({a}, 5) if {a}.dtype != object else None",
                      f"np.random.shuffle({a})"]
        f = self.of("func")
        if f:
            forms += [f"{f}.calls = getattr({f}, 'calls', 0) + 1", f"{f}.__globals__['gg_'] = [3]",
                      f"dflt_ = {f}.__defaults__[0] if {f}.__defaults__ else None"]
        return [r.choice(forms)]

    def saved_handle(self) -> list[str]:
        """A bound method, a partial or an iterator saved in one cell, used in a later one."""
        r = self.r
        n = self.of("list")
        if not n:
            return self.new_list()
        h = self.fresh("func")
        self.names[h] = "func"
        form = r.choice([(f"{h} = {n}.append", f"{h}(1)"),
                         (f"import functools\n{h} = functools.partial(list.append, {n})", f"{h}(2)"),
                         (f"{h} = iter({n})", f"next({h}, None)"),
                         (f"{h} = (lambda v=({n},): v[0].append(3))", f"{h}()"),
                         (f"{h} = [lambda: i for i in range(3)]", f"{h}[0]()")])
        self.funcs.append((h, form[1]))
        return [form[0]]

    def decorated(self) -> list[str]:
        f = self.fresh("func")
        self.names[f] = "func"
        self.funcs.append((f, f"{f}(3)"))
        return [self.r.choice([
            f"import functools\n@functools.lru_cache(maxsize=None)\ndef {f}(k):\n    return [k]",
            f"def counted_(fn):\n    n = [0]\n    def w(*a):\n        n[0] += 1\n        return fn(*a), n[0]\n"
            f"    w.n = n\n    return w\n@counted_\ndef {f}(k):\n    return k * 2",
            f"def {f}(k, _memo={{}}):\n    _memo[k] = _memo.get(k, 0) + 1\n    return _memo"])]

    def registry(self) -> list[str]:
        pre = []
        if "REG" not in self.imported:
            self.imported.add("REG")
            self.names["REG"] = "list"
            pre = ["REG = []\nclass Reg:\n    def __init__(self, v):\n        self.v = v\n        REG.append(self)\n"
                   "    def get(self):\n        return len(REG), self.v\n    @property\n    def seen(self):\n"
                   "        self.v = (self.v, 1)\n        return self.v"]
            self.names["Reg"] = "class"
        n = self.fresh("obj")
        self.names[n] = "obj"
        return pre + [self.r.choice([f"{n} = Reg({self.value()})", f"{n} = Reg(1)\n{n}.seen",
                                     f"{n} = Reg([REG])"])]

    def hidden_calls(self) -> list[str]:
        """Code of the notebook's run by the language, not called by name: dunder methods, a
        context manager, a class body, a decorator, a generator advanced later."""
        r = self.r
        g = self.of("list")
        if not g:
            return self.new_list()
        k = self.fresh("class")
        n = self.fresh("obj")
        self.names[k] = "class"
        self.names[n] = "obj"
        form = r.choice([
            (f"class {k}:\n    def __repr__(self):\n        {g}.append('r')\n        return 'K'\n"
             f"    def get(self):\n        return 1", f"{n} = {k}()\nstr_ = repr({n})", f"f'{{{n}!r}}'"),
            (f"class {k}:\n    def __enter__(self):\n        {g}.append('in')\n        return self\n"
             f"    def __exit__(self, *a):\n        {g}.append('out')\n    def get(self):\n        return 2",
             f"{n} = {k}()\nwith {n}:\n    pass", f"with {n}:\n    {g}.append('body')"),
            (f"class {k}:\n    {g}.append('body')\n    items = []\n    def get(self):\n"
             f"        self.items.append(1)\n        return len(self.items)", f"{n} = {k}()\n{n}.get()",
             f"{n}.get()"),
            (f"class {k}:\n    def __init__(self):\n        self.n = 0\n    def __getattr__(self, a):\n"
             f"        self.n += 1\n        {g}.append(a)\n        return self.n\n    def get(self):\n        return self.n",
             f"{n} = {k}()\n{n}.whatever", f"{n}.other"),
            (f"class {k}:\n    def __iter__(self):\n        {g}.append('it')\n        return iter([1, 2])\n"
             f"    def get(self):\n        return 3", f"{n} = {k}()\nlist({n})", f"sorted({n})"),
            (f"def {k}(fn):\n    {g}.append(fn.__name__)\n    return fn", f"@{k}\ndef {n}():\n    return 4",
             f"@{k}\ndef {n}_2():\n    return 5"),
            (f"def {k}():\n    for i in range(6):\n        {g}.append(i)\n        yield i",
             f"{n} = {k}()\nnext({n})", f"next({n}, None)"),
            (f"class {k}(dict):\n    def __missing__(self, key):\n        {g}.append(key)\n        self[key] = [key]\n"
             f"        return self[key]\n    def get(self, *a):\n        return len(self)", f"{n} = {k}()\n{n}['a'].append(1)",
             f"{n}['b']"),
        ])
        if "def get" not in form[0]:
            self.names[n] = "gen" if "yield" in form[0] else "func"
        if "yield" not in form[0]:
            self.funcs.append((n, form[2].replace(f"{n}_2", f"{n}_3")))
        return [form[0], form[1]] if r.random() < 0.5 else [form[0] + "\n" + form[1]]

    def user_module(self) -> list[str]:
        """A module the notebook wrote and imported, whose state its functions change."""
        m = f"mod{self.fresh('m')}"
        self.names[m] = "other"
        self.funcs.append((m, f"{m}.add(7)"))
        src = "X = []\\nCOUNT = 0\\ndef add(v):\\n    global COUNT\\n    COUNT += 1\\n    X.append(v)\\n    return COUNT\\n"
        out = [f"open('{m}.py', 'w').write('{src}')\nimport importlib\nimportlib.invalidate_caches()\nimport {m}"]
        out.append(self.r.choice([f"{m}.add(1)", f"from {m} import X as x{m}\nx{m}.append(2)",
                                  f"{m}.X = [{m}.X]", f"from {m} import add as add{m}\nadd{m}(3)"]))
        return out

    def lazy(self) -> list[str]:
        """Lazy objects over the notebook's values: views, maps, iterators, weak references."""
        r = self.r
        d = self.of("dict")
        n = self.of("list")
        o = self.of("obj")
        v = self.fresh("other")
        self.names[v] = "other"
        forms = []
        if d:
            forms += [f"{v} = {d}.keys()", f"{v} = {d}.items()", f"{v} = iter({d}.values())"]
        if n:
            forms += [f"{v} = map(lambda x: ({n}.append(0), x)[1], list({n}))\nnext({v}, None)",
                      f"import itertools\n{v} = itertools.cycle({n} or [1])\nnext({v})",
                      f"{v} = zip({n}, range(5))", f"import copy\n{v} = copy.deepcopy([{n}, {n}])",
                      f"import copy\n{v} = copy.copy({n})", f"{v} = reversed({n})"]
        if o:
            forms += [f"import weakref\n{v} = weakref.ref({o})"]
        forms += [f"import collections\n{v} = collections.defaultdict(list)\n{v}['a'].append(1)",
                  f"import collections\n{v} = collections.deque([1, 2, 3], maxlen=3)\n{v}.append(4)",
                  f"G_{v} = {{}}\nexec('x = [1]\\ny = x', G_{v})"]
        return [r.choice(forms)]

    def dynamic_reads(self) -> list[str]:
        """Reads of variables the cell's text names only in strings, or does at definition
        time (a default, a class body, a decorator), or through a callback of a C function."""
        r = self.r
        n = self.of("list", "dict", "int", "obj")
        if not n:
            return self.new_list()
        half = r.randint(1, len(n) - 1) if len(n) > 1 else 1
        spelled = f"'{n[:half]}' + '{n[half:]}'"
        v = self.fresh("other")
        self.names[v] = "other"
        src = self.of("list")
        forms = [f"{v} = repr(globals()[{spelled}])", f"{v} = repr(eval({spelled}))",
                 f"import __main__\n{v} = repr(getattr(__main__, {spelled}))",
                 f"exec('{v} = repr(' + {spelled} + ')')",
                 f"def {v}_f(x=repr({n})):\n    return x\n{v} = {v}_f()",
                 f"class {v}_K:\n    seen = repr({n})\n{v} = {v}_K.seen",
                 f"{v} = (lambda: repr({n}))()"]
        if src:
            forms += [f"{v} = sorted(range(3), key=lambda i: (repr({n}), i))",
                      f"{v} = list(map(lambda i: repr({n}), range(2)))",
                      f"{v} = [repr({n}) for _ in {src}]"]
        return [r.choice(forms)]

    def globals_write(self) -> list[str]:
        v = self.value()
        n = self.fresh("list")
        self.names[n] = "list"
        return [f"globals()['{n}'] = [{v}]"]

    def notebook(self, ncells: int) -> list[str]:
        cells = []
        for _ in range(ncells):
            stmts: list[str] = []
            for _ in range(self.r.choice([1, 1, 1, 2, 3])):
                stmts += self.stmt()
            cells.append("\n".join(stmts))
        return cells

    def probe(self) -> str:
        """A cell run after the checkpoint in A and after the restore in B: calls what the
        notebook defined and draws from its generators, so functions and generators must
        behave the same, not only look the same. Each line on its own: a name lost in B is
        deleted in A's copy first, and the same lines fail in both."""
        lines = [call for _, call in self.funcs]
        for n, k in self.names.items():
            if k == "gen":
                lines.append(f"probe_{n} = next({n}, 'end')")
            if k == "rng":
                lines.append(f"probe_{n} = {n}.random()")
            if k == "obj":
                lines.append(f"probe_{n} = {n}.get()")
            if k == "class":
                lines.append(f"probe_{n} = {n}().get()")
        lines.append("probe_random = __import__('random').random()")
        lines.append("probe_np = __import__('numpy').random.random()")
        self.r.shuffle(lines)
        return "\n".join("try:\n    " + x.replace("\n", "\n    ")
                         + f"\nexcept Exception as e:\n    probe_err_{i} = type(e).__name__"
                         for i, x in enumerate(lines))


class Gen2(Gen):
    """The extended grammar (seeds >= EXTENDED): the base grammar plus library and language
    objects whose state is easy to lose or to rebuild subtly different: dataclasses and attrs
    classes, enums as keys, caches (lru_cache, cached_property), functools.partial,
    collections (deque maxlen, Counter, defaultdict with a lambda, OrderedDict order, ChainMap),
    heaps, itertools objects mid-iteration (tee, groupby, islice...), numpy views, structured,
    masked and object arrays, pandas frames changed in place, stored exceptions with their
    traceback and cause, recursive structures, memoryviews, subclasses of builtins, objects
    with their own __eq__/__hash__ (stale hashes), generators holding notebook objects."""

    def stmt(self) -> list[str]:
        if self.r.random() < 0.45:
            return super().stmt()
        choices = [
            (3, self.dataclass_), (2, self.attrs_), (2, self.enum_), (2, self.caches),
            (2, self.partial_), (4, self.collections_), (1, self.heap), (4, self.itertools_),
            (3, self.numpy2), (3, self.pandas_), (2, self.exception), (2, self.closures2),
            (2, self.class_attrs), (2, self.slots), (2, self.hashing), (2, self.recursive),
            (2, self.buffers), (2, self.subclasses), (1, self.rng2), (2, self.generators2),
            (2, self.misc_objects),
        ]
        x = self.r.uniform(0, sum(w for w, _ in choices))
        for w, f in choices:
            x -= w
            if x <= 0:
                return f()
        return self.new_list()

    def _probe(self, name: str, code: str) -> None:
        """A line for the probe (and for later cells, as `call` picks from the same list)."""
        self.funcs.append((name, code))

    def _draw(self, n: str) -> None:
        self._probe(n, f"pr_{n} = [next({n}, 'end') for _ in range(3)]")

    def dataclass_(self) -> list[str]:
        r = self.r
        k = f"D{self.fresh('c')}"
        n = self.fresh("obj")
        self.names[k] = "class"
        self.names[n] = "obj"
        opts = r.choice(["frozen=True", "slots=True", "order=True", "eq=False", "", "frozen=True, slots=True",
                         "unsafe_hash=True"])
        v = self.value()
        code = (f"import dataclasses\n@dataclasses.dataclass({opts})\nclass {k}:\n    a: object = 0\n"
                f"    b: list = dataclasses.field(default_factory=list)\n"
                f"    def get(self):\n        return (self.a, len(self.b), {k}.__name__)")
        make = f"{n} = {k}({v})\n{n}.b.append({self.value()})"
        later = r.choice([f"object.__setattr__({n}, 'a', {self.value()})", f"{n}.b.extend([1, 2])",
                          f"{n}_2 = dataclasses.replace({n}, a=7)", f"{n}_s = {{{n}}} if {k}.__hash__ else set()",
                          f"{n}_t = dataclasses.astuple({n})", f"{n}.a = [{n}]"])
        self._probe(n, f"pr_{n} = (dataclasses.asdict({n}), {n} == {n}, {n}.get())")
        return [code, make + "\n" + later] if r.random() < 0.5 else [code + "\n" + make, later]

    def attrs_(self) -> list[str]:
        r = self.r
        k = f"A{self.fresh('c')}"
        n = self.fresh("obj")
        self.names[k] = "class"
        self.names[n] = "obj"
        deco = r.choice(["attrs.define", "attrs.frozen", "attrs.define(slots=False)", "attrs.mutable(eq=False)"])
        code = (f"import attrs\n@{deco}\nclass {k}:\n    x: object = 0\n    y: list = attrs.field(factory=list)\n"
                f"    def get(self):\n        return (self.x, len(self.y))")
        later = r.choice([f"{n}.y.append({self.value()})", f"object.__setattr__({n}, 'x', [1])",
                          f"{n}_e = attrs.evolve({n}, x=3)", f"{n}.x = {n}.y"])
        self._probe(n, f"pr_{n} = (attrs.asdict({n}), {n}.get())")
        return [code, f"{n} = {k}({self.value()})", later]

    def enum_(self) -> list[str]:
        r = self.r
        k = f"E{self.fresh('c')}"
        n = self.fresh("dict")
        self.names[k] = "other"
        self.names[n] = "dict"
        base = r.choice(["enum.Enum", "enum.IntEnum", "enum.Flag", "enum.StrEnum"])
        vals = ["'r'", "'g'", "'b'"] if base == "enum.StrEnum" else ["1", "2", "4"]
        code = (f"import enum\nclass {k}({base}):\n    R = {vals[0]}\n    G = {vals[1]}\n    B = {vals[2]}\n"
                f"{n} = {{{k}.R: [1], {k}.G: {self.value()}}}")
        later = r.choice([f"{n}[{k}.B] = {n}", f"{k}.R.note = [{self.value()}]", f"{n}_m = {k}(1) if {vals[0]} == 1 else {k}.R",
                          f"{n}_l = list({k})", f"{n}[{k}.R].append({k}.G)",
                          f"{n}_f = {k}.R | {k}.G" if base == "enum.Flag" else f"{n}_f = {k}['G']"])
        self._probe(n, f"pr_{n} = ([{n}.get(m) is not None for m in {k}], getattr({k}.R, 'note', None), {k}.R in {n})")
        return [code, later]

    def caches(self) -> list[str]:
        r = self.r
        base = self.of("list")
        f = self.fresh("func")
        self.names[f] = "func"
        dep = f"len({base})" if base else "7"
        deco = r.choice(["functools.lru_cache(maxsize=2)", "functools.lru_cache(maxsize=None)", "functools.cache",
                         "functools.lru_cache(maxsize=2, typed=True)"])
        code = f"import functools\n@{deco}\ndef {f}(k):\n    return [k, {dep}]"
        calls = "\n".join(f"{f}_r{i} = {f}({r.choice(['1', '2', '3', '1.0', 'True'])})" for i in range(r.randint(1, 3)))
        self._probe(f, f"pr_{f} = ({f}(1), {f}(2), {f}.cache_info().currsize)")
        out = [code, calls]
        if base and r.random() < 0.6:
            out.append(f"{base}.append(0)\n{f}(3)")
        if r.random() < 0.2:
            out.append(f"{f}.cache_clear()")
        if r.random() < 0.5:  # a cached_property computed, then its source changed
            k = f"CP{self.fresh('c')}"
            o = self.fresh("obj")
            self.names[k] = "class"
            self.names[o] = "obj"
            out.append(f"class {k}:\n    def __init__(self):\n        self.xs = [1, 2]\n    @functools.cached_property\n"
                       f"    def total(self):\n        return [sum(self.xs)]\n    def get(self):\n        return self.total\n"
                       f"{o} = {k}()\n{o}.total")
            out.append(f"{o}.xs.append(5)" if r.random() < 0.5 else f"del {o}.total\n{o}.xs.append(6)")
        return out

    def partial_(self) -> list[str]:
        r = self.r
        f = self.fresh("func")
        self.names[f] = "func"
        n = self.of("list") or "[]"
        form = r.choice([
            f"import functools\ndef {f}_b(acc, v, *, step=1):\n    acc.append(v * step)\n    return len(acc)\n"
            f"{f} = functools.partial({f}_b, {n}, step=2)",
            f"import functools\n{f} = functools.partial(functools.partial(sorted, key=repr), reverse=True)",
            f"import functools\n{f} = functools.partialmethod if False else functools.partial(dict, a={n})",
        ])
        call = f"{f}(3)" if "_b" in form else f"{f}([3, 1])" if "sorted" in form else f"{f}()"
        self._probe(f, f"pr_{f} = ({call}, {f}.args, {f}.keywords)")
        out = [form]
        if r.random() < 0.5:
            out.append(f"{f}.keywords['extra'] = 1" if "_b" not in form else f"{f}.keywords['step'] = 5")
        return out

    def collections_(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        v = self.value()
        forms = [
            (f"import collections\n{n} = collections.deque([{v}, 2, 3], maxlen={r.randint(1, 4)})\n{n}.append(4)",
             r.choice([f"{n}.rotate(1)", f"{n}.appendleft({self.value()})", f"{n}.extend(range(3))", f"{n}.append({n})"]),
             f"pr_{n} = ({n}.maxlen, len({n}), {n}.append(9), list({n})[-1])"),
            (f"import collections\n{n} = collections.Counter('abracadabra')",
             r.choice([f"{n}.update(a=-7)", f"{n}.subtract('aab')", f"{n}['z'] += 0", f"{n} += collections.Counter('xy')"]),
             f"pr_{n} = ({n}.most_common(), list({n}))"),
            (f"import collections\n{n} = collections.defaultdict(lambda: [0])\n{n}['a'].append({v})",
             r.choice([f"{n}['b']", f"{n}.default_factory = list", f"{n}.default_factory = None", f"{n}['c'] = {n}['a']"]),
             f"pr_{n} = ({n}['new'] if {n}.default_factory else None, list({n}))"),
            (f"import collections\n{n} = collections.OrderedDict(a=1, b=2, c={v})",
             r.choice([f"{n}.move_to_end('a')", f"{n}.move_to_end('c', last=False)", f"{n}.popitem(last=False)",
                       f"{n}['a'] = {n}.pop('a')"]),
             f"pr_{n} = (list({n}), {n}.popitem())"),
            (f"import collections\n{n}_1 = {{'a': 1}}\n{n} = collections.ChainMap({{}}, {n}_1)\n{n}['b'] = {v}",
             r.choice([f"{n}_1['a'] = 5", f"{n} = {n}.new_child()\n{n}['a'] = 0", f"{n}.maps.append({{'z': 3}})",
                       f"{n}.parents['q'] = 1"]),
             f"pr_{n} = (dict({n}), {n}_1, len({n}.maps))"),
        ]
        make, later, probe = r.choice(forms)
        self._probe(n, probe)
        return [make, later] if r.random() < 0.6 else [make + "\n" + later]

    def heap(self) -> list[str]:
        n = self.fresh("list")
        self.names[n] = "list"
        self._probe(n, f"pr_{n} = [heapq.heappop({n}) for _ in range(min(2, len({n})))]")
        return [f"import heapq\n{n} = [5, 1, 4]\nheapq.heapify({n})\nheapq.heappush({n}, 0)",
                self.r.choice([f"heapq.heappushpop({n}, 3)", f"heapq.heapreplace({n}, 9)", f"{n}.append(-1)",
                               f"heapq.heappush({n}, 2)"])]

    def itertools_(self) -> list[str]:
        r = self.r
        n = self.fresh("gen")
        self.names[n] = "gen"
        src = self.of("list")
        forms = [
            f"{n} = itertools.count({r.randint(0, 5)}, {r.choice(['1', '2', '0.5'])})\nnext({n})",
            f"{n} = itertools.cycle('abc')\nnext({n}); next({n})",
            f"{n} = itertools.islice(itertools.count(), 2, 20, 3)\nnext({n})",
            f"{n}_g = itertools.groupby('aabbbcdd')\n{n}_k, {n} = next({n}_g)\nnext({n})",
            f"{n}_g = itertools.groupby([1, 1, 2, 2, 3])\nnext({n}_g)\n{n} = {n}_g",
            f"{n}, {n}_2 = itertools.tee(iter(range(6)))\nnext({n}); next({n})",
            f"{n} = itertools.accumulate([1, 2, 3, 4])\nnext({n})",
            f"{n} = itertools.permutations('abc', 2)\nnext({n})",
            f"{n} = itertools.product('ab', repeat=2)\nnext({n})",
            f"{n} = itertools.chain([1], 'xy', range(2))\nnext({n}); next({n})",
            f"{n} = itertools.zip_longest('ab', 'xyz')\nnext({n})",
            f"{n} = itertools.pairwise(range(5))\nnext({n})",
            f"{n} = itertools.starmap(pow, [(2, 3), (3, 2), (1, 1)])\nnext({n})",
            f"{n} = itertools.takewhile(lambda x: x < 4, itertools.count())\nnext({n})",
            f"{n} = itertools.combinations_with_replacement('abc', 2)\nnext({n})",
            f"{n} = itertools.dropwhile(lambda x: x < 2, range(6))\nnext({n})",
            f"{n} = itertools.filterfalse(None, [0, 1, 0, 2, 3])\nnext({n})",
            f"{n} = itertools.compress('abcdef', [1, 0, 1, 1, 0, 1])\nnext({n})",
            f"{n} = itertools.repeat([1], 4)\nnext({n})",
            f"{n} = itertools.batched(range(7), 2)\nnext({n})" if sys.version_info >= (3, 12)
            else f"{n} = iter(range(7))\nnext({n})",
        ]
        if src:
            forms += [f"{n} = itertools.islice({src}, 1, None)", f"{n} = itertools.tee({src}, 2)[0]\nnext({n}, None)",
                      f"{n} = filter(None, {src})\nnext({n}, None)", f"{n} = enumerate({src}, 1)",
                      f"{n}, {n}_2 = itertools.tee(iter({src}))\nnext({n}, None)"]
        code = r.choice(forms)
        self._draw(n)
        if f"{n}_2" in code:
            self._draw(f"{n}_2")
        if f"{n}_g" in code:
            self._draw(f"{n}_g")
        return [f"import itertools\n{code}"] + ([f"next({n}, None)"] if r.random() < 0.4 else [])

    def numpy2(self) -> list[str]:
        r = self.r
        pre = "import numpy as np\n"
        self.imported.add("np")
        n = self.fresh("arr")
        o = self.of("obj", "list", "dict")
        forms = [
            (f"{n} = np.zeros(3, dtype=[('a', 'i4'), ('b', 'f8')])\n{n}['a'] = [1, 2, 3]\n{n}_a = {n}['b']",
             r.choice([f"{n}_a[1] = 2.5", f"{n}[0] = (7, 0.5)", f"{n}['a'] *= 2"]), "arr"),
            (f"{n} = np.ma.masked_array([1.0, 2.0, 3.0, 4.0], mask=[0, 1, 0, 0])",
             r.choice([f"{n}[2] = np.ma.masked", f"{n}.mask[0] = True", f"{n}.fill_value = -1", f"{n}_v = {n}[1:]\n{n}_v[0] = 9",
                       f"{n}.soften_mask()\n{n}[1] = 5", f"{n}.harden_mask()\n{n}[1] = 5"]), "other"),
            (f"{n} = np.float32(1.5)\n{n}_b = np.float64({n}) / 3", f"{n}_c = {n} * np.float32(3)", "other"),
            (f"{n} = np.empty(3, dtype=object)\n{n}[0] = {o or '[1]'}\n{n}[1] = {n}\n{n}[2] = {self.value()}",
             f"{n}[0:1] = [{n}[2]]" if r.random() < 0.5 else f"{n}_v = {n}[::2]", "arr"),
            (f"{n} = np.arange(12.0).reshape(3, 4)\n{n}_v = {n}[:, 1]\n{n}_w = {n}[1]",
             r.choice([f"{n}_v[:] = -1", f"{n}_w += 100", f"{n}.shape = (4, 3)", f"{n}_t = {n}.T\n{n}_t[0, 0] = 5",
                       f"{n}_b = np.broadcast_to({n}_w, (2, 4))", f"{n}_r = {n}.ravel()\n{n}_r[0] = 7"]), "arr"),
            (f"{n} = np.arange(6, dtype=np.int16)\n{n}_u = {n}.view(np.uint8)",
             r.choice([f"{n}_u[0] = 255", f"{n}.flags.writeable = False", f"{n}_f = np.frombuffer({n}.tobytes(), dtype=np.int16)"]),
             "arr"),
            (f"{n} = np.array([1, 2, 3])\n{n}_l = {n}.tolist()\n{n}_s = {n}[1]",
             f"{n}_it = np.nditer({n}) if False else iter({n})\nnext({n}_it)", "arr"),
        ]
        make, later, kind = r.choice(forms)
        self.names[n] = kind
        self._probe(n, f"pr_{n} = {n}.copy()")
        return [pre + make, later]

    def pandas_(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        make = (f"import pandas as pd\n{n} = pd.DataFrame({{'a': [3, 1, 2], 'b': ['x', 'y', 'x'], "
                f"'c': [0.5, None, 1.5]}})")
        later = r.choice([
            f"{n}.loc[0, 'a'] = 10", f"{n}.sort_values('a', inplace=True)", f"{n}['b'] = {n}['b'].astype('category')",
            f"{n}['b'] = {n}['b'].astype('category')\n{n}['b'] = {n}['b'].cat.add_categories(['z'])",
            f"{n}.fillna(0, inplace=True)", f"{n}_s = {n}['a']\n{n}_s.iloc[0] = 99", f"{n}.set_index('b', inplace=True)",
            f"{n}.drop(columns='c', inplace=True)", f"{n}.attrs['note'] = [1]", f"{n}.rename(columns={{'a': 'A'}}, inplace=True)",
            f"{n}_v = {n}.loc[{n}['a'] > 1]\n{n}_v.loc[:, 'a'] = 0", f"{n}.index.name = 'idx'",
            f"{n}['d'] = {n}['a'].cumsum()\n{n} = {n}[{n}['d'] > 1]", f"{n}_g = {n}.groupby('b')['a'].sum()",
            f"{n}.columns = ['p', 'q', 'r']", f"{n}.reset_index(drop=True, inplace=True)\n{n}.iat[0, 0] = -1",
        ])
        self._probe(n, f"pr_{n} = ({n}.to_dict(), list(map(str, {n}.dtypes)), {n}.index.tolist())")
        return [make, later] if r.random() < 0.6 else [make + "\n" + later]

    def exception(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        v = self.value()
        form = r.choice([
            f"try:\n    1/0\nexcept Exception as e:\n    {n} = e",
            f"try:\n    try:\n        [][1]\n    except IndexError as e:\n        raise ValueError({v}) from e\n"
            f"except ValueError as e:\n    {n} = e",
            f"try:\n    try:\n        {{}}['k']\n    except KeyError:\n        raise RuntimeError('during')\n"
            f"except RuntimeError as e:\n    {n} = e",
            f"{n} = ValueError({v}, [1])\n{n}.extra = {self.value()}",
            f"class X{n}(Exception):\n    def __init__(self, v):\n        super().__init__(v)\n        self.v = v\n"
            f"try:\n    raise X{n}({v})\nexcept X{n} as e:\n    {n} = e",
            f"{n} = KeyError('k')\n{n}.add_note('noted')" if sys.version_info >= (3, 11) else f"{n} = KeyError('k')",
            f"def {n}_f(x):\n    return 1 / x\ntry:\n    {n}_f(0)\nexcept ZeroDivisionError as e:\n    {n} = e\n    {n}_tb = e.__traceback__",
        ])
        later = r.choice([f"{n}.args = ({n}.args, 2)", f"{n}.__cause__ = None", f"{n}.__suppress_context__ = True",
                          f"{n}.with_traceback(None)", f"{n}_l = [{n}, {n}]"])
        self._probe(n, f"pr_{n} = ({n}.args, {n}.__cause__, {n}.__context__, {n}.__suppress_context__, "
                       f"getattr({n}, '__notes__', None), str({n}) if not {n}.args or type({n}.args[0]) in "
                       f"(int, str) else None)")
        return [form, later] if r.random() < 0.7 else [form]

    def closures2(self) -> list[str]:
        r = self.r
        mk = self.fresh("func")
        a = self.fresh("func")
        b = self.fresh("func")
        for x in (mk, a, b):
            self.names[x] = "func"
        g = self.of("list")
        code = (f"def {mk}(start):\n    total = start\n    log = []\n    def outer():\n        depth = [0]\n"
                f"        def add(v=1):\n            nonlocal total\n            total += v\n            depth[0] += 1\n"
                f"            log.append(total)\n            {'' if not g else g + '.append(total)'}\n"
                f"            return total, depth[0]\n        return add\n"
                f"    def get():\n        return total, list(log)\n    return outer(), get")
        self._probe(a, f"pr_{a} = ({a}(), {b}())")
        out = [code, f"{a}, {b} = {mk}({r.randint(0, 5)})", f"{a}(2)"]
        if r.random() < 0.5:
            c = self.fresh("func")
            self.names[c] = "func"
            out.append(f"{c}, _ = {mk}(100)\n{c}()")
            self._probe(c, f"pr_{c} = {c}()")
        return out

    def class_attrs(self) -> list[str]:
        r = self.r
        k = f"K{self.fresh('c')}"
        n = self.fresh("obj")
        m = self.fresh("obj")
        self.names[k] = "class"
        self.names[n] = "obj"
        self.names[m] = "obj"
        code = (f"class {k}:\n    items = []\n    n = 0\n    _store = {{}}\n    def __init__(self):\n        self.v = 1\n"
                f"    @property\n    def p(self):\n        return self._store.get(id(self) % 7, 0)\n"
                f"    @p.setter\n    def p(self, val):\n        type(self)._store[id(self) % 7] = val\n"
                f"    def get(self):\n        return (len(self.items), self.n, self.v)\n{n} = {k}()\n{m} = {k}()")
        later = r.choice([f"{n}.items.append({self.value()})", f"{n}.__class__.n += 1", f"{n}.n = 5",
                          f"{n}.items = [2]", f"type({m}).items += [3]", f"{n}.p = [1]\n{m}.p = 2",
                          f"{k}.get = lambda self: 'patched'", f"{n}.n = 5\ndel {n}.n"])
        self._probe(n, f"pr_{n} = ({n}.get(), {m}.get(), {k}.items is {n}.items, {n}.p)")
        return [code, later]

    def slots(self) -> list[str]:
        r = self.r
        k = f"S{self.fresh('c')}"
        n = self.fresh("obj")
        self.names[k] = "class"
        self.names[n] = "obj"
        base = r.choice(["", "(dict)", "(list)"])
        extra = r.choice(["", ", '__weakref__'", ", '__dict__'"]) if not base else ""
        code = (f"class {k}{base}:\n    __slots__ = ('a', 'b'{extra})\n    def __init__(self, a):\n        self.a = a\n"
                f"    def get(self):\n        return (getattr(self, 'a', 'unset'), getattr(self, 'b', 'unset'))\n"
                f"{n} = {k}({self.value()})")
        later = r.choice([f"{n}.b = [{n}]", f"del {n}.a", f"{n}.b = {self.value()}",
                          f"{n}.z = 1" if extra == ", '__dict__'" else f"{n}.a = ({n}.a, 1)"])
        if base == "(dict)":
            later += f"\n{n}['k'] = {n}"
        if base == "(list)":
            later += f"\n{n}.append({n})"
        return [code, later]

    def hashing(self) -> list[str]:
        r = self.r
        k = f"H{self.fresh('c')}"
        n = self.fresh("dict")
        s = self.fresh("set")
        self.names[k] = "class"
        self.names[n] = "dict"
        self.names[s] = "other"
        code = (f"class {k}:\n    def __init__(self, v=0):\n        self.v = v\n    def __hash__(self):\n"
                f"        return hash(self.v) % 5\n    def __eq__(self, o):\n        return isinstance(o, {k}) and o.v == self.v\n"
                f"    def get(self):\n        return self.v\n"
                f"{k}_a = {k}(1)\n{n} = {{{k}_a: 'a', {k}(2): 'b'}}\n{s} = {{{k}_a, {k}(3)}}")
        later = r.choice([f"{k}_a.v = 3", f"{k}_a.v = 2", f"{n}[{k}(1)] = 'c'", f"{s}.add({k}(1))",
                          f"{k}_a.v = 7\n{n}[{k}(7)] = 'd'", f"{s}.discard({k}(3))\n{k}_a.v = 3"])
        self._probe(n, f"pr_{n} = ({k}(1) in {n}, {k}_a in {n}, {k}(3) in {s}, {k}_a in {s}, "
                       f"sorted((x.v, y) for x, y in {n}.items()), len({s}))")
        return [code, later]

    def recursive(self) -> list[str]:
        r = self.r
        n = self.fresh("list")
        self.names[n] = "list"
        form = r.choice([
            f"{n} = [1]\n{n}.append({n})",
            f"{n} = [{{}}]\n{n}[0]['me'] = {n}\n{n}[0]['d'] = {n}[0]",
            f"class Node{n}:\n    def __init__(self, parent=None):\n        self.parent = parent\n        self.kids = []\n"
            f"        if parent is not None:\n            parent.kids.append(self)\n    def get(self):\n        return len(self.kids)\n"
            f"{n}_root = Node{n}()\n{n} = [Node{n}({n}_root), Node{n}({n}_root)]",
            f"{n} = [(), []]\n{n}[1].append({n})\n{n}[0] = ({n}[1],)",
        ])
        later = r.choice([f"{n}.append(len({n}))", f"{n}_alias = {n}[-1]", f"{n}.insert(0, [{n}])"])
        if "Node" in form:
            self._probe(n, f"pr_{n} = ([k.parent is {n}_root for k in {n}_root.kids], len({n}_root.kids))")
        return [form, later]

    def buffers(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        form = r.choice([
            f"{n}_ba = bytearray(b'hello world')\n{n} = memoryview({n}_ba)[2:8]\n{n}[0] = 65",
            f"{n}_ba = bytearray(range(12))\n{n} = memoryview({n}_ba).cast('H')",
            f"{n}_b = b'immutable bytes'\n{n} = memoryview({n}_b)[::2]",
            f"{n}_ba = bytearray(b'abcdef')\n{n} = {n}_ba[1:4]\n{n}_ba[1] = 0",
            f"import array\n{n}_ar = array.array('d', [1.0, 2.0, 3.0])\n{n} = memoryview({n}_ar)",
        ])
        later = r.choice([f"{n}_ba[3] = 1" if "_ba" in form else f"{n}_z = bytes({n})",
                          f"{n}_ba.extend(b'!')" if "_ba =" in form and "memoryview" not in form else f"{n}_t = {n}.tobytes()",
                          f"{n}.release()" if "memoryview" in form else f"{n}_x = [{n}]"])
        probe = (f"pr_{n} = (bytes({n}) if not isinstance({n}, memoryview) or not {n}.obj is None else None, "
                 f"{n}.tolist() if isinstance({n}, memoryview) else None)")
        if "_ba = bytearray" in form and "memoryview" in form:
            probe += f"\ntry:\n    {n}_ba.append(1)\n    pr_{n}_grew = True\nexcept BufferError:\n    pr_{n}_grew = False"
        self._probe(n, probe)
        return [form, later]

    def subclasses(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        form = r.choice([
            f"class Tag{n}(str):\n    pass\n{n} = Tag{n}('label')\n{n}.meta = [{self.value()}]",
            f"class Num{n}(int):\n    def __repr__(self):\n        return 'Num(%d)' % self\n{n} = Num{n}(41)\n{n}.unit = 'm'",
            f"class Fl{n}(float):\n    pass\n{n} = Fl{n}(2.5)",
            f"class Tup{n}(tuple):\n    pass\n{n} = Tup{n}(([1], 2))\n{n}[0].append({n})",
            f"class Li{n}(list):\n    pass\n{n} = Li{n}([1, 2])\n{n}.tag = {n}",
            f"class Di{n}(dict):\n    pass\n{n} = Di{n}(a=1)\n{n}.extra = {n}",
            f"class By{n}(bytes):\n    pass\n{n} = By{n}(b'xyz')",
            f"import collections\nPt{n} = collections.namedtuple('Pt{n}', 'x y')\n{n} = Pt{n}([1], 2)\n{n}.x.append(3)",
        ])
        self._probe(n, f"pr_{n} = (repr({n}), type({n}).__name__, {n} == {n}, hash({n}) if type({n}).__hash__ else None)")
        later = r.choice([f"{n}_d = {{{n}: 1}}" if "Li" not in form and "Di" not in form and "Tup" not in form
                          and "Pt" not in form else f"{n}_c = [{n}]", f"{n}_s = str({n})"])
        return [form, later]

    def rng2(self) -> list[str]:
        r = self.r
        n = self.fresh("rng")
        self.names[n] = "rng"
        form = r.choice([
            f"import random\n{n} = random.Random({r.randint(0, 9)})\n{n}.random()\n{n}_st = {n}.getstate()\n{n}.random()",
            f"import random\nclass R{n}(random.Random):\n    pass\n{n} = R{n}(3)\n{n}.label = [1]\n{n}.gauss(0, 1)",
            f"import random\n{n} = random.Random(5)\n{n}.gauss(0, 1)",
        ])
        later = r.choice([f"{n}.setstate({n}_st)" if "_st" in form else f"{n}.seed(9)", f"{n}.shuffle(x_{n} := [1, 2, 3])",
                          f"{n}.gauss(0, 1)"])
        self._probe(n, f"pr_{n} = ({n}.gauss(0, 1), {n}.random())")
        return [form, later]

    def generators2(self) -> list[str]:
        r = self.r
        g = self.of("list")
        o = self.of("obj", "dict")
        n = self.fresh("gen")
        self.names[n] = "gen"
        forms = [
            f"def {n}_f(xs):\n    seen = []\n    for x in list(xs):\n        seen.append(x)\n        got = yield (x, len(seen))\n"
            f"        if got is not None:\n            xs.append(got)\n{n} = {n}_f({g or '[1, 2, 3]'})\nnext({n})",
            f"def {n}_f():\n    acc = []\n    while True:\n        v = yield acc\n        acc.append(v)\n{n} = {n}_f()\nnext({n})\n{n}.send({o or 1})",
            f"{n}_d = {{'a': 1, 'b': 2, 'c': 3}}\n{n} = ((k, v) for k, v in {n}_d.items())\nnext({n})",
            f"def {n}_f(o):\n    yield o\n    yield [o]\n{n} = {n}_f({o or g or '[1]'})",
            f"def {n}_f():\n    try:\n        yield 1\n        yield 2\n    finally:\n        globals()['{n}_done'] = True\n{n} = {n}_f()\nnext({n})",
        ]
        form = r.choice(forms)
        later = r.choice([f"next({n}, None)", f"{n}.send(5)" if ".send" in form else f"next({n}, None)",
                          f"{n}_d['d'] = 4" if f"{n}_d" in form else f"{n}_x = [next({n}, None) for _ in range(2)]"])
        self._draw(n)
        return [form, later] if r.random() < 0.6 else [form]

    def misc_objects(self) -> list[str]:
        r = self.r
        n = self.fresh("other")
        self.names[n] = "other"
        d = self.of("dict")
        o = self.of("obj")
        forms = [
            (f"import io\n{n} = io.StringIO('line1\\nline2\\nline3\\n')\n{n}.readline()", f"pr_{n} = ({n}.tell(), {n}.readline())"),
            (f"import io\n{n} = io.BytesIO(b'0123456789')\n{n}.seek(4)\n{n}.write(b'xx')", f"pr_{n} = ({n}.tell(), {n}.read(2))"),
            (f"import types\n{n} = types.SimpleNamespace(a=[1], b={self.value()})\n{n}.c = {n}.a", f"pr_{n} = (dict(vars({n})), {n}.a is {n}.c)"),
            (f"import types\n{n} = types.MappingProxyType({d or '{}'})", f"pr_{n} = dict({n})"),
            (f"import fractions, decimal\n{n} = [fractions.Fraction(1, 3), decimal.Decimal('1.10'), decimal.getcontext().prec]",
             f"pr_{n} = ({n}[0] * 3, {n}[1] / 3)"),
            (f"import decimal\ndecimal.getcontext().prec = 5\n{n} = decimal.Decimal(1) / 7", f"pr_{n} = (str(decimal.Decimal(2) / 3), {n})"),
            (f"import weakref\n{n} = weakref.WeakValueDictionary()\n{n}_keep = type('W', (), {{}})()\n{n}['o'] = {o or n + '_keep'}",
             f"pr_{n} = sorted({n}.keys())"),
            (f"import re\n{n} = re.compile(r'(a+)b', re.I)\n{n}_m = {n}.search('xAAby')", f"pr_{n} = ({n}_m.group(1) if {n}_m else None, {n}.flags)"),
            (f"import operator\n{n} = operator.itemgetter(0, -1)\n{n}_a = operator.attrgetter('real')", f"pr_{n} = ({n}('abc'), {n}_a(3))"),
            (f"import array\n{n} = array.array('i', [3, 1, 2])\n{n}_it = iter({n})\nnext({n}_it)", f"pr_{n} = (list({n}_it), {n}.tolist())"),
            (f"import datetime\n{n} = datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))",
             f"pr_{n} = ({n}.isoformat(), {n}.utcoffset())"),
            (f"{n} = {{}}\n{n}['k'] = {n}.keys()\n{n}['v'] = {n}.values()", f"pr_{n} = (list({n}['k']), len({n}['v']))"),
        ]
        make, probe = r.choice(forms)
        self._probe(n, probe)
        return [make]


#: seeds from here on use the extended grammar (`Gen2`); seeds below keep their notebooks
EXTENDED = 1_000_000


def notebook(seed: int) -> tuple[list[str], str, list[str]]:
    """The cells, the probe, and cells run after a first migration (before a second)."""
    g = Gen2(seed) if seed >= EXTENDED else Gen(seed)
    cells = g.notebook(g.r.randint(4, 12))
    more = g.notebook(g.r.randint(1, 4))
    return cells, g.probe(), more


# ---------------------------------------------------------------------------------------------
# the structural snapshot


ATOMS = (type(None), bool, int, float, complex, str, bytes)
#: compare the iteration order of sets too (a shipped set of strings iterated in another order
#: than the original even with one hash seed, until `serialize._reordered_sets`)
SET_ORDER = os.environ.get("FUZZ_SET_ORDER") == "1"
DICT_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
SKIP = {"In", "Out", "exit", "quit", "get_ipython"}
#: immutable value types of the standard library, compared as atoms
VALUE_TYPES = {"Decimal", "Fraction", "datetime", "date", "time", "timedelta", "timezone"}


def _is_user(o: Any) -> bool:
    mod = getattr(o, "__module__", None)
    return mod in ("__main__", None) or mod == "builtins" and isinstance(o, types.FunctionType)


def _code_key(c: types.CodeType) -> str:
    """The code's bytes and constants, nested code objects by their own key (not their repr,
    which holds an address)."""
    consts = [_code_key(x) if isinstance(x, types.CodeType) else repr(x) for x in c.co_consts]
    return hashlib.sha1(c.co_code + repr((consts, c.co_names, c.co_varnames)).encode()).hexdigest()[:12]


_UNSET = ["unset"]


def _empty_iterator(x: Any) -> bool:
    """An iterator over an empty tuple or list (what an exhausted input pickles to)."""
    if type(x).__name__ not in ("tuple_iterator", "list_iterator"):
        return False
    try:
        return not x.__reduce__()[1][0]
    except Exception:  # noqa: BLE001
        return False


def _slot_values(o: Any, t: type) -> list[tuple[str, Any]]:
    """The values in an object's ``__slots__`` (read through the member descriptors, never
    the object's own ``__getattr__``); ["unset"] for an empty slot."""
    out: list[tuple[str, Any]] = []
    for cls in t.__mro__:
        names = cls.__dict__.get("__slots__", ())
        for k in [names] if isinstance(names, str) else names:
            desc = cls.__dict__.get(k)
            if k in ("__dict__", "__weakref__") or not hasattr(desc, "__get__") or type(desc).__name__ != "member_descriptor":
                continue
            try:
                out.append((k, desc.__get__(o, t)))
            except AttributeError:
                out.append((k, _UNSET))
    return out


def _builtin_base(o: Any, path: str, depth: int, enc: Any) -> Any:
    """The value of an instance of a subclass of a builtin (a str subclass's text, a
    list subclass's items, a Counter's counts), which `__dict__` does not hold."""
    t = type(o)
    if t.__module__ == "builtins":
        return None
    if isinstance(o, (str, bytes, int, float, complex)):
        for b in (bool, int, float, complex, str, bytes):
            if isinstance(o, b):
                return ["base", b.__name__, repr(b(o))]
    if isinstance(o, tuple):
        return ["base", "tuple", [enc(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(tuple.__iter__(o))]]
    if isinstance(o, list):
        return ["base", "list", [enc(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(list.__iter__(o))]]
    if isinstance(o, dict):
        import collections  # (an OrderedDict's order is its links', not its table's)
        items = o.items() if isinstance(o, collections.OrderedDict) else dict.items(o)
        return ["base", "dict", [[enc(k, "?", depth + 1), enc(v, f"{path}[{k!r}]", depth + 1)]
                                 for k, v in items]]
    if isinstance(o, (set, frozenset)):
        return ["base", "set", sorted(json.dumps(enc(x, "?", depth + 1)) for x in set(o))]
    return None


def _special(o: Any, t: type, path: str, depth: int, enc: Any) -> Any:
    """Objects whose state neither ``__dict__`` nor their reduce shows: caches, deques,
    partials, exceptions, tracebacks, memoryviews, mapping proxies, pandas objects."""
    import collections
    import functools

    if isinstance(o, functools._lru_cache_wrapper):
        cache = [r for r in gc.get_referents(o) if type(r) is dict and r is not getattr(o, "__dict__", None)]
        items = [[json.dumps(enc(k, "?", depth + 1)), enc(v, f"{path}.<cache>[{i}]", depth + 1)]
                 for i, (k, v) in enumerate(cache[0].items())] if cache else None
        info = o.cache_info()  # (its hit and miss counts are statistics, not its value)
        return ["lru_cache", info.maxsize, info.currsize, enc(o.__wrapped__, f"{path}.__wrapped__", depth + 1),
                enc(dict(o.__dict__), f"{path}.__dict__", depth + 1), items]
    if t in (staticmethod, classmethod):  # (its __dict__: what update_wrapper copied, or not)
        return [t.__name__, enc(o.__func__, f"{path}.__func__", depth + 1)]
    if t is property:
        return ["property", [enc(f, f"{path}.{k}", depth + 1) for k, f in
                             (("fget", o.fget), ("fset", o.fset), ("fdel", o.fdel))]]
    if t is functools.cached_property:
        return ["cached_property", enc(o.func, f"{path}.func", depth + 1), o.attrname]
    if t is functools.partial:
        return ["partial", enc(o.func, f"{path}.func", depth + 1), enc(o.args, f"{path}.args", depth + 1),
                enc(o.keywords, f"{path}.keywords", depth + 1), enc(o.__dict__, f"{path}.__dict__", depth + 1)]
    if isinstance(o, collections.deque):
        return ["deque", t.__qualname__, o.maxlen, [enc(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(o)],
                enc(getattr(o, "__dict__", None), f"{path}.__dict__", depth + 1)]
    if isinstance(o, BaseException):
        # (its __traceback__ is left out: frames cannot leave the process, and a shipped
        # exception comes back without one by design, see serialize._with_exception_chain)
        return ["exception", enc(t, f"{path}.__class__", depth + 1), enc(o.args, f"{path}.args", depth + 1),
                enc(o.__cause__, f"{path}.__cause__", depth + 1), enc(o.__context__, f"{path}.__context__", depth + 1),
                o.__suppress_context__, enc(o.__dict__, f"{path}.__dict__", depth + 1)]
    if isinstance(o, types.TracebackType):
        lines = []
        while o is not None:
            lines.append([o.tb_frame.f_code.co_name, o.tb_lineno])
            o = o.tb_next
        return ["traceback", lines]
    if t is memoryview:
        try:
            return ["memoryview", enc(o.obj, f"{path}.obj", depth + 1), o.tobytes().hex(), o.format,
                    list(o.shape or ()), list(o.strides or ()), o.readonly]
        except ValueError:
            return ["memoryview", "released"]
    if t is types.MappingProxyType:
        return ["mappingproxy", enc(next((r for r in gc.get_referents(o)), None), f"{path}.<mapping>", depth + 1)]
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(o, (pd.DataFrame, pd.Series, pd.Index)):
        frame = o.to_frame() if isinstance(o, pd.Series) else o if isinstance(o, pd.DataFrame) else None
        dtypes = repr(frame.dtypes.to_dict()) if frame is not None else repr(o.dtype)
        vals = o.to_numpy(dtype=object).ravel().tolist()
        return ["pandas", t.__name__, dtypes, repr(o.index) if frame is not None else None,
                repr(list(o.columns)) if isinstance(o, pd.DataFrame) else repr(getattr(o, "name", None)),
                [enc(x, f"{path}<{i}>", depth + 1) for i, x in enumerate(vals)],
                enc(dict(o.attrs), f"{path}.attrs", depth + 1) if hasattr(o, "attrs") else None,
                [o.flags.allows_duplicate_labels] if hasattr(o, "flags") else None]
    return None


def snapshot(ns: dict, exclude: set[str] = frozenset()) -> dict[str, Any]:
    """A JSON-able description of the user's variables: values, and identity as the path at
    which each shared object was first met (names in sorted order)."""
    import numpy as np

    memo: dict[int, str] = {}
    keep: list[Any] = []

    def ident(o: Any, path: str) -> str | None:
        i = id(o)
        if i in memo:
            return memo[i]
        memo[i] = path
        keep.append(o)
        return None

    def enc(o: Any, path: str, depth: int) -> Any:
        if depth > 25:
            return ["deep"]
        t = type(o)
        if t in ATOMS:
            if t is float:
                return ["float", repr(o)]
            return [t.__name__, repr(o)]
        if isinstance(o, types.ModuleType):
            return ["module", o.__name__]
        if o is builtins.__dict__:  # the process's own (an `exec` namespace's __builtins__)
            return ["builtins"]
        if t is tuple:
            return ["tuple", [enc(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(o)]]
        if t in (frozenset,):
            return ["frozenset", sorted(json.dumps(enc(x, "?", depth + 1)) for x in o)]
        lib = isinstance(o, (type, types.FunctionType, types.BuiltinFunctionType)) and not _is_user(o)
        if lib:
            return ["libref", getattr(o, "__module__", "?"), getattr(o, "__qualname__", "?")]
        if t is re.Pattern:  # immutable, and `re.compile` hands out one cached object: no identity
            return ["re.Pattern", repr(o.pattern), o.flags]
        if t.__module__ in ("decimal", "fractions", "datetime") and t.__name__ in VALUE_TYPES:
            return [t.__name__, repr(o)]  # immutable numbers and dates: no identity to keep, as ints
        if isinstance(o, np.generic) and not isinstance(o, np.void) and o.dtype != object:
            return ["npscalar", str(o.dtype), repr(o)]  # immutable: no identity to keep
        if isinstance(o, np.ndarray):
            root = o
            while isinstance(root.base, np.ndarray):
                root = root.base
            rref = enc(root, f"{path}.<root>", depth + 1) if root is not o else None
            seen = ident(o, path)
            if seen is not None:
                return ["ref", seen]
            off = o.__array_interface__["data"][0] - root.__array_interface__["data"][0] if root is not o else 0
            vals = ([enc(x, f"{path}<{i}>", depth + 1) for i, x in enumerate(o.ravel(order="K").tolist())]
                    if o.dtype == object else hashlib.sha1(np.ascontiguousarray(o).tobytes()).hexdigest())
            if o.size == 0:  # no memory to share, strides meaningless
                return ["ndarray", str(o.dtype), list(o.shape)]
            arr = ["ndarray", str(o.dtype), list(o.shape), list(o.strides), off, rref,
                    bool(o.flags.writeable), vals]
            if t is not np.ndarray:  # a subclass: its type, and a masked array's mask and fill
                arr.append(t.__qualname__)
                if isinstance(o, np.ma.MaskedArray):
                    arr.append([enc(np.ma.getmaskarray(o), f"{path}.<mask>", depth + 1),
                                repr(o.fill_value), bool(o.hardmask), bool(o._sharedmask)])
            return arr
        seen = ident(o, path)
        if seen is not None:
            return ["ref", seen]
        if t is list:
            return ["list", [enc(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(o)]]
        if isinstance(o, dict) and t in (dict,):
            return ["dict", [[enc(k, "?", depth + 1), enc(v, f"{path}[{k!r}]", depth + 1)] for k, v in o.items()]]
        if t in (set,):
            items = [json.dumps(enc(x, "?", depth + 1)) for x in o]
            return ["set", items if SET_ORDER else sorted(items)]
        if t is bytearray:
            return ["bytearray", bytes(o).hex()]
        if t is types.CellType:
            try:
                return ["cell", enc(o.cell_contents, f"{path}.cell", depth + 1)]
            except ValueError:
                return ["cell", "empty"]
        if isinstance(o, types.FunctionType):
            c = o.__code__
            return ["function", o.__qualname__, _code_key(c),
                    enc(o.__defaults__, f"{path}.__defaults__", depth + 1),
                    enc(o.__kwdefaults__, f"{path}.__kwdefaults__", depth + 1),
                    [enc(x, f"{path}.__closure__[{i}]", depth + 1) for i, x in enumerate(o.__closure__ or ())],
                    enc(dict(o.__dict__), f"{path}.__dict__", depth + 1),
                    o.__globals__ is ns]
        if isinstance(o, types.MethodType):
            return ["method", o.__func__.__qualname__, enc(o.__self__, f"{path}.__self__", depth + 1)]
        if isinstance(o, type):
            attrs = {k: v for k, v in sorted(vars(o).items()) if k not in (
                "__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slotnames__")}
            return ["class", o.__qualname__, [enc(b, f"{path}.__bases__[{i}]", depth + 1) for i, b in enumerate(o.__bases__)],
                    [[k, enc(v, f"{path}.{k}", depth + 1)] for k, v in attrs.items()]]
        if isinstance(o, types.GeneratorType):
            fr = o.gi_frame
            if fr is None:
                return ["generator", o.__qualname__, "done"]
            return ["generator", o.__qualname__, fr.f_lasti,
                    [[k, enc(v, f"{path}.<{k}>", depth + 1)] for k, v in sorted(fr.f_locals.items())]]
        if isinstance(o, random.Random):
            return ["Random", hashlib.sha1(repr(o.getstate()).encode()).hexdigest(), t.__qualname__,
                    enc(getattr(o, "__dict__", None), f"{path}.__dict__", depth + 1)]
        special = _special(o, t, path, depth, enc)
        if special is not None:
            return special
        if isinstance(o, np.random.Generator):
            return ["Generator", hashlib.sha1(repr(o.bit_generator.state).encode()).hexdigest()]
        out: list[Any] = ["object", enc(t, f"{path}.__class__", depth + 1)]
        if isinstance(o, weakref.ref):
            return out + [enc(o(), f"{path}()", depth + 1)]
        if t in DICT_VIEWS:  # over which dict
            out.append(enc(next((r for r in gc.get_referents(o) if isinstance(r, dict)), None),
                           f"{path}.<dict>", depth + 1))
            return out
        try:  # (never through the object's own __getattr__: it may change something)
            d = object.__getattribute__(o, "__dict__")
        except Exception:  # noqa: BLE001
            d = None
        if isinstance(d, dict):
            out.append(enc(d, f"{path}.__dict__", depth + 1))
        slots = _slot_values(o, t)
        if slots:
            out.append([[k, enc(v, f"{path}.{k}", depth + 1)] for k, v in slots])
        base = _builtin_base(o, path, depth, enc)
        if base is not None:  # a subclass of a builtin: its value as the builtin
            out.append(base)
            return out
        if t.__module__ != "__main__" and not isinstance(d, dict):
            try:  # the state of iterators, deques, defaultdicts... as they pickle
                rv = o.__reduce_ex__(4)
            except Exception:  # noqa: BLE001
                rv = None
            if (isinstance(rv, tuple) and len(rv) == 3 and rv[0] is iter and rv[2] == 0
                    and isinstance(rv[1], tuple) and len(rv[1]) == 1 and not rv[1][0]):
                rv = rv[:2]  # at 0 over an empty sequence: as exhausted (its identity still compared)
            if isinstance(rv, tuple) and len(rv) > 1 and t.__name__ == "zip_longest":
                # an exhausted input is () in the original's reduce, an iterator over () in
                # the copy's (rebuilt from that reduce): both yield nothing
                rv = (rv[0], tuple(() if _empty_iterator(x) else x for x in rv[1]), *rv[2:])
            if isinstance(rv, tuple) and len(rv) > 1:
                out.append([enc(x, f"{path}.<r{i}>", depth + 1) for i, x in enumerate(rv[1:4])])
                if len(rv) > 4 and rv[4] is not None and t.__name__ in ("defaultdict", "OrderedDict", "Counter"):
                    out.append(enc(dict(o), f"{path}.<items>", depth + 1))
            else:
                r = repr(o)
                out.append(r if " at 0x" not in r else "?")
        return out

    result: dict[str, Any] = {}
    for name in sorted(k for k in ns if isinstance(k, str)):
        if name in exclude or name.startswith("_") or name in SKIP:
            continue
        try:
            result[name] = enc(ns[name], name, 0)
        except Exception as e:  # noqa: BLE001
            result[name] = ["snapshot-error", repr(e)]
    import numpy as np  # noqa: F811

    result["<random>"] = hashlib.sha1(repr(random.getstate()).encode()).hexdigest()
    if "decimal" in sys.modules:  # the thread's decimal context (precision, rounding, traps)
        result["<decimal>"] = repr(sys.modules["decimal"].getcontext())
    result["<np.random>"] = hashlib.sha1(repr(np.random.get_state(legacy=False)).encode()).hexdigest()
    return result


def _first_diff(x: Any, y: Any, where: str = "") -> tuple[str, Any, Any]:
    """Where two snapshots of a name first differ (a path into their JSON), and both there."""
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if u != v:
                return _first_diff(u, v, f"{where}[{i}]")
    return where or "top", x, y


def compare(a: dict, b: dict, restore: dict) -> list[str]:
    """Silent differences: a name that differs, or is missing, while the restore says it is
    verified (or says nothing about it)."""
    variables = restore.get("variables", {})
    out = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) == b.get(name):
            continue
        v = variables.get(name)
        if name.startswith("<"):
            out.append(f"{name}: generator state differs")
            continue
        if v is None:
            out.append(f"{name}: {'missing in B' if name not in b else 'extra in B' if name not in a else 'differs'}"
                       " and not in the restore summary")
        elif v.get("action") == "lost":
            continue
        elif v.get("verified"):
            where, x, y = _first_diff(a.get(name), b.get(name))
            out.append(f"{name}: verified but differs at {where}: A={json.dumps(x)[:300]} B={json.dumps(y)[:300]}")
    return out


# ---------------------------------------------------------------------------------------------
# forked shells


STATS: list[tuple] = []


def _shell() -> Any:
    """The process's shell, with the agent loaded: made once in the driver before it forks,
    so each forked kernel starts from a pristine copy (1-2 s saved per kernel)."""
    from IPython.core.interactiveshell import InteractiveShell

    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    sh = InteractiveShell.instance(history_length=0)
    sh.history_manager.enabled = False
    sh.run_cell("%load_ext kernel_agent", store_history=False)
    return sh


def _random_plan(seed: int) -> Any:
    """Force each co-variable to be shipped or recomputed at random (as test_random_plans)."""
    import kernel_agent.checkpointing as ckm

    orig = ckm._covar_cost

    def cost(u: Any, graph: Any, strategy: str) -> Any:
        side = random.Random(f"{seed}/{u.key}").choice(["ship-all", "recompute-all"])
        return orig(u, graph, side)

    ckm._covar_cost = cost
    return orig


def _serve(conn: Any, root: str) -> None:
    """A fresh shell answering the driver's commands (see `Shell`)."""
    try:
        os.chdir(root)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        sys.stderr = sys.stdout
        sh = _shell()
        ns = sh.user_ns
        while True:
            cmd, *args = conn.recv()
            if cmd == "run":
                conn.send([i for i, c in enumerate(args[0]) if not sh.run_cell(c, store_history=True).success])
            elif cmd == "checkpoint":
                url, kw, rseed = args
                orig = _random_plan(rseed) if rseed is not None else None
                ns.pop("_c", None)
                sh.run_cell(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}{kw})", store_history=False)
                if orig is not None:
                    import kernel_agent.checkpointing as ckm
                    ckm._covar_cost = orig
                conn.send("_c" in ns)
            elif cmd == "restore":
                sh.run_cell(f"import kernel_agent as _ka; _r = _ka.restore({args[0]!r})", store_history=False)
                rst = ns.get("_r")
                conn.send(json.loads(json.dumps(rst, default=str)) if rst is not None else None)
            elif cmd == "snap":
                conn.send(snapshot(ns, set(args[0])))
            elif cmd == "probe":
                state = random.getstate()
                pid = os.fork()
                if pid == 0:  # a copy without the names lost runs the probe
                    random.setstate(state)  # (`random` reseeds itself in a forked child)
                    before = set(ns)
                    for n in args[0]:
                        ns.pop(n, None)
                    gc.collect()  # a lost generator's `finally` may bind a name: not in B
                    for n in set(ns) - before:
                        del ns[n]
                    sh.run_cell(args[1], store_history=False)
                    conn.send(snapshot(ns))
                    os._exit(0)
                os.waitpid(pid, 0)
            else:
                return
    except BaseException:  # noqa: BLE001
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()
        os._exit(0)


class Shell:
    """A forked fresh shell driven through a pipe."""

    def __init__(self, root: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, root))
        self.proc.start()

    def __call__(self, *msg: Any, timeout: float = 180) -> Any:
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            raise TimeoutError(msg[0])
        out = self.conn.recv()
        if isinstance(out, tuple) and out and out[0] == "error":
            raise RuntimeError(out[1])
        return out

    def close(self) -> None:
        try:
            self.conn.send(("quit",))
        except Exception:  # noqa: BLE001
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


#: plans tried besides PLANS: each co-variable shipped or recomputed at random (seeded)
RANDOM_PLANS = {"random-0": 0, "random-1": 1}


def _compare_restore(src: Shell, dst: Shell, rst: dict, probe: str | None) -> list[str]:
    excl = sorted(rst["lost"])
    diffs = compare(src("snap", excl), dst("snap", excl), rst)
    if not diffs and probe and not rst["mismatched"]:
        everything = {"variables": None}
        a2, b2 = src("probe", excl, probe), dst("probe", excl, probe)
        everything["variables"] = {n: {"verified": True} for n in set(a2) | set(b2)}
        diffs = [f"after the probe: {d}" for d in compare(a2, b2, everything)]
    return diffs


def run_forked(cells: list[str], probe: str, plans: list[str] | None = None,
               more: list[str] | None = None) -> dict[str, list[str]]:
    """{plan: silent differences} for one notebook, each kernel a forked fresh shell. With
    `more`, the restored kernel of the optimal plan runs those cells and migrates again."""
    plans = plans or [*PLANS, *RANDOM_PLANS]
    found: dict[str, list[str]] = {}
    shells: list[Shell] = []
    with tempfile.TemporaryDirectory() as root:
        try:
            a = Shell(root)
            shells.append(a)
            fails = a("run", cells)
            for p in plans:
                if not a("checkpoint", f"file://{root}/{p}", PLANS.get(p, ""), RANDOM_PLANS.get(p)):
                    found[p] = ["checkpoint raised"]
            for p in plans:
                if p in found:
                    continue
                b = Shell(root)
                shells.append(b)
                rst = b("restore", f"file://{root}/{p}")
                if rst is None:
                    found[p] = ["restore raised"]
                    continue
                STATS.append((p, len(fails), sorted(rst["lost"]), rst["mismatched"]))
                diffs = _compare_restore(a, b, rst, probe)
                if not diffs and more and p == "optimal":
                    b("run", more)
                    if b("checkpoint", f"file://{root}/hop", "", None):
                        c = Shell(root)
                        shells.append(c)
                        rst2 = c("restore", f"file://{root}/hop")
                        diffs = ([f"second hop: {d}" for d in _compare_restore(b, c, rst2, probe)]
                                 if rst2 is not None else ["second restore raised"])
                if diffs:
                    found[p] = diffs
        except (TimeoutError, RuntimeError) as e:
            found["*"] = [f"{type(e).__name__}: {e}"]
        finally:
            for sh in shells:
                sh.close()
    return found


# ---------------------------------------------------------------------------------------------
# real kernels (to confirm)


SNAPSHOT_SRC = None


def run_real(cells: list[str], probe: str, plans: list[str] | None = None) -> dict[str, list[str]]:
    from tests.kernels import Kernel

    env = {**os.environ, "PYTHONHASHSEED": "0"}
    plans = plans or list(PLANS)
    found: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as root:
        a = Kernel(cwd=root, env=env)
        bs = []
        try:
            a.ok("%load_ext kernel_agent")
            for c in cells:
                a.run(c)
            for p in plans:
                a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({'file://' + os.path.join(root, p)!r}{PLANS[p]})")
            a.ok("from tests.engine.notebook_fuzz import snapshot as _snap")
            for p in plans:
                b = Kernel(cwd=root, env=env)
                bs.append(b)
                b.ok("%load_ext kernel_agent")
                b.ok(f"import kernel_agent as _ka; _r = _ka.restore({'file://' + os.path.join(root, p)!r})")
                rst = json.loads(b.value("__import__('json').dumps(_r, default=str)"))
                b.ok("from tests.engine.notebook_fuzz import snapshot as _snap")
                excl = sorted(rst["lost"])
                sb = json.loads(b.value(f"__import__('json').dumps(_snap(globals(), set({excl!r})))"))
                sa = json.loads(a.value(f"__import__('json').dumps(_snap(globals(), set({excl!r})))"))
                d = compare(sa, sb, rst)
                if d:
                    found[p] = d
        finally:
            a.shutdown()
            for b in bs:
                b.shutdown()
    return found


def _seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-20")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--show", action="store_true")
    ap.add_argument("--plans", default="")
    args = ap.parse_args()
    if not args.real:
        import IPython  # noqa: F401
        import numpy  # noqa: F401

        import kernel_agent.checkpointing  # noqa: F401
        import kernel_agent.monitor  # noqa: F401
        import kernel_agent.restoring  # noqa: F401

        for lib in ("pandas", "attrs"):  # imported once here, as numpy (the extended grammar's)
            try:
                __import__(lib)
            except ImportError:
                pass
        _shell()
    bad = 0
    for seed in _seeds(args.seeds):
        cells, probe, more = notebook(seed)
        if args.show:
            print(f"--- seed {seed}")
            for i, c in enumerate(cells):
                print(f"[{i}] " + c.replace("\n", "\n    "))
            for c in more:
                print("[more] " + c.replace("\n", "\n    "))
            print("[probe] " + probe.replace("\n", "\n    "))
        plans = args.plans.split(",") if args.plans else None
        found = (run_real(cells, probe, plans) if args.real
                 else run_forked(cells, probe, plans, more))
        if found:
            bad += 1
            print(f"seed {seed}: " + json.dumps(found, indent=1)[:3000], flush=True)
        else:
            print(f"seed {seed}: ok", flush=True)
        if args.show:
            for st in STATS:
                print("   ", st)
        STATS.clear()
    print(f"{bad} notebooks with silent differences")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
