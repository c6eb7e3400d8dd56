"""Drive real ipykernel kernels through jupyter_client, for tests that must see what a user sees."""

from __future__ import annotations

import ast
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class ExecResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    outputs: list[dict] = field(default_factory=list)  # display_data / execute_result contents
    error: dict | None = None
    user_expressions: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Kernel:
    """A real ipykernel process; `run` executes a cell as the notebook frontend would."""

    def __init__(self, cwd: str | None = None, env: dict | None = None, timeout: float = 120):
        self.timeout = timeout
        # ZMQ over Unix sockets in a private directory, not TCP: TCP ports are picked free and
        # bound later by the kernel, so kernels started at the same time (pytest-xdist workers,
        # the servers of hub tests) can race for one port. A short /tmp path: sun_path <= 107.
        self._ipc_dir = tempfile.mkdtemp(prefix="kipc-")
        self.km = KernelManager(kernel_name="python3", transport="ipc", ip=f"{self._ipc_dir}/k")
        kwargs: dict[str, Any] = {}
        if cwd:
            kwargs["cwd"] = cwd
        if env:
            kwargs["env"] = env
        self.km.start_kernel(**kwargs)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=timeout)

    def run(self, code: str, silent: bool = False, user_expressions: dict | None = None,
            store_history: bool = True) -> ExecResult:
        """Execute `code` as a frontend would. A request the kernel aborted is sent again
        (bounded): after a cell that failed, ipykernel aborts what reaches it before it has
        posted itself the message that ends its abort (a race its shell-channel thread loses
        on a loaded machine), so the next request of a test, sent once the error's reply came,
        was answered "aborted" with nothing run."""
        for _ in range(50):
            res = self._run_once(code, silent, user_expressions, store_history)
            if res.status != "aborted":
                break
        return res

    def _run_once(self, code: str, silent: bool, user_expressions: dict | None,
                  store_history: bool) -> ExecResult:
        msg_id = self.kc.execute(code, silent=silent, store_history=store_history,
                                 user_expressions=user_expressions or {})
        res = ExecResult(status="?")
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=self.timeout)
            except queue.Empty as e:
                raise TimeoutError(f"no output from kernel for {self.timeout}s running {code!r}") from e
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                if c["name"] == "stdout":
                    res.stdout += c["text"]
                else:
                    res.stderr += c["text"]
            elif t in ("display_data", "execute_result"):
                res.outputs.append(c)
            elif t == "error":
                res.error = c
            elif t == "status" and c["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=self.timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=self.timeout)
        res.status = reply["content"]["status"]
        res.user_expressions = reply["content"].get("user_expressions", {})
        return res

    def ok(self, code: str) -> ExecResult:
        """Run a cell that must succeed; fail the test with the kernel's traceback otherwise."""
        res = self.run(code)
        if not res.ok:
            tb = "\n".join(res.error["traceback"]) if res.error else res.stderr
            raise AssertionError(f"cell failed: {code!r}\n{tb}")
        return res

    def value(self, expr: str) -> Any:
        """Evaluate `expr` in the kernel (silently, not recorded) and return it JSON-decoded."""
        res = self.run("", silent=True, user_expressions={"v": f"__import__('json').dumps({expr})"})
        v = res.user_expressions["v"]
        if v["status"] != "ok":
            raise AssertionError(f"{expr!r} failed in kernel: {v.get('ename')}: {v.get('evalue')}")
        return json.loads(ast.literal_eval(v["data"]["text/plain"]))

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            try:
                self.km.shutdown_kernel(now=True)
            finally:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)


def set_order_under_seed(words: list[str] | set[str], seed: str) -> list[str]:
    """How a fresh Python started with ``PYTHONHASHSEED=seed`` iterates ``set(words)``."""
    out = subprocess.run([sys.executable, "-c", f"print(list(set({sorted(words)!r})))"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": seed})
    return ast.literal_eval(out.stdout)
