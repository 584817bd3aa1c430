"""
Number of parameters versus generalization
==========================================

HW1-3 trains at least ten models of one family whose parameter counts span
about two orders of magnitude and compares their final training and test
loss and accuracy. Here: MLPs with one hidden layer of 4 to 256 units (3,190
to 203,530 parameters) on a 1,000-image subset of MNIST, scored on 1,000 test
images. Larger models fit the training set ever better; the test loss
improves less, so the gap between the two grows with the parameter count.
Eight epochs keep the example under a minute; the data are read from the
folder named by the ``HW1SK_DATA`` environment variable.
"""

# %%
# Load MNIST; the study draws its training and test subsets reproducibly.
from hw1sk.datasets import load_mnist
from hw1sk.plotting.generalization import plot_param_count
from hw1sk.studies.param_count import ParamCountStudy

X, y = load_mnist(flatten=True)
X_test, y_test = load_mnist(train=False, flatten=True)

# %%
# Ten widths, one model each (the default estimator: Adam, lr 1e-3, batch 128);
# every model gets its own seed, derived from ``random_state``.
study = ParamCountStudy(widths=(4, 6, 8, 12, 16, 24, 32, 64, 128, 256), max_epochs=8,
                        n_train=1000, n_test=1000, random_state=0)
study.fit(X, y, X_test, y_test)
print(study.results_[["width", "n_params", "train_loss", "test_loss", "train_accuracy",
                      "test_accuracy"]].round(3).to_string(index=False))

# %%
# Final loss against the number of parameters (log scale): train solid, test dashed.
fig = plot_param_count(study, metric="loss")

# %%
# The same for accuracy.
fig = plot_param_count(study, metric="accuracy")

# %%
# ``widths`` also takes one tuple per model, the width of each hidden layer
# (here two layers, the second half as wide as the first); ``models=`` takes
# hand-written ``torch.nn.Module`` classes or whole estimators instead. Each
# model's parameters are counted, and the results are ordered by that count.
layouts = ParamCountStudy(widths=[(16, 8), (64, 32), (256, 128)], max_epochs=8,
                          n_train=1000, n_test=1000, random_state=0)
layouts.fit(X, y, X_test, y_test)
print(layouts.results_[["name", "n_params", "train_loss", "test_loss"]].round(3)
      .to_string(index=False))
