"""Notebooks no earlier test was written for, in domains the engine had seen little of.

Each is a realistic run of cells (scipy, networkx, SQLAlchemy, attrs/pydantic, ...) migrated
with both plans (tests/engine/adversarial.py). The restore must verify every variable, and a
probe evaluated in kernel A after the checkpoint must give the same answer in each restored
kernel: values, and the identity relations between them (`is`, shared memory).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.engine.adversarial import assert_verified, migrate_both
from tests.kernels import Kernel


def _seeded(make_kernel):
    """Kernels with one string-hash seed, as the server starts every kernel of a user."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return lambda: make_kernel(env=env)


def assert_same_everywhere(make_kernel, tmp_path, cells: list[str], probe: str) -> None:
    """Run `cells`, migrate with both plans: every variable verified, `probe` equal in A and B."""
    a, out = migrate_both(_seeded(make_kernel), tmp_path, cells)
    want = a.value(probe)
    for r in out.values():
        assert_verified(r)
        assert r.kernel.value(probe) == want, r.plan


def test_sparse_matrices_keep_sharing_the_arrays_they_were_built_on(make_kernel, tmp_path):
    """A CSR matrix built from `(data, indices, indptr)` holds `data` itself (a write to `data`
    shows in the matrix); lil and coo matrices keep their own row lists and coordinates."""
    pytest.importorskip("scipy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np\nimport scipy.sparse as sp",
        "data = np.array([1.0, 2.0, 3.0, 4.0]); indices = np.array([0, 2, 1, 3]); indptr = np.array([0, 2, 3, 4])",
        "A = sp.csr_matrix((data, indices, indptr), shape=(3, 4))",
        "L = sp.lil_matrix((4, 4)); L[0, 1] = 5; L[2, 3] = 7",
        "C = sp.coo_matrix(([1, 2, 3], ([0, 1, 2], [2, 1, 0])), shape=(3, 3))",
        "B = A @ A.T",
        "data[0] = 10.0",
        "L[1, 1] = 2\nLc = L.tocsr()",
        "parts = {'A': A, 'C': C}",
    ], "[float(A[0, 0]), bool(np.shares_memory(A.data, data)), parts['A'] is A, B.toarray().tolist(),"
       " Lc.toarray().tolist(), L.rows.tolist(), C.toarray().tolist()]")


def test_a_fitted_spline_an_interpolator_and_an_optimizer_result_come_back(make_kernel, tmp_path):
    """`CubicSpline`, `interp1d` with extrapolation, a Nelder-Mead `OptimizeResult` and a name
    holding its `x` (the same array), fitted against a notebook function reading the spline."""
    pytest.importorskip("scipy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import optimize, interpolate",
        "xs = np.linspace(0, 10, 11); ys = np.sin(xs)",
        "spl = interpolate.CubicSpline(xs, ys)",
        "f1 = interpolate.interp1d(xs, ys, kind='linear', fill_value='extrapolate')",
        "def loss(p):\n    return float(np.sum((spl(xs) - p[0] * np.sin(p[1] * xs)) ** 2))",
        "res = optimize.minimize(loss, x0=[0.5, 0.9], method='Nelder-Mead')",
        "root = optimize.brentq(lambda x: spl(x), 2, 4)",
        "best = res.x",
    ], "[round(float(spl(2.5)), 9), round(float(f1(11)), 9), bool(res.success),"
       " [round(v, 6) for v in res.x.tolist()], best is res.x, round(root, 9), res.nit]")


def test_a_frozen_distribution_drawing_from_the_notebooks_generator_keeps_drawing_from_it(
        make_kernel, tmp_path):
    """`norm.random_state = rng`: the frozen distribution and `rng` are one generator; the next
    draws of both after the restore are the ones kernel A makes."""
    pytest.importorskip("scipy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import stats",
        "rng = np.random.default_rng(7)",
        "norm = stats.norm(loc=2, scale=3)",
        "norm.random_state = rng",
        "sample = norm.rvs(size=5)",
        "gam = stats.gamma(a=2.0)",
        "ks = stats.kstest(sample, norm.cdf)",
        "more = norm.rvs(size=3)",
    ], "[norm.rvs(size=2).tolist(), rng.integers(0, 1000, 3).tolist(), float(gam.mean()),"
       " round(float(ks.pvalue), 12), norm.random_state is rng]")


