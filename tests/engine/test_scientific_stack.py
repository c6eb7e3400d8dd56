"""Notebooks over the scientific stack (scipy, networkx, pandas, numpy) migrated with both plans.

Each scenario is the smallest run of cells a data scientist writes that once came back wrong
after a restore that said it verified (or was lost for no reason). Every test migrates with
the optimal and the replay plan (tests/engine/adversarial.py) and then asks the restored
kernel what kernel A answers: values, and the identity and memory sharing between them.
"""

from __future__ import annotations

import pytest

from tests.engine.adversarial import assert_verified, migrate_both


def test_a_frame_over_the_notebooks_array_split_by_a_column_write_still_shares_it(make_kernel,
                                                                                   tmp_path):
    """``pd.DataFrame(arr, copy=False)`` is a window on `arr`. A write to column 'a' while a
    rolling window referenced it split the frame's block: 'b' and 'c' stayed a (strided) view
    of `arr`. pandas' block pickle copies such values under protocol 5, so the shipped frame
    came back over a copy: a later ``arr[2, 2] = 99`` no longer showed in `df`, and the restore
    had verified both."""
    pytest.importorskip("pandas")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np, pandas as pd",
        "arr = np.arange(12.0).reshape(4, 3)\ndf = pd.DataFrame(arr, columns=list('abc'), copy=False)",
        "rw = df['a'].rolling(2)",
        "df.loc[1, 'a'] = 50.0",
    ])
    probe = "[df.values.tolist(), arr.tolist(), rw.sum().fillna(-1).tolist()]"
    a.ok("arr[2, 2] = 99.0")
    want = a.value(probe)
    assert want[0][2][2] == 99.0  # (the premise: `df` is over `arr` in kernel A)
    for r in out.values():
        assert_verified(r)
        r.kernel.ok("arr[2, 2] = 99.0")
        assert r.kernel.value(probe) == want, r.plan


def test_scipy_specials_error_handling_set_by_a_cell_comes_back(make_kernel, tmp_path):
    """``prev = sc.seterr(singular='raise')`` sets process-wide C state and binds a name: the
    optimal plan shipped `prev` and did not re-run the cell, so after the restore ``sc.gamma(-1)``
    returned inf where the session raised, and every variable verified."""
    pytest.importorskip("scipy")
    probe = ("[sc.geterr()['singular'], sc.geterr()['domain'], "
             "(lambda: [sc.gamma(-1.0)])() if sc.geterr()['singular'] == 'ignore' else 'raises']")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np\nimport scipy.special as sc",
        "prev = sc.seterr(singular='raise', domain='warn')",
        "x = sc.gamma(np.array([0.5, 1.5]))",
    ])
    assert a.value(probe) == ["raise", "warn", "raises"]
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == ["raise", "warn", "raises"], r.plan
        assert r.kernel.value("prev['singular']") == "ignore", r.plan


def test_smoothing_splines_re_made_by_a_restore_verify(make_kernel, tmp_path):
    """A UnivariateSpline keeps FITPACK's work arrays, which are uninitialised memory past what
    FITPACK wrote (all of them for an interpolating spline): each one the replay plan re-made
    was reported as "value differs from the checkpointed one" and not verified."""
    pytest.importorskip("scipy")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import interpolate",
        "x = np.linspace(0, 6, 30)\ny = np.sin(x) + 0.05 * np.cos(7 * x)",
        "us = interpolate.UnivariateSpline(x, y, s=1.0)\nus.set_smoothing_factor(0.1)",
        "ius = interpolate.InterpolatedUnivariateSpline(x, y)",
    ])
    probe = ("[round(float(us(1.0)), 12), float(us.get_residual()), us.get_knots().tolist(), "
             "round(float(ius(2.5)), 12)]")
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan


def test_scipys_module_level_distribution_keeps_drawing_from_the_notebooks_generator(
        make_kernel, tmp_path):
    """``stats.norm.random_state = rng`` gives scipy's own `norm` the notebook's generator.
    ``stats.norm.rvs()`` then advances `rng` from a cell that does not name it: the monitor
    missed that change, so the replay plan had no cell re-making `rng` as it was (lost), and
    the optimal plan shipped `rng` and re-ran the cells making `a`: the re-run attached the
    `rng` its first cell re-made in passing, then the loaded one was bound to the name, so
    ``stats.norm`` drew from an orphan and `rng` no longer moved with it, all verified."""
    pytest.importorskip("scipy")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import stats",
        "rng = np.random.default_rng(0)",
        "stats.norm.random_state = rng",
        "a = stats.norm.rvs(size=3)",
    ])
    probe = "[stats.norm.random_state is rng, stats.norm.rvs(size=2).tolist(), rng.random()]"
    want = a.value(probe)
    assert want[0] is True
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan


