# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Digits (bundled dataset) model selection
# family: kaggle
# models: ElasticNotebook Kaggle set / examples/numpy.ipynb (sklearn bundled data, grid search)
# stresses: sklearn Pipeline objects, GridSearchCV with many fits (slow), PCA arrays
# %% [parameters]
REPEAT = 3
GRID = {"svc__C": [0.5, 2, 8], "svc__gamma": ["scale", 0.01, 0.03]}
# %% [quick]
REPEAT = 1
GRID = {"svc__C": [1.0], "svc__gamma": ["scale"]}
# %%
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
# %%
digits = load_digits()
X = np.repeat(digits.data, REPEAT, axis=0) + np.random.default_rng(0).normal(0, 0.5, (len(digits.data) * REPEAT, 64))
y = np.repeat(digits.target, REPEAT)
X.shape
# %%
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
# %%
pca = PCA(n_components=30, random_state=0).fit(X_train)
explained = pca.explained_variance_ratio_.cumsum()
explained[-1]
# %%
pipe = make_pipeline(StandardScaler(), PCA(n_components=30, random_state=0), SVC())
grid = GridSearchCV(pipe, GRID, cv=3)
grid.fit(X_train, y_train)
# %%
best = grid.best_estimator_
test_accuracy = best.score(X_test, y_test)
cv_table = {k: v for k, v in grid.cv_results_.items() if k.startswith(("mean_", "param_"))}
test_accuracy
# %%
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, best.predict(X_test)), 1)
confusion.diagonal()
