"""ElasticSpawner's Jupyter server extension: checkpoint/restore all kernels of a server.

Runs in the single-user Jupyter server process (never imports IPython internals). Enabled by
default through the shipped ``jupyter_server_config.d/kernel_agent.json``; explicitly with::

    jupyter server --ServerApp.jpserver_extensions="{'kernel_agent.server': True}"

    c.ServerApp.jpserver_extensions = {"kernel_agent.server": True}   # jupyter_server_config.py

REST API (under the server's base URL): ``POST api/elastic/checkpoint``,
``POST api/elastic/restore``, ``GET api/elastic/status``; see docs/server-extension.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel_agent.server.app import KernelAgentApp

__all__ = ["KernelAgentApp"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the migrator service needs only kernel_agent.server.pointer, and
    # jupyter_server's import (jsonschema's format checkers alone take 2 s) would double the
    # service's start-up, which the hub waits for before it routes its own API.
    if name == "KernelAgentApp":
        from kernel_agent.server.app import KernelAgentApp

        return KernelAgentApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from kernel_agent.server.app import KernelAgentApp

    return [{"module": "kernel_agent.server", "app": KernelAgentApp}]
