"""Arrow data migrated: pandas' arrow-backed string columns (the default str dtype of pandas 3
when pyarrow is installed, as in every scipy/pangeo notebook image), ``dtype_backend='pyarrow'``
frames, pyarrow tables and their slices. Under the optimal and the replay plan every variable
must come back verified and equal, with its identity relations kept.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_verified, migrate_both

pytest.importorskip("pyarrow")
pytest.importorskip("pandas")


def _check(make_kernel, tmp_path, cells: list[str], expr: str) -> None:
    """Run `cells`, migrate under both plans; `expr` must be equal in A and in each B."""
    a, out = migrate_both(make_kernel, tmp_path, cells)
    want = a.value(expr)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(expr) == want, r.plan


def test_a_frame_of_arrow_strings_and_its_column_array_come_back_shared(make_kernel, tmp_path):
    _check(make_kernel, tmp_path, [
        "import pandas as pd, pyarrow as pa",
        "df = pd.DataFrame({'s': [f'name-{i}' for i in range(1000)], 'n': range(1000)})",
        "col = df['s'].array",
        "n_chars = int(df['s'].str.len().sum())",
    ], "[type(df['s'].array).__name__, col is df['s'].array, df['s'].tolist(), n_chars, "
       "str(df['s'].dtype)]")


def test_a_pyarrow_table_and_a_slice_of_it_come_back_equal(make_kernel, tmp_path):
    _check(make_kernel, tmp_path, [
        "import pyarrow as pa",
        "t = pa.table({'s': ['a', None, 'c', 'd'] * 50, 'x': [1.5, 2.5, None, 4.0] * 50})",
        "t2 = t.slice(3, 10)",
        "names = t2.column('s').to_pylist()",
    ], "[t.to_pydict(), t2.to_pydict(), t2.schema.to_string(), names, t.equals(t) and len(t2)]")


def test_a_string_column_set_in_place_comes_back_changed(make_kernel, tmp_path):
    # pandas swaps the arrow array inside the column's extension array: `col` sees the change
    _check(make_kernel, tmp_path, [
        "import pandas as pd",
        "df = pd.DataFrame({'s': ['x', 'y', 'z'] * 20})",
        "col = df['s'].array",
        "df.loc[0, 's'] = 'changed'",
        "first = col[0]",
    ], "[df['s'].tolist(), col[0], first, col is df['s'].array]")


def test_a_frame_with_pyarrow_dtypes_comes_back_equal(make_kernel, tmp_path):
    _check(make_kernel, tmp_path, [
        "import io, pandas as pd",
        "csv = 'a,b,c\\n1,x,2.5\\n,y,\\n3,,4.0\\n'",
        "df = pd.read_csv(io.StringIO(csv), dtype_backend='pyarrow')",
        "df['d'] = df['a'] * 2",
        "sub = df[df['a'].notna()]",
    ], "[[str(t) for t in df.dtypes], df.astype(object).where(df.notna(), None).values.tolist(), "
       "sub.index.tolist(), [str(t) for t in sub.dtypes]]")


def test_a_table_from_a_frame_of_arrow_strings_comes_back_equal(make_kernel, tmp_path):
    _check(make_kernel, tmp_path, [
        "import pandas as pd, pyarrow as pa",
        "df = pd.DataFrame({'s': ['a', 'b', None] * 10, 'n': range(30)})",
        "t = pa.Table.from_pandas(df)",
        "back = t.to_pandas()",
    ], "[t.to_pydict(), back.equals(df), df['s'].tolist()]")


def test_an_arrow_array_over_numpy_memory_still_reads_it_after_a_restore(make_kernel, tmp_path):
    # arrow wraps numpy memory without a copy: a write into `x` (or into the frame's numeric
    # column) shows in `ax` (in `t`). Pickled by arrow, each came back over a copy of its own
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np, pandas as pd, pyarrow as pa",
        "x = np.arange(5); ax = pa.array(x)",
        "df = pd.DataFrame({'n': np.arange(6), 's': list('abcdef')})",
        "t = pa.Table.from_pandas(df)",
    ])
    write = "x[0] = 42; df.loc[1, 'n'] = 43"
    a.ok(write)
    expr = "[ax.to_pylist(), t.column('n').to_pylist()]"
    want = a.value(expr)
    assert want == [[42, 1, 2, 3, 4], [0, 43, 2, 3, 4, 5]]
    for r in out.values():
        assert_verified(r)
        r.kernel.ok(write)
        assert r.kernel.value(expr) == want, r.plan
