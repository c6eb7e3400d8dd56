"""kernel_agent.serialize: one co-variable -> one framed zero-copy blob, and back."""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from kernel_agent.serialize import ALIGN, MAGIC, Serialized, dumps, loads


def blob_of(s: Serialized) -> bytearray:
    assert s.error is None, s.error
    blob = bytearray(b"".join(s.parts))
    assert len(blob) == s.nbytes
    return blob


def roundtrip(values: dict, **kw) -> dict:
    out = loads(blob_of(dumps(values, **kw)), **kw)
    assert list(out) == list(values)
    return out


# ------------------------------------------------------------------------------------- numpy


def test_numpy_dtypes_roundtrip():
    values = {
        "i": np.arange(1000, dtype=np.int32),
        "f": np.linspace(0, 1, 777),
        "c": np.arange(10) * (1 + 2j),
        "b": np.arange(10) % 3 == 0,
        "t": np.arange("2026-01-01", "2026-02-01", dtype="datetime64[D]"),
        "s": np.array([(1, 2.5, b"ab")], dtype=[("x", "i4"), ("y", "f8"), ("z", "S2")]),
        "u": np.array(["héllo", "wörld"]),
    }
    out = roundtrip(values)
    for k, v in values.items():
        assert out[k].dtype == v.dtype
        np.testing.assert_array_equal(out[k], v)


def test_view_stays_view_and_writes_through():
    a = np.arange(100, dtype=np.float64)
    out = roundtrip({"a": a, "view": a[10:20]})
    ra, rv = out["a"], out["view"]
    assert rv.base is not None and np.shares_memory(rv.base, ra)
    assert np.shares_memory(rv, ra)
    np.testing.assert_array_equal(rv, np.arange(10, 20))
    ra[10] = -1.0
    assert rv[0] == -1.0
    rv[1] = -2.0
    assert ra[11] == -2.0


def test_view_before_its_base_in_the_stream_still_shares():
    a = np.arange(60, dtype=np.int64).reshape(6, 10)
    out = roundtrip({"first": a[::2, 3:7], "neg": a[::-1, ::-1], "a": a})
    assert np.shares_memory(out["first"], out["a"])
    assert np.shares_memory(out["neg"], out["a"])
    np.testing.assert_array_equal(out["first"], a[::2, 3:7])
    np.testing.assert_array_equal(out["neg"], a[::-1, ::-1])
    out["a"][0, 3] = 1000
    assert out["first"][0, 0] == 1000 and out["neg"][-1, -4] == 1000


def test_view_nested_in_containers_shares_with_base():
    a = np.zeros(1000)
    out = roundtrip({"cfg": {"parts": [a[:500], a[500:]]}, "a": a})
    out["a"][:] = 7
    assert out["cfg"]["parts"][0][0] == 7 and out["cfg"]["parts"][1][-1] == 7


def test_view_without_its_base_is_copied_not_shipped_whole():
    big = np.ones(1_000_000)
    s = dumps({"small": big[:10]})
    assert s.nbytes < 10_000
    out = loads(blob_of(s))
    np.testing.assert_array_equal(out["small"], np.ones(10))


def test_a_view_whose_elements_alias_keeps_them_aliased_without_its_base():
    # `as_strided` windows over a buffer nobody names were copied like any lone view: values
    # equal, but a write to `w[0, 1]` no longer showed in `w[1, 0]` (nor a stride-0 one's)
    from numpy.lib.stride_tricks import as_strided

    out = roundtrip({"w": as_strided(np.zeros(5), shape=(3, 3), strides=(8, 8)),
                     "z": as_strided(np.ones(1), shape=(4,), strides=(0,))})
    out["w"][0, 1] = 5.0
    out["z"][0] = 3.0
    assert out["w"][1, 0] == 5.0 and out["w"].strides == (8, 8)
    assert out["z"][3] == 3.0 and out["z"].strides == (0,)


def test_fortran_order_kept():
    f = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    out = roundtrip({"f": f, "v": f[:, 1:3]})
    assert out["f"].flags.f_contiguous and not out["f"].flags.c_contiguous
    np.testing.assert_array_equal(out["f"], f)
    assert np.shares_memory(out["v"], out["f"])
    np.testing.assert_array_equal(out["v"], f[:, 1:3])


