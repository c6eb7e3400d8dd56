"""Hub-side readers of a server checkpoint agree with the server: lost variables mean incomplete.

No hub, no server: the answers and manifests are built the way the server extension builds them.
A kernel checkpointed "ok" can still lose variables (its summary's ``lost``). The hub's reader
took ``complete`` alone, the service's checkpoint list looked at kernel statuses only, and the
metrics counted co-variable groups ("a, b" once) instead of variables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from elastic_spawner.serverapi import CheckpointResult, ServerStatus
from elastic_spawner.service.checkpoints import list_checkpoints
from elastic_spawner.service.hubapi import Answer
from elastic_spawner.service.metrics import ServiceMetrics
from elastic_spawner.service.migrator import MigrationFailed, Migrator
from elastic_spawner.service.model import Migration, MigrationRequest
from kernel_agent.server.manifest import KernelEntry, ServerManifest, write_manifest
from kernel_agent.server.pointer import new_checkpoint_id

POINTER = "file:///s#20250102T030405123456Z-a1b2c3"
LOST = {"a, b": "cannot be serialized and cell 0 cannot be re-run"}
SUMMARY = {"checkpoint_id": "c1", "variables": {"a": "lost", "b": "lost", "n": "ship"}, "lost": LOST}


def test_an_answer_claiming_complete_with_a_lost_variable_is_read_as_incomplete() -> None:
    """A server from before the contract said `complete: true`; the summaries say otherwise."""
    answer = {"checkpoint": POINTER, "complete": True, "kernels": [
        {"kernel_id": "k1", "path": "a.ipynb", "status": "ok", "summary": SUMMARY},
        {"kernel_id": "k2", "path": "b.ipynb", "status": "ok", "summary": {"lost": {}}}]}

    result = CheckpointResult.from_dict(answer)

    assert not result.complete and result.not_saved == []
    assert [k.path for k in result.lost] == ["a.ipynb"]
    assert result.lost[0].lost == {"a": LOST["a, b"], "b": LOST["a, b"]}
    assert result.shortfall() == f"a.ipynb lost a ({LOST['a, b']}), b ({LOST['a, b']})"


def test_the_checkpoint_list_marks_a_checkpoint_with_lost_variables_incomplete(tmp_path: Path) -> None:
    base = (tmp_path / "store").as_uri()
    entry = KernelEntry(kernel_id="k", kernel_name="python3", status="ok", path="a.ipynb",
                        store_url=base + "/kernels/a", checkpoint_id="c1", lost={"g": "generator"})
    write_manifest(ServerManifest(checkpoint_id=new_checkpoint_id(), store_url=base, created="now",
                                  kernels=[entry]))

    [listed] = list_checkpoints(base)

    assert not listed.complete
    assert listed.to_dict()["kernels"][0]["lost"] == {"g": "generator"}


def test_the_lost_variables_metric_counts_variables_not_groups() -> None:
    totals = ServiceMetrics().observe_checkpoint(1.0, [{"summary": SUMMARY}])
    assert totals["lost"] == 2


async def test_the_migrator_does_not_stop_a_server_whose_checkpoint_loses_variables() -> None:
    """Every kernel saved but a variable lost: not "retry when busy cells finish", it names them."""
    migrator = Migrator(hub=None, records=None, metrics=ServiceMetrics())  # type: ignore[arg-type]
    answer = {"checkpoint": POINTER, "complete": False, "kernels": [
        {"kernel_id": "k1", "path": "a.ipynb", "status": "ok", "summary": SUMMARY}]}

    async def set_phase(rec: Migration, phase: str, message: str) -> None:
        rec.phase = phase

    async def model(rec: Migration) -> dict:
        return {"ready": True}

    async def server_call(*args: object, **kw: object) -> Answer:
        return Answer(200, answer)

    migrator._set_phase, migrator._model, migrator._server_call = set_phase, model, server_call  # type: ignore[method-assign]
    rec = Migration(id="m1", request=MigrationRequest(user="alice"))

    with pytest.raises(MigrationFailed) as e:
        await migrator._checkpoint(rec)

    assert e.value.reason == "variables-lost" and rec.phase == "checkpointing"
    assert f"a.ipynb: a ({LOST['a, b']}), b ({LOST['a, b']})" in str(e.value)
    assert "Retrying does not help" in str(e.value)
    assert rec.kernels == [{"path": "a.ipynb", "checkpoint": "ok",
                            "lost": {"a": LOST["a, b"], "b": LOST["a, b"]}}]


async def test_a_migration_that_accepts_lost_variables_goes_on_and_names_them() -> None:
    migrator = Migrator(hub=None, records=None, metrics=ServiceMetrics())  # type: ignore[arg-type]
    answer = {"checkpoint": POINTER, "complete": False, "kernels": [
        {"kernel_id": "k1", "path": "a.ipynb", "status": "ok", "summary": SUMMARY}]}
    messages: list[str] = []

    async def set_phase(rec: Migration, phase: str, message: str) -> None:
        rec.phase = phase
        messages.append(message)

    async def model(rec: Migration) -> dict:
        return {"ready": True}

    async def server_call(*args: object, **kw: object) -> Answer:
        return Answer(200, answer)

    migrator._set_phase, migrator._model, migrator._server_call = set_phase, model, server_call  # type: ignore[method-assign]
    request = MigrationRequest.from_body("alice", "", {"accept_lost": True})
    rec = Migration(id="m1", request=request)

    await migrator._checkpoint(rec)

    assert rec.phase == "stopping"
    assert any("accept_lost" in m and "a.ipynb: a (" in m for m in messages), messages
    assert rec.kernels[0]["lost"] == {"a": LOST["a, b"], "b": LOST["a, b"]}
    assert MigrationRequest.from_dict(request.to_dict()).accept_lost is True
    with pytest.raises(ValueError, match="accept_lost = 'yes': give true or false"):
        MigrationRequest.from_body("alice", "", {"accept_lost": "yes"})


def test_the_status_says_whether_the_last_checkpoint_is_complete() -> None:
    """`checkpoint_on_stop=on_request` records the last checkpoint; it must not call it complete blindly."""
    assert ServerStatus.from_dict({"restore": {}, "last_checkpoint": POINTER,
                                   "last_checkpoint_complete": False}).last_checkpoint_complete is False
    assert ServerStatus.from_dict({"restore": {}, "last_checkpoint": POINTER}).last_checkpoint_complete is None
