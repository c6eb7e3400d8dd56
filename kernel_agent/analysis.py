"""Which user variables a cell may read: a static over-approximation with no run-time cost.

Runs inside the user's kernel process, called by `kernel_agent.monitor` before each recorded cell.

Design decision (kept on purpose): the user namespace stays a plain `dict`. A tracking dict
subclass (Kishu's `TrackedNamespace`) sees every read exactly, but puts a Python-level
`__getitem__` on every global lookup, which makes tight loops several times slower; our overhead
target is 1%. Instead, the reads of a cell are

* every global name loaded by the cell's transformed code, in all nested code objects
  (comprehensions, lambdas, class bodies, decorators, default arguments);
* identifier tokens in magic arguments (`%time x = f(y)`) and the names of literal
  `eval`/`exec` strings (compiled and analysed like the cell);
* the transitive closure through notebook-defined code reachable from those names: functions
  whose `__globals__` is the user namespace (their code, closures, defaults, `__wrapped__`),
  notebook classes (methods, properties, static/class methods, nested classes, metaclass),
  instances of notebook classes, bound methods, partials, and containers holding any of those
  (numpy arrays of Python objects and pandas object columns too, type-scanned in C).

Dynamic namespace access (`globals()`, `locals()`, `vars()`, `eval`/`exec` of a non-literal,
`get_ipython().user_ns`, `sys.modules`, `import __main__`, frame globals, ...), code Python
cannot show (Python functions registered on a sqlite3 connection, ctypes callbacks a C library
may have kept, a notebook module reading its caller's frame) or a closure walk over budget means
"reads every user variable". Over-approximating is safe: it only adds edges to
the history graph. Missing a read would be a correctness bug (a silently wrong restore, as in
ElasticNotebook's `r = obj.m()` case), so every doubt resolves to "read".
"""

from __future__ import annotations

import ast
import builtins
import collections
import dis
import functools
import gc
import inspect
import keyword
import logging
import operator
import re
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernel_agent import effects
from kernel_agent.changes import c_referents
from kernel_agent.dictversion import dict_version

log = logging.getLogger("kernel_agent")

_LOAD_OPS = frozenset({"LOAD_NAME", "LOAD_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"})
_STORE_OPS = frozenset({"STORE_NAME", "STORE_GLOBAL"})
_DELETE_OPS = frozenset({"DELETE_NAME", "DELETE_GLOBAL"})
_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR", "STORE_ATTR", "DELETE_ATTR"})
_CALL_OPS = frozenset({"PRECALL", "CALL"})
_SIMPLE_LOADS = frozenset({"LOAD_NAME", "LOAD_GLOBAL", "LOAD_FAST", "LOAD_DEREF", "LOAD_CONST",
                           "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_CLASSDEREF"})

# Names that, loaded as globals, hand the namespace itself to the code.
_ALWAYS_DYNAMIC_NAMES = frozenset({"globals", "locals"})
# Attributes through which code reaches the namespace or runs code in it.
_DYNAMIC_ATTRS = frozenset({
    "user_ns", "user_global_ns", "user_ns_hidden", "run_cell", "run_cell_async", "run_code",
    "run_ast_nodes", "del_var", "drop_by_id", "safe_execfile", "safe_execfile_ipy",
    "safe_run_module", "f_globals", "f_locals", "f_builtins", "__globals__", "_getframe",
})
# Shell methods whose names are too common to mean "dynamic" on any object (`env.reset()`,
# `stack.push(x)`): dynamic only when the code can reach the shell (loads `get_ipython`, or a
# name bound to the shell).
_SHELL_ONLY_ATTRS = frozenset({"ex", "ev", "push", "reset"})
# `get_ipython().<attr>(...)` calls whose string arguments are (or contain) user code or names.
_MAGIC_ATTRS = frozenset({"run_line_magic", "run_cell_magic", "system", "getoutput",
                          "run_magic", "magic"})
# Magics that read the namespace as a whole, run files, or replay history.
DYNAMIC_MAGICS = frozenset({
    "run", "store", "who", "whos", "who_ls", "reset", "reset_selective", "xdel", "rerun",
    "recall", "macro", "save", "load", "edit", "pinfo", "pinfo2", "psearch", "pdef", "pdoc",
    "psource", "pfile", "debug", "pdb", "notebook", "history", "hist", "autoreload", "aimport",
    "pastebin", "logstart", "paste", "cpaste", "precision", "config", "ed",
})
# Methods that evaluate an expression string against the *caller's frame*: pandas'
# `DataFrame.query("a > @thr")`, `DataFrame.eval`, `pd.eval("x1 + x2")`, numexpr's
# `evaluate("a * b")` look names up in the calling code's locals and globals. No load
# instruction names them, so the identifier tokens of the code's string constants count as
# reads when it uses one of these attributes (over-approximate: `model.eval()` only adds the
# tokens of its strings, which are dropped unless they name variables).
_FRAME_EVAL_ATTRS = frozenset({"query", "eval", "evaluate"})
# Tokens that, in magic arguments, mean the namespace is reached dynamically.
_DYNAMIC_TOKENS = _ALWAYS_DYNAMIC_NAMES | {"vars", "eval", "exec", "__import__", "__main__",
                                           "get_ipython"} | _DYNAMIC_ATTRS
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NESTED_MAGIC = re.compile(r"%%?([A-Za-z_][A-Za-z0-9_]*)")
# ctypes' callback types: a C library may keep the callback and call it from any later call
# into it (`lib.register(CB(f))`, then `lib.fire()`: the cell names neither `f` nor the callback)
_CALLBACK_FACTORIES = frozenset({"CFUNCTYPE", "WINFUNCTYPE", "PYFUNCTYPE"})
# set once code making ctypes callbacks was analysed (or one was walked): from then on a cell
# calling into a C library reads every variable (see _Walker._ctypes)
_c_callbacks_made = [False]

# A cell that awaits at top level is re-run by the restore on an asyncio loop of its own
# (`restoring._AwaitRunner`), which is how it ran under IPython's asyncio autoawait. Under
# another loop runner (`%autoawait trio`, curio, a custom one) what it awaits needs that
# library's loop: such a cell is not re-runnable, so what it makes is shipped (or named as
# lost), never half-made.
TOP_LEVEL_AWAIT = "awaits at top level under a loop runner other than asyncio's (the restore cannot re-run it)"

WALK_BUDGET = 20_000  # objects visited by the closure walk per cell
GENERIC_DEPTH = 4  # how deep the best-effort walk goes into objects of library classes
BULK_SCAN_LIMIT = 5_000_000  # elements of one container type-scanned in C before giving up
_CODE_CACHE_MAX = 50_000


@dataclass(frozen=True)
class CodeInfo:
    """What one code object (with all code objects nested in it) does with global names."""

    loads: frozenset[str]
    stores: frozenset[str]
    deletes: frozenset[str]
    global_stores: frozenset[str]  # STORE_GLOBAL/DELETE_GLOBAL: writes from inside functions
    dynamic: str | None  # why this code reaches the namespace dynamically, if it does
    markers: frozenset[str]  # non-determinism markers (see effects.static_markers)
    shell_attrs: frozenset[str] = frozenset()  # .push/.reset/...: dynamic if the shell is reachable
    imports: frozenset[str] = frozenset()  # absolute module names of its import statements
    c_callbacks: bool = False  # makes ctypes callbacks (CFUNCTYPE...): C may call Python later


@dataclass
class CellAnalysis:
    """The result for one cell, against the namespace as it was before the cell ran."""

    reads: set[str] = field(default_factory=set)  # candidate names (not yet intersected)
    stores: set[str] = field(default_factory=set)  # names the cell's own code stores/deletes
    maybe_written: set[str] = field(default_factory=set)  # `global` writes in reachable functions
    dynamic: str | None = None
    markers: set[str] = field(default_factory=set)
    uses_shell: bool = False  # loads get_ipython: magics, shell commands (process state)
    imports: frozenset[str] = frozenset()  # modules its import statements name (see imported_dynamic)
    # values the notebook put in `builtins` that the cell loads by name (see injected_builtin)
    injected: list[Any] = field(default_factory=list)
    #: the cell is nothing but `name = constant` lines (`_constant_cell_info`): it calls
    #: nothing and loads no name
    constant: bool = False


_code_cache: dict[int, tuple[types.CodeType, CodeInfo]] = {}


def _literal_call_arg(instrs: list, i: int) -> tuple[bool, Any]:
    """If instrs[i] loads a callable called right away with one constant argument, that constant."""
    if i + 2 < len(instrs):
        a, c = instrs[i + 1], instrs[i + 2]
        if a.opname == "LOAD_CONST" and c.opname in _CALL_OPS and c.arg == 1:
            return True, a.argval
    return False, None