def test_non_contiguous_array_alone():
    a = np.arange(100).reshape(10, 10)[::3, ::2]
    out = roundtrip({"a": a})
    np.testing.assert_array_equal(out["a"], a)


def test_zero_d_and_empty_arrays():
    values = {"z": np.array(3.5), "e": np.empty((0, 3)), "s": np.float32(2.5)}
    out = roundtrip(values)
    assert out["z"].shape == () and out["z"] == 3.5
    assert out["e"].shape == (0, 3)
    assert out["s"] == np.float32(2.5) and type(out["s"]) is np.float32


def test_zero_d_view_of_base():
    a = np.arange(5.0)
    out = roundtrip({"a": a, "z": a[2, ...]})
    assert out["z"].shape == ()
    out["a"][2] = 42
    assert out["z"] == 42


def test_object_dtype_array_keeps_inner_aliasing():
    shared = {"k": 1}
    o = np.array([shared, shared, "x", None], dtype=object)
    out = roundtrip({"o": o, "v": o[1:3]})
    assert out["o"][0] is out["o"][1]
    assert out["o"][0] == {"k": 1} and out["v"][1] == "x"


def test_readonly_array_stays_readonly_writable_stays_writable():
    ro = np.arange(10)
    ro.flags.writeable = False
    out = roundtrip({"ro": ro, "rw": np.arange(10)})
    assert not out["ro"].flags.writeable
    assert out["rw"].flags.writeable


@pytest.mark.parametrize("n", [4, 1 << 16])  # in-band bytes, out-of-band buffer
def test_a_view_made_before_its_base_was_made_read_only_stays_writeable(n):
    # numpy refuses a writeable view of a read-only array: the base was made read-only as soon
    # as it was rebuilt, so the view came back read-only too (and writes through it failed)
    a = np.arange(float(n))
    v = a[1:]
    a.setflags(write=False)
    out = roundtrip({"a": a, "v": v})
    assert not out["a"].flags.writeable and out["v"].flags.writeable
    assert np.shares_memory(out["a"], out["v"])
    out["v"][0] = -1.0
    assert out["a"][1] == -1.0


def test_buffers_are_out_of_band_aligned_and_zero_copy():
    a = np.arange(1 << 20, dtype=np.float64)
    s = dumps({"a": a})
    # dumps: the array's memory is a part as-is, not a copy
    assert any(isinstance(p, memoryview) and np.shares_memory(np.asarray(p), a) for p in s.parts)
    blob = blob_of(s)
    (n,) = struct.unpack_from("<I", blob, 12)
    assert n == 1
    off, length = struct.unpack_from("<QQ", blob, 48)
    assert off % ALIGN == 0 and length == a.nbytes
    # loads: the restored array is a slice of the blob, not a copy
    out = loads(blob)
    assert np.shares_memory(out["a"], np.frombuffer(blob, dtype=np.uint8))
    assert out["a"].flags.writeable


def test_bytes_blob_still_gives_writable_arrays():
    out = loads(bytes(blob_of(dumps({"a": np.arange(10)}))))
    out["a"][0] = 5
    assert out["a"][0] == 5


# ---------------------------------------------------------------------------- pandas, sklearn


def test_pandas_dataframe_mixed_dtypes():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {
            "i": np.arange(1000),
            "f": np.random.default_rng(0).random(1000),
            "s": [f"row{i}" for i in range(1000)],
            "c": pd.Categorical(["a", "b"] * 500),
            "t": pd.date_range("2026-01-01", periods=1000, freq="h"),
            "n": pd.array([1, None] * 500, dtype="Int64"),
            "b": [True, False] * 500,
        }
    ).set_index("t")
    out = roundtrip({"df": df, "col": df["f"]})
    pd.testing.assert_frame_equal(out["df"], df)
    pd.testing.assert_series_equal(out["col"], df["f"])


