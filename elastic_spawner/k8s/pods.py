"""Reading what the migrator needs out of a raw single-user pod (a dict from the API).

Runs in the migrator service (drain watcher, resize). Pure functions: the pod is the one source
of truth for where the server listens and whose it is, so the watcher needs no hub state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elastic_spawner.k8s.labels import (
    MANAGED_LABEL,
    PDB_ANNOTATION,
    SERVERNAME_ANNOTATION,
    USERNAME_ANNOTATION,
)

NOTEBOOK_CONTAINER = "notebook"


@dataclass(frozen=True)
class ServerPod:
    """One elastic server as seen from its pod."""

    namespace: str
    pod_name: str
    user: str
    server: str  # "" for the default server
    node: str
    url: str | None  # http://<podIP>:<port><prefix>, None until the pod has an IP
    pdb: str | None
    raw: Mapping[str, Any]

    @property
    def key(self) -> str:
        return f"{self.user}/{self.server}"


def notebook_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return next((c for c in containers if c.get("name") == NOTEBOOK_CONTAINER), containers[0])


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for e in container.get("env") or []:
        if e.get("name") == name and "value" in e:
            return str(e["value"])
    return None


def server_url(pod: Mapping[str, Any]) -> str | None:
    """Where the hub-side caller reaches the server's own API: pod IP, container port, prefix."""
    ip = (pod.get("status") or {}).get("podIP")
    container = notebook_container(pod)
    ports = container.get("ports") or []
    if not ip or not ports:
        return None
    prefix = _env(container, "JUPYTERHUB_SERVICE_PREFIX") or "/"
    return f"http://{ip}:{ports[0]['containerPort']}{prefix}"


def server_pod(pod: Mapping[str, Any]) -> ServerPod | None:
    """The `ServerPod` of an elastic server's pod; None for any other pod."""
    md = pod.get("metadata") or {}
    if (md.get("labels") or {}).get(MANAGED_LABEL) != "true":
        return None
    annotations = md.get("annotations") or {}
    user = annotations.get(USERNAME_ANNOTATION)
    if not user:
        return None
    return ServerPod(
        namespace=md.get("namespace") or "default",
        pod_name=md["name"],
        user=user,
        server=annotations.get(SERVERNAME_ANNOTATION) or "",
        node=(pod.get("spec") or {}).get("nodeName") or "",
        url=server_url(pod),
        pdb=annotations.get(PDB_ANNOTATION),
        raw=pod,
    )


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Running, not terminating, every container ready (KubeSpawner's `is_pod_running`)."""
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and all(cs.get("ready") for cs in status.get("containerStatuses") or [{}])
    )
