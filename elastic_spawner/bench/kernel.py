"""A real ipykernel driven through jupyter_client, for the benchmark harness.

The same approach as ``tests/kernels.py`` (what a notebook frontend does: execute requests on
the shell channel, outputs on IOPub), but part of the installed package so that
``elastic-spawner bench`` runs without a source checkout. Adds the one thing the benchmark
needs: calling functions of the in-kernel probe (``probe.py``) from silent executions, which the
monitoring tools never see.
"""

from __future__ import annotations

import json
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

PROBE_MODULE = "_elastic_bench_probe"


class KernelFailure(RuntimeError):
    """A cell or a probe call failed in the kernel; the message carries the kernel's traceback."""


@dataclass
class Reply:
    status: str = "?"
    stdout: str = ""
    stderr: str = ""
    error: dict | None = None
    user_expressions: dict = field(default_factory=dict)

    @property
    def traceback(self) -> str:
        if self.error:
            tb = "\n".join(self.error.get("traceback") or [])
            return tb or f"{self.error.get('ename')}: {self.error.get('evalue')}"
        return self.stderr


class BenchKernel:
    """One kernel process with the probe loaded (by file path, outside the user namespace)."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800,
                 log_path: Path | None = None):
        self.timeout = timeout
        self.km = KernelManager(kernel_name="python3")
        full_env = dict(os.environ)
        full_env.update(env or {})
        # a plotting backend that never needs a display
        full_env.setdefault("MPLBACKEND", "Agg")
        # the kernel process's own stdout/stderr (start-up warnings, crashes) go to a log file,
        # not into the benchmark's table; cell output and tracebacks arrive over IOPub anyway
        self._log = open(log_path or os.devnull, "ab")  # noqa: SIM115 - closed in shutdown()
        self.km.start_kernel(cwd=str(cwd), env=full_env, stdout=self._log, stderr=self._log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        probe = Path(__file__).with_name("probe.py")
        self._silent(
            "import importlib.util as _u, sys as _s\n"
            f"_spec = _u.spec_from_file_location({PROBE_MODULE!r}, {str(probe)!r})\n"
            "_m = _u.module_from_spec(_spec); _s.modules[_spec.name] = _m; _spec.loader.exec_module(_m)\n"
            "del _u, _s, _spec, _m"
        )

    # -- low level -------------------------------------------------------------------------

    def execute(self, code: str, *, silent: bool = False, user_expressions: dict | None = None) -> Reply:
        msg_id = self.kc.execute(code, silent=silent, store_history=not silent,
                                 user_expressions=user_expressions or {})
        rep = Reply()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
            except queue.Empty as e:
                raise TimeoutError(f"kernel silent for {self.timeout}s running {code[:80]!r}") from e
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                if c["name"] == "stdout":
                    rep.stdout += c["text"]
                else:
                    rep.stderr += c["text"]
            elif t == "error":
                rep.error = c
            elif t == "status" and c["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=self.timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=self.timeout)
        rep.status = reply["content"]["status"]
        if rep.status != "ok" and rep.error is None:
            rep.error = reply["content"]
        rep.user_expressions = reply["content"].get("user_expressions", {})
        return rep

    def _silent(self, code: str) -> None:
        rep = self.execute(code, silent=True)
        if rep.status != "ok":
            raise KernelFailure(f"{code[:200]!r} failed:\n{rep.traceback}")

    # -- what the harness uses ------------------------------------------------------------

    def cell(self, code: str) -> None:
        """Run a notebook cell as a user would (recorded, hooks fire); it must succeed."""
        rep = self.execute(code)
        if rep.status != "ok":
            raise KernelFailure(f"notebook cell failed:\n{code}\n{rep.traceback}")

    def probe(self, fn: str, *args: Any) -> Any:
        """Call ``probe.<fn>(*args)`` in a silent execution and return its JSON-decoded result."""
        code = f"__import__({PROBE_MODULE!r}).call({fn!r}, *__import__('json').loads({json.dumps(json.dumps(args))}))"
        rep = self.execute(code, silent=True,
                           user_expressions={"r": f"__import__({PROBE_MODULE!r}).result_json()"})
        if rep.status != "ok":
            raise KernelFailure(f"{fn} failed in the kernel:\n{_strip_ansi(rep.traceback)}")
        r = rep.user_expressions["r"]
        if r.get("status") != "ok":
            raise KernelFailure(f"{fn}: could not read the result: {r.get('ename')}: {r.get('evalue')}")
        return json.loads(_literal(r["data"]["text/plain"]))

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            try:
                self.km.shutdown_kernel(now=True)
            finally:
                self._log.close()


def _literal(text: str) -> str:
    import ast

    return ast.literal_eval(text)


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
