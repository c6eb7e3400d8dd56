"""Checkpoints are pickles, so loading one runs code: only this server's own checkpoints load.

Real kernels with per-server keys derived from a hub secret as the spawner derives them. Each
attack is checked to be refused *before anything is unpickled*: the hostile payloads would
create a marker file if any of their code ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from elastic_spawner.mixin import ENV_CHECKPOINT_KEY, derive_checkpoint_key
from tests.faults import assert_verified, checkpoint, kernel_env, restore, start_kernel

HUB_SECRET = "hub-secret-for-tests-0123456789abcdef"
ALICE = derive_checkpoint_key(HUB_SECRET, "alice", "")
BOB = derive_checkpoint_key(HUB_SECRET, "bob", "")


@pytest.fixture
def kernels():
    made = []
    yield made
    for k in made:
        k.shutdown()


def kernel(tmp_path: Path, kernels: list, key: str | None):
    env = kernel_env()
    env.pop(ENV_CHECKPOINT_KEY, None)
    if key:
        env[ENV_CHECKPOINT_KEY] = key
    k = start_kernel(tmp_path, env)
    kernels.append(k)
    return k


def only_manifest(store: Path) -> Path:
    (m,) = list((store / "checkpoints").rglob("manifest.json"))
    return m


def refused(k, url: str) -> str:
    res = k.run(f"import kernel_agent as _ka; _ka.restore({url!r})")
    assert not res.ok, "the restore was accepted"
    assert k.value("[n for n in ('x', 'y', 'secret') if n in globals()]") == []
    return res.error["evalue"]


def hostile_cell(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def test_own_signed_checkpoint_restores(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = kernel(tmp_path, kernels, ALICE)
    a.ok("x = [1, 2]")
    checkpoint(a, url)
    assert "hmac_sha256" in json.loads(only_manifest(tmp_path / "store").read_text())
    assert_verified(restore(kernel(tmp_path, kernels, ALICE), url))


def test_tampered_manifest_is_refused(tmp_path, kernels):
    """The store admin (or anyone with write access) edits a cell to run their code at restore."""
    url = (tmp_path / "store").as_uri()
    marker = tmp_path / "pwned"
    a = kernel(tmp_path, kernels, ALICE)
    a.ok("x = [1, 2]")
    checkpoint(a, url)
    path = only_manifest(tmp_path / "store")
    env = json.loads(path.read_text())
    doc = json.loads(env["manifest"])
    doc["graph"]["cells"][-1]["code"] = hostile_cell(marker)
    for c in doc["covariables"]:
        c["action"], c["blob"] = "recompute", None  # force the re-run
    env["manifest"] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    path.write_text(json.dumps(env))
    err = refused(kernel(tmp_path, kernels, ALICE), url)
    assert "failed authentication" in err
    assert not marker.exists()


def test_checkpoint_signed_with_another_users_key_is_refused(tmp_path, kernels):
    """Bob's server (its own key) writes a checkpoint into Alice's prefix: Alice refuses it."""
    url = (tmp_path / "alice-store").as_uri()
    marker = tmp_path / "pwned"
    bob = kernel(tmp_path, kernels, BOB)
    bob.ok("x = 1")
    bob.ok(hostile_cell(marker) + "; y = 2")
    marker.unlink()
    checkpoint(bob, url)
    err = refused(kernel(tmp_path, kernels, ALICE), url)
    assert "failed authentication" in err and "another key" in err
    assert not marker.exists()


def test_unsigned_checkpoint_is_refused_when_a_key_is_configured(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = kernel(tmp_path, kernels, None)
    a.ok("x = [1, 2]")
    checkpoint(a, url)
    assert "hmac_sha256" not in json.loads(only_manifest(tmp_path / "store").read_text())
    err = refused(kernel(tmp_path, kernels, ALICE), url)
    assert "not signed" in err


def test_signed_checkpoint_is_refused_without_a_key(tmp_path, kernels):
    url = (tmp_path / "store").as_uri()
    a = kernel(tmp_path, kernels, ALICE)
    a.ok("x = [1, 2]")
    checkpoint(a, url)
    assert "no key is configured" in refused(kernel(tmp_path, kernels, None), url)


def _hostile_blob(marker: Path) -> bytes:
    from kernel_agent.serialize import dumps

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return b"".join(bytes(p) for p in dumps({"secret": Evil()}, namespace={}).parts)


def test_swapped_blob_content_is_never_unpickled(tmp_path, kernels):
    """A blob's bytes replaced in place: its name is its BLAKE3 hash, so the swap is detected."""
    url = (tmp_path / "store").as_uri()
    marker = tmp_path / "pwned"
    a = kernel(tmp_path, kernels, ALICE)
    a.ok("import os\nsecret = os.urandom(32)")  # cannot be recomputed: must be loaded
    c = checkpoint(a, url)
    assert c["variables"]["secret"] == "ship"
    doc = json.loads(json.loads(only_manifest(tmp_path / "store").read_text())["manifest"])
    (key,) = [e["blob"] for e in doc["covariables"] if "secret" in e["names"]]
    (tmp_path / "store" / "blobs" / key[:2] / key).write_bytes(_hostile_blob(marker))
    b = kernel(tmp_path, kernels, ALICE)
    r = restore(b, url)
    assert r["variables"]["secret"]["action"] == "lost"
    assert "corrupted" in r["variables"]["secret"]["detail"]
    assert not marker.exists()


