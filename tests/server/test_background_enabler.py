"""The background enabler does not ask a kernel that cannot run the agent at every poll.

A kernel whose Python lacks kernel_agent (or where the agent is not loaded) answers the
``kernel_agent.background`` call with an error. It was asked again, with a warning in the
server log, every 5 s for as long as it ran. Stubs stand in for jupyter_server's managers (the
real-server behaviour of such a kernel is in test_foreign_kernels.py); `call_agent` is replaced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from kernel_agent.server import backgrounding
from kernel_agent.server.backgrounding import BackgroundEnabler
from kernel_agent.server.coordinator import RestoreJob
from kernel_agent.server.kernels import CallResult


@dataclass
class _Provisioner:
    pid: int


@dataclass
class _Kernel:
    provisioner: _Provisioner
    kernel_name: str = "python3"
    execution_state: str = "idle"


@dataclass
class _Spec:
    language: str = "python"
    argv: list[str] = field(default_factory=lambda: ["python", "-m", "ipykernel_launcher"])


class _Coordinator:
    def __init__(self, kernel: _Kernel) -> None:
        self.kernel = kernel
        self.restore_job = RestoreJob()
        self.kernel_manager = self
        self.kernel_spec_manager = self

    def list_kernel_ids(self) -> list[str]:
        return ["k1"]

    def _kernel(self, kid: str) -> Any:
        return self.kernel

    def get_kernel_spec(self, name: str) -> _Spec:
        return _Spec()

    async def _sessions_by_kernel(self) -> dict:
        return {}


def test_a_kernel_without_the_agent_is_asked_once_per_process_not_at_every_poll(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    async def no_agent(km: Any, function: str, kwargs: dict, *, timeout: float) -> CallResult:
        calls.append(function)
        return CallResult(error="this kernel cannot import kernel_agent")

    monkeypatch.setattr(backgrounding, "call_agent", no_agent)
    kernel = _Kernel(_Provisioner(pid=100))
    enabler = BackgroundEnabler(_Coordinator(kernel), "file:///tmp/store", 30.0)

    async def polls(n: int) -> None:
        for _ in range(n):
            await enabler.sync()

    with caplog.at_level(logging.DEBUG, logger=backgrounding.log.name):
        asyncio.run(polls(3))
        assert calls == ["background"]
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        kernel.provisioner = _Provisioner(pid=101)  # restarted: maybe the agent loads now
        asyncio.run(polls(2))
        assert calls == ["background"] * 2
        enabler.retry = 0.0  # the retry period has passed
        asyncio.run(polls(1))
        assert calls == ["background"] * 3
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