def test_kd_trees_stay_built_over_the_notebooks_points(make_kernel, tmp_path):
    """`KDTree(pts)` keeps `pts` itself (no copy). Shipped, the tree came back over a copy and
    both verified (a tree is checked by type only): cKDTree's pickle copies its points, a loaded
    array's dtype was a copy of `float64` (so `np.asarray(x, dtype=float)` made a view, not `x`),
    and `KDTree`, a Python subclass, was walked without what its C base holds, so it was planned
    apart from `pts`. With Butterworth filter coefficients and a `sosfilt` final state."""
    pytest.importorskip("scipy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np\nfrom scipy import spatial, signal",
        "pts = np.random.default_rng(1).random((50, 2))",
        "tree = spatial.KDTree(pts); ctree = spatial.cKDTree(pts)",
        "b, a = signal.butter(3, 0.2)",
        "sos = signal.butter(4, 0.1, output='sos')",
        "x = np.random.default_rng(2).standard_normal(100)\ny = signal.filtfilt(b, a, x)",
        "zi = signal.sosfilt_zi(sos) * x[0]\nys, zf = signal.sosfilt(sos, x, zi=zi)",
        "d, i = tree.query([0.5, 0.5], k=3)",
    ], "[tree.query([0.1, 0.2], k=2)[1].tolist(), int(ctree.query([0.3, 0.3])[1]), i.tolist(),"
       " round(float(y.sum()), 9), round(float(zf.sum()), 9), tree.data is pts, ctree.data is pts]")


def test_graph_views_and_node_attributes_stay_over_the_graph_and_the_notebooks_objects(
        make_kernel, tmp_path):
    """`nodes = G.nodes`, `adj = G.adj` and a subgraph view are windows on `G` (an edge added
    later shows in them), and a node attribute is the notebook's `Station` object itself."""
    pytest.importorskip("networkx")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import networkx as nx",
        "class Station:\n    def __init__(self, name):\n        self.name = name\n        self.visits = 0\n"
        "    def __eq__(self, o):\n        return isinstance(o, Station) and o.name == self.name and o.visits == self.visits\n"
        "    __hash__ = object.__hash__",
        "stations = {n: Station(n) for n in 'abcde'}",
        "G = nx.Graph()\nfor n, s in stations.items():\n    G.add_node(n, obj=s, weight=len(n))",
        "G.add_edges_from([('a','b'),('b','c'),('c','d'),('d','e'),('a','e')], cap=1.5)",
        "nodes = G.nodes; adj = G.adj; deg = G.degree",
        "sub = G.subgraph(['a', 'b', 'c'])",
        "stations['a'].visits += 3",
        "G.add_edge('b', 'e')",
        "path = nx.shortest_path(G, 'a', 'c')\npr = nx.pagerank(G)",
    ], "[nodes['a']['obj'] is stations['a'], G.nodes['a']['obj'].visits, sorted(adj['b']), dict(deg),"
       " sorted(sub.edges()), len(sub), path, nodes._nodes is G._node, sub._graph is G, adj._atlas is G._adj]")


