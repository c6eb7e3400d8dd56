"""Plain data of the migrator service: what a caller asks for, and what a migration did.

Runs in the service process (and the `elastic-spawner` CLI reads the same shapes). REST bodies
are parsed here, into dataclasses with explicit to/from-dict, so a malformed request fails at
the door with a message saying which field is wrong and what it should look like, never halfway
through a migration.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

# Memory sizes as JupyterHub users write them (Spawner.mem_limit): K, M, G, T are powers of
# 1024, like Ki, Mi, Gi, Ti; the spawners (elastic_spawner.resize) read them the same way, so
# `--memory 16G` means the same thing to the service, the CLI and the pod.
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T|k)?$")
_MEMORY_UNITS = {
    None: 1, "k": 2**10, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m)?$")
# Label keys: optional DNS prefix + name; values: up to 63 chars (Kubernetes validation rules).
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NODE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")

MIGRATE_FIELDS = ("node", "node_selector", "cpu", "memory", "reason", "accept_lost")
PHASES = ("queued", "checkpointing", "stopping", "starting", "restoring", "done")
OUTCOMES = ("verified", "unverified", "failed")


class RequestError(ValueError):
    """A request the service refuses; `status` and `reason` go into the JSON error body."""

    def __init__(self, message: str, *, status: int = 400, reason: str = "bad-request") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def utcnow() -> str:
    """Current time, ISO 8601 UTC (a module function so tests can move time)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def parse_memory(value: Any) -> int:
    """Bytes from `4G`, `512Mi`, `1.5Gi` or an integer; RequestError saying the accepted forms."""
    if isinstance(value, bool):
        raise RequestError(f"memory = {value!r}: give a size such as \"4G\" or \"512Mi\"",
                           reason="invalid-size")
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str) and (m := _MEMORY_RE.match(value.strip())):
        n = float(m.group(1)) * _MEMORY_UNITS[m.group(2)]
    else:
        raise RequestError(
            f"memory = {value!r} is not a size: use a number of bytes or a number with a unit "
            "(K, M, G, T, or Ki, Mi, Gi, Ti), e.g. \"4G\" or \"512Mi\"", reason="invalid-size")
    return int(n)


def parse_cpu(value: Any) -> float:
    """CPUs from `2`, `0.5`, `"1500m"`; RequestError saying the accepted forms."""
    if isinstance(value, bool):
        raise RequestError(f"cpu = {value!r}: give a number of CPUs such as 2 or \"500m\"",
                           reason="invalid-size")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and (m := _CPU_RE.match(value.strip())):
        n = float(m.group(1))
        return n / 1000 if m.group(2) else n
    raise RequestError(
        f"cpu = {value!r} is not a CPU count: use a number (2, 0.5) or millicores (\"500m\")",
        reason="invalid-size")


