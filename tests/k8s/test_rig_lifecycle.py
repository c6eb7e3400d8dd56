"""Pod termination on the process kubelet: preStop within the grace period, SIGTERM, SIGKILL at
the deadline, and containers that die by themselves."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.k8s.rig import Cluster, wait_until
from tests.k8s.spawners import make_spawner

PODS = "/api/v1/namespaces/default/pods"

# The "server": records SIGTERM, and whether preStop had finished by then.
TRAPS_SIGTERM = """
import os, pathlib, signal, sys, time
marks = pathlib.Path(os.environ["MARKS"])
def on_term(*_):
    done = (marks / "prestop").exists()
    (marks / "sigterm").write_text(f"{time.time()} prestop={'done' if done else 'missing'}")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
(marks / "pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

IGNORES_SIGTERM = """
import os, pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(os.environ["MARKS"], "pid").write_text(str(os.getpid()))
while True:
    time.sleep(0.05)
"""

PRESTOP = """
import os, pathlib, time
time.sleep(0.5)  # a checkpoint takes a while; SIGTERM must wait for it
pathlib.Path(os.environ["MARKS"], "prestop").write_text(str(time.time()))
"""


def pod_manifest(name: str, script: str, marks: Path, grace: int, pre_stop: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main", "image": "python", "command": [sys.executable, "-c", script],
        "env": [{"name": "MARKS", "value": str(marks)}],
    }
    if pre_stop:
        container["lifecycle"] = {"preStop": {"exec": {"command": [sys.executable, "-c", pre_stop]}}}
    return {"metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]}}


async def running(cluster: Cluster, name: str) -> bool:
    pod = await cluster.pod(name)
    return bool(pod and pod["status"].get("phase") == "Running"
                and pod["status"]["containerStatuses"][0].get("ready"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_prestop_exec_runs_before_sigterm(k8s_cluster: Cluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    await k8s_cluster.rest.post(PODS, pod_manifest("hooked", TRAPS_SIGTERM, marks, grace=10, pre_stop=PRESTOP))
    await wait_until(lambda: running(k8s_cluster, "hooked"), what="pod Running and ready")
    await wait_until(lambda: (marks / "pid").exists(), what="the process to start")

    deleted = await k8s_cluster.rest.delete(f"{PODS}/hooked")
    assert deleted["metadata"]["deletionGracePeriodSeconds"] == 10  # the pod's own grace period
    assert deleted["metadata"]["deletionTimestamp"]
    # Terminating: the object stays while preStop runs
    assert (await k8s_cluster.pod("hooked"))["metadata"]["deletionTimestamp"]

    await wait_until(lambda: _gone(k8s_cluster, "hooked"), timeout=12, what="the pod to be removed")
    assert (marks / "prestop").exists(), "preStop hook did not run"
    sigterm = (marks / "sigterm").read_text()
    assert sigterm.endswith("prestop=done"), sigterm
    assert float(sigterm.split()[0]) >= float((marks / "prestop").read_text())
    assert not any(e["reason"] == "FailedPreStopHook" for e in await k8s_cluster.events_for("hooked"))


async def test_grace_period_expiry_kills_process_ignoring_sigterm(k8s_cluster: Cluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    await k8s_cluster.rest.post(PODS, pod_manifest("stubborn", IGNORES_SIGTERM, marks, grace=3))
    await wait_until(lambda: running(k8s_cluster, "stubborn"), what="pod Running")
    pid = int(await wait_until(lambda: (marks / "pid").exists() and (marks / "pid").read_text(),
                               what="the pid file"))

    started = time.monotonic()
    await k8s_cluster.rest.delete(f"{PODS}/stubborn")
    await wait_until(lambda: _gone(k8s_cluster, "stubborn"), timeout=10, what="the pod to be removed")
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 8, elapsed  # held for the grace period, then SIGKILL
    assert not pid_alive(pid)
    # the last status the kubelet reported before removing the pod: killed by SIGKILL
    history = [v for v in k8s_cluster.api.objects["v1/pods", "default", "stubborn"].history if v is not None]
    last = history[-1].raw["status"]["containerStatuses"][0]["state"]
    assert last["terminated"]["exitCode"] == 128 + signal.SIGKILL


async def test_shorter_grace_on_second_delete_wins(k8s_cluster: Cluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    await k8s_cluster.rest.post(PODS, pod_manifest("slow", IGNORES_SIGTERM, marks, grace=60))
    await wait_until(lambda: running(k8s_cluster, "slow"), what="pod Running")
    await wait_until(lambda: (marks / "pid").exists(), what="SIGTERM to be ignored")
    started = time.monotonic()
    await k8s_cluster.rest.delete(f"{PODS}/slow")
    longer = await k8s_cluster.rest.delete(f"{PODS}/slow", {"gracePeriodSeconds": 90})
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 60  # a grace period never grows
    again = await k8s_cluster.rest.delete(f"{PODS}/slow", {"gracePeriodSeconds": 1})
    assert again["metadata"]["deletionGracePeriodSeconds"] == 1
    # 1 s grace, raised to the kubelet's 2 s minimum SIGTERM window, not 60 s
    await wait_until(lambda: _gone(k8s_cluster, "slow"), timeout=8, what="the pod to be removed")
    assert 1.5 <= time.monotonic() - started < 6


async def test_container_that_dies_is_reported_and_poll_sees_exit_code(k8s_cluster: Cluster) -> None:
    spawner = make_spawner("ivan")
    await spawner.start()
    pod = await k8s_cluster.pod(spawner.pod_name)
    pid = int(pod["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[1])
    os.kill(pid, signal.SIGKILL)  # the server crashes on its own

    async def failed() -> dict[str, Any] | None:
        p = await k8s_cluster.pod(spawner.pod_name)
        return p if p and p["status"]["phase"] == "Failed" else None

    pod = await wait_until(failed, what="phase Failed")
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 137 and state["reason"] == "Error"
    # poll() reads the terminated state, returns the exit code and deletes the dead pod
    await wait_until(lambda: _reflector_sees_failed(spawner), what="the reflector to see the failure")
    assert await spawner.poll() == 137
    await wait_until(lambda: _gone(k8s_cluster, spawner.pod_name), what="the dead pod to be deleted")


def _reflector_sees_failed(spawner: Any) -> bool:
    pod = spawner.pod_reflector.pods.get(f"default/{spawner.pod_name}")
    return bool(pod and pod["status"]["phase"] == "Failed")


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.pod(name) is None


async def test_prestop_http_get_reaches_the_pod_port(k8s_cluster: Cluster) -> None:
    spawner = make_spawner("judy", lifecycle_hooks={"preStop": {"httpGet": {"path": "/prestop-called", "port": 0}}})
    spawner.lifecycle_hooks["preStop"]["httpGet"]["port"] = spawner.port
    await spawner.start()
    log = k8s_cluster.pod_dir(spawner.pod_name) / "container.log"
    await k8s_cluster.rest.delete(f"{PODS}/{spawner.pod_name}")  # the pod's 30 s grace, not stop()'s 1 s
    await wait_until(lambda: _gone(k8s_cluster, spawner.pod_name), timeout=10, what="the pod to be removed")
    assert "GET /prestop-called" in log.read_text()  # http.server logged the hook's request
    await spawner.stop()