def _called_with_one_simple_arg(instrs: list, i: int) -> bool:
    if i + 2 < len(instrs):
        a, c = instrs[i + 1], instrs[i + 2]
        return a.opname in _SIMPLE_LOADS and c.opname in _CALL_OPS and c.arg == 1
    return False


# magics that run their cell's body (or, for `%time`, their line) as code of the notebook's
_BODY_MAGICS = frozenset({"time", "timeit", "capture", "prun"})
_LINE_CODE_MAGICS = frozenset({"time"})
_TIMING_MAGIC = re.compile(r"(?m)^\s*%%?(?:time|timeit)\b")
_transformer: list[Any] = []


def _magic_body_info(magic: str, call: str, instrs: list, i: int) -> CodeInfo | None:
    """The analysis of the code a magic called at instrs[i] runs (None: none, or it does not
    compile): the body of ``%%time``, ``%%timeit``, ``%%capture``, ``%%prun``, the line of
    ``%time``. Its identifier tokens are reads already; what the tokens do not show is its
    non-determinism (``%%capture out`` around ``stamp = time.time()`` was re-run into another
    value, and reported mismatched) and its imports. A ``%%capture`` around ``%time`` keeps
    the printed timings: the clock."""
    if call == "run_cell_magic" and magic in _BODY_MAGICS:
        j = i + 3
    elif call == "run_line_magic" and magic in _LINE_CODE_MAGICS:
        j = i + 2
    else:
        return None
    arg = instrs[j] if j < len(instrs) else None
    if arg is None or arg.opname != "LOAD_CONST" or not isinstance(arg.argval, str):
        return None
    body = arg.argval
    try:
        if not _transformer:
            from IPython.core.inputtransformer2 import TransformerManager

            _transformer.append(TransformerManager())
        code = compile(_transformer[0].transform_cell(body), "<magic body>", "exec",
                       flags=getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0), dont_inherit=True)
    except Exception:  # noqa: BLE001 - not Python even after IPython's transforms
        return None
    info = code_info(code)
    if magic == "capture" and _TIMING_MAGIC.search(body):
        info = CodeInfo(info.loads, info.stores, info.deletes, info.global_stores, info.dynamic,
                        info.markers | {f"{effects.CLOCK} (it captures the timings %time prints)"},
                        info.shell_attrs, info.imports, info.c_callbacks)
    return info


_TIMEIT_OUTPUT = re.compile(r"(?:^|\s)-[A-Za-z0-9]*o")


def _timeit_returns_timings(instrs: list, i: int) -> bool:
    """Whether the `%timeit` called at instrs[i] has `-o` (`res = %timeit -o f()`: `res` is
    the measured times, which a re-run measures anew). Over-approximate: an `-o` anywhere in
    its arguments."""
    args = instrs[i + 2] if i + 2 < len(instrs) else None
    if args is None or args.opname != "LOAD_CONST" or not isinstance(args.argval, str):
        return True
    return bool(_TIMEIT_OUTPUT.search(args.argval))


_TIMEIT_NUMBER = re.compile(r"(?:^|\s)-n\s*\d")


def _timeit_counts_by_clock(instrs: list, i: int) -> bool:
    """Whether the `%timeit` (or `%%timeit`) called at instrs[i] chooses how many times it runs
    its code by timing it (no ``-n N``). What that code changes then depends on the clock:
    ``%timeit next(g)`` advances ``g`` a number of times a re-run does not repeat, and a
    generator is checked by type only."""
    args = instrs[i + 2] if i + 2 < len(instrs) else None
    if args is None or args.opname != "LOAD_CONST" or not isinstance(args.argval, str):
        return True
    return not _TIMEIT_NUMBER.search(args.argval)


def _tokens(text: str) -> set[str]:
    return set(_IDENT.findall(text))


def _analyze_source(src: str, mode_hint: str) -> CodeInfo | None:
    """Analyse the code inside an `eval`/`exec` string literal (None if it does not compile)."""
    for mode in ((mode_hint, "exec") if mode_hint == "eval" else ("exec",)):
        try:
            return code_info(compile(src, "<string>", mode, dont_inherit=True))
        except (SyntaxError, ValueError, TypeError, OverflowError, RecursionError):
            continue
    return None


def code_info(code: types.CodeType) -> CodeInfo:
    """Analyse a code object and every code object nested in it; cached per code object."""
    hit = _code_cache.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    info = _compute_code_info(code)
    if len(_code_cache) >= _CODE_CACHE_MAX:
        _code_cache.clear()
    _code_cache[id(code)] = (code, info)
    return info


class _Ins(tuple):
    """The three fields of `dis.Instruction` the analysis reads (opname, arg, argval)."""

    __slots__ = ()

    @property
    def opname(self) -> str:
        return self[0]

    @property
    def arg(self) -> int | None:
        return self[1]

    @property
    def argval(self) -> Any:
        return self[2]


_FAST_DECODE = (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
                and hasattr(dis, "_unpack_opargs")
                and hasattr(types.CodeType, "_varname_from_oparg")
                and hasattr(dis, "FORMAT_VALUE_CONVERTERS"))
_HASCONST = frozenset(dis.hasconst)
_HASNAME = frozenset(dis.hasname)
_HASLOCAL = frozenset(dis.haslocal) | frozenset(dis.hasfree)
_HASCOMPARE = frozenset(dis.hascompare)
_LOAD_GLOBAL = dis.opmap.get("LOAD_GLOBAL")
_LOAD_CONST = dis.opmap.get("LOAD_CONST")
_UNKNOWN = getattr(dis, "UNKNOWN", None)
_FORMAT_VALUE = dis.opmap.get("FORMAT_VALUE")


def _instructions(code: types.CodeType) -> list[Any]:
    """`dis.get_instructions(code)` with only opname, arg and argval (jump targets are left
    as raw args). `dis` builds a namedtuple with positions, line and jump-target info per
    instruction: 4 us each, most of the analysis of a 100-line cell. CPython 3.11 layout
    (checked against `dis` by the tests); other versions use `dis` itself."""
    if not _FAST_DECODE:
        return list(dis.get_instructions(code))
    names = code.co_names
    consts = code.co_consts
    varname = code._varname_from_oparg
    opname = dis.opname
    out = []
    append = out.append
    for _, op, arg in dis._unpack_opargs(code.co_code):
        argval = arg
        if arg is not None:
            if op in _HASCONST:  # dis resolves LOAD_CONST only (KW_NAMES stays unknown)
                argval = consts[arg] if op == _LOAD_CONST else _UNKNOWN
            elif op in _HASNAME:
                argval = names[arg >> 1] if op == _LOAD_GLOBAL else names[arg]
            elif op in _HASLOCAL:
                argval = varname(arg)
            elif op in _HASCOMPARE:
                argval = dis.cmp_op[arg]
            elif op == _FORMAT_VALUE:
                argval = (dis.FORMAT_VALUE_CONVERTERS[arg & 0x3][0], bool(arg & 0x4))
        append(_Ins((opname[op], arg, argval)))
    return out


# Opcodes of code that only builds constants and containers of them and binds names to them
# (`N = 100`, `v = [1, 'x']`, `a = b = (1, 2)`): nothing in it loads a name, touches an
# attribute, imports or calls, so the decoding analysis below finds nothing but the stores.
_DATA_OPS = frozenset(dis.opmap[n] for n in (
    "CACHE", "NOP", "RESUME", "LOAD_CONST", "STORE_NAME", "POP_TOP", "COPY", "SWAP",
    "RETURN_VALUE", "UNPACK_SEQUENCE", "BUILD_LIST", "BUILD_TUPLE", "BUILD_SET", "BUILD_MAP",
    "BUILD_CONST_KEY_MAP", "LIST_EXTEND", "SET_UPDATE", "DICT_UPDATE", "EXTENDED_ARG",
) if n in dis.opmap)
_STORE_NAME = dis.opmap.get("STORE_NAME")
_EXTENDED_ARG = dis.opmap.get("EXTENDED_ARG")


def _data_only_info(code: types.CodeType) -> CodeInfo | None:
    """The analysis of a code object of data-building opcodes only (None: another one), read
    off the raw bytecode: decoding every instruction cost 3.5 us per line of a cell of
    hundreds of constant assignments. CPython 3.11 layout (two bytes per code unit); other
    versions decode."""
    raw = code.co_code
    ops = raw[0::2]
    kinds = set(ops)
    if not kinds <= _DATA_OPS:
        return None
    if any(type(c) is types.CodeType for c in code.co_consts):
        return None
    names = code.co_names
    if _EXTENDED_ARG in kinds:  # over 256 names or constants
        stores = frozenset([names[arg] for _, op, arg in dis._unpack_opargs(raw)
                            if op == _STORE_NAME])
    else:
        stores = frozenset([names[arg] for op, arg in zip(ops, raw[1::2], strict=True)
                            if op == _STORE_NAME])
    return CodeInfo(frozenset(), stores, frozenset(), frozenset(), None, frozenset())


