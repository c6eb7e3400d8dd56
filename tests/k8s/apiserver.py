"""An emulated Kubernetes API server for tests: kmock's ``KubernetesEmulator`` plus what it lacks.

Why a subclass and not kmock as is: kmock 0.8 ignores label and field selectors, deletes pods at
once, has no Eviction API, merges every patch as a plain dict merge, sets no object defaults and
mis-parses ``watch=True`` and ``/api/v1/namespaces`` paths (see test-infra.md §A). KubeSpawner, the
fake kubelet and the product's drain watcher all depend on the real behaviour, so this class
keeps kmock's HTTP server, request recording, DSL reactions (``apiserver[...] << 500`` still
works for fault injection, and user reactions win over the emulation) and its object store
(``apiserver.objects['v1/pods', 'ns', 'name']`` keeps every version), and re-implements the
request semantics the way kube-apiserver applies them:

* create: uid, resourceVersion (one cluster-wide counter), creationTimestamp, generation,
  namespace, kind/apiVersion; pods get ``status.phase: Pending`` and spec defaults
  (``terminationGracePeriodSeconds: 30``...); secrets' ``stringData`` is folded into ``data``.
* list and watch honour ``labelSelector`` (full grammar) and ``fieldSelector`` (the per-resource
  field labels the real server supports; others -> 400). Watches honour ``resourceVersion``
  (replay from a bounded event log, 410 Expired when too old) and ``timeoutSeconds``, and emit
  ADDED/DELETED when an object enters/leaves the selector, as the real watch cache does.
* patch: JSON patch, merge patch and a strategic merge patch that knows the merge keys of the
  lists the rig uses. Pod spec is immutable except images/tolerations/activeDeadlineSeconds
  (422 otherwise); ``spec.nodeName`` is set through ``pods/binding`` only. Main-resource writes
  keep ``status``; ``/status`` writes change only ``status``. ``metadata.resourceVersion`` in a
  PUT/patch body is an optimistic-concurrency precondition (409).
* delete: pods bound to a node are deleted gracefully (``deletionTimestamp`` +
  ``deletionGracePeriodSeconds``; the kubelet removes them with a final grace-0 delete), the
  grace period can only shrink; unbound or finished pods go at once; finalizers hold any object.
* ``pods/eviction`` (policy/v1 Eviction): PodDisruptionBudgets are evaluated exactly like
  ``checkAndDecrement`` with a disruption controller that is always up to date (PDB status is
  recomputed synchronously on every pod/PDB write). A blocked eviction gets 429 with the real
  Status body; an allowed one adds the ``DisruptionTarget`` condition and deletes gracefully.
* ``pods/binding`` (the scheduler's bind), ``pods/resize`` (in-place resize of container
  resources only), ``nodes`` with the node-lifecycle controller's
  ``node.kubernetes.io/unschedulable:NoSchedule`` taint following ``spec.unschedulable``.

Not emulated (gaps): authn/authz (any token works), admission (no quota, no limit ranges,
no service account tokens), server-side apply, dryRun, pagination (``limit``/``continue``
return everything), deletecollection, namespace cascading deletion, garbage collection of
owned objects, ``pods/log`` and ``pods/exec``. The server never removes a Terminating pod on its
own: only the kubelet (or a grace-0 delete) does, exactly as with a node that is down.

Standalone use (for a real JupyterHub subprocess)::

    python -m tests.k8s.apiserver --port 0 --kubeconfig /tmp/kubeconfig \
        --nodes node-a,node-b --workdir /tmp/nodes

prints ``READY http://127.0.0.1:<port>`` on stdout once the kubeconfig is written (and, unless
``--no-kubelet``, the fake kubelet from :mod:`tests.k8s.kubelet` has registered its nodes), then
serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import copy
import datetime
import json
import signal
import sys
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, enums, references, rendering

from tests.k8s.selectors import (
    SelectorError,
    json_patch,
    match_label_selector_object,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    scaled_int_or_percent,
    strategic_merge_patch,
)

__all__ = ["FakeApiServer", "ApiError", "ResourceSpec", "RESOURCES", "write_kubeconfig", "now_iso"]

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def now_iso(offset_seconds: float = 0.0) -> str:
    """RFC 3339 timestamp with second precision, as Kubernetes serialises ``metav1.Time``."""
    moment = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ResourceSpec:
    """What the emulator knows about one resource type (discovery + behaviour)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    short_names: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> references.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec("", "v1", "namespaces", "Namespace", False, frozenset({"status"}), frozenset({"ns"})),
    ResourceSpec("", "v1", "nodes", "Node", False, frozenset({"status"}), frozenset({"no"})),
    ResourceSpec(
        "", "v1", "pods", "Pod", True,
        frozenset({"status", "eviction", "binding", "resize"}), frozenset({"po"}),
    ),
    ResourceSpec("", "v1", "events", "Event", True, frozenset(), frozenset({"ev"})),
    ResourceSpec("", "v1", "secrets", "Secret", True),
    ResourceSpec("", "v1", "configmaps", "ConfigMap", True, frozenset(), frozenset({"cm"})),
    ResourceSpec("", "v1", "services", "Service", True, frozenset({"status"}), frozenset({"svc"})),
    ResourceSpec(
        "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True,
        frozenset({"status"}), frozenset({"pvc"}),
    ),
    ResourceSpec("", "v1", "serviceaccounts", "ServiceAccount", True, frozenset(), frozenset({"sa"})),
    ResourceSpec(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True,
        frozenset({"status"}), frozenset({"pdb"}),
    ),
)
_BY_PATH: dict[tuple[str, str, str], ResourceSpec] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_PODS = _BY_PATH[("", "v1", "pods")]
_NODES = _BY_PATH[("", "v1", "nodes")]
_PDBS = _BY_PATH[("policy", "v1", "poddisruptionbudgets")]
_NAMESPACES = _BY_PATH[("", "v1", "namespaces")]

