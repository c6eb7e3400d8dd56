"""Fixtures for the server extension: real `jupyter server` subprocesses on 127.0.0.1, real kernels.

Each server runs in its own process with a token, base URL ``/user/alice/``, and isolated Jupyter
config/runtime/IPython directories under the test's tmp_path; the extension is enabled the way a
deployment enables it (``jpserver_extensions`` in a ``jupyter_server_config.json``). Tests talk
to it over HTTP, and to kernels directly through their connection files (as a second client,
like ``jupyter console --existing``), so cells run exactly as a notebook would run them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from jupyter_client.blocking import BlockingKernelClient

from elastic_spawner.localhub import free_port as localhub_free_port
from tests.kernels import Kernel

BASE_URL = "/user/alice/"


def free_port() -> int:
    """A free port below the ephemeral range, which kernels' ZMQ sockets and clients draw from."""
    return localhub_free_port()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class AttachedKernel(Kernel):
    """A client on a kernel the server started; `run`/`ok`/`value` as in tests/kernels.py."""

    def __init__(self, connection_file: str, timeout: float = 120):
        self.timeout = timeout
        self.km = None
        self.kc = BlockingKernelClient(connection_file=connection_file)
        self.kc.load_connection_file()
        # no heartbeat channel: under CPU load a missed 1s heartbeat makes wait_for_ready
        # declare a live kernel dead; readiness is the kernel_info reply, bounded by `timeout`
        self.kc.start_channels(hb=False)
        self.kc.wait_for_ready(timeout=timeout)

    def shutdown(self) -> None:
        self.kc.stop_channels()

    def __enter__(self) -> AttachedKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class Server:
    """A running `jupyter server` subprocess with the extension enabled."""

    def __init__(self, workdir: Path, root_dir: Path, config: dict, env: dict[str, str],
                 ipython_startup: str | None = None):
        self.workdir = workdir
        self.root_dir = root_dir
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{BASE_URL}"
        # kernels on Unix sockets, not TCP ports another worker's kernel could take between the
        # server picking them and the kernel binding them; a short path (sun_path <= 107 bytes)
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="srv-rt-"))
        config_dir = workdir / "config"
        for d in (self.runtime_dir, config_dir, workdir / "ipython", root_dir):
            d.mkdir(parents=True, exist_ok=True)
        if ipython_startup:
            startup = workdir / "ipython" / "profile_default" / "startup"
            startup.mkdir(parents=True, exist_ok=True)
            (startup / "00-test.py").write_text(ipython_startup)
        full_config = {"ServerApp": {"jpserver_extensions": {"kernel_agent.server": True}}}
        for section, values in config.items():
            full_config.setdefault(section, {}).update(values)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(full_config))
        self.env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "IPYTHONDIR": str(workdir / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
            **env,
        }
        for name in ("ELASTIC_STORE_URL", "ELASTIC_RESTORE_FROM"):
            if name not in env:
                self.env.pop(name, None)
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
                f"--ServerApp.base_url={BASE_URL}", f"--ServerApp.root_dir={root_dir}",
                f"--IdentityProvider.token={self.token}", "--ServerApp.allow_root=True",
                "--KernelManager.transport=ipc",
            ],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(workdir),
        )
        try:
            wait_for(self._ready, 60, f"jupyter server on port {self.port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"server did not start; log:\n{self.log()}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}; log:\n{self.log()}")
        try:
            return self.get("api/status").status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, token: str | None | bool = True, **kw: Any) -> requests.Response:
        headers = kw.pop("headers", {})
        if token is True:
            token = self.token
        if token:
            headers["Authorization"] = f"token {token}"
        kw.setdefault("timeout", 300)
        return requests.request(method, self.url + path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def create_session(self, path: str, kernel_name: str = "python3") -> dict:
        r = self.post("api/sessions", json={"path": path, "name": Path(path).name, "type": "notebook",
                                             "kernel": {"name": kernel_name}})
        assert r.status_code == 201, r.text
        return r.json()

    def sessions(self) -> dict[str, dict]:
        """Current sessions by notebook path."""
        r = self.get("api/sessions")
        assert r.status_code == 200, r.text
        return {s["path"]: s for s in r.json()}

    def attach(self, kernel_id: str) -> AttachedKernel:
        cf = self.runtime_dir / f"kernel-{kernel_id}.json"
        wait_for(cf.exists, 30, f"connection file {cf}")
        return AttachedKernel(str(cf))

    def status(self) -> dict:
        r = self.get("api/elastic/status")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_restore(self, timeout: float = 240) -> dict:
        """Poll the status endpoint until the restore is over; returns its final status."""
        def finished() -> dict | None:
            st = self.status()
            return st if st["restore"]["state"] in ("done", "failed") else None

        return wait_for(finished, timeout, "the restore to finish", interval=0.25)

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down, as on a pod stop), then wait; kill if stuck."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: `start_server(config=, env=, name=, root_dir=, ipython_startup=)`; all stopped at teardown.

    `ipython_startup` is code every kernel of that server runs at start-up (IPython profile
    startup file in the server's own IPYTHONDIR).
    """
    servers: list[Server] = []

    def start(config: dict | None = None, env: dict[str, str] | None = None, name: str = "a",
              root_dir: Path | None = None, ipython_startup: str | None = None) -> Server:
        s = Server(tmp_path / f"server-{name}", root_dir or tmp_path / "notebooks", config or {},
                   env or {}, ipython_startup)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by a module's tests that change nothing (request validation)."""
    workdir = tmp_path_factory.mktemp("api-server")
    (workdir / "store").mkdir()
    s = Server(workdir / "server", workdir / "notebooks", {}, {"ELASTIC_STORE_URL": (workdir / "store").as_uri()})
    yield s
    s.stop()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A file store for this test."""
    d = tmp_path / "store"
    d.mkdir()
    return d.as_uri()


@pytest.fixture
def server(start_server: Callable[..., Server], store_url: str) -> Server:
    """One server with a file store configured through the environment, as a spawner does."""
    return start_server(env={"ELASTIC_STORE_URL": store_url})
