"""Checkpoint in one real kernel, restore in a fresh one: the helpers the engine tests share."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.kernels import Kernel


def run_all(k: Kernel, cells: list[str]) -> None:
    for c in cells:
        k.ok(c)


def checkpoint(k: Kernel, url: str, **kw) -> dict:
    """`kernel_agent.checkpoint(url, **kw)` in `k`; its summary."""
    args = "".join(f", {name}={value!r}" for name, value in kw.items())
    k.ok(f"import kernel_agent as _ka; _ckpt = _ka.checkpoint({url!r}{args})")
    return k.value("_ckpt")


def restore(k: Kernel, url: str, **kw) -> dict:
    """`kernel_agent.restore(url, **kw)` in `k`; its summary."""
    args = "".join(f", {name}={value!r}" for name, value in kw.items())
    k.ok(f"import kernel_agent as _ka; _rst = _ka.restore({url!r}{args})")
    return k.value("_rst")


def run_and_migrate(make_kernel: Callable[..., Kernel], url: str, cells: list[str], **ckpt_kw
                    ) -> tuple[Kernel, Kernel, dict, dict]:
    """Run `cells` in a fresh kernel A, checkpoint, restore in a fresh kernel B."""
    a = make_kernel()
    run_all(a, cells)
    c = checkpoint(a, url, **ckpt_kw)
    b = make_kernel()
    return a, b, c, restore(b, url)


def assert_verified(r: dict) -> None:
    bad = {n: v for n, v in r["variables"].items() if not v.get("verified")}
    assert r["verified"], f"not verified: {json.dumps(bad, indent=1)}; errors={r['errors']}"
