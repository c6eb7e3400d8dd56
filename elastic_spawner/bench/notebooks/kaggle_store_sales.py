# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Store-sales-style time-series forecasting
# family: kaggle
# models: ElasticNotebook Kaggle set (time-series feature engineering and gradient boosting)
# stresses: datetime index, groupby + rolling/shift features, merge with a calendar, HistGradientBoosting
# %% [parameters]
N_STORES = 60
N_DAYS = 900
MAX_ITER = 300
# %% [quick]
N_STORES = 5
N_DAYS = 120
MAX_ITER = 10
# %%
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
# %%
rng = np.random.default_rng(3)
days = pd.date_range("2021-01-01", periods=N_DAYS, freq="D")
stores = pd.DataFrame({"store": np.arange(N_STORES), "size": rng.choice(["S", "M", "L"], N_STORES),
                       "base": rng.lognormal(5, 0.4, N_STORES)})
# %%
sales = pd.MultiIndex.from_product([stores.store, days], names=["store", "date"]).to_frame(index=False)
sales = sales.merge(stores, on="store")
# %%
calendar = pd.DataFrame({"date": days})
calendar["dow"] = calendar.date.dt.day_of_week
calendar["month"] = calendar.date.dt.month
calendar["holiday"] = rng.random(N_DAYS) < 0.03
calendar["promo"] = rng.random(N_DAYS) < 0.15
sales = sales.merge(calendar, on="date")
# %%
season = 1 + 0.2 * np.sin(2 * np.pi * sales.date.dt.day_of_year / 365.25)
weekly = 1 + 0.15 * (sales.dow >= 5)
sales["units"] = rng.poisson(sales.base * season * weekly * (1 + 0.3 * sales.promo) * (1 - 0.5 * sales.holiday))
# %%
sales = sales.sort_values(["store", "date"]).reset_index(drop=True)
g = sales.groupby("store").units
for lag in (1, 7, 14, 28):
    sales[f"lag_{lag}"] = g.shift(lag)
for w in (7, 28):
    sales[f"roll_{w}"] = g.transform(lambda s, w=w: s.shift(1).rolling(w).mean())
# %%
monthly = sales.set_index("date").groupby("store").units.resample("MS").sum().unstack(0)
monthly.iloc[:3, :5]
# %%
train = sales.dropna()
cutoff = days[-60]
fit_part, valid_part = train[train.date < cutoff], train[train.date >= cutoff]
cols = [c for c in train.columns if c not in ("units", "date", "size")]
# %%
booster = HistGradientBoostingRegressor(max_iter=MAX_ITER, learning_rate=0.05, max_leaf_nodes=63,
                                        early_stopping=False, random_state=0)
booster.fit(fit_part[cols], fit_part.units)
# %%
forecast = valid_part[["store", "date", "units"]].assign(pred=booster.predict(valid_part[cols]))
mape = float((forecast.units - forecast.pred).abs().sum() / forecast.units.sum())
mape