def format_memory(nbytes: int) -> str:
    """A memory size as Kubernetes accepts it, exact (`4Gi`, `1500Mi`, or bytes)."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if nbytes % _MEMORY_UNITS[unit] == 0:
            return f"{nbytes // _MEMORY_UNITS[unit]}{unit}"
    return str(nbytes)


def parse_node_selector(value: Any) -> dict[str, str]:
    """`{"k": "v"}` or `["k=v", ...]` -> dict, with Kubernetes label syntax checked."""
    if isinstance(value, list):
        pairs: dict[str, str] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise RequestError(
                    f"node_selector item {item!r}: write it as KEY=VALUE, e.g. "
                    "\"topology.kubernetes.io/zone=eu-west-1a\"", reason="invalid-selector")
            k, _, v = item.partition("=")
            pairs[k.strip()] = v.strip()
        value = pairs
    if not isinstance(value, dict):
        raise RequestError(
            f"node_selector = {value!r}: give an object of label: value, e.g. "
            "{\"node-pool\": \"big\"}", reason="invalid-selector")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _LABEL_KEY_RE.match(k) or len(k) > 317:
            raise RequestError(f"node_selector key {k!r} is not a valid Kubernetes label key",
                               reason="invalid-selector")
        if not isinstance(v, str) or not _LABEL_VALUE_RE.match(v):
            raise RequestError(
                f"node_selector value {v!r} for {k!r} is not a valid label value (at most 63 "
                "letters, digits, '-', '_', '.', starting and ending alphanumeric)",
                reason="invalid-selector")
        out[k] = v
    return out


@dataclass
class MigrationRequest:
    """What a caller asked for: move a server, optionally to a node / selector, optionally resized."""

    user: str
    server: str = ""
    node: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    cpu: float | None = None
    memory: int | None = None  # bytes
    reason: str = ""  # free text recorded in the history ("node drain", "resize", ...)
    # go on when every kernel saved but some variables cannot be restored (named in the
    # record); by default such a migration stops before the server does
    accept_lost: bool = False

    @classmethod
    def from_body(cls, user: str, server: str, body: Any, *, resize: bool = False,
                  max_cpu: float = 0, max_memory: int = 0) -> MigrationRequest:
        """Validate a REST body; `resize` requires cpu or memory. Limits of 0 mean no limit."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object, e.g. "
                               "{\"cpu\": 2, \"memory\": \"4G\"}", reason="malformed-json")
        unknown = sorted(set(body) - set(MIGRATE_FIELDS))
        if unknown:
            raise RequestError(
                f"unknown field(s) {', '.join(unknown)}: known are {', '.join(MIGRATE_FIELDS)}",
                reason="unknown-field")
        req = cls(user=user, server=server)
        node = body.get("node")
        if node is not None:
            if not isinstance(node, str) or not _NODE_RE.match(node):
                raise RequestError(f"node = {node!r}: give a node name such as \"node-b\"",
                                   reason="invalid-node")
            req.node = node
        if body.get("node_selector") is not None:
            req.node_selector = parse_node_selector(body["node_selector"])
        if body.get("cpu") is not None:
            cpu = parse_cpu(body["cpu"])
            if not cpu > 0:
                raise RequestError(f"cpu = {body['cpu']!r}: must be more than 0",
                                   reason="invalid-size")
            if max_cpu and cpu > max_cpu:
                raise RequestError(f"cpu = {body['cpu']!r} is more than the limit of {max_cpu:g} "
                                   "(ElasticService.max_cpu)", reason="invalid-size")
            req.cpu = cpu
        if body.get("memory") is not None:
            mem = parse_memory(body["memory"])
            if mem < 2**20:
                raise RequestError(f"memory = {body['memory']!r} is less than 1Mi: did you forget "
                                   "the unit (e.g. \"4G\")?", reason="invalid-size")
            if max_memory and mem > max_memory:
                raise RequestError(f"memory = {body['memory']!r} is more than the limit of "
                                   f"{format_memory(max_memory)} (ElasticService.max_memory)",
                                   reason="invalid-size")
            req.memory = mem
        reason = body.get("reason")
        if reason is not None:
            if not isinstance(reason, str) or len(reason) > 200:
                raise RequestError("reason must be a short string (at most 200 characters)")
            req.reason = reason
        accept = body.get("accept_lost")
        if accept is not None:
            if not isinstance(accept, bool):
                raise RequestError(f"accept_lost = {accept!r}: give true or false")
            req.accept_lost = accept
        if resize and req.cpu is None and req.memory is None:
            raise RequestError("a resize needs \"cpu\" and/or \"memory\", e.g. "
                               "{\"cpu\": 4, \"memory\": \"16G\"}", reason="invalid-size")
        return req

    def user_options(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        """The `user_options` for the new start: the previous ones, updated with this request.

        A plain migration drops the previous "node", so the spawner picks another node rather
        than the one the server is leaving; sizes and selectors not mentioned are kept.
        """
        opts = dict(previous or {})
        opts.pop("node", None)
        if self.node:
            opts["node"] = self.node
        if self.node_selector:
            opts["node_selector"] = dict(self.node_selector)
        if self.cpu is not None:
            opts["cpu"] = self.cpu
        if self.memory is not None:
            opts["memory"] = format_memory(self.memory)
        return opts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.memory is not None:
            d["memory"] = format_memory(self.memory)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MigrationRequest:
        mem = d.get("memory")
        return cls(user=d["user"], server=d.get("server", ""), node=d.get("node"),
                   node_selector=dict(d.get("node_selector") or {}), cpu=d.get("cpu"),
                   memory=parse_memory(mem) if mem is not None else None,
                   reason=d.get("reason", ""), accept_lost=bool(d.get("accept_lost", False)))


def new_migration_id() -> str:
    """Sortable by creation time, unique: `20250102T030405123Z-1a2b3c`."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")[:-3] + "Z-" + secrets.token_hex(3)


@dataclass
class Migration:
    """One migration's record: kept in memory, persisted at every phase change.

    `phase` is where it is (or stopped); `outcome` is set once it ends: "verified" (every
    kernel restored and its values checked equal), "unverified" (the server runs again but
    not every kernel came back verified; `error` says which), "failed" (`reason` says where).
    """

    id: str
    request: MigrationRequest
    requested_by: str = ""
    phase: str = "queued"
    outcome: str | None = None
    reason: str | None = None  # failure reason: a short word for metrics and scripts
    error: str | None = None  # what went wrong, for people
    created: str = field(default_factory=utcnow)
    updated: str = field(default_factory=utcnow)
    checkpoint: str | None = None  # the pointer the service's checkpoint produced
    restored_from: str | None = None  # the pointer the new server restored
    node_before: str | None = None
    node_after: str | None = None
    user_options: dict[str, Any] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    stats: dict[str, Any] = field(default_factory=dict)  # bytes, shipped, recomputed, ...
    kernels: list[dict[str, Any]] = field(default_factory=list)  # per-kernel restore outcome
    events: list[dict[str, Any]] = field(default_factory=list)  # [{time, phase, message}]
    attempts: int = 0  # runs of this record (1 + resumes after a service restart)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def server_label(self) -> str:
        return f"{self.request.user}/{self.request.server}"

    def note(self, message: str) -> None:
        self.updated = utcnow()
        self.events.append({"time": self.updated, "phase": self.phase, "message": message})
        if len(self.events) > 200:
            del self.events[1:101]  # keep the first event and the recent ones

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["request"] = self.request.to_dict()
        d["user"] = self.request.user
        d["server"] = self.request.server
        d["finished"] = self.finished
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Migration:
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in d.items() if k in known and k != "request"}
        return cls(request=MigrationRequest.from_dict(d["request"]), **kwargs)
