"""Fault-injection helpers for real kernels: the pause-before-commit hook, kill -9, bounded polls.

Used by tests/crash and tests/security. The pause hook is the engine's documented test hook
(``kernel_agent.checkpointing``: ``ELASTIC_FAULT_PAUSE_BEFORE_COMMIT=<path>`` makes a checkpoint
write ``<path>.reached`` after its uploads and wait for ``<path>.release`` before committing).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kernels import Kernel

PAUSE_ENV = "ELASTIC_FAULT_PAUSE_BEFORE_COMMIT"


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Bounded poll: the predicate's first truthy value, or AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class PauseHook:
    """The engine's pause-before-commit hook, driven from the test."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.reached = Path(str(base) + ".reached")
        self.release_file = Path(str(base) + ".release")

    def env(self) -> dict[str, str]:
        return {PAUSE_ENV: str(self.base)}

    def disarm(self) -> None:
        """Let checkpoints pass through (the hook is a no-op while the release file exists)."""
        self.release_file.write_text("go")

    def arm(self) -> None:
        """Pause the next checkpoint that reaches the commit."""
        self.reached.unlink(missing_ok=True)
        self.release_file.unlink(missing_ok=True)

    def wait_reached(self, timeout: float = 120.0) -> str:
        return wait_for(lambda: self.reached.exists() and self.reached.read_text(), timeout,
                        f"a checkpoint to reach the commit ({self.reached})")

    def release(self) -> None:
        self.release_file.write_text("go")


def kernel_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a kernel, plus `extra`. Background rounds run without
    the overhead budget's spacing (ELASTIC_BACKGROUND_BUDGET=0), so tests need not wait for it."""
    env = dict(os.environ)
    env.setdefault("ELASTIC_BACKGROUND_BUDGET", "0")
    env.update(extra)
    return env


def start_kernel(cwd: Path, env: dict[str, str] | None = None, agent: bool = True) -> Kernel:
    k = Kernel(cwd=str(cwd), env=env or kernel_env())
    if agent:
        k.ok("%load_ext kernel_agent")
    return k


def send(k: Kernel, code: str) -> str:
    """Start executing `code` without waiting for it (the kernel may be killed meanwhile)."""
    return k.kc.execute(code)


def reply(k: Kernel, msg_id: str, timeout: float = 120.0) -> dict:
    """The execute_reply content for `msg_id` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        msg = k.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]


def kernel_pid(k: Kernel) -> int:
    prov = k.km.provisioner
    proc = getattr(prov, "process", None)
    pid = getattr(proc, "pid", None) or getattr(prov, "pid", None)
    assert pid, "cannot find the kernel's pid"
    return int(pid)


def kill9(k: Kernel) -> None:
    """SIGKILL the kernel process (no cleanup, no atexit: what an OOM kill does)."""
    pid = kernel_pid(k)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not k.km.is_alive(), 30, "the killed kernel to die")


def checkpoint(k: Kernel, url: str, **kw: Any) -> dict:
    args = "".join(f", {name}={value!r}" for name, value in kw.items())
    k.ok(f"import kernel_agent as _ka; _ckpt = _ka.checkpoint({url!r}{args})")
    return k.value("_ckpt")


def restore(k: Kernel, url: str, **kw: Any) -> dict:
    args = "".join(f", {name}={value!r}" for name, value in kw.items())
    k.ok(f"import kernel_agent as _ka; _rst = _ka.restore({url!r}{args})")
    return k.value("_rst")


def try_restore(k: Kernel, url: str, **kw: Any) -> Any:
    """Run a restore that may fail; the ExecResult (error in .error)."""
    args = "".join(f", {name}={value!r}" for name, value in kw.items())
    return k.run(f"import kernel_agent as _ka; _rst = _ka.restore({url!r}{args})")


def store_ids(url: str, **options: Any) -> list[str]:
    """Committed checkpoint ids of a store, oldest first (read from the test process)."""
    from kernel_agent.store import open_store

    return [c.id for c in open_store(url, **options).list_checkpoints()]


def manifest_doc(url: str, cid: str, **options: Any) -> dict:
    """A checkpoint's manifest as JSON (unwrapping a signed envelope, without checking it)."""
    from kernel_agent.store import open_store

    doc = json.loads(open_store(url, **options).get_manifest(cid))
    if "hmac_sha256" in doc:
        doc = json.loads(doc["manifest"])
    return doc


def assert_verified(r: dict) -> None:
    bad = {n: v for n, v in r["variables"].items() if not v.get("verified")}
    assert r["verified"], f"not verified: {json.dumps(bad, indent=1)}; errors={r['errors']}"
