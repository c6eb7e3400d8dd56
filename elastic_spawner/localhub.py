"""A real JupyterHub on 127.0.0.1 as a subprocess, with the local elastic spawner, and a REST client.

Runs in the process that drives a local hub: the `elastic-spawner demo` CLI and the hub tests
(`tests/hub/`). Nothing here runs inside the hub. The hub gets free ports, a working directory of
its own (database, cookie secret, proxy pid file, logs), a service token with the admin role for
the driver, and its own process session, so that Ctrl-C in a terminal reaches only the driver,
which then shuts the hub down in order (servers, proxy, hub) and kills what is left.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger(__name__)

SERVICE_NAME = "elastic-driver"
EXTENSION_CONFIG = {"ServerApp": {"jpserver_extensions": {"kernel_agent.server": True}}}


class HubError(RuntimeError):
    """The hub or a hub API call did not do what the driver needed."""


# Below the kernel's ephemeral range (32768-60999 on Linux): kernels bind their ZMQ ports there,
# so a port picked there can be taken between picking it and the server binding it.
PORT_RANGE = (20000, 32000)
#: "LOW-HIGH": the range `free_port` and the local spawner's `port_range` default pick from.
#: Processes that start servers side by side (pytest-xdist workers) each take their own part,
#: so one never picks a port another picked but has not bound yet.
PORT_RANGE_ENV = "ELASTIC_PORT_RANGE"


def default_port_range() -> tuple[int, int]:
    """`PORT_RANGE`, or the one `ELASTIC_PORT_RANGE` sets (read at each call)."""
    raw = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not raw:
        return PORT_RANGE
    try:
        low, high = (int(x) for x in raw.split("-"))
    except ValueError:
        raise HubError(f"{PORT_RANGE_ENV}={raw!r}: write it as LOW-HIGH, e.g. 20000-25999") from None
    if not 1024 <= low <= high <= 65535:
        raise HubError(f"{PORT_RANGE_ENV}={raw!r}: need 1024 <= LOW <= HIGH <= 65535")
    return low, high


#: the ports `free_port` handed out last in this process: a caller may not have bound one yet
_RECENT: collections.deque[int] = collections.deque(maxlen=64)


def free_port(port_range: tuple[int, int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 right now, outside the ephemeral range, and none of the
    last ports it handed out: the hub's three ports are picked before any is bound, and one
    picked twice passed for free both times (the hub then failed to bind the proxy's port,
    "Address already in use", about one hub start in a thousand)."""
    port_range = port_range or default_port_range()
    spread = port_range[1] - port_range[0] + 1 > 2 * _RECENT.maxlen  # (a range that tiny: any)
    for _ in range(200):
        port = random.randint(*port_range)
        if spread and port in _RECENT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _RECENT.append(port)
            return port
    raise HubError(f"no free TCP port in {port_range[0]}-{port_range[1]} on 127.0.0.1")


