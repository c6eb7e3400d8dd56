# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Titanic-style survival classifier
# family: kaggle
# models: ElasticNotebook Kaggle set (tabular classification: imputation, feature engineering, boosted trees)
# stresses: pandas groupby/merge/qcut, get_dummies, a slow GradientBoosting fit, a Generator consumed across cells
# %% [parameters]
N = 60_000
N_EST = 120
# %% [quick]
N = 3_000
N_EST = 10
# %%
import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.model_selection import train_test_split
# %%
rng = np.random.default_rng(42)
# %%
passengers = pd.DataFrame({
    "pclass": rng.choice([1, 2, 3], size=N, p=[0.25, 0.2, 0.55]),
    "sex": rng.choice(["male", "female"], size=N),
    "age": rng.normal(30, 14, size=N).clip(0.4, 80).round(1),
    "sibsp": rng.poisson(0.5, size=N),
    "parch": rng.poisson(0.4, size=N),
    "fare": rng.lognormal(3.0, 1.0, size=N).round(2),
    "embarked": rng.choice(["S", "C", "Q"], size=N, p=[0.7, 0.2, 0.1]),
    "title": rng.choice(["Mr", "Mrs", "Miss", "Master", "Dr", "Rev"], size=N,
                        p=[0.5, 0.2, 0.2, 0.06, 0.02, 0.02]),
})
passengers.loc[rng.random(N) < 0.2, "age"] = np.nan
# %%
logit = (1.5 * (passengers.sex == "female") - 0.8 * (passengers.pclass - 2)
         - 0.02 * (passengers.age.fillna(30) - 30) + 0.003 * passengers.fare)
passengers["survived"] = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)
# %%
passengers.head()
# %%
passengers.describe()
# %%
passengers.isna().mean()
# %%
title_age = passengers.groupby("title")["age"].median().rename("title_age")
passengers = passengers.merge(title_age, left_on="title", right_index=True, how="left")
passengers["age"] = passengers["age"].fillna(passengers["title_age"])
# %%
passengers["family_size"] = passengers.sibsp + passengers.parch + 1
passengers["is_alone"] = (passengers.family_size == 1).astype(int)
passengers["fare_bin"] = pd.qcut(passengers.fare, 5, labels=False)
passengers["age_bin"] = pd.cut(passengers.age, [0, 12, 18, 35, 60, 120], labels=False)
# %%
survival_by_class = passengers.pivot_table(index="pclass", columns="sex", values="survived", aggfunc="mean")
survival_by_class
# %%
features = pd.get_dummies(passengers.drop(columns=["survived", "title_age"]),
                          columns=["sex", "embarked", "title"], dtype=np.uint8)
target = passengers["survived"]
# %%
X_train, X_test, y_train, y_test = train_test_split(features, target, test_size=0.2, random_state=0)
# %%
model = GradientBoostingClassifier(n_estimators=N_EST, max_depth=3, random_state=0)
model.fit(X_train, y_train)
# %%
accuracy = model.score(X_test, y_test)
importances = pd.Series(model.feature_importances_, index=features.columns).sort_values(ascending=False)
# %%
print(f"accuracy = {accuracy:.3f}")
importances.head(10)
