"""Background incremental checkpoints in real kernels: rounds while idle, reuse, crash recovery.

A round starts `interval` seconds after the last cell, serializes what changed on the kernel's
event loop, uploads in a worker, commits a manifest marked background; a planned checkpoint then
serializes and uploads only the remainder. Every restore here is checked by values, not digests.
"""

from __future__ import annotations

import pytest

from tests.conftest import ALL_STORES
from tests.faults import (
    assert_verified,
    checkpoint,
    kernel_env,
    kill9,
    manifest_doc,
    restore,
    start_kernel,
    store_ids,
    wait_for,
)


@pytest.fixture
def kernels():
    made = []
    yield made
    for k in made:
        try:
            k.shutdown()
        except Exception:  # noqa: BLE001 - a killed kernel may already be gone
            pass


def committed(k, n: int, timeout: float = 60) -> dict:
    """Wait (bounded) until `n` background rounds committed and none is in progress."""
    def done():
        s = k.value("kernel_agent.background_status()")
        return s if s["rounds_committed"] >= n and not s["in_progress"] else None

    return wait_for(done, timeout, f"{n} committed background round(s)")


@pytest.mark.parametrize("store_url", ALL_STORES, indirect=True)
def test_crash_after_background_round_loses_only_later_cells(store_url, tmp_path, kernels):
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok(f"import kernel_agent; kernel_agent.background({store_url!r}, interval=0.1)")
    a.ok("import os, numpy as np\nnoise = np.frombuffer(os.urandom(80_000), dtype=np.uint8).copy()")
    a.ok("total = int(noise.sum())\nlog = ['a']")
    s = committed(a, 1)
    assert s["last_error"] is None and s["last_checkpoint"].endswith(".bg")
    a.ok("kernel_agent.background(interval=0)")  # stop rounds, so the next cell is surely lost
    a.ok("log.append('after the last round')")
    expected = a.value("[int(noise.sum()), total]")
    kill9(a)

    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, store_url)
    assert_verified(r)
    assert r["checkpoint_id"] == s["last_checkpoint"]
    assert b.value("[int(noise.sum()), total]") == expected
    assert b.value("log") == ["a"]


def test_planned_checkpoint_after_background_ships_only_the_remainder(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.1)")
    a.ok("import os, numpy as np")
    for i in range(4):  # 4 x 2 MB that only a checkpoint can bring back
        a.ok(f"block{i} = np.frombuffer(os.urandom(2_000_000), dtype=np.uint8).copy()")
    committed(a, 1)
    a.ok("kernel_agent.background(interval=0)")
    a.ok("block3[:10] = 7\nsmall = [1, 2, 3]")  # the remainder: one mutated block, one new value
    c = checkpoint(a, url)
    st = c["stats"]
    assert st["bytes_reused"] >= 3 * 2_000_000, st
    assert 2_000_000 <= st["bytes_uploaded"] < 2_100_000, st
    assert st["units_reused"] >= 3, st
    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert b.value("[int(block3[:10].sum()), small]") == [70, [1, 2, 3]]
    assert b.value("int(block0.sum())") == a.value("int(block0.sum())")


def test_in_place_mutation_after_a_round_is_never_served_from_the_cache(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.1)")
    a.ok("import os\nitems = [os.urandom(8) for _ in range(3)]\nalias = items")
    committed(a, 1)
    a.ok("alias.append(b'new')")  # mutates `items` through its alias
    s2 = committed(a, 2)
    doc = manifest_doc(url, s2["last_checkpoint"])
    assert doc["background"] is True and doc["stats"]["bytes_uploaded"] > 0
    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert b.value("[len(items), items[-1].hex(), alias is items]") == [4, b"new".hex(), True]


def test_a_cell_abandons_a_round_and_the_next_round_resumes(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok("import os, numpy as np\n" + "\n".join(
        f"v{i} = np.frombuffer(os.urandom(1_000_000), dtype=np.uint8).copy()" for i in range(30)))
    # start a round, then run a cell as soon as it has begun: the round must give way
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.05)")
    a.ok("marker = 1")
    wait_for(lambda: a.value("kernel_agent.background_status()['rounds_started']") >= 1, 30, "a round")
    a.ok("marker = 2")
    s = committed(a, 1)
    assert s["rounds_started"] >= s["rounds_committed"]
    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, url)
    assert_verified(r)
    assert b.value("marker") == 2


