"""Notebooks from domains the other adversarial files do not cover, migrated as a whole.

Graph analysis, simulation and parsing hold library objects that alias the notebook's other
variables (a graph's attribute dicts, a generator's bound draw method, a reader over a buffer,
a dispatcher filled across cells). Each plan must verify every variable, and the restored
kernel must answer the identity and position questions as the original did.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_verified, migrate_both

CELLS = [
    "import networkx as nx, numpy as np, csv, io, functools",
    "G = nx.Graph()\nG.add_edge('a', 'b', w=3)\nG.add_node('d', color='red')\n"
    "nattr = G.nodes['d']\neattr = G['a']['b']\nsub = G.subgraph(['a', 'b'])\nadj = G.adj",
    "nattr['size'] = 10\neattr['w'] = 7",
    "ss = np.random.SeedSequence(1234)\ngens = [np.random.default_rng(c) for c in ss.spawn(2)]\n"
    "g0 = gens[0]\ndraw = g0.standard_normal\nx = draw(3)",
    "src = io.StringIO('a,b\\n1,2\\n3,4\\n5,6\\n')\nrdr = csv.DictReader(src)\nrow1 = next(rdr)",
    "@functools.singledispatch\ndef describe(v):\n    return 'thing'",
    "@describe.register(int)\ndef _(v):\n    return 'int'",
]

PROBE = ("[G['a']['b'] is eattr, G.nodes['d'] is nattr, adj._atlas is G._adj, sub._graph is G, "
         "(G.add_edge('a', 'z'), sorted(sub.nodes))[1], nattr, g0 is gens[0], draw.__self__ is g0, "
         "float(draw()), ss.n_children_spawned, list(rdr), describe(3), describe('s')]")


def test_graph_simulation_and_parsing_objects_keep_their_aliases(make_kernel, tmp_path):
    """A graph's attribute dicts and views, spawned generators and a draw method bound to one,
    a half-read DictReader and a dispatcher registered across cells come back verified, still
    aliasing what they aliased (a view still sees the graph grow; the draw moves `g0`)."""
    a, restored = migrate_both(make_kernel, tmp_path, CELLS)
    want = a.value(PROBE)
    for r in restored.values():
        assert_verified(r)
        assert r.kernel.value(PROBE) == want, r.plan
