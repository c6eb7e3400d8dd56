# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: NumPy tutorial (many small cells)
# family: tutorial
# models: ElasticNotebook Cornell tutorial set (small state, many cells, aliasing, randomness)
# stresses: ~35 cells, b = a aliases, views, in-place updates, global and seeded RNG, unseeded random draws replayed
# %% [parameters]
N = 2_000_000
LOOP = 1_500_000
# %% [quick]
N = 10_000
LOOP = 10_000
# %%
import math
import random
import numpy as np
# %%
a = np.arange(12).reshape(3, 4)
a
# %%
b = a          # an alias, not a copy
b[0, 0] = 100
a[0, 0]
# %%
c = a.copy()
c[0, 0] = -1
# %%
row = a[1]     # a view
row *= 10
a
# %%
col = a[:, 2]
col.sum()
# %%
np.random.seed(0)
samples = np.random.normal(size=N)
# %%
hist, edges = np.histogram(samples, bins=50)
# %%
mean, std = samples.mean(), samples.std()
# %%
lucky = random.random()       # unseeded: only a replay of the generator state reproduces it
# %%
shuffled = list(range(20))
random.shuffle(shuffled)
# %%
def zscore(x):
    return (x - x.mean()) / x.std()
# %%
z = zscore(samples)
# %%
outliers = np.flatnonzero(np.abs(z) > 3)
len(outliers)
# %%
squares = [i * i for i in range(1000)]
evens = [s for s in squares if s % 2 == 0]
# %%
table = {"squares": squares, "evens": evens}
# %%
evens.append(-1)
table["evens"][-1]
# %%
grid = np.meshgrid(np.linspace(-2, 2, 400), np.linspace(-2, 2, 400))
# %%
gx, gy = grid
field = np.exp(-(gx**2 + gy**2))
# %%
field_total = field.sum() * (4 / 399) ** 2
# %%
angles = np.linspace(0, 2 * math.pi, 360)
unit = np.stack([np.cos(angles), np.sin(angles)])
# %%
rotation = np.array([[0, -1], [1, 0]])
rotated = rotation @ unit
# %%
rng = np.random.default_rng(123)
walk = rng.choice([-1, 1], size=N).cumsum()
# %%
max_excursion = int(np.abs(walk).max())
# %%
def running_mean(x, w):
    return np.convolve(x, np.ones(w) / w, mode="valid")
# %%
smooth_walk = running_mean(walk[:100_000], 1000)
# %%
slow_total = 0.0
for i in range(1, LOOP):
    slow_total += 1.0 / (i * i)
# %%
pi_estimate = math.sqrt(6 * slow_total)
# %%
matrix = rng.random((400, 400))
inverse = np.linalg.inv(matrix)
# %%
identity_error = float(np.abs(matrix @ inverse - np.eye(400)).max())
# %%
words = "the quick brown fox jumps over the lazy dog".split()
counts = {w: words.count(w) for w in words}
# %%
counts
