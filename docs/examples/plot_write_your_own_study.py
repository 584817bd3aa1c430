"""
Write your own study: does weight decay flatten the minimum?
============================================================

Every HW1 study is a small subclass of :class:`hw1sk.studies._base.Study`,
the way scikit-learn's ``GridSearchCV`` is a small subclass of
``BaseSearchCV``: the base owns ``fit`` (parameter checks, data
preparation, the parallel, cached runs, ``settings_``), and a study writes
only its hooks. Here we ask a question of our own: trained with more weight
decay, does a network end in a flatter minimum (lower ε-sharpness), and at
what cost in training loss? The study varies only the weight decay; every
other setting comes from the estimator we give it.
"""

# %%
# The run: one module-level function (so that it pickles into joblib and
# dask workers) that trains a clone of the template with one weight decay
# and measures it. ``train_run`` fits with the run's seed and raises
# ``RunDiverged`` for a diverged run, which the study then lists in
# ``diverged_``.
from numbers import Real

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils._param_validation import Interval

from hw1sk import NeuralClassifier, sharpness
from hw1sk.studies._base import Study, train_run


def weight_decay_run(estimator, X, y, X_test, y_test, seed, weight_decay):
    est = clone(estimator).set_params(optimizer__weight_decay=weight_decay)
    run = train_run(est, X, y, X_test, y_test, seed=seed)
    net = run["estimator"]
    sharp = sharpness(net.module_, net.criterion_, X[:200], y[:200], epsilon=1e-3,
                      n_steps=5, n_restarts=1, random_state=seed)
    return {"weight_decay": weight_decay, "train_loss": run["train"]["loss"],
            "test_accuracy": run["test"]["accuracy"], "sharpness": float(sharp)}


# %%
# The study: its own parameters with their constraints, the tasks (one per
# weight decay, all from the same seed), and how the results are collected.
class WeightDecayStudy(Study):
    _parameter_constraints = {**Study._parameter_constraints,
                              "weight_decays": ["array-like"],
                              "test_size": [Interval(Real, 0, 1, closed="neither")]}
    _run_function = staticmethod(weight_decay_run)

    # its own parameters; the shared ones (n_jobs, cache_dir, random_state, ...)
    # pass through **shared and appear in get_params all the same
    def __init__(self, estimator=None, *, weight_decays=(0.0, 1e-3, 1e-2), test_size=0.25,
                 **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _default_estimator(self, data):
        return NeuralClassifier(module__hidden=(32,), max_epochs=20, lr=1e-2)

    def _tasks(self, data, template):
        common = {"estimator": template, "X": data.X, "y": data.y, "X_test": data.X_test,
                  "y_test": data.y_test, "seed": 0}
        return [({"weight_decay": float(w)}, {**common, "weight_decay": float(w)})
                for w in self.weight_decays]

    def _collect(self, data, template, labels, runs):
        self.results_ = pd.DataFrame([run for run in runs if run is not None])

    def _settings(self, data, template):
        return {"varied": "optimizer__weight_decay", "n_train": len(data.X)}


# %%
# Fit it like any scikit-learn estimator, on two noisy interleaved moons;
# the runs go through the same runner, cache and backends as the HW1 studies.
from sklearn.datasets import make_moons  # noqa: E402

X, y = make_moons(n_samples=600, noise=0.25, random_state=0)
X = X.astype(np.float32)
study = WeightDecayStudy(weight_decays=(0.0, 1e-3, 1e-2, 1e-1), backend="sequential")
study.fit(X, y)
print(study.results_.round(4).to_string(index=False))
print({k: study.settings_[k] for k in ("optimizer", "lr", "max_epochs", "varied")})

# %%
# What weight decay did here: the training loss and the ε-sharpness of each
# minimum (the answer is computed, not assumed: it depends on the data, the
# model and the seed; more seeds would give it error bars).
res = study.results_
flattest = res.loc[res["sharpness"].idxmin(), "weight_decay"]
print(f"flattest minimum at weight decay {flattest:g}; training loss rises from "
      f"{res['train_loss'].iloc[0]:.3f} to {res['train_loss'].iloc[-1]:.3f}")
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(res["weight_decay"] + 1e-4, res["sharpness"], "o-", label="ε-sharpness")
ax.plot(res["weight_decay"] + 1e-4, res["train_loss"], "s--", label="train loss")
ax.set_xscale("log")
ax.set_xlabel("weight decay (+1e-4)")
ax.legend()
fig.tight_layout()
