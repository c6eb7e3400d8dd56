"""Migrations survive restarts: of the hub under an external service, and of a managed service.

- External service (its own process, not restarted by the hub): the hub goes down while a
  migration is requested; the service retries until the hub is back, then migrates.
- Managed service (the hub stops and restarts it with itself): a hub restart in the middle of a
  migration stops the service; the record, saved at every step, resumes at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from elastic_spawner.kernelclient import KernelError
from elastic_spawner.localhub import HubSettings, LocalHub, free_port
from tests.service.conftest import HAVE_CHP, ElasticHub, service_config, token_for
from tests.service.test_migrate import NB, expected, run_tiny_notebook, session_values

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def wait_phase(eh: ElasticHub, mid: str, token: str, phases: set[str],
                     timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, body = await eh.call("GET", f"api/migrations/{mid}", token=token)
        if code == 200 and body["migration"]["phase"] in phases:
            return body["migration"]
        assert time.monotonic() < deadline, f"migration {mid} never reached {phases}: {body}"
        await asyncio.sleep(0.2)  # bounded poll of the service


async def test_managed_service_resumes_a_migration_after_a_hub_restart(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub(args=["--ElasticService.busy_timeout=60"],
                                            cleanup_servers=False)  # servers survive restarts
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    k = await server.open_notebook(NB)
    busy = asyncio.ensure_future(k.run("import time; time.sleep(8)", store_history=False))
    await asyncio.sleep(1)  # the cell is running (a duration, not a synchronisation)
    ops = await token_for(eh, "ops")
    code, body = await eh.call("POST", "api/users/alice/server/migrate", {"node": "node-b"},
                               token=ops)
    assert code == 202, body
    mid = body["migration"]["id"]
    await wait_phase(eh, mid, ops, {"checkpointing"})  # waiting for the busy kernel

    # stops the service mid-checkpoint, starts it again (the bound: see start_elastic_hub)
    await eh.hub.restart(timeout=180)
    await eh.wait_service()
    with contextlib.suppress(KernelError):  # its websocket went down with the proxy
        await busy
    await k.close()
    rec = await eh.wait_migration(mid, ops)
    assert rec["outcome"] == "verified", rec
    assert rec["attempts"] == 2, rec
    assert any("resumed after a service restart" in e["message"] for e in rec["events"]), rec
    assert rec["node_after"] == "node-b"
    assert await session_values(eh, "alice", "", server.token) == expected("alice")


async def test_external_service_waits_for_the_hub_and_migrates(tmp_path) -> None:
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    hub = LocalHub(HubSettings(workdir=tmp_path / "hub", cleanup_servers=False,
                               log_level="DEBUG"))
    port = free_port()
    token = os.urandom(16).hex()
    os.environ["ELASTIC_SERVICE_TOKEN"] = token  # the hub config reads it (like api_token)
    hub.settings.extra_config = service_config(hub, port, managed=False)
    env = dict(os.environ, JUPYTERHUB_API_TOKEN=token, JUPYTERHUB_SERVICE_NAME="elastic",
               JUPYTERHUB_API_URL=f"http://127.0.0.1:{hub.hub_port}/hub/api",
               JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
               JUPYTERHUB_SERVICE_PREFIX="/services/elastic/",
               JUPYTERHUB_CLIENT_ID="service-elastic")
    log = open(tmp_path / "service.log", "wb")  # noqa: SIM115
    svc = subprocess.Popen(
        [sys.executable, "-m", "elastic_spawner.service", f"--proxy-url={hub.url}",
         f"--store-url={hub.store_url()}", f"--state-file={tmp_path}/migrations.json",
         "--retention-interval=0", "--log-level=DEBUG"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # the service is up before the hub, which would otherwise wait 30 s for it (the service's
        # timeout) before it routes its own API; a loaded CI machine needs the long bound
        await hub.start(timeout=180)
        eh = ElasticHub(hub, port)
        await eh.wait_service()
        for name in ("ops",):
            await hub.create_user(name)
        server = await eh.user_server("alice", node="node-a")
        await run_tiny_notebook(server, "alice")
        ops = await token_for(eh, "ops")
        direct = f"http://127.0.0.1:{port}/services/elastic/"
        code, _ = await _direct(direct, "GET", "api/migrations", ops)
        assert code == 200  # the service now knows this token (HubAuth caches it)

        await hub.stop(leftovers=False)  # the hub (and its proxy) are gone
        request = asyncio.ensure_future(_direct(direct, "POST", "api/users/alice/server/migrate",
                                                ops, {"node": "node-b"}))
        await asyncio.sleep(2)  # the request waits for the hub (a duration, not a sync)
        assert not request.done()
        await hub.start()
        code, body = await request
        assert code == 202, body
        rec = await eh.wait_migration(body["migration"]["id"], ops)
        assert rec["outcome"] == "verified", rec
        assert await session_values(eh, "alice", "", server.token) == expected("alice")
        assert token not in (tmp_path / "service.log").read_text()  # never logged
    finally:
        svc.send_signal(signal.SIGTERM)
        try:
            svc.wait(30)
        except subprocess.TimeoutExpired:
            svc.kill()
        log.close()
        await hub.stop()
        os.environ.pop("ELASTIC_SERVICE_TOKEN", None)


async def _direct(base: str, method: str, path: str, token: str, body=None):
    from elastic_spawner.localhub import http_json

    return await http_json(method, base + path, body, token=token, timeout=400, check=False)
