# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: House-prices-style regression
# family: kaggle
# models: ElasticNotebook Kaggle set (regression on a joined table, log target, random forest)
# stresses: merge with a lookup table, log transforms, one-hot, a slow RandomForest fit, predictions frame
# %% [parameters]
N = 40_000
N_TREES = 60
# %% [quick]
N = 2_000
N_TREES = 5
# %%
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import train_test_split
# %%
rng = np.random.default_rng(7)
neighbourhoods = pd.DataFrame({
    "hood": [f"N{i:02d}" for i in range(25)],
    "hood_quality": rng.normal(0, 1, 25).round(3),
    "school_score": rng.integers(1, 11, 25),
})
# %%
houses = pd.DataFrame({
    "hood": rng.choice(neighbourhoods.hood, size=N),
    "lot_area": rng.lognormal(9, 0.5, N).round(),
    "living_area": rng.normal(1600, 500, N).clip(400, 6000).round(),
    "bedrooms": rng.integers(1, 7, N),
    "year_built": rng.integers(1900, 2024, N),
    "garage": rng.choice([0, 1, 2, 3], size=N, p=[0.1, 0.3, 0.5, 0.1]),
    "condition": rng.choice(["poor", "fair", "good", "excellent"], size=N),
})
# %%
houses = houses.merge(neighbourhoods, on="hood", how="left")
houses.shape
# %%
cond_score = {"poor": 0, "fair": 1, "good": 2, "excellent": 3}
log_price = (11 + 0.45 * np.log(houses.living_area) + 0.1 * np.log(houses.lot_area)
             + 0.15 * houses.hood_quality + 0.02 * houses.school_score
             + 0.05 * houses.condition.map(cond_score) - 0.002 * (2024 - houses.year_built))
houses["price"] = np.exp(log_price + rng.normal(0, 0.15, N)).round(-2)
# %%
houses.describe()
# %%
houses["age"] = 2024 - houses.year_built
houses["log_living"] = np.log1p(houses.living_area)
houses["log_lot"] = np.log1p(houses.lot_area)
houses["rooms_per_area"] = houses.bedrooms / houses.living_area
# %%
price_by_hood = houses.groupby("hood").price.agg(["median", "mean", "count"]).sort_values("median")
price_by_hood.tail()
# %%
X = pd.get_dummies(houses.drop(columns=["price", "hood"]), columns=["condition"], dtype=np.uint8)
y = np.log(houses.price)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=1)
# %%
forest = RandomForestRegressor(n_estimators=N_TREES, min_samples_leaf=3, random_state=0, n_jobs=1)
forest.fit(X_train, y_train)
# %%
predictions = pd.DataFrame({"actual": np.exp(y_test), "predicted": np.exp(forest.predict(X_test))})
rmse_log = float(np.sqrt(mean_squared_error(y_test, np.log(predictions.predicted))))
rmse_log
