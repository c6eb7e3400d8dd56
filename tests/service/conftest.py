"""Fixtures for the migrator service: a real JupyterHub running the service as a managed service.

The hub is `elastic_spawner.localhub.LocalHub` (local elastic spawner on two nodes, file store,
real single-user servers and kernels); the service runs as the deployer would configure it: a
`c.JupyterHub.services` entry with a `command`, its own role, the custom scopes, and roles that
grant them to some users. Every call goes through the proxy, with hub tokens, as a script or
browser would. `make_elastic_hub(...)` builds one hub per test; `shared_hub` is one hub per module
for the validation tests, which do not change anything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elastic_spawner.kernelclient import ServerClient
from elastic_spawner.localhub import HubSettings, LocalHub, find_chp, free_port, http_json

try:
    find_chp()
    HAVE_CHP = True
except Exception:  # noqa: BLE001
    HAVE_CHP = False

pytestmark = pytest.mark.hub

SERVICE = "elastic"
SERVICE_ROLE_SCOPES = ["list:users", "read:users", "admin:servers", "access:servers"]


def service_config(hub: LocalHub, port: int, *, checkpoint_on_stop: str = "on_request",
                   args: list[str] | None = None, managed: bool = True) -> str:
    """The hub config lines a deployer adds (docs/service.md), for this test hub."""
    command = [
        "-m", "elastic_spawner.service",
        f"--proxy-url={hub.url}",
        f"--store-url={hub.store_url()}",
        f"--state-file={hub.workdir}/elastic-migrations.json",
        "--concurrency=20",
        "--retention-interval=0",
        "--log-level=DEBUG",
        *(args or []),
    ]
    entry: dict[str, Any] = {
        "name": SERVICE,
        "url": f"http://127.0.0.1:{port}",
        "oauth_client_allowed_scopes": ["custom:elastic:migrate", "custom:elastic:read"],
    }
    if managed:
        entry_text = (f"dict({entry!r}, command=[sys.executable] + {command!r})")
    else:
        entry_text = f"dict({entry!r}, api_token=os.environ['ELASTIC_SERVICE_TOKEN'])"
    return "\n".join([
        "import sys",
        "from elastic_spawner.service import CUSTOM_SCOPES",
        f"c.JupyterHub.services.append({entry_text})",
        "c.JupyterHub.custom_scopes = CUSTOM_SCOPES",
        f"c.JupyterHub.load_roles.append({{'name': 'elastic-service', "
        f"'scopes': {SERVICE_ROLE_SCOPES!r}, 'services': [{SERVICE!r}]}})",
        # ops may migrate anyone; carol only alice's servers; the test driver (a service) too
        # (access:services!service=elastic: the browser's OAuth login to the service)
        "c.JupyterHub.load_roles.append({'name': 'elastic-operators', "
        "'scopes': ['custom:elastic:migrate', 'access:services!service=elastic'], "
        "'users': ['ops'], 'services': ['elastic-driver']})",
        "c.JupyterHub.load_roles.append({'name': 'elastic-alice-helper', "
        "'scopes': ['custom:elastic:migrate!user=alice', 'access:services!service=elastic'], "
        "'users': ['carol']})",
        "c.JupyterHub.load_roles.append({'name': 'elastic-readers', "
        "'scopes': ['custom:elastic:read', 'access:services!service=elastic'], "
        "'users': ['reader']})",
        "c.JupyterHub.allow_named_servers = True",
        "c.JupyterHub.named_server_limit_per_user = 0",
        f"c.ElasticSpawnerMixin.checkpoint_on_stop = {checkpoint_on_stop!r}",
    ])


@dataclass
class ElasticHub:
    """A hub with the service; `call` talks to the service through the proxy."""

    hub: LocalHub
    port: int

    @property
    def service_url(self) -> str:
        return f"{self.hub.url}/services/{SERVICE}/"

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                   raw: bytes | None = None, timeout: float = 60) -> tuple[int, Any]:
        if raw is not None:
            from tornado.httpclient import AsyncHTTPClient, HTTPRequest

            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"token {token}"
            resp = await AsyncHTTPClient().fetch(HTTPRequest(
                self.service_url + path, method=method, headers=headers, body=raw,
                request_timeout=timeout), raise_error=False)
            return resp.code, json.loads(resp.body) if resp.body else None
        return await http_json(method, self.service_url + path, body, token=token,
                               timeout=timeout, check=False)

    async def wait_service(self, timeout: float = 60) -> None:
        """Until the service answers through the proxy (the hub adds its route at start)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                code, _ = await self.call("GET", "health", timeout=5)
                if code == 200:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"service not up after {timeout}s:\n{self.hub.log_tail(60)}")
            await asyncio.sleep(0.2)  # bounded readiness poll

    async def wait_migration(self, migration_id: str, token: str,
                             timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            code, body = await self.call("GET", f"api/migrations/{migration_id}", token=token)
            assert code == 200, body
            if body["migration"]["finished"]:
                return body["migration"]
            if time.monotonic() > deadline:
                raise AssertionError(f"migration {migration_id} not finished after {timeout}s: "
                                     f"{body}\n{self.hub.log_tail(80)}")
            await asyncio.sleep(0.5)  # bounded poll of the service

    async def user_server(self, user: str, server: str = "", **options: Any) -> ServerClient:
        """Create `user`, start their (named) server, return a client with a token of theirs."""
        await self.hub.create_user(user)
        if server:
            code, data = await self.hub.api("POST", f"users/{user}/servers/{server}",
                                            {"user_options": options} if options else None,
                                            check=False, timeout=180)
            assert code in (201, 202), data
            deadline = time.monotonic() + 180
            while True:
                model = await self.hub.server_model(user, server)
                if model and model.get("ready"):
                    break
                assert model and model.get("pending"), self.hub.log_tail(40)
                assert time.monotonic() < deadline, f"{user}/{server} not ready"
                await asyncio.sleep(0.2)  # bounded poll of the hub API
        else:
            model = await self.hub.start_server(user, options=options or None)
        token = await self.hub.user_token(user)
        return ServerClient(self.hub.url + model["url"], token)


async def start_elastic_hub(workdir: Path, *, cleanup_servers: bool = True,
                            **kw: Any) -> ElasticHub:
    hub = LocalHub(HubSettings(workdir=workdir, log_level="DEBUG", start_timeout=300,
                               cleanup_servers=cleanup_servers))
    port = free_port()
    hub.settings.extra_config = service_config(hub, port, **kw)
    # the hub routes its own API only once the managed service answers (or its 30 s timeout
    # passes): on two cores busy with twenty servers migrating next door, 60 s was too little
    await hub.start(timeout=180)
    eh = ElasticHub(hub, port)
    try:
        await eh.wait_service()
        for name in ("ops", "carol", "reader", "bob"):
            await hub.create_user(name)
    except BaseException:
        await hub.stop()
        raise
    return eh


@pytest.fixture
async def make_elastic_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ElasticHub]]]:
    """Factory: `await make_elastic_hub(checkpoint_on_stop="always")` -> a started ElasticHub."""
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    hubs: list[ElasticHub] = []

    async def make(**kw: Any) -> ElasticHub:
        eh = await start_elastic_hub(tmp_path / f"hub{len(hubs)}", **kw)
        hubs.append(eh)
        return eh

    yield make
    for eh in hubs:
        await eh.hub.stop()
    for eh in hubs:
        shutil.rmtree(eh.hub.workdir / "store", ignore_errors=True)


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticHub]:
    """One hub per module, with alice's default server running: for tests that change nothing."""
    if not HAVE_CHP:
        pytest.skip("configurable-http-proxy not installed (scripts/bootstrap.sh installs it)")
    workdir = tmp_path_factory.mktemp("shared-hub")

    async def up() -> ElasticHub:
        eh = await start_elastic_hub(workdir)
        await eh.user_server("alice")
        await eh.hub.create_user("dora")  # a user whose server is not running
        return eh

    eh = asyncio.run(up())
    try:
        yield eh
    finally:
        asyncio.run(eh.hub.stop())


async def token_for(eh: ElasticHub, user: str, scopes: list[str] | None = None) -> str:
    return await eh.hub.user_token(user, scopes=scopes, note="service test")
