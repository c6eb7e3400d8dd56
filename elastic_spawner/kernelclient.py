"""Drive kernels of a (hub-proxied) Jupyter server over REST + websocket, as a notebook frontend does.

Runs in the driver process (`elastic-spawner demo`, hub tests), never in the hub. Sessions are
created through the sessions API with a notebook path, so the server knows which notebook each
kernel belongs to (that is what a server checkpoint records and a restore reattaches by).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from elastic_spawner.localhub import http_json


class KernelError(RuntimeError):
    """A cell failed, or the kernel did not answer in time."""


@dataclass
class CellResult:
    """What one execute_request produced, as a frontend would show it."""

    status: str = "?"
    stdout: str = ""
    stderr: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    user_expressions: dict[str, Any] = field(default_factory=dict)

    @property
    def traceback(self) -> str:
        if self.error:
            return "\n".join(self.error.get("traceback") or [f"{self.error.get('ename')}: {self.error.get('evalue')}"])
        return self.stderr


class ServerClient:
    """REST calls to one single-user server (through the hub's proxy), with a user token."""

    def __init__(self, server_url: str, token: str) -> None:
        self.base = server_url.rstrip("/") + "/"
        self.token = token

    async def api(self, method: str, path: str, body: Any = None, *, timeout: float = 60,
                  check: bool = True) -> tuple[int, Any]:
        return await http_json(method, self.base + path, body, token=self.token, timeout=timeout,
                               check=check)

    async def put_notebook(self, path: str, notebook: dict[str, Any]) -> None:
        await self.api("PUT", f"api/contents/{quote(path)}", {"type": "notebook", "content": notebook})

    async def sessions(self) -> list[dict[str, Any]]:
        _, data = await self.api("GET", "api/sessions")
        return data or []

    async def kernel_for(self, path: str) -> str | None:
        """The id of the kernel attached to notebook `path`, if any."""
        for s in await self.sessions():
            if s.get("path") == path and s.get("kernel"):
                return s["kernel"]["id"]
        return None

    async def open_notebook(self, path: str, kernel_name: str = "python3") -> Kernel:
        """Create (or reuse) the session for `path` and connect to its kernel."""
        _, data = await self.api("POST", "api/sessions", {
            "path": path, "name": path.rsplit("/", 1)[-1], "type": "notebook",
            "kernel": {"name": kernel_name},
        })
        k = Kernel(self, data["kernel"]["id"])
        await k.connect()
        return k

    async def start_kernel(self, kernel_name: str = "python3", path: str | None = None) -> Kernel:
        """A kernel attached to no notebook (baselines, probes); `path`: the directory it runs
        in, relative to the server's root, as a notebook's kernel runs in the notebook's (the
        server's own working directory otherwise)."""
        body = {"name": kernel_name} if path is None else {"name": kernel_name, "path": path}
        _, data = await self.api("POST", "api/kernels", body)
        k = Kernel(self, data["id"])
        await k.connect()
        return k

    async def attach(self, kernel_id: str) -> Kernel:
        k = Kernel(self, kernel_id)
        await k.connect()
        return k


class Kernel:
    """One kernel's websocket channels; `run` executes a cell and collects its outputs."""

    def __init__(self, server: ServerClient, kernel_id: str) -> None:
        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        self.ws: WebSocketClientConnection | None = None

    async def connect(self, timeout: float = 60) -> None:
        url = self.server.base.replace("http", "ws", 1) + f"api/kernels/{self.id}/channels?session_id={self.session}"
        req = HTTPRequest(url, headers={"Authorization": f"token {self.server.token}"},
                          connect_timeout=timeout, request_timeout=timeout)
        self.ws = await websocket_connect(req, max_message_size=512 * 1024 * 1024)
        # kernel_info first: the server buffers until the kernel is ready to answer
        await self._request("kernel_info_request", {}, "shell", timeout=timeout)

    def _msg(self, msg_type: str, content: dict[str, Any], channel: str) -> dict[str, Any]:
        return {
            "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "driver",
                       "session": self.session, "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
            "buffers": [],
        }

    async def _recv(self, timeout: float) -> dict[str, Any]:
        assert self.ws is not None
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            raise KernelError(f"kernel {self.id}: websocket closed")
        if isinstance(raw, bytes):
            raise KernelError(f"kernel {self.id}: unexpected binary message")
        return json.loads(raw)

    async def _request(self, msg_type: str, content: dict[str, Any], channel: str,
                       timeout: float) -> dict[str, Any]:
        assert self.ws is not None
        msg = self._msg(msg_type, content, channel)
        await self.ws.write_message(json.dumps(msg))
        reply_type = msg_type.replace("_request", "_reply")
        while True:
            m = await self._recv(timeout)
            if m.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"] and m["msg_type"] == reply_type:
                return m

    async def run(self, code: str, *, silent: bool = False, store_history: bool = True,
                  user_expressions: dict[str, str] | None = None, timeout: float = 600) -> CellResult:
        """Execute `code`; waits for the execute_reply and for the kernel to go idle."""
        assert self.ws is not None
        msg = self._msg("execute_request", {
            "code": code, "silent": silent, "store_history": store_history and not silent,
            "user_expressions": user_expressions or {}, "allow_stdin": False, "stop_on_error": True,
        }, "shell")
        msg_id = msg["header"]["msg_id"]
        await self.ws.write_message(json.dumps(msg))
        res = CellResult()
        idle = replied = False
        while not (idle and replied):
            m = await self._recv(timeout)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t, c = m["msg_type"], m["content"]
            if t == "stream":
                if c.get("name") == "stdout":
                    res.stdout += c.get("text", "")
                else:
                    res.stderr += c.get("text", "")
            elif t in ("display_data", "execute_result"):
                res.outputs.append(c)
            elif t == "error":
                res.error = c
            elif t == "status" and c.get("execution_state") == "idle":
                idle = True
            elif t == "execute_reply":
                res.status = c.get("status", "?")
                res.user_expressions = c.get("user_expressions") or {}
                replied = True
        return res

    async def ok(self, code: str, **kw: Any) -> CellResult:
        """Run a cell that must succeed; raise with the kernel's traceback otherwise."""
        res = await self.run(code, **kw)
        if res.status != "ok":
            raise KernelError(f"cell failed in kernel {self.id}: {code[:120]!r}\n{res.traceback}")
        return res

    async def eval_json(self, expr: str, timeout: float = 600) -> Any:
        """Evaluate `expr` silently (not recorded by the agent) and return it JSON-decoded."""
        res = await self.run("", silent=True, timeout=timeout,
                             user_expressions={"v": f"__import__('json').dumps({expr})"})
        v = res.user_expressions.get("v") or {}
        if v.get("status") != "ok":
            raise KernelError(f"{expr[:80]!r} failed in kernel {self.id}: {v.get('ename')}: {v.get('evalue')}")
        import ast

        return json.loads(ast.literal_eval(v["data"]["text/plain"]))

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    async def shutdown(self) -> None:
        await self.close()
        await self.server.api("DELETE", f"api/kernels/{self.id}", check=False)
