# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Slow model fit next to a cheap wide feature matrix
# family: engine
# models: a Kaggle training notebook: a cross-validated gradient-boosting fit (tens of seconds) beside a feature expansion (hundreds of MB, built in a blink); sized to run in about half a minute, the fit most of it (ours / re-run-all scales with it)
# stresses: the ship-or-recompute choice with library objects: ship the fitted model and scores, recompute the expanded features
# expect_shipped: model, cv_scores
# expect_recomputed: expanded, lookup
# %% [parameters]
N_ROWS = 100_000
N_ITER = 600
REPEAT = 40
# %% [quick]
N_ROWS = 500
N_ITER = 5
REPEAT = 2
# %%
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import cross_val_score
# %%
X, y = make_classification(n_samples=N_ROWS, n_features=20, n_informative=12, random_state=0)
# %%
model = HistGradientBoostingClassifier(max_iter=N_ITER, early_stopping=False, random_state=0).fit(X, y)
cv_scores = cross_val_score(
    HistGradientBoostingClassifier(max_iter=N_ITER, early_stopping=False, random_state=0), X, y, cv=3
)
accuracy = float(model.score(X, y))
# %%
expanded = np.tile(X, (REPEAT, 1))          # many copies of the rows: large, cheap
lookup = np.repeat(y, REPEAT).astype(np.float64)
# %%
summary = {"accuracy": accuracy, "cv": cv_scores.round(4).tolist(), "expanded_rows": len(expanded)}
summary
