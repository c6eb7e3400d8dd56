"""ElasticSpawner's Jupyter server extension: checkpoint/restore all kernels of a server.

Runs in the single-user Jupyter server process (never imports IPython internals). Enabled by
default through the shipped ``jupyter_server_config.d/kernel_agent.json``; explicitly with::

    jupyter server --ServerApp.jpserver_extensions="{'kernel_agent.server': True}"

    c.ServerApp.jpserver_extensions = {"kernel_agent.server": True}   # jupyter_server_config.py

REST API (under the server's base URL): ``POST api/elastic/checkpoint``,
``POST api/elastic/restore``, ``GET api/elastic/status``; see docs/server-extension.md.
"""

from __future__ import annotations

from typing import Any

from kernel_agent.server.app import KernelAgentApp

__all__ = ["KernelAgentApp"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "kernel_agent.server", "app": KernelAgentApp}]
