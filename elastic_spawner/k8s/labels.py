"""Label and annotation names shared by the spawner (which writes them) and the drain watcher.

Runs wherever `elastic_spawner` is imported (hub, migrator service). One module so the writer
and the readers can never disagree on a key.
"""

from __future__ import annotations

# Set on every pod ElasticKubeSpawner makes: the drain watcher migrates only these.
MANAGED_LABEL = "elastic-spawner/managed"
# The name of the server's PodDisruptionBudget, on the pod (the watcher releases it by name).
PDB_ANNOTATION = "elastic-spawner/pdb"
# KubeSpawner's own annotations: the *unescaped* user and server names (labels hold slugs).
USERNAME_ANNOTATION = "hub.jupyter.org/username"
SERVERNAME_ANNOTATION = "hub.jupyter.org/servername"
# KubeSpawner pod labels that identify one server; the PDB selects exactly these.
SELECTOR_LABELS = ("component", "hub.jupyter.org/username", "hub.jupyter.org/servername")
