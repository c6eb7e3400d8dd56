"""Planner: ship-or-recompute decisions, forced decisions, constraints, and exactness vs brute force.

Pure data in, pure data out: no kernels needed. The property tests compare against an
independent brute force over every ship/recompute assignment.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_agent.planner import CellCost, CovarCost, Plan, PlanProblem, StoreSpeed, plan

MB = 1_000_000
# 1 MB/s both ways, no per-object overhead: shipping n MB costs n s to write + n s to read.
SLOW = StoreSpeed(write_Bps=MB, read_Bps=MB)


def cells(*specs: tuple[int, float] | tuple[int, float, str]) -> dict[int, CellCost]:
    """cells((0, 1.0), (1, 2.0, "writes file /tmp/x")): a third item makes the cell non-rerunnable."""
    out = {}
    for spec in specs:
        if len(spec) == 3:
            out[spec[0]] = CellCost(spec[0], spec[1], rerunnable=False, reason=spec[2])
        else:
            out[spec[0]] = CellCost(spec[0], spec[1])
    return out


def test_expensive_cell_small_result_is_shipped_and_cheap_cell_large_array_is_recomputed():
    problem = PlanProblem(
        cells=cells((0, 100.0), (1, 0.5)),
        covars=[
            CovarCost("model", ["model"], nbytes=1_000, requires=[0]),  # 100 s to retrain, 1 KB
            CovarCost("arr", ["arr"], nbytes=500 * MB, requires=[1]),  # 0.5 s to rebuild, 500 MB
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.ship == ["model"]
    assert p.recompute == ["arr"]
    assert p.rerun == [1]
    assert p.lost == {}
    assert p.solver == "mincut" and p.optimal
    assert p.est_checkpoint_s == pytest.approx(0.001)
    assert p.est_restore_s == pytest.approx(0.001 + 0.5)
    assert p.est_total_s == pytest.approx(p.est_checkpoint_s + p.est_restore_s)


def test_shared_required_cell_is_paid_once():
    # Each covar alone: recompute 3 s (shared load) + 0.1 s > ship 2 s (1 MB each way).
    # Together: 3 + 0.1 + 0.1 = 3.2 s < ship both 4 s. Only a model that pays the shared cell once
    # recomputes both.
    problem = PlanProblem(
        cells=cells((0, 3.0), (1, 0.1), (2, 0.1)),
        covars=[
            CovarCost("a", ["a"], nbytes=MB, requires=[0, 1]),
            CovarCost("b", ["b"], nbytes=MB, requires=[0, 2]),
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.recompute == ["a", "b"] and p.ship == []
    assert p.rerun == [0, 1, 2]
    assert p.est_restore_s == pytest.approx(3.2)
    assert p.est_checkpoint_s == 0


def test_unserializable_covar_is_recomputed_even_when_shipping_would_be_cheaper():
    problem = PlanProblem(
        cells=cells((0, 50.0)),
        covars=[
            CovarCost(
                "g",
                ["gen"],
                nbytes=0,
                serializable=False,
                error="TypeError: cannot pickle 'generator' object",
                requires=[0],
            )
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.recompute == ["g"] and p.ship == [] and p.rerun == [0]
    assert p.solver == "trivial" and p.optimal


def test_cells_rerun_for_a_forced_recompute_are_free_for_other_covars():
    # The generator forces cell 0 (100 s) to re-run anyway, so the big array it also produced is
    # recomputed at no extra cost instead of being shipped (200 s).
    problem = PlanProblem(
        cells=cells((0, 100.0), (1, 0.0)),
        covars=[
            CovarCost("g", ["gen"], 0, serializable=False, error="TypeError", requires=[0]),
            CovarCost("arr", ["arr"], nbytes=100 * MB, requires=[0, 1]),
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.recompute == ["g", "arr"] and p.ship == [] and p.rerun == [0, 1]
    assert p.est_total_s == pytest.approx(100.0)


def test_covar_with_non_rerunnable_cell_is_shipped_even_when_recompute_would_be_cheaper():
    problem = PlanProblem(
        cells=cells((0, 0.01, "writes file /tmp/out.csv")),
        covars=[CovarCost("df", ["df"], nbytes=100 * MB, requires=[0])],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.ship == ["df"] and p.recompute == [] and p.rerun == []
    assert p.est_checkpoint_s == pytest.approx(100.0)


def test_covar_without_producing_cell_is_shipped():
    # Empty requires does not mean "free to recompute": nothing would re-create it.
    problem = PlanProblem(
        cells=cells((0, 1.0)),
        covars=[CovarCost("x", ["x"], nbytes=10 * MB, requires=[])],
        speed=SLOW,
    )
    assert plan(problem).ship == ["x"]


def test_unserializable_and_not_rerunnable_is_lost_with_precise_reason():
    problem = PlanProblem(
        cells=cells((0, 1.0), (3, 2.0, "writes file /tmp/out.csv")),
        covars=[
            CovarCost(
                "7",
                ["x", "y"],
                nbytes=0,
                serializable=False,
                error="TypeError: cannot pickle 'generator' object",
                requires=[0, 3],
            ),
            CovarCost("ok", ["z"], nbytes=10, requires=[0]),
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.lost == {
        "7": "x, y: cannot be serialized (TypeError: cannot pickle 'generator' object) and "
        "cell 3 cannot be re-run (writes file /tmp/out.csv)"
    }
    # Lost co-variables are out of the problem: cell 0 is not re-run on their behalf.
    assert "7" not in p.ship + p.recompute
    assert p.ship == ["ok"] and p.rerun == []


def test_lost_reason_names_every_blocking_cell_and_unknown_cells():
    problem = PlanProblem(
        cells=cells((1, 1.0, "opens a socket"), (2, 1.0), (4, 1.0, "failed")),
        covars=[
            CovarCost("k", ["conn"], 0, serializable=False, error=None, requires=[1, 2, 4, 9]),
            CovarCost("n", ["orphan"], 0, serializable=False, error="E", requires=[]),
        ],
        speed=SLOW,
    )
    p = plan(problem)
    assert p.lost["k"] == (
        "conn: cannot be serialized and cells 1 (opens a socket), 4 (failed) and "
        "9 (not in the recorded history) cannot be re-run"
    )
    assert p.lost["n"] == "orphan: cannot be serialized (E) and no recorded cell re-creates it"
    assert p.solver == "trivial"


def test_deadline_forces_a_different_plan_than_mincut_and_respects_the_bound():
    # Unconstrained optimum ships both (2 s + 2 s write+read each vs 10 s recompute each).
    # With a 1.5 s checkpoint deadline only one 1 MB write fits: the other must be recomputed.
    problem = PlanProblem(
        cells=cells((0, 10.0), (1, 12.0)),
        covars=[
            CovarCost("a", ["a"], nbytes=MB, requires=[0]),
            CovarCost("b", ["b"], nbytes=MB, requires=[1]),
        ],
        speed=SLOW,
    )
    free = plan(problem)
    assert free.ship == ["a", "b"]
    problem.deadline_s = 1.5
    p = plan(problem)
    assert p.solver == "cpsat" and p.optimal
    assert p.ship == ["b"] and p.recompute == ["a"]  # recompute the cheaper cell
    assert p.est_checkpoint_s <= 1.5
    assert p.lost == {}


def test_deadline_that_mincut_already_meets_keeps_mincut():
    problem = PlanProblem(
        cells=cells((0, 10.0)),
        covars=[CovarCost("a", ["a"], nbytes=MB, requires=[0])],
        speed=SLOW,
        deadline_s=5.0,
    )
    p = plan(problem)
    assert p.solver == "mincut" and p.optimal and p.ship == ["a"]


def test_memory_cap_respected():
    # Recomputing "a" is cheaper but needs 800 MB of scratch memory; the cap allows only 100 MB
    # beyond the restored state, so "a" is shipped and "b" (small scratch) is recomputed.
    problem = PlanProblem(
        cells=cells((0, 1.0), (1, 1.0)),
        covars=[
            CovarCost("a", ["a"], nbytes=10 * MB, requires=[0], transient_nbytes=800 * MB),
            CovarCost("b", ["b"], nbytes=10 * MB, requires=[1], transient_nbytes=50 * MB),
        ],
        speed=SLOW,
        memory_cap_bytes=120 * MB,
    )
    p = plan(problem)
    assert p.solver == "cpsat" and p.optimal
    assert p.ship == ["a"] and p.recompute == ["b"]
    memory = 10 * MB + 10 * MB + 50 * MB
    assert memory <= problem.memory_cap_bytes


def test_unmeetable_memory_cap_gives_least_memory_plan_and_a_note():
    problem = PlanProblem(
        cells=cells((0, 1.0)),
        covars=[
            CovarCost("a", ["a"], nbytes=10 * MB, requires=[0], transient_nbytes=800 * MB),
            CovarCost("u", ["u"], 5 * MB, serializable=False, requires=[0], transient_nbytes=0),
        ],
        speed=SLOW,
        memory_cap_bytes=1 * MB,
    )
    p = plan(problem)
    assert p.ship == ["a"] and p.recompute == ["u"]
    assert any("memory cap" in n and "cannot be met" in n for n in p.notes)


def test_infeasible_deadline_gives_best_effort_with_lost_and_notes():
    # Three must-ship co-variables (their cells wrote files), 1 s each to write, 2.5 s deadline:
    # two fit, the one with the fewest names is lost with a "deadline" reason. The optional one
    # is recomputed. Never an exception.
    problem = PlanProblem(
        cells=cells((0, 1.0, "writes file /tmp/a"), (1, 0.5)),
        covars=[
            CovarCost("a", ["a1", "a2"], nbytes=MB, requires=[0]),
            CovarCost("b", ["b"], nbytes=MB, requires=[0]),
            CovarCost("c", ["c1", "c2", "c3"], nbytes=MB, requires=[0]),
            CovarCost("d", ["d"], nbytes=MB, requires=[1]),
        ],
        speed=SLOW,
        deadline_s=2.5,
    )
    p = plan(problem)
    assert sorted(p.ship) == ["a", "c"]
    assert p.recompute == ["d"] and p.rerun == [1]
    assert list(p.lost) == ["b"]
    assert p.lost["b"].startswith("b: deadline")
    assert "cell 0 cannot be re-run (writes file /tmp/a)" in p.lost["b"]
    assert p.est_checkpoint_s <= 2.5
    assert p.notes and "deadline" in p.notes[0] and "b" in p.notes[0]


def test_zero_deadline_loses_every_must_ship_and_recomputes_the_rest():
    problem = PlanProblem(
        cells=cells((0, 1.0, "failed"), (1, 0.5)),
        covars=[
            CovarCost("a", ["a"], nbytes=10, requires=[0]),
            CovarCost("d", ["d"], nbytes=10, requires=[1]),
        ],
        speed=SLOW,
        deadline_s=0.0,
    )
    p = plan(problem)
    assert p.ship == [] and p.recompute == ["d"] and list(p.lost) == ["a"]
    assert p.est_checkpoint_s == 0


def many_covars_problem(n: int = 120) -> PlanProblem:
    """Shared cells and a binding deadline: a problem CP-SAT needs a moment for."""
    cs = {i: CellCost(i, 8.0 + (i * 7919 % 13)) for i in range(n)}
    covars = [
        CovarCost(
            f"v{k}",
            [f"v{k}"],
            nbytes=(1 + k * 104729 % 17) * MB // 4,
            requires=sorted({k % n, (k * 31) % n, (k * 17 + 3) % n}),
        )
        for k in range(2 * n)
    ]
    problem = PlanProblem(cs, covars, SLOW)
    problem.deadline_s = round(plan(problem).est_checkpoint_s / 3, 3)  # binding
    return problem


def test_time_limit_bounds_planning_and_still_respects_the_deadline():
    problem = many_covars_problem()
    p = plan(problem, time_limit_s=0.1)
    assert p.solver == "cpsat"
    assert p.est_checkpoint_s <= problem.deadline_s
    assert sorted(p.ship + p.recompute) == sorted(c.key for c in problem.covars)
    if not p.optimal:  # stopped at the limit with a plan, or (on a loaded machine) without one
        assert any("time limit" in n or "no solution within" in n for n in p.notes), p.notes


def test_solver_without_solution_falls_back_to_recomputing_and_says_so(monkeypatch):
    import kernel_agent.planner as planner

    monkeypatch.setattr(planner, "_cpsat", lambda *a, **k: planner._SatResult("unknown", set()))
    problem = many_covars_problem(20)
    p = plan(problem)
    assert p.ship == [] and len(p.recompute) == 40 and p.solver == "cpsat"
    assert not p.optimal
    assert any("fell back" in n for n in p.notes)


def test_restore_objective_ignores_write_side():
    # Writes are very slow, reads fast: the restore-centric plan ships, the migration plan does not.
    problem = PlanProblem(
        cells=cells((0, 5.0)),
        covars=[CovarCost("a", ["a"], nbytes=100 * MB, requires=[0])],
        speed=StoreSpeed(write_Bps=1 * MB, read_Bps=1_000 * MB),
    )
    assert plan(problem).recompute == ["a"]
    problem.objective = "restore"
    p = plan(problem)
    assert p.ship == ["a"]
    assert p.est_restore_s == pytest.approx(0.1)


def test_empty_problem_is_trivial():
    p = plan(PlanProblem(cells={}, covars=[], speed=SLOW, deadline_s=1.0, memory_cap_bytes=0))
    assert (p.ship, p.recompute, p.rerun, p.lost) == ([], [], [], {})
    assert p.solver == "trivial" and p.est_total_s == 0


def test_malformed_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match="duplicate co-variable key 'a'"):
        plan(PlanProblem({}, [CovarCost("a", ["a"], 1), CovarCost("a", ["b"], 1)], SLOW))
    with pytest.raises(ValueError, match="objective"):
        plan(PlanProblem({}, [], SLOW, objective="fastest"))
    with pytest.raises(ValueError, match="runtime_s"):
        plan(PlanProblem({0: CellCost(0, float("nan"))}, [], SLOW))


def test_problem_and_plan_round_trip_through_json():
    problem = PlanProblem(
        cells=cells((0, 1.5), (3, 2.0, "writes file /tmp/x")),
        covars=[
            CovarCost("1", ["a", "b"], 10, requires=[0], transient_nbytes=5),
            CovarCost("2", ["g"], 0, serializable=False, error="TypeError: nope", requires=[3]),
        ],
        speed=StoreSpeed(1e8, 2e8, 0.01),
        deadline_s=30.0,
        memory_cap_bytes=10**9,
        objective="restore",
    )
    again = PlanProblem.from_dict(json.loads(json.dumps(problem.to_dict())))
    assert again == problem
    p = plan(problem)
    assert Plan.from_dict(json.loads(json.dumps(p.to_dict()))) == p


# ---------------------------------------------------------------------------------------------
# Property tests: exactness against brute force
# ---------------------------------------------------------------------------------------------

SPEEDS = [
    StoreSpeed(write_Bps=1e6, read_Bps=1e6),
    StoreSpeed(write_Bps=1e6, read_Bps=4e6, per_object_s=0.001),
    StoreSpeed(write_Bps=5e5, read_Bps=2e6, per_object_s=0.01),
]


@st.composite
def problems(draw, objective=None) -> PlanProblem:
    """Small random problems on a millisecond grid (exactly representable by the solvers)."""
    n_cells = draw(st.integers(1, 8))
    cs = {}
    for i in range(n_cells):
        rerunnable = draw(st.booleans()) or draw(st.booleans()) or draw(st.booleans())
        cs[i] = CellCost(
            i,
            draw(st.integers(0, 5000)) / 1000,
            rerunnable=rerunnable,
            reason=None if rerunnable else "writes file",
        )
    n_cov = draw(st.integers(0, 8))
    covars = []
    for k in range(n_cov):
        serializable = draw(st.booleans()) or draw(st.booleans()) or draw(st.booleans())
        covars.append(
            CovarCost(
                key=f"v{k}",
                names=[f"n{k}_{j}" for j in range(draw(st.integers(1, 3)))],
                nbytes=draw(st.integers(0, 4000)) * 1000,
                serializable=serializable,
                error=None if serializable else "TypeError",
                requires=draw(st.lists(st.integers(0, n_cells - 1), max_size=4, unique=True)),
                transient_nbytes=draw(st.integers(0, 50)) * 1000,
            )
        )
    return PlanProblem(
        cells=cs,
        covars=covars,
        speed=draw(st.sampled_from(SPEEDS)),
        objective=objective or draw(st.sampled_from(["migration", "restore"])),
    )


def options(problem: PlanProblem, c: CovarCost) -> list[str]:
    """Independent statement of the forced decisions."""
    can_ship = c.serializable
    can_rec = bool(c.requires) and all(
        i in problem.cells and problem.cells[i].rerunnable for i in c.requires
    )
    return [o for o, ok in (("ship", can_ship), ("rec", can_rec)) if ok]


def evaluate(problem: PlanProblem, assignment: dict[str, str]) -> tuple[float, float, float, int]:
    """(objective, checkpoint time, restore time, memory) of a complete assignment."""
    sp = problem.speed
    by_key = {c.key: c for c in problem.covars}
    shipped = [by_key[k] for k, o in assignment.items() if o == "ship"]
    recomputed = [by_key[k] for k, o in assignment.items() if o == "rec"]
    rerun = set().union(*[set(c.requires) for c in recomputed]) if recomputed else set()
    write = sum(c.nbytes / sp.write_Bps + sp.per_object_s for c in shipped)
    read = sum(c.nbytes / sp.read_Bps for c in shipped)
    run = sum(problem.cells[i].runtime_s for i in rerun)
    restore = read + run
    objective = restore if problem.objective == "restore" else write + restore
    memory = sum(c.nbytes for c in shipped) + sum(c.nbytes + c.transient_nbytes for c in recomputed)
    return objective, write, restore, memory


def assignments(problem: PlanProblem):
    """Every complete assignment of the non-lost co-variables."""
    keys, opts = [], []
    for c in problem.covars:
        o = options(problem, c)
        if o:
            keys.append(c.key)
            opts.append(o)
    for combo in itertools.product(*opts):
        yield dict(zip(keys, combo, strict=True))


def plan_assignment(p: Plan) -> dict[str, str]:
    return {**{k: "ship" for k in p.ship}, **{k: "rec" for k in p.recompute}}


def check_well_formed(problem: PlanProblem, p: Plan) -> None:
    keys = [c.key for c in problem.covars]
    assert sorted(p.ship + p.recompute + list(p.lost)) == sorted(keys)
    by_key = {c.key: c for c in problem.covars}
    assert p.rerun == sorted({i for k in p.recompute for i in by_key[k].requires})
    for k in p.ship:
        assert "ship" in options(problem, by_key[k])
    for k in p.recompute:
        assert "rec" in options(problem, by_key[k])
    assert all(problem.cells[i].rerunnable for i in p.rerun)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_mincut_cost_equals_brute_force_optimum(problem):
    p = plan(problem)
    check_well_formed(problem, p)
    lost = {c.key for c in problem.covars if not options(problem, c)}
    assert set(p.lost) == lost
    best = min(evaluate(problem, a)[0] for a in assignments(problem))
    assert p.solver in ("mincut", "trivial") and p.optimal
    assert evaluate(problem, plan_assignment(p))[0] == pytest.approx(best, abs=1e-6)


@st.composite
def constrained_problems(draw) -> PlanProblem:
    """Random deadline (never below the forced ships) and/or memory cap (possibly unmeetable)."""
    problem = draw(problems())
    sp = problem.speed
    forced = [c for c in problem.covars if options(problem, c) == ["ship"]]
    optional = [c for c in problem.covars if options(problem, c) == ["ship", "rec"]]
    forced_w = sum(c.nbytes / sp.write_Bps + sp.per_object_s for c in forced)
    optional_w = sum(c.nbytes / sp.write_Bps + sp.per_object_s for c in optional)
    kind = draw(st.sampled_from(["deadline", "memory", "both"]))
    if kind in ("deadline", "both"):
        problem.deadline_s = round(forced_w + draw(st.floats(0, 1)) * optional_w, 3)
    if kind in ("memory", "both"):
        restored = [c for c in problem.covars if options(problem, c)]
        base = sum(c.nbytes for c in restored)
        extra = sum(c.transient_nbytes for c in restored)
        problem.memory_cap_bytes = max(0, base + draw(st.integers(-10_000, extra + 1000)))
    return problem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(constrained_problems())
def test_constrained_plan_cost_equals_brute_force_and_meets_constraints(problem):
    p = plan(problem)
    check_well_formed(problem, p)
    assert not any("deadline" in r for r in p.lost.values())  # the deadline is always feasible
    assert p.optimal
    mine = evaluate(problem, plan_assignment(p))
    cands = [(a, evaluate(problem, a)) for a in assignments(problem)]
    if problem.deadline_s is not None:
        cands = [(a, e) for a, e in cands if e[1] <= problem.deadline_s + 1e-9]
        assert mine[1] <= problem.deadline_s + 1e-9
        assert p.est_checkpoint_s <= problem.deadline_s + 1e-9
    cap = problem.memory_cap_bytes
    if cap is not None and any(e[3] <= cap for _, e in cands):
        cands = [(a, e) for a, e in cands if e[3] <= cap]
        assert mine[3] <= cap
    elif cap is not None:
        # Unmeetable cap: the least memory any deadline-feasible plan needs, then the fastest.
        least = min(e[3] for _, e in cands)
        cands = [(a, e) for a, e in cands if e[3] == least]
        assert mine[3] == least
        assert any("memory cap" in n for n in p.notes)
    best = min(e[0] for _, e in cands)
    assert mine[0] == pytest.approx(best, abs=1e-6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.floats(0, 1))
def test_infeasible_deadline_keeps_the_most_variable_names_within_the_bound(problem, frac):
    sp = problem.speed
    forced = [c for c in problem.covars if options(problem, c) == ["ship"]]
    forced_w = sum(c.nbytes / sp.write_Bps + sp.per_object_s for c in forced)
    problem.deadline_s = round(frac * forced_w, 3)
    p = plan(problem)
    check_well_formed(problem, p)
    assert p.est_checkpoint_s <= problem.deadline_s + 1e-9
    # Best effort maximizes the names kept among the must-ship co-variables (brute force).
    most = 0
    for r in range(len(forced) + 1):
        for subset in itertools.combinations(forced, r):
            w = sum(c.nbytes / sp.write_Bps + sp.per_object_s for c in subset)
            if w <= problem.deadline_s + 1e-9:
                most = max(most, sum(len(c.names) for c in subset))
    kept = sum(len(c.names) for c in forced if c.key in p.ship)
    assert kept == most
    dropped = [c for c in forced if c.key not in p.ship]
    assert all(p.lost[c.key].startswith(f"{', '.join(c.names)}: deadline") for c in dropped)
    if dropped:
        assert p.notes