# Pod spec fields a main-resource update may change (ValidatePodUpdate); the rest is immutable.
_MUTABLE_POD_SPEC = ("activeDeadlineSeconds", "tolerations", "schedulingGates")


class ApiError(Exception):
    """An error answered with a ``metav1.Status`` body, the shape clients parse."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = dict(self.details)
        return status

    @classmethod
    def not_found(cls, spec: ResourceSpec, name: str) -> ApiError:
        details = {"name": name, "kind": spec.plural}
        if spec.group:
            details["group"] = spec.group
        return cls(404, "NotFound", f'{spec.plural} "{name}" not found', details)

    @classmethod
    def conflict(cls, spec: ResourceSpec, name: str, why: str) -> ApiError:
        details = {"name": name, "kind": spec.plural}
        return cls(409, "Conflict", f'Operation cannot be fulfilled on {spec.plural} "{name}": {why}', details)

    @classmethod
    def invalid(cls, spec: ResourceSpec, name: str, why: str) -> ApiError:
        details = {"name": name, "kind": spec.kind}
        return cls(422, "Invalid", f'{spec.kind} "{name}" is invalid: {why}', details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)


@dataclass
class WatchEvent:
    """One entry of the event log: the object after the change and before it (for selectors)."""

    rv: int
    type: str
    spec: ResourceSpec
    namespace: str | None
    obj: dict[str, Any]
    prev: dict[str, Any] | None


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


def _ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with kube-apiserver semantics for the resources in :data:`RESOURCES`.

    Use it like kmock's own emulator: ``async with FakeApiServer() as api, kmock.Server(api)``.
    ``apiserver.url`` is the base URL; ``apiserver.objects`` the store (kmock's view, history kept).
    """

    event_log_size: int = 5000
    _rv: int = attrs.field(default=0, init=False)
    _log: collections.deque[WatchEvent] = attrs.field(init=False)
    _log_dropped_upto: int = attrs.field(default=0, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._log = collections.deque()
        for spec in RESOURCES:
            self.resources[spec.key] = references.ResourceInfo(
                namespaced=spec.namespaced,
                kind=spec.kind,
                singular=spec.kind.lower(),
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
                shortnames=set(spec.short_names),
                subresources=set(spec.subresources),
            )
        # One step above kmock's own fallbacks (-inf), below any reaction a test adds.
        (self.fallback ** 1)[self._is_emulated] << self._dispatch
        for ns in ("default", "kube-system"):
            self.seed(_NAMESPACES, None, {"metadata": {"name": ns}})

    # ------------------------------------------------------------------ request plumbing

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Parse requests ourselves: kmock's parser fails on ``/api/v1/namespaces[/name]`` and
        treats ``watch=True`` (what kubernetes_asyncio sends) as a plain list."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            request = await _parse_request(raw_request, len(self._requests))
            self._requests.append(request)
            try:
                return await self._handle(request)
            except rendering.StreamingError as e:
                raw_response = e.args[0]
                raise (e.__cause__ or e) from None
        except Exception as e:
            if self._errors:
                self._errors[-1].append(e)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(e)
            await self._stream_error(e, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it mutates kmock's store with naive semantics before
        # any reaction runs. Reactions (the test's, then ours, then kmock's discovery) still apply.
        return await apps.RawHandler._handle(self, request)

    def _is_emulated(self, request: rendering.Request) -> bool:
        if request.resource is None:
            return False
        if request.resource.plural is not None:
            return True
        return request.method == enums.method.GET and request.url.path.rstrip("/") == "/api/v1"

    async def _dispatch(self, request: rendering.Request) -> rendering.Response:
        # Always answer with an explicit status: kmock copies a nested Response's status onto the
        # reaction's shared Response, so a bare dict would inherit the previous request's code.
        try:
            result = self._route(request)
        except ApiError as e:
            return rendering.Response(status=e.code, payload=e.body())
        except SelectorError as e:
            err = ApiError.bad_request(str(e))
            return rendering.Response(status=err.code, payload=err.body())
        if isinstance(result, rendering.Response):
            return result
        return rendering.Response(status=200, payload=result)

    def _route(self, request: rendering.Request) -> rendering.Payload:
        res = request.resource
        assert res is not None
        if res.plural is None:  # GET /api/v1: kmock answers groupVersion "/v1"; kubectl needs "v1"
            return self._core_discovery()
        spec = _BY_PATH.get((res.group or "", res.version or "", res.plural))
        if spec is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = request.namespace if spec.namespaced else None
        if request.namespace is not None and not spec.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method.value.upper() if request.method else "GET"
        params = dict(request.params)
        name, sub = request.name, request.subresource
        data = request.data

        if _is_watch(params):
            if name is not None:  # a watch on a named object is a watch with metadata.name=
                params["fieldSelector"] = ",".join(
                    p for p in (params.get("fieldSelector"), f"metadata.name={name}") if p
                )
            return self._watch(spec, ns, params, request)
        if name is None:
            if method == "GET":
                return self._list(spec, ns, params)
            if method == "POST":
                if spec.namespaced and ns is None:
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
                return rendering.Response(status=201, payload=self.create(spec, ns, _body(data)))
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if spec.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if sub is None:
            if method == "GET":
                return self.get(spec, ns, name)
            if method == "PUT":
                return self.replace(spec, ns, name, _body(data))
            if method == "PATCH":
                return self.patch(spec, ns, name, data, content_type)
            if method == "DELETE":
                return self.delete(spec, ns, name, _delete_options(params, data))
        elif sub not in spec.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        elif sub == "status" or sub == "resize":
            if method == "GET":
                return self.get(spec, ns, name)
            if method == "PUT":
                return self.replace(spec, ns, name, _body(data), subresource=sub)
            if method == "PATCH":
                return self.patch(spec, ns, name, data, content_type, subresource=sub)
        elif sub == "eviction" and method == "POST":
            return self.evict(ns or "", name, _body(data))
        elif sub == "binding" and method == "POST":
            return self.bind(ns or "", name, _body(data))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _core_discovery(self) -> dict[str, Any]:
        resources = []
        for spec in RESOURCES:
            if spec.group:
                continue
            for sub in ("", *sorted(spec.subresources)):
                resources.append({
                    "name": f"{spec.plural}/{sub}" if sub else spec.plural,
                    "singularName": "" if sub else spec.kind.lower(),
                    "namespaced": spec.namespaced,
                    "kind": spec.kind if sub in ("", "status", "resize") else {
                        "eviction": "Eviction", "binding": "Binding"}[sub],
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"] if not sub
                    else (["create"] if sub in ("eviction", "binding") else ["get", "patch", "update"]),
                    "shortNames": sorted(spec.short_names) if not sub else [],
                })
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources}

    # ------------------------------------------------------------------ store primitives

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _current(self, spec: ResourceSpec, ns: str | None, name: str) -> dict[str, Any] | None:
        key = (spec.key, ns, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else copy.deepcopy(obj.raw)

    def _items(self, spec: ResourceSpec, ns: str | None) -> list[dict[str, Any]]:
        out = []
        for (res, obj_ns, _name), obj in self.objects.items():
            if res == spec.key and not obj.deleted and (ns is None or obj_ns == ns):
                out.append(copy.deepcopy(obj.raw))
        return out

    def _store(self, spec: ResourceSpec, ns: str | None, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
        """Write a new version (new resourceVersion) and publish ADDED/MODIFIED."""
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        key = (spec.key, ns, obj["metadata"]["name"])
        if key in self.objects:
            self.objects[key].history.append(copy.deepcopy(obj))
        else:
            self.objects[key] = copy.deepcopy(obj)
        self._publish(WatchEvent(rv, "MODIFIED" if prev else "ADDED", spec, ns, copy.deepcopy(obj), prev))
        return obj

    def _remove(self, spec: ResourceSpec, ns: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        rv = self._next_rv()
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(rv)
        self.objects[(spec.key, ns, obj["metadata"]["name"])].delete()
        self._publish(WatchEvent(rv, "DELETED", spec, ns, copy.deepcopy(obj), copy.deepcopy(obj)))
        return obj

    def _publish(self, event: WatchEvent) -> None:
        self._log.append(event)
        while len(self._log) > self.event_log_size:
            self._log_dropped_upto = self._log.popleft().rv
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(event)

    def seed(self, spec: ResourceSpec, ns: str | None, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object directly (no HTTP): bootstrap namespaces, test fixtures."""
        return self.create(spec, ns, dict(obj))

    # ------------------------------------------------------------------ verbs

    def get(self, spec: ResourceSpec, ns: str | None, name: str) -> dict[str, Any]:
        obj = self._current(spec, ns, name)
        if obj is None:
            raise ApiError.not_found(spec, name)
        return obj

    def _list(self, spec: ResourceSpec, ns: str | None, params: Mapping[str, str]) -> dict[str, Any]:
        matches = self._matcher(spec, params)
        items = [o for o in self._items(spec, ns) if matches(o)]
        return {
            "kind": f"{spec.kind}List",
            "apiVersion": spec.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _matcher(self, spec: ResourceSpec, params: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), spec.plural)

        def matches(obj: Mapping[str, Any]) -> bool:
            return labels((obj.get("metadata") or {}).get("labels")) and fields(obj)

        return matches

    def create(self, spec: ResourceSpec, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        name = md.get("name")
        if not name:
            raise ApiError.invalid(spec, "", "metadata.name: Required value: name or generateName is required")
        if spec.namespaced:
            if md.get("namespace") not in (None, ns):
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        if self._current(spec, ns, name) is not None:
            raise ApiError(409, "AlreadyExists", f'{spec.plural} "{name}" already exists',
                           {"name": name, "kind": spec.plural})
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            md.pop(transient, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now_iso()
        md["generation"] = 1
        obj["apiVersion"], obj["kind"] = spec.api_version, spec.kind
        if spec is _PODS:
            _default_pod(obj)
        elif spec.plural == "secrets":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")
        elif spec is _NAMESPACES:
            obj["status"] = {"phase": "Active"}
        elif spec is _NODES:
            obj.setdefault("spec", {})
            obj.setdefault("status", {})
            _sync_unschedulable_taint(obj)
        elif spec is _PDBS:
            obj["status"] = {}
        stored = self._store(spec, ns, obj, None)
        self._after_write(spec, ns)
        return self._current(spec, ns, name) or stored

    def replace(self, spec: ResourceSpec, ns: str | None, name: str, body: dict[str, Any],
                subresource: str | None = None) -> dict[str, Any]:
        old = self.get(spec, ns, name)
        return self._update(spec, ns, old, copy.deepcopy(body), subresource)

    def patch(self, spec: ResourceSpec, ns: str | None, name: str, data: Any, content_type: str,
              subresource: str | None = None) -> dict[str, Any]:
        old = self.get(spec, ns, name)
        try:
            if content_type == "application/json-patch+json":
                if not isinstance(data, list):
                    raise ApiError.bad_request("json patch must be a list of operations")
                new = json_patch(old, data)
            elif content_type == "application/merge-patch+json":
                new = merge_patch(old, _body(data))
            elif content_type == "application/strategic-merge-patch+json":
                new = strategic_merge_patch(old, _body(data))
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types include: "
                               f"application/json-patch+json, application/merge-patch+json, "
                               f"application/strategic-merge-patch+json (got {content_type!r})")
        except ApiError:
            raise
        except Exception as e:  # jsonpatch conflicts, bad ops
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}") from e
        # A resourceVersion the patch itself carries is a precondition; the one copied from old is not.
        patched_rv = (new.get("metadata") or {}).get("resourceVersion")
        if patched_rv == old["metadata"].get("resourceVersion"):
            new["metadata"].pop("resourceVersion", None)
        return self._update(spec, ns, old, new, subresource)

    def _update(self, spec: ResourceSpec, ns: str | None, old: dict[str, Any], new: dict[str, Any],
                subresource: str | None) -> dict[str, Any]:
        name = old["metadata"]["name"]
        md = new.setdefault("metadata", {})
        want_rv = md.get("resourceVersion")
        if want_rv not in (None, "") and want_rv != old["metadata"]["resourceVersion"]:
            raise ApiError.conflict(spec, name, "the object has been modified; please apply your changes "
                                                "to the latest version and try again")
        if md.get("name", name) != name:
            raise ApiError.bad_request(f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})")
        if subresource == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status", {})
        elif subresource == "resize":
            result = self._resized(old, new)
        else:
            result = new
            for key in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):
                if key in old["metadata"]:
                    md[key] = old["metadata"][key]
                else:
                    md.pop(key, None)
            md["name"] = name
            result["apiVersion"], result["kind"] = spec.api_version, spec.kind
            if spec.has_status:
                result["status"] = copy.deepcopy(old.get("status", {}))
            if spec is _PODS:
                _check_pod_update(old, result)
            if spec is _NODES:
                _sync_unschedulable_taint(result)
            if spec.plural == "secrets":
                data = result.setdefault("data", {})
                for key, value in (result.pop("stringData", None) or {}).items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return old  # no-op writes do not bump resourceVersion, as in the real server
        if result.get("spec") != old.get("spec"):
            result["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        md = result["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and spec is not _PODS:
            self._remove(spec, ns, result)
            self._after_write(spec, ns)
            return result
        stored = self._store(spec, ns, result, old)
        self._after_write(spec, ns)
        if spec is _PODS and md.get("deletionTimestamp") and not md.get("finalizers") and (
            not (result.get("spec") or {}).get("nodeName")
        ):
            self._remove(spec, ns, stored)
            self._after_write(spec, ns)
        return stored

    def _resized(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """``pods/resize``: only ``spec.containers[*].resources`` (and resizePolicy) may change."""
        name = old["metadata"]["name"]
        old_c = (old.get("spec") or {}).get("containers") or []
        new_c = (new.get("spec") or {}).get("containers") or []
        if [c.get("name") for c in old_c] != [c.get("name") for c in new_c]:
            raise ApiError.invalid(_PODS, name, "spec: Forbidden: only cpu and memory resources are mutable")
        def strip(c: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in c.items() if k not in ("resources", "resizePolicy")}

        for before, after in zip(old_c, new_c, strict=True):
            if strip(before) != strip(after):
                raise ApiError.invalid(_PODS, name, "spec: Forbidden: only cpu and memory resources are mutable")
        result = copy.deepcopy(old)
        result["spec"]["containers"] = copy.deepcopy(new_c)
        return result

    def delete(self, spec: ResourceSpec, ns: str | None, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        obj = self.get(spec, ns, name)
        md = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != md.get("uid"):
            raise ApiError.conflict(spec, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                                f"UID in object meta: {md.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != md.get("resourceVersion"):
            raise ApiError.conflict(spec, name, "Precondition failed: resourceVersion mismatch")
        if spec is _PODS:
            return self._delete_pod(ns, obj, options)
        if md.get("finalizers"):
            if not md.get("deletionTimestamp"):
                prev = copy.deepcopy(obj)
                md["deletionTimestamp"] = now_iso()
                md["deletionGracePeriodSeconds"] = 0
                obj = self._store(spec, ns, obj, prev)
            return obj
        removed = self._remove(spec, ns, obj)
        self._after_write(spec, ns)
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": spec.group, "kind": spec.plural, "uid": removed["metadata"]["uid"]},
        }

    def _delete_pod(self, ns: str | None, pod: dict[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        md, spec = pod["metadata"], pod.get("spec") or {}
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        grace = max(0, int(grace))
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            grace = 0  # never ran, or finished: nothing for a kubelet to stop
        if grace == 0 and not md.get("finalizers"):
            removed = self._remove(_PODS, ns, pod)
            self._after_write(_PODS, ns)
            return removed
        current = md.get("deletionGracePeriodSeconds")
        if current is not None and md.get("deletionTimestamp") and grace >= int(current):
            return pod  # a grace period can only be shortened
        prev = copy.deepcopy(pod)
        md["deletionTimestamp"] = now_iso(grace)
        md["deletionGracePeriodSeconds"] = grace
        stored = self._store(_PODS, ns, pod, prev)
        self._after_write(_PODS, ns)
        return stored

    def bind(self, ns: str, name: str, body: Mapping[str, Any]) -> rendering.Response:
        """``POST pods/{name}/binding``: the scheduler's way of setting ``spec.nodeName``."""
        pod = self.get(_PODS, ns, name)
        target = (body.get("target") or {}).get("name")
        if not target:
            raise ApiError.invalid(_PODS, name, "target.name: Required value")
        if pod.get("spec", {}).get("nodeName"):
            raise ApiError.conflict(_PODS, name, f"pod {name} is already assigned to node "
                                                 f"\"{pod['spec']['nodeName']}\"")
        if pod["metadata"].get("deletionTimestamp"):
            raise ApiError.conflict(_PODS, name, "pod is being deleted, cannot be assigned to a host")
        prev = copy.deepcopy(pod)
        pod["spec"]["nodeName"] = target
        _set_condition(pod, "PodScheduled", "True")
        self._store(_PODS, ns, pod, prev)
        self._after_write(_PODS, ns)
        return rendering.Response(status=201, payload={
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})

    def evict(self, ns: str, name: str, body: Mapping[str, Any]) -> rendering.Response:
        """``POST pods/{name}/eviction`` as ``EvictionREST.Create`` does it (policy/v1)."""
        body_name = (body.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise ApiError.bad_request("name in URL does not match name in Eviction object")
        pod = self.get(_PODS, ns, name)
        options = body.get("deleteOptions") or {}
        success = rendering.Response(status=201, payload={
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
            self.delete(_PODS, ns, name, options)  # canIgnorePDB: no disruption to budget for
            return success
        pdbs = [p for p in self._items(_PDBS, ns)
                if match_label_selector_object((p.get("spec") or {}).get("selector"),
                                               pod["metadata"].get("labels"))]
        if len(pdbs) > 1:
            raise ApiError(500, "InternalError", "This pod has more than one PodDisruptionBudget, "
                                                 "which the eviction subresource does not support.")
        if pdbs:
            pdb = pdbs[0]
            status = pdb.get("status") or {}
            pdb_name = pdb["metadata"]["name"]
            allowed = int(status.get("disruptionsAllowed", 0))
            healthy_budget = int(status.get("currentHealthy", 0)) >= int(status.get("desiredHealthy", 0))
            if not _ready(pod) and healthy_budget and int(status.get("desiredHealthy", 0)) > 0:
                pass  # an unready pod may go when the budget is otherwise healthy (IfHealthyBudget)
            elif int(status.get("observedGeneration", 0)) < int(pdb["metadata"].get("generation", 1)):
                raise ApiError(429, "TooManyRequests",
                               "Cannot evict pod as it would violate the pod's disruption budget.",
                               {"causes": [{"reason": "DisruptionBudget", "message":
                                            f"The disruption budget {pdb_name} is still being processed by the server."}]})
            elif allowed < 0:
                raise ApiError(403, "Forbidden", f'poddisruptionbudgets.policy "{pdb_name}" is forbidden: '
                                                 "pdb disruptions allowed is negative",
                               {"name": pdb_name, "group": "policy", "kind": "poddisruptionbudgets"})
            elif allowed == 0:
                raise ApiError(429, "TooManyRequests",
                               "Cannot evict pod as it would violate the pod's disruption budget.",
                               {"causes": [{"reason": "DisruptionBudget", "message":
                                            f"The disruption budget {pdb_name} needs "
                                            f"{int(status.get('desiredHealthy', 0))} healthy pods and has "
                                            f"{int(status.get('currentHealthy', 0))} currently"}]})
            else:
                prev_pdb = copy.deepcopy(pdb)
                status["disruptionsAllowed"] = allowed - 1
                status.setdefault("disruptedPods", {})[name] = now_iso()
                pdb["status"] = status
                self._store(_PDBS, ns, pdb, prev_pdb)
        prev = copy.deepcopy(pod)
        _set_condition(pod, "DisruptionTarget", "True", reason="EvictionByEvictionAPI",
                       message="Eviction API: evicting")
        self._store(_PODS, ns, pod, prev)
        self.delete(_PODS, ns, name, options)
        return success

    # ------------------------------------------------------------------ in-process "controllers"

    def _after_write(self, spec: ResourceSpec, ns: str | None) -> None:
        """The disruption controller, run synchronously so PDB status is never stale."""
        if ns is not None and spec in (_PODS, _PDBS):
            self._refresh_pdbs(ns)

    def _refresh_pdbs(self, ns: str) -> None:
        pods = self._items(_PODS, ns)
        for pdb in self._items(_PDBS, ns):
            status = self.pdb_status(pdb, pods)
            old_status = pdb.get("status") or {}
            compare = {k: v for k, v in old_status.items() if k != "disruptedPods"}
            if compare == status:
                continue
            prev = copy.deepcopy(pdb)
            pdb["status"] = status
            self._store(_PDBS, ns, pdb, prev)

    @staticmethod
    def pdb_status(pdb: Mapping[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
        """``DisruptionController.trySync`` for one PDB, with the rig's simplification that a
        controller's scale equals the number of its pods that exist (there are no controllers).

        Bare pods (no controller ownerReference) do not count towards ``expectedPods`` for
        ``maxUnavailable`` or a percentage ``minAvailable`` -- which is why a ``maxUnavailable: 0``
        PDB over a bare singleuser pod blocks every eviction on a real cluster too.
        """
        spec = pdb.get("spec") or {}
        selected = [p for p in pods
                    if match_label_selector_object(spec.get("selector"), p["metadata"].get("labels"))]
        managed = [p for p in selected if _controller_ref(p) is not None]
        if spec.get("maxUnavailable") is not None:
            expected = len(managed)
            max_unavailable = scaled_int_or_percent(spec["maxUnavailable"], expected, round_up=True)
            desired = max(0, expected - max_unavailable)
        elif spec.get("minAvailable") is not None and isinstance(spec["minAvailable"], int):
            expected, desired = len(selected), int(spec["minAvailable"])
        elif spec.get("minAvailable") is not None:
            expected = len(managed)
            desired = scaled_int_or_percent(spec["minAvailable"], expected, round_up=True)
        else:
            expected, desired = len(selected), 0
        healthy = sum(1 for p in selected if not p["metadata"].get("deletionTimestamp") and _ready(p))
        allowed = healthy - desired
        if expected <= 0 or allowed <= 0:
            allowed = 0
        return {
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": allowed,
            "observedGeneration": int((pdb.get("metadata") or {}).get("generation", 1)),
            "conditions": [{
                "type": "DisruptionAllowed",
                "status": "True" if allowed > 0 else "False",
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
                "observedGeneration": int((pdb.get("metadata") or {}).get("generation", 1)),
                "lastTransitionTime": now_iso(),
            }],
        }

    # ------------------------------------------------------------------ watch

    def _watch(self, spec: ResourceSpec, ns: str | None, params: Mapping[str, str],
               request: rendering.Request) -> AsyncIterator[Any]:
        matches = self._matcher(spec, params)  # raises SelectorError -> 400 before streaming
        rv_param = params.get("resourceVersion") or ""
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        watcher = _Watcher()
        self._watchers.add(watcher)
        if rv_param in ("", "0"):
            since = self._rv
            initial = [{"type": "ADDED", "object": o} for o in self._items(spec, ns) if matches(o)]
        else:
            try:
                since = int(rv_param)
            except ValueError:
                self._watchers.discard(watcher)
                raise ApiError.bad_request(f"invalid resource version: {rv_param!r}") from None
            if since < self._log_dropped_upto:
                self._watchers.discard(watcher)
                return _single(_expired(since, self._rv))
            initial = [t for ev in self._log if ev.rv > since
                       if (t := _translate(ev, spec, ns, matches)) is not None]
            since = self._rv
        raw = request._raw_request

        async def stream() -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            try:
                yield b""  # send the headers now: a quiet watch must not look like a hung request
                for item in initial:
                    yield item
                while not self._closing:
                    remaining = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                    if remaining <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(watcher.queue.get(), remaining)
                    except asyncio.TimeoutError:
                        if raw is not None and (raw.transport is None or raw.transport.is_closing()):
                            return  # the client went away
                        continue
                    if event is None:
                        return
                    if event.rv <= since:
                        continue
                    translated = _translate(event, spec, ns, matches)
                    if translated is not None:
                        yield translated
            finally:
                self._watchers.discard(watcher)

        return stream()

    async def close_watches(self) -> None:
        """End every open watch stream now (aiohttp waits for running handlers on shutdown)."""
        self._closing = True
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        await asyncio.sleep(0)


def _translate(event: WatchEvent, spec: ResourceSpec, ns: str | None,
               matches: Callable[[Mapping[str, Any]], bool]) -> dict[str, Any] | None:
    """Map a store event to what a selector-filtered watch sees (the watch cache's rules)."""
    if event.spec is not spec or (ns is not None and event.namespace != ns):
        return None
    now_in = event.type != "DELETED" and matches(event.obj)
    was_in = event.prev is not None and matches(event.prev)
    if event.type == "DELETED":
        return {"type": "DELETED", "object": event.obj} if was_in else None
    if now_in and was_in:
        return {"type": "MODIFIED", "object": event.obj}
    if now_in:
        return {"type": "ADDED", "object": event.obj}
    if was_in:
        return {"type": "DELETED", "object": event.obj}
    return None


def _expired(since: int, current: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {since} ({current})", "reason": "Expired", "code": 410}}


async def _single(item: Any) -> AsyncIterator[Any]:
    yield item


def _is_watch(params: Mapping[str, str]) -> bool:
    return str(params.get("watch", "")).lower() in ("true", "1")


def _body(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError.bad_request("the request body must be a JSON object")
    return data


def _delete_options(params: Mapping[str, str], data: Any) -> dict[str, Any]:
    options = dict(data) if isinstance(data, dict) else {}
    if params.get("gracePeriodSeconds") not in (None, ""):
        options["gracePeriodSeconds"] = int(params["gracePeriodSeconds"])
    return options


def _default_pod(pod: dict[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("priority", 0)
    for container in spec.get("containers") or []:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("imagePullPolicy", "IfNotPresent")
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
    if spec.get("nodeName"):
        _set_condition(pod, "PodScheduled", "True")


def _qos_class(spec: Mapping[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k) and (r.get("requests") or r.get("limits") or {}).get(k) == r["limits"][k]
        for r in resources for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _set_condition(obj: dict[str, Any], ctype: str, status: str, reason: str | None = None,
                   message: str | None = None) -> None:
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    cond = next((c for c in conditions if c.get("type") == ctype), None)
    if cond is None:
        cond = {"type": ctype}
        conditions.append(cond)
    if cond.get("status") != status:
        cond["lastTransitionTime"] = now_iso()
    cond["status"] = status
    cond["lastProbeTime"] = None
    if reason is not None:
        cond["reason"] = reason
    if message is not None:
        cond["message"] = message


def _check_pod_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """ValidatePodUpdate, reduced to what a product bug could trip over."""
    def comparable(spec: Mapping[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(dict(spec or {}))
        for key in _MUTABLE_POD_SPEC:
            spec.pop(key, None)
        for kind in ("containers", "initContainers"):
            for container in spec.get(kind) or []:
                container.pop("image", None)
        return spec

    if comparable(old.get("spec") or {}) != comparable(new.get("spec") or {}):
        raise ApiError.invalid(
            _PODS, old["metadata"]["name"],
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
            "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
            "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
            "(allow it to be set to 1 if it was previously negative)")


def _sync_unschedulable_taint(node: dict[str, Any]) -> None:
    """The node lifecycle controller's TaintNodeByCondition for ``spec.unschedulable``."""
    spec = node.setdefault("spec", {})
    taints = [t for t in spec.get("taints") or [] if t.get("key") != UNSCHEDULABLE_TAINT]
    if spec.get("unschedulable"):
        existing = next((t for t in spec.get("taints") or [] if t.get("key") == UNSCHEDULABLE_TAINT), None)
        taints.append(existing or {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule", "timeAdded": now_iso()})
    if taints:
        spec["taints"] = taints
    else:
        spec.pop("taints", None)


async def _parse_request(raw_request: aiohttp.web.BaseRequest, request_id: int) -> rendering.Request:
    """kmock's ``Request._parse`` with a path parser that knows the ``namespaces`` resource."""
    body = await raw_request.read()
    text = body.decode("utf-8", errors="replace")
    data: Any = None
    if body:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
    group, version, plural, namespace, name, sub = _parse_path(raw_request.path)
    resource = None if group is None else kmock.resource(group=group, version=version, plural=plural)
    method = enums.method(raw_request.method)
    params = dict(raw_request.query)
    action: enums.action | None = None
    if group is not None:
        if method == enums.method.GET and _is_watch(params):
            action = enums.action.WATCH
        elif name is None:
            action = {enums.method.GET: enums.action.LIST, enums.method.POST: enums.action.CREATE}.get(method)
        elif sub is None:
            action = {enums.method.GET: enums.action.FETCH, enums.method.PATCH: enums.action.UPDATE,
                      enums.method.DELETE: enums.action.DELETE}.get(method)
    return rendering.Request(
        id=request_id, raw_request=raw_request, url=raw_request.url, method=raw_request.method,
        params=params, headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
        data=data, body=body, text=text, action=action, resource=resource,
        namespace=namespace, name=name, subresource=sub,
    )


def _parse_path(path: str) -> tuple[str | None, str | None, str | None, str | None, str | None, str | None]:
    """``(group, version, plural, namespace, name, subresource)`` of an API path."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return (None,) * 6  # type: ignore[return-value]
    namespace: str | None = None
    if rest[:1] == ["namespaces"]:
        # /namespaces, /namespaces/{ns}, /namespaces/{ns}/status|finalize are the Namespace resource
        if len(rest) <= 2 or rest[2] in ("status", "finalize"):
            name = rest[1] if len(rest) >= 2 else None
            sub = "/".join(rest[2:]) or None
            return group, version, "namespaces", None, name, sub
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) >= 2 else None
    sub = "/".join(rest[2:]) or None
    return group, version, plural, namespace, name, sub


def write_kubeconfig(path: Path, server_url: str, namespace: str = "default") -> Path:
    """Write a kubeconfig (JSON is valid YAML) pointing at ``server_url``, token auth."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "rig", "cluster": {"server": server_url}}],
        "users": [{"name": "rig", "user": {"token": "rig-token"}}],
        "contexts": [{"name": "rig", "context": {"cluster": "rig", "user": "rig", "namespace": namespace}}],
        "current-context": "rig",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


async def _serve(args: argparse.Namespace) -> None:
    from tests.k8s.kubelet import Kubelet  # the standalone rig runs both halves in one process

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with FakeApiServer() as api, kmock.Server(api, port=args.port) as server:
        url = f"http://127.0.0.1:{server.port}"
        write_kubeconfig(Path(args.kubeconfig), url, args.namespace)
        if args.namespace not in ("default", "kube-system"):
            api.seed(_NAMESPACES, None, {"metadata": {"name": args.namespace}})
        kubelet: Kubelet | None = None
        if not args.no_kubelet:
            kubelet = Kubelet(url, [n for n in args.nodes.split(",") if n], Path(args.workdir))
            await kubelet.start()
        print(f"READY {url}", flush=True)
        try:
            await stop.wait()
        finally:
            if kubelet is not None:
                await kubelet.stop()
            await api.close_watches()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m tests.k8s.apiserver``."""
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.apiserver", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (see the READY line)")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--namespace", default="default", help="created if missing; kubeconfig default")
    parser.add_argument("--nodes", default="node-a,node-b", help="comma-separated fake node names")
    parser.add_argument("--workdir", default="./rig-nodes", help="per-node working directories live here")
    parser.add_argument("--no-kubelet", action="store_true", help="API server only")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except Exception:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
