"""
Flatness: interpolating between two trained networks
====================================================

Two MLPs of the same architecture are trained on MNIST, once with batch sizes
64 and 1024, once with learning rates 1e-3 and 1e-2. The models on the line
θ(α) = (1 − α) θ₁ + α θ₂, α ∈ [−1, 2], are evaluated on training and test
data: a solution in a narrow valley shows a loss that climbs quickly away from
α = 0 or α = 1 (Goodfellow et al., 2015; Keskar et al., 2017). To run in under a
minute this example trains on 4,000 images for 3 epochs; the report uses all of
MNIST.
"""

# %%
# Load a subset of MNIST (``HW1SK_DATA`` points to the folder holding ``MNIST/raw``).
from hw1sk.datasets import load_mnist

X, y = load_mnist(train=True, n_samples=4000, random_state=0)
X_test, y_test = load_mnist(train=False, n_samples=1000, random_state=1)

# %%
# Train both pairs and evaluate 31 points of each line. Without an ``estimator``
# the study trains its default MLP 784-128-10 (Adam, lr 1e-3, batch size 64): the
# batch-size pair trains it with batch sizes 64 and 1024 at its lr, the
# learning-rate pair with lrs 1e-3 and 1e-2 at its batch size. A given estimator
# is used the same way: only the setting a pair names changes (and ``max_epochs``,
# set here). Two worker processes.
from hw1sk.studies.interpolation import InterpolationStudy

study = InterpolationStudy(max_epochs=3, n_jobs=2, random_state=0).fit(X, y, X_test, y_test)
study.summary_

# %%
# The four trained models, by (pair, end point).
{key: (net.batch_size, net.lr) for key, net in study.estimators_.items()}

# %%
# Loss on a log scale (left) and accuracy (right); train solid, test dashed.
from hw1sk.plotting.flatness import plot_interpolation

fig = plot_interpolation(study)
