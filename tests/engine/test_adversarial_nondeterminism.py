"""Cells a replay cannot simply run again: failures, clocks, OS entropy, unseeded generators,
cell magics and top-level await, interleaved with mutation, rebinding, `del` and redefinition.

The optimal plan ships what cannot be recomputed; the replay plan (nothing may be shipped)
recomputes what it can and names the rest. Neither may return a value that differs silently.
"""

from __future__ import annotations

from tests.engine.adversarial import assert_never_silent, assert_verified, migrate_both

CELLS = [
    "import asyncio, random, time, uuid\nimport numpy as np",
    "xs = [1]",
    "xs.append(2); 1/0",  # failed after mutating: must not be re-run
    "after_failure = len(xs)",
    "stamp = time.time()",
    "ident = str(uuid.uuid4())",
    "gen = np.random.default_rng()",
    "draws = gen.random(3).tolist()",
    "rnd = random.Random()",
    "pick = rnd.random()",
    "global_draws = np.random.rand(2).tolist()",
    "seeded = random.Random(7).random()",
    "%%time\ntimed = sum(range(100))",
    "%%capture captured\nprint('hidden')\ninside_capture = 5",
    "await asyncio.sleep(0)\nawaited = 7",
    "async def co():\n    return 3",
    "from_coroutine = await co()",
    "def f(v):\n    return v + 1",
    "before_redefinition = f(1)",
    "def f(v):\n    return v * 100",
    "after_redefinition = f(1)",
    "chain = [0]",
    "alias = chain",
    "chain.append(1)",
    "chain = [9]",
    "alias.append(2)",
    "del chain",
    "chain = alias",
    "chain.append(3)",
]

NAMES = ["xs", "after_failure", "stamp", "ident", "draws", "pick", "global_draws", "seeded",
         "timed", "inside_capture", "awaited", "from_coroutine", "before_redefinition",
         "after_redefinition", "chain", "alias"]


def test_unreplayable_cells_are_shipped_or_named(make_kernel, tmp_path):
    a, out = migrate_both(make_kernel, tmp_path, CELLS)
    want = {n: a.value(n) for n in NAMES}
    assert_verified(out["optimal"])
    assert out["optimal"].kernel.value("[" + ", ".join(NAMES) + "]") == [want[n] for n in NAMES]
    replay = out["replay"]
    assert_never_silent(replay, want)
    recomputed = {n for n, v in replay.restore["variables"].items() if v["action"] == "recomputed"}
    # deterministic cells are recomputed, and never re-run into a different value
    assert {"seeded", "timed", "inside_capture", "before_redefinition", "after_redefinition",
            "global_draws"} <= recomputed
    # cells that await at top level are re-run too (on the restore's own asyncio loop)
    assert {"awaited", "from_coroutine"} <= recomputed
    assert replay.kernel.value("[awaited, from_coroutine]") == [7, 3]
    assert not any("await" in e for e in replay.restore["errors"])
    assert replay.restore["mismatched"] == []
    assert replay.kernel.value("chain is alias") is True


def test_entropy_a_library_draws_makes_the_cell_shipped_not_replayed(make_kernel, tmp_path):
    # the cell names no entropy source, but pandas' Styler names itself with uuid4(): re-run,
    # it came back with another id, and df (its co-variable) with it, as mismatched
    a, out = migrate_both(make_kernel, tmp_path, [
        "import pandas as pd",
        "df = pd.DataFrame({'a': [1, 5, 3], 'b': [4, 2, 6]})",
        "sty = df.style.highlight_max()",
        "df.loc[0, 'a'] = 99",
    ])
    assert_verified(out["optimal"])
    replay = out["replay"]
    assert replay.restore["mismatched"] == []
    assert "sty" in replay.restore["lost"] and "OS entropy" in replay.restore["lost"]["sty"]
    assert out["optimal"].kernel.value("[sty.uuid, sty.data is df, int(df.a[0])]") == [
        a.value("sty.uuid"), True, 99]
