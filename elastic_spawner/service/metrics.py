"""Prometheus metrics of the migrator service, served on `<service prefix>metrics`.

Runs in the service process. One registry per service instance (not the global default
registry), so tests can run several services in one process and an embedding application's own
metrics never mix in. Names follow the Prometheus conventions: `elastic_spawner_` prefix, base
units in the name (`_seconds`, `_bytes`), `_total` for counters, and labels with a small, fixed
set of values (never user or server names: one series per user would not scale).

Durations come from what the service observes (checkpoint call) and from the kernels' own
reports (restore: the slowest kernel's `timings.total_s`, since kernels restore concurrently).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kernel_agent.server.manifest import lost_variables

# Checkpoints and restores of small notebooks take well under a second, big ones minutes.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SIZE_BUCKETS = tuple(float(2 ** p) for p in range(10, 41, 3))  # 1 KiB .. 1 TiB


class ServiceMetrics:
    """The metric objects, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.checkpoint_seconds = Histogram(
            "elastic_spawner_checkpoint_duration_seconds",
            "Wall time of a server checkpoint (all kernels) requested by the service.",
            buckets=DURATION_BUCKETS, registry=r)
        self.restore_seconds = Histogram(
            "elastic_spawner_restore_duration_seconds",
            "Time to restore a server's kernels after a migration (slowest kernel).",
            buckets=DURATION_BUCKETS, registry=r)
        self.migration_seconds = Histogram(
            "elastic_spawner_migration_duration_seconds",
            "Wall time of a whole migration, request to verified restore.",
            buckets=DURATION_BUCKETS, registry=r)
        self.checkpoint_size = Histogram(
            "elastic_spawner_checkpoint_size_bytes",
            "Serialized bytes of the shipped variables of one server checkpoint.",
            buckets=SIZE_BUCKETS, registry=r)
        self.shipped_bytes = Counter(
            "elastic_spawner_shipped_bytes",
            "Serialized bytes of shipped variables referenced by checkpoints.", registry=r)
        self.uploaded_bytes = Counter(
            "elastic_spawner_uploaded_bytes",
            "Bytes actually uploaded to the store (blobs the store did not have yet).", registry=r)
        self.variables = Counter(
            "elastic_spawner_variables",
            "Variables handled by checkpoints, by plan action: shipped, recomputed, imported "
            "(library modules, by name) or lost.",
            ["action"], registry=r)
        self.migrations = Counter(
            "elastic_spawner_migrations",
            "Migrations that ended, by outcome: verified, unverified or failed.",
            ["outcome"], registry=r)
        self.failures = Counter(
            "elastic_spawner_migration_failures",
            "Failed migrations by reason (the record's `reason`).", ["reason"], registry=r)
        self.in_progress = Gauge(
            "elastic_spawner_migrations_in_progress",
            "Migrations running now.", registry=r)
        self.drains = Counter(
            "elastic_spawner_drains_handled",
            "Node drains handled by the drain watcher (one per node).", registry=r)
        self.drain_servers = Counter(
            "elastic_spawner_drain_servers",
            "Servers of draining nodes, by the drain watcher's outcome (migrated, stopped, "
            "failed, released, gone).", ["outcome"], registry=r)
        self.retention_checkpoints = Counter(
            "elastic_spawner_retention_deleted_checkpoints",
            "Checkpoints deleted by retention, by level: server or kernel.", ["level"], registry=r)
        self.retention_blobs = Counter(
            "elastic_spawner_retention_deleted_blobs",
            "Unreferenced blobs deleted by garbage collection.", registry=r)
        self.retention_errors = Counter(
            "elastic_spawner_retention_errors",
            "Retention passes over a server's store that failed.", registry=r)
        for outcome in ("verified", "unverified", "failed"):
            self.migrations.labels(outcome=outcome)  # export zeros, so rates exist from the start
        for action in ("shipped", "recomputed", "imported", "lost"):
            self.variables.labels(action=action)
        for level in ("server", "kernel"):
            self.retention_checkpoints.labels(level=level)

    def observe_checkpoint(self, seconds: float, kernels: list[dict[str, Any]]) -> dict[str, int]:
        """Record one server checkpoint from its per-kernel summaries; returns the totals."""
        totals = {"bytes_shipped": 0, "bytes_uploaded": 0, "shipped": 0, "recomputed": 0,
                  "imported": 0, "lost": 0}
        for k in kernels:
            s = k.get("summary") or {}
            stats = s.get("stats") or {}
            totals["bytes_shipped"] += int(stats.get("bytes_shipped") or 0)
            totals["bytes_uploaded"] += int(stats.get("bytes_uploaded") or 0)
            totals["shipped"] += len(s.get("shipped") or [])
            totals["recomputed"] += len(s.get("recomputed") or [])
            totals["imported"] += len(s.get("imported") or [])
            totals["lost"] += len(lost_variables(s))  # variables, not co-variable groups
        self.checkpoint_seconds.observe(seconds)
        self.checkpoint_size.observe(totals["bytes_shipped"])
        self.shipped_bytes.inc(totals["bytes_shipped"])
        self.uploaded_bytes.inc(totals["bytes_uploaded"])
        for action in ("shipped", "recomputed", "imported", "lost"):
            self.variables.labels(action=action).inc(totals[action])
        return totals

    def observe_outcome(self, outcome: str, reason: str | None, seconds: float | None) -> None:
        self.migrations.labels(outcome=outcome).inc()
        if outcome == "failed":
            self.failures.labels(reason=reason or "error").inc()
        if seconds is not None:
            self.migration_seconds.observe(seconds)
