"""Building a real KubeSpawner for rig tests without a hub (KubeSpawner's own test recipe)."""

from __future__ import annotations

import sys
from typing import Any
from unittest.mock import Mock

from jupyterhub.objects import Hub, Server
from kubespawner import KubeSpawner
from traitlets.config import Config

from tests.k8s.rig import free_port

__all__ = ["MockUser", "http_server_cmd", "make_spawner"]


class MockUser(Mock):
    """The few User attributes KubeSpawner reads (name, escaped_name, url, server)."""

    name = "alice"
    server: Server | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def url(self) -> str:
        return self.server.url if self.server else f"/user/{self.name}/"


def http_server_cmd(port: int) -> list[str]:
    """A tiny stand-in for jupyterhub-singleuser: answers HTTP on 127.0.0.1:port."""
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def make_spawner(username: str = "alice", port: int | None = None, **traits: Any) -> KubeSpawner:
    """A real KubeSpawner (``_mock=True`` only stubs hub/user), one free port per server."""
    port = port or free_port()
    config = Config()
    config.KubeSpawner.cmd = http_server_cmd(port)
    config.KubeSpawner.port = port
    config.KubeSpawner.ip = "127.0.0.1"
    config.KubeSpawner.start_timeout = 30
    config.KubeSpawner.http_timeout = 30
    for name, value in traits.items():
        setattr(config.KubeSpawner, name, value)
    user = MockUser(name=username)
    spawner = KubeSpawner(hub=Hub(), user=user, config=config, api_token="rig-token",
                          oauth_client_id="unused", _mock=True)
    user.server = spawner.server = Server(ip="127.0.0.1", port=port, base_url=f"/user/{username}/")
    return spawner
