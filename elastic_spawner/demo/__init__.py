"""The bundled demo: a sample notebook (`digits.ipynb`), a kernel-side probe and the demo driver.

The driver (`runner.py`) runs in the `elastic-spawner demo` CLI process; `probe.py` is sent as text
into kernels and never imported by the hub side.
"""
