"""elastic_spawner: live migration of Jupyter kernel state for JupyterHub (hub side).

    c.JupyterHub.spawner_class = "elastic_spawner.ElasticKubeSpawner"   # or "elastic-kube"

The public classes are imported lazily, so `import elastic_spawner` (CLI, local demo) does not
pull in kubespawner and kubernetes_asyncio.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "ElasticSpawnerMixin": "elastic_spawner.mixin",
    "ElasticLocalProcessSpawner": "elastic_spawner.local",
    "ElasticKubeSpawner": "elastic_spawner.kube",
    "DrainWatcher": "elastic_spawner.drain",
    "DrainSettings": "elastic_spawner.drain",
    "MigrationReport": "elastic_spawner.drain",
    "resize_server": "elastic_spawner.resize",
    "SizePolicy": "elastic_spawner.resize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elastic_spawner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
