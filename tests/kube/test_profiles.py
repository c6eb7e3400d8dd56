"""KubeSpawner's `profile_list` (the usual z2jh way to offer sizes and images) with the elastic
spawner: a server started with one profile and started again with another comes back with its
session, on a pod built from the new profile, and the profile keys are not "ignored" options.

Real hub + ElasticKubeSpawner on the emulated cluster.
"""

from __future__ import annotations

import pytest

from tests.kube.conftest import KubeHub
from tests.kube.notebooks import assert_session_back, run_session

pytestmark = [pytest.mark.hub, pytest.mark.slow]

PROFILES = """
c.ElasticKubeSpawner.profile_list = [
    {"display_name": "Small", "slug": "small", "default": True,
     "kubespawner_override": {"cpu_limit": 1, "mem_limit": "1G"}},
    {"display_name": "Large", "slug": "large",
     "kubespawner_override": {"cpu_limit": 2, "mem_limit": "3G"},
     "profile_options": {"flavour": {"display_name": "Flavour", "choices": {
         "plain": {"display_name": "Plain", "kubespawner_override": {"environment": {"FLAVOUR": "plain"}}},
         "spicy": {"display_name": "Spicy", "kubespawner_override": {"environment": {"FLAVOUR": "spicy"}}},
     }}}},
]
"""


def _limits(pod: dict) -> dict:
    return pod["spec"]["containers"][0]["resources"]["limits"]


def _env(pod: dict) -> dict:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env") or []}


async def test_switching_profile_restarts_the_session_on_the_new_profiles_pod(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub(extra_config=PROFILES)
    server = await kh.server("fay", options={"profile": "small"})
    await run_session(server, "fay")
    small = await kh.user_pod("fay")
    assert float(_limits(small)["cpu"]) == 1.0, _limits(small)

    await kh.hub.stop_server("fay")
    await kh.hub.start_server("fay", options={"profile": "large", "flavour": "spicy"})
    large = await kh.user_pod("fay")
    assert large["metadata"]["uid"] != small["metadata"]["uid"]
    assert float(_limits(large)["cpu"]) == 2.0, _limits(large)
    assert _env(large).get("FLAVOUR") == "spicy"
    await assert_session_back(await kh.reconnect("fay", server.token), "fay")

    log = kh.hub.log_path.read_text(errors="replace")
    assert "ignoring user_options" not in log, [
        line for line in log.splitlines() if "ignoring user_options" in line]


async def test_an_option_no_profile_reads_is_still_named_as_ignored(make_kube_hub) -> None:
    kh: KubeHub = await make_kube_hub(extra_config=PROFILES)
    await kh.server("gil", options={"profile": "large", "flavour": "plain", "colour": "red"})
    ignored = [line for line in kh.hub.log_path.read_text(errors="replace").splitlines()
               if "ignoring user_options" in line]
    assert len(ignored) == 1 and "ignoring user_options colour for" in ignored[0], ignored
    assert "flavour" in ignored[0].split("understood:")[1], ignored
