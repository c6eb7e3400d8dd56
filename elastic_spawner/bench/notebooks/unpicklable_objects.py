# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Unpicklable objects (generators, locks, open files)
# family: stress
# models: prior-art failure classes: generator, lock, open file handle (ElasticNotebook's 19 DumpSession failures)
# stresses: a generator consumed across cells, a threading.Lock used by a function, an open file with a read position, itertools state
# %% [parameters]
N = 3_000_000
# %% [quick]
N = 20_000
# %%
import itertools
import os
import threading
import numpy as np
import sklearn.datasets
# %%
csv_path = os.path.join(os.path.dirname(sklearn.datasets.__file__), "data", "iris.csv")
handle = open(csv_path)
header = handle.readline().strip().split(",")
# %%
first_rows = [handle.readline().strip().split(",") for _ in range(10)]
# %%
lock = threading.Lock()
tally = {"n": 0}
def bump(k):
    with lock:
        tally["n"] += k
for i in range(1000):
    bump(i)
# %%
squares = (i * i for i in itertools.count())
head = [next(squares) for _ in range(5)]
# %%
more = [next(squares) for _ in range(3)]
# %%
ids = itertools.count(100)
first_id, second_id = next(ids), next(ids)
# %%
rng = np.random.default_rng(8)
values = rng.standard_normal(N)
# %%
def moments(x, k):
    return [float((x ** j).mean()) for j in range(1, k + 1)]
stats = moments(values, 8)
# %%
slow_sum = 0.0
for v in values[: N // 3].tolist():
    slow_sum += v * v
# %%
remaining_rows = sum(1 for _ in handle)
remaining_rows