def _compute_code_info(code: types.CodeType) -> CodeInfo:
    if _FAST_DECODE:
        data = _data_only_info(code)
        if data is not None:
            return data
    loads: set[str] = set()
    stores: set[str] = set()
    deletes: set[str] = set()
    gstores: set[str] = set()
    markers: set[str] = set()
    dynamic: str | None = None
    instrs = _instructions(code)
    attrs: set[str] = set()
    shell_attrs: set[str] = set()
    imports: set[str] = set()
    c_callbacks = False
    magic_strings = False
    for i, ins in enumerate(instrs):
        op = ins.opname
        if op in _LOAD_OPS:
            name = ins.argval
            loads.add(name)
            if name in _ALWAYS_DYNAMIC_NAMES:
                dynamic = dynamic or f"calls {name}()"
            elif name == "vars" and not _called_with_one_simple_arg(instrs, i):
                dynamic = dynamic or "calls vars()"
            elif name in ("eval", "exec"):
                literal, arg = _literal_call_arg(instrs, i)
                if literal and isinstance(arg, str):
                    inner = _analyze_source(arg, name)
                    if inner is None:
                        loads |= _tokens(arg)
                    else:
                        loads |= inner.loads
                        markers |= inner.markers
                        gstores |= inner.stores | inner.global_stores
                        dynamic = dynamic or inner.dynamic
                else:
                    dynamic = dynamic or f"calls {name}() on a computed string or code object"
            elif name == "__import__":
                literal, arg = _literal_call_arg(instrs, i)
                if not literal or arg == "__main__":
                    dynamic = dynamic or "imports __main__ dynamically"
        elif op in _STORE_OPS:
            stores.add(ins.argval)
            if op == "STORE_GLOBAL":
                gstores.add(ins.argval)
        elif op in _DELETE_OPS:
            deletes.add(ins.argval)
            if op == "DELETE_GLOBAL":
                gstores.add(ins.argval)
        elif op in _ATTR_OPS:
            name = ins.argval
            attrs.add(name)
            if name in _DYNAMIC_ATTRS:
                dynamic = dynamic or f"uses .{name}"
            elif name == "modules" and i > 0 and instrs[i - 1].argval == "sys":
                dynamic = dynamic or "uses sys.modules"
            elif name in _SHELL_ONLY_ATTRS:
                shell_attrs.add(name)
            elif name in _MAGIC_ATTRS:
                magic_strings = True
                nxt = instrs[i + 1] if i + 1 < len(instrs) else None
                if nxt is None or nxt.opname != "LOAD_CONST" or not isinstance(nxt.argval, str):
                    # `get_ipython().run_line_magic(m, '-i s.py')`: which magic runs is not
                    # known here, and the shell expands `{x}` and `$x` in a command built at
                    # run time (`.system(cmd)`) from the namespace. Dynamic when the code can
                    # reach the shell (`platform.system()` is no shell's)
                    shell_attrs.add(name)
                elif name in ("run_line_magic", "run_cell_magic", "run_magic", "magic"):
                    magic = nxt.argval.split()[0].lstrip("%") if nxt.argval.strip() else ""
                    if magic in DYNAMIC_MAGICS:
                        dynamic = dynamic or f"runs %{magic}"
                    elif magic == "timeit" and _timeit_returns_timings(instrs, i):
                        markers.add(f"{effects.CLOCK} (%timeit -o returns the timings)")
                    elif magic == "timeit" and _timeit_counts_by_clock(instrs, i):
                        markers.add(f"{effects.CLOCK} (%timeit without -n runs its code as "
                                    "many times as the clock says)")
                    inner = _magic_body_info(magic, name, instrs, i)
                    if inner is not None:
                        # what the code a magic runs does: `%%time\nstamp = time.time()`
                        loads |= inner.loads
                        markers |= inner.markers
                        shell_attrs |= inner.shell_attrs
                        imports |= inner.imports
                        c_callbacks = c_callbacks or inner.c_callbacks
                        dynamic = dynamic or inner.dynamic
        elif op == "IMPORT_NAME":
            if ins.argval == "__main__":
                dynamic = dynamic or "imports __main__"
            elif type(ins.argval) is str and ins.argval:
                imports.add(ins.argval)
        elif op == "LOAD_CONST" and isinstance(ins.argval, types.CodeType):
            # Nested code: functions store locally (STORE_FAST) and class bodies store class
            # attributes (STORE_NAME), so only their `global` stores are namespace writes.
            inner = code_info(ins.argval)
            loads |= inner.loads
            gstores |= inner.global_stores
            markers |= inner.markers
            shell_attrs |= inner.shell_attrs
            imports |= inner.imports
            c_callbacks = c_callbacks or inner.c_callbacks
            dynamic = dynamic or inner.dynamic
    if attrs & _FRAME_EVAL_ATTRS:
        for ins in instrs:
            if ins.opname == "LOAD_CONST" and isinstance(ins.argval, str):
                loads |= _tokens(ins.argval)
    if magic_strings:
        for ins in instrs:
            if ins.opname == "LOAD_CONST" and isinstance(ins.argval, str):
                toks = _tokens(ins.argval)
                loads |= toks
                bad = toks & _DYNAMIC_TOKENS
                if bad:
                    dynamic = dynamic or f"magic or shell argument mentions {sorted(bad)[0]}"
                if "%" in ins.argval and not dynamic:
                    # a magic inside the code another one runs (`%time %run -i s.py`, a
                    # `%%capture` or `%%time` cell whose body has `%run -i s.py`)
                    nested = [m for m in _NESTED_MAGIC.findall(ins.argval) if m in DYNAMIC_MAGICS]
                    if nested:
                        dynamic = f"runs %{nested[0]} inside another magic"
    if "import_module" in attrs and any(
            ins.opname == "LOAD_CONST" and ins.argval == "__main__" for ins in instrs):
        dynamic = dynamic or "imports __main__ dynamically"
    markers |= effects.static_markers(instrs)
    c_callbacks = c_callbacks or not _CALLBACK_FACTORIES.isdisjoint(loads | attrs)
    return CodeInfo(frozenset(loads), frozenset(stores), frozenset(deletes), frozenset(gstores),
                    dynamic, frozenset(markers), frozenset(shell_attrs), frozenset(imports),
                    c_callbacks)


# A cell of nothing but `name = constant` lines (`v17 = 17`, `cfg = [1, 'x']`) is told by one
# regular expression at 0.8 us per line; compiling it cost 6 us per line, more than the rest of
# its analysis. The grammar is a strict subset of Python whose right-hand sides load no name
# (numbers without leading zeros, quoted strings without escapes, None/True/False, flat lists
# and tuples of those), so the analysis of such a cell is its stores and nothing else.
_LIT_NUM = r"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]{1,17})?"
_LIT_STR = r"'[^'\\\n\r\x00\ud800-\udfff]*'" + r'|"[^"\\\n\r\x00\ud800-\udfff]*"'
_LIT_ATOM = rf"(?:{_LIT_NUM}|{_LIT_STR}|None|True|False)"
_LIT_ITEMS = rf"(?: *{_LIT_ATOM} *(?:, *{_LIT_ATOM} *)*,? *)?"
_LIT_LINE = re.compile(
    rf"([A-Za-z_][A-Za-z0-9_]*) *= *(?:{_LIT_ATOM}|\[{_LIT_ITEMS}\]|\({_LIT_ITEMS}\)) *\n")


def _constant_cell_info(src: str) -> CodeInfo | None:
    """What `code_info` says of a cell of `name = constant` lines (None: another cell)."""
    # [text before the first match, its name, text between it and the next, ...]: every line
    # matched from its start when all that text is blank lines
    parts = _LIT_LINE.split(src + "\n")
    if "".join(parts[0::2]).strip("\n"):
        return None
    stores = parts[1::2]
    if not stores or any(keyword.iskeyword(n) or n == "__debug__" for n in stores):
        return None
    return CodeInfo(frozenset(), frozenset(stores), frozenset(), frozenset(), None, frozenset())


