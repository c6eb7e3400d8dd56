"""A "process kubelet" (and a tiny scheduler) for the emulated cluster.

Why: KubeSpawner and the product only see pods through the API, so the rig needs something that
behaves like the node side of Kubernetes -- schedule, start, report status, run preStop hooks
within the grace period, SIGTERM, SIGKILL, remove the pod -- without containers. It talks to the
API server only over HTTP, like a real kubelet, using the same field selectors
(``spec.nodeName=`` for the scheduler, ``spec.nodeName=<node>`` per node), ``pods/binding``,
``pods/status`` and a final grace-0 DELETE.

What a pod becomes: the *first* container's ``command + args`` run as a local process (its own
process group) with the container's env (``value``, ``valueFrom`` secretKeyRef/configMapKeyRef/
fieldRef, ``envFrom``, ``$(VAR)`` expansion), in ``<workdir>/<node>/<namespace>/<pod>-<uid8>/``
(``workingDir`` is mapped *under* that directory, ``HOME`` defaults to it). The "image" is this
virtualenv: ``PATH`` starts with the directory of ``sys.executable``; nothing else of the host
environment leaks in except what ``base_env`` adds. ``podIP`` and ``hostIP`` are 127.0.0.1.

Ports: every pod shares 127.0.0.1, so every pod must listen on a distinct port. The kubelet does
not rewrite anything: the pod's declared ``containerPort`` is the port. With KubeSpawner, set
``spawner.port`` to a free port per server (tests: ``free_port()`` from conftest; a hub config:
a ``pre_spawn_hook`` that sets ``spawner.port``). KubeSpawner then puts that port into
``containerPort`` and ``JUPYTERHUB_SERVICE_URL``, and connects to ``podIP:port``. A pod whose
declared port is already held by another pod of this kubelet is not started: its container stays
``waiting`` with reason ``PortConflict`` and a Warning event says why.

Readiness: a ``readinessProbe`` (httpGet, tcpSocket, exec) is polled every 0.2 s until it passes
once; without one, the first ``containerPort`` must accept a TCP connection; a container with no
ports is ready at once. Readiness is never re-checked after that.

Termination (``deletionTimestamp`` seen): preStop (exec runs locally with the pod env; httpGet
goes to 127.0.0.1:port/path) bounded by the grace period, then SIGTERM to the process group, then
SIGKILL at the deadline; the SIGTERM window is at least 2 s as in the real kubelet
(``minimumGracePeriodInSeconds``). Then the container's terminated state is reported and the pod
is removed with a grace-0 DELETE (uid precondition). A pod force-deleted from the API gets
SIGTERM, 2 s, SIGKILL and no preStop.

A process that exits on its own is reported ``terminated`` (exitCode, reason Completed/Error) and
the pod phase becomes Succeeded/Failed. Deviation: containers are never restarted, whatever
``restartPolicy`` says (KubeSpawner uses OnFailure); a restarted jupyter server would be a new
empty server anyway, and ``poll()`` reads the terminated state. Not emulated: init containers,
sidecars, volumes/PVC mounts, resource enforcement (``pods/resize`` is mirrored into
``containerStatuses[].resources`` only), liveness/startup probes, node heartbeats/leases.

Standalone: ``python -m tests.k8s.kubelet --kubeconfig F --nodes node-a,node-b --workdir D``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yarl

from tests.k8s.apiserver import UNSCHEDULABLE_TAINT, now_iso

__all__ = ["Kubelet", "RestClient", "RestError"]

log = logging.getLogger("tests.k8s.kubelet")

MIN_TERM_WINDOW = 2.0  # kubelet's minimumGracePeriodInSeconds
PROBE_PERIOD = 0.2


class RestError(Exception):
    """A non-2xx answer from the API server (``status``, parsed ``body``)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


