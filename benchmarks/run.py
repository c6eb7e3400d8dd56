"""Run the migration benchmarks; the same as `elastic-spawner bench` (see docs/benchmarks.md).

    .venv/bin/python benchmarks/run.py [--quick] [--only a,b] [--stores file,s3] [--no-kishu]
"""

import sys

from elastic_spawner.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