def test_a_held_groupby_over_a_string_column_and_its_frame_load_as_they_were(make_kernel,
                                                                             tmp_path):
    """pandas' pickle of an arrow-backed array (the default ``str`` column with pyarrow) makes
    a new arrow array each time: the frame's column and the Series the groupby keeps of it,
    one arrow array in the session, came back with one each, so `df` and `gb` "differed"
    from their checkpoint. Drawn without a seed, they cannot be re-made: `df`, the notebook's
    data, was reported as not verified after a restore that had loaded it whole."""
    pytest.importorskip("pyarrow")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np, pandas as pd",
        "df = pd.DataFrame({'g': list('abcab'), 'v': np.random.default_rng().random(5)})",
        "gb = df.groupby('g')\nagg = gb['v'].sum()",
    ])
    r = out["optimal"]
    assert_verified(r)
    probe = "[gb.obj is df, gb['v'].sum().tolist(), agg.tolist(), str(df['g'].dtype)]"
    assert r.kernel.value(probe) == a.value(probe)
    lost = out["replay"].restore["lost"]  # (nothing re-makes the draw: named, not silent)
    assert set(lost) == {"df", "gb", "agg"}, lost


def test_graph_views_over_a_digraph_still_see_it_change(make_kernel, tmp_path):
    """(Held already; kept as a regression test.) ``D.reverse(copy=False)`` and a
    ``subgraph_view`` whose edge filter reads a notebook global are windows on `D`: after the
    restore an edge added to `D`, and a new threshold, show through them, and the edge data
    dict is one object seen from both ends (`_succ` and `_pred`)."""
    pytest.importorskip("networkx")
    cells = [
        "import networkx as nx",
        "D = nx.DiGraph()\nD.add_weighted_edges_from([(1, 2, 0.5), (2, 3, 1.5), (3, 1, 2.0)])",
        "R = D.reverse(copy=False)\nthr = 1.0\n"
        "heavy = nx.subgraph_view(D, filter_edge=lambda u, v: D[u][v]['weight'] >= thr)",
        "e12 = D.edges[1, 2]\ne12['color'] = 'red'\nD.add_edge(3, 4, weight=3.0)",
    ]
    after = "D.add_edge(4, 5, weight=9.0)\nthr = 2.5"
    probe = ("[sorted(R.edges()), sorted(heavy.edges()), R._graph is D, heavy._graph is D, "
             "D._succ[1][2] is D._pred[2][1], e12 is D[1][2], D[1][2]]")
    a, out = migrate_both(make_kernel, tmp_path, cells)
    a.ok(after)
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        r.kernel.ok(after)
        assert r.kernel.value(probe) == want, r.plan


def test_generators_sharing_one_bit_generator_keep_drawing_from_it(make_kernel, tmp_path):
    """(Held already; kept as a regression test.) Two Generators and a legacy RandomState over
    one bit generator, and a frozen distribution drawing from one of them, are one stream:
    after the restore their next draws interleave as in kernel A."""
    pytest.importorskip("scipy")
    a, out = migrate_both(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import stats",
        "g1 = np.random.default_rng(5)\ng2 = np.random.Generator(g1.bit_generator)\n"
        "legacy = np.random.RandomState(g1.bit_generator)",
        "x = g1.random(3)\ny = g2.random(2)\nz = legacy.rand(2)",
        "frozen = stats.norm(loc=1.0)\nfrozen.random_state = g2\ns = frozen.rvs(4)",
    ])
    probe = ("[g2.bit_generator is g1.bit_generator, legacy._bit_generator is g1.bit_generator, "
             "frozen.random_state is g2, g1.random(2).tolist(), frozen.rvs(2).tolist(), "
             "legacy.rand(1).tolist(), g2.random(1).tolist()]")
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan
