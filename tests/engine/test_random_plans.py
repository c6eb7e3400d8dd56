"""Restores under plans the three strategies never make.

optimal, ship-all and recompute-all are three plans; the planner makes others when costs
differ (a loaded machine measures other cell times and store speeds), and a value split from
what it shares only under such a plan came back wrong and verified (members of the notebook's
enum shipped while their class's cell re-ran). Here every co-variable is shipped or
recomputed at random (the planner still decides what a choice forces), and each restore must
verify and behave like the session it came from.
"""

from __future__ import annotations

import pytest

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all
from tests.engine.test_odd_objects import FAMILIES

SEEDS = range(3)

# each co-variable is forced one way, chosen by the seed and its key
RANDOM_UNIT_STRATEGY = """
import random as _rnd, kernel_agent.checkpointing as _ckm
_orig_cost = _ckm._covar_cost
def _random_cost(u, graph, strategy):
    side = _rnd.Random(f"{_SEED}/{u.key}").choice(["ship-all", "recompute-all"])
    return _orig_cost(u, graph, side)
_ckm._covar_cost = _random_cost
"""

CASES = {
    "classes": (FAMILIES["classes"],
                "[isinstance(c1, Base), c1.double(), c1.extra, len(Base.registry), "
                "Base.registry[0] is c1, leaf.parent is root, root.children[0] is leaf, pp.x, "
                "Base.version, type(c2) is Child]"),
    "functions": (FAMILIES["functions"],
                  "[add5(1), tripled(2), tripled.__name__, handlers['sq'](3), answer]"),
    "pandas-stdlib": (FAMILIES["pandas-kinds"] + FAMILIES["stdlib-kinds"],
                      "[palette[1] is fav, fav is Color.BLUE, str(df['c'].dtype), "
                      "list(mi.index.names), int(col.sum()), dd_lambda['new'], sorted(st)]"),
    "numpy": (FAMILIES["numpy-kinds"],
              "[rec['x'].tolist(), masked.mask.tolist(), fort.flags.f_contiguous, "
              "strided.tolist(), obj[0], str(dt), int(draws.sum()), int(g.integers(0, 100))]"),
    "files-and-loggers": ([
        "import csv, logging, os, threading\nos.chdir(WORK)",
        "log = logging.getLogger('rp')\nlog.setLevel(logging.INFO)\n"
        "fh = logging.FileHandler('rp.log')\nlog.addHandler(fh)\nlog.propagate = False",
        "out = open('rows.csv', 'w', newline='')\nw = csv.writer(out)\nw.writerow(['a', 1])",
        "class Level(__import__('enum').IntEnum):\n    LOW = 1\n    HIGH = 2",
        "picked = [Level.HIGH]\nlog.info('picked %s', picked)\nbox = {'w': w, 'lock': threading.Lock()}",
    ], "[log.level, len(log.handlers), log.handlers[0] is fh, box['w'] is w, "
       "picked[0] is Level.HIGH, out.tell()]"),
}


def quiet(k, code: str) -> None:
    """Run code the history does not record (the test's own set-up)."""
    r = k.run(code, store_history=False)
    assert r.ok, r.error


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_random_plan_restores_the_same_session(make_kernel, tmp_path, case):
    cells, probe = CASES[case]
    a = make_kernel()
    run_all(a, [c.replace("WORK", repr(str(tmp_path))) for c in cells])
    quiet(a, RANDOM_UNIT_STRATEGY)
    for seed in SEEDS:
        quiet(a, f"_SEED = {seed}")
        checkpoint(a, (tmp_path / f"plan{seed}").as_uri())
    want = a.value(probe)  # (after the checkpoints: a probe may draw or move a position)
    for seed in SEEDS:
        b = make_kernel()
        r = restore(b, (tmp_path / f"plan{seed}").as_uri())
        assert_verified(r)
        assert b.value(probe) == want, f"plan {seed}: {r['variables']}"
