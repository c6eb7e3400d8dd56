"""Random generator state: captured before cells that draw, so a re-run draws the same numbers."""

from __future__ import annotations

import json
import random

import numpy as np

from kernel_agent import rng

APPLY = "__import__('kernel_agent.rng').rng.apply"


def test_capture_is_json_safe_and_apply_restores_both_generators():
    random.seed(1)
    np.random.seed(2)
    state = json.loads(json.dumps(rng.capture()))
    a, b = random.random(), np.random.rand(3).tolist()
    random.seed(99)
    np.random.seed(99)
    rng.apply(state)
    assert (random.random(), np.random.rand(3).tolist()) == (a, b)


def test_apply_restores_the_gaussian_cache():
    np.random.seed(3)
    np.random.standard_normal()  # leaves the second gaussian cached
    state = rng.capture()
    expected = np.random.standard_normal()
    np.random.seed(0)
    rng.apply(state)
    assert np.random.standard_normal() == expected


def test_state_key_is_a_content_hash():
    random.seed(5)
    s1 = rng.capture()
    random.seed(5)
    assert rng.state_key(rng.capture()) == rng.state_key(s1)
    random.random()
    assert rng.state_key(rng.capture()) != rng.state_key(s1)


def test_cell_drawing_random_numbers_records_the_state_before_it(agent):
    rec = agent.cell("import random\nrn_a = random.random()")
    h = agent.history()
    assert rec["rng_state"] in h["rng_states"]
    state = json.dumps(h["rng_states"][rec["rng_state"]])
    agent.ok(f"{APPLY}(__import__('json').loads({state!r}))\nrn_again = random.random()")
    assert agent.value("rn_again == rn_a") is True


def test_cell_drawing_from_numpy_replays_identically(agent):
    agent.ok("import numpy as np")
    rec = agent.cell("rn_np = np.random.rand(5).tolist()")
    state = json.dumps(agent.history()["rng_states"][rec["rng_state"]])
    agent.ok(f"{APPLY}(__import__('json').loads({state!r}))\nrn_np2 = np.random.rand(5).tolist()")
    assert agent.value("rn_np2 == rn_np") is True


def test_cell_not_drawing_records_no_state(agent):
    assert agent.cell("rn_none = 1 + 1")["rng_state"] is None


def test_identical_states_are_stored_once(agent):
    agent.ok("import random")
    before = len(agent.history()["rng_states"])
    agent.ok("random.seed(7)")
    r1 = agent.cell("rn_s1 = random.random()")
    agent.ok("random.seed(7)")
    r2 = agent.cell("rn_s2 = random.random()")
    assert r1["rng_state"] == r2["rng_state"]
    # the two seeding cells and one shared entry for the two draws
    assert len(agent.history()["rng_states"]) - before <= 3


def test_fingerprint_changes_with_every_kind_of_draw():
    if rng.fingerprint() is None:
        return  # not CPython: the monitor always compares full states
    draws = [lambda: random.random(), lambda: np.random.rand(),
             lambda: random.seed(3), lambda: random.gauss(0, 1), lambda: random.gauss(0, 1),
             lambda: np.random.seed(4), lambda: np.random.standard_normal(),
             lambda: np.random.standard_normal()]  # the last one only consumes the cached gaussian
    seen = {rng.fingerprint()}
    for draw in draws:
        draw()
        fp = rng.fingerprint()
        assert fp not in seen, draw
        seen.add(fp)
    assert rng.fingerprint() == rng.fingerprint()


def test_a_cell_consuming_only_a_cached_gaussian_is_recorded(agent):
    agent.ok("import numpy as np")
    agent.cell("np.random.seed(11); rg_g1 = float(np.random.standard_normal())")
    rec = agent.cell("rg_g2 = float(np.random.standard_normal())")
    assert rec["rng_state"] is not None
    state = json.dumps(agent.history()["rng_states"][rec["rng_state"]])
    agent.ok(f"{APPLY}(__import__('json').loads({state!r}))\nrg_g3 = float(np.random.standard_normal())")
    assert agent.value("rg_g3 == rg_g2") is True
    rec = agent.cell("rg_none = 1 + 1")
    assert rec["rng_state"] is None


def test_a_constant_cell_ending_an_object_whose_finalizer_draws_records_the_state(agent):
    """A cell of `name = constant` lines calls nothing, so the monitor does not read the
    generators around it; but rebinding a name ends its old value, and a `__del__` of the
    notebook's that draws then is that cell's draw: its state before must be recorded."""
    agent.ok("import random\nclass DrawOnDel:\n    def __del__(self):\n        random.random()")
    agent.ok("fin_draw = DrawOnDel()")
    rec = agent.cell("fin_draw = 1")
    assert rec["rng_state"] is not None, rec


def test_a_draw_after_constant_cells_replays_from_the_state_recorded_for_it(agent):
    """Constant cells between two drawing cells leave the generators alone and are not read
    for them: the second draw still starts from the state the first one left, recorded."""
    agent.ok("import random")
    agent.cell("rn_k1 = random.random()")
    assert agent.cell("rn_k2 = 5\nrn_k3 = [1, 'x']")["rng_state"] is None
    rec = agent.cell("rn_k4 = random.random()")
    state = json.dumps(agent.history()["rng_states"][rec["rng_state"]])
    agent.ok(f"{APPLY}(__import__('json').loads({state!r}))\nrn_k5 = random.random()")
    assert agent.value("rn_k5 == rn_k4") is True
