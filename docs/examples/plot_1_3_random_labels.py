"""
Random labels: an over-parameterized network memorizes noise
============================================================

HW1-3 asks whether a network can fit training labels that carry no
information. The labels of a subset of MNIST training images are replaced by a
random permutation of themselves; an MLP with far more parameters than images
is trained on them and scored every epoch on test images with their true
labels. Its training accuracy climbs towards 100% while its test accuracy
stays at chance (10%), as in Zhang et al. (2017). A subset of 1,000 images and
30 epochs keep the example under a minute; the data are read from the folder
named by the ``HW1SK_DATA`` environment variable.
"""

# %%
# Load MNIST; the study draws its own training and test subsets from these
# arrays, reproducibly from ``random_state``.
from hw1sk.datasets import load_mnist
from hw1sk.plotting.generalization import plot_random_labels
from hw1sk.studies.random_labels import RandomLabelStudy

X, y = load_mnist(flatten=True)
X_test, y_test = load_mnist(train=False, flatten=True)

# %%
# The default network is a 784-512-512-10 MLP (669,706 parameters) trained
# with Adam; here it sees 1,000 images with shuffled labels for 30 epochs.
study = RandomLabelStudy(n_train=1000, n_test=1000, max_epochs=30, random_state=0)
study.fit(X, y, X_test, y_test)
print(study.summary_[["n_train", "n_epochs", "train_accuracy", "test_accuracy",
                      "train_loss", "test_loss"]].round(3).to_string(index=False))

# %%
# The training labels are a permutation of the true ones: the same histogram,
# but only about one in ten still matches its image.
print("labels still equal to the true ones:",
      f"{(study.random_labels_ == study.y_train_).mean():.1%}")

# %%
# Train loss falls towards zero (memorization) while the test loss grows;
# test accuracy stays at the chance line.
fig = plot_random_labels(study)