def test_pandas_objects_sharing_memory_copy_on_write_after_loading_as_before():
    """pandas (copy-on-write) lets a column, a row slice or a shallow copy share a frame's
    memory and copies it when either is written; the references that tell it to are no part
    of its pickle. Restored sharing memory without them, ``df.loc[0, 'a'] = 100`` in the new
    kernel also changed ``col`` and ``head``, which verified equal at the restore. Two Series
    over one array of the notebook's (``copy=False``) share it without references: a write
    through one still shows through the other, as it did."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": np.arange(6), "b": list("abcdef")})
    arr = np.arange(4.0)
    values = {"df": df, "col": df["a"], "head": df.iloc[:3], "shallow": df.copy(deep=False),
              "s1": pd.Series(arr, copy=False), "s2": pd.Series(arr, copy=False), "arr": arr}
    out = roundtrip(values)
    # (the blocks themselves: `df["a"]` would make a Series that references them)
    assert np.shares_memory(out["col"]._mgr.blocks[0].values, out["df"]._mgr.blocks[0].values)
    out["df"].loc[0, "a"] = 100
    out["shallow"].loc[1, "b"] = "z"
    out["head"].iloc[2, 0] = -1
    assert out["col"].tolist() == [0, 1, 2, 3, 4, 5]
    assert out["head"]["a"].tolist() == [0, 1, -1]
    assert out["df"]["a"].tolist() == [100, 1, 2, 3, 4, 5]
    assert out["df"]["b"].tolist() == list("abcdef")
    assert out["shallow"]["b"].tolist()[:2] == ["a", "z"]
    out["s1"].iloc[0] = 9.0
    assert out["s2"].iloc[0] == 9.0 and out["arr"][0] == 9.0


def test_sklearn_fitted_model_predicts_the_same():
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = make_classification(n_samples=300, n_features=8, random_state=0)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0))
    model.fit(X, y)
    out = roundtrip({"model": model, "X": X})
    np.testing.assert_array_equal(out["model"].predict(out["X"]), model.predict(X))
    np.testing.assert_array_equal(out["model"].predict_proba(X), model.predict_proba(X))


# ---------------------------------------------------------------------------------- aliasing


def test_aliasing_same_object_twice():
    a = [1, 2, 3]
    out = roundtrip({"pair": [a, a]})
    assert out["pair"][0] is out["pair"][1]


def test_aliasing_across_names():
    a = {"x": np.arange(3)}
    out = roundtrip({"a": a, "b": a, "c": [a["x"]]})
    assert out["b"] is out["a"]
    assert out["c"][0] is out["a"]["x"]


def test_self_referencing_structures():
    lst: list = [1]
    lst.append(lst)
    d: dict = {}
    d["me"] = d
    out = roundtrip({"lst": lst, "d": d})
    assert out["lst"][1] is out["lst"]
    assert out["d"]["me"] is out["d"]


# ------------------------------------------------------------------------------ unpicklable


def _gen():
    yield 1


def _held(lock):
    lock.acquire()
    return lock


def _unlinked(path):
    f = open(path, "w")  # noqa: SIM115
    path.unlink()
    return f


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda tmp: _gen(), "generator"),
        (lambda tmp: _held(threading.Lock()), "lock that is held"),
        (lambda tmp: _held(threading.RLock()), "lock that is held"),
        (lambda tmp: socket.socket(), "socket"),
        # (regular files on a path are re-opened: tests/engine/test_open_files.py)
        (lambda tmp: open(os.pipe()[0], "rb"), "open file on descriptor"),  # noqa: SIM115
        (lambda tmp: _unlinked(tmp / "gone.txt"), "not a regular file on a path"),
        (lambda tmp: sqlite3.connect(":memory:"), "sqlite3.Connection"),
        (lambda tmp: [1, {"nested": (i for i in range(3))}], "generator"),
    ],
    ids=[
        "generator",
        "held-lock",
        "held-rlock",
        "socket",
        "pipe",
        "unlinked-file",
        "sqlite",
        "nested-generator",
    ],
)
def test_unpicklable_gives_error_not_exception(tmp_path, make, expect):
    obj = make(tmp_path)
    try:
        s = dumps({"x": obj, "ok": 1})
    finally:
        if hasattr(obj, "close"):
            obj.close()
    assert s.error is not None and expect in s.error
    assert s.error.startswith(("TypeError", "PicklingError"))
    assert s.names == ["x", "ok"] and s.parts == [] and s.nbytes == 0


class _Unloadable:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise RuntimeError("cannot be rebuilt")


def test_pickles_but_does_not_load_is_an_error_with_verify():
    assert dumps({"u": _Unloadable()}).error is None  # not detected without verify (documented)
    s = dumps({"u": _Unloadable()}, verify=True)
    assert (
        s.error is not None and "does not load back" in s.error and "cannot be rebuilt" in s.error
    )


# ------------------------------------------------------------------------------ bad blobs


def test_truncated_blob_rejected_before_unpickling():
    blob = blob_of(dumps({"a": np.arange(10_000)}))
    with pytest.raises(ValueError, match="truncated"):
        loads(blob[:-100])
    with pytest.raises(ValueError, match="truncated"):
        loads(blob[:20])


def test_foreign_blob_rejected():
    with pytest.raises(ValueError, match="not a kernel_agent serialized blob"):
        loads(bytearray(b"\x80\x05K\x01." + bytes(100)))
    with pytest.raises(ValueError, match="not a kernel_agent serialized blob"):
        loads(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a kernel_agent serialized blob"):
        loads(b"")


def test_corrupted_header_rejected():
    blob = blob_of(dumps({"a": np.arange(10)}))
    blob[16] ^= 0xFF  # pickle offset
    with pytest.raises(ValueError, match="header checksum"):
        loads(blob)


def test_unknown_version_rejected():
    blob = blob_of(dumps({"a": 1}))
    struct.pack_into("<H", blob, 8, 99)
    with pytest.raises(ValueError, match="version 99"):
        loads(blob)
    assert bytes(blob[:8]) == MAGIC


# --------------------------------------------------------- notebook (__main__) code by value


NOTEBOOK = """
import dataclasses, functools, math
import numpy as np

