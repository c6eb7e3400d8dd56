"""Migrations through the service: a server moves to another node with its session intact.

Real hub, real servers on two local nodes, real kernels. The service checkpoints through the
server's elastic API, stops and starts the server through the hub, and reports the restore as
verified only when every kernel came back with every value checked equal; the test then checks
the values itself, from a client of the new server.
"""

from __future__ import annotations

import asyncio

import pytest

from elastic_spawner.kernelclient import ServerClient
from tests.service.conftest import ElasticHub, token_for

pytestmark = [pytest.mark.hub, pytest.mark.slow]

NB = "work.ipynb"
EMPTY_NB = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


async def run_tiny_notebook(server: ServerClient, tag: str, path: str = NB) -> None:
    await server.put_notebook(path, EMPTY_NB)
    k = await server.open_notebook(path)
    await k.ok(f"tag = {tag!r}\nxs = [i * i for i in range(20)]\nys = xs")
    await k.ok("xs.append(len(tag))\nd = {'n': sum(xs), 'tag': tag}")
    await k.close()


TRANSPORT = "__import__('ipykernel.kernelapp').kernelapp.IPKernelApp.instance().transport"


async def session_values(eh: ElasticHub, user: str, server: str, token: str,
                         expression: str = "[tag, xs, xs is ys, d]", path: str = NB) -> list:
    model = await eh.hub.server_model(user, server)
    assert model and model["ready"], model
    client = ServerClient(eh.hub.url + model["url"], token)
    sessions = {s["path"]: s["kernel"]["id"] for s in await client.sessions()}
    assert set(sessions) == {path}, sessions
    k = await client.attach(sessions[path])
    try:
        return await k.eval_json(expression)
    finally:
        await k.close()


def expected(tag: str) -> list:
    xs = [i * i for i in range(20)] + [len(tag)]
    return [tag, xs, True, {"n": sum(xs), "tag": tag}]


async def test_migrate_to_a_named_node_is_verified(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub()
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    ops = await token_for(eh, "ops")

    code, body = await eh.call("POST", "api/users/alice/server/migrate", {"node": "node-b"},
                               token=ops)
    assert code == 202, body
    code, again = await eh.call("POST", "api/users/alice/server/migrate", {}, token=ops)
    assert code == 409 and again["reason"] == "already-migrating", again  # one at a time
    assert body["migration"]["id"] in again["message"], again
    rec = await eh.wait_migration(body["migration"]["id"], ops)
    assert rec["outcome"] == "verified", rec
    assert (rec["node_before"], rec["node_after"]) == ("node-a", "node-b"), rec
    assert rec["restored_from"] == rec["checkpoint"], rec  # on_request: the service's checkpoint
    assert rec["requested_by"] == "user:ops"
    assert [k["status"] for k in rec["kernels"]] == ["ok"], rec
    assert set(rec["durations"]) >= {"checkpoint_s", "stop_s", "start_s", "restore_s", "total_s"}
    assert await session_values(eh, "alice", "", server.token) == expected("alice")
    # local nodes share one network namespace: kernels talk over Unix sockets, not TCP ports
    # another server's kernel can take (a kernel that lost that race never came up)
    assert await session_values(eh, "alice", "", server.token, TRANSPORT) == "ipc"


@pytest.mark.timeout(1500)
async def test_twenty_servers_migrate_concurrently_and_all_verify(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub()
    names = [f"nb{i:02d}" for i in range(20)]
    # one notebook each: a user's named servers share the home directory, and five servers
    # saving one file at once race in jupyter_server's atomic write (its .~ temporary file)
    paths = {n: f"{n}.ipynb" for n in names}
    await eh.hub.create_user("alice")
    servers = []
    for chunk in range(0, 20, 5):  # start servers and kernels in batches: two cores
        batch = await asyncio.gather(*(eh.user_server("alice", n, node="node-a")
                                       for n in names[chunk:chunk + 5]))
        await asyncio.gather(*(run_tiny_notebook(s, n, paths[n])
                               for s, n in zip(batch, names[chunk:chunk + 5], strict=True)))
        servers += batch
    token = eh.hub.token  # the test driver's service token holds custom:elastic:migrate

    answers = await asyncio.gather(*(
        eh.call("POST", f"api/users/alice/servers/{n}/migrate", {"node": "node-b"}, token=token)
        for n in names))
    assert [c for c, _ in answers] == [202] * 20, answers
    code, active = await eh.call("GET", "api/migrations?active=1", token=token)
    assert code == 200 and len(active["migrations"]) >= 1, active  # they run side by side

    recs = await asyncio.gather(*(eh.wait_migration(b["migration"]["id"], token, timeout=1200)
                                  for _, b in answers))
    unverified = [(r["server"], r["outcome"], r["error"], r["events"][-4:])
                  for r in recs if r["outcome"] != "verified"]
    assert not unverified, unverified
    assert all(r["node_after"] == "node-b" for r in recs)
    user_token = servers[0].token
    for n in names:
        assert await session_values(eh, "alice", n, user_token, path=paths[n]) == expected(n), n