def _asyncio_autoawait(shell: Any) -> bool:
    """Whether `shell` runs cells that await at top level on asyncio (IPython's default runner,
    the one ipykernel runs on its own loop), as the restore re-runs them."""
    try:
        from IPython.core.async_helpers import _asyncio_runner
    except ImportError:  # an IPython without it: nothing says how its cells were run
        return False
    return getattr(shell, "loop_runner", None) is _asyncio_runner


def compile_cell(shell: Any, transformed: str) -> types.CodeType:
    """Compile transformed cell source like IPython would (top-level await allowed)."""
    flags = getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    try:
        flags |= shell.compile.flags
    except Exception:  # noqa: BLE001
        pass
    if getattr(shell, "ast_transformers", None):
        tree = shell.transform_ast(ast.parse(transformed, mode="exec"))
        return compile(tree, "<cell>", "exec", flags=flags, dont_inherit=True)
    return compile(transformed, "<cell>", "exec", flags=flags, dont_inherit=True)


# ----------------------------------------------------------------------------------------------
# Closure through notebook-defined code
# ----------------------------------------------------------------------------------------------

_ATOMS: frozenset[type] = frozenset({
    int, float, complex, str, bytes, bool, type(None), range, slice, type(Ellipsis),
    type(NotImplemented), bytearray, memoryview,
})
_SEQUENCES = (list, tuple, set, frozenset)
_CODE_HOLDERS: frozenset[type] = frozenset({
    types.FunctionType, types.MethodType, functools.partial, staticmethod, classmethod, property,
    types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType, types.ModuleType,
    types.BuiltinFunctionType,
})
_leaf_cache: dict[type, bool] = {}


#: big dicts (a vocabulary, word counts) found to hold leaves only, by id, with their version
#: tag then: a dict's tag changes with every change of it, and no two states of any dicts
#: share one, so an equal tag is the same dict as it was. Its next scan (a cell reading a
#: big dict the change tracker did not re-walk: 20 ms for 300,000 entries) is skipped
_leaf_dicts: dict[int, int] = {}
_LEAF_DICT_MIN = 1_000
_LEAF_DICTS_MAX = 10_000


def _is_leaf_type(t: type) -> bool:
    """True for types whose instances cannot lead to notebook code (numbers, arrays, dates, ...).

    A leaf has no instance `__dict__`, is not a container, callable wrapper or class, is not
    defined in the notebook and keeps no references in C (`_c_references`). Cached per type:
    this runs on every element of scanned containers.
    """
    leaf = _leaf_cache.get(t)
    if leaf is None:
        try:
            leaf = t in _ATOMS or not (
                t in _CODE_HOLDERS
                or issubclass(t, (list, tuple, dict, set, frozenset, type, collections.deque))
                or getattr(t, "__dictoffset__", 1)
                or getattr(t, "__module__", None) == "__main__"
                or any("__slots__" in vars(k) for k in t.__mro__[:-1])
                or _c_references(t)
                or _sqlite_kind(t) is not None
            )
        except Exception:  # noqa: BLE001
            leaf = False
        _remember(_leaf_cache, t, leaf)
    return leaf


_ndarray = np.ndarray
_DTYPE = operator.attrgetter("dtype")


def _any_object_array(items: Iterable[Any], only_arrays: bool) -> bool:
    """Whether a plain numpy array of Python objects is among `items` (in C but the check of
    each distinct dtype): a list of a thousand float arrays stays a leaf scan."""
    arrays = items if only_arrays else filter(_ndarray.__instancecheck__, items)
    return any(d.hasobject for d in set(map(_DTYPE, arrays)))


def _pandas_types() -> tuple[type | None, type | None]:
    """pandas' base classes of Series and DataFrame and of arrays backed by an ndarray in
    compiled fields (Categorical, DatetimeArray...), if pandas is imported."""
    generic = sys.modules.get("pandas.core.generic")
    arrays = sys.modules.get("pandas._libs.arrays")
    return (getattr(generic, "NDFrame", None) if generic is not None else None,
            getattr(arrays, "NDArrayBacked", None) if arrays is not None else None)


_sqlite_kinds: dict[type, str | None] = {}


def _sqlite_kind(t: type) -> str | None:
    """"connection" or "cursor" for sqlite3's classes (and subclasses), else None."""
    try:
        return _sqlite_kinds[t]
    except KeyError:
        pass
    mod = sys.modules.get("sqlite3")
    kind = None
    if mod is not None:
        try:
            kind = ("connection" if issubclass(t, mod.Connection)
                    else "cursor" if issubclass(t, mod.Cursor) else None)
        except Exception:  # noqa: BLE001
            kind = None
    if len(_sqlite_kinds) > 10_000:
        _sqlite_kinds.clear()
    _sqlite_kinds[t] = kind
    return kind


# functions and collations a connection knows beyond sqlite's own ones (builtin = 0 lists
# the application's and the compiled-in extensions', such as fts5's)
_SQLITE_COUNT = ("SELECT (SELECT count(*) FROM pragma_function_list WHERE builtin = 0),"
                 " (SELECT count(*) FROM pragma_collation_list)")
_SQLITE_NAMES = ("SELECT name FROM pragma_function_list WHERE builtin = 0"
                 " UNION SELECT name FROM pragma_collation_list")
_sqlite_baseline: tuple[tuple[int, int], frozenset[str]] | None = None


def _sqlite_registered(conn: Any) -> str:
    """The functions and collations registered on a connection beyond those of a new one, as
    text ("" if none). Counted in one statement (about 0.1 ms); sqlite tells them by name only,
    so an application function that replaces an extension's of the same name and number of
    arguments is not told apart from it."""
    global _sqlite_baseline
    import sqlite3

    def rows(c: Any, sql: str) -> list[Any]:
        cur = c.cursor()
        try:
            cur.row_factory = None  # (not the connection's: no user code runs)
            return cur.execute(sql).fetchall()
        finally:
            cur.close()

    if _sqlite_baseline is None:
        fresh = sqlite3.connect(":memory:")
        try:
            _sqlite_baseline = (tuple(rows(fresh, _SQLITE_COUNT)[0]),
                                frozenset(r[0] for r in rows(fresh, _SQLITE_NAMES)))
        finally:
            fresh.close()
    if conn.text_factory not in (str, bytes, bytearray):  # it would convert the names
        return "(a text_factory of its own)"
    if tuple(rows(conn, _SQLITE_COUNT)[0]) == _sqlite_baseline[0]:
        return ""
    extra = sorted({str(r[0]) for r in rows(conn, _SQLITE_NAMES)} - _sqlite_baseline[1])
    return ", ".join(extra[:5]) or "(one replacing an extension's)"


_library_kinds: dict[type, str | None] = {}


def _library_kind(t: type) -> str | None:
    """What the walk does specially with an instance of library class `t`, cached per class:
    "array" (a numpy array subclass), "frame" (a pandas Series/DataFrame), "backed" (a
    pandas array with compiled fields),
    "strings" (a pandas array of strings), "connection"/"cursor" (sqlite3), "ctypes" (a C
    library or function pointer), "local" (a class of one of the notebook's own modules),
    None (nothing)."""
    try:
        return _library_kinds[t]
    except KeyError:
        pass
    kind = None
    try:
        frame, backed = _pandas_types()
        ct = sys.modules.get("ctypes")
        strings = getattr(sys.modules.get("pandas.core.arrays.string_"), "BaseStringArray", None)
        if issubclass(t, _ndarray):
            kind = "array"
        elif frame is not None and issubclass(t, frame):
            kind = "frame"
        elif strings is not None and issubclass(t, strings):
            kind = "strings"
        elif backed is not None and issubclass(t, backed):
            kind = "backed"
        elif _sqlite_kind(t) is not None:
            kind = _sqlite_kind(t)
        elif ct is not None and issubclass(t, (ct.CDLL, ct._CFuncPtr)):
            kind = "ctypes"
        else:
            from kernel_agent.changes import local_module

            mod = sys.modules.get(getattr(t, "__module__", None) or "")
            if type(mod) is types.ModuleType and local_module(mod):
                kind = "local"
    except Exception:  # noqa: BLE001 - an odd class: walked like any other
        kind = None
    _library_kinds_store(t, kind)
    return kind


def _library_kinds_store(t: type, kind: str | None) -> None:
    if len(_library_kinds) > 10_000:
        _library_kinds.clear()
    _library_kinds[t] = kind


# id(module dict) -> (the dict, local module, its version, why its code reaches the caller's
# namespace)
_module_verdicts: dict[int, tuple[dict, bool, int | None, str | None]] = {}
# reasons that, in a module's code, are about the module's own namespace, not the caller's
_OWN_NAMESPACE = ("calls globals()", "calls locals()", "calls vars()", "calls eval()",
                  "calls exec()")