scale = 10

def f(x):
    return x * scale            # reads a global of the notebook

g = lambda x: f(x) + 1

def make_counter():
    n = 0
    def counter():
        nonlocal n
        n += 1
        return n
    return counter

counter = make_counter(); counter(); counter()

class Shape:
    sides = 0
    def __init__(self, size):
        self.size = size
    def area(self):
        return self.size ** 2 * scale
    def __eq__(self, other):
        return type(other) is type(self) and other.size == self.size

@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0
    def norm(self):
        return math.hypot(self.x, self.y)

@functools.lru_cache(maxsize=32)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

sq = Shape(3)
pts = [Point(3.0, 4.0), Point(1.0)]
"""


def test_main_objects_by_value_in_exec_namespace():
    ns: dict = {"__name__": "__main__"}
    exec(NOTEBOOK, ns)
    names = ["f", "g", "counter", "Shape", "Point", "fib", "sq", "pts", "np", "math"]
    s = dumps({k: ns[k] for k in names}, namespace=ns)
    blob = blob_of(s)
    # functions are bound to the *target* namespace; their globals are not shipped with them
    target: dict = {"__name__": "__main__", "scale": 10}  # `scale` is its own co-variable
    out = loads(blob, namespace=target)
    target.update(out)
    assert out["f"](2) == 20 and out["g"](2) == 21
    assert out["f"].__globals__ is target
    target["scale"] = 100  # rebinding a global after restore is seen by restored code
    assert out["f"](2) == 200 and out["sq"].area() == 900
    assert out["counter"]() == 3
    assert out["fib"](30) == 832040 and out["fib"].cache_info().maxsize == 32
    assert out["pts"][0].norm() == 5.0 and dataclasses.is_dataclass(out["pts"][0])
    assert isinstance(out["sq"], out["Shape"]) and isinstance(out["pts"][1], out["Point"])
    assert out["np"] is np  # modules by reference


SUBPROC_DUMP = (
    NOTEBOOK
    + """
import sys
from kernel_agent.serialize import dumps
names = ["f", "g", "counter", "Shape", "Point", "fib", "sq", "pts", "np", "math"]
s = dumps({k: globals()[k] for k in names})
assert s.error is None, s.error
with open(sys.argv[1], "wb") as fh:
    for p in s.parts:
        fh.write(p)
with open(sys.argv[1] + ".sq", "wb") as fh:   # an instance in a blob of its own
    for p in dumps({"sq2": Shape(4)}).parts:
        fh.write(p)
s2 = dumps({"scale": scale})
with open(sys.argv[1] + ".scale", "wb") as fh:
    for p in s2.parts:
        fh.write(p)
"""
)

SUBPROC_LOAD = """
import sys, dataclasses
from kernel_agent.serialize import loads
with open(sys.argv[1] + ".scale", "rb") as fh:
    globals().update(loads(bytearray(fh.read())))
with open(sys.argv[1], "rb") as fh:
    globals().update(loads(bytearray(fh.read())))
