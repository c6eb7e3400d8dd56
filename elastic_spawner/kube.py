"""`ElasticKubeSpawner`: KubeSpawner with checkpoint/restore, a PDB per server and a preStop checkpoint.

Runs in the JupyterHub process. A thin subclass: the Kubernetes objects come from the pure
builders in `elastic_spawner.k8s`, the checkpoint/restore logic from `ElasticSpawnerMixin`, the
resize options from `elastic_spawner.resize`. What it adds to KubeSpawner:

- pod manifest: `ELASTIC_STORE_URL` / `ELASTIC_RESTORE_FROM` (mixin), store settings read from a
  Secret (`secretKeyRef`, never values in the pod spec), `ELASTIC_SERVER_PORT`, a preStop exec
  hook that asks the in-pod server extension for a deadline-aware checkpoint, a matching
  `terminationGracePeriodSeconds`, and the label the drain watcher selects on;
- a PodDisruptionBudget per server, created when the pod manifest is built (just before the pod
  is created, so there is no window without it) and deleted at stop and in `delete_forever`;
- hub-initiated stops checkpoint *before* KubeSpawner deletes the pod (it deletes with a 1 s
  grace period), and only when the pod is actually running;
- at start, a checkpoint newer than the one the hub knows (one the preStop hook took during an
  eviction or node shutdown the hub never saw) is restored instead;
- `user_options` `{"cpu": 4, "memory": "16G"}` or `{"size": "large"}`, validated against
  `cpu_range` / `memory_range` / `sizes` (used by `elastic_spawner.resize`).

    c.JupyterHub.spawner_class = "elastic-kube"
    c.ElasticSpawnerMixin.store_url = "s3://checkpoints/{username}/{servername}"
    c.ElasticKubeSpawner.store_secret_name = "elastic-store"
    c.ElasticKubeSpawner.termination_grace_period = 120
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from jupyterhub.utils import maybe_future
from kubernetes_asyncio.client.models import V1EnvVar, V1Lifecycle
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from kubespawner.utils import get_k8s_model
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate

from elastic_spawner.k8s import (
    MANAGED_LABEL,
    PDB_ANNOTATION,
    SELECTOR_LABELS,
    make_pdb,
    make_prestop_handler,
    pdb_name,
    secret_env,
)
from elastic_spawner.mixin import ElasticSpawnerMixin
from elastic_spawner.resize import SIZE_KEYS, SizePolicy, apply_size_options

ENV_SERVER_PORT = "ELASTIC_SERVER_PORT"
NOTEBOOK_CONTAINER = "notebook"  # KubeSpawner's name for the single-user container

DEFAULT_SECRET_KEYS = {
    "ELASTIC_S3_ENDPOINT": "endpoint",
    "ELASTIC_S3_ACCESS_KEY": "access-key",
    "ELASTIC_S3_SECRET_KEY": "secret-key",
    "ELASTIC_S3_SESSION_TOKEN": "session-token",
    "ELASTIC_S3_REGION": "region",
}


class ElasticKubeSpawner(ElasticSpawnerMixin, KubeSpawner):
    """KubeSpawner whose servers survive stops, drains, evictions and resizes."""

    termination_grace_period = Integer(
        120,
        min=10,
        help="""`terminationGracePeriodSeconds` of the single-user pod, in seconds.

        The budget of the preStop checkpoint on every termination the hub did not start
        (eviction, graceful node shutdown, spot notice): the hook's deadline is this minus
        `prestop_margin`. Keep it below the node's shutdown grace (kubelet
        `shutdownGracePeriod`) and the spot notice (about 30 s on GCP, 120 s on AWS) where those
        matter. Hub-initiated stops are not bound by it (they checkpoint before deleting).

            c.ElasticKubeSpawner.termination_grace_period = 60
        """,
    ).tag(config=True)

    prestop_checkpoint = Bool(
        True,
        help="""Add a preStop hook that checkpoints through the in-pod server extension.

        False leaves the container's lifecycle to `KubeSpawner.lifecycle_hooks`. A preStop
        configured there wins over this one (a warning is logged).

            c.ElasticKubeSpawner.prestop_checkpoint = False
        """,
    ).tag(config=True)

    prestop_margin = Float(
        5.0,
        min=1.0,
        help="""Seconds of the grace period kept free after the preStop checkpoint's deadline.

        Covers the manifest commit and SIGTERM handling. Must be below
        `termination_grace_period`.

            c.ElasticKubeSpawner.prestop_margin = 10
        """,
    ).tag(config=True)

    prestop_busy_timeout = Float(
        5.0,
        min=0.0,
        help="""Seconds the preStop checkpoint waits for a busy kernel (at most half the budget).

            c.ElasticKubeSpawner.prestop_busy_timeout = 10
        """,
    ).tag(config=True)

    prestop_python = Unicode(
        "python3",
        help="""The Python executable inside the single-user image that runs the preStop script.

            c.ElasticKubeSpawner.prestop_python = "/opt/conda/bin/python"
        """,
    ).tag(config=True)

    pdb_enabled = Bool(
        True,
        help="""Create a PodDisruptionBudget (`minAvailable: 1`) for every server.

        It makes voluntary evictions (kubectl drain, cluster-autoscaler, Karpenter) wait until the
        drain watcher (`elastic_spawner.drain`) has checkpointed and moved the server. Without
        the watcher running, a PDB would hold a drain until the server stops: keep both or
        neither. Needs `create`/`delete` on `policy/poddisruptionbudgets` (docs/kubernetes.md).

            c.ElasticKubeSpawner.pdb_enabled = False
        """,
    ).tag(config=True)

    store_secret_name = Unicode(
        "",
        help="""Name of a Secret (in the servers' namespace) holding the checkpoint store settings.

        Each entry of `store_secret_keys` becomes an env var of the single-user container with
        `valueFrom.secretKeyRef`, so credentials never appear in the pod spec. Empty: no Secret
        (a file:// store, or credentials from the node's IAM role).

            c.ElasticKubeSpawner.store_secret_name = "elastic-store"
        """,
    ).tag(config=True)

    store_secret_keys = Dict(
        DEFAULT_SECRET_KEYS,
        help="""Env var -> key in `store_secret_name`. Missing keys leave the variable unset.

        A plain value configured for one of these variables elsewhere (e.g.
        `KubeSpawner.environment`) is replaced by the Secret reference.

            c.ElasticKubeSpawner.store_secret_keys = {
                "ELASTIC_S3_ACCESS_KEY": "AWS_ACCESS_KEY_ID",
                "ELASTIC_S3_SECRET_KEY": "AWS_SECRET_ACCESS_KEY",
            }
        """,
    ).tag(config=True)

    adopt_newer_checkpoints = Bool(
        True,
        help="""At start, restore a checkpoint newer than the one in the hub's state, if any.

        The preStop hook checkpoints when a pod is evicted or its node shuts down without the
        hub being involved; the hub then only sees the pod gone. With this on, `start()` looks
        for the newest server checkpoint in the store (`<store>/servers`) and restores it when it
        is newer than every checkpoint the hub knows of. The hub process needs read access to
        the store (the same `ELASTIC_S3_*` variables). Only with `checkpoint_on_stop = "always"`.

            c.ElasticKubeSpawner.adopt_newer_checkpoints = False
        """,
    ).tag(config=True)

    cpu_range = List(
        [0.1, 64.0],
        minlen=2,
        maxlen=2,
        help="""Smallest and largest CPU count accepted in `user_options["cpu"]`.

            c.ElasticKubeSpawner.cpu_range = [0.5, 16]
        """,
    ).tag(config=True)

    memory_range = List(
        ["128M", "256G"],
        minlen=2,
        maxlen=2,
        help="""Smallest and largest memory accepted in `user_options["memory"]`.

        Units as `Spawner.mem_limit`: K, M, G, T (powers of 1024), also Ki/Mi/Gi/Ti.

            c.ElasticKubeSpawner.memory_range = ["1G", "64G"]
        """,
    ).tag(config=True)

    sizes = Dict(
        {},
        help="""Named sizes accepted as `user_options["size"]`: name -> {"cpu": n, "memory": "xG"}.

        Named sizes bypass `cpu_range`/`memory_range` (the admin wrote them). A start with
        `{"cpu": 4, "memory": "16G"}` or `{"size": "large"}` sets the pod's requests and limits
        (requests = limits); anything invalid is a 400 naming the allowed values.

            c.ElasticKubeSpawner.sizes = {"small": {"cpu": 1, "memory": "4G"},
                                          "large": {"cpu": 8, "memory": "32G"}}
        """,
    ).tag(config=True)

    @validate("prestop_margin")
    def _validate_margin(self, proposal: dict[str, Any]) -> float:
        margin = float(proposal["value"])
        if margin >= self.termination_grace_period:
            raise ValueError(
                f"ElasticKubeSpawner.prestop_margin = {margin} must be below "
                f"termination_grace_period = {self.termination_grace_period}"
            )
        return margin

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Any, dict[str, Any]], None]:
        return _apply_size_user_options

    # ---- sizes -----------------------------------------------------------------------------

    @property
    def size_policy(self) -> SizePolicy:
        """The resize policy built from `cpu_range`, `memory_range` and `sizes`."""
        return SizePolicy.from_traits(self.cpu_range, self.memory_range, self.sizes)

    # ---- pod manifest ----------------------------------------------------------------------

    def get_env(self) -> dict[str, Any]:
        env = super().get_env()
        env[ENV_SERVER_PORT] = str(self.port)  # the preStop script's way back to the server
        return env

    async def get_pod_manifest(self) -> Any:
        """KubeSpawner's pod, plus Secret env, preStop hook, grace period, label and PDB."""
        pod = await super().get_pod_manifest()
        md = pod.metadata
        md.labels = {**(md.labels or {}), MANAGED_LABEL: "true"}
        container = next(
            (c for c in pod.spec.containers if c.name == NOTEBOOK_CONTAINER), pod.spec.containers[0]
        )
        if self.store_secret_name:
            wanted = secret_env(self.store_secret_name, self.store_secret_keys)
            names = {e["name"] for e in wanted}
            container.env = [e for e in (container.env or []) if e.name not in names]
            container.env += [get_k8s_model(V1EnvVar, e) for e in wanted]
        pod.spec.termination_grace_period_seconds = self.termination_grace_period
        if self.prestop_checkpoint:
            lifecycle = container.lifecycle or V1Lifecycle()
            if lifecycle.pre_stop:
                self.log.warning(
                    "Elastic: %s has a preStop hook from KubeSpawner.lifecycle_hooks; not adding "
                    "the checkpoint hook (ElasticKubeSpawner.prestop_checkpoint)", self._elastic_name,
                )
            else:
                lifecycle.pre_stop = make_prestop_handler(
                    self.termination_grace_period,
                    margin=self.prestop_margin,
                    busy_timeout=self.prestop_busy_timeout,
                    python=self.prestop_python,
                )
                container.lifecycle = lifecycle
        if self.pdb_enabled:
            selector = {k: md.labels[k] for k in SELECTOR_LABELS if k in md.labels}
            name = pdb_name(self.pod_name)
            md.annotations = {**(md.annotations or {}), PDB_ANNOTATION: name}
            # Here, not in start(): the labels are final, and the pod is created right after.
            await self._ensure_pdb(name, selector)
        return pod

    # ---- PodDisruptionBudget ---------------------------------------------------------------

    @property
    def _policy_api(self) -> Any:
        return shared_client("PolicyV1Api")

    async def _ensure_pdb(self, name: str, selector: dict[str, str]) -> None:
        body = make_pdb(name, selector, annotations={
            "hub.jupyter.org/username": self.user.name,
            "hub.jupyter.org/servername": self.name or "",
        })
        try:
            await self._policy_api.create_namespaced_pod_disruption_budget(
                self.namespace, body, _request_timeout=self.k8s_api_request_timeout
            )
            self.log.info("Elastic: created PodDisruptionBudget %s/%s for %s", self.namespace,
                          name, self._elastic_name)
        except ApiException as e:
            if e.status != 409:
                raise
            self.log.debug("Elastic: PodDisruptionBudget %s/%s exists already", self.namespace, name)

    async def delete_pdb(self) -> None:
        """Delete this server's PDB (absent is fine: the drain watcher may have released it)."""
        if not self.pdb_enabled:
            return
        name = pdb_name(self.pod_name)
        try:
            await self._policy_api.delete_namespaced_pod_disruption_budget(
                name, self.namespace, _request_timeout=self.k8s_api_request_timeout
            )
            self.log.info("Elastic: deleted PodDisruptionBudget %s/%s of %s", self.namespace, name,
                          self._elastic_name)
        except ApiException as e:
            if e.status != 404:
                raise

    # ---- lifecycle -------------------------------------------------------------------------

    def _current_pod(self) -> dict[str, Any] | None:
        reflector = self.__class__.reflectors.get(self._get_reflector_key("pods"))
        if reflector is None:
            return None
        return reflector.pods.get(f"{self.namespace}/{self.pod_name}")

    def _elastic_node(self) -> str | None:
        pod = self._current_pod()
        return ((pod or {}).get("spec") or {}).get("nodeName") or None

    async def start(self) -> Any:
        # A stale future from the previous start would end KubeSpawner.progress() at once.
        self._start_future = None
        if self.adopt_newer_checkpoints and self.checkpoint_on_stop == "always":
            await self._adopt_newer_checkpoint()
        return await super().start()

    async def checkpoint_before_stop(self) -> Any:
        """The mixin's checkpoint, only if the pod is Running, ready and not terminating.

        A Pending pod has no kernels; a terminating one is checkpointing in its preStop hook
        already (a second checkpoint would race it).
        """
        if self.checkpoint_on_stop != "never":
            await self._start_watching_pods()
            pod = self._current_pod()
            if not self.is_pod_running(pod):
                phase = ((pod or {}).get("status") or {}).get("phase") if pod else "gone"
                if pod and pod["metadata"].get("deletionTimestamp"):
                    phase = "terminating"
                self.log.info("Elastic: pod of %s is %s; not checkpointing (the next start "
                              "restores %s)", self._elastic_name, phase,
                              self.restore_pointer or "nothing")
                return None
        return await super().checkpoint_before_stop()

    async def stop(self, now: bool = False) -> None:
        """Checkpoint (mixin), delete the pod (KubeSpawner), then release the PDB."""
        await super().stop(now=now)
        await self.delete_pdb()

    async def delete_forever(self) -> None:
        await super().delete_forever()
        await self.delete_pdb()

    async def _adopt_newer_checkpoint(self) -> None:
        """Restore a store checkpoint newer than any the hub knows (taken by the preStop hook)."""
        st = self._elastic()
        store = self.expanded_store_url()
        try:
            latest = await asyncio.to_thread(latest_server_checkpoint, store)
        except Exception as e:  # no store access from the hub: keep the hub's pointer
            self.log.warning("Elastic: cannot list checkpoints of %s in %s (%s); restoring %s",
                             self._elastic_name, store, e, st["checkpoint"] or "nothing")
            return
        if latest is None:
            return
        known = [p for p in (st["checkpoint"], st["restored_from"],
                             *(h.get("checkpoint") for h in st["history"][:1])) if p]
        newest_known = max((p.rpartition("#")[2] for p in known), default="")
        created = self.created_at
        if created and latest.rpartition("#")[2] < created:
            # older than this server: a deleted user's or server's of the same name (a recycled
            # account), never this one's
            self.log.info("Elastic: not adopting %s for %s: it predates this server (%s)",
                          latest, self._elastic_name, created)
            return
        if latest.rpartition("#")[2] > newest_known:
            self.log.info("Elastic: %s has a checkpoint the hub did not take (%s, newer than %s); "
                          "restoring it", self._elastic_name, latest, newest_known or "none")
            st["checkpoint"] = latest
            self._persist_state()


def latest_server_checkpoint(store_url: str) -> str | None:
    """Pointer to the newest server checkpoint under `store_url`, or None (blocking I/O)."""
    from kernel_agent.server.pointer import format_pointer, servers_store_url
    from kernel_agent.store import open_store

    cid = open_store(servers_store_url(store_url)).latest()
    return format_pointer(store_url, cid) if cid else None


async def _apply_size_user_options(spawner: ElasticKubeSpawner, user_options: dict[str, Any]) -> None:
    """Default `apply_user_options`: `{"cpu", "memory"}` or `{"size"}`; invalid -> HTTP 400.
    KubeSpawner's own keys (a `profile_list`'s profile and its options) are its to read."""
    unknown = set(user_options or {}) - set(SIZE_KEYS)
    profiles = await _profile_keys(spawner) if unknown else set()
    apply_size_options(spawner, user_options, spawner.size_policy, understood_elsewhere=profiles)


async def _profile_keys(spawner: ElasticKubeSpawner) -> set[str]:
    """The `user_options` keys KubeSpawner's `load_user_options` reads for the configured
    `profile_list`: `profile`, and each profile option's slug (and its `--unlisted-choice`)."""
    profiles: Any = spawner.profile_list
    if callable(profiles):
        profiles = await maybe_future(profiles(spawner))
    if isinstance(profiles, dict):  # (KubeSpawner 7 also takes {slug: profile})
        profiles = list(profiles.values())
    if not profiles:
        return set()
    keys = {"profile"}
    for profile in profiles:
        options = profile.get("profile_options") or {} if isinstance(profile, dict) else {}
        for option in options:
            keys |= {str(option), f"{option}--unlisted-choice"}
    return keys
