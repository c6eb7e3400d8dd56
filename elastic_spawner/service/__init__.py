"""The elastic-spawner JupyterHub service: migrate/resize API, checkpoints, metrics, retention.

Runs in its own process, managed by the hub or standalone (see docs/service.md)::

    c.JupyterHub.services = [{
        "name": "elastic",
        "url": "http://127.0.0.1:10101",
        "command": [sys.executable, "-m", "elastic_spawner.service",
                    "--proxy-url=http://127.0.0.1:8000"],
        "oauth_client_allowed_scopes": ["custom:elastic:migrate", "custom:elastic:read"],
    }]
    c.JupyterHub.custom_scopes = elastic_spawner.service.CUSTOM_SCOPES

Modules: `app` (the traitlets Application), `handlers` (REST), `migrator` (the migration steps),
`model` (request validation, records), `records` (persistence), `hubapi` (hub and proxy calls
with retries), `checkpoints` and `retention` (the store), `metrics` (Prometheus), `client` and
`commands` (the `elastic-spawner migrate|checkpoints` CLI).
"""

from elastic_spawner.service.handlers import CUSTOM_SCOPES, MIGRATE_SCOPE, READ_SCOPE

__all__ = ["CUSTOM_SCOPES", "MIGRATE_SCOPE", "READ_SCOPE", "ElasticService"]


def __getattr__(name: str):  # the Application (and tornado/jupyterhub) only when asked for
    if name == "ElasticService":
        from elastic_spawner.service.app import ElasticService

        return ElasticService
    raise AttributeError(name)