def test_frozen_slotted_and_inherited_models_keep_their_shared_parts(make_kernel, tmp_path):
    """A frozen slotted dataclass twice in a list, a dataclass subclass, attrs classes (one
    holding another model) and a pydantic model whose list field a later cell appended to."""
    pytest.importorskip("attrs")
    pytest.importorskip("pydantic")
    assert_same_everywhere(make_kernel, tmp_path, [
        "from dataclasses import dataclass, field\nimport attrs\nimport pydantic",
        "@dataclass(frozen=True, slots=True)\nclass Point:\n    x: float\n    y: float",
        "@dataclass\nclass Shape:\n    name: str\n    pts: list = field(default_factory=list)",
        "@dataclass\nclass Poly(Shape):\n    closed: bool = True",
        "@attrs.define\nclass Tag:\n    label: str\n    owner: object = None",
        "@attrs.frozen\nclass FrozenTag:\n    label: str",
        "class Conf(pydantic.BaseModel):\n    lr: float = 0.1\n    layers: list[int] = [1, 2]",
        "p = Point(1.0, 2.0); poly = Poly('tri', [p, Point(3, 4), p])",
        "t = Tag('x', owner=poly); ft = FrozenTag('f'); conf = Conf(lr=0.5)",
        "conf.layers.append(9)",
    ], "[poly.pts[0] is poly.pts[2], t.owner is poly, type(p).__slots__, ft.label, conf.layers, conf.lr,"
       " p == Point(1.0, 2.0), isinstance(poly, Shape)]")


def test_an_instance_of_a_class_redefined_later_keeps_its_old_class(make_kernel, tmp_path):
    """`old` was made before `class Model` was run again: it still scores with the old method,
    and its class is not the new `Model`."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "class Model:\n    def score(self):\n        return 1",
        "old = Model()",
        "class Model:\n    def score(self):\n        return 2",
        "new = Model()",
        "both = [old, new]",
    ], "[old.score(), new.score(), type(old) is type(new), both[0] is old, type(old).__name__]")


def test_a_notebook_holding_an_orm_session_checkpoints_in_seconds(make_kernel, tmp_path):
    """SQLAlchemy's mappers, tables and columns hold sets of one another. The digest orders a
    set by a digest of each element on its own, and walked the graph again for every path
    through those sets and again inside itself: the checkpoint never ended (a kernel busy past
    any timeout). Each element's key is now computed once. The session and the engine are
    re-made by their cells; the pool stamps connections with the clock, so what differs is
    named, never silently different."""
    pytest.importorskip("sqlalchemy")
    cells = [
        "from sqlalchemy import create_engine, Column, Integer, String, select\n"
        "from sqlalchemy.orm import declarative_base, Session",
        "Base = declarative_base()\nclass User(Base):\n    __tablename__ = 'users'\n"
        "    id = Column(Integer, primary_key=True)\n    name = Column(String)",
        "engine = create_engine('sqlite://')\nBase.metadata.create_all(engine)",
        "session = Session(engine)\nsession.add_all([User(name='ann'), User(name='bob')])\nsession.commit()",
        "users = session.scalars(select(User).order_by(User.id)).all()",
        "first = users[0]\nnames = [u.name for u in users]",
    ]
    kernels: list[Kernel] = []

    def timed() -> Kernel:
        k = make_kernel(env={**os.environ, "PYTHONHASHSEED": "0"})
        k.timeout = 60  # the checkpoint took forever: fail in a minute, not at the default
        kernels.append(k)
        return k

    started = time.monotonic()
    a, out = migrate_both(timed, tmp_path, cells)
    assert time.monotonic() - started < 60
    probe = "[names, first is users[0], first.name, [u.name for u in session.scalars(select(User)).all()]]"
    want = a.value(probe)
    for r in out.values():
        for name, v in r.restore["variables"].items():
            assert v.get("verified") or name in r.restore["lost"] or name in r.restore["mismatched"], (
                r.plan, name, v)
        assert r.kernel.value(probe) == want, r.plan
        assert r.restore["variables"]["names"]["verified"], r.plan


def test_chain_maps_bounded_deques_and_factories_keep_their_parts(make_kernel, tmp_path):
    """A ChainMap over two of the notebook's dicts (one changed after), a deque at its maxlen,
    a defaultdict whose factory is a partial of a notebook function, an OrderedDict after
    `move_to_end` and a Counter."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import collections, functools",
        "base = {'a': 1}; override = {'b': 2}",
        "cm = collections.ChainMap(override, base)",
        "base['c'] = 3",
        "dq = collections.deque(range(10), maxlen=4); dq.append(99)",
        "def mk(v):\n    return [v]",
        "dd = collections.defaultdict(functools.partial(mk, 0)); dd['x'].append(1)",
        "od = collections.OrderedDict(a=1, b=2, c=3); od.move_to_end('a')",
        "cnt = collections.Counter('mississippi'); top = cnt.most_common(2)",
    ], "[dict(cm), cm.maps[1] is base, cm.maps[0] is override, list(dq), dq.maxlen, dd['y'], dict(dd),"
       " list(od), top, cnt['s']]")


