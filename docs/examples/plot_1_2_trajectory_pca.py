"""
Optimization trajectories of eight training runs
================================================

HW1-2 asks where training goes in weight space. The same MLP (784-64-32-10,
Adam) is trained eight times on MNIST, each run from its own random
initialization and batch order, and its weights are recorded every three
epochs. One PCA is fitted on the snapshots of all runs together
(:class:`~hw1sk.transformers.TrajectoryPCA`), once on all 52,650 parameters
and once on the first layer alone, and each run's path is drawn in the plane
of the first two components, every point annotated with the training accuracy
at that snapshot. To run in well under a minute this example trains on 4,000
images for 12 epochs; the report uses all 60,000 for 30 epochs.
"""

# %%
# Load a subset of MNIST (``HW1SK_DATA`` points to the folder holding ``MNIST/raw``).
from hw1sk.datasets import load_mnist

X, y = load_mnist(train=True, n_samples=4000, flatten=True, random_state=0)

# %%
# Train the eight runs; each gets its own seed derived from ``random_state``.
from hw1sk.studies.optimization import OptimizationStudy

study = OptimizationStudy(n_runs=8, every=3, max_epochs=12, random_state=0).fit(X, y)
study.summary_[["run", "train_loss", "train_accuracy", "displacement", "path_length"]]

# %%
# The runs start close together in this picture and end far apart: each
# finds its own solution. The first layer holds 50,240 of the 52,650
# parameters, so its PCA (right) looks much like the whole model's.
from hw1sk.plotting.optimization import plot_trajectories

fig = plot_trajectories(study, scope="both", annotate="accuracy")
