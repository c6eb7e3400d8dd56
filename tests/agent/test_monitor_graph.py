"""The history graph as plain data: round trip, schema version, req(), and a long notebook."""

from __future__ import annotations

import json
import time

import pytest

from kernel_agent.graph import SCHEMA_VERSION, CellExecution, GraphSchemaError, HistoryGraph


def _partition(*groups):
    """covariable_of for a fixed partition."""
    index = {n: frozenset(g) for g in groups for n in g}
    return lambda n: index.get(n, frozenset((n,)))


def _cell(code, reads=(), writes=(), mutated=(), deletes=()):
    return CellExecution(index=-1, code=code, reads=sorted(reads), writes=sorted(writes),
                         mutated=sorted(mutated), deletes=sorted(deletes))


def _build() -> HistoryGraph:
    """x = load(); y = f(x); x = x + 1; z = y * 2  (cells 0..3)."""
    g = HistoryGraph()
    g.record(_cell("x = load()", writes={"x"}), _partition(), {"x"})
    g.record(_cell("y = f(x)", reads={"x"}, writes={"y"}), _partition(), {"x", "y"})
    g.record(_cell("x = x + 1", reads={"x"}, writes={"x"}), _partition(), {"x", "y"})
    g.record(_cell("z = y * 2", reads={"y"}, writes={"z"}), _partition(), {"x", "y", "z"})
    return g


def test_to_dict_from_dict_round_trip_is_lossless_and_json_safe():
    g = _build()
    g.rng_states["k"] = {"random": {"version": 3, "words": "AAAA", "gauss": None}}
    g.cells[1].effects = ["writes file /tmp/x"]
    g.cells[2].failed, g.cells[2].error = True, "ValueError: no"
    d = json.loads(json.dumps(g.to_dict()))
    back = HistoryGraph.from_dict(d)
    assert back == g
    assert back.to_dict() == g.to_dict()


def test_from_dict_rejects_an_unknown_schema_version():
    d = _build().to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(GraphSchemaError, match="schema_version 2 is not supported"):
        HistoryGraph.from_dict(d)


def test_from_dict_rejects_a_missing_schema_version():
    d = _build().to_dict()
    del d["schema_version"]
    with pytest.raises(GraphSchemaError):
        HistoryGraph.from_dict(d)


def test_requirements_of_an_active_snapshot_whose_inputs_are_active():
    g = _build()
    assert g.requirements(g.active["z"]) == {3}  # y is active: available at restore


def test_requirements_recurse_through_overwritten_inputs():
    g = _build()
    # y was computed from the first x, which cell 2 overwrote: recomputing y needs cell 0 too
    assert g.requirements(g.active["y"]) == {0, 1}
    # the new x reads the old x
    assert g.requirements(g.active["x"]) == {0, 2}


def test_active_snapshots_and_snapshot_lookup():
    g = _build()
    ids = [s.id for s in g.active_snapshots()]
    assert ids == sorted(set(g.active.values()))
    assert g.snapshot(g.active["z"]).names == ["z"]
    with pytest.raises(KeyError):
        g.snapshot(999)


def test_split_without_write_inherits_producers():
    g = HistoryGraph()
    g.record(_cell("a = []; b = a", writes={"a", "b"}), _partition({"a", "b"}), {"a", "b"})
    g.record(_cell("b = 1", writes={"b"}), _partition(), {"a", "b"})
    a = g.snapshot(g.active["a"])
    assert a.names == ["a"] and a.producers == [0]
    assert g.snapshot(g.active["b"]).producers == [1]
    assert a.id in g.cells[1].output_snapshots


def test_deleted_names_get_a_deleted_snapshot_and_leave_active():
    g = _build()
    g.record(_cell("del z", deletes={"z"}), _partition(), {"x", "y"})
    assert "z" not in g.active
    snap = g.snapshots[g.cells[-1].output_snapshots[0]]
    assert snap.deleted and snap.names == ["z"] and snap.producers == [4]


def test_mutation_reads_the_previous_snapshot():
    g = HistoryGraph()
    g.record(_cell("l = []", writes={"l"}), _partition(), {"l"})
    old = g.active["l"]
    g.record(_cell("l.append(1)", reads={"l"}, mutated={"l"}), _partition(), {"l"})
    assert g.cells[1].input_snapshots == [old]
    assert g.requirements(g.active["l"]) == {0, 1}


def test_two_thousand_cells_stay_small_and_fast():
    g = HistoryGraph()
    live: set[str] = set()
    t0 = time.perf_counter()
    for i in range(2000):
        name = f"v{i % 300}"
        live.add(name)
        reads = {f"v{(i - 1) % 300}"} & live
        g.record(_cell(f"{name} = f(v{(i - 1) % 300}, {i})  # a typical short cell", reads=reads,
                       writes={name}), _partition(), live)
    blob = json.dumps(g.to_dict())
    elapsed = time.perf_counter() - t0
    assert len(blob) < 4_000_000
    assert elapsed < 5
    t0 = time.perf_counter()
    for sid in set(g.active.values()):
        g.requirements(sid)
    assert time.perf_counter() - t0 < 5


def test_five_hundred_cell_notebook_is_fully_recorded(agent):
    agent.ok("import numpy as np\nbig_arr = np.zeros(100_000)\nacc = []")
    n0 = len(agent.history()["cells"])
    cells = []
    for i in range(500):
        kind = i % 5
        if kind == 0:
            cells.append(f"v{i} = {i} * 2")
        elif kind == 1:
            cells.append(f"acc.append(v{i - 1})")
        elif kind == 2:
            cells.append(f"big_arr[{i}] = v{i - 2} + 1")
        elif kind == 3:
            cells.append(f"def fn{i}(x):\n    return x + v{i - 3}\nr{i} = fn{i}(1)")
        else:
            cells.append(f"del v{i - 4}")
    for code in cells:
        agent.ok(code)
    h = agent.history()
    recs = h["cells"][n0:]
    assert [r["code"] for r in recs] == cells
    assert [r["index"] for r in recs] == list(range(n0, n0 + 500))
    assert all(not r["failed"] and r["effects"] == [] for r in recs)
    # every kind was understood
    assert recs[1]["mutated"] == ["acc"] and recs[1]["reads"] == ["acc", "v0"]
    assert recs[2]["mutated"] == ["big_arr"]
    assert recs[3]["reads"] == ["v0"] and set(recs[3]["writes"]) == {"fn3", "r3"}
    assert recs[4]["deletes"] == ["v0"]
    # graph sanity: ids are positions, producers are real cells, active names are live
    for i, s in enumerate(h["snapshots"]):
        assert s["id"] == i and all(0 <= p < len(h["cells"]) for p in s["producers"])
    live = set(agent.value("__import__('kernel_agent.extension').extension.get_monitor().user_names()"))
    assert set(h["active"]) <= live
    assert all(f"v{i}" not in h["active"] for i in range(0, 500, 5))
    assert len(json.dumps(h)) < 4_000_000
