"""Resize a running server's CPU and memory: in place when the cluster can, else by migration.

Two halves, in two processes:

- the hub process: `SizePolicy`, `parse_size` and `apply_size_options` validate
  `user_options` (`{"cpu": 4, "memory": "16G"}` or `{"size": "large"}`) and set the spawner's
  `cpu_limit`/`cpu_guarantee`/`mem_limit`/`mem_guarantee` (ElasticKubeSpawner's default
  `apply_user_options`); invalid sizes are an HTTP 400 naming what is allowed;
- the migrator service / CLI: `resize_server` changes a running server. It first tries an
  in-place resize (`PATCH pods/<name>/resize`, Kubernetes 1.33+) when the change allows it
  (CPU any way, memory only up: lowering a memory limit restarts the container, which would kill
  the kernels). A 404/405/415/422 answer or an infeasible resize means "not here": it then
  migrates: checkpoint through the in-pod API, stop through the hub, start with the new
  `user_options` (the spawner validates them and the server restores the checkpoint).

The policy is checked *before* anything is stopped, so a bad size never costs a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SIZE_KEYS = ("cpu", "memory", "size")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MEM_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")
# Statuses that mean "this cluster cannot resize in place": no such subresource (404; older
# clusters), method not allowed (405), patch type not supported (415), change rejected (422).
IN_PLACE_UNSUPPORTED = (404, 405, 415, 422)


class SizeError(ValueError):
    """A requested size is malformed or outside the policy; the message says what is allowed."""


def parse_memory(value: Any) -> int:
    """Bytes from `16G`, `512M`, `1.5Gi`, `2048` (K/M/G/T are powers of 1024, as in JupyterHub)."""
    if isinstance(value, bool):
        raise SizeError(f"memory {value!r} is not a size")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise SizeError(f"memory {value!r} must be positive")
        return int(value)
    m = _MEM_RE.match(str(value))
    if not m:
        raise SizeError(f"memory {value!r} is not a size like '512M', '16G' or '1.5Gi'")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_cpu(value: Any) -> float:
    """CPUs from `4`, `0.5`, `"500m"`."""
    if isinstance(value, bool):
        raise SizeError(f"cpu {value!r} is not a number")
    text = str(value).strip()
    try:
        cpu = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise SizeError(f"cpu {value!r} is not a number like 2, 0.5 or '500m'") from None
    if not math.isfinite(cpu) or cpu <= 0:
        raise SizeError(f"cpu {value!r} must be a positive number")
    return cpu


def format_memory(nbytes: int) -> str:
    for suffix, unit in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    return str(nbytes)


def format_cpu(cpu: float) -> str:
    milli = round(cpu * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


@dataclass(frozen=True)
class Resources:
    """CPU (cores) and memory (bytes) of one server; requests = limits."""

    cpu: float
    memory: int

    def to_k8s(self) -> dict[str, dict[str, str]]:
        q = {"cpu": format_cpu(self.cpu), "memory": format_memory(self.memory)}
        return {"requests": dict(q), "limits": dict(q)}

    def __str__(self) -> str:
        return f"cpu={format_cpu(self.cpu)} memory={format_memory(self.memory)}"


@dataclass(frozen=True)
class SizePolicy:
    """What sizes may be asked for: ranges for free-form sizes, and named sizes."""

    cpu_min: float = 0.1
    cpu_max: float = 64.0
    memory_min: int = 128 * 1024**2
    memory_max: int = 256 * 1024**3
    sizes: Mapping[str, Resources] = field(default_factory=dict)

    @classmethod
    def from_traits(cls, cpu_range: Any, memory_range: Any, sizes: Mapping[str, Any]) -> SizePolicy:
        named = {}
        for name, spec in (sizes or {}).items():
            if not isinstance(spec, Mapping) or "cpu" not in spec or "memory" not in spec:
                raise SizeError(f"size {name!r} must be {{'cpu': n, 'memory': 'xG'}}, not {spec!r}")
            named[str(name)] = Resources(parse_cpu(spec["cpu"]), parse_memory(spec["memory"]))
        return cls(parse_cpu(cpu_range[0]), parse_cpu(cpu_range[1]),
                   parse_memory(memory_range[0]), parse_memory(memory_range[1]), named)

    def describe(self) -> str:
        text = (f"cpu between {format_cpu(self.cpu_min)} and {format_cpu(self.cpu_max)}, memory "
                f"between {format_memory(self.memory_min)} and {format_memory(self.memory_max)}")
        if self.sizes:
            text += "; or size one of " + ", ".join(sorted(self.sizes))
        return text


def parse_size(options: Mapping[str, Any] | None, policy: SizePolicy,
               current: Resources | None = None) -> Resources | None:
    """The resources `options` ask for, or None when they name no size at all.

    `{"size": name}` picks a named size; `{"cpu": n}` and/or `{"memory": "xG"}` are checked against
    the ranges (a missing one keeps `current`, and without `current` both are required).
    """
    options = options or {}
    if not any(k in options for k in SIZE_KEYS):
        return None
    if "size" in options:
        if "cpu" in options or "memory" in options:
            raise SizeError("give either 'size' or 'cpu'/'memory', not both")
        name = str(options["size"])
        if name not in policy.sizes:
            raise SizeError(f"unknown size {name!r}: allowed {policy.describe()}")
        return policy.sizes[name]
    if current is None and not ("cpu" in options and "memory" in options):
        raise SizeError("give both 'cpu' and 'memory' (e.g. {'cpu': 4, 'memory': '16G'})")
    cpu = parse_cpu(options["cpu"]) if "cpu" in options else current.cpu  # type: ignore[union-attr]
    memory = parse_memory(options["memory"]) if "memory" in options else current.memory  # type: ignore[union-attr]
    if not policy.cpu_min <= cpu <= policy.cpu_max or not policy.memory_min <= memory <= policy.memory_max:
        raise SizeError(f"cpu={format_cpu(cpu)} memory={format_memory(memory)} is outside the "
                        f"allowed sizes: {policy.describe()}")
    return Resources(cpu, memory)


def apply_size_options(spawner: Any, user_options: Mapping[str, Any] | None, policy: SizePolicy,
                       understood_elsewhere: Collection[str] = ()) -> None:
    """Set the spawner's CPU/memory from `user_options`; a bad size is an HTTP 400 saying why.

    `understood_elsewhere`: keys another part of the spawner reads (KubeSpawner's profile and
    profile options), which are not "ignored" however often a user sends them."""
    from tornado import web

    try:
        resources = parse_size(user_options, policy)
    except SizeError as e:
        raise web.HTTPError(400, f"Invalid size for {spawner._elastic_name}: {e}") from e
    other = sorted(set(user_options or {}) - set(SIZE_KEYS) - set(understood_elsewhere))
    if other:
        also = "".join(f", {k}" for k in sorted(understood_elsewhere))
        spawner.log.warning("Elastic: ignoring user_options %s for %s (understood: cpu, memory, "
                            "size%s)", ", ".join(other), spawner._elastic_name, also)
    if resources is None:
        return
    spawner.cpu_guarantee = spawner.cpu_limit = resources.cpu
    spawner.mem_guarantee = spawner.mem_limit = resources.memory
    spawner.log.info("Elastic: %s gets %s", spawner._elastic_name, resources)


def pod_resources(pod: Mapping[str, Any]) -> Resources | None:
    """The notebook container's current limits (None when it has none)."""
    from elastic_spawner.k8s.pods import notebook_container

    limits = (notebook_container(pod).get("resources") or {}).get("limits") or {}
    if "cpu" not in limits or "memory" not in limits:
        return None
    return Resources(parse_cpu(limits["cpu"]), parse_memory(_k8s_quantity_bytes(limits["memory"])))


