"""scikit-learn's estimator checks on small configurations of the estimators."""

import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from hw1sk.estimators import NeuralClassifier, NeuralRegressor

# Checks that a skorch-based estimator cannot pass, with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_no_attributes_set_in_init": (
        "skorch's NeuralNet.__init__ sets initialized_/virtual_params_ and stores routed "
        "module__* arguments as attributes"
    ),
    "check_do_not_raise_errors_in_init_or_set_params": (
        "skorch rebuilds the callbacks inside set_params, so an invalid `callbacks` raises there"
    ),
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny nets: thread start-up and oversubscription cost more than they save
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@parametrize_with_checks(
    [
        NeuralClassifier(module__hidden=(16,), max_epochs=8, lr=3e-2, batch_size=32,
                         random_state=0),
        NeuralRegressor(module__hidden=(16,), max_epochs=8, lr=3e-2, batch_size=32,
                        random_state=0),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