def test_half_consumed_iterators_a_counter_closure_and_a_filled_cache_go_on(make_kernel, tmp_path):
    """An iterator and a generator over the notebook's list, `pairwise` and `count` after a
    few `next`s, a closure's nonlocal counter and an lru_cache'd recursive function."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import itertools, functools",
        "data = list(range(20))",
        "it = iter(data); first = [next(it) for _ in range(3)]",
        "gen = (x * x for x in data); head = [next(gen), next(gen)]",
        "pairs = itertools.pairwise(data); next(pairs)",
        "counter = itertools.count(5, 2); next(counter)",
        "def make_counter():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return n\n    return inc",
        "inc = make_counter(); inc(); inc()",
        "@functools.lru_cache(maxsize=None)\ndef fib(k):\n    return k if k < 2 else fib(k - 1) + fib(k - 2)",
        "fib(30)",
    ], "[next(it), next(gen), next(pairs), next(counter), inc(), fib.cache_info().hits > 0, fib(31)]")


def test_buffers_at_a_position_and_generators_spawned_from_a_seed_sequence_go_on(make_kernel,
                                                                                  tmp_path):
    """StringIO/BytesIO read halfway, `random.Random`, a legacy RandomState and the children of
    a SeedSequence (which counts what it spawned) draw next what kernel A draws."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import io, random, numpy as np",
        "buf = io.StringIO('line1\\nline2\\nline3\\n'); buf.readline()",
        "bb = io.BytesIO(); bb.write(b'abcdef'); bb.seek(2)",
        "r = random.Random(42); r.random()",
        "rs = np.random.RandomState(3); rs.rand(2)",
        "ss = np.random.SeedSequence(123); kids = ss.spawn(2)",
        "gens = [np.random.default_rng(k) for k in kids]",
    ], "[buf.readline(), bb.read(2).decode(), r.random(), rs.rand(1).tolist(),"
       " [int(g.integers(0, 100)) for g in gens], ss.n_children_spawned]")


