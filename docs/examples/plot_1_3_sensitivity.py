"""
Flatness: sensitivity and sharpness against batch size
======================================================

Five MLPs that differ only in their batch size (16 to 4096; same initial
weights, same learning rate, same number of epochs, hence the same compute)
are trained on MNIST. For each we record train and test loss and accuracy, the
*sensitivity* — the mean Frobenius norm of the Jacobian of the softmax output
with respect to the input (Novak et al., 2018) — and, as measures of the
flatness of the minimum, Keskar et al.'s ε-sharpness and the top eigenvalue
of the loss Hessian. To run in under a minute this example trains on 4,000
images for 2 epochs and measures on 500 samples; the report uses all of MNIST.
"""

# %%
# Load a subset of MNIST (``HW1SK_DATA`` points to the folder holding ``MNIST/raw``).
from hw1sk.datasets import load_mnist

X, y = load_mnist(train=True, n_samples=4000, random_state=0)
X_test, y_test = load_mnist(train=False, n_samples=1000, random_state=1)

# %%
# One model per batch size (two worker processes), each measured on the same
# 500 samples.
from hw1sk.studies.sensitivity import SensitivityStudy

study = SensitivityStudy(max_epochs=2, n_eval=500, sharpness_steps=10, n_jobs=2,
                         random_state=0)
study.fit(X, y, X_test, y_test)
study.summary_

# %%
# Loss and accuracy against batch size, with the sensitivity on the right axis.
from hw1sk.plotting.flatness import plot_sensitivity, plot_sharpness

fig = plot_sensitivity(study)

# %%
# Sharpness and the top Hessian eigenvalue of the same models.
fig = plot_sharpness(study)
