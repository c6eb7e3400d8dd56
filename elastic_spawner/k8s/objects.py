"""Manifests as plain dicts: the per-server PodDisruptionBudget, Secret-backed env, Events.

Runs in the hub (ElasticKubeSpawner) and the migrator service (drain watcher). kubernetes_asyncio
accepts these dicts as request bodies unchanged, and tests compare them without a cluster.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from elastic_spawner.k8s.labels import MANAGED_LABEL

_MAX_NAME = 253  # PDB names are DNS subdomains


def pdb_name(pod_name: str) -> str:
    """The PodDisruptionBudget name for a server's pod (stable across restarts of the server)."""
    name = f"elastic-{pod_name}"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(pod_name.encode()).hexdigest()[:8]
        name = name[: _MAX_NAME - 9] + "-" + digest
    return name


def make_pdb(
    name: str,
    selector: Mapping[str, str],
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A policy/v1 PDB that refuses every voluntary eviction of the one pod `selector` matches.

    `minAvailable: 1` rather than `maxUnavailable: 0`: singleuser pods are bare pods (no
    controller), and for those the disruption controller only evaluates an *integer*
    `minAvailable` from the pods it sees; `maxUnavailable` needs a controller's scale. Both end
    up refusing evictions, but `minAvailable: 1` does so by the documented rule rather than by
    an error path. The drain watcher deletes the PDB once the server has migrated (or the hold
    limit is reached), so a drain is held, never blocked forever.
    """
    if not selector:
        raise ValueError("a PDB needs a non-empty selector, else it would select every pod")
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": name,
            "labels": {**(labels or {}), MANAGED_LABEL: "true"},
            "annotations": dict(annotations or {}),
        },
        "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


def secret_env(secret_name: str, keys: Mapping[str, str]) -> list[dict[str, Any]]:
    """Container env entries reading each variable from `secret_name` (`{env: secret key}`).

    `optional: true`: a Secret without, say, a session token still starts the server; a missing
    credential shows up as a clear store error at checkpoint time, not as a pod stuck in
    CreateContainerConfigError. The values never appear in the pod spec.
    """
    return [
        {
            "name": env,
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key, "optional": True}},
        }
        for env, key in sorted(keys.items())
    ]


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:200] or "object"


def make_event(
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    *,
    event_type: str = "Normal",
    component: str = "elastic-spawner",
    now: datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about `involved` (a raw pod/node dict), as `kubectl describe` shows it.

    core/v1 rather than events.k8s.io/v1: it is what `kubectl describe` and most dashboards
    read, and the RBAC rule (`events` create in the core group) is the one z2jh already knows.
    """
    md = involved.get("metadata") or {}
    ns = md.get("namespace") or "default"  # events about cluster-scoped nodes go to default
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{_dns_label(md.get('name', 'object'))}.{uuid.uuid4().hex[:12]}",
            "namespace": ns,
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion") or "v1",
            "kind": involved.get("kind") or "Pod",
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