def test_categoricals_periods_intervals_groupbys_and_rolling_windows_come_back(make_kernel,
                                                                               tmp_path):
    """A frame with nullable ints, an ordered Categorical, Period and Interval columns; a
    groupby and a rolling window held in variables, a MultiIndex, a SparseArray and a
    tz-aware Timestamp moved across a DST change."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import pandas as pd, numpy as np",
        "df = pd.DataFrame({'g': list('aabbc'), 'v': [1, 2, 3, 4, 5],"
        " 'n': pd.array([1, None, 3, 4, None], dtype='Int64')})",
        "df['cat'] = pd.Categorical(df['g'], categories=list('cba'), ordered=True)",
        "per = pd.period_range('2024-01', periods=5, freq='M'); df['p'] = per",
        "iv = pd.interval_range(0, 5); df['iv'] = iv",
        "gb = df.groupby('g')",
        "roll = df['v'].rolling(2)",
        "mi = df.set_index(['g', 'v'])",
        "sp = pd.arrays.SparseArray([0, 0, 1, 0, 2])",
        "ts = pd.Timestamp('2024-03-10 01:30', tz='America/New_York') + pd.Timedelta(hours=1)",
    ], "[gb.sum(numeric_only=True)['v'].tolist(), roll.mean().fillna(-1).tolist(), str(df['cat'].max()),"
       " str(df['p'].iloc[2]), str(mi.index[3]), sp.density, str(ts), df['n'].isna().tolist()]")



def test_sympy_expressions_recomputed_after_a_loaded_import_verify(make_kernel, tmp_path):
    """Symbols with assumptions, a simplified expression, `solve`'s roots, a derivative and an
    integral, a symbolic Matrix and an inverse, and a `lambdify`d function. The optimal plan
    loads `from sympy import ...` (sympy is imported by the load, not by the cell) and re-runs
    the rest: every value said "value differs". Each symbol caches the facts deduced about it
    (`_assumptions`) in an order drawn from a generator sympy seeds and draws from at import,
    and sympy's expression cache decides which equal subterms are one object; neither is part
    of the value, and the digest now leaves both out."""
    pytest.importorskip("sympy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "from sympy import symbols, simplify, solve, Matrix, lambdify, sqrt, exp, integrate, diff",
        "x, y = symbols('x y', real=True)\nz = symbols('z', positive=True)",
        "expr = simplify(exp(x)*exp(y) + sqrt(z**2))",
        "sols = solve(x**2 + x - 1, x)",
        "d = diff(expr, x); I1 = integrate(x*exp(-x), x)",
        "M = Matrix(3, 3, lambda i, j: (i + 1) * x**j); Minv = (M + Matrix.eye(3)).inv()",
        "f = lambdify((x, y), expr.subs(z, 1), 'numpy')",
    ], "[str(expr), str(sols), str(d), str(I1), str(Minv[0, 0]), float(f(0.5, 0.25)), bool(x.is_real),"
       " bool(z.is_positive), expr.free_symbols == {x, y, z}, M.free_symbols == {x}, (Minv * (M + Matrix.eye(3))).applyfunc(simplify) == Matrix.eye(3)]")


def test_images_kept_across_cells_and_one_drawn_on_in_place_come_back(make_kernel, tmp_path):
    """PIL images held in variables: a gradient, its resized and converted copies, a list
    holding one of them twice, and an image a later cell drew on in place with `ImageDraw`."""
    pytest.importorskip("PIL")
    assert_same_everywhere(make_kernel, tmp_path, [
        "from PIL import Image, ImageDraw, ImageFilter",
        "img = Image.new('RGB', (32, 24), 'white')\nfor i in range(32):\n    img.putpixel((i, i % 24), (i * 8, 0, 255 - i * 8))",
        "small = img.resize((16, 12)); gray = img.convert('L'); blur = gray.filter(ImageFilter.BLUR)",
        "frames = [small, gray, small]",
        "canvas = Image.new('RGBA', (20, 20), (0, 0, 0, 0))\ndraw = ImageDraw.Draw(canvas)",
        "draw.rectangle([2, 2, 12, 12], fill=(255, 0, 0, 255)); draw.line([0, 19, 19, 0], fill=(0, 255, 0, 255))",
    ], "[list(img.getdata())[:40], list(blur.getdata())[:40], frames[0] is frames[2], frames[0] is small,"
       " canvas.getpixel((5, 5)), canvas.getpixel((10, 9)), canvas.size, gray.mode, draw.im is canvas.im]")


def test_a_figure_and_its_axes_drawn_on_in_later_cells_come_back(make_kernel, tmp_path):
    """`fig, ax = plt.subplots()`, lines and a title added by later cells, a second axes by
    `twinx`: the axes are the figure's, and what was drawn is there."""
    pytest.importorskip("matplotlib")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt",
        "fig, ax = plt.subplots(figsize=(4, 3))",
        "line, = ax.plot([0, 1, 2], [3, 1, 2], label='a')",
        "ax.set_title('t'); ax2 = ax.twinx(); ax2.plot([0, 2], [5, 6], color='r')",
        "ax.set_xlim(-1, 3); ax.legend()",
    ], "[ax.get_title(), list(ax.get_xlim()), len(ax.lines), ax.figure is fig, ax2.figure is fig,"
       " fig.axes[0] is ax, len(fig.axes), line in ax.lines, [int(v) for v in line.get_ydata()], ax2.lines[0].get_color()]")


