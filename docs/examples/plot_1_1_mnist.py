"""
Deep vs shallow on MNIST: CNNs and DNNs of one parameter budget
===============================================================

The actual task of HW1-1: shallow and deep convolutional networks (CNN-1,
CNN-2, CNN-4) and fully connected networks (MLP-1, MLP-2, MLP-4) of about
8,000 parameters each are trained on MNIST, and their training loss,
training accuracy and test accuracy are compared epoch by epoch. A subset of
MNIST and three epochs keep the example under a minute; the data are read
from the folder named by the ``HW1SK_DATA`` environment variable.
"""

# %%
# Load a stratified subset of the training and test images, shaped
# ``(n, 1, 28, 28)`` so that the CNNs see images and the MLPs flatten them.
from hw1sk.datasets import load_mnist
from hw1sk.plotting.deep_shallow import plot_training_curves
from hw1sk.studies.deep_shallow import DeepShallowStudy

X, y = load_mnist(n_samples=2000, random_state=0)
X_test, y_test = load_mnist(train=False, n_samples=500, random_state=0)

# %%
# Integer labels make it a classification study; the default models are
# parameter-matched CNNs and MLPs at depths 1, 2 and 4 (Adam; small batches
# and a larger step than the default make up for the short training).
study = DeepShallowStudy(max_epochs=3, lr=3e-3, batch_size=64, random_state=0)
study.fit(X, y, X_test, y_test, name="MNIST")
print(study.summary_[["model", "n_params", "n_layers", "train_loss", "train_acc",
                      "test_acc"]].to_string(index=False))

# %%
# Training loss (left) and accuracy (right) per epoch; dashed lines are the
# test accuracy, whose final value is in the legend.
fig = plot_training_curves(study)
