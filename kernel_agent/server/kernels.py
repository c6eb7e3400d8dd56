"""Talking to kernels from the server: load the agent at start-up, run agent calls silently.

Runs in the single-user Jupyter server process, on its event loop. Never imports IPython: the
kernel is reached through jupyter_client only, as a second client on the kernel's shell channel.

How every kernel gets the agent
-------------------------------
`install_agent_injection` wraps the server's `MappingKernelManager.start_kernel` (instance
attribute) so that a kernel whose spec is an IPython kernel (language ``python`` and an argv that
runs ``ipykernel``) is launched with ``--IPKernelApp.extra_extensions=kernel_agent`` appended to its
command line (jupyter_client's ``extra_arguments``). Why this way:

- every path that starts a kernel in the server (``POST api/kernels``, ``POST api/sessions``,
  other extensions, our own restore) goes through ``kernel_manager.start_kernel``;
- ``extra_arguments`` are kept in the kernel manager's launch arguments, so a kernel *restart*
  (user "Restart kernel", auto-restart after a crash) loads the agent again;
- ``extra_extensions`` adds to ``IPKernelApp.extensions`` instead of replacing it, so a user's own
  ``c.IPKernelApp.extensions`` in an IPython profile keeps working;
- the agent is loaded by IPython before the first cell runs, so no cell escapes the monitor;
- non-Python kernels (R, Julia, ...) are started untouched.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import logging
import os
import queue
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

AGENT_EXTENSION = "kernel_agent"
AGENT_ARGUMENT = f"--IPKernelApp.extra_extensions={AGENT_EXTENSION}"


class KernelCallError(Exception):
    """An agent call in a kernel failed or timed out; the message is meant for the user."""


def is_ipython_spec(spec: Any) -> bool:
    """True when a kernel spec launches ipykernel (so IPython extensions can be loaded)."""
    language = (getattr(spec, "language", "") or "").lower()
    argv = " ".join(getattr(spec, "argv", []) or [])
    return language == "python" and "ipykernel" in argv


async def get_kernel_spec(kernel_spec_manager: Any, name: str) -> Any:
    """The kernel spec `name`, or None when unknown (start_kernel reports that better)."""
    try:
        spec = kernel_spec_manager.get_kernel_spec(name)
        return await spec if asyncio.iscoroutine(spec) else spec
    except Exception:  # noqa: BLE001
        return None


def install_agent_injection(
    kernel_manager: Any, kernel_spec_manager: Any, logger: logging.Logger | None = None,
    *, hash_seed: str | None = None,
) -> None:
    """Make `kernel_manager` launch every IPython kernel with the agent extension loaded.

    With `hash_seed`, the kernel's ``PYTHONHASHSEED`` is set to it unless its environment has
    one (``KernelAgentApp.kernel_hash_seed``: replayed cells then order string sets alike).
    """
    logger = logger or log
    if getattr(kernel_manager, "_kernel_agent_injected", False):
        return
    original: Callable[..., Awaitable[str]] = kernel_manager.start_kernel

    @functools.wraps(original)
    async def start_kernel(*args: Any, **kwargs: Any) -> str:
        kernel_id = kwargs.get("kernel_id")
        if kernel_id is None or kernel_id not in kernel_manager:
            name = kwargs.get("kernel_name") or kernel_manager.default_kernel_name
            spec = await get_kernel_spec(kernel_spec_manager, name)
            if spec is not None and is_ipython_spec(spec):
                extra = list(kwargs.get("extra_arguments") or [])
                if AGENT_ARGUMENT not in extra:
                    extra.append(AGENT_ARGUMENT)
                kwargs["extra_arguments"] = extra
                if hash_seed is not None:
                    # jupyter_client launches with `env` instead of os.environ when given
                    env = dict(kwargs.get("env") or os.environ)
                    env.setdefault("PYTHONHASHSEED", hash_seed)
                    kwargs["env"] = env
            elif spec is not None:
                logger.info(
                    "kernel_agent: kernel spec %r is not an IPython kernel; starting it without "
                    "the agent (it cannot be checkpointed)",
                    name,
                )
        return await original(*args, **kwargs)

    kernel_manager.start_kernel = start_kernel
    kernel_manager._kernel_agent_injected = True


def agent_call_expression(function: str, kwargs: dict[str, Any]) -> str:
    """A user expression calling ``kernel_agent.<function>(**kwargs)``, returning JSON text.

    Arguments travel as one JSON string literal, so no value can inject code.
    """
    payload = json.dumps(kwargs)
    return (
        "__import__('json').dumps(__import__('kernel_agent')."
        f"{function}(**__import__('json').loads({payload!r})), default=str)"
    )


@dataclass
class CallResult:
    """What an agent call returned, or why it failed."""

    value: dict | None = None
    error: str | None = None


async def call_agent(
    km: Any, function: str, kwargs: dict[str, Any], *, timeout: float, poll: float = 1.0
) -> CallResult:
    """Run ``kernel_agent.<function>(**kwargs)`` in the kernel of `km`, silently.

    Silent (``silent=True``, ``store_history=False``, empty code, the call in
    ``user_expressions``): the execution count does not move, nothing is printed in the
    notebook, and the monitor does not record it as a cell. The request queues behind a cell the
    user may have started meanwhile; `timeout` bounds the whole wait. On timeout the call keeps
    running in the kernel (it is never interrupted); the caller reports it.
    """
    process = kernel_process(km)
    client = km.client()
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        msg_id = client.execute(
            "",
            silent=True,
            store_history=False,
            user_expressions={"r": agent_call_expression(function, kwargs)},
            allow_stdin=False,
        )
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return CallResult(
                    error=f"kernel_agent.{function} did not finish within {timeout:.0f}s; it may "
                    "still be running in the kernel (raise the timeout for large sessions)"
                )
            try:
                reply = await client.get_shell_msg(timeout=min(poll, remaining))
            except queue.Empty:
                if not await km.is_alive():
                    return CallResult(error=f"the kernel died during kernel_agent.{function}")
                if kernel_process(km) != process:
                    # killed and restarted between two polls (the auto-restarter, a user's
                    # restart): the process that had the request is gone, no reply will come
                    return CallResult(
                        error=f"the kernel was restarted during kernel_agent.{function} (its "
                        "process died or was replaced): the state it had is gone"
                    )
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
        return _parse_reply(function, reply["content"])
    finally:
        client.stop_channels()


def _explain(function: str, error: dict[str, Any]) -> str:
    """An agent call's exception as a user reads it: what happened, then the raw error."""
    ename, evalue = error.get("ename") or "Error", error.get("evalue") or ""
    raw = f"{ename}: {evalue}".strip().rstrip(":")
    if ename == "KeyboardInterrupt":
        return (f"kernel_agent.{function} was interrupted (the kernel was interrupted or "
                f"restarted while it ran) ({raw})")
    if ename in ("ModuleNotFoundError", "ImportError") and AGENT_EXTENSION in evalue:
        return (f"this kernel cannot import kernel_agent: its kernel spec runs a Python "
                f"without elastic-spawner installed; install it there to checkpoint this kernel ({raw})")
    return raw