def test_sorted_containers_keep_their_order_and_the_notebooks_objects(make_kernel, tmp_path):
    """A SortedList with a key, a SortedDict whose values are the notebook's lists (one of them
    also held by a name), and a SortedSet, changed after they were made."""
    pytest.importorskip("sortedcontainers")
    assert_same_everywhere(make_kernel, tmp_path, [
        "from sortedcontainers import SortedList, SortedDict, SortedSet",
        "sl = SortedList([5, 1, 4], key=lambda v: -v); sl.add(3)",
        "bucket = [1, 2]\nsd = SortedDict({'b': bucket, 'a': [0]}); sd['c'] = [9]",
        "bucket.append(3); ss = SortedSet('mississippi'); ss.discard('m')",
    ], "[list(sl), sl.bisect_key_left(-4), list(sd.items()), sd['b'] is bucket, list(ss), sd.peekitem(0),"
       " sl.key(2)]")


def test_aware_datetimes_in_zoneinfo_and_dateutil_zones_come_back(make_kernel, tmp_path):
    """Datetimes aware in a `zoneinfo` zone (across a DST change), in a dateutil zone and at a
    fixed offset; a sorted list of them and their differences."""
    pytest.importorskip("dateutil")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import datetime as dt\nfrom zoneinfo import ZoneInfo\nfrom dateutil import tz",
        "ny = ZoneInfo('America/New_York'); t1 = dt.datetime(2024, 3, 10, 1, 30, tzinfo=ny)",
        "t2 = (t1.astimezone(dt.timezone.utc) + dt.timedelta(hours=1)).astimezone(ny)",
        "paris = tz.gettz('Europe/Paris'); t3 = dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=paris)",
        "t4 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))",
        "stamps = sorted([t1, t2, t3, t4]); gap = t2 - t1",
    ], "[str(t1), str(t2), str(t3), str(t4), [str(s) for s in stamps], str(gap), t1.tzinfo is ny,"
       " t1.tzinfo is t2.tzinfo, t3.tzinfo is paris, t3.utcoffset().total_seconds(), ny.key]")


def test_decimals_computed_in_a_local_context_come_back(make_kernel, tmp_path):
    """Decimals computed under `localcontext` with a low precision and a rounding mode, a
    Context object kept in a variable, and the notebook's change to the global context."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import decimal\nfrom decimal import Decimal, localcontext",
        "with localcontext() as ctx:\n    ctx.prec = 5\n    ctx.rounding = decimal.ROUND_DOWN\n    third = Decimal(1) / Decimal(3)",
        "keep = decimal.Context(prec=7, rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.DivisionByZero])",
        "big = keep.divide(Decimal(2), Decimal(3)); money = Decimal('19.995').quantize(Decimal('0.01'))",
        "decimal.getcontext().prec = 12\nwide = Decimal(2).sqrt()",
    ], "[str(third), str(big), str(money), str(wide), keep.prec, str(keep.rounding), decimal.getcontext().prec,"
       " str(Decimal(1) / Decimal(7))]")


def test_weak_dictionaries_over_the_notebooks_objects_come_back(make_kernel, tmp_path):
    """A WeakKeyDictionary and a WeakValueDictionary over the notebook's objects, which are
    also held by names (so the entries are alive): the entries are those very objects."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import weakref",
        "class Node:\n    def __init__(self, n):\n        self.n = n",
        "nodes = [Node(i) for i in range(3)]",
        "meta = weakref.WeakKeyDictionary({nodes[0]: 'root', nodes[2]: 'leaf'})",
        "reg = weakref.WeakValueDictionary({'a': nodes[1], 'b': nodes[2]})",
        "nodes[1].n = 10",
    ], "[sorted(k.n for k in meta.keys()), meta[nodes[0]], reg['a'] is nodes[1], reg['a'].n, sorted(reg),"
       " len(meta), reg['b'] is nodes[2]]")


