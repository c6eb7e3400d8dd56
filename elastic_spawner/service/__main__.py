"""`python -m elastic_spawner.service`: run the migrator service (see docs/service.md)."""

from elastic_spawner.service.app import main

if __name__ == "__main__":
    main()