def kernel_process(km: Any) -> tuple[int, Any]:
    """Identity of the kernel's current process: changes when the kernel is restarted.

    jupyter_client makes a new provisioner for every (re)start; its ``pid`` tells processes apart.
    """
    provisioner = getattr(km, "provisioner", None)
    return id(provisioner), getattr(provisioner, "pid", None)


def _parse_reply(function: str, content: dict[str, Any]) -> CallResult:
    if content.get("status") != "ok":
        return CallResult(error=_explain(function, content))
    expr = content.get("user_expressions", {}).get("r", {})
    if expr.get("status") != "ok":
        return CallResult(error=_explain(function, expr))
    try:
        value = json.loads(ast.literal_eval(expr["data"]["text/plain"]))
    except (KeyError, ValueError, SyntaxError) as e:
        return CallResult(error=f"kernel_agent.{function} returned an unreadable result: {e}")
    if not isinstance(value, dict):
        return CallResult(error=f"kernel_agent.{function} returned {type(value).__name__}, not a dict")
    return CallResult(value=value)


async def wait_until_idle(km: Any, timeout: float, poll: float = 0.2) -> str:
    """Wait while the kernel is busy (as the server tracks it), up to `timeout` seconds.

    Returns the last execution state seen: ``"busy"`` means it stayed busy for the whole
    timeout. The kernel is never interrupted here: a cell the user is running is theirs.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = getattr(km, "execution_state", None) or "unknown"
        if state != "busy" or time.monotonic() >= deadline:
            return state
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