def _class_module_dict(cls: type) -> Any:
    mod = sys.modules.get(getattr(cls, "__module__", None) or "")
    return _module_dict(mod) if type(mod) is types.ModuleType else None


def _module_dynamic(globs: dict) -> str | None:
    """Why a local module's functions and methods reach their caller's namespace (None: they
    do not, or it is not a local module). Cached per module dict and its version tag (a
    reload, a setattr change it); without a tag, recomputed each time."""
    hit = _module_verdicts.get(id(globs))
    if hit is not None and hit[0] is globs and not hit[1]:
        return None  # an installed library's module (where a file is does not change)
    version = dict_version(globs)
    if hit is not None and hit[0] is globs and version is not None and hit[2] == version:
        return hit[3]
    from kernel_agent.changes import local_module

    name = globs.get("__name__")
    mod = sys.modules.get(name) if type(name) is str else None
    reason = None
    local = type(mod) is types.ModuleType and _module_dict(mod) is globs and local_module(mod)
    if local:
        codes: list[tuple[str, types.CodeType]] = []
        pending = list(globs.values())
        classes: set[int] = set()
        while pending and len(codes) < 10_000:
            x = pending.pop()
            if isinstance(x, (staticmethod, classmethod)):
                x = x.__func__
            if isinstance(x, property):
                pending.extend(f for f in (x.fget, x.fset, x.fdel) if f is not None)
            elif type(x) is types.FunctionType and x.__globals__ is globs:
                codes.append((x.__qualname__, x.__code__))
            elif (isinstance(x, type) and x.__module__ == name and id(x) not in classes):
                classes.add(id(x))
                pending.extend(vars(x).values())
        for qual, code in codes:
            why = code_info(code).dynamic
            if why and not why.startswith(_OWN_NAMESPACE):
                reason = f"module {name}: {why} (in {qual})"
                break
    if len(_module_verdicts) > 1_000:
        _module_verdicts.clear()
    _module_verdicts[id(globs)] = (globs, local, version, reason)
    return reason


def local_module_name(name: str) -> bool:
    """Whether module `name` (imported) is one of the notebook's own (cached per module)."""
    mod = sys.modules.get(name)
    globs = _module_dict(mod) if type(mod) is types.ModuleType else None
    if type(globs) is not dict:
        return False
    _module_dynamic(globs)
    hit = _module_verdicts.get(id(globs))
    return hit is not None and hit[1]


def imported_dynamic(modules: Iterable[str], submodules: bool = False) -> str | None:
    """After a cell ran: why one of the notebook's own modules it imported reaches its caller's
    namespace (None: none does). `submodules`: a local package's loaded submodules count too
    (`from pkg import sub` names only `pkg`). A module imported for the first time by the cell
    itself was not there to walk before the cell (`import peeker; peeker.peek('k')`).
    Installed libraries cost one cached look-up each."""
    for name in modules:
        mod = sys.modules.get(name)
        if type(mod) is not types.ModuleType:
            continue
        globs = _module_dict(mod)
        if type(globs) is not dict:
            continue
        reason = _module_dynamic(globs)
        if reason:
            return reason
        hit = _module_verdicts.get(id(globs))
        if submodules and hit is not None and hit[1] and hasattr(mod, "__path__"):
            prefix = name + "."
            for sub_name, sub in list(sys.modules.items()):
                if sub_name.startswith(prefix) and type(sub) is types.ModuleType:
                    sub_globs = _module_dict(sub)
                    reason = _module_dynamic(sub_globs) if type(sub_globs) is dict else None
                    if reason:
                        return reason
    return None


def _walkable(x: Any) -> bool:
    """Whether the walk must visit `x`: not a leaf, or an array of Python objects."""
    t = type(x)
    return not _is_leaf_type(t) or (t is _ndarray and x.dtype.hasobject)


def _remember(cache: dict[type, bool], t: type, verdict: bool) -> None:
    """Keep a per-type verdict; a cache past 10,000 types (classes made in a loop) starts over."""
    if len(cache) > 10_000:
        cache.clear()
    cache[t] = verdict


_TPFLAGS_HEAPTYPE = 1 << 9
_TPFLAGS_HAVE_GC = 1 << 14
_c_refs_cache: dict[type, bool] = {}
# walked as containers, or never walked: an exception's traceback reaches the frames of the
# kernel (their locals hold the shell), as before; a weak reference's referents are its callback
_NO_C_WALK = frozenset({object, list, tuple, dict, set, frozenset, type, collections.deque,
                        BaseException, types.FrameType, types.TracebackType,
                        weakref.ReferenceType, weakref.ProxyType, weakref.CallableProxyType})


def _is_ctypes_data(k: type) -> bool:
    """ctypes' base class of its data, function pointers and callbacks: they keep what they
    need alive (a callback its Python function) in C fields, without the flag of a collected
    class on the static base."""
    return k.__name__ == "_CData" and k.__module__ == "_ctypes"


def _c_references(t: type) -> bool:
    """Whether instances of `t` hold references in C storage that neither `__dict__` nor
    `__slots__` show: a class of C code with the garbage collector's support (it holds
    objects) below it, other than the containers walked as such. A `map(f, xs)` or an
    iterator consumed by a later cell, a `deque` of callbacks (or a notebook subclass of one),
    numpy's `frompyfunc(f, 1, 1)` and a ctypes callback call notebook functions no attribute
    names; their globals were not the cell's reads. Walked by `gc.get_referents`."""
    hit = _c_refs_cache.get(t)
    if hit is None:
        try:
            hit = any((not k.__flags__ & _TPFLAGS_HEAPTYPE and k.__flags__ & _TPFLAGS_HAVE_GC
                       and k not in _NO_C_WALK and k not in _CODE_HOLDERS)
                      or _is_ctypes_data(k)
                      for k in t.__mro__)
        except Exception:  # noqa: BLE001
            hit = False
        _remember(_c_refs_cache, t, hit)
    return hit


# Objects of these packages are the kernel's machinery (shell, streams, sockets, threads, loggers);
# they reach the user namespace itself, so walking them would make every cell "read" everything.
_MACHINERY_MODULES = frozenset({"IPython", "ipykernel", "zmq", "tornado", "jupyter_client",
                                "traitlets", "asyncio", "threading", "logging", "kernel_agent",
                                "comm", "debugpy", "_io", "io", "socket", "selectors",
                                "concurrent", "_thread", "queue"})
_machinery_cache: dict[type, bool] = {}


def _is_machinery(t: type) -> bool:
    hit = _machinery_cache.get(t)
    if hit is None:
        hit = _machinery_module(getattr(t, "__module__", None))
        _remember(_machinery_cache, t, hit)
    return hit


def _machinery_module(name: Any) -> bool:
    return isinstance(name, str) and name.split(".", 1)[0] in _MACHINERY_MODULES


class _BudgetExceeded(Exception):
    pass


@dataclass
class Reach:
    """What the value of one name reaches: global names loaded by reachable notebook code."""

    names: set[str] = field(default_factory=set)
    gstores: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)
    dynamic: str | None = None
    cost: int = 0  # objects visited + elements bulk-scanned / 64


