"""Pure builders and the ElasticKubeSpawner pod manifest (no hub; the PDB call hits the rig)."""

from __future__ import annotations

import subprocess
import sys
from unittest.mock import Mock

import pytest
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from elastic_spawner.drain import disruption_reason
from elastic_spawner.k8s import (
    PRESTOP_SCRIPT,
    make_event,
    make_pdb,
    make_prestop_handler,
    pdb_name,
    secret_env,
)
from elastic_spawner.kube import ElasticKubeSpawner
from elastic_spawner.resize import (
    Resources,
    SizeError,
    SizePolicy,
    in_place_allowed,
    parse_memory,
    parse_size,
)
from tests.k8s.rig import Cluster

CREDENTIALS = {"ELASTIC_S3_ACCESS_KEY", "ELASTIC_S3_SECRET_KEY"}


def test_pdb_holds_exactly_one_server() -> None:
    pdb = make_pdb("elastic-jupyter-alice", {"component": "singleuser-server",
                                             "hub.jupyter.org/username": "alice",
                                             "hub.jupyter.org/servername": ""})
    assert pdb["apiVersion"] == "policy/v1" and pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {
        "component": "singleuser-server", "hub.jupyter.org/username": "alice",
        "hub.jupyter.org/servername": ""}}}
    with pytest.raises(ValueError, match="non-empty selector"):
        make_pdb("x", {})
    assert len(pdb_name("p" * 300)) <= 253


def test_secret_env_never_carries_values() -> None:
    env = secret_env("elastic-store", {"ELASTIC_S3_ACCESS_KEY": "access-key",
                                       "ELASTIC_S3_SECRET_KEY": "secret-key"})
    assert {e["name"] for e in env} == CREDENTIALS
    for e in env:
        assert "value" not in e
        assert e["valueFrom"]["secretKeyRef"]["name"] == "elastic-store"


def test_prestop_handler_and_script() -> None:
    handler = make_prestop_handler(60, margin=5, busy_timeout=3)
    cmd = handler["exec"]["command"]
    assert cmd[:2] == ["python3", "-c"] and cmd[3:] == ["60", "5", "3"]
    assert "$(" not in cmd[2]
    compile(PRESTOP_SCRIPT, "<preStop>", "exec")
    with pytest.raises(ValueError, match="must exceed"):
        make_prestop_handler(5, margin=5)
    # no server answering: the hook exits 0 at once (nothing to checkpoint), never hangs
    out = subprocess.run([sys.executable, "-c", PRESTOP_SCRIPT, "30", "5", "1"], capture_output=True,
                         text=True, timeout=30, env={"ELASTIC_SERVER_PORT": "1"})
    assert out.returncode == 0 and "nothing to checkpoint" in out.stdout


def test_event_names_its_object() -> None:
    ev = make_event({"kind": "Pod", "metadata": {"name": "jupyter-a", "namespace": "ns", "uid": "u"}},
                    "ElasticHoldLimit", "released", event_type="Warning")
    assert ev["metadata"]["namespace"] == "ns" and ev["involvedObject"]["uid"] == "u"
    assert ev["type"] == "Warning" and ev["reason"] == "ElasticHoldLimit"


@pytest.mark.parametrize(("node", "reason"), [
    ({"spec": {}}, None),
    ({"spec": {"unschedulable": True}}, "cordoned (spec.unschedulable)"),
    ({"spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}},
     "taint karpenter.sh/disrupted:NoSchedule"),
    ({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}},
     "taint ToBeDeletedByClusterAutoscaler:NoSchedule"),
    ({"spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]}}, None),
])
def test_disruption_reason(node: dict, reason: str | None) -> None:
    assert disruption_reason(node) == reason


def test_sizes() -> None:
    policy = SizePolicy.from_traits([0.5, 8], ["512M", "32G"], {"large": {"cpu": 16, "memory": "64G"}})
    assert parse_size({"cpu": 4, "memory": "16G"}, policy) == Resources(4.0, 16 * 1024**3)
    assert parse_size({"size": "large"}, policy) == Resources(16.0, 64 * 1024**3)
    assert parse_size({}, policy) is None
    assert parse_size({"cpu": "500m"}, policy, current=Resources(1, 2**30)) == Resources(0.5, 2**30)
    for bad, why in [({"cpu": 64, "memory": "1G"}, "outside"), ({"size": "huge"}, "unknown size"),
                     ({"cpu": "x", "memory": "1G"}, "not a number"), ({"cpu": 1}, "both"),
                     ({"cpu": 1, "memory": "lots"}, "not a size")]:
        with pytest.raises(SizeError, match=why):
            parse_size(bad, policy)
    assert parse_memory("1.5Gi") == int(1.5 * 1024**3)
    assert in_place_allowed(Resources(1, 2**30), Resources(4, 2**31))[0]
    assert not in_place_allowed(Resources(1, 2**31), Resources(1, 2**30))[0]


class _User(Mock):
    name = "alice"
    escaped_name = "alice"
    url = "/user/alice/"


async def test_pod_manifest_has_secret_env_prestop_grace_and_pdb(k8s_cluster: Cluster) -> None:
    config = Config()
    config.KubeSpawner.port = 18888
    config.KubeSpawner.environment = {"ELASTIC_S3_SECRET_KEY": "plain-secret-must-not-leak"}
    config.ElasticKubeSpawner.store_secret_name = "elastic-store"
    config.ElasticKubeSpawner.termination_grace_period = 90
    user = _User()
    spawner = ElasticKubeSpawner(hub=Hub(), user=user, config=config, api_token="t",
                                 oauth_client_id="unused", _mock=True)
    user.server = spawner.server = Server(ip="127.0.0.1", port=18888, base_url="/user/alice/")
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())

    assert pod["spec"]["terminationGracePeriodSeconds"] == 90
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    for name in CREDENTIALS:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "elastic-store"
    assert "plain-secret-must-not-leak" not in str(pod)
    assert env["ELASTIC_SERVER_PORT"]["value"] == "18888"
    assert env["ELASTIC_STORE_URL"]["value"].endswith("/alice/default")
    assert c["lifecycle"]["preStop"]["exec"]["command"][3:] == ["90", "5.0", "5.0"]
    assert pod["metadata"]["labels"]["elastic-spawner/managed"] == "true"
    name = pod["metadata"]["annotations"]["elastic-spawner/pdb"]
    pdb = await k8s_cluster.rest.get(f"/apis/policy/v1/namespaces/default/poddisruptionbudgets/{name}")
    assert pdb["spec"]["selector"]["matchLabels"]["hub.jupyter.org/username"] == "alice"
    await spawner.delete_pdb()
    listing = await k8s_cluster.rest.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets")
    assert listing["items"] == []
