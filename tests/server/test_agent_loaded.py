"""Every IPython kernel the server starts has the agent loaded and monitoring, however it starts."""

from __future__ import annotations

import pytest

from kernel_agent.server.kernels import AGENT_ARGUMENT
from tests.kernels import set_order_under_seed
from tests.server.conftest import Server

INJECTED = f"{AGENT_ARGUMENT!r} in __import__('sys').argv"
AGENT_ACTIVE = (
    "['kernel_agent' in get_ipython().extension_manager.loaded, "
    "__import__('kernel_agent.extension').extension.get_monitor(get_ipython()) is not None]"
)


WORDS = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}


def _start(server: Server, how: str) -> str:
    if how == "kernels API":
        r = server.post("api/kernels", json={"name": "python3"})
        assert r.status_code == 201, r.text
        return r.json()["id"]
    return server.create_session("analysis/a.ipynb")["kernel"]["id"]


@pytest.mark.parametrize("how", ["kernels API", "sessions API"])
def test_kernel_started_through_the_server_has_the_agent_monitoring(server: Server, how: str) -> None:
    kid = _start(server, how)
    with server.attach(kid) as k:
        assert k.value(INJECTED) is True
        assert k.value(AGENT_ACTIVE) == [True, True]
        # one string-hash seed for every kernel: a replayed cell orders a set of strings alike
        assert k.value("__import__('os').environ.get('PYTHONHASHSEED')") == "0"
        assert k.value(f"list(set({sorted(WORDS)!r}))") == set_order_under_seed(WORDS, "0")


def test_restarted_kernel_has_the_agent_again(server: Server) -> None:
    kid = _start(server, "sessions API")
    r = server.post(f"api/kernels/{kid}/restart")
    assert r.status_code == 200, r.text
    with server.attach(kid) as k:
        assert k.value(INJECTED) is True
        assert k.value(AGENT_ACTIVE) == [True, True]
