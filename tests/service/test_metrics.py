"""The service's Prometheus metrics are exposed and move as migrations happen.

Scraped as Prometheus would, with a token holding `custom:elastic:read`, and parsed with
prometheus_client's own parser: names follow the conventions (`_seconds`, `_bytes`, `_total`).
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import ElasticHub, token_for
from tests.service.test_migrate import run_tiny_notebook

pytestmark = [pytest.mark.hub, pytest.mark.slow]


async def scrape(eh: ElasticHub, token: str) -> dict[str, float]:
    from tornado.httpclient import AsyncHTTPClient

    resp = await AsyncHTTPClient().fetch(eh.service_url + "metrics",
                                         headers={"Authorization": f"token {token}"})
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels:
                continue
            samples[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return samples


async def test_metrics_move_with_a_migration(make_elastic_hub) -> None:
    eh: ElasticHub = await make_elastic_hub()
    server = await eh.user_server("alice", node="node-a")
    await run_tiny_notebook(server, "alice")
    k = await server.open_notebook("work.ipynb")
    await k.ok("import time\ntime.sleep(1)  # slow to recompute: shipped\nslow = list(range(100))")
    await k.close()
    reader = await token_for(eh, "reader")
    ops = await token_for(eh, "ops")

    before = await scrape(eh, reader)
    assert before["elastic_spawner_migrations_total{outcome=verified}"] == 0
    assert before["elastic_spawner_checkpoint_duration_seconds_count"] == 0
    assert "elastic_spawner_drains_handled_total" in before

    code, body = await eh.call("POST", "api/users/alice/server/migrate", {}, token=ops)
    assert code == 202, body
    rec = await eh.wait_migration(body["migration"]["id"], ops)
    assert rec["outcome"] == "verified", rec
    code, body = await eh.call("POST", "api/users/nobody/server/migrate", {}, token=ops)
    assert code == 404  # refused at the door: not a migration, not counted

    after = await scrape(eh, reader)
    assert after["elastic_spawner_migrations_total{outcome=verified}"] == 1
    assert after["elastic_spawner_migrations_total{outcome=failed}"] == 0
    assert after["elastic_spawner_checkpoint_duration_seconds_count"] == 1
    assert after["elastic_spawner_checkpoint_duration_seconds_sum"] > 0
    assert after["elastic_spawner_restore_duration_seconds_count"] == 1
    assert after["elastic_spawner_migration_duration_seconds_count"] == 1
    assert after["elastic_spawner_shipped_bytes_total"] > 0
    assert after["elastic_spawner_shipped_bytes_total"] == rec["stats"]["bytes_shipped"]
    shipped = after["elastic_spawner_variables_total{action=shipped}"]
    recomputed = after["elastic_spawner_variables_total{action=recomputed}"]
    assert shipped + recomputed >= 5  # tag, xs, ys (an alias of xs), d, slow (+ time?)
    assert shipped >= 1  # slow: a 1 s cell costs more to re-run than to ship
    assert shipped == rec["stats"]["shipped"] and recomputed == rec["stats"]["recomputed"]
    assert after["elastic_spawner_migrations_in_progress"] == 0