class _Walker:
    """Visits the objects reachable from one value, collecting notebook code and its names."""

    def __init__(self, ns: Mapping[str, Any], budget: int):
        self.ns = ns
        self.budget = budget
        self.start_budget = budget
        # id -> the least depth it was visited at: an object met first deep inside a library
        # object (where the walk stops) is walked again when met nearer (a pandas column's
        # dtype cached in an index's `_cache`, then met as the column's own)
        self.seen: dict[int, int] = {id(ns): -1}
        self.names: set[str] = set()
        self.gstores: set[str] = set()
        self.markers: set[str] = set()
        self.dynamic: str | None = None

    def code(self, code: types.CodeType) -> None:
        info = code_info(code)
        if info.c_callbacks:
            _c_callbacks_made[0] = True
        self.names |= info.loads
        self.gstores |= info.global_stores
        self.markers |= info.markers
        if info.dynamic and not self.dynamic:
            self.dynamic = f"{info.dynamic} (in {code.co_name})"
        if info.shell_attrs and not self.dynamic and _reaches_shell(info, self.ns):
            self.dynamic = f"calls shell .{sorted(info.shell_attrs)[0]}() (in {code.co_name})"

    def walk(self, root: Any) -> None:
        """Visit `root` and what it reaches; `depth` counts hops through library objects."""
        stack: list[tuple[Any, int]] = [(root, 0)]
        ns = self.ns
        while stack:
            v, depth = stack.pop()
            t = type(v)
            if t in _ATOMS:
                continue
            i = id(v)
            d = self.seen.get(i)
            if d is not None and d <= depth:
                continue
            self.seen[i] = depth
            self.budget -= 1
            if self.budget < 0:
                raise _BudgetExceeded
            if t is types.FunctionType:
                if v.__globals__ is ns:
                    self.code(v.__code__)
                else:
                    self._module_code(v.__globals__)
                # closures, defaults and __wrapped__ of any function: decorators from libraries
                # wrap notebook functions in closures
                for c in v.__closure__ or ():
                    try:
                        stack.append((c.cell_contents, 0))
                    except ValueError:  # empty cell
                        pass
                if v.__defaults__:
                    stack.append((v.__defaults__, 0))
                if v.__kwdefaults__:
                    stack.append((v.__kwdefaults__, 0))
                if v.__dict__:
                    stack.append((v.__dict__, 0))
            elif t is types.MethodType:
                stack.append((v.__func__, 0))
                stack.append((v.__self__, depth))
            elif t is functools.partial:
                stack.extend(((v.func, 0), (v.args, 0), (v.keywords, 0)))
            elif t is staticmethod or t is classmethod:
                stack.append((v.__func__, 0))
            elif t is property:
                stack.extend((f, 0) for f in (v.fget, v.fset, v.fdel) if f is not None)
            elif t in (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType):
                prefix = {types.GeneratorType: "gi", types.CoroutineType: "cr"}.get(t, "ag")
                frame = getattr(v, prefix + "_frame", None)
                code = getattr(v, prefix + "_code", None)
                if frame is not None and frame.f_globals is ns and code is not None:
                    self.code(code)
                    for x in frame.f_locals.values():
                        stack.append((x, 0))
                elif frame is not None and depth < GENERIC_DEPTH and not _machinery_frame(frame):
                    # a library's generator calls what it was given: `heapq.merge(a, b,
                    # key=f)` consumed by a later cell runs the notebook's `f` from its frame
                    for x in frame.f_locals.values():
                        if _walkable(x):
                            stack.append((x, depth + 1))
            elif v is sys.modules or (t is types.ModuleType and _module_dict(v) is ns):
                # an alias of sys.modules or of __main__ (`m = sys.modules`, then
                # `m['__main__'].x`): every variable is one subscript or attribute away
                self.dynamic = self.dynamic or "holds sys.modules or the __main__ module"
            elif t is types.BuiltinFunctionType or (t is types.ModuleType and v is root):
                # a module only when the name is bound to it (`import secrets`): one met
                # inside a container (`mods = sys.modules`) is not a sign the cell uses it
                self.markers |= effects.value_markers(v)
                if v is id and v is root:
                    # `ident = id`; not the builtins an `exec` namespace holds (`G` with its
                    # `__builtins__`, every builtin: a cell reading `G` calls none of them)
                    self.markers.add(effects.USES_ID)
                if v is logging:  # `logging.info(...)`: the root logger's handlers run
                    _push_handlers(logging.root, stack)
                if t is types.ModuleType:
                    self._module_code(_module_dict(v))
            elif t is types.ModuleType:
                pass
            elif isinstance(v, type):
                self._class(v, stack)
            elif t in _SEQUENCES or t is dict:
                self._container(v, stack, depth)
            elif t is _ndarray:
                self._array(v, stack, depth)
            else:
                if isinstance(v, (list, tuple, dict, set, frozenset, collections.deque)):
                    self._container(v, stack, depth)
                if not _is_leaf_type(t):
                    self._instance(v, t, stack, depth)

    def _class(self, cls: type, stack: list) -> None:
        if getattr(cls, "__module__", None) != "__main__":
            if _library_kind(cls) == "local":
                self._module_code(_class_module_dict(cls))
            return
        meta = type(cls)
        if getattr(meta, "__module__", None) == "__main__":
            stack.append((meta, 0))
        for klass in cls.__mro__:
            if klass is not cls:
                if getattr(klass, "__module__", None) == "__main__":
                    stack.append((klass, 0))
                continue
            for attr in list(vars(klass).values()):
                stack.append((attr, 0))

    def _container(self, v: Any, stack: list, depth: int) -> None:
        try:
            tag = None
            if isinstance(v, dict):
                parts: Iterable[Any] = (v.values(), v.keys())
                if isinstance(v, collections.defaultdict) and v.default_factory is not None:
                    stack.append((v.default_factory, 0))
                if len(v) > _LEAF_DICT_MIN:
                    tag = dict_version(v, subclasses=True)
                    if tag is not None and _leaf_dicts.get(id(v)) == tag:
                        return  # all leaves when last scanned, and not changed since
            else:
                parts = (v,)
            leaves = True
            for part in parts:
                n = len(part)
                if n == 0:
                    continue
                if n > 32:
                    if n > BULK_SCAN_LIMIT:
                        raise _BudgetExceeded
                    kinds = set(map(type, part))  # in C: cheap even for large containers
                    self.budget -= n // 64
                    if all(_is_leaf_type(k) for k in kinds) and (
                            _ndarray not in kinds
                            or not _any_object_array(part, len(kinds) == 1)):
                        continue
                for x in part:
                    tx = type(x)
                    if not _is_leaf_type(tx) or (tx is _ndarray and x.dtype.hasobject):
                        leaves = False
                        stack.append((x, depth))
            if tag is not None and leaves:
                if len(_leaf_dicts) >= _LEAF_DICTS_MAX:
                    _leaf_dicts.clear()
                _leaf_dicts[id(v)] = tag
        except _BudgetExceeded:
            raise
        except Exception:  # noqa: BLE001 - changed size during iteration, exotic dict, ...
            self.dynamic = self.dynamic or f"could not inspect a {type(v).__name__}"

    def _array(self, v: np.ndarray, stack: list, depth: int) -> None:
        """An array of Python objects holds them in C storage no attribute shows (an array of
        numbers holds nothing): `fs = np.array([f, g], dtype=object)`, then `fs[0](3)`, or a
        pandas column of functions, runs notebook code. Every element is type-checked in C
        (`_container`); only a value the change tracker did not see as plain data gets here,
        and the per-name cache keeps a big scan's result until the array changes."""
        dt = v.dtype
        if not dt.hasobject:
            return
        if dt.names:  # a structured array: the fields holding objects, as arrays
            for n in dt.names:
                if dt.fields[n][0].hasobject:
                    stack.append((v[n], depth))
            return
        self._container(v.reshape(-1).tolist(), stack, depth)

    def _sqlite(self, conn: Any, stack: list, depth: int) -> None:
        """A sqlite3 connection runs the Python functions registered on it from SQL
        (`conn.create_function("f", 1, pyfunc)`, then `conn.execute("select f(x)")`), which
        sqlite keeps where Python cannot see them: a connection with any is "reads every
        variable". Its trace, progress and authorizer callbacks and row factory are walked
        (the connection holds them); with one of those set the registered functions are not
        listed (the listing would run them), so it counts as having some."""
        refs = gc.get_referents(conn)
        for x in refs:
            if _walkable(x):
                stack.append((x, depth))
        if any(type(x) is types.ModuleType for x in refs):  # a hook's (callable, module) pair
            self.dynamic = self.dynamic or "a sqlite3 connection with callbacks set may run Python functions registered on it"
            return
        try:
            registered = _sqlite_registered(conn)
        except Exception as e:  # noqa: BLE001 - closed (runs nothing), another thread's, ...
            if "closed" in str(e):
                return
            registered = f"its functions cannot be listed ({type(e).__name__})"
        if registered:
            self.dynamic = self.dynamic or f"a sqlite3 connection runs Python functions registered on it: {registered}"

    def _module_code(self, globs: Any) -> None:
        """Code of the notebook's own modules (a .py file next to it) that reaches the
        caller's namespace (`sys._getframe(1).f_globals[name]`, `import __main__`) reads
        every variable when a cell reaches the module, one of its functions, classes or
        instances. Checked per module, again only when the module's dict changes."""
        if type(globs) is dict and globs is not self.ns:
            reason = _module_dynamic(globs)
            if reason:
                self.dynamic = self.dynamic or reason

    def _ctypes(self, v: Any, t: type) -> None:
        """A call into a C library (a `CDLL`, a function of one) may call back any ctypes
        callback the library was given before, whose Python function no variable the cell
        names leads to: once callbacks were made, such a call reads every variable. A callback
        itself (a function pointer holding a Python callable) is walked like any holder."""
        mod = sys.modules.get("ctypes")
        # (ctypes caches each CFUNCTYPE callback type it makes: one exists in a kernel that
        # replayed such code while paused, as a restore does)
        if mod is None or not (_c_callbacks_made[0] or getattr(mod, "_c_functype_cache", None)
                               or getattr(mod, "_win_functype_cache", None)):
            return
        if isinstance(v, mod.CDLL) or (isinstance(v, mod._CFuncPtr) and not any(
                type(x).__name__ == "CThunkObject" for x in gc.get_referents(v))):
            self.dynamic = self.dynamic or ("calls into a C library, which may call back a ctypes "
                                            "callback it was given before")

    def _instance(self, v: Any, t: type, stack: list, depth: int) -> None:
        notebook = getattr(t, "__module__", None) == "__main__"
        if notebook and isinstance(v, _ndarray):  # a subclass's elements
            self._array(v.view(_ndarray), stack, depth)
        if notebook:
            stack.append((t, 0))
            child_depth = 0
        elif _is_machinery(t):
            if isinstance(v, threading.Thread):  # its target runs notebook code
                stack.extend((x, 0) for x in (getattr(v, "_target", None),
                                              getattr(v, "_args", None), getattr(v, "_kwargs", None)))
            elif isinstance(v, logging.Logger):
                _push_handlers(v, stack)
            return  # the kernel itself (it holds the whole namespace: not a read of the cell)
        else:
            # Best effort beyond the contract: library objects holding notebook callables
            # (a FunctionTransformer(func), an lru_cache wrapper, a callback registry).
            kind = _library_kinds.get(t, _library_kinds)  # (the dict itself: not cached yet)
            if kind is _library_kinds:
                kind = _library_kind(t)
            if kind is None:
                pass
            elif kind == "array":  # a subclass's elements (np.matrix of objects)
                self._array(v.view(_ndarray), stack, depth)
            elif kind == "frame":
                # a Series or DataFrame is data, at any depth: its columns live in blocks of
                # compiled code (no attribute of theirs shows the array), and an object column
                # may hold functions (`df['fn'] = [f, g]; df['fn'].map(lambda h: h(2))`)
                stack.extend((a, depth) for a in object.__getattribute__(v, "_mgr").arrays
                             if _walkable(a))
            elif kind == "backed":
                # a Categorical's categories, an extension array's values: compiled fields
                stack.extend(((v._ndarray, depth), (v.dtype, depth)))
            elif kind == "strings":
                # pandas' str columns (its default since 3.0): an array of Python objects
                # that pandas lets hold only strings and missing values, not scanned (a
                # million rows cost 30 ms). A notebook subclass of str in one is not seen.
                pass
            elif kind == "connection":
                self._sqlite(v, stack, depth)
                return
            elif kind == "cursor":  # its connection (among what it holds)
                stack.extend((x, depth) for x in gc.get_referents(v) if _walkable(x))
                return
            elif kind == "ctypes":
                self._ctypes(v, t)
            elif kind == "local":
                self._module_code(_class_module_dict(t))
            if depth >= GENERIC_DEPTH:
                return
            child_depth = depth + 1
        if getattr(t, "__dictoffset__", 0):
            try:
                d = object.__getattribute__(v, "__dict__")
            except Exception:  # noqa: BLE001
                d = None
            if type(d) is dict and d:
                for x in list(d.values()):
                    tx = type(x)
                    if not _is_leaf_type(tx) or (tx is _ndarray and x.dtype.hasobject):
                        stack.append((x, child_depth))
        for klass in t.__mro__[:-1]:
            slots = vars(klass).get("__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    try:
                        stack.append((object.__getattribute__(v, slot), child_depth))
                    except Exception:  # noqa: BLE001 - unset slot
                        pass
        if _c_references(t):
            # (tuples without empty slots: `zip_longest` keeps one, and reading a slot crashed)
            self._container(c_referents(v), stack, child_depth)


def _machinery_frame(frame: types.FrameType) -> bool:
    """A frame of the kernel's own code (`_MACHINERY_MODULES`): its locals reach the shell."""
    mod = frame.f_globals.get("__name__")
    return not isinstance(mod, str) or _machinery_module(mod)


def _push_handlers(lg: logging.Logger, stack: list) -> None:
    """A log call runs the handlers and filters of the logger and of the ancestors it
    propagates to: a notebook handler appending records to a list mutates that list from any
    cell that logs through it (`log.info(...)` reads no variable of the handler)."""
    cur: Any = lg
    for _ in range(64):  # a logger chain is short; a cycle is not ours to follow
        if not isinstance(cur, logging.Logger):
            break
        stack.extend((x, 0) for x in (*cur.handlers, *cur.filters))
        for h in cur.handlers:
            stack.extend((x, 0) for x in getattr(h, "filters", ()))
        if not cur.propagate:
            break
        cur = cur.parent


def _module_dict(m: types.ModuleType) -> Any:
    try:
        return object.__getattribute__(m, "__dict__")
    except Exception:  # noqa: BLE001
        return None


def _reaches_shell(info: CodeInfo, ns: Mapping[str, Any]) -> bool:
    """Whether code using a shell-only attribute can get at the IPython shell."""
    if "get_ipython" in info.loads:
        return True
    for n in info.loads:
        v = ns.get(n)
        if v is not None and _is_machinery(type(v)) and type(v).__name__.endswith("Shell"):
            return True
    return False


def reach(value: Any, ns: Mapping[str, Any], budget: int = WALK_BUDGET) -> Reach:
    """Walk one value; a hostile or oversized object graph yields `dynamic` (reads everything)."""
    walker = _Walker(ns, budget)
    try:
        walker.walk(value)
    except _BudgetExceeded:
        walker.dynamic = f"reachable objects exceed the analysis budget ({budget})"
    except Exception as e:  # noqa: BLE001 - objects that fight inspection: assume the worst
        walker.dynamic = walker.dynamic or f"could not inspect a {type(value).__name__}: {type(e).__name__}"
    return Reach(walker.names, walker.gstores, walker.markers, walker.dynamic,
                 max(0, walker.start_budget - walker.budget))


def notebook_module_holders(modules: Iterable[str], ns: Mapping[str, Any]) -> set[str]:
    """Names bound to a notebook module (a file next to the notebook, or one it made) that the
    cell imports from, or to that module's functions, classes and instances. ``from utils
    import CACHE; CACHE["k"] = 1`` changes `utils` through the import system, not through a
    name the cell loads: read this way, the co-variable holding `utils` is walked after the
    cell and the change is the cell's. An installed library's module is not data."""
    from kernel_agent.changes import local_module, registered_module

    mods = set()
    for name in modules:
        mod = sys.modules.get(name)
        if type(mod) is types.ModuleType and (local_module(mod) or registered_module(mod)):
            mods.add(name)
    if not mods:
        return set()
    out = set()
    for n, v in ns.items():
        if type(n) is not str or n.startswith("_"):
            continue
        try:
            if type(v) is types.ModuleType:
                hit = v.__name__ in mods
            elif isinstance(v, (types.FunctionType, type)):
                hit = v.__module__ in mods
            else:
                hit = type(v).__module__ in mods
        except Exception:  # noqa: BLE001 - an odd object: not one of the module's
            hit = False
        if hit:
            out.add(n)
    return out


CACHE_MIN_COST = 256  # walks cheaper than this are redone every cell (no staleness to fear)


def analyze_cell(shell: Any, transformed: str, ns: Mapping[str, Any],
                 budget: int = WALK_BUDGET,
                 cache: dict[str, tuple[int, Reach]] | None = None,
                 plain: Callable[[str, Any], bool] | None = None) -> CellAnalysis:
    """Reads/stores of a cell (source after IPython's transforms) against namespace `ns`.

    `cache` keeps the result of expensive walks per name (keyed by the value's id); the monitor
    drops a name's entry whenever a cell rebinds, mutates or deletes it, so a cached walk is one
    of an unchanged object graph. Raises SyntaxError (and friends) when the cell does not
    compile: IPython reports it, the monitor records the failed cell. `plain(name, value)`:
    the value is known to be pure data (the change tracker's last walk saw no instance,
    function, class or module), so it leads to no code and is not walked.
    """
    info = None if getattr(shell, "ast_transformers", None) else _constant_cell_info(transformed)
    constant = info is not None
    if info is not None:
        markers = set()
    else:
        code = compile_cell(shell, transformed)
        info = code_info(code)
        markers = set(info.markers)
        if code.co_flags & inspect.CO_COROUTINE and not _asyncio_autoawait(shell):
            markers.add(TOP_LEVEL_AWAIT)
    result = CellAnalysis(
        stores=set(info.stores | info.deletes | info.global_stores),
        markers=markers,
        dynamic=info.dynamic,
        uses_shell="get_ipython" in info.loads,
        imports=info.imports,
        constant=constant,
    )
    if info.c_callbacks:
        _c_callbacks_made[0] = True
    if not result.dynamic and info.shell_attrs and _reaches_shell(info, ns):
        result.dynamic = f"calls shell .{sorted(info.shell_attrs)[0]}()"
    if not result.dynamic:
        held = _output_history_loads(info)
        if held:
            result.dynamic = f"reads IPython's output history ({held})"
    if result.dynamic:
        return result
    names = set(info.loads)
    if info.imports:
        names |= notebook_module_holders(info.imports, ns)
    for name in info.stores | info.deletes:
        if name not in names and name in ns and _runs_code_when_dropped(ns[name]):
            # rebinding it may end its value, which runs notebook code: a suspended
            # generator's `finally` (`it = None` appended to `closed`), a `__del__`
            names.add(name)
    pending = list(names)
    gstores: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in ns:
            value = injected_builtin(name)
            if value is _NOT_INJECTED:
                continue
            # no user variable, but what a user variable may hold, or code reading them:
            # walked like one, and the monitor adds the variables that hold it
            result.injected.append(value)
            r = reach(value, ns, budget)
            budget -= r.cost
            if r.dynamic:
                result.dynamic = f"{name} (in builtins): {r.dynamic}"
                break
            for n in r.names - names:
                names.add(n)
                pending.append(n)
            gstores |= r.gstores
            result.markers |= r.markers
            continue
        value = ns[name]
        if plain is not None and plain(name, value):
            continue
        hit = cache.get(name) if cache is not None else None
        if hit is not None and hit[0] == id(value):
            r = hit[1]
        else:
            r = reach(value, ns, budget)
            budget -= r.cost
            if cache is not None and r.cost >= CACHE_MIN_COST:
                cache[name] = (id(value), r)
        if r.dynamic:
            result.dynamic = f"{name}: {r.dynamic}"
            break
        if budget < 0:
            result.dynamic = f"reachable objects exceed the analysis budget ({WALK_BUDGET})"
            break
        for n in r.names - names:
            names.add(n)
            pending.append(n)
        gstores |= r.gstores
        result.markers |= r.markers
    result.reads = names
    result.maybe_written = gstores
    return result


_SUSPENDABLE = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)