class RestClient:
    """A raw JSON client: the kubelet needs five verbs, not a typed client with global config."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session = aiohttp.ClientSession(headers=headers)

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Any:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.base_url + path, params=params, data=data,
                                        headers=headers) as resp:
            text = await resp.text()
            payload = json.loads(text) if text else None
            if resp.status >= 400:
                raise RestError(resp.status, payload)
            return payload

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params or None)

    async def post(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any,
                    content_type: str = "application/strategic-merge-patch+json") -> Any:
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.request("DELETE", path, body=body)

    async def watch(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        query = {**params, "watch": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.session.get(self.base_url + path, params=query, timeout=timeout) as resp:
            if resp.status >= 400:
                raise RestError(resp.status, await resp.text())
            async for line in resp.content:
                if line.strip():
                    yield json.loads(line)


def _pod_path(ns: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}" + (f"/{sub}" if sub else "")


def _tolerates(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        op = tol.get("operator", "Equal")
        key_ok = tol.get("key") == taint.get("key") or (not tol.get("key") and op == "Exists")
        value_ok = op == "Exists" or tol.get("value", "") == taint.get("value", "")
        effect_ok = not tol.get("effect") or tol.get("effect") == taint.get("effect")
        if key_ok and value_ok and effect_ok:
            return True
    return False


def node_fits(node: Mapping[str, Any], pod: Mapping[str, Any]) -> str | None:
    """None if ``pod`` can go to ``node``, else the scheduler's reason (for FailedScheduling)."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    nspec = node.get("spec") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (node.get("status") or {}).get("conditions") or [])
    if not ready:
        return "node(s) were not ready"
    if nspec.get("unschedulable") and not _tolerates(
            tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector"
    for taint in nspec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"
    return None


class Kubelet:
    """Scheduler + one kubelet per fake node, all in one asyncio task group.

    ``Kubelet(api_url, ["node-a", "node-b"], workdir)``; ``await start()`` registers the Node
    objects (Ready) and begins scheduling/running pods; ``await stop()`` kills every process it
    started (it does not touch the API, which may already be gone).
    """

    def __init__(self, api_url: str, nodes: list[str], workdir: Path, *,
                 base_env: Mapping[str, str] | None = None, token: str | None = None) -> None:
        if len(set(nodes)) != len(nodes) or not nodes:
            raise ValueError(f"need distinct node names, got {nodes!r}")
        self.api_url = api_url.rstrip("/")
        self.nodes = list(nodes)
        self.workdir = Path(workdir)
        self.base_env = dict(base_env or {})
        self.api = RestClient(self.api_url, token)
        self.workers: dict[str, PodWorker] = {}  # by pod uid
        self.pod_dirs: dict[tuple[str, str], Path] = {}  # latest dir of (namespace, name)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_scheduler = asyncio.Event()
        self._pending: dict[str, dict[str, Any]] = {}  # unscheduled pods by uid
        self._unschedulable_reported: dict[str, str] = {}
        self._nodes_cache: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for name in self.nodes:
            await self._register_node(name)
        self._tasks.append(asyncio.create_task(self._informer(
            "/api/v1/nodes", {}, self._on_node_event), name="kubelet-nodes"))
        self._tasks.append(asyncio.create_task(self._informer(
            "/api/v1/pods",
            {"fieldSelector": "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"},
            self._on_unscheduled_event), name="scheduler-pods"))
        self._tasks.append(asyncio.create_task(self._schedule_loop(), name="scheduler"))
        for name in self.nodes:
            self._tasks.append(asyncio.create_task(self._informer(
                "/api/v1/pods", {"fieldSelector": f"spec.nodeName={name}"},
                lambda t, o, n=name: self._on_node_pod_event(n, t, o)), name=f"kubelet-{name}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await asyncio.gather(*(w.shutdown() for w in list(self.workers.values())), return_exceptions=True)
        await self.api.close()

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _register_node(self, name: str) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "rig-process"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": now_iso(), "lastTransitionTime": now_iso()}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": name}],
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "nodeInfo": {"kubeletVersion": "v1.33.0-rig", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "process://"},
            },
        }
        try:
            await self.api.post("/api/v1/nodes", node)
        except RestError as e:
            if e.status != 409:
                raise
            await self.api.patch(f"/api/v1/nodes/{name}/status", {"status": node["status"]})

    async def _informer(self, path: str, params: Mapping[str, str],
                        handler: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        """list, then watch from the list's resourceVersion; relist on errors/410."""
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    listing = await self.api.get(path, **params)
                    rv = listing["metadata"]["resourceVersion"]
                    for item in listing["items"]:
                        await handler("ADDED", item)
                async for event in self.api.watch(path, {**params, "resourceVersion": rv,
                                                         "timeoutSeconds": "30"}):
                    if event.get("type") == "ERROR":
                        rv = None
                        break
                    rv = event["object"]["metadata"]["resourceVersion"]
                    await handler(event["type"], event["object"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("informer %s %s failed; relisting", path, params)
                rv = None
                await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ scheduler

    async def _on_node_event(self, etype: str, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if etype == "DELETED":
            self._nodes_cache.pop(name, None)
        else:
            self._nodes_cache[name] = node
        self._wake_scheduler.set()

    async def _on_unscheduled_event(self, etype: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        if (etype == "DELETED" or pod["metadata"].get("deletionTimestamp") or spec.get("nodeName")
                or spec.get("schedulerName", "default-scheduler") != "default-scheduler"):
            self._pending.pop(uid, None)
            self._unschedulable_reported.pop(uid, None)
            return
        self._pending[uid] = pod
        self._wake_scheduler.set()

    async def _schedule_loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake_scheduler.wait(), 1.0)
            self._wake_scheduler.clear()
            for uid, pod in list(self._pending.items()):
                try:
                    await self._schedule_one(uid, pod)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scheduling %s failed", pod["metadata"].get("name"))

    async def _schedule_one(self, uid: str, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        reasons: dict[str, int] = {}
        feasible: list[str] = []
        for node_name in sorted(self._nodes_cache):
            if node_name not in self.nodes:
                reasons["node(s) had no kubelet"] = reasons.get("node(s) had no kubelet", 0) + 1
                continue
            why = node_fits(self._nodes_cache[node_name], pod)
            if why is None:
                feasible.append(node_name)
            else:
                reasons[why] = reasons.get(why, 0) + 1
        if not feasible:
            total = len(self._nodes_cache)
            message = f"0/{total} nodes are available: " + ", ".join(
                f"{count} {why}" for why, count in sorted(reasons.items())) + "."
            if self._unschedulable_reported.get(uid) != message:
                self._unschedulable_reported[uid] = message
                with contextlib.suppress(RestError):
                    await self.api.patch(_pod_path(ns, name, "status"), {"status": {"conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": now_iso(), "lastProbeTime": None}]}})
                await self.emit_event(pod, "FailedScheduling", message, "Warning", "default-scheduler")
            return
        load = {}
        for node_name in feasible:  # spread: fewest pods first, then name order
            listing = await self.api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={node_name}")
            load[node_name] = len(listing["items"])
        target = min(feasible, key=lambda n: (load[n], n))
        try:
            await self.api.post(_pod_path(ns, name, "binding"), {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target}})
        except RestError as e:
            if e.status in (404, 409):
                self._pending.pop(uid, None)
                return
            raise
        self._pending.pop(uid, None)
        self._unschedulable_reported.pop(uid, None)
        await self.emit_event(pod, "Scheduled", f"Successfully assigned {ns}/{name} to {target}",
                              "Normal", "default-scheduler")

    # ------------------------------------------------------------------ node side

    async def _on_node_pod_event(self, node: str, etype: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if etype == "DELETED":
            if worker is not None:
                worker.force_kill()
            return
        if worker is None:
            phase = (pod.get("status") or {}).get("phase")
            if pod["metadata"].get("deletionTimestamp"):
                # never started here (or already finished): nothing to stop, just release it
                with contextlib.suppress(RestError):
                    await self.api.delete(_pod_path(pod["metadata"]["namespace"], pod["metadata"]["name"]),
                                          {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
                return
            if phase in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, node, pod)
            self.workers[uid] = worker
            worker.task = asyncio.create_task(worker.run(), name=f"pod-{pod['metadata']['name']}")
            return
        worker.update(pod)

    def ports_in_use(self, exclude_uid: str) -> dict[int, str]:
        used: dict[int, str] = {}
        for uid, worker in self.workers.items():
            if uid != exclude_uid and worker.process is not None and worker.process.returncode is None:
                for port in worker.ports:
                    used[port] = worker.name
        return used

    async def emit_event(self, pod: Mapping[str, Any], reason: str, message: str,
                         etype: str = "Normal", component: str = "kubelet", host: str | None = None) -> None:
        """Post a core/v1 Event about ``pod`` (KubeSpawner shows these as spawn progress)."""
        md = pod["metadata"]
        now = now_iso()
        event = {
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": md["namespace"],
                               "name": md["name"], "uid": md["uid"]},
            "reason": reason, "message": message, "type": etype,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now, "lastTimestamp": now, "eventTime": None, "count": 1,
            "reportingComponent": component, "reportingInstance": host or component,
        }
        try:
            await self.api.post(f"/api/v1/namespaces/{md['namespace']}/events", event)
        except Exception:  # events are best effort, as in Kubernetes
            log.debug("event %s for %s not recorded", reason, md["name"], exc_info=True)


class PodWorker:
    """One pod on one node: start, report, terminate, release."""

    def __init__(self, kubelet: Kubelet, node: str, pod: dict[str, Any]) -> None:
        self.kubelet, self.node, self.pod = kubelet, node, pod
        md = pod["metadata"]
        self.ns, self.name, self.uid = md["namespace"], md["name"], md["uid"]
        self.container: dict[str, Any] = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        self.ports = [int(p["containerPort"]) for p in self.container.get("ports") or [] if p.get("containerPort")]
        self.dir = kubelet.workdir / node / self.ns / f"{self.name}-{self.uid[:8]}"
        self.process: asyncio.subprocess.Process | None = None
        self.env: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None
        self.started_at: str | None = None
        self.ready = False
        self._terminate = asyncio.Event()
        self._deadline: float | None = None  # loop time by which the process must be gone
        self._force = False
        self._gone = asyncio.Event()  # the pod object is gone from the API

    # -------------------------------------------------------------- events from the informer

    def update(self, pod: dict[str, Any]) -> None:
        old_resources = [c.get("resources") for c in (self.pod.get("spec") or {}).get("containers") or []]
        self.pod = pod
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            grace = float(md.get("deletionGracePeriodSeconds") or 0)
            self.request_termination(grace)
        new_resources = [c.get("resources") for c in (pod.get("spec") or {}).get("containers") or []]
        if new_resources != old_resources and self.process is not None and not self._terminate.is_set():
            asyncio.create_task(self._report(resized=True))

    def request_termination(self, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline
        self._terminate.set()

    def force_kill(self) -> None:
        """The pod object was deleted (grace 0 / force): stop without hooks, 2 s SIGTERM window."""
        self._gone.set()
        self._force = True
        self.request_termination(0)

    # -------------------------------------------------------------- main flow

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s worker crashed", self.ns, self.name)
        finally:
            self.kubelet.workers.pop(self.uid, None)

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kubelet.pod_dirs[(self.ns, self.name)] = self.dir
        command = list(self.container.get("command") or []) + list(self.container.get("args") or [])
        if not command:
            await self._waiting("CreateContainerError",
                                "the process kubelet needs an explicit command (no image entrypoint); "
                                "set KubeSpawner.cmd")
            return await self._await_deletion()
        # env: retried like the real kubelet until the secret/configmap appears or the pod goes
        while True:
            try:
                self.env = await self._build_env()
                break
            except LookupError as e:
                await self._waiting("CreateContainerConfigError", str(e))
                if await self._wait_terminate(1.0):
                    return await self._finish()
        conflicts = {p: owner for p, owner in self.kubelet.ports_in_use(self.uid).items() if p in self.ports}
        if conflicts:
            message = ", ".join(f"port {p} is held by pod {o}" for p, o in conflicts.items())
            await self._waiting("PortConflict", f"all pods share 127.0.0.1 in the rig: {message}")
            await self.kubelet.emit_event(self.pod, "PortConflict", message, "Warning", host=self.node)
            return await self._await_deletion()
        command = [_expand(part, self.env) for part in command]
        workdir = self.dir
        if self.container.get("workingDir"):
            workdir = self.dir / str(self.container["workingDir"]).lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        logfile = open(self.dir / "container.log", "ab")  # noqa: SIM115 - lives as long as the process
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, env=self.env, cwd=str(workdir), stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            logfile.close()
            await self._terminated_without_start(128, "StartError", str(e))
            return await self._await_deletion()
        finally:
            if self.process is not None:
                logfile.close()  # the child holds its own copy of the descriptor
        self.started_at = now_iso()
        await self._report()
        await self.kubelet.emit_event(self.pod, "Started", f"Started container {self.container.get('name')}",
                                      host=self.node)
        readiness = asyncio.create_task(self._readiness())
        exited = asyncio.create_task(self.process.wait())
        terminate = asyncio.create_task(self._terminate.wait())
        await asyncio.wait({exited, terminate}, return_when=asyncio.FIRST_COMPLETED)
        readiness.cancel()
        if exited.done() and not self._terminate.is_set():
            terminate.cancel()
            self._killpg(signal.SIGKILL)
            await self._report(exit_code=self.process.returncode)
            return await self._await_deletion()
        await self._finish()

    async def _finish(self) -> None:
        """Graceful termination: preStop within the grace period, SIGTERM, SIGKILL, release."""
        loop = asyncio.get_running_loop()
        if self.process is not None and self.process.returncode is None:
            if not self._force:
                await self.kubelet.emit_event(self.pod, "Killing",
                                              f"Stopping container {self.container.get('name')}", host=self.node)
                await self._pre_stop()
            assert self._deadline is not None
            sigterm_at = loop.time()
            self._signal(signal.SIGTERM)
            while self.process.returncode is None:
                # the deadline can only move earlier (a second delete with a shorter grace)
                term_deadline = max(self._deadline, sigterm_at + MIN_TERM_WINDOW)
                remaining = term_deadline - loop.time()
                if remaining <= 0:
                    self._signal(signal.SIGKILL)
                    await self.process.wait()
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.process.wait(), min(PROBE_PERIOD, remaining))
        self._killpg(signal.SIGKILL)  # the "container" ends with its main process
        if not self._gone.is_set():
            if self.process is not None:
                await self._report(exit_code=self.process.returncode, terminating=True)
            with contextlib.suppress(RestError):
                await self.kubelet.api.delete(_pod_path(self.ns, self.name),
                                              {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})

    async def _await_deletion(self) -> None:
        """Nothing runs any more; release the pod object once it is deleted."""
        await self._terminate.wait()
        await self._finish()

    async def _wait_terminate(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._terminate.wait(), timeout)
        return self._terminate.is_set()

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self._killpg(sig)

    def _killpg(self, sig: signal.Signals) -> None:
        """Signal the whole process group (the process was started as a session leader)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    async def shutdown(self) -> None:
        """Kubelet teardown: stop the process (SIGTERM, 2 s, SIGKILL), no API calls."""
        if self.task is not None:
            self.task.cancel()
        if self.process is not None and self.process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), MIN_TERM_WINDOW)
            except asyncio.TimeoutError:
                self._signal(signal.SIGKILL)
                await self.process.wait()
        self._killpg(signal.SIGKILL)  # stray children left in the group

    # -------------------------------------------------------------- hooks and probes

    async def _pre_stop(self) -> None:
        hook = ((self.container.get("lifecycle") or {}).get("preStop")) or {}
        if not hook:
            return
        loop = asyncio.get_running_loop()
        assert self._deadline is not None
        budget = max(self._deadline - loop.time(), 0.0)
        started = time.monotonic()
        try:
            if "exec" in hook:
                cmd = [_expand(part, self.env) for part in hook["exec"].get("command") or []]
                proc = await asyncio.create_subprocess_exec(
                    *cmd, env=self.env, cwd=str(self.dir), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
                try:
                    out, _ = await asyncio.wait_for(proc.communicate(), budget)
                except asyncio.TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
                    raise
                with open(self.dir / "prestop.log", "ab") as f:
                    f.write(out or b"")
                if proc.returncode != 0:
                    raise RuntimeError(f"command {cmd!r} exited with {proc.returncode}: "
                                       f"{(out or b'').decode(errors='replace')[-500:]}")
            elif "httpGet" in hook:
                await asyncio.wait_for(self._http_get(hook["httpGet"]), budget)
            else:
                raise RuntimeError(f"unsupported preStop handler {sorted(hook)}")
        except asyncio.TimeoutError:
            await self.kubelet.emit_event(
                self.pod, "FailedPreStopHook",
                f"PreStopHook did not finish within the grace period ({budget:.1f}s)", "Warning", host=self.node)
        except Exception as e:
            await self.kubelet.emit_event(self.pod, "FailedPreStopHook", f"PreStopHook failed: {e}",
                                          "Warning", host=self.node)
        log.info("preStop of %s/%s took %.2fs", self.ns, self.name, time.monotonic() - started)

    def _port(self, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise RuntimeError(f"named port {port!r} not declared by the container")

    async def _http_get(self, action: Mapping[str, Any]) -> None:
        scheme = str(action.get("scheme", "HTTP")).lower()
        host = action.get("host") or "127.0.0.1"
        url = f"{scheme}://{host}:{self._port(action.get('port'))}{action.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            if not 200 <= resp.status < 400:
                raise RuntimeError(f"HTTP GET {url} answered {resp.status}")

    async def _probe_once(self) -> bool:
        probe = self.container.get("readinessProbe")
        try:
            if probe and "httpGet" in probe:
                await asyncio.wait_for(self._http_get(probe["httpGet"]), 1.0)
            elif probe and "tcpSocket" in probe:
                await self._tcp(self._port(probe["tcpSocket"].get("port")))
            elif probe and "exec" in probe:
                proc = await asyncio.create_subprocess_exec(
                    *probe["exec"]["command"], env=self.env, cwd=str(self.dir),
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
                return await asyncio.wait_for(proc.wait(), 5.0) == 0
            elif self.ports:
                await self._tcp(self.ports[0])
            return True
        except (OSError, RuntimeError, asyncio.TimeoutError, aiohttp.ClientError):
            return False

    @staticmethod
    async def _tcp(port: int) -> None:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _readiness(self) -> None:
        while not await self._probe_once():
            await asyncio.sleep(PROBE_PERIOD)
        self.ready = True
        await self._report()

    # -------------------------------------------------------------- status

    def _container_status(self, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        pid = self.process.pid if self.process is not None else 0
        status = {
            "name": self.container.get("name", "container"),
            "image": self.container.get("image", ""),
            "imageID": f"process://{sys.executable}",
            "containerID": f"process://{self.node}/{pid}",
            "ready": ready, "started": "running" in state, "restartCount": 0, "state": state,
            "lastState": {},
        }
        if self.container.get("resources"):
            status["resources"] = self.container.get("resources")
            status["allocatedResources"] = (self.container.get("resources") or {}).get("requests", {})
        return status

    async def _report(self, exit_code: int | None = None, terminating: bool = False, resized: bool = False) -> None:
        if resized:
            self.container = ((self.pod.get("spec") or {}).get("containers") or [{}])[0]
        ready = self.ready and exit_code is None and not terminating
        if exit_code is None:
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        else:
            code = exit_code if exit_code >= 0 else 128 - exit_code  # killed by signal N -> 128+N
            state = {"terminated": {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at, "finishedAt": now_iso(),
                "containerID": f"process://{self.node}/{self.process.pid if self.process else 0}"}}
        status: dict[str, Any] = {
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started_at or now_iso(),
            "containerStatuses": [self._container_status(state, ready)],
            "conditions": [
                _cond("Initialized", "True"),
                _cond("ContainersReady", "True" if ready else "False"),
                _cond("Ready", "True" if ready else "False"),
            ],
        }
        if exit_code is None:
            status["phase"] = "Running"
        elif not terminating:
            status["phase"] = "Succeeded" if state["terminated"]["exitCode"] == 0 else "Failed"
        with contextlib.suppress(RestError):
            await self.kubelet.api.patch(_pod_path(self.ns, self.name, "status"), {"status": status})

    async def _waiting(self, reason: str, message: str) -> None:
        status = {"containerStatuses": [self._container_status(
            {"waiting": {"reason": reason, "message": message}}, False)],
            "hostIP": "127.0.0.1", "startTime": now_iso()}
        with contextlib.suppress(RestError):
            await self.kubelet.api.patch(_pod_path(self.ns, self.name, "status"), {"status": status})

    async def _terminated_without_start(self, code: int, reason: str, message: str) -> None:
        state = {"terminated": {"exitCode": code, "reason": reason, "message": message,
                                "startedAt": None, "finishedAt": now_iso()}}
        with contextlib.suppress(RestError):
            await self.kubelet.api.patch(_pod_path(self.ns, self.name, "status"), {"status": {
                "phase": "Failed", "containerStatuses": [self._container_status(state, False)]}})

    # -------------------------------------------------------------- env

    async def _build_env(self) -> dict[str, str]:
        api = self.kubelet.api
        md, spec = self.pod["metadata"], self.pod.get("spec") or {}
        env: dict[str, str] = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": str(self.dir),
            "HOSTNAME": self.name,
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(yarl.URL(self.kubelet.api_url).port),
        }
        env.update(self.kubelet.base_env)
        cache: dict[tuple[str, str], dict[str, str]] = {}

        async def lookup(kind: str, name: str, optional: bool) -> dict[str, str] | None:
            if (kind, name) not in cache:
                plural = "secrets" if kind == "secret" else "configmaps"
                try:
                    obj = await api.get(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")
                except RestError as e:
                    if e.status == 404:
                        if optional:
                            return None
                        raise LookupError(f'{kind} "{name}" not found') from None
                    raise
                if kind == "secret":
                    cache[(kind, name)] = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                else:
                    cache[(kind, name)] = dict(obj.get("data") or {})
            return cache[(kind, name)]

        for source in self.container.get("envFrom") or []:
            for kind, ref_key in (("secret", "secretRef"), ("configmap", "configMapRef")):
                if ref_key in source:
                    ref = source[ref_key]
                    values = await lookup(kind, ref["name"], bool(ref.get("optional")))
                    for k, v in (values or {}).items():
                        env[source.get("prefix", "") + k] = v
        for item in self.container.get("env") or []:
            name = item["name"]
            if "value" in item or "valueFrom" not in item:
                env[name] = _expand(str(item.get("value", "")), env)
                continue
            vf = item["valueFrom"]
            for kind, ref_key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
                if ref_key in vf:
                    ref = vf[ref_key]
                    values = await lookup(kind, ref["name"], bool(ref.get("optional")))
                    if values is None:
                        break
                    if ref["key"] not in values:
                        if ref.get("optional"):
                            break
                        raise LookupError(f'couldn\'t find key {ref["key"]} in {kind} {self.ns}/{ref["name"]}')
                    env[name] = values[ref["key"]]
            if "fieldRef" in vf:
                env[name] = _field_ref(vf["fieldRef"]["fieldPath"], md, spec)
            if "resourceFieldRef" in vf:
                resource = vf["resourceFieldRef"].get("resource", "")
                section, _, key = resource.partition(".")
                env[name] = str(((self.container.get("resources") or {}).get(section) or {}).get(key, ""))
        return env


def _cond(ctype: str, status: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "lastTransitionTime": now_iso(), "lastProbeTime": None}


def _field_ref(path: str, md: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    m = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
    }
    return str(simple.get(path) or "")


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined vars substituted, ``$$`` escapes, others kept."""
    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(repl, text)


async def _main(args: argparse.Namespace) -> None:
    config = json.loads(Path(args.kubeconfig).read_text())
    server = config["clusters"][0]["cluster"]["server"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Kubelet(server, [n for n in args.nodes.split(",") if n], Path(args.workdir)):
        print("READY", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tests.k8s.kubelet`` (kubeconfig written by the apiserver)."""
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.kubelet")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", default="node-a,node-b")
    parser.add_argument("--workdir", default="./rig-nodes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
