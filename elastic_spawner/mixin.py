"""`ElasticSpawnerMixin`: checkpoint a server's kernels before it stops, restore them at the next start.

Runs in the JupyterHub process, mixed into any Spawner (`ElasticLocalProcessSpawner`,
`ElasticKubeSpawner`). It never talks to kernels: it calls the single-user server's elastic
API (`kernel_agent.server`, see `elastic_spawner.serverapi`), which checkpoints every kernel of
the server and answers with one pointer. The pointer is kept in spawner state (the hub database),
so it survives the `clear_state()` the hub calls at every spawn and stop, and hub restarts; the
next start hands it to the server in `ELASTIC_RESTORE_FROM`.

    c.JupyterHub.spawner_class = "elastic-local"          # or "elastic-kube"
    c.ElasticSpawnerMixin.store_url = "file:///srv/elastic/{username}/{servername}"
    c.ElasticSpawnerMixin.checkpoint_on_stop = "always"

Two JupyterHub facts shape this module:
- `Spawner.api_token` lives in hub memory only; after a hub restart it is empty for servers that
  kept running. The checkpoint call then uses a short-lived token minted for this one server
  (`access:servers!server=<user>/<name>`) and deleted right after.
- The hub removes the proxy route *before* `Spawner.stop()` and forgets the server whatever
  `stop()` raises. "Refuse to stop" therefore detaches the still-running server (its process
  and kernels stay intact, its token is kept) and the next start re-attaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from traitlets import CaselessStrEnum, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from elastic_spawner.serverapi import (
    CheckpointResult,
    ElasticAPIError,
    ElasticServerClient,
    ServerStatus,
)
from elastic_spawner.storeurl import expand_store_url

STATE_KEY = "elastic"
ENV_RESTORE_FROM = "ELASTIC_RESTORE_FROM"
ENV_STORE_URL = "ELASTIC_STORE_URL"
ENV_CHECKPOINT_KEY = "ELASTIC_CHECKPOINT_KEY"  # read by the server extension and the kernels
ENV_HUB_SECRET = "ELASTIC_HUB_SECRET"  # the hub's own environment: default of `hub_secret`
KEY_CONTEXT = "elastic-checkpoint:"


def derive_checkpoint_key(hub_secret: str, username: str, servername: str, salt: str = "") -> str:
    """The per-server checkpoint key: HMAC-SHA256(hub secret, "elastic-checkpoint:user/server").

    One key per user and server, so a server (and the user code in its kernels, which can read
    its own key) can sign only its own checkpoints; the hub secret never leaves the hub.
    `servername` is JupyterHub's server name ("" for the default server). `salt`: the server's
    own random salt (spawner state), appended after a NUL, so a user or server deleted and
    created again under the same name has another key ("" for servers from before salts).
    """
    msg = f"{KEY_CONTEXT}{username}/{servername}" + (f"\0{salt}" if salt else "")
    return hmac.new(hub_secret.encode(), msg.encode(), hashlib.sha256).hexdigest()

# Compact per-kernel summary kept in state: names only, capped, so the hub DB row stays small.
_SUMMARY_KEYS = ("shipped", "recomputed", "lost", "rerun_cells", "cells", "stats", "plan", "checkpoint_id")
_MAX_NAMES = 200

# What a detached server (refused stop) needs besides its state, by (user, server): its API token
# (the hub keeps the token row thanks to will_resume; a re-attach hands it back) and whatever the
# wrapped spawner holds in memory only (LocalProcessSpawner's Popen, which reaps the process).
# Memory only, like Spawner.api_token: the Spawner object itself is dropped by the hub after stop.
_detached_memory: dict[tuple[str, str], dict[str, Any]] = {}


class CheckpointRefused(RuntimeError):
    """Raised from `stop()` when the checkpoint failed and `on_checkpoint_failure = "refuse"`."""


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _compact_summary(summary: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _SUMMARY_KEYS:
        if key not in summary:
            continue
        value = summary[key]
        if isinstance(value, list) and len(value) > _MAX_NAMES:
            value = value[:_MAX_NAMES] + [f"... {len(value) - _MAX_NAMES} more"]
        out[key] = value
    return out


class ElasticSpawnerMixin(LoggingConfigurable):
    """Checkpoint-before-stop and restore-after-start for any JupyterHub Spawner.

    Put it first in the bases: `class MySpawner(ElasticSpawnerMixin, SomeSpawner)`.
    """

    checkpoint_on_stop = CaselessStrEnum(
        ["always", "on_request", "never"],
        default_value="always",
        help="""When the hub checkpoints a server's kernels as it stops the server.

        - "always": every stop the hub performs (user, admin, idle culler, hub shutdown with
          `JupyterHub.cleanup_servers`) first checkpoints all kernels; the next start restores them.
        - "on_request": the hub does not checkpoint; if a checkpoint was requested while the
          server ran (`POST api/elastic/checkpoint` on the server, e.g. by
          `elastic-spawner migrate` or the user), the next start restores that one.
          Otherwise the next start is fresh.
        - "never": no checkpoint, and the next start is fresh.

        A server that died on its own (crash, OOM kill) is not checkpointed; the next start restores
        the last checkpoint taken, if any.

            c.ElasticSpawnerMixin.checkpoint_on_stop = "on_request"
        """,
    ).tag(config=True)

    on_checkpoint_failure = CaselessStrEnum(
        ["stop", "refuse"],
        default_value="stop",
        help="""What a failed or incomplete checkpoint before a stop means.

        - "stop": stop anyway and log a warning naming the kernels that were not saved. Kernels
          that were saved are restored at the next start; if none was, the next start is fresh.
        - "refuse": do not stop: the server process and its kernels keep running, `stop()` raises
          `CheckpointRefused`. JupyterHub has already removed the proxy route by then and marks the
          server stopped, so the server is detached; the next start of the same server
          re-attaches it, with its kernels untouched.

            c.ElasticSpawnerMixin.on_checkpoint_failure = "refuse"
        """,
    ).tag(config=True)

    store_url = Unicode(
        "file:///srv/elastic/{username}/{servername}",
        help="""Where checkpoints go: a store URL template, one prefix per user and server.

        `file:///abs/dir` or `s3://bucket/prefix`. `{username}` and `{servername}` are expanded
        (URL-escaped; `{servername}` is "default" for a user's default server, and "~default"
        for a named server called "default", so the two never share a prefix). Keep
        `{username}` and `{servername}` in the template so servers never share a prefix. S3
        credentials are the single-user server's business (its environment), not the hub's.

            c.ElasticSpawnerMixin.store_url = "s3://checkpoints/{username}/{servername}"
        """,
    ).tag(config=True)

    keep_checkpoints = Integer(
        5,
        min=0,
        help="""How many checkpoints of each server the hub remembers in its state, newest first.

        The newest is what the next start restores; the others are history for admins
        (pointer, time, node, per-kernel summary; `elastic-spawner checkpoints`). The hub does not
        delete checkpoint data from the store: blobs are shared between checkpoints, and pruning
        is the store's and the kernel agent's job. 0 means remember all.

            c.ElasticSpawnerMixin.keep_checkpoints = 10
        """,
    ).tag(config=True)

    checkpoint_timeout = Float(
        120.0,
        min=1.0,
        help="""Seconds a checkpoint may take once the kernels are idle (its deadline).

        Passed to the server as the checkpoint `deadline`; the planner then recomputes more at
        restore to finish in time. A checkpoint that does not answer within busy_timeout +
        checkpoint_timeout + 30 s counts as failed (see `on_checkpoint_failure`).

            c.ElasticSpawnerMixin.checkpoint_timeout = 25  # e.g. inside a 30 s grace period
        """,
    ).tag(config=True)

    busy_timeout = Float(
        10.0,
        min=0.0,
        help="""Seconds to wait for a busy kernel (a cell still running) before checkpointing it.

        A kernel still busy after this is reported as not checkpointed, never interrupted.
        0 means do not wait.

            c.ElasticSpawnerMixin.busy_timeout = 30
        """,
    ).tag(config=True)

    restore_wait_timeout = Float(
        300.0,
        min=0.0,
        help="""Seconds `start()` follows a restore so its progress shows on the spawn page.

        The server restores by itself at start-up; the hub only watches. Waiting is capped by
        `Spawner.start_timeout` (minus a few seconds), after which the spawn completes and the
        restore goes on in the server. 0 means do not wait.

            c.ElasticSpawnerMixin.restore_wait_timeout = 120
        """,
    ).tag(config=True)

    hub_secret = Unicode(
        "",
        help=f"""Secret from which each server's checkpoint key is derived (never logged).

        When set, every server gets `{ENV_CHECKPOINT_KEY}` =
        HMAC-SHA256(hub_secret, "elastic-checkpoint:<username>/<servername>"): its kernels and
        its server extension sign every manifest they write with it and refuse, before anything
        is unpickled, a checkpoint that is unsigned, altered, or signed with another key (another
        user's). Rotating the secret makes older checkpoints unreadable. Empty: checkpoints are
        not authenticated (rely on the store's access control alone; see docs/threat-model.md).
        Default: the hub's `{ENV_HUB_SECRET}` environment variable.

            c.ElasticSpawnerMixin.hub_secret = open("/etc/jupyterhub/elastic-secret").read().strip()
        """,
    ).tag(config=True)

    @default("hub_secret")
    def _default_hub_secret(self) -> str:
        return os.environ.get(ENV_HUB_SECRET, "")

    def checkpoint_key(self) -> str | None:
        """This user's and server's checkpoint key, or None when no hub secret is configured."""
        if not self.hub_secret:
            return None
        return derive_checkpoint_key(
            self.hub_secret,
            self.user.name,  # type: ignore[attr-defined]
            self.name or "",  # type: ignore[attr-defined]
            self._key_salt(),
        )

    def _key_salt(self) -> str:
        """This server's key salt, made at its first start and kept in its state for good.

        The store prefix and the unsalted key depend on the names only: a user deleted and
        created again (a recycled account) got the old user's key and restored the old user's
        checkpoints (still in the store under that name) into the new user's kernels. The salt
        lives in the spawner's database row, which the hub deletes with the user or the named
        server. A server that already has checkpoints from before salts keeps the unsalted key
        (its checkpoints stay readable).
        """
        st = self._elastic()
        if st["key_salt"] is None:
            legacy = st["checkpoint"] or st["history"] or st["restored_from"] or st["detached"]
            st["key_salt"] = "" if legacy else secrets.token_hex(16)
            # when this server came to be, in checkpoint-id form: checkpoints in its store prefix
            # older than that are a deleted namesake's (`ElasticKubeSpawner` adopts none of them)
            st["created"] = None if legacy else datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        return st["key_salt"]

    @property
    def created_at(self) -> str | None:
        """When this server was first started (UTC, `YYYYmmddTHHMMSSffffffZ` like checkpoint ids).

        None for a server from before this was recorded. Checkpoints under its store prefix
        older than this belong to a server or user deleted before it, with the same name.
        """
        self._key_salt()
        return self._elastic().get("created")

    def checkpoint_key_env(self, key: str) -> dict[str, str]:
        """How the key reaches the server: environment variables merged into `get_env()`.

        Hook for spawners that can do better than plain environment: a Kubernetes spawner
        should put the key in a per-user Secret, reference it from the pod
        (`valueFrom.secretKeyRef`) and return {} here.
        """
        return {ENV_CHECKPOINT_KEY: key}

    @validate("store_url")
    def _validate_store_url(self, proposal: dict[str, Any]) -> str:
        url = str(proposal["value"]).strip()
        if not url.startswith(("file:///", "s3://")):
            raise TraitError(
                f"ElasticSpawnerMixin.store_url = {url!r}: must be a file:///abs/dir or "
                "s3://bucket/prefix URL template"
            )
        if "{username}" not in url:
            self.log.warning(
                "ElasticSpawnerMixin.store_url = %r has no {username}: users' checkpoints "
                "share one prefix",
                url,
            )
        if "{servername}" not in url:
            # a user's servers (default and named) share a home, so their notebooks have the
            # same paths and the same kernel stores under a shared prefix: one server's restore
            # can pick up another's newer background round, retention counts them as one server
            self.log.warning(
                "ElasticSpawnerMixin.store_url = %r has no {servername}: a user's named servers "
                "and default server share one prefix",
                url,
            )
        return url

    # ---- state ---------------------------------------------------------------------------

    def _elastic(self) -> dict[str, Any]:
        """This spawner's elastic state (created lazily: mixins cannot rely on __init__ order)."""
        st = self.__dict__.get("_elastic_state")
        if st is None:
            st = {"checkpoint": None, "restored_from": None, "history": [], "detached": None,
                  "key_salt": None, "created": None}
            self.__dict__["_elastic_state"] = st
        return st

    @property
    def restore_pointer(self) -> str | None:
        """The checkpoint the next start restores (None: start fresh)."""
        return self._elastic()["checkpoint"]

    @property
    def checkpoint_history(self) -> list[dict[str, Any]]:
        """Recent checkpoints of this server, newest first (pointer, time, complete, kernels)."""
        return list(self._elastic()["history"])

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        saved = state.get(STATE_KEY) or {}
        st = self._elastic()
        st["checkpoint"] = saved.get("checkpoint") or None
        st["restored_from"] = saved.get("restored_from") or None
        st["history"] = list(saved.get("history") or [])
        st["detached"] = saved.get("detached") or None
        st["key_salt"] = saved.get("key_salt")  # None: not made yet; "": a server from before salts
        st["created"] = saved.get("created") or None

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        st = self._elastic()
        if st["checkpoint"] or st["history"] or st["detached"] or st["restored_from"] or st["key_salt"]:
            state[STATE_KEY] = {k: v for k, v in st.items() if v or (k == "key_salt" and v == "")}
        return state

    def clear_state(self) -> None:
        """Clear the server's state but keep the checkpoint pointer: it must outlive the server.

        The hub calls this at every spawn (before `start`) and after every stop.
        """
        super().clear_state()  # type: ignore[misc]

    # ---- helpers ---------------------------------------------------------------------------

    @property
    def _elastic_name(self) -> str:
        return f"{self.user.name}/{self.name}"  # type: ignore[attr-defined]

    def expanded_store_url(self) -> str:
        """`store_url` for this user and server."""
        return expand_store_url(self.store_url, self.user.name, self.name or "")  # type: ignore[attr-defined]

    def _server_url(self) -> str | None:
        server = getattr(self, "server", None)
        if server is None or not server.port:
            return None
        return server.url

    @contextlib.asynccontextmanager
    async def _server_token(self) -> AsyncIterator[str]:
        """A token with `access:servers` on this server.

        The spawner's own api_token while the hub has it; after a hub restart (api_token is
        memory-only) a token minted for this one server, expiring soon and deleted on exit.
        """
        if self.api_token:  # type: ignore[attr-defined]
            yield self.api_token  # type: ignore[attr-defined]
            return
        from jupyterhub import orm

        user = self.user  # type: ignore[attr-defined]
        token = user.new_api_token(
            note=f"elastic-spawner: checkpoint of {self._elastic_name}",
            scopes=[f"access:servers!server={user.name}/{self.name}"],  # type: ignore[attr-defined]
            expires_in=int(self.busy_timeout + self.checkpoint_timeout + 120),
        )
        self.log.info(
            "Elastic: no api_token for %s (hub restarted since it started); using a short-lived "
            "token scoped to this server",
            self._elastic_name,
        )
        try:
            yield token
        finally:
            db = user.db
            orm_token = orm.APIToken.find(db, token)
            if orm_token is not None:
                db.delete(orm_token)
                db.commit()

    def _record(self, result: CheckpointResult) -> None:
        """Make `result` the checkpoint the next start restores and remember it in the history."""
        st = self._elastic()
        st["checkpoint"] = result.checkpoint
        entry = {
            "checkpoint": result.checkpoint,
            "time": _utcnow(),
            "complete": result.complete,
            "kernels": [
                {
                    "path": k.path,
                    "kernel_name": k.kernel_name,
                    "status": k.status,
                    **({"error": k.error[:500]} if k.error else {}),
                    **({"summary": _compact_summary(k.summary)} if k.summary else {}),
                }
                for k in result.kernels
            ],
        }
        node = self._elastic_node()
        if node:
            entry["node"] = node
        history = [h for h in st["history"] if h.get("checkpoint") != result.checkpoint]
        history.insert(0, entry)
        if self.keep_checkpoints:
            history = history[: self.keep_checkpoints]
        st["history"] = history
        self._persist_state()

    def _elastic_node(self) -> str | None:
        """Where the server runs (a node name), for the history; subclasses override."""
        return None

    def _elastic_start_message(self) -> str | None:
        """First spawn-page message of a start (e.g. the node); subclasses override."""
        return None

    def _persist_state(self) -> None:
        """Write state to the hub database now, not only when the hub next saves it."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is None:
            return
        try:
            orm_spawner.state = self.get_state()
            self.user.db.commit()  # type: ignore[attr-defined]
        except Exception:
            self.log.exception("Elastic: could not save state of %s", self._elastic_name)

    # ---- environment and start -------------------------------------------------------------

    def get_env(self) -> dict[str, str]:
        env = super().get_env()  # type: ignore[misc]
        self._key_salt()  # this server's salt and creation time, kept in its state from now on
        env[ENV_STORE_URL] = self.expanded_store_url()
        key = self.checkpoint_key()
        if key:
            env.update(self.checkpoint_key_env(key))
        else:
            env.pop(ENV_CHECKPOINT_KEY, None)  # never pass on a key that is not this server's
        pointer = self.restore_pointer if self.checkpoint_on_stop != "never" else None
        if pointer:
            env[ENV_RESTORE_FROM] = pointer
        else:
            env.pop(ENV_RESTORE_FROM, None)
        return env

    def _progress_state(self) -> tuple[list[dict[str, Any]], asyncio.Condition, dict[str, bool]]:
        p = self.__dict__.get("_elastic_progress")
        if p is None:
            p = ([], asyncio.Condition(), {"done": False})
            self.__dict__["_elastic_progress"] = p
        return p

    async def _emit(self, event: dict[str, Any]) -> None:
        events, cond, _ = self._progress_state()
        async with cond:
            events.append(event)
            cond.notify_all()

    async def _progress_done(self) -> None:
        _, cond, flags = self._progress_state()
        async with cond:
            flags["done"] = True
            cond.notify_all()

    async def start(self) -> Any:
        events, _, flags = self._progress_state()
        events.clear()
        flags["done"] = False
        t0 = time.monotonic()
        try:
            message = self._elastic_start_message()
            if message:
                await self._emit({"message": message})
            reattached = await self._reattach_detached()
            if reattached is not None:
                return reattached
            pointer = self.restore_pointer if self.checkpoint_on_stop != "never" else None
            if pointer:
                await self._emit({"message": f"Restoring your session from checkpoint {pointer}"})
            url = await super().start()  # type: ignore[misc]
            if pointer:
                self._elastic()["restored_from"] = pointer
                if self.restore_wait_timeout:
                    budget = min(self.restore_wait_timeout,
                                 self.start_timeout - (time.monotonic() - t0) - 5)  # type: ignore[attr-defined]
                    await self._follow_restore(url, pointer, budget)
            return url
        finally:
            await self._progress_done()

    async def _follow_restore(self, url: Any, pointer: str, budget: float) -> None:
        """Relay the server's restore progress to the spawn page until it ends or `budget` runs out."""
        if isinstance(url, tuple):
            url = f"http://{url[0]}:{url[1]}"
        base = url.rstrip("/") + self.server.base_url  # type: ignore[attr-defined]
        client = ElasticServerClient(base, self.api_token)  # type: ignore[attr-defined]
        deadline = time.monotonic() + max(budget, 0)
        seen = idle_answers = 0
        while time.monotonic() < deadline:
            if await self.poll() is not None:  # type: ignore[attr-defined]
                self.log.warning("Elastic: %s exited while restoring", self._elastic_name)
                return
            try:
                status = await client.status(timeout=5)
            except ElasticAPIError as e:
                if e.status in (401, 403, 404):
                    self.log.warning("Elastic: cannot follow the restore of %s: %s", self._elastic_name, e)
                    await self._emit({"message": f"Restore progress unavailable ({e.status})"})
                    return
                status = None  # still starting up
            if status is not None and status.restore.state == "idle":
                idle_answers += 1
                if idle_answers >= 3:  # up and not restoring: it was not told to, or ignored it
                    self.log.warning("Elastic: %s is up but not restoring %s", self._elastic_name, pointer)
                    await self._emit({"message": "The server did not restore the checkpoint"})
                    return
            elif status is not None:
                new = status.restore.progress[seen:]
                seen = len(status.restore.progress)
                for p in new:
                    await self._emit(_hub_event(p))
                if status.restore.finished:
                    self._log_restore(status.restore.state, status.restore.kernels, pointer)
                    return
            await asyncio.sleep(0.25)  # poll interval of a bounded poll, not synchronisation
        self.log.info("Elastic: %s still restoring after %.0fs; the spawn completes, the "
                      "server goes on restoring", self._elastic_name, budget)
        await self._emit({"message": "Restore continues in the background"})

    def _log_restore(self, state: str, kernels: list[Any], pointer: str) -> None:
        failed = [k for k in kernels if k.status not in ("ok", "done", "")]
        if state == "done" and not failed:
            self.log.info("Elastic: %s restored %d kernel(s) from %s", self._elastic_name,
                          len(kernels), pointer)
        else:
            self.log.warning(
                "Elastic: restore of %s from %s ended %s; not restored: %s", self._elastic_name,
                pointer, state, ", ".join(f"{k.path or k.kernel_id} ({k.error or k.status})"
                                          for k in failed) or "-",
            )

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Spawn-page events: the wrapped spawner's, then the restore's as the server reports them."""
        async for event in super().progress():  # type: ignore[misc]
            yield event
        events, cond, flags = self._progress_state()
        sent = 0
        while True:
            async with cond:
                while sent >= len(events) and not flags["done"]:
                    await cond.wait()
                batch = events[sent:]
                sent = len(events)
                done = flags["done"]
            for event in batch:
                yield event
            if done:
                return

    # ---- stop ------------------------------------------------------------------------------

    async def stop(self, now: bool = False) -> None:
        """Checkpoint first (unless `now`: an immediate stop of a failed server), then stop."""
        if not now:
            try:
                await self.checkpoint_before_stop()
            except CheckpointRefused:
                raise
            except Exception as e:  # a bug here must not leave a server the hub cannot stop
                self.log.exception("Elastic: checkpoint of %s before stop crashed", self._elastic_name)
                await self._checkpoint_failed(f"{type(e).__name__}: {e}", None)
        await super().stop(now=now)  # type: ignore[misc]

    async def checkpoint_before_stop(self) -> CheckpointResult | None:
        """Apply `checkpoint_on_stop` to a server about to stop; returns the checkpoint taken.

        Raises `CheckpointRefused` when the checkpoint failed and the policy is "refuse".
        """
        st = self._elastic()
        policy = self.checkpoint_on_stop
        if policy == "never":
            if st["checkpoint"]:
                self.log.info("Elastic: not checkpointing %s (checkpoint_on_stop=never); the next "
                              "start is fresh", self._elastic_name)
            st["checkpoint"] = None
            return None
        if await self.poll() is not None:  # type: ignore[attr-defined]
            self.log.info("Elastic: %s is not running; nothing to checkpoint, the next start "
                          "restores %s", self._elastic_name, st["checkpoint"] or "nothing")
            return None
        url = self._server_url()
        if url is None:
            return None
        async with self._server_token() as token:
            client = ElasticServerClient(url, token)
            if policy == "on_request":
                return await self._adopt_requested(client)
            status = await self._wait_for_restore(client)
            # The restore of the pointer failed in this server and none of its kernels came
            # back: nothing ran on top of that checkpoint, so it is still the session to restore
            # if this checkpoint fails too (store still unreachable), not a stale one.
            unrestored = bool(
                status is not None and status.restore.state == "failed"
                and st["checkpoint"] and st["checkpoint"] == st["restored_from"]
                and not any(k.status in ("ok", "partial") for k in status.restore.kernels))
            self.log.info("Elastic: checkpointing %s before stop", self._elastic_name)
            t0 = time.monotonic()
            try:
                result = await client.checkpoint(
                    store=self.expanded_store_url(),
                    busy_timeout=self.busy_timeout,
                    deadline=self.checkpoint_timeout,
                )
            except ElasticAPIError as e:
                if e.reason == "unreachable":
                    self.log.warning("Elastic: %s does not answer (%s); stopping without a "
                                     "checkpoint, the next start restores %s", self._elastic_name,
                                     e, st["checkpoint"] or "nothing")
                    return None
                if e.status == 409 and st["checkpoint"] and st["checkpoint"] == st["restored_from"]:
                    # The server refuses to checkpoint while it restores. Its kernels are still
                    # (being) the checkpoint it restores, which must stay the next start's: a
                    # failed checkpoint would make the next start fresh and lose the session.
                    self.log.warning("Elastic: %s is still restoring %s; stopping without a new "
                                     "checkpoint, the next start restores that one again (cells "
                                     "run since this start in kernels already restored are not "
                                     "saved)", self._elastic_name, st["checkpoint"])
                    return None
                await self._checkpoint_failed(str(e), None, unrestored=unrestored)
                return None
        if not result.complete:
            # kernels not saved (busy, failed), or saved without variables a restore cannot
            # bring back: either way the next start would not be the server that stopped
            what = "kernels not checkpointed" if result.not_saved else "variables lost"
            await self._checkpoint_failed(f"{what}: {result.shortfall()}", result, unrestored=unrestored)
            return result
        self._record(result)
        self.log.info("Elastic: checkpointed %s (%d kernel(s)) in %.1fs: %s", self._elastic_name,
                      len(result.kernels), time.monotonic() - t0, result.checkpoint)
        return result

    async def _wait_for_restore(self, client: ElasticServerClient) -> ServerStatus | None:
        """Give a restore still running in the server up to `busy_timeout` to finish.

        A restore can outlast the spawn; the server refuses checkpoints until it ends. Like a
        busy kernel, it gets `busy_timeout` (a bounded poll); after that the checkpoint call
        answers 409 and `checkpoint_before_stop` keeps the pointer being restored.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                status = await client.status(timeout=5)
            except ElasticAPIError:
                return None  # the checkpoint call says what is wrong
            if status.restore.state != "running" or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(0.5)  # poll interval of a bounded poll, not synchronisation

    async def _adopt_requested(self, client: ElasticServerClient) -> CheckpointResult | None:
        st = self._elastic()
        try:
            status = await client.status()
        except ElasticAPIError as e:
            self.log.warning("Elastic: cannot ask %s for its last checkpoint (%s); the next start "
                             "is fresh", self._elastic_name, e)
            st["checkpoint"] = None
            return None
        last = status.last_checkpoint
        if last and last != st["restored_from"]:
            self.log.info("Elastic: %s was checkpointed on request (%s); the next start restores it",
                          self._elastic_name, last)
            # the history says what the server said of it (an older server does not say: True,
            # as before)
            result = CheckpointResult(checkpoint=last, complete=status.last_checkpoint_complete is not False)
            self._record(result)
            return result
        self.log.info("Elastic: no checkpoint requested for %s while it ran "
                      "(checkpoint_on_stop=on_request); the next start is fresh", self._elastic_name)
        st["checkpoint"] = None
        return None

    async def _checkpoint_failed(self, message: str, result: CheckpointResult | None, *,
                                 unrestored: bool = False) -> None:
        """Apply `on_checkpoint_failure`. `unrestored`: the server failed to restore the pointer
        and nothing of it ran on, so with nothing saved now the pointer stays the next start's."""
        st = self._elastic()
        if self.on_checkpoint_failure == "refuse":
            self.log.error("Elastic: refusing to stop %s: checkpoint failed (%s); "
                           "on_checkpoint_failure=refuse, the server keeps running (detached "
                           "until its next start)", self._elastic_name, message)
            self._detach()
            raise CheckpointRefused(f"checkpoint of {self._elastic_name} failed: {message}")
        saved = result is not None and any(k.status == "ok" for k in result.kernels)
        if saved:
            assert result is not None
            self._record(result)
            self.log.warning("Elastic: stopping %s with an incomplete checkpoint (%s); the next "
                             "start restores the kernels that were saved", self._elastic_name, message)
        elif unrestored:
            self.log.warning("Elastic: stopping %s without a new checkpoint (%s); it had failed to "
                             "restore %s, which the next start restores again", self._elastic_name,
                             message, st["checkpoint"])
            self._persist_state()
        else:
            st["checkpoint"] = None
            self.log.warning("Elastic: stopping %s without a checkpoint: %s "
                             "(on_checkpoint_failure=stop); the next start is fresh",
                             self._elastic_name, message)

    async def delete_forever(self) -> None:
        """The hub deletes this user or named server: say where its checkpoints stay.

        The hub has no access to the store (the servers and the service have), so it cannot
        delete them; the service's retention only visits servers the hub still has. A server or
        user created later under the same name gets another key (`_key_salt`) and does not adopt
        them, but the data stays until the operator deletes the prefix.
        """
        result = super().delete_forever()  # type: ignore[misc]
        if inspect.isawaitable(result):
            await result
        st = self._elastic()
        if st["checkpoint"] or st["history"]:
            self.log.warning("Elastic: %s is deleted; its checkpoints stay in the store under %s "
                             "(the hub cannot delete them): delete that prefix there",
                             self._elastic_name, self.expanded_store_url())

    # ---- refused stops: detach and re-attach ------------------------------------------------

    def _detach(self) -> None:
        """Remember the running server so the next start re-attaches it instead of a new one.

        The wrapped spawner's own state (pid, pod name) is saved under ours, since the hub's
        `clear_state()` after the failed stop wipes it; `will_resume` keeps the server's token.
        """
        server = self.server  # type: ignore[attr-defined]
        self._elastic()["detached"] = {
            "state": super().get_state(),  # type: ignore[misc]
            "ip": server.ip,
            "port": server.port,
            "proto": server.proto,
            "node": self._elastic_node(),
            "since": _utcnow(),
        }
        _detached_memory[(self.user.name, self.name)] = self._detached_memory()  # type: ignore[attr-defined]
        self.will_resume = True  # type: ignore[attr-defined]
        self._persist_state()

    async def _reattach_detached(self) -> tuple[str, int] | None:
        """Start = re-attach when a refused stop left this server running."""
        st = self._elastic()
        det = st.get("detached")
        if not det:
            return None
        st["detached"] = None
        key = (self.user.name, self.name)  # type: ignore[attr-defined]
        memory = _detached_memory.pop(key, {})
        token = memory.get("api_token")
        super().load_state(det.get("state") or {})  # type: ignore[misc]
        if await self.poll() is not None:  # type: ignore[attr-defined]
            self.log.info("Elastic: detached server %s is gone; starting a new one",
                          self._elastic_name)
            self._clear_wrapped_state()
            return None
        if token:
            self._restore_detached_memory(memory)
            self.log.info("Elastic: re-attaching %s, left running by a refused stop",
                          self._elastic_name)
            await self._emit({"progress": 90, "message": "Re-attaching your running server"})
            return (det["ip"], int(det["port"]))
        # The hub restarted since the refused stop: the server's token is unknown, so it cannot
        # be re-attached with working OAuth. Checkpoint it and replace it by a fresh start.
        self.log.warning("Elastic: detached server %s cannot be re-attached (hub restarted); "
                         "checkpointing and replacing it", self._elastic_name)
        self.server.ip, self.server.port = det["ip"], int(det["port"])  # type: ignore[attr-defined]
        try:
            with _policy(self, "on_checkpoint_failure", "stop"):
                await self.checkpoint_before_stop()
        finally:
            await super().stop()  # type: ignore[misc]
            self._clear_wrapped_state()
        return None

    def _detached_memory(self) -> dict[str, Any]:
        """In-memory things a detached server needs back at re-attach; subclasses extend."""
        return {"api_token": self.api_token}  # type: ignore[attr-defined]

    def _restore_detached_memory(self, memory: dict[str, Any]) -> None:
        self.api_token = memory["api_token"]  # type: ignore[attr-defined]

    def _clear_wrapped_state(self) -> None:
        """Clear the wrapped spawner's state of a replaced server, keeping this start's token."""
        token = self.api_token  # type: ignore[attr-defined]
        super().clear_state()  # type: ignore[misc]
        self.api_token = token  # type: ignore[attr-defined]


@contextlib.contextmanager
def _policy(obj: Any, name: str, value: Any) -> Any:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _hub_event(p: dict[str, Any]) -> dict[str, Any]:
    """A server restore progress item as a spawn-page event (hub progress 50..95)."""
    event: dict[str, Any] = {"message": str(p.get("message") or "Restoring")}
    value = p.get("progress")
    if isinstance(value, (int, float)):  # the server reports 0..100
        event["progress"] = int(50 + 45 * max(0.0, min(1.0, value / 100)))
    return event