assert f(2) == 20 and g(2) == 21, (f(2), g(2))
assert counter() == 3
assert sq.area() == 90 and sq == Shape(3)
assert pts[0].norm() == 5.0 and dataclasses.is_dataclass(Point) and pts[1] == Point(1.0)
assert fib(40) == 102334155
with open(sys.argv[1] + ".sq", "rb") as fh:
    sq2 = loads(bytearray(fh.read()))["sq2"]
assert type(sq2) is Shape and sq2.area() == 160   # same class object across blobs
scale = 2
assert f(5) == 10 and sq.area() == 18   # globals are this process's __main__
assert type(sq).__module__ == "__main__"
print("LOADED-OK")
"""


def test_main_objects_across_processes(tmp_path: Path):
    """Dump in one real __main__ process, load in another: nothing is importable by name."""
    blob = tmp_path / "blob"
    root = str(Path(__file__).resolve().parents[2])
    env_path = {"PYTHONPATH": root}
    import os

    env = {**os.environ, **env_path}
    dump = subprocess.run(
        [sys.executable, "-c", SUBPROC_DUMP, str(blob)], capture_output=True, text=True, env=env
    )
    assert dump.returncode == 0, dump.stderr
    load = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SUBPROC_LOAD), str(blob)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert load.returncode == 0, load.stderr
    assert "LOADED-OK" in load.stdout


def test_closure_and_partial_and_nested_function_by_value():
    ns: dict = {"__name__": "__main__"}
    exec(
        "import functools\n"
        "def outer(k):\n"
        "    def inner(x):\n"
        "        return x + k\n"
        "    return inner\n"
        "add5 = outer(5)\n"
        "p = functools.partial(pow, 2)\n",
        ns,
    )
    out = roundtrip({"add5": ns["add5"], "p": ns["p"]}, namespace=ns)
    assert out["add5"](1) == 6 and out["p"](10) == 1024


def test_functions_and_their_global_dict_keep_sharing():
    ns: dict = {"__name__": "__main__"}
    exec("cache = {}\ndef put(k, v):\n    cache[k] = v\n", ns)
    target: dict = {"__name__": "__main__"}
    out = loads(
        blob_of(dumps({"cache": ns["cache"], "put": ns["put"]}, namespace=ns)), namespace=target
    )
    target.update(out)
    out["put"]("k", 1)
    assert target["cache"] == {"k": 1} and target["cache"] is out["cache"]


def test_dataclass_instance_equality_and_fields():
    @dataclasses.dataclass(frozen=True)
    class Local:
        a: int
        b: tuple = (1, 2)

    obj = Local(1)
    out = roundtrip({"obj": obj})
    assert out["obj"] == obj
    assert [f.name for f in dataclasses.fields(out["obj"])] == ["a", "b"]


@functools.cache
def _square(x):
    return x * x


def test_lru_cache_of_importable_function_by_reference():
    out = roundtrip({"c": _square})
    assert out["c"] is _square


def test_lru_cache_of_builtin_by_value():
    out = roundtrip({"c": functools.lru_cache(maxsize=None)(len)})
    assert out["c"]((1, 2)) == 2


KERNEL_A = """
import functools
import numpy as np
from kernel_agent.serialize import dumps
scale = 3
def f(x):
    return x * scale
class C:
    def m(self):
        return f(2)
@functools.lru_cache
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
c = C()
arr = np.arange(10)
v = arr[2:5]
for path, names in (("blob", ["f", "C", "c", "fib", "arr", "v"]), ("blob2", ["scale", "np"])):
    with open(path, "wb") as fh:
        for p in dumps({k: globals()[k] for k in names}).parts:
            fh.write(p)
"""

KERNEL_B = """
from kernel_agent.serialize import loads
for path in ("blob2", "blob"):
    with open(path, "rb") as fh:
        globals().update(loads(bytearray(fh.read())))
