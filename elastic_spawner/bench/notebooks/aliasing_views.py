# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Aliasing and views
# family: stress
# models: prior-art failure classes: aliases broken across files (%Store's 40 failures), numpy views, mutation
# stresses: array views mutated through the view, the same object in several containers, pandas frames shared by reference, reference cycles
# %% [parameters]
N = 8_000_000
SIDE = 1500
ROUNDS = 40
# %% [quick]
N = 20_000
SIDE = 100
ROUNDS = 2
# %%
import numpy as np
import pandas as pd
# %%
base = np.arange(N, dtype=np.float64)
evens = base[::2]
window = base[100:200]
# %%
evens *= 2           # writes through the view into base
window[:] = -1       # and through another view
# %%
pair = [base, base]
shared = {"whole": base, "evens": evens}
# %%
rng = np.random.default_rng(0)
matrix = rng.random((SIDE, SIDE))
transposed = matrix.T
first_row = matrix[0]
# %%
first_row[:] = 0.0    # visible through matrix and transposed
# %%
frame = pd.DataFrame({"a": rng.random(N // 10), "b": rng.integers(0, 100, N // 10)})
frames = {"train": frame, "also_train": frame}
views_of_frame = [frame, frames]
# %%
frame["c"] = frame.a * frame.b     # mutation seen through every container
# %%
nested = {"items": [1, 2, 3]}
items_alias = nested["items"]
items_alias.append(4)
# %%
class Node:
    def __init__(self, name):
        self.name = name
        self.links = []
# %%
root = Node("root")
leaf = Node("leaf")
root.links.append(leaf)
leaf.links.append(root)        # a cycle
graph_index = {n.name: n for n in (root, leaf)}
# %%
def heavy_rowsums(m, rounds):
    out = np.zeros(m.shape[0])
    for _ in range(rounds):
        out += np.sort(m, axis=1)[:, -10:].sum(axis=1)
    return out
rowsums = heavy_rowsums(matrix, ROUNDS)
# %%
checks = (base[2] == 4.0, window[0] == -1.0, transposed[1, 0] == 0.0, nested["items"][-1] == 4)
checks
