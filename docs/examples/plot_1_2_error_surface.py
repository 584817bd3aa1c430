"""
The error surface around a trained network
==========================================

The bonus of HW1-2: what does the loss look like around the minimum that
training found, and how did the optimizer get there? An MLP is trained on
MNIST with its weights recorded every epoch; the loss is then evaluated on the
plane spanned by the two principal directions of that trajectory, centred on
the trained weights (Li et al., 2018, Section 7), and the trajectory is
projected onto it. ``directions="random"`` gives instead the
filter-normalized random plane of Li et al. (Section 4), the usual picture of a
minimum's width, on which the trajectory projects to almost nothing. To run
in under a minute this example trains on 4,000 images and evaluates the loss
on 2,000 of them.
"""

# %%
# Load a subset of MNIST (``HW1SK_DATA`` points to the folder holding ``MNIST/raw``).
from hw1sk.datasets import load_mnist

X, y = load_mnist(train=True, n_samples=4000, flatten=True, random_state=0)

# %%
# Train for 10 epochs, then evaluate 41 points on a line and a 21 x 21 grid.
from hw1sk.studies.error_surface import ErrorSurfaceStudy

study = ErrorSurfaceStudy(directions="pca", max_epochs=10, n_eval=2000,
                          random_state=0).fit(X, y)
study.summary_

# %%
# The path (red) runs down the valley from the initialization (square) to the
# trained weights (star); the right panel is the loss along the first
# principal direction through the trained weights.
from hw1sk.plotting.optimization import plot_error_surface

fig = plot_error_surface(study)