def _runs_code_when_dropped(value: Any) -> bool:
    """Whether dropping `value` may run notebook code: a generator or coroutine suspended in
    notebook code (its ``finally`` and ``with`` blocks run when it is closed), an instance of a
    notebook class with a ``__del__``. A type check (what it holds is not looked at)."""
    tp = type(value)
    if tp in _SUSPENDABLE:
        frame = getattr(value, "gi_frame", None) or getattr(value, "cr_frame", None) or getattr(
            value, "ag_frame", None)
        return frame is not None and frame.f_globals.get("__name__") == "__main__"
    finalizer = getattr(tp, "__del__", None)
    return finalizer is not None and getattr(finalizer, "__module__", None) == "__main__"


_NOT_INJECTED = object()
# builtins as they were when the agent was loaded (IPython's own additions included)
_PRISTINE_BUILTINS = dict(builtins.__dict__)


def injected_builtin(name: str) -> Any:
    """What the notebook (or a library) put in `builtins` under `name`, or `_NOT_INJECTED`.

    ``builtins.G = gen`` and then ``next(G)``: the cell loads a name no user variable has, so
    the read of ``gen`` (and its change) was missed, and a generator, checked by type only,
    came back at its first position, verified. A dictionary lookup per name a cell loads that
    is not a user variable (mostly real builtins: ``len``, ``print``)."""
    value = builtins.__dict__.get(name, _NOT_INJECTED)
    if value is _NOT_INJECTED or name[:2] == "__":
        return _NOT_INJECTED
    old = _PRISTINE_BUILTINS.get(name, _NOT_INJECTED)
    if old is value:
        return _NOT_INJECTED
    try:
        # IPython adds its builtins again at every cell (`get_ipython` as a new bound method)
        if old is not _NOT_INJECTED and type(old) is type(value) and old == value:
            return _NOT_INJECTED
    except Exception:  # noqa: BLE001 - a hostile __eq__: take it as injected
        pass
    # ... and ipykernel its `input`, `exit`, `quit` for every execution
    for obj in (value, getattr(value, "func", None), getattr(value, "__func__", None), type(value)):
        module = getattr(obj, "__module__", None)
        if type(module) is str and module.startswith(("IPython.", "ipykernel.")):
            return _NOT_INJECTED
    return value


