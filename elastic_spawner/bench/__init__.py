"""Benchmarks: our migration vs dump-everything (dill), re-run-everything and Kishu.

Lives in the installed package (not only in the repository's ``benchmarks/``) so that
``elastic-spawner bench`` works from a plain ``pip install``; the notebooks are package data.
Entry point: `elastic_spawner.bench.run.main`.
"""
