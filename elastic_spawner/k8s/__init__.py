"""Pure builders for the Kubernetes objects the elastic spawner adds (no API calls, no hub).

Runs in the hub process (imported by `elastic_spawner.kube`) and in the migrator service
(`elastic_spawner.drain`, `elastic_spawner.resize` read the same label and annotation names).
Like kubespawner's `objects.py`, everything here is a function of its arguments, tested without
a cluster.
"""

from elastic_spawner.k8s.labels import (
    MANAGED_LABEL,
    PDB_ANNOTATION,
    SELECTOR_LABELS,
    SERVERNAME_ANNOTATION,
    USERNAME_ANNOTATION,
)
from elastic_spawner.k8s.objects import make_event, make_pdb, pdb_name, secret_env
from elastic_spawner.k8s.prestop import PRESTOP_SCRIPT, make_prestop_handler

__all__ = [
    "MANAGED_LABEL",
    "PDB_ANNOTATION",
    "PRESTOP_SCRIPT",
    "SELECTOR_LABELS",
    "SERVERNAME_ANNOTATION",
    "USERNAME_ANNOTATION",
    "make_event",
    "make_pdb",
    "make_prestop_handler",
    "pdb_name",
    "secret_env",
]
