# ruff: noqa  (a notebook: imports mid-file, bare expressions displayed as cell output)
# title: Review-sentiment-style text classification
# family: kaggle
# models: ElasticNotebook Kaggle set (NLP: bag of words, TF-IDF, linear models)
# stresses: lists of strings, scipy sparse matrices, a fitted vectorizer (vocabulary dict), cross-validation
# %% [parameters]
N_DOCS = 40_000
# %% [quick]
N_DOCS = 1_500
# %%
import random
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
# %%
random.seed(5)
positive = "great excellent love wonderful amazing perfect best happy recommend fantastic".split()
negative = "terrible awful hate worst poor boring broken refund disappointed waste".split()
neutral = [f"w{i}" for i in range(3000)]
# %%
def make_review(label):
    words = random.choices(neutral, k=random.randint(20, 60))
    words += random.choices(positive if label else negative, k=random.randint(1, 4))
    words += random.choices(negative if label else positive, k=random.randint(0, 1))
    random.shuffle(words)
    return " ".join(words)
# %%
labels = [random.random() < 0.5 for _ in range(N_DOCS)]
reviews = [make_review(lab) for lab in labels]
reviews[0][:80]
# %%
corpus = pd.DataFrame({"text": reviews, "label": np.array(labels, dtype=int)})
corpus["length"] = corpus.text.str.split().str.len()
corpus.groupby("label").length.describe()
# %%
vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
X = vectorizer.fit_transform(corpus.text)
X.shape
# %%
clf = LogisticRegression(C=4.0, max_iter=300)
scores = cross_val_score(clf, X, corpus.label, cv=3)
scores.mean()
# %%
clf.fit(X, corpus.label)
vocab = np.array(vectorizer.get_feature_names_out())
top_terms = pd.Series(clf.coef_[0], index=vocab).sort_values()
top_terms.head(5), top_terms.tail(5)
