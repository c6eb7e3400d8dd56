"""Differential fuzzing of whole notebooks: random cells run in kernel A, migrated with each
plan, and the restored namespace compared to A's structurally (values and which names and
parts share objects). Every difference must be reported (`lost`, or not verified), never
silent.

    PYTHONHASHSEED=0 python -m tests.engine.notebook_fuzz --seeds 0-200          # forked shells
    PYTHONHASHSEED=0 python -m tests.engine.notebook_fuzz --seeds 7 --real --show  # real kernels

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


def notebook(seed: int) -> tuple[list[str], str, list[str]]:
    """The cells, the probe, and cells run after a first migration (before a second)."""
    g = Gen(seed)
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


def _is_user(o: Any) -> bool:
    mod = getattr(o, "__module__", None)
    return mod in ("__main__", None) or mod == "builtins" and isinstance(o, types.FunctionType)


def _code_key(c: types.CodeType) -> str:
    """The code's bytes and constants, nested code objects by their own key (not their repr,
    which holds an address)."""
    consts = [_code_key(x) if isinstance(x, types.CodeType) else repr(x) for x in c.co_consts]
    return hashlib.sha1(c.co_code + repr((consts, c.co_names, c.co_varnames)).encode()).hexdigest()[:12]


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
            return ["ndarray", str(o.dtype), list(o.shape), list(o.strides), off, rref,
                    bool(o.flags.writeable), vals]
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
            return ["Random", hashlib.sha1(repr(o.getstate()).encode()).hexdigest()]
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
        if t.__module__ != "__main__" and not isinstance(d, dict):
            try:  # the state of iterators, deques, defaultdicts... as they pickle
                rv = o.__reduce_ex__(4)
            except Exception:  # noqa: BLE001
                rv = None
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
    result["<np.random>"] = hashlib.sha1(repr(np.random.get_state(legacy=False)).encode()).hexdigest()
    return result


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
            out.append(f"{name}: verified but differs: A={json.dumps(a.get(name))[:300]} B={json.dumps(b.get(name))[:300]}")
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
                    for n in args[0]:
                        ns.pop(n, None)
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