# (`_exit_code`: the status of the last `!cmd`, which a re-run without that command lacks)
_HISTORY_NAME = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|In|Out|_oh|_ih|_dh|_exit_code")
# the history names that hold the objects cells displayed (`In`, `_i`... hold only strings)
_OUTPUT_NAME = re.compile(r"_{1,3}|_\d+|Out|_oh")


def _output_history_loads(info: CodeInfo) -> str | None:
    """An output-history name the cell loads and does not bind itself (None: none).

    ``lst`` displayed, then ``_.append(3)``: the cell changes ``lst`` through ``_``, which no
    user name of the cell leads to, so its change detection, which looks only at the names a
    cell touches, missed the mutation (found only at the next checkpoint, as a change made
    outside any cell). A cell reading ``_``, ``__``, ``_12``, ``Out`` or ``_oh`` may reach any
    displayed object, so it counts as reading every variable: rare, and such a cell is never
    re-run anyway (`reads_output_history`).
    """
    for name in sorted(info.loads - info.stores):
        if _OUTPUT_NAME.fullmatch(name):
            return name
    return None


@functools.lru_cache(maxsize=4096)
def reads_output_history(code: str) -> bool:
    """Whether a cell reads IPython's input/output history (``_``, ``__``, ``_12``, ``Out``...).

    A re-run cannot see what it saw: the restore's replay displays nothing (``_`` stays what it
    is) and the new kernel's ``In``/``Out`` hold its own history, so ``prev = _`` would be
    recomputed as something else. Such a cell's outputs must be shipped. A name the cell itself
    binds first (``for _ in range(3)``) is its own variable, not the history.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        tree = ast.parse(TransformerManager().transform_cell(code))
    except Exception:  # noqa: BLE001 - unparsable here: the monitor's own analysis decided
        return False
    loads, stores = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and _HISTORY_NAME.fullmatch(node.id):
            (loads if isinstance(node.ctx, ast.Load) else stores).add(node.id)
    return bool(loads - stores)


# Magics that replay or read the numbered input history (`%rerun -l 1` runs the cell before it
# again, `%macro m 3-5` binds the code of cells 3 to 5, `%save`/`%history -f` write it out): a
# restore's re-run sees the new kernel's history (its own cells, the restore call) instead.
HISTORY_MAGICS = frozenset({"rerun", "recall", "rep", "macro", "save", "history", "hist",
                            "edit", "ed", "pastebin"})
_RUN_MAGIC_CALLS = frozenset({"run_line_magic", "run_cell_magic", "run_magic", "magic"})
_AUTOMAGIC_HISTORY_LINE = re.compile(rf"(?m)^\s*({'|'.join(sorted(HISTORY_MAGICS))})(?:[ \t]|$)")


@functools.lru_cache(maxsize=4096)
def reads_input_history(code: str) -> str | None:
    """What in a cell replays or reads IPython's numbered input history (None: nothing).

    ``%rerun``, ``%macro`` and the like (`HISTORY_MAGICS`), or the shell's ``history_manager``:
    numbers that named cells of the checkpointed kernel name other code in the restoring one
    (whose history holds the restore call), so re-running the cell ran other code, and the
    values it made were reported as mismatched, blamed on the hash seed. Typed without the
    ``%`` (automagic: ``rerun -l 1``), the magic is no Python the transformer turns into a call:
    such a line counts, and so does a bare name statement (``rerun``).
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        transformed = TransformerManager().transform_cell(code)
    except Exception:  # noqa: BLE001 - unparsable here: the monitor's own analysis decided
        return None
    try:
        tree = ast.parse(transformed)
    except SyntaxError:
        # automagic lines (`rerun -l 1`, `macro m 2-3`) are left as they were typed
        found = _AUTOMAGIC_HISTORY_LINE.search(transformed)
        return f"%{found.group(1)}" if found else None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Name)
                and node.value.id in HISTORY_MAGICS):
            return f"%{node.value.id}"
        if isinstance(node, ast.Attribute) and node.attr == "history_manager":
            return "the shell's history_manager"
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _RUN_MAGIC_CALLS and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            words = node.args[0].value.split()
            magic = words[0].lstrip("%") if words else ""
            if magic in HISTORY_MAGICS:
                return f"%{magic}"
    return None