def test_manifest_pointing_at_a_planted_blob_is_refused(tmp_path, kernels):
    """A hostile blob stored under its own (valid) hash, and the manifest re-pointed at it."""
    from kernel_agent.store import open_store

    url = (tmp_path / "store").as_uri()
    marker = tmp_path / "pwned"
    a = kernel(tmp_path, kernels, ALICE)
    a.ok("import os\nsecret = os.urandom(32)")
    checkpoint(a, url)
    planted = open_store(url).put_blob([_hostile_blob(marker)])
    path = only_manifest(tmp_path / "store")
    env = json.loads(path.read_text())
    doc = json.loads(env["manifest"])
    for e in doc["covariables"]:
        if "secret" in e["names"]:
            e["blob"], e["nbytes"] = planted.key, planted.size
    doc["blobs"] = sorted({e["blob"] for e in doc["covariables"] if e["blob"]})
    env["manifest"] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    path.write_text(json.dumps(env))
    assert "failed authentication" in refused(kernel(tmp_path, kernels, ALICE), url)
    assert not marker.exists()


def test_background_manifests_are_signed_too(tmp_path, kernels):
    from tests.faults import store_ids, wait_for

    url = (tmp_path / "store").as_uri()
    a = kernel(tmp_path, kernels, ALICE)
    a.ok(f"import kernel_agent; kernel_agent.background({url!r}, interval=0.1)")
    a.ok("x = [1, 2]")
    (cid,) = wait_for(lambda: store_ids(url), 60, "a background checkpoint")
    assert cid.endswith(".bg")
    raw = json.loads((tmp_path / "store" / "checkpoints" / cid / "manifest.json").read_text())
    assert "hmac_sha256" in raw and json.loads(raw["manifest"])["background"] is True
    assert_verified(restore(kernel(tmp_path, kernels, ALICE), url))
    refused(kernel(tmp_path, kernels, BOB), url)


# --------------------------------------------------------------------------- without kernels


def test_keys_are_per_user_and_server_and_stable():
    keys = {
        derive_checkpoint_key(HUB_SECRET, u, s)
        for u, s in [("alice", ""), ("alice", "gpu"), ("bob", ""), ("alic", "e/")]
    }
    assert len(keys) == 4
    assert derive_checkpoint_key(HUB_SECRET, "alice", "") == ALICE
    assert derive_checkpoint_key("another-hub", "alice", "") != ALICE
    assert HUB_SECRET not in ALICE


def _spawner(**config: object):
    from elastic_spawner.local import ElasticLocalProcessSpawner

    user = SimpleNamespace(name="alice", url="/user/alice/", base_url="/user/alice/", db=None)
    hub = SimpleNamespace(api_url="http://127.0.0.1:8081/hub/api", base_url="/hub/",
                          public_host="", url="http://127.0.0.1:8081/hub/")
    return ElasticLocalProcessSpawner(user=user, name="", orm_spawner=None, hub=hub,
                                      system_users=False, **config)


def _legacy(spawner):
    """A server with a checkpoint from before key salts (its state has no salt)."""
    spawner.load_state({"elastic": {"checkpoint": "file:///srv/elastic/alice/default#x"}})
    return spawner


def test_spawner_passes_only_the_servers_own_key(monkeypatch):
    monkeypatch.delenv("ELASTIC_HUB_SECRET", raising=False)
    monkeypatch.setenv(ENV_CHECKPOINT_KEY, "a-key-the-hub-happens-to-have")
    assert ENV_CHECKPOINT_KEY not in _spawner().get_env()
    env = _legacy(_spawner(hub_secret=HUB_SECRET)).get_env()
    assert env[ENV_CHECKPOINT_KEY] == ALICE
    assert HUB_SECRET not in env.values()
    monkeypatch.setenv("ELASTIC_HUB_SECRET", HUB_SECRET)
    assert _legacy(_spawner()).get_env()[ENV_CHECKPOINT_KEY] == ALICE


def test_a_new_server_gets_a_salted_key_that_outlives_hub_restarts_but_not_its_deletion():
    """A user deleted and created again must not get the old user's key (tests/hub/test_user_deleted.py)."""
    first = _spawner(hub_secret=HUB_SECRET)
    key = first.get_env()[ENV_CHECKPOINT_KEY]
    salt = first.get_state()["elastic"]["key_salt"]
    assert key == derive_checkpoint_key(HUB_SECRET, "alice", "", salt) != ALICE
    again = _spawner(hub_secret=HUB_SECRET)  # the same server after a hub restart: state from the DB
    again.load_state(first.get_state())
    again.clear_state()
    assert again.get_env()[ENV_CHECKPOINT_KEY] == key
    recreated = _spawner(hub_secret=HUB_SECRET)  # the server row was deleted with the user
    assert recreated.get_env()[ENV_CHECKPOINT_KEY] not in (key, ALICE)
    legacy = _legacy(_spawner(hub_secret=HUB_SECRET))
    legacy.get_env()
    legacy.clear_state()
    assert legacy.get_state()["elastic"]["key_salt"] == ""  # stays unsalted: old checkpoints readable
    assert legacy.created_at is None  # adopts store checkpoints of any age, as before
    assert again.created_at == first.created_at and len(first.created_at) == 22  # checkpoint-id time


def test_server_manifest_signed_with_another_key_is_refused():
    from kernel_agent.server.manifest import ServerManifest, ServerManifestError

    m = ServerManifest(checkpoint_id="20261126T000000000000Z-abcdef", store_url="file:///x", created="")
    data = m.to_bytes(BOB.encode())
    assert ServerManifest.from_bytes(data, BOB.encode()).checkpoint_id == m.checkpoint_id
    with pytest.raises(ServerManifestError, match="failed authentication"):
        ServerManifest.from_bytes(data, ALICE.encode())
    with pytest.raises(ServerManifestError, match="not signed"):
        ServerManifest.from_bytes(m.to_bytes(None), ALICE.encode())
