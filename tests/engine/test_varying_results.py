"""Cells whose library calls read the clock (scikit-learn's model selection times every fit) make
other values when re-run: what they made is shipped when it can be, and only re-run when it must
be, and then a difference is explained, never silent."""

from __future__ import annotations

from tests.engine.adversarial import migrate_both

CELLS = [
    "from sklearn.datasets import make_classification\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.model_selection import GridSearchCV, cross_validate",
    "X, y = make_classification(n_samples=120, random_state=0)",
    "gs = GridSearchCV(LogisticRegression(max_iter=200), {'C': [0.1, 1.0]}, cv=3).fit(X, y)",
    "cvr = cross_validate(LogisticRegression(max_iter=200), X, y, cv=3)",
    "best = gs.best_params_['C']",
    "import time\nfrom time import perf_counter\npc = perf_counter",
]
PROBE = ("[gs.cv_results_['mean_fit_time'].tolist(), gs.refit_time_, cvr['fit_time'].tolist(), "
         "best, pc is time.perf_counter]")


def test_grid_search_and_cross_validation_results_come_back_as_they_were(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, CELLS)
    want = a.value(PROBE)
    optimal = out["optimal"]
    assert sorted(n for n in ("gs", "cvr") if n in optimal.checkpoint["shipped"]) == ["cvr", "gs"]
    assert optimal.restore["verified"], optimal.restore
    assert optimal.kernel.value(PROBE) == want
    # no time to ship anything: re-run, their timings differ, and the restore says why
    replay = out["replay"]
    for name, cell in (("gs", 2), ("cvr", 3)):
        v = replay.restore["variables"][name]
        assert v["action"] == "recomputed" and v["verified"] is False, v
        assert f"its cell {cell} makes other values when re-run (reads the clock (time.time" in v["detail"]
    assert replay.restore["variables"]["best"]["verified"] is True
    assert replay.kernel.value("best") == want[3]
