"""
Deep vs shallow: fitting a function with the same number of parameters
======================================================================

HW1-1 asks whether depth helps when the parameter count is fixed. Three ReLU
networks of about 571 parameters each (one, four and seven hidden layers,
widths chosen by :func:`hw1sk.models.mlp_for_budget`) are fitted full-batch,
with the mean squared error, to :math:`\\sin(5\\pi x)/(5\\pi x)` and to
:math:`\\operatorname{sign}(\\sin(5\\pi x))`. The assignment trains up to
20,000 epochs; here a few thousand keep the example under a minute.
"""

# %%
# One study fits every model to every target function; each model is
# trained twice (``n_restarts=2``), each time with its own seed, because
# narrow deep ReLU nets sometimes die (constant output).
from hw1sk.plotting.deep_shallow import plot_loss_curves, plot_predictions
from hw1sk.studies.deep_shallow import DeepShallowStudy

study = DeepShallowStudy(max_epochs=2000, n_restarts=2, plateau_patience=500, random_state=0)
study.fit_functions(("sinc", "sign"), n_samples=300, n_grid=500)

# %%
# Every restart is kept; ``best`` marks the lowest final loss per function and
# model, ``constant_output`` a dead network.
print(study.summary_[["function", "model", "restart", "n_params", "epochs", "train_loss",
                      "constant_output", "best"]].to_string(index=False))

# %%
# Training loss against epoch, all models in one chart per function (log
# scale; faint lines are the other restarts).
fig = plot_loss_curves(study, restarts="all")

# %%
# The best restart of each model against the ground truth on a dense grid.
fig = plot_predictions(study)
