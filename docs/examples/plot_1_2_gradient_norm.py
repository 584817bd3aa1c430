"""
Gradient norm during training
=============================

HW1-2 also asks to watch the gradient norm while a network learns. A small
MLP fits the function sin(5πx)/(5πx) with full-batch Adam;
:class:`~hw1sk.callbacks.GradNormTrace` records the global L2 norm of the
gradient and the loss at every iteration. The loss falls in steps, and the
gradient norm rises and falls with each step: the optimizer leaves a plateau
(small gradient) through a steeper region before it settles again.
"""

# %%
# The training data: 200 noiseless samples of sinc on [-1, 1].
from hw1sk.datasets import make_function_dataset

X, y = make_function_dataset("sinc", n_samples=200, random_state=0)

# %%
# One traced run: float targets make the study train a regressor (mean
# squared error). Snapshots every 100 epochs are kept too, but here only the
# per-iteration records ``grad_norms_`` matter.
from hw1sk.studies.optimization import OptimizationStudy

study = OptimizationStudy(hidden=(16, 16), n_runs=1, every=100, max_epochs=3000,
                          batch_size=-1, lr=3e-3, random_state=0).fit(X, y)
study.grad_norms_.tail()

# %%
# Gradient norm (top) and loss (bottom) per iteration, both on log scales.
from hw1sk.plotting.optimization import plot_gradient_norm

fig = plot_gradient_norm(study, run=0)
