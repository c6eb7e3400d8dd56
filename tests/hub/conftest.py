"""Fixtures for hub tests: a real JupyterHub subprocess on 127.0.0.1 with the local elastic spawner.

Each test gets its own hub (free ports, its own directory, database and service token with the
admin role), real single-user servers on two local "nodes", and real kernels driven over the
server's REST + websocket APIs, as a browser would. `make_hub(extra_config=...)` appends lines to
the generated jupyterhub_config.py, so a test states its policy in config, as a deployer would.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import HubSettings, LocalHub, find_chp

try:
    find_chp()
    HAVE_CHP = True
except Exception:  # noqa: BLE001
    HAVE_CHP = False

pytestmark = pytest.mark.hub


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[LocalHub]]]:
    """Factory: `await make_hub(extra_config="...", cleanup_servers=False)` -> a started LocalHub."""
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    hubs: list[LocalHub] = []

    async def make(extra_config: str = "", cleanup_servers: bool = True) -> LocalHub:
        hub = LocalHub(HubSettings(workdir=tmp_path / f"hub{len(hubs)}", extra_config=extra_config,
                                   cleanup_servers=cleanup_servers, log_level="DEBUG"))
        hubs.append(hub)
        await hub.start()
        return hub

    yield make
    for hub in hubs:
        await hub.stop()
        # shown by pytest when the test failed: what the spawner and the servers said
        lines = [ln for ln in hub.log_tail(3000).splitlines()
                 if "Elastic" in ln or "kernel_agent" in ln or "Traceback" in ln or "Error" in ln]
        print(f"--- {hub.log_path} (Elastic/kernel_agent/errors) ---")
        print("\n".join(ln[:600] for ln in lines[-60:]))
    for hub in hubs:  # keep the hub log of a failed test in the tmp dir, drop the bulky rest
        shutil.rmtree(hub.workdir / "store", ignore_errors=True)


async def user_server(hub: LocalHub, user: str, **start: object) -> ServerClient:
    """Create `user`, start their server, and return a client with a token of theirs."""
    await hub.create_user(user)
    model = await hub.start_server(user, **start)  # type: ignore[arg-type]
    token = await hub.user_token(user)
    return ServerClient(hub.url + model["url"], token)


async def reconnect(hub: LocalHub, user: str, token: str) -> ServerClient:
    model = await hub.server_model(user)
    assert model and model["ready"], model
    return ServerClient(hub.url + model["url"], token)


async def restore_outcome(server: ServerClient, timeout: float = 120) -> dict[str, Any]:
    """The server's restore status once it has finished (bounded poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        restore = (await server.api("GET", "api/elastic/status"))[1]["restore"]
        if restore["state"] in ("done", "failed"):
            return restore
        await asyncio.sleep(0.5)  # bounded poll of the server's status
    raise AssertionError(f"restore not finished after {timeout:.0f}s: {restore}")
