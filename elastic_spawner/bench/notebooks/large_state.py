# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Large state (>= 2 GB of arrays)
# family: large-state
# models: ElasticNotebook Kaggle set's largest inputs (12.5 GB), scaled to this machine
# stresses: checkpoint throughput on >= 2 GB of float64 arrays, compared with a raw sequential write of the same bytes
# %% [parameters]
GB = 2.2
STEPS = 6
# %% [quick]
GB = 0.04
STEPS = 2
# %%
import numpy as np
# %%
n = int(GB * 1e9 / 8 / 4)          # four arrays of float64
rng = np.random.default_rng(2024)
# %%
field_a = rng.random(n)
field_b = rng.standard_normal(n)
# %%
field_c = np.arange(n, dtype=np.float64)
field_d = np.ones(n)
# %%
for step in range(STEPS):          # a small "simulation": every array updated in place
    field_a += 0.01 * field_b
    np.sin(field_a, out=field_a)
    field_c[::3] += step
    field_d *= 1.0001
    field_b *= 0.999
# %%
state_gb = sum(x.nbytes for x in (field_a, field_b, field_c, field_d)) / 1e9
summary = {"gb": state_gb, "a_mean": float(field_a.mean()), "d_last": float(field_d[-1])}
summary
