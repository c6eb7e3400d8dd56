"""The service hosts the drain watcher: built with the service's hub URL, token and namespace,
started and stopped with the service, its reports recorded and counted.

No cluster here: the hook is checked with a stand-in watcher of the same shape, and the real
`elastic_spawner.drain.DrainWatcher` is checked against that shape (built, not started: starting
it needs a Kubernetes API; tests/k8s runs it against the emulated cluster).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from elastic_spawner.service.app import ElasticService


class StandInWatcher:
    """Same constructor and lifecycle as DrainWatcher; records what the service does with it."""

    instances: list[StandInWatcher] = []

    def __init__(self, hub_api_url: str, hub_token: str, *, namespace: str = "default",
                 on_report: Any = None) -> None:
        self.args = (hub_api_url, hub_token, namespace)
        self.on_report = on_report
        self.started = self.stopped = False
        StandInWatcher.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


def make_service(tmp_path: Path, **traits: Any) -> ElasticService:
    app = ElasticService(api_token="test-token", hub_api_url="http://127.0.0.1:9/hub/api",
                         state_file=str(tmp_path / "migrations.json"), retention_interval=0,
                         store_url=(tmp_path / "store").as_uri() + "/{username}/{servername}",
                         drain_namespace="jhub", **traits)
    app.setup()
    return app


async def test_the_watcher_runs_inside_the_service_and_its_reports_count(tmp_path: Path) -> None:
    app = make_service(tmp_path, drain_watcher=True,
                       drain_watcher_class=f"{__name__}.StandInWatcher")
    await app.start_background()
    watcher = StandInWatcher.instances[-1]
    assert watcher.started
    assert watcher.args == ("http://127.0.0.1:9/hub/api", "test-token", "jhub")
    for user in ("alice", "bob"):
        await watcher.on_report({"node": "node-a", "user": user, "server": "",
                                 "outcome": "migrated"})
    await watcher.on_report({"node": "node-b", "user": "carol", "server": "",
                             "outcome": "failed", "error": "hub down"})
    text = generate_latest(app.metrics.registry).decode()
    assert "elastic_spawner_drains_handled_total 2.0" in text  # two nodes
    assert 'elastic_spawner_drain_servers_total{outcome="migrated"} 2.0' in text
    assert [r["user"] for r in app.drain_reports] == ["alice", "bob", "carol"]
    await app.stop_background()
    assert watcher.stopped


async def test_a_missing_watcher_module_is_logged_not_fatal(tmp_path: Path) -> None:
    app = make_service(tmp_path, drain_watcher=True,
                       drain_watcher_class="elastic_spawner.no_such_module.Watcher")
    await app.start_background()
    await app.stop_background()


def test_the_real_drain_watcher_fits_the_hook(tmp_path: Path) -> None:
    try:
        mod = importlib.import_module("elastic_spawner.drain")
    except ImportError as e:
        pytest.skip(f"elastic_spawner.drain is not importable ({e}); the service's hook "
                    "(ElasticService.drain_watcher_class) is ready for it")
    cls = mod.DrainWatcher
    assert inspect.iscoroutinefunction(cls.start) and inspect.iscoroutinefunction(cls.stop)
    app = make_service(tmp_path, drain_watcher=True)
    watcher = app._make_drain_watcher()
    assert isinstance(watcher, cls)
    assert watcher.namespace == "jhub" and watcher.on_report == app.on_drain_report