"""


def test_notebook_objects_between_real_kernels(make_kernel):
    """In ipykernel the user namespace is __main__.__dict__: restored code is bound to it."""
    a = make_kernel(load_agent=False)
    a.ok(KERNEL_A)
    b = make_kernel(load_agent=False)
    b.ok(KERNEL_B)
    assert b.value("(f(2), c.m(), fib(20), isinstance(c, C), bool(np.shares_memory(v, arr)))") == [
        6,
        6,
        6765,
        True,
        True,
    ]
    b.ok("scale = 10\narr[2] = 99")
    assert b.value("(f(2), c.m(), int(v[0]), type(__builtins__).__name__)") == [
        20,
        20,
        99,
        "module",
    ]


def test_a_text_file_iterated_far_from_its_end_is_not_read_to_find_its_place(tmp_path,
                                                                            monkeypatch):
    # its position is found by reading the rest, at every checkpoint (background rounds too)
    from kernel_agent import serialize

    (tmp_path / "big.log").write_text("".join(f"line {i}\n" for i in range(5000)))
    with open(tmp_path / "big.log") as f:
        next(f)
        assert dumps({"f": f}).error is None
        f.seek(0)
        next(f)
        monkeypatch.setattr(serialize, "_TEXT_REST_LIMIT", 100)
        s = dumps({"f": f})
        assert s.error is not None and "too much" in s.error
        assert f.readline() == "line 1\n"  # left where it was


# ------------------------------------------------------------------------------- regex matches


def _spans(m):
    return None if m is None else (m.re.pattern, m.string, m.pos, m.endpos, m.regs, m.lastindex,
                                   m.lastgroup, m.groupdict())


def test_regex_matches_come_back_as_the_call_that_found_them():
    """No pickle of their own: whatever held one was lost when its cell could not be re-run.
    Each is made again by the call that found it (a lazy pattern: match and fullmatch differ;
    a search past pos; a later step of finditer, what sub and split hand their callbacks)."""
    import re

    pat = re.compile(r"(?P<word>[a-z]+?)(?P<num>\d*)")
    text = "  ab12 cd xyz9"
    seen = []
    re.sub(r"[a-z]+", lambda m: seen.append(m) or "", text)
    values = {
        "pat": pat,
        "m": pat.match(text, 2),
        "full": pat.fullmatch("abc123"),
        "found": pat.search(text, 1, 9),
        "third": list(pat.finditer(text))[2],
        "cb": seen[1],
        "b": re.search(rb"(\d)(\d)?", bytearray(b"xx7")),
    }
    out = roundtrip(values)
    for name, m in values.items():
        if name != "pat":
            assert _spans(out[name]) == _spans(m), name
    assert out["m"].re is out["pat"] and out["found"].re is out["pat"]
    assert type(out["b"].string) is bytearray


def test_one_match_held_twice_is_one_object_after_loading():
    import re

    m = re.search(r"\d+", "abc 123")
    out = roundtrip({"m": m, "found": [m, m.re]})
    assert out["found"][0] is out["m"] and out["m"].group() == "123"


def test_a_match_not_found_again_fails_to_load_rather_than_load_another():
    import re

    buf = bytearray(b"ab12")
    m = re.search(rb"\d+", buf)
    s = dumps({"m": m})
    blob = blob_of(s)
    buf[:] = b"zzzz"  # (the pickle holds its own copy of the bytes: it still loads)
    assert loads(blob)["m"].group() == b"12"
    from kernel_agent.serialize import _rebuild_match

    with pytest.raises(ValueError, match="was not found again"):
        _rebuild_match(m.re, buf, 0, 4, "search", 0, ((2, 4),))


# ----------------------------------------------------------------------------- weak references


class _Held:
    """A notebook-like object a weak reference can point to."""


def test_weak_references_come_back_pointing_to_the_loaded_objects_or_dead():
    """A plain weak reference had no pickle: its whole co-variable was unserializable. It is
    made again to the loaded object (alive, since the stream holds it), and a dead one dead."""
    held, gone = _Held(), _Held()
    dead = __import__("weakref").ref(gone)
    del gone
    out = roundtrip({"held": held, "refs": [__import__("weakref").ref(held)], "dead": dead})
    assert out["refs"][0]() is out["held"]
    assert out["dead"]() is None


def test_a_weak_reference_to_what_nothing_else_in_the_stream_holds_is_lossy():
    """Loaded alone, the object would be gone at once while the session still has it (the
    digest checks a weak reference by type only): the stream says so, so the checkpoint re-runs
    its cells or names it."""
    held = _Held()
    s = dumps({"ref": __import__("weakref").ref(held)})
    assert s.error is None and s.lossy and "weak reference" in s.lossy
    assert dumps({"ref": __import__("weakref").ref(held), "held": held}).lossy is None
