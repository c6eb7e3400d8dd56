"""`ElasticLocalProcessSpawner`: local processes on named "nodes", so a migration really moves a server.

Runs in the JupyterHub process. The embedded default for the demo and the tests, and a way to
try live migration on one machine. A node is a separate working directory
(`<nodes_root>/<node>/<user>[/<server>]`): the single-user server runs there (cwd, Jupyter
runtime files such as kernel connection files, `ELASTIC_NODE_NAME`), while the user's notebooks
live in the home directory shared by all nodes, as a PVC would be on Kubernetes. Stopping on one
node and starting on another therefore gives a new process, a new working directory and a new
node identity, with the same notebooks, and the session restored from the checkpoint.

    c.JupyterHub.spawner_class = "elastic-local"
    c.ElasticLocalProcessSpawner.nodes = ["node-a", "node-b"]
    # then: POST /hub/api/users/alice/server {"user_options": {"node": "node-b"}}
"""

from __future__ import annotations

import hashlib
import os
import pwd
import random
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import (
    Bool,
    CaselessStrEnum,
    Integer,
    List,
    TraitError,
    Tuple,
    Unicode,
    default,
    validate,
)

from elastic_spawner.mixin import ElasticSpawnerMixin

ENV_NODE_NAME = "ELASTIC_NODE_NAME"

# An IPC kernel's sockets are `<runtime dir>/kernel-<uuid>-ipc-<n>`, and a Unix socket path has
# at most 107 bytes (sun_path): the runtime dir may take what the rest leaves.
_IPC_SUFFIX = len("/kernel-00000000-0000-0000-0000-000000000000-ipc-99")
MAX_IPC_RUNTIME_DIR = 107 - _IPC_SUFFIX


def ipc_runtime_dir(preferred: str) -> str:
    """`preferred` when IPC kernel sockets fit under it, else a short directory of its own.

    The short one is in the temporary directory, named by a hash of `preferred`, so each server
    (node directory) keeps a directory of its own and a restart of it finds the same one.
    """
    if len(os.fsencode(preferred)) <= MAX_IPC_RUNTIME_DIR:
        return preferred
    digest = hashlib.sha256(os.fsencode(preferred)).hexdigest()[:16]
    short = os.path.join(tempfile.gettempdir(), f"elastic-rt-{digest}")
    if len(os.fsencode(short)) > MAX_IPC_RUNTIME_DIR:
        raise RuntimeError(
            f"No runtime directory short enough for IPC kernel sockets: {preferred!r} and "
            f"{short!r} are over {MAX_IPC_RUNTIME_DIR} bytes. Set TMPDIR to a shorter directory "
            "or c.ElasticLocalProcessSpawner.kernel_transport = 'tcp'."
        )
    return short


