"""A small notebook session for the Kubernetes tests, and the check that it came back whole."""

from __future__ import annotations

from elastic_spawner.kernelclient import ServerClient

NOTEBOOK = "analysis.ipynb"
EMPTY_NB = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}

CELLS = [
    "import numpy as np\nrows = [[i, i * i] for i in range(50)]\nalias = rows",
    "arr = np.arange(2000, dtype=np.int64).reshape(40, 50) * 3\nview = arr[::2]",
    "def score(k):\n    return sum(r[1] for r in rows) * k + int(arr.sum())",
    "meta = {'owner': OWNER, 'tags': ['a', 'b']}\nrows.append([50, 2500])\nresult = score(2)",
]
CHECK = ("[len(rows), alias is rows, rows[-1], int(arr.sum()), int(view.sum()), "
         "view.base is arr, meta, result, score(1)]")


def expected(owner: str) -> list:
    rows_sq = sum(i * i for i in range(51))
    arr_sum = 3 * sum(range(2000))
    view_sum = sum(3 * v for r in range(0, 40, 2) for v in range(r * 50, r * 50 + 50))
    return [51, True, [50, 2500], arr_sum, view_sum, True, {"owner": owner, "tags": ["a", "b"]},
            rows_sq * 2 + arr_sum, rows_sq + arr_sum]


async def run_session(server: ServerClient, owner: str, path: str = NOTEBOOK) -> None:
    """Open `path` in a new kernel and run the cells (`OWNER` is set first)."""
    await server.put_notebook(path, EMPTY_NB)
    k = await server.open_notebook(path)
    await k.ok(f"OWNER = {owner!r}")
    for cell in CELLS:
        await k.ok(cell)
    assert await k.eval_json(CHECK) == expected(owner)
    await k.close()


async def assert_session_back(server: ServerClient, owner: str, path: str = NOTEBOOK) -> None:
    """The restored server has a session for `path` whose kernel holds every variable."""
    _, status = await server.api("GET", "api/elastic/status")
    assert status["restore"]["state"] == "done", status
    sessions = {s["path"]: s["kernel"]["id"] for s in await server.sessions()}
    assert path in sessions, sessions
    k = await server.attach(sessions[path])
    assert await k.eval_json(CHECK) == expected(owner)
    await k.close()