def test_masked_record_and_object_arrays_keep_the_notebooks_objects(make_kernel, tmp_path):
    """A masked array (and a view of it sharing its mask), a record array, and an object array
    holding the notebook's own objects: `arr[0] is obj` after the restore."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np",
        "m = np.ma.masked_array([1.0, 2.0, 3.0, 4.0], mask=[0, 1, 0, 0]); m[3] = np.ma.masked",
        "mv = m[1:]; mv[1] = 30.0",
        "rec = np.rec.fromarrays([np.arange(3), np.array([1.5, 2.5, 3.5])], names='i,x'); rec.x[0] = 9.0",
        "class Item:\n    def __init__(self, v):\n        self.v = v",
        "obj = Item(1); other = [1, 2]\narr = np.empty(3, dtype=object); arr[0] = obj; arr[1] = other; arr[2] = obj",
        "other.append(3)",
    ], "[m.filled(-1).tolist(), mv.filled(-1).tolist(), bool(np.shares_memory(m.data, mv.data)), rec.x.tolist(),"
       " rec.i.tolist(), arr[0] is obj, arr[2] is obj, arr[1] is other, arr[1], arr[0].v, m.mask.tolist()]")


def test_views_of_object_arrays_and_object_fields_stay_over_their_base(make_kernel, tmp_path):
    """`view = arr[::2]` is a window on `arr` (a store through it lands in `arr`): shipped, it
    came back a copy and verified (the digest walked it as a list of its items); it is now
    recomputed. A structured array with an object field was "changed outside recorded cells"
    at every checkpoint (its records were walked with the ids of temporary tuples), so with
    the replay plan it was lost."""
    assert_same_everywhere(make_kernel, tmp_path, [
        "import numpy as np",
        "class Item:\n    def __init__(self, v):\n        self.v = v",
        "a = Item(1); b = Item(2)",
        "arr = np.array([a, b, a, None], dtype=object); view = arr[::2]; view[1] = b",
        "st = np.zeros(2, dtype=[('o', object), ('x', float)]); st['o'][0] = a; st['x'][1] = 2.5",
        "grid = np.empty((2, 2), dtype=object); grid[0, 0] = [a]; grid[1, 1] = grid[0, 0]",
        "b.v = 20",
    ], "[arr[0] is a, arr[2] is b, view[0] is a, bool(np.shares_memory(arr, view)), view.base is arr,"
       " st['o'][0] is a, float(st['x'][1]), grid[1, 1] is grid[0, 0], grid[0, 0][0] is a, arr[1].v, arr[3] is None]")


def test_sympy_dummies_odes_polys_and_series_recomputed_verify(make_kernel, tmp_path):
    """A `Dummy` (numbered from a generator sympy seeds per process: no re-run draws the same
    number, so it and everything in its co-variable "differed"), an undefined Function and
    the ODE `dsolve` solved, a Poly, an ImmutableMatrix holding the Dummy, a series, and a
    list sharing one of its terms with a name."""
    pytest.importorskip("sympy")
    assert_same_everywhere(make_kernel, tmp_path, [
        "import sympy as sp",
        "t = sp.Symbol('t', positive=True); k = sp.Dummy('k'); f = sp.Function('f')",
        "ode = sp.Eq(f(t).diff(t), -2*f(t)); solo = sp.dsolve(ode)",
        "P = sp.Poly(t**3 - 2*t + 1, t); fac = sp.factor_list(P.as_expr())",
        "S = sp.ImmutableMatrix([[t, 1], [0, k]]); ser = sp.series(sp.exp(t), t, 0, 4)",
        "terms = [t, t + 1, (t + 1)**2]; shared = terms[1]",
    ], "[str(solo), str(fac), str(P), str(S.det()), str(ser), terms[1] is shared, S[1, 1] is k,"
       " S.det().has(k), k != sp.Dummy('k')]")
