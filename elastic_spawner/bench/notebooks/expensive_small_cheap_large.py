# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Expensive small result next to a cheap large array
# family: engine
# models: the ElasticNotebook paper's motivating case (a slow fit producing a few numbers, a big array rebuilt in a fraction of a second); sized, like every notebook here, to run in about half a minute to a minute: the slow cell takes most of it (ours / re-run-all scales with it)
# stresses: the ship-or-recompute choice: the plan must ship the slow small results and recompute the cheap large arrays
# expect_shipped: estimates, pi_hat
# expect_recomputed: grid, weights
# %% [parameters]
N_BIG = 40_000_000
TRIALS = 60_000_000
# %% [quick]
N_BIG = 200_000
TRIALS = 20_000
# %%
import math
import random
import numpy as np
# %%
def monte_carlo_pi(trials, seed):
    """Pure-Python sampling: seconds of work for one float."""
    gen = random.Random(seed)
    inside = 0
    for _ in range(trials):
        x, y = gen.random(), gen.random()
        inside += x * x + y * y <= 1.0
    return 4.0 * inside / trials
# %%
estimates = [monte_carlo_pi(TRIALS, seed) for seed in range(3)]
pi_hat = sum(estimates) / len(estimates)
error = abs(pi_hat - math.pi)
# %%
grid = np.arange(N_BIG, dtype=np.float64)          # 320 MB, cheap to rebuild
weights = np.linspace(0.0, 1.0, N_BIG)             # another 320 MB
# %%
weighted_total = float(grid @ weights)
summary = {"pi": pi_hat, "error": error, "total": weighted_total}
summary