def find_chp() -> str:
    """configurable-http-proxy: next to this virtualenv (scripts/bootstrap.sh puts it there), or PATH."""
    candidates = [
        Path(sys.prefix) / "node" / "node_modules" / ".bin" / "configurable-http-proxy",
        Path(__file__).resolve().parents[1] / ".venv" / "node" / "node_modules" / ".bin"
        / "configurable-http-proxy",
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    raise HubError(
        "configurable-http-proxy not found: run scripts/bootstrap.sh (it installs it in "
        ".venv/node), or put it on PATH"
    )


def _extension_config_dir(workdir: Path) -> Path | None:
    """A config dir enabling `kernel_agent.server`, when the environment does not enable it yet.

    `pip install` ships `etc/jupyter/jupyter_server_config.d/kernel_agent.json`; an older
    editable install may lack it. The servers then get this dir in JUPYTER_CONFIG_PATH.
    """
    from jupyter_core.paths import jupyter_config_path

    for d in jupyter_config_path():
        if (Path(d) / "jupyter_server_config.d" / "kernel_agent.json").is_file():
            return None
    cfg = workdir / "jupyter-config"
    (cfg / "jupyter_server_config.d").mkdir(parents=True, exist_ok=True)
    (cfg / "jupyter_server_config.d" / "kernel_agent.json").write_text(json.dumps(EXTENSION_CONFIG))
    return cfg


@dataclass
class HubSettings:
    """What a local hub looks like; `extra_config` is appended verbatim to jupyterhub_config.py."""

    workdir: Path
    nodes: list[str] = field(default_factory=lambda: ["node-a", "node-b"])
    store_url: str = ""  # default: file://<workdir>/store/{username}/{servername}
    cleanup_servers: bool = True
    start_timeout: float = 120
    extra_config: str = ""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()


class LocalHub:
    """One JupyterHub subprocess. `start()` waits for 200 from the API; `stop()` ends everything."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.workdir = settings.workdir
        self.token = secrets.token_hex(32)
        # signs every checkpoint (ElasticSpawnerMixin.hub_secret); kept across restart()
        self.hub_secret = secrets.token_hex(32)
        self.port = free_port()  # (three distinct ports: see free_port)
        self.api_port = free_port()
        self.hub_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "jupyterhub.log"
        self._server_pids: set[int] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home_root(self) -> Path:
        return self.workdir / "home"

    @property
    def nodes_root(self) -> Path:
        return self.workdir / "nodes"

    def store_url(self) -> str:
        return self.settings.store_url or f"file://{self.workdir}/store/{{username}}/{{servername}}"

    def config_text(self) -> str:
        s = self.settings
        ext_dir = _extension_config_dir(self.workdir)
        env: dict[str, str] = {}
        if ext_dir:
            env["JUPYTER_CONFIG_PATH"] = str(ext_dir)
        lines = [
            "# Written by elastic_spawner.localhub: a JupyterHub on loopback for a demo or a test.",
            "import os",
            f"c.JupyterHub.ip = '127.0.0.1'; c.JupyterHub.port = {self.port}",
            f"c.JupyterHub.hub_ip = '127.0.0.1'; c.JupyterHub.hub_port = {self.hub_port}",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.api_port}'",
            f"c.ConfigurableHTTPProxy.command = [{find_chp()!r}]",
            f"c.JupyterHub.db_url = 'sqlite:///{self.workdir}/jupyterhub.sqlite'",
            f"c.JupyterHub.cookie_secret_file = '{self.workdir}/jupyterhub_cookie_secret'",
            f"c.JupyterHub.pid_file = '{self.workdir}/jupyterhub.pid'",
            f"c.JupyterHub.cleanup_servers = {s.cleanup_servers!r}",
            "c.JupyterHub.authenticator_class = 'dummy'",
            "c.Authenticator.allow_all = True",
            "c.JupyterHub.spawner_class = 'elastic-local'",
            f"c.ElasticLocalProcessSpawner.nodes = {s.nodes!r}",
            f"c.ElasticLocalProcessSpawner.nodes_root = '{self.nodes_root}'",
            "c.ElasticLocalProcessSpawner.system_users = False",
            f"c.ElasticLocalProcessSpawner.home_dir_template = '{self.home_root}/{{username}}'",
            f"c.ElasticSpawnerMixin.store_url = {self.store_url()!r}",
            f"c.Spawner.start_timeout = {int(s.start_timeout)}",
            f"c.Spawner.http_timeout = {int(s.start_timeout)}",
            f"c.Spawner.environment = {env!r}",
            "c.Spawner.default_url = '/lab'",
            f"c.JupyterHub.services = [{{'name': {SERVICE_NAME!r}, "
            "'api_token': os.environ['ELASTIC_HUB_SERVICE_TOKEN']}]",
            f"c.JupyterHub.load_roles = [{{'name': 'admin', 'services': [{SERVICE_NAME!r}]}}]",
            f"c.JupyterHub.log_level = {s.log_level!r}",
            s.extra_config,
        ]
        return "\n".join(lines) + "\n"

    async def start(self, timeout: float = 60) -> None:
        """Start the hub and wait until its API answers 200 (CHP answers 404 before the route)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "jupyterhub_config.py"
        cfg.write_text(self.config_text())
        env = dict(os.environ)
        env["ELASTIC_HUB_SERVICE_TOKEN"] = self.token
        env["ELASTIC_HUB_SECRET"] = self.hub_secret  # default of ElasticSpawnerMixin.hub_secret
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bindir, str(Path(find_chp()).parent), env.get("PATH", "")])
        logf = open(self.log_path, "ab")  # noqa: SIM115 (the hub owns it until stop())
        self.proc = subprocess.Popen(
            [str(Path(bindir) / "jupyterhub"), "-f", str(cfg)],
            cwd=self.workdir, env=env, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the driver only; it stops the hub in order
        )
        logf.close()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HubError(f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                code, _ = await self.api("GET", "", timeout=2, check=False)
                if code == 200:
                    return
                last = f"HTTP {code}"
            except OSError as e:
                last = str(e)
            await asyncio.sleep(0.1)  # bounded readiness poll
        tail = self.log_tail()
        # a hub that never became ready must not outlive this call (nobody may stop it later)
        proc = self.proc
        self.kill_now()
        proc.wait(10)
        self.proc = None
        raise HubError(f"jupyterhub not ready after {timeout:.0f}s ({last}); stopped it:\n{tail}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    # ---- REST ------------------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                  timeout: float = 60, check: bool = True) -> tuple[int, Any]:
        """Call the hub REST API (`/hub/api/<path>`) with the driver's service token."""
        return await http_json(method, f"{self.url}/hub/api/{path}", body,
                               token=token or self.token, timeout=timeout, check=check)

    async def create_user(self, name: str) -> None:
        code, _ = await self.api("POST", f"users/{quote(name)}", check=False)
        if code not in (201, 409):
            raise HubError(f"creating user {name}: HTTP {code}")

    async def user_token(self, name: str, scopes: list[str] | None = None, note: str = "driver") -> str:
        body: dict[str, Any] = {"note": note, "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        _, data = await self.api("POST", f"users/{quote(name)}/tokens", body)
        return data["token"]

    async def server_model(self, user: str, server: str = "") -> dict[str, Any] | None:
        _, data = await self.api("GET", f"users/{quote(user)}?include_stopped_servers=1")
        return (data.get("servers") or {}).get(server)

    @staticmethod
    def _server_path(user: str, server: str) -> str:
        """`users/<user>/server` (default server) or `users/<user>/servers/<name>` (named)."""
        if server:
            return f"users/{quote(user)}/servers/{quote(server)}"
        return f"users/{quote(user)}/server"

    async def start_server(self, user: str, *, options: dict[str, Any] | None = None,
                           timeout: float = 180, server: str = "") -> dict[str, Any]:
        """Start a server (`server`: a named one) and wait until the hub reports it ready."""
        body = {"user_options": options} if options is not None else None
        code, data = await self.api("POST", self._server_path(user, server), body, check=False,
                                    timeout=timeout)
        if code not in (201, 202):
            raise HubError(f"starting {user}'s server: HTTP {code} {data}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = await self.server_model(user, server)
            if model and model.get("ready"):
                self._remember_pid(model)
                return model
            if model is None or not model.get("pending"):
                raise HubError(f"{user}'s server failed to start:\n{self.log_tail()}")
            await asyncio.sleep(0.2)  # bounded poll of the hub API
        raise HubError(f"{user}'s server not ready after {timeout:.0f}s:\n{self.log_tail()}")

    async def stop_server(self, user: str, *, timeout: float = 180, server: str = "") -> None:
        """Stop a server through the hub (the spawner checkpoints) and wait until it is gone."""
        code, data = await self.api("DELETE", self._server_path(user, server), check=False,
                                    timeout=timeout)
        if code not in (202, 204):
            raise HubError(f"stopping {user}'s server: HTTP {code} {data}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = await self.server_model(user, server)
            if not model or (not model.get("pending") and not model.get("ready")):
                return
            await asyncio.sleep(0.2)  # bounded poll of the hub API
        raise HubError(f"{user}'s server did not stop within {timeout:.0f}s")

    async def follow_progress(self, user: str, until: asyncio.Future[Any],
                              on_event: Callable[[dict[str, Any]], None]) -> None:
        """Feed the spawn-page events of `user`'s pending start to `on_event` (hub SSE API).

        Call it right after requesting the start; it retries while the hub has not marked the
        spawn pending yet, and ends with the spawn (or when `until` is done).
        """
        buf = b""

        def on_chunk(chunk: bytes) -> None:
            nonlocal buf
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for line in block.decode("utf-8", "replace").splitlines():
                    if line.startswith("data:"):
                        try:
                            on_event(json.loads(line[5:]))
                        except ValueError:
                            continue

        req = HTTPRequest(f"{self.url}/hub/api/users/{quote(user)}/server/progress",
                          headers={"Authorization": f"token {self.token}"},
                          streaming_callback=on_chunk, request_timeout=600)
        while not until.done():  # bounded by the start itself
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
            if resp.code == 200:
                return
            await asyncio.sleep(0.05)

    async def spawner_state(self, user: str, server: str = "") -> dict[str, Any]:
        """The spawner state the hub keeps in its database (needs admin:server_state)."""
        model = await self.server_model(user, server)
        return (model or {}).get("state") or {}

    def _remember_pid(self, model: dict[str, Any]) -> None:
        pid = (model.get("state") or {}).get("pid")
        if pid:
            self._server_pids.add(int(pid))

    # ---- shutdown --------------------------------------------------------------------------

    async def restart(self, timeout: float = 60) -> None:
        """Stop the hub process only and start it again (same ports, database and token).

        Servers keep running across the restart when `HubSettings.cleanup_servers` is False.
        """
        await self.stop(timeout, leftovers=False)
        await self.start(timeout)

    async def stop(self, timeout: float = 60, *, leftovers: bool = True) -> None:
        """Stop the hub (SIGTERM: it stops servers and proxy), then kill whatever is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            if leftovers:
                self.kill_leftovers()
            return
        if proc.poll() is None:
            with _suppress_lookup():
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # bounded wait for the hub's own cleanup
            if proc.poll() is None:
                log.warning("jupyterhub did not exit in %.0fs; killing it", timeout)
                with _suppress_lookup():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if leftovers:
            self.kill_leftovers()

    def kill_leftovers(self) -> None:
        """Kill servers and the proxy this hub started, by pid, if they outlived it."""
        pids = set(self._server_pids)
        chp = self.workdir / "jupyterhub-proxy.pid"
        if chp.is_file():
            try:
                pids.add(int(chp.read_text().strip()))
            except ValueError:
                pass
        for pid in pids:
            if _alive(pid) and _started_here(pid, self.workdir):
                log.info("killing leftover process %d", pid)
                with _suppress_lookup():
                    os.killpg(pid, signal.SIGTERM)  # servers and CHP lead their own sessions
        for pid in _notebook_processes_of(self.workdir):
            # servers this hub never saw start (the migration service spawns them through the
            # hub's API while the hub restarts), and their kernels
            log.info("killing leftover notebook process %d", pid)
            with _suppress_lookup():
                os.kill(pid, signal.SIGTERM)

    def kill_now(self) -> None:
        """Synchronous last resort (atexit, second Ctrl-C): kill the hub's session and leftovers."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with _suppress_lookup():
                os.killpg(proc.pid, signal.SIGKILL)
        self.kill_leftovers()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_NOTEBOOK_COMMANDS = (b"jupyterhub-singleuser", b"ipykernel_launcher")


def _notebook_processes_of(workdir: Path) -> list[int]:
    """Pids of notebook servers and kernels running in (or named on their command line under)
    `workdir`."""
    out = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(c in cmdline for c in _NOTEBOOK_COMMANDS) and _under(int(entry), workdir):
            out.append(int(entry))
    return out


def _proc_text(pid: int, *, environ: bool) -> bytes | None:
    """The process's command line (and environment), then its cwd, NUL-separated; None if gone."""
    try:
        blob = Path(f"/proc/{pid}/environ").read_bytes() if environ else b""
        blob += Path(f"/proc/{pid}/cmdline").read_bytes()
        return blob + b"\0" + os.readlink(f"/proc/{pid}/cwd").encode() + b"\0"
    except OSError:
        return None


def _under(pid: int, workdir: Path) -> bool:
    """The process's command line or working directory names `workdir` or a path inside it
    (not merely a sibling that shares its prefix, such as another hub's ``hub2``). Not its
    environment: variables a test process leaves behind are inherited by unrelated processes."""
    blob = _proc_text(pid, environ=False)
    w = str(workdir).encode()
    return blob is not None and ((w + b"/") in blob or (w + b"\0") in blob)


def _started_here(pid: int, workdir: Path) -> bool:
    """Guard against pid reuse: the process's environment or command line mentions our workdir."""
    blob = _proc_text(pid, environ=True)
    return blob is not None and str(workdir).encode() in blob


def _suppress_lookup() -> contextlib.suppress:
    return contextlib.suppress(ProcessLookupError, PermissionError)


async def http_json(method: str, url: str, body: Any = None, *, token: str | None = None,
                    timeout: float = 60, check: bool = True) -> tuple[int, Any]:
    """One JSON HTTP call; returns (status, decoded body). `check` raises HubError on >= 400."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    req = HTTPRequest(url, method=method, headers=headers,
                      body=json.dumps(body) if body is not None else (b"" if method in ("POST", "PUT", "PATCH") else None),
                      request_timeout=timeout, connect_timeout=min(timeout, 10),
                      allow_nonstandard_methods=True)
    try:
        resp = await AsyncHTTPClient().fetch(req)
        code, raw = resp.code, resp.body
    except HTTPClientError as e:
        if e.code == 599 or e.response is None:
            raise
        code, raw = e.code, e.response.body
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = raw.decode("utf-8", "replace") if raw else None
    if check and code >= 400:
        raise HubError(f"{method} {url}: HTTP {code} {data}")
    return code, data