class ElasticLocalProcessSpawner(ElasticSpawnerMixin, LocalProcessSpawner):
    """LocalProcessSpawner with checkpoint/restore and placement on one of several named nodes."""

    nodes = List(
        Unicode(),
        default_value=["node-a", "node-b"],
        minlen=1,
        help="""Names of the local "nodes" a server can be placed on.

        Each is a separate working directory under `nodes_root`. A start picks the node named in
        `user_options["node"]`, else the node after the one the server last ran on (so a plain
        stop and start moves it). JupyterHub reuses the last `user_options` when a start passes
        none, so a server sent to a node stays there until told otherwise.

            c.ElasticLocalProcessSpawner.nodes = ["node-a", "node-b", "node-c"]
        """,
    ).tag(config=True)

    nodes_root = Unicode(
        "/tmp/elastic-nodes",
        help="""Directory holding one working directory per node: `<nodes_root>/<node>/<user>/`.

            c.ElasticLocalProcessSpawner.nodes_root = "/var/lib/elastic-nodes"
        """,
    ).tag(config=True)

    system_users = Bool(
        True,
        help="""Run each server as the system user of the same name (like LocalProcessSpawner).

        False runs servers as the hub's own user with `$HOME` from `home_dir_template`, like
        JupyterHub's SimpleLocalProcessSpawner: no isolation between users, for demos and tests.

            c.ElasticLocalProcessSpawner.system_users = False
        """,
    ).tag(config=True)

    port_range = Tuple(
        Integer(1024), Integer(65535),
        default_value=(20000, 32000),
        help="""Ports to pick a server's port from when `Spawner.port` is 0 (the default).

        Defaults to 20000-32000, or to the range the environment variable
        `ELASTIC_PORT_RANGE` (`LOW-HIGH`) gives. Keep it outside the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`,
        32768-60999 on Linux): kernels bind their ZMQ ports there, and a port picked there can be
        taken by a kernel before the new server binds it.

            c.ElasticLocalProcessSpawner.port_range = (40000, 45000)
        """,
    ).tag(config=True)

    kernel_transport = CaselessStrEnum(
        ["ipc", "tcp"],
        default_value="ipc",
        help="""How the servers talk to their kernels: Unix sockets (`ipc`) or TCP ports (`tcp`).

        Local nodes share one network namespace, which pods on Kubernetes do not. With `tcp`, a
        server picks five free ports for each kernel and the kernel binds them a moment later;
        another server's kernel or any outgoing connection can take one in between, and the
        kernel dies at start. Its restarts reuse the ports jupyter_client cached, so it never
        comes up: the notebook hangs, or a migration restores nothing. `ipc` puts the sockets in
        the server's runtime directory (a short directory of its own when the node directory is
        too long for a socket path), where nothing else can take them.

            c.ElasticLocalProcessSpawner.kernel_transport = "tcp"
        """,
    ).tag(config=True)

    home_dir_template = Unicode(
        "/tmp/elastic-home/{username}",
        help="""The user's home (the shared notebook directory) when `system_users` is False.

        `{username}` is expanded. All nodes see the same directory, as a PVC on Kubernetes.

            c.ElasticLocalProcessSpawner.home_dir_template = "/srv/home/{username}"
        """,
    ).tag(config=True)

    @default("store_url")
    def _default_store_url(self) -> str:
        # Like JupyterHub's own sqlite default: next to where the hub runs.
        return "file://" + os.path.abspath("elastic-store") + "/{username}/{servername}"

    @default("port_range")
    def _default_port_range(self) -> tuple[int, int]:
        from elastic_spawner.localhub import default_port_range

        return default_port_range()

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Callable[[Any, dict[str, Any]], None]:
        return _apply_node_option

    @validate("nodes")
    def _validate_nodes(self, proposal: dict[str, Any]) -> list[str]:
        names = [str(n).strip() for n in proposal["value"]]
        bad = [n for n in names if not n or "/" in n or n in (".", "..")]
        if bad or len(set(names)) != len(names):
            raise TraitError(
                f"ElasticLocalProcessSpawner.nodes = {names!r}: names must be unique, non-empty "
                "and contain no '/'"
            )
        return names

    node = Unicode("", help="The node the server runs on (empty when stopped).")
    last_node = Unicode("", help="The node the server ran on last; the default start moves away from it.")

    # ---- state -----------------------------------------------------------------------------

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.node = state.get("node", "")
        self.last_node = state.get("last_node", "") or self.node

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.node:
            state["node"] = self.node
        if self.last_node:
            state["last_node"] = self.last_node
        return state

    def clear_state(self) -> None:
        super().clear_state()
        if self.node:
            self.last_node = self.node
        self.node = ""

    def _elastic_node(self) -> str | None:
        return self.node or None

    def _elastic_start_message(self) -> str | None:
        return f"Starting your server on {self.node}" if self.node else None

    def _detached_memory(self) -> dict[str, Any]:
        # the Popen handle: only it can reap the process once it exits (else: a zombie child)
        return {**super()._detached_memory(), "proc": self.proc}

    def _restore_detached_memory(self, memory: dict[str, Any]) -> None:
        super()._restore_detached_memory(memory)
        proc = memory.get("proc")
        if proc is not None and proc.pid == self.pid:
            self.proc = proc

    # ---- placement -------------------------------------------------------------------------

    def choose_node(self) -> str:
        """The node for this start: the requested one, else the one after the last node."""
        requested = (self.user_options or {}).get("node")
        if requested:
            if requested not in self.nodes:
                raise ValueError(
                    f"Unknown node {requested!r} in user_options; "
                    f"ElasticLocalProcessSpawner.nodes = {self.nodes!r}"
                )
            return requested
        if self.last_node in self.nodes:
            return self.nodes[(self.nodes.index(self.last_node) + 1) % len(self.nodes)]
        return self.nodes[0]

    @property
    def home_dir(self) -> str:
        """The user's notebooks, shared by all nodes."""
        if self.system_users:
            return pwd.getpwnam(self.user.name).pw_dir
        return self.home_dir_template.format(username=self.user.name)

    @property
    def node_dir(self) -> str:
        """Working directory of this server on its node."""
        parts = [self.nodes_root, self.node, self.user.name]
        if self.name:
            parts.append(self.name)
        return os.path.join(*parts)

    @property
    def runtime_dir(self) -> str:
        """The server's JUPYTER_RUNTIME_DIR: kernel connection files (and IPC sockets) live here."""
        preferred = os.path.join(self.node_dir, "runtime")
        return ipc_runtime_dir(preferred) if self.kernel_transport == "ipc" else preferred

    def _runs_as_root(self) -> bool:
        if self.system_users:
            return pwd.getpwnam(self.user.name).pw_uid == 0
        return os.geteuid() == 0

    def _prepare_dirs(self) -> None:
        """Create the node directory (owned by the user) and, for non-system users, the home."""
        runtime = self.runtime_dir
        os.makedirs(self.node_dir, exist_ok=True)
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        st = os.lstat(runtime)  # the short one is a predictable name in a shared directory
        owners = {os.geteuid()}
        if self.system_users:
            owners.add(pwd.getpwnam(self.user.name).pw_uid)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
            raise RuntimeError(
                f"The runtime directory {runtime} of {self._elastic_name} is not a directory "
                "owned by the hub or the user; remove it and start the server again."
            )
        os.chmod(runtime, 0o700)
        if not self.system_users:
            os.makedirs(self.home_dir, mode=0o755, exist_ok=True)
        elif os.geteuid() == 0:
            pw = pwd.getpwnam(self.user.name)
            for path in (self.node_dir, runtime):
                shutil.chown(path, user=pw.pw_uid, group=pw.pw_gid)

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        """Drop privileges (system users) and start in the node's directory, not in $HOME."""
        node_dir = self.node_dir
        setuid = set_user_setuid(name, chdir=False) if self.system_users else None

        def preexec() -> None:
            if setuid is not None:
                setuid()
            os.chdir(node_dir)

        return preexec

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        if self.system_users:
            return super().user_env(env)
        env["USER"] = self.user.name
        env["HOME"] = self.home_dir
        env["SHELL"] = "/bin/bash"
        return env

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        env[ENV_NODE_NAME] = self.node
        env["JUPYTER_RUNTIME_DIR"] = self.runtime_dir
        return env

    def get_args(self) -> list[str]:
        args = super().get_args()
        if not self.notebook_dir and not any(a.startswith(("--notebook-dir", "--ServerApp.root_dir"))
                                             for a in args):
            # The process runs in the node's directory; the notebooks stay in the shared home.
            args.append(f"--ServerApp.root_dir={self.home_dir}")
        if self.kernel_transport == "ipc" and not any(
                a.startswith("--KernelManager.transport") for a in args):
            args.append("--KernelManager.transport=ipc")
        if self._runs_as_root() and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        if self.system_users:
            return await super().move_certs(paths)
        return paths  # internal SSL with the hub's own user: the certs are readable already

    async def start(self) -> Any:
        detached = self._elastic().get("detached")
        if detached and detached.get("node") in self.nodes:
            self.node = detached["node"]  # a re-attach stays where the server runs
        else:
            self.node = self.choose_node()
        self._prepare_dirs()
        if not self.port and not self._elastic().get("detached"):
            self.port = _free_port(self.port_range)
            _HANDED_OUT.add(self.port)
        self.log.info("Elastic: placing %s on node %s (%s)", self._elastic_name, self.node,
                      self.node_dir)
        try:
            return await super().start()
        except BaseException:
            _HANDED_OUT.discard(self.port)
            raise

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        _HANDED_OUT.discard(self.port)
        if self.node:
            self.last_node = self.node


def _apply_node_option(spawner: ElasticLocalProcessSpawner, user_options: dict[str, Any]) -> None:
    """Default `apply_user_options`: accept `{"node": <one of nodes>}`; a bad node is a 400."""
    options = dict(user_options or {})
    node = options.pop("node", None)
    if node is not None and node not in spawner.nodes:
        raise web.HTTPError(
            400, f"Unknown node {node!r}: choose one of {', '.join(spawner.nodes)}"
        )
    if options:
        spawner.log.warning("Elastic: ignoring user_options %s for %s (only 'node' is understood)",
                            ", ".join(sorted(options)), spawner._elastic_name)


# Ports this hub gave to servers that have not stopped. A server binds its port seconds after
# the pick (its imports come first), so twenty servers started at once could draw the same free
# port, and the one that binds second dies at start.
_HANDED_OUT: set[int] = set()


def _free_port(port_range: tuple[int, int]) -> int:
    """A port free on all interfaces right now, from `port_range` (random, up to 200 tries),
    and not given to another server of this hub that may not have bound it yet."""
    for _ in range(200):
        port = random.randint(*port_range)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"ElasticLocalProcessSpawner.port_range = {port_range!r}: no free port")
