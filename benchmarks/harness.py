"""The migration benchmark harness lives in the package: `elastic_spawner.bench.harness`.

It is installed code (so `elastic-spawner bench` runs from a plain `pip install`), and this file
only re-exports it for people who look for it under `benchmarks/`. The notebooks are in
`elastic_spawner/bench/notebooks/` (also reachable as `benchmarks/notebooks`).
"""

from elastic_spawner.bench.harness import (  # noqa: F401 - re-exported
    METHODS,
    Bench,
    MethodResult,
    NotebookResult,
    compare,
    file_target,
    s3_endpoint,
    s3_target,
)