def test_background_failure_is_reported_and_never_reaches_cells(tmp_path, kernels):
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok("import kernel_agent; kernel_agent.background('s3://bucket/p', interval=0.05, store_options="
         "{'endpoint': 'http://127.0.0.1:9', 'access_key': 'a', 'secret_key': 'b', 'retries': 0})")
    a.ok("x = 1")
    s = wait_for(lambda: (st := a.value("kernel_agent.background_status()"))["last_error"] and st,
                 60, "the background error to be reported")
    assert "127.0.0.1:9" in s["last_error"] and s["rounds_committed"] == 0
    res = a.run("y = x + 1")
    assert res.ok and res.stderr == "" and a.value("y") == 2


def test_background_is_off_without_configuration_and_env_turns_it_on(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    plain = start_kernel(tmp_path, kernel_env())
    kernels.append(plain)
    assert plain.value("__import__('kernel_agent').background_status()") == {"enabled": False}
    k = start_kernel(tmp_path, kernel_env(ELASTIC_BACKGROUND_INTERVAL="0.1", ELASTIC_BACKGROUND_URL=url))
    kernels.append(k)
    k.ok("x = [1]")
    (cid,) = wait_for(lambda: store_ids(url), 60, "a background checkpoint")
    assert cid.endswith(".bg")
    k.ok("%checkpoint_background off")
    assert k.value("__import__('kernel_agent').background_status()") == {"enabled": False}


def test_planned_checkpoint_from_a_cell_while_a_round_is_in_flight(tmp_path, kernels):
    """Whatever the round is doing (serializing, uploading, waiting for idle before a blob),
    a planned checkpoint from a cell neither deadlocks nor ships a stale value."""
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.05)")
    a.ok("import os, numpy as np")
    for rep in range(3):
        a.ok("\n".join(f"w{i} = np.frombuffer(os.urandom(2_000_000), dtype=np.uint8).copy()"
                       for i in range(12)))
        wait_for(lambda: a.value("kernel_agent.background_status()")["in_progress"], 30, "a round")
        a.ok(f"w0[:4] = {rep}\n_c = kernel_agent.checkpoint({url!r})")
        assert a.value("_c['variables']['w0']") == "ship"
    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, url, checkpoint_id=a.value("_c['checkpoint_id']"))
    assert_verified(r)
    assert b.value("int(w0[:4].sum())") == 8
    assert b.value("int(w11.sum())") == a.value("int(w11.sum())")


def test_overhead_budget_spaces_rounds(tmp_path, kernels):
    """A round's main-thread time pushes the next round out by time / budget."""
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.05, budget=0.001)")
    a.ok("x = list(range(1000))")
    s = committed(a, 1)
    assert s["budget"] == 0.001 and s["step_total_s"] > 0
    a.ok("x.append(1)")
    s = a.value("kernel_agent.background_status()")
    assert s["next_round_in_s"] > 0 and s["rounds_started"] == 1, s


def test_a_background_round_loses_only_what_its_cells_cannot_recreate(tmp_path, kernels):
    """The round plans as a planned checkpoint does (`checkpointing.salvage_lost`): `rows`
    is held by a lost value but its own cell recreates it."""
    url = (tmp_path / "store").as_uri()
    a = start_kernel(tmp_path, kernel_env())
    kernels.append(a)
    a.ok("rows = [1, 2, 3]")
    a.ok("holder = {'rows': rows, 'frame': __import__('sys')._getframe()}\n"
         "open('made.txt', 'w').close()")
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.1)")
    s = committed(a, 1)
    assert s["last_error"] is None
    kill9(a)

    b = start_kernel(tmp_path, kernel_env())
    kernels.append(b)
    r = restore(b, url)
    assert r["checkpoint_id"] == s["last_checkpoint"]
    assert set(r["lost"]) == {"holder"}, r["variables"]
    # (shipped or recomputed apart from the holder, whichever the round's plan found cheaper)
    assert r["variables"]["rows"].get("verified"), r["variables"]
    assert b.value("rows") == [1, 2, 3]
