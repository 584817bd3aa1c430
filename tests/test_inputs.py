"""Tests for hw1sk._inputs: the one place for the torch inputs of the analysis functions."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk._inputs import (
    as_input_tensor,
    as_target_tensor,
    check_batch_size,
    check_module,
    eval_mode,
    module_and_data,
    module_dtype,
    working_module,
)


def test_check_module_names_what_is_wrong():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        check_module(lambda x: x)
    with pytest.raises(ValueError, match="no parameters"):
        check_module(nn.ReLU(), require_parameters=True)
    assert check_module(nn.ReLU()) is not None


def test_working_module_copies_only_when_needed():
    module = nn.Linear(3, 2)
    same, device = working_module(module)
    assert same is module and device == torch.device("cpu")
    as64, _ = working_module(module, dtype=torch.float64)
    assert as64 is not module and module_dtype(as64) == torch.float64
    assert module.weight.dtype == torch.float32  # the caller's module is untouched


def test_eval_mode_restores_every_submodule_flag():
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    module[1].eval()  # a mixed state the caller chose
    with eval_mode(module):
        assert not any(m.training for m in module.modules())
    assert module.training and module[0].training and not module[1].training


def test_inputs_are_checked_like_arrays():
    with pytest.raises(ValueError, match="NaN or infinity"):
        as_input_tensor(torch.tensor([[np.nan]]), torch.float32, "cpu")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        as_input_tensor(torch.ones(3), torch.float32, "cpu")
    with pytest.raises(ValueError, match="NaN"):
        as_input_tensor(np.array([[np.nan]]), torch.float32, "cpu")
    assert as_input_tensor(np.arange(6).reshape(3, 2), torch.float64, "cpu").dtype == torch.float64


def test_targets_keep_their_kind():
    assert as_target_tensor(np.array([0, 1], dtype=np.int32), torch.float32, "cpu").dtype \
        == torch.int64
    assert as_target_tensor(np.array([0.5, 1.0]), torch.float64, "cpu").dtype == torch.float64
    assert as_target_tensor(np.array([True, False]), torch.float32, "cpu").dtype == torch.bool


def test_read_only_arrays_are_read_without_a_warning():
    X = np.ones((4, 2), dtype=np.float32)
    X.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = as_input_tensor(X, torch.float32, "cpu")
    assert t.shape == (4, 2)


def test_module_and_data_checks_lengths():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        module_and_data(nn.Linear(2, 1), np.ones((3, 2)), np.ones(2))
    work, device, X, y = module_and_data(nn.Linear(2, 1), np.ones((3, 2)))
    assert y is None and X.dtype == torch.float32


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_check_batch_size(value):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        check_batch_size(value, 10)
    assert check_batch_size(None, 10) == 10
