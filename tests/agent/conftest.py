"""Fixtures for the in-kernel monitor tests: one real kernel per test module, records read back."""

from __future__ import annotations

import pytest

from kernel_agent.graph import OUTSIDE_CHANGE_CODE
from tests.kernels import Kernel

HISTORY = "__import__('kernel_agent.extension').extension.history()"


class AgentKernel:
    """A real kernel with the agent loaded, plus helpers to read what the monitor recorded."""

    def __init__(self, kernel: Kernel):
        self.k = kernel

    def ok(self, code: str):
        return self.k.ok(code)

    def run(self, code: str, **kw):
        return self.k.run(code, **kw)

    def value(self, expr: str):
        return self.k.value(expr)

    def history(self) -> dict:
        return self.k.value(HISTORY)

    def cell(self, code: str, must_succeed: bool = True, outside: bool = False) -> dict:
        """Run `code` as a cell and return the record the monitor made of it. `outside`: the
        monitor may record, before it, changes made outside cells that the cell found (notebook
        code a thread of an earlier cell runs)."""
        before = len(self.history()["cells"])
        res = self.k.ok(code) if must_succeed else self.k.run(code)
        cells = self.history()["cells"]
        if outside:
            before += sum(c["code"] == OUTSIDE_CHANGE_CODE for c in cells[before:-1])
        assert len(cells) == before + 1, f"expected one new record for {code!r}, got {cells[before:]}"
        rec = cells[-1]
        rec["_stdout"], rec["_stderr"] = res.stdout, res.stderr
        return rec

    def covariable(self, name: str) -> list[str]:
        """Names of the active snapshot holding `name`."""
        h = self.history()
        return h["snapshots"][h["active"][name]]["names"]


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """One monitored kernel shared by the tests of a module (tests use distinct names)."""
    k = Kernel(cwd=str(tmp_path_factory.mktemp("agent")))
    try:
        k.ok("%load_ext kernel_agent")
        yield AgentKernel(k)
    finally:
        k.shutdown()
