"""The ``kernel_agent.server`` Jupyter server extension app: configuration and wiring.

Runs in the single-user Jupyter server process. Enabled by the shipped
``etc/jupyter/jupyter_server_config.d/kernel_agent.json``, or explicitly::

    jupyter server --ServerApp.jpserver_extensions="{'kernel_agent.server': True}"

It makes every IPython kernel start with the agent (see ``kernels.py``), serves
``api/elastic/*`` (``handlers.py``), and, when started with a restore pointer
(``ELASTIC_RESTORE_FROM``), restores the server's kernels and sessions in the background.
"""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, TraitError, Unicode, default, validate

from kernel_agent.server.coordinator import BadRequest, Coordinator, install_session_guard
from kernel_agent.server.handlers import default_handlers
from kernel_agent.server.kernels import install_agent_injection
from kernel_agent.server.pointer import PointerError, check_store_url, parse_pointer

STORE_ENV = "ELASTIC_STORE_URL"
RESTORE_ENV = "ELASTIC_RESTORE_FROM"
BACKGROUND_ENV = "ELASTIC_BACKGROUND_INTERVAL"


class KernelAgentApp(ExtensionApp):
    """Checkpoint/restore every kernel of this Jupyter server (ElasticSpawner)."""

    name = "kernel_agent"
    description = __doc__
    load_other_extensions = True

    store_url = Unicode(
        None,
        allow_none=True,
        help=f"""Where server checkpoints go when a request names no store.

        ``file:///absolute/dir`` or ``s3://bucket/prefix``. Each kernel writes under
        ``<store>/kernels/<notebook key>``, the server manifest under ``<store>/servers/``.
        Empty: every ``POST api/elastic/checkpoint`` must pass ``"store"``.
        Default: the ``{STORE_ENV}`` environment variable (set by the spawner).

            c.KernelAgentApp.store_url = "s3://checkpoints/users/alice"
        """,
    ).tag(config=True)

    restore_from = Unicode(
        None,
        allow_none=True,
        help=f"""Server checkpoint to restore at start-up: a pointer ``<store-url>#<id>``.

        When set, the server recreates one kernel per checkpointed notebook (same kernel spec),
        restores each and recreates the sessions, in the background; follow it with
        ``GET api/elastic/status``. Empty: start with no kernels, as usual.
        Default: the ``{RESTORE_ENV}`` environment variable (set by the spawner).
        """,
    ).tag(config=True)

    busy_timeout = Float(
        30.0,
        min=0.0,
        help="""Seconds to wait for a busy kernel (a running cell) before reporting it "busy".

        A busy kernel is never interrupted by a checkpoint: after this wait it is left out of
        the checkpoint and reported. 0: do not wait. A request's ``busy_timeout`` overrides it.
        """,
    ).tag(config=True)

    checkpoint_timeout = Float(
        600.0,
        min=1.0,
        help="""Seconds one kernel's ``kernel_agent.checkpoint`` may take before it is reported failed.

        The call is not cancelled in the kernel. A request's ``deadline`` lowers it.
        """,
    ).tag(config=True)

    restore_timeout = Float(
        900.0,
        min=1.0,
        help="""Seconds one kernel's ``kernel_agent.restore`` (start-up included) may take
        before that kernel is reported failed in ``GET api/elastic/status``.""",
    ).tag(config=True)

    restore_session_wait = Float(
        120.0,
        min=0.0,
        help="""Seconds a new session for a notebook being restored waits for the restored kernel.

        A browser tab that opens the notebook while the restore reads the server checkpoint or
        starts that notebook's kernel gets the restored kernel (its cells queue behind the
        restore) instead of a second, empty one. Past this wait, or when the restore cannot
        create that notebook's kernel, the request fails with a message saying so.
        """,
    ).tag(config=True)

    background_interval = Float(
        0.0,
        min=0.0,
        help=f"""Background checkpoints: seconds a kernel must be idle before a round ships what changed.

        With a store (`store_url`), every IPython kernel of this server checkpoints in the
        background into its own store (``<store>/kernels/<notebook key>``), so a crash loses at
        most the cells since the last round and a planned checkpoint ships only the remainder
        (docs/crash-safety.md). 0: off. Default: the ``{BACKGROUND_ENV}`` environment variable.
        """,
    ).tag(config=True)

    kernel_hash_seed = Unicode(
        "0",
        help="""``PYTHONHASHSEED`` of every IPython kernel this server starts, unless the kernel's
        environment already sets one.

        A restore re-runs cells in a new process. With Python's default per-process random seed,
        a set of strings iterates in another order there, so a re-run ``cols = list(set(df) -
        {'y'})`` (and everything computed from it) came back different, and the restore's
        verification reported it. The same seed in every kernel, on every node, makes such cells
        replay identically. Empty: keep Python's random seed (hash-flooding protection matters
        for servers that hash untrusted input, not for a notebook kernel).""",
    ).tag(config=True)

    @default("background_interval")
    def _default_background_interval(self) -> float:
        try:
            return max(0.0, float(os.environ.get(BACKGROUND_ENV) or 0.0))
        except ValueError:
            return 0.0

    @default("store_url")
    def _default_store_url(self) -> str | None:
        return os.environ.get(STORE_ENV) or None

    @default("restore_from")
    def _default_restore_from(self) -> str | None:
        return os.environ.get(RESTORE_ENV) or None

    @validate("store_url")
    def _validate_store_url(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if not value:
            return None
        try:
            return check_store_url(value)
        except PointerError as e:
            raise TraitError(f"KernelAgentApp.store_url = {value!r}: {e}") from e

    def initialize_settings(self) -> None:
        """Hook the kernel manager and share one coordinator with the handlers."""
        sa = self.serverapp
        install_agent_injection(sa.kernel_manager, sa.kernel_spec_manager, self.log,
                                hash_seed=self.kernel_hash_seed or None)
        self.coordinator = Coordinator(
            kernel_manager=sa.kernel_manager,
            session_manager=sa.session_manager,
            kernel_spec_manager=sa.kernel_spec_manager,
            store_url=self.store_url,
            busy_timeout=self.busy_timeout,
            checkpoint_timeout=self.checkpoint_timeout,
            restore_timeout=self.restore_timeout,
            session_wait=self.restore_session_wait,
            logger=self.log,
        )
        install_session_guard(sa.session_manager, self.coordinator)
        self.settings["kernel_agent_coordinator"] = self.coordinator
        self.background = None
        if self.background_interval > 0 and self.store_url:
            from kernel_agent.server.backgrounding import BackgroundEnabler

            self.background = BackgroundEnabler(
                self.coordinator, self.store_url, self.background_interval, logger=self.log
            )
            # a renamed notebook's kernel checkpoints into its new path's store at once
            self.coordinator.on_move.append(self.background.wake)
        contents = sa.contents_manager
        schema_id = getattr(contents, "event_schema_id", None)
        if schema_id and getattr(sa, "event_logger", None) is not None:
            sa.event_logger.add_listener(schema_id=schema_id, listener=self._on_contents_event)
        self.log.info(
            "kernel_agent: kernels start with the agent; store %s; restore from %s",
            self.store_url or "(none configured)",
            self.restore_from or "(nothing)",
        )

    async def _on_contents_event(self, logger: object, schema_id: str, data: dict) -> None:
        """A file renamed through the contents API: the sessions on it follow (and are recorded)."""
        if data.get("action") != "rename" or not data.get("source_path") or not data.get("path"):
            return
        try:
            await self.coordinator.follow_contents_rename(data["source_path"], data["path"])
        except Exception:  # noqa: BLE001 - a listener must not fail the rename
            self.log.exception("kernel_agent: moving the sessions of renamed %s failed", data["source_path"])

    def initialize_handlers(self) -> None:
        self.handlers.extend(default_handlers)

    async def _start_jupyter_server_extension(self, serverapp: object) -> None:
        """Start the start-up restore, if any, as a background task; never fail the server."""
        if getattr(self, "background", None) is not None:
            self.background.start()
        pointer = self.restore_from
        if not pointer:
            return
        try:
            parse_pointer(pointer)
            self.coordinator.start_restore(pointer)
        except (PointerError, BadRequest) as e:
            self.log.error("kernel_agent: not restoring %r at start-up: %s", pointer, e)
            self.coordinator.fail_restore(
                pointer, f"{e} (from KernelAgentApp.restore_from / {RESTORE_ENV})"
            )
        except Exception as e:  # noqa: BLE001
            self.log.exception("kernel_agent: start-up restore of %s could not start", pointer)
            self.coordinator.fail_restore(pointer, f"{type(e).__name__}: {e}")

    async def stop_extension(self) -> None:
        if getattr(self, "background", None) is not None:
            await self.background.stop()
        coordinator = getattr(self, "coordinator", None)
        if coordinator is not None:
            await coordinator.stop()