def _k8s_quantity_bytes(q: Any) -> int:
    text = str(q)
    for suffix, mult in (("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("Ti", 1024**4),
                         ("k", 1000), ("M", 1000**2), ("G", 1000**3), ("T", 1000**4)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(float(text))


def in_place_allowed(old: Resources | None, new: Resources) -> tuple[bool, str]:
    """Whether an in-place resize can do this change without restarting the container."""
    if old is None:
        return False, "the pod has no CPU/memory limits to resize"
    if new.memory < old.memory:
        return False, "lowering memory restarts the container (the kernels would be lost)"
    return True, "cpu change and/or memory increase"


@dataclass
class ResizeResult:
    """What `resize_server` did."""

    user: str
    server: str
    mode: str  # "in-place" | "migrated" | "unchanged"
    resources: Resources
    checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)


class ResizeError(RuntimeError):
    """The resize could not be done; the message says what state the server is in."""


async def resize_in_place(core_api: Any, pod: Mapping[str, Any], new: Resources, *,
                          timeout: float = 30) -> tuple[bool, str]:
    """PATCH `pods/<name>/resize`; (True, "") once the kubelet applied it, else (False, why)."""
    from kubernetes_asyncio.client.rest import ApiException

    from elastic_spawner.k8s.pods import NOTEBOOK_CONTAINER

    md = pod["metadata"]
    body = {"spec": {"containers": [{"name": NOTEBOOK_CONTAINER, "resources": new.to_k8s()}]}}
    try:
        await core_api.patch_namespaced_pod_resize(md["name"], md["namespace"], body)
    except ApiException as e:
        if e.status in IN_PLACE_UNSUPPORTED:
            return False, f"in-place resize not available ({e.status} {e.reason})"
        raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await core_api.read_namespaced_pod(md["name"], md["namespace"], _preload_content=False)
        current = json.loads(await resp.read())
        for cond in (current.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodResizePending" and cond.get("reason") == "Infeasible":
                return False, f"in-place resize infeasible: {cond.get('message') or 'no room on the node'}"
        statuses = (current.get("status") or {}).get("containerStatuses") or []
        applied = next((s.get("resources") for s in statuses if s.get("name") == NOTEBOOK_CONTAINER), None)
        if applied and _same(applied.get("limits") or {}, new):
            return True, ""
        await asyncio.sleep(0.25)  # bounded poll: the kubelet applies the resize asynchronously
    return False, f"in-place resize not applied within {timeout:.0f}s"


def _same(limits: Mapping[str, Any], new: Resources) -> bool:
    try:
        return (abs(parse_cpu(limits["cpu"]) - new.cpu) < 1e-3
                and _k8s_quantity_bytes(limits["memory"]) == new.memory)
    except (KeyError, ValueError, SizeError):
        return False


async def resize_server(
    hub: Any,
    core_api: Any,
    namespace: str,
    user: str,
    server: str,
    options: Mapping[str, Any],
    policy: SizePolicy,
    *,
    in_place: bool = True,
    checkpoint_timeout: float = 120,
    start_timeout: float = 300,
) -> ResizeResult:
    """Give `user`'s server the size in `options`, keeping its session.

    `hub` is a `elastic_spawner.hubapi.HubClient` (token with `admin:servers` and
    `access:servers`), `core_api` a kubernetes_asyncio `CoreV1Api`.
    """
    from elastic_spawner.drain import find_server_pod
    from elastic_spawner.serverapi import ElasticServerClient

    name = f"{user}/{server}"
    pod = await find_server_pod(core_api, namespace, user, server)
    if pod is None:
        raise ResizeError(f"server {name} has no running pod in namespace {namespace}")
    old = pod_resources(pod.raw)
    try:
        new = parse_size(options, policy, current=old)
    except SizeError as e:
        raise ResizeError(f"cannot resize {name}: {e}") from e
    if new is None:
        raise ResizeError(f"cannot resize {name}: options {dict(options)} name no size "
                          "(give cpu and/or memory, or size)")
    if old == new:
        return ResizeResult(user, server, "unchanged", new)
    result = ResizeResult(user, server, "migrated", new)
    if in_place:
        allowed, why = in_place_allowed(old, new)
        if allowed:
            done, why = await resize_in_place(core_api, pod.raw, new)
            if done:
                log.info("Resized %s in place to %s", name, new)
                result.mode = "in-place"
                result.notes.append("resized in place; the hub keeps the previous user_options "
                                    "until the server is next started with new ones")
                return result
        log.info("Resizing %s to %s by migration: %s", name, new, why)
        result.notes.append(why)
    model = await hub.server_model(user, server)
    if not model or not model.get("ready"):
        raise ResizeError(f"server {name} is not running according to the hub ({model})")
    old_options = dict(model.get("user_options") or {})
    new_options = {k: v for k, v in old_options.items() if k not in SIZE_KEYS}
    if "size" in options:
        new_options["size"] = options["size"]
    else:  # the resolved size: a key not given keeps the pod's *current* value (maybe resized in place)
        new_options.update({"cpu": new.cpu, "memory": format_memory(new.memory)})
    if pod.url:
        ckpt = await ElasticServerClient(pod.url, hub.token).checkpoint(deadline=checkpoint_timeout)
        if not ckpt.complete:
            raise ResizeError(f"not resizing {name}: its checkpoint is incomplete ({ckpt.shortfall()}); "
                              "the server keeps running at its current size")
        result.checkpoint = ckpt.checkpoint
    await hub.stop_server(user, server)
    try:
        await hub.start_server(user, server, user_options=new_options, timeout=start_timeout)
    except Exception as e:
        log.error("Starting %s with %s failed (%s); starting it with its previous options", name,
                  new_options, e)
        await hub.start_server(user, server, user_options=old_options, timeout=start_timeout)
        raise ResizeError(f"{name} could not start with {new} ({e}); it was restarted at its "
                          "previous size with its session restored") from e
    log.info("Resized %s to %s by migration (checkpoint %s)", name, new, result.checkpoint)
    return result
