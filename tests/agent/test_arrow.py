"""Arrow data in the tracker and the portable digest.

With pyarrow installed, pandas (3.x) backs every string column with an arrow array
(ArrowStringArray), and ``dtype_backend='pyarrow'`` frames hold ArrowExtensionArrays: the walk
must hash their buffers in C (never element by element: a million-row column listed item by
item cost seconds per touch), link names that share arrow buffers (slices, ``.array``,
``pa.Table.from_pandas``, numpy memory arrow wraps without a copy), see a column replaced in
place, and give a portable digest without addresses, the same in every process.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from kernel_agent.changes import Tracker, _Walker, value_digest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")


def _tracker(ns: dict, **attrs: object) -> Tracker:
    t = Tracker()
    for k, v in attrs.items():
        setattr(t, k, v)
    t.update(ns, sorted(ns), [])
    return t


def _arrow_frame(n: int) -> object:
    return pd.DataFrame({"s": pd.array([f"name-{i}" for i in range(n)],
                                       dtype=pd.ArrowDtype(pa.string())),
                         "x": np.arange(n, dtype=float)})


def test_an_arrow_string_column_is_hashed_by_its_buffers_not_item_by_item():
    df = _arrow_frame(200_000)
    w = _Walker(portable=False)
    w.walk(df)
    # (listing the column walked 200,000 strings)
    assert w.nodes + w.work < 100


def test_the_default_str_dtype_with_pyarrow_is_walked_as_arrow():
    df = pd.DataFrame({"s": [f"v{i}" for i in range(50_000)]})
    if type(df["s"].array).__name__ != "ArrowStringArray":
        pytest.skip("this pandas does not back str columns with arrow")
    w = _Walker(portable=False)
    w.walk(df)
    assert w.nodes + w.work < 100


def test_a_string_column_changed_in_place_is_a_mutation():
    ns = {"df": pd.DataFrame({"s": ["a", "b", "c"] * 10})}
    ns["col"] = ns["df"]["s"].array
    t = _tracker(ns)
    assert t.update(ns, ["df"], []).mutated == set()
    ns["df"].loc[0, "s"] = "changed"  # (pandas swaps the arrow array inside `col`)
    assert t.update(ns, ["df"], []).mutated == {"df", "col"}


def test_names_sharing_arrow_buffers_are_one_covariable():
    df = pd.DataFrame({"s": ["a", None, "c", "d"] * 5, "n": np.arange(20)})
    t_ = pa.Table.from_pandas(df)
    x = np.arange(10)
    ns = {"df": df, "col": df["s"].array, "t": t_, "t2": t_.slice(0, 5),
          "x": x, "ax": pa.array(x), "other": pa.table({"z": ["q", "r"]})}
    tr = _tracker(ns)
    groups = tr.covariables()
    assert frozenset({"df", "col", "t", "t2"}) in groups
    assert frozenset({"x", "ax"}) in groups
    assert frozenset({"other"}) in groups


def test_a_write_into_numpy_memory_arrow_wraps_changes_the_arrow_array():
    x = np.arange(10)
    ns = {"x": x, "ax": pa.array(x)}
    t = _tracker(ns)
    ns["x"][0] = 99  # (`ax[0]` is now 99: arrow made no copy)
    assert ns["ax"][0].as_py() == 99
    assert t.update(ns, ["x"], []).mutated == {"x", "ax"}


def test_an_unrelated_arrow_table_is_not_a_mutation_when_read():
    ns = {"t": pa.table({"s": ["a", "b"] * 1000, "n": list(range(2000))})}
    t = _tracker(ns)
    assert t.update(ns, ["t"], []).mutated == set()


def test_an_arrow_column_over_the_hash_budget_is_partial():
    ns = {"df": _arrow_frame(1_200_000)}
    t = _tracker(ns)
    assert t.stale() == {"df"} and "df" in t.update(ns, ["df"], []).mutated
    t.refresh(ns)
    assert t.stale() == set()


_VALUES = """
import numpy as np, pandas as pd, pyarrow as pa
df = pd.DataFrame({"s": ["a", "b", None, "d"] * 3, "n": np.arange(12)})
t = pa.Table.from_pandas(df)
values = dict(df=df, col=df["s"].array, t=t, t2=t.slice(2, 5),
              dfa=pd.DataFrame({"a": [1, None, 3], "b": ["x", "y", None]}).convert_dtypes(
                  dtype_backend="pyarrow"),
              rb=pa.record_batch({"k": pa.array(["u", "v", "u"]).dictionary_encode()}),
              chunked=pa.chunked_array([["p", "q"], ["r"]]), buf=pa.py_buffer(b"hello"))
"""


def _values() -> dict:
    scope: dict = {}
    exec(_VALUES, scope)  # noqa: S102 - the same values in this process and in another
    return scope["values"]


def test_the_portable_digest_of_arrow_data_is_the_same_in_another_process():
    code = _VALUES + "from kernel_agent.changes import value_digest\nprint(value_digest(values))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=120).stdout.strip()
    assert other == value_digest(_values())


def test_the_portable_digest_of_arrow_data_survives_a_pickle_round_trip():
    values = _values()
    assert value_digest(pickle.loads(pickle.dumps(values, protocol=5))) == value_digest(values)


def test_the_portable_digest_ignores_chunking_but_not_values():
    one = pa.chunked_array([["p", "q", "r"]])
    assert value_digest({"c": pa.chunked_array([["p", "q"], ["r"]])}) == value_digest({"c": one})
    assert value_digest({"c": pa.chunked_array([["p", "q", "s"]])}) != value_digest({"c": one})
    t_ = pa.table({"s": ["a", "b", "c", "d"]})
    assert value_digest({"t": t_.slice(1, 2)}) == value_digest({"t": pa.table({"s": ["b", "c"]})})
    assert value_digest({"t": t_.slice(1, 2)}) != value_digest({"t": t_.slice(2, 2)})


def test_an_arrow_array_over_numpy_memory_is_shipped_over_that_memory():
    from kernel_agent import serialize

    x = np.arange(5)
    df = pd.DataFrame({"n": np.arange(4), "s": list("abcd")})
    # arrow data first in the stream: its buffers are met before the arrays they read
    values = {"ax": pa.array(x), "t": pa.Table.from_pandas(df), "x": x, "df": df}
    s = serialize.dumps(values)
    assert s.error is None
    back = serialize.loads(b"".join(bytes(p) for p in s.parts))
    back["x"][0] = 42
    back["df"].loc[1, "n"] = 43
    assert back["ax"].to_pylist() == [42, 1, 2, 3, 4]
    assert back["t"].column("n").to_pylist() == [0, 43, 2, 3]


def test_a_table_and_its_slices_are_shipped_once_and_share_buffers_again():
    from kernel_agent import serialize

    t_ = pa.table({"s": [f"v{i}" for i in range(50_000)], "x": np.arange(50_000.0)})
    alone = serialize.dumps({"t": t_}).nbytes
    s = serialize.dumps({"t": t_, "t2": t_.slice(5, 10), "c": t_.column("s")})
    assert s.error is None and s.nbytes < alone + 4096  # (not two or three copies)
    back = serialize.loads(b"".join(bytes(p) for p in s.parts))
    assert back["t2"].equals(t_.slice(5, 10)) and back["c"].equals(t_.column("s"))
    data = [col.chunk(0).buffers()[2].address for col in (back["t"].column("s"), back["c"])]
    assert data[0] == data[1]
