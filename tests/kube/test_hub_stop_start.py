"""Hub-initiated stop and start on the emulated cluster: the session comes back, the PDB follows.

Real JupyterHub + ElasticKubeSpawner + KubeSpawner + kubernetes_asyncio against the rig; real
single-user servers and kernels.
"""

from __future__ import annotations

import pytest

from tests.kube.conftest import GRACE, KubeHub
from tests.kube.notebooks import assert_session_back, run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def test_hub_stop_checkpoints_and_start_restores(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub()
    server = await kh.server("alice")
    await run_session(server, "alice")

    pod = await kh.user_pod("alice")
    assert pod is not None
    assert pod["spec"]["terminationGracePeriodSeconds"] == GRACE
    assert "preStop" in pod["spec"]["containers"][0]["lifecycle"]
    [pdb] = await kh.pdbs()
    assert pdb["metadata"]["name"] == pod["metadata"]["annotations"]["elastic-spawner/pdb"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["hub.jupyter.org/username"] == "alice"
    assert pdb["status"]["disruptionsAllowed"] == 0  # the pod is held against evictions

    await kh.hub.stop_server("alice")
    state = await kh.hub.spawner_state("alice")
    pointer = state["elastic"]["checkpoint"]
    assert pointer.startswith(f"file://{kh.hub.workdir}/store/alice/default#")
    assert state["elastic"]["history"][0]["complete"]
    assert state["elastic"]["history"][0]["node"] == pod["spec"]["nodeName"]
    assert await kh.user_pod("alice") is None
    assert await kh.pdbs() == []  # released with the server
    # the preStop hook (run by the kubelet within KubeSpawner's 1 s grace) saw the hub's
    # checkpoint was fresh and did not start a second one
    [prestop_log] = (kh.rig.workdir / "nodes").glob("*/default/jupyter-alice-*/prestop.log")
    assert "is fresh (no kernel activity since): done" in prestop_log.read_text()

    await kh.hub.start_server("alice")
    after = await kh.hub.spawner_state("alice")
    assert after["elastic"]["restored_from"] == pointer
    assert len(await kh.pdbs()) == 1
    await assert_session_back(await kh.reconnect("alice", server.token), "alice")
