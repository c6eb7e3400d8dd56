"""Shared driver for the adversarial migration tests (tests/engine/test_adversarial_*.py).

Every scenario runs its cells in a real kernel A, checkpoints it twice (the optimal plan, and
`deadline_s=0.0`, which makes the planner ship only what it must and so restores by replay),
and restores each checkpoint into its own fresh kernel B. The helpers then hold the restore to
the product promise: every variable comes back verified, or it is named in `lost` with the
reason — never a value that differs while the restore says nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.kernels import Kernel

PLANS = {"optimal": "", "replay": ", deadline_s=0.0"}


@dataclass
class Restored:
    plan: str
    kernel: Kernel
    checkpoint: dict
    restore: dict


def migrate_both(make_kernel: Callable[..., Kernel], root: Path, cells: list[str],
                 between: Callable[[int], None] | None = None) -> tuple[Kernel, dict[str, Restored]]:
    """Run `cells` in kernel A (`between(i)` after cell i), then checkpoint and restore both plans.

    The B kernels are only started, they run nothing before their restore.
    """
    # one after the other: kernels started at once race for the same free ZMQ ports
    a, *fresh = [make_kernel() for _ in range(1 + len(PLANS))]
    for i, cell in enumerate(cells):
        res = a.run(cell)
        assert res.ok or "1/0" in cell, f"cell failed: {cell!r}: {res.error and res.error['evalue']}"
        if between is not None:
            between(i)
    out: dict[str, Restored] = {}
    for plan, kw in PLANS.items():
        url = (root / f"store-{plan}").as_uri()
        a.ok(f"import kernel_agent as _ka; _c = _ka.checkpoint({url!r}{kw})")
        b = fresh.pop()
        b.ok(f"import kernel_agent as _ka; _r = _ka.restore({url!r})")
        out[plan] = Restored(plan, b, a.value("_c"), b.value("_r"))
    return a, out


def assert_verified(r: Restored) -> None:
    bad = {n: v for n, v in r.restore["variables"].items() if not v.get("verified")}
    assert r.restore["verified"], (
        f"{r.plan} plan: not verified: {json.dumps(bad, indent=1)}; errors={r.restore['errors']}")


def assert_never_silent(r: Restored, expected: dict[str, object], a: Kernel | None = None) -> None:
    """Each name is either verified and equal to `expected`, or listed as lost with a reason."""
    variables = r.restore["variables"]
    for name, want in expected.items():
        v = variables.get(name)
        assert v is not None, f"{r.plan} plan: {name} is missing from the restore summary"
        if v.get("verified"):
            assert r.kernel.value(name) == want, f"{r.plan} plan: {name} verified but wrong"
        else:
            assert v["action"] == "lost" and v.get("detail"), (
                f"{r.plan} plan: {name} neither verified nor named as lost: {v}")
            assert name in r.restore["lost"]
