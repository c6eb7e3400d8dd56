"""ElasticSpawnerMixin state and environment, without a hub: the pointer outlives the server.

JupyterHub calls `clear_state()` at every spawn and after every stop, saves `get_state()` in its
database and feeds it to `load_state()` of a new Spawner object after a restart. These tests walk
that sequence on a real `ElasticLocalProcessSpawner` with a stand-in user.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from traitlets import TraitError

from elastic_spawner.local import ElasticLocalProcessSpawner
from elastic_spawner.mixin import ENV_RESTORE_FROM, ENV_STORE_URL
from elastic_spawner.serverapi import CheckpointResult, KernelReport

POINTER = "file:///srv/elastic/alice/default#20261126T144907026015Z-3a8c4f"


def make_spawner(name: str = "", **config: object) -> ElasticLocalProcessSpawner:
    user = SimpleNamespace(name="alice", url="/user/alice/", base_url="/user/alice/", db=None)
    hub = SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/", public_host="",
                          url="http://127.0.0.1:8081/hub/")
    orm_spawner = SimpleNamespace(name=name, server=None, user_options=None)
    return ElasticLocalProcessSpawner(user=user, orm_spawner=orm_spawner if name else None, hub=hub,
                                      system_users=False, **config)


def checkpointed(spawner: ElasticLocalProcessSpawner, pointer: str = POINTER) -> None:
    spawner._record(CheckpointResult(pointer, True, [KernelReport("k1", "a.ipynb", "python3", "ok",
                                                                 {"shipped": ["x"], "recomputed": []})]))


def test_pointer_survives_clear_state_and_a_new_spawner_object() -> None:
    s = make_spawner()
    s.load_state({"pid": 1234, "node": "node-a"})
    checkpointed(s)
    s.clear_state()  # after stop
    saved = s.get_state()
    assert "pid" not in saved and saved["last_node"] == "node-a"
    assert saved["elastic"]["checkpoint"] == POINTER

    again = make_spawner()  # a hub restart: a new object from the database row
    again.load_state(saved)
    again.clear_state()  # the hub's clear_state() at spawn
    assert again.restore_pointer == POINTER
    assert again.checkpoint_history[0]["kernels"][0]["path"] == "a.ipynb"


def test_get_env_points_the_next_start_at_the_checkpoint() -> None:
    s = make_spawner(store_url="file:///srv/elastic/{username}/{servername}")
    s.load_state({"elastic": {"checkpoint": POINTER}})
    s.node = "node-b"
    env = s.get_env()
    assert env[ENV_RESTORE_FROM] == POINTER
    assert env[ENV_STORE_URL] == "file:///srv/elastic/alice/default"
    assert env["ELASTIC_NODE_NAME"] == "node-b"
    assert env["JUPYTER_RUNTIME_DIR"].endswith("/node-b/alice/runtime")


def test_kernels_use_unix_sockets_in_the_node_runtime_dir_when_it_is_short() -> None:
    s = make_spawner(nodes_root="/tmp/en")
    s.node = "node-a"
    assert "--KernelManager.transport=ipc" in s.get_args()
    assert s.get_env()["JUPYTER_RUNTIME_DIR"] == "/tmp/en/node-a/alice/runtime"


def test_a_node_dir_too_long_for_socket_paths_gets_a_short_runtime_dir_of_its_own() -> None:
    s = make_spawner(nodes_root="/tmp/" + "n" * 80)
    dirs = set()
    for node in ("node-a", "node-b"):
        s.node = node
        runtime = s.get_env()["JUPYTER_RUNTIME_DIR"]
        socket_path = f"{runtime}/kernel-{'0' * 8}-{'0' * 4}-{'0' * 4}-{'0' * 4}-{'0' * 12}-ipc-5"
        assert len(socket_path) <= 107, socket_path  # sun_path
        dirs.add(runtime)
    assert len(dirs) == 2  # one per server, as the node directories are
    s.node = "node-a"
    assert s.get_env()["JUPYTER_RUNTIME_DIR"] in dirs  # the same one at the next start


def test_tcp_kernels_keep_the_runtime_dir_under_the_node() -> None:
    s = make_spawner(nodes_root="/tmp/" + "n" * 80, kernel_transport="tcp")
    s.node = "node-a"
    assert not any(a.startswith("--KernelManager.transport") for a in s.get_args())
    assert s.get_env()["JUPYTER_RUNTIME_DIR"] == "/tmp/" + "n" * 80 + "/node-a/alice/runtime"


def test_checkpoint_on_stop_never_starts_fresh() -> None:
    s = make_spawner(checkpoint_on_stop="never")
    s.load_state({"elastic": {"checkpoint": POINTER}})
    s.node = "node-a"
    assert ENV_RESTORE_FROM not in s.get_env()


def test_history_keeps_the_newest_checkpoints() -> None:
    s = make_spawner(keep_checkpoints=2)
    for i in range(4):
        checkpointed(s, POINTER[:-1] + str(i))
    assert [h["checkpoint"][-1] for h in s.checkpoint_history] == ["3", "2"]
    assert s.restore_pointer.endswith("3")


def test_node_choice_requested_or_next() -> None:
    s = make_spawner(nodes=["n1", "n2", "n3"])
    assert s.choose_node() == "n1"
    s.load_state({"last_node": "n3"})
    assert s.choose_node() == "n1"
    s.user_options = {"node": "n2"}
    assert s.choose_node() == "n2"
    s.user_options = {"node": "elsewhere"}
    with pytest.raises(ValueError, match="Unknown node 'elsewhere'"):
        s.choose_node()


def test_bad_settings_are_refused_with_the_setting_named() -> None:
    with pytest.raises(TraitError, match="store_url"):
        make_spawner(store_url="/srv/elastic")
    with pytest.raises(TraitError):
        make_spawner(checkpoint_on_stop="sometimes")
    with pytest.raises(TraitError, match="nodes"):
        make_spawner(nodes=["a", "a"])


def test_a_port_given_to_a_server_that_has_not_stopped_is_not_given_again(monkeypatch) -> None:
    from elastic_spawner import local

    monkeypatch.setattr(local, "_HANDED_OUT", set())
    free = local._free_port((20000, 32000))
    local._HANDED_OUT.add(free)  # a server was given it and binds it a few seconds later
    # a range of just that port has nothing left to give
    with pytest.raises(RuntimeError, match="no free port"):
        local._free_port((free, free))
    local._HANDED_OUT.discard(free)  # that server stopped
    assert local._free_port((free, free)) == free


def test_the_port_range_comes_from_the_environment_when_set(monkeypatch) -> None:
    from elastic_spawner.localhub import PORT_RANGE_ENV, HubError, free_port

    monkeypatch.setenv(PORT_RANGE_ENV, "23000-23099")
    assert make_spawner().port_range == (23000, 23099)
    assert 23000 <= free_port() <= 23099
    assert make_spawner(port_range=(40000, 40010)).port_range == (40000, 40010)
    monkeypatch.setenv(PORT_RANGE_ENV, "23000:23099")
    with pytest.raises(HubError, match="LOW-HIGH"):
        free_port()


def test_ports_picked_in_a_row_are_distinct_before_any_is_bound(monkeypatch) -> None:
    """A hub's three ports are picked before it binds any: one picked twice made the hub
    fail to bind ("Address already in use"). 60 picks from 200 ports would repeat one
    almost surely if each pick were independent."""
    from elastic_spawner.localhub import PORT_RANGE_ENV, free_port

    monkeypatch.setenv(PORT_RANGE_ENV, "23000-23199")
    picked = [free_port() for _ in range(60)]
    assert len(set(picked)) == 60


def test_every_server_of_a_user_gets_its_own_store_prefix_in_the_spawner_and_the_service() -> None:
    """The default server and named servers "default", "~default", "x" never share a prefix.

    "default" is a valid named server name in JupyterHub; it used to expand to the default
    server's prefix (the service's retention then deleted one server's checkpoints as the other's).
    """
    from elastic_spawner.service.checkpoints import server_store_url

    template = "s3://ckpt/{username}/{servername}"
    urls = {}
    for name in ("", "default", "~default", "x", "~x"):
        s = make_spawner(name, store_url=template)
        urls[name] = s.expanded_store_url()
        assert server_store_url(template, "alice", name) == urls[name]  # the service finds it
    assert urls[""] == "s3://ckpt/alice/default"  # existing default servers keep their prefix
    assert urls["x"] == "s3://ckpt/alice/x"
    assert len(set(urls.values())) == len(urls), urls


def test_deleting_a_server_with_checkpoints_names_the_prefix_left_in_the_store(caplog) -> None:
    """The hub cannot delete store data; the operator must learn where a deleted server's is."""
    import asyncio
    import logging

    s = make_spawner(store_url="s3://ckpt/{username}/{servername}")
    checkpointed(s)
    with caplog.at_level(logging.WARNING):
        asyncio.run(s.delete_forever())
    assert "alice/ is deleted; its checkpoints stay in the store under s3://ckpt/alice/default" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        asyncio.run(make_spawner().delete_forever())  # never checkpointed: nothing to say
    assert "is deleted" not in caplog.text
