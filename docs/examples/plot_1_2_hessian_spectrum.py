"""
Curvature: the Hessian spectral density over training
=====================================================

An MLP 784-32-10 is trained on MNIST, and at initialization, mid-training and
the end the eigenvalue density of the Hessian of its training loss (25,450
parameters) is estimated by stochastic Lanczos quadrature. Trained
classifiers show a bulk of eigenvalues near zero and a few outliers, about
as many as classes minus one (Sagun et al., 2017; Papyan, 2020). To run in
under a minute this example trains on 3,000 images for 3 epochs and builds
the Hessian on 500 of them.
"""

# %%
# Load a subset of MNIST (``HW1SK_DATA`` points to the folder holding ``MNIST/raw``).
from hw1sk.datasets import load_mnist

X, y = load_mnist(train=True, n_samples=3000, random_state=0)

# %%
# One training run; the weights are copied at epochs 0, 1 and 3, and the
# density is computed at each copy (5 probes of 40 Lanczos steps).
from hw1sk.studies.hessian_spectrum import HessianSpectrumStudy

study = HessianSpectrumStudy(n_hessian=500, n_probes=5, n_iter=40, random_state=0)
study.fit(X, y)
study.results_

# %%
# The densities on a log scale; the dotted lines are the bulk edges above
# which the outliers are counted.
from hw1sk.plotting.spectrum import plot_spectral_density

fig = plot_spectral_density(study)
