"""Request validation, user_options merging, record persistence, log scrubbing: no hub needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elastic_spawner.service.app import scrub_uri
from elastic_spawner.service.model import (
    Migration,
    MigrationRequest,
    RequestError,
    format_memory,
    parse_cpu,
    parse_memory,
)
from elastic_spawner.service.records import RecordStore


@pytest.mark.parametrize(("text", "nbytes"), [
    ("4G", 4 * 2**30), ("512Mi", 512 * 2**20), ("1.5Gi", int(1.5 * 2**30)), (2**30, 2**30),
    ("16Gi", 16 * 2**30), ("100M", 100 * 2**20), ("1000", 1000),
])
def test_memory_sizes_parse_like_jupyterhub_mem_limit(text, nbytes) -> None:
    assert parse_memory(text) == nbytes
    assert parse_memory(format_memory(nbytes)) == nbytes


@pytest.mark.parametrize(("text", "cpus"), [(2, 2.0), ("0.5", 0.5), ("1500m", 1.5), (4.0, 4.0)])
def test_cpu_counts_parse_like_kubernetes_quantities(text, cpus) -> None:
    assert parse_cpu(text) == cpus


def test_limits_are_enforced_with_the_setting_named() -> None:
    with pytest.raises(RequestError, match="ElasticService.max_cpu"):
        MigrationRequest.from_body("a", "", {"cpu": 64}, max_cpu=8)
    with pytest.raises(RequestError, match="ElasticService.max_memory"):
        MigrationRequest.from_body("a", "", {"memory": "1Ti"}, max_memory=64 * 2**30)


def test_new_user_options_keep_old_sizes_and_drop_the_old_node() -> None:
    req = MigrationRequest.from_body("a", "", {"memory": "8Gi", "node_selector": ["pool=big"]})
    opts = req.user_options({"node": "node-a", "cpu": 2, "memory": "4Gi", "image": "x"})
    assert opts == {"cpu": 2, "memory": "8Gi", "image": "x", "node_selector": {"pool": "big"}}
    assert MigrationRequest.from_body("a", "", {"node": "node-b"}).user_options(
        {"node": "node-a"}) == {"node": "node-b"}


def test_records_survive_a_restart_and_a_corrupt_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    store = RecordStore(path)
    rec = Migration(id="20250101T000000000Z-abcdef", request=MigrationRequest("alice", "gpu",
                                                                             memory=2**30))
    rec.phase = "stopping"
    store.add(rec)
    again = RecordStore(path)
    [loaded] = again.load()
    assert loaded.to_dict() == rec.to_dict() and not loaded.finished
    assert list(again.active())[0].request.memory == 2**30
    path.write_text("{torn")
    assert RecordStore(path).load() == []
    assert (tmp_path / "m.json.corrupt").read_text() == "{torn"


def test_finished_records_beyond_the_limit_are_dropped_never_active_ones(tmp_path) -> None:
    store = RecordStore(tmp_path / "m.json", keep_finished=2)
    for i in range(5):
        r = Migration(id=f"2025010{i}T000000000Z-00000{i}", request=MigrationRequest("u"))
        r.outcome = "verified" if i != 0 else None  # the oldest one is still running
        store.add(r)
    ids = [r.id for r in store.all()]
    assert ids == ["20250100T000000000Z-000000", "20250103T000000000Z-000003",
                   "20250104T000000000Z-000004"]
    assert len(json.loads((tmp_path / "m.json").read_text())["migrations"]) == 3


def test_credentials_in_query_strings_are_scrubbed_from_the_access_log() -> None:
    assert scrub_uri("/services/elastic/api/migrations?token=abc&user=alice") == \
        "/services/elastic/api/migrations?token=[secret]&user=alice"
    assert scrub_uri("/services/elastic/oauth_callback?code=x&state=y") == \
        "/services/elastic/oauth_callback?code=[secret]&state=[secret]"


def test_the_service_subcommand_passes_its_options_through(monkeypatch) -> None:
    import elastic_spawner.service.app as app_module
    from elastic_spawner import cli

    seen: list[list[str]] = []
    monkeypatch.setattr(app_module, "main", lambda argv=None: seen.append(list(argv or [])))
    assert cli.main(["service", "--drain", "--keep-checkpoints=3"]) == 0
    assert seen == [["--drain", "--keep-checkpoints=3"]]
    with pytest.raises(SystemExit):
        cli.main(["checkpoints", "alice", "--drain"])  # other subcommands stay strict
