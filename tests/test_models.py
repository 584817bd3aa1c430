"""Tests of the model zoo (hw1sk.models): shapes, parameter counts, budget solvers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hw1sk.models import (
    ACTIVATIONS,
    CNN,
    MLP,
    MODEL_ZOO,
    RowRNN,
    cnn_for_budget,
    count_params,
    make_module,
    mlp_for_budget,
    mlp_n_params,
    resolve_module,
)
from hw1sk.seeding import seed_everything


def _hidden_widths(model: MLP):
    return [m.out_features for m in model.net if isinstance(m, nn.Linear)][:-1]


def _conv_count(c_in, c_out, k):
    return (c_in * k * k + 1) * c_out


# ---------------------------------------------------------------------------
# MLP


def test_mlp_571_by_hand():
    # one hidden layer of 190: 190 weights + 190 biases in, 190 weights + 1 bias out
    assert count_params(MLP(1, (190,), 1)) == 190 + 190 + 190 + 1 == 571


@pytest.mark.parametrize("n_in, hidden, n_out", [
    (1, (5, 10, 5), 1), (784, (32,), 10), (3, (), 2), (7, (2, 2, 2, 2), 4),
])
def test_mlp_shapes_and_count(n_in, hidden, n_out):
    model = MLP(n_in, hidden, n_out)
    out = model(torch.randn(6, n_in))
    assert out.shape == (6, n_out)
    assert count_params(model) == mlp_n_params(n_in, hidden, n_out)
    # independent count: sum over consecutive widths of (fan_in + 1) * fan_out
    widths = [n_in, *hidden, n_out]
    assert mlp_n_params(n_in, hidden, n_out) == sum(
        a * b + b for a, b in zip(widths[:-1], widths[1:]))
    assert _hidden_widths(model) == list(hidden)


def test_mlp_flattens_images():
    model = MLP(784, (16,), 10)
    X = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model(X), model(X.reshape(4, -1)), rtol=0, atol=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS) + [nn.Tanh, nn.ReLU()])
def test_mlp_activations(activation):
    model = MLP(2, (3,), 1, activation=activation)
    assert model(torch.randn(5, 2)).shape == (5, 1)
    assert count_params(model) == mlp_n_params(2, (3,), 1)


def test_mlp_same_seed_same_weights():
    seed_everything(3)
    a = MLP(2, (4, 4), 1)
    seed_everything(3)
    b = MLP(2, (4, 4), 1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# mlp_for_budget


@pytest.mark.parametrize("depth", range(1, 9))
def test_mlp_for_budget_571(depth):
    model = mlp_for_budget(571, depth)
    widths = _hidden_widths(model)
    assert len(widths) == depth and min(widths) >= 2
    n = count_params(model)
    assert n == mlp_n_params(1, widths, 1)
    assert n == 571  # an exact layout exists at every depth from 1 to 8


@given(
    n_params=st.integers(300, 20000),
    depth=st.integers(2, 8),
    n_in=st.integers(1, 10),
    n_out=st.integers(1, 10),
)
def test_mlp_for_budget_within_one_percent(n_params, depth, n_in, n_out):
    model = mlp_for_budget(n_params, depth, n_in=n_in, n_out=n_out)
    widths = _hidden_widths(model)
    assert len(widths) == depth and min(widths) >= 2
    n = count_params(model)
    assert abs(n - n_params) <= 0.01 * n_params, (widths, n)


@settings(max_examples=40)
@given(n_params=st.integers(300, 3000), n_in=st.integers(1, 10), n_out=st.integers(1, 10))
def test_mlp_for_budget_depth_two_most_uniform(n_params, n_in, n_out):
    # with two hidden layers both widths are free: brute force over every pair (a, c)
    # must find none nearer the budget, and among the nearest none more uniform
    a, c = _hidden_widths(mlp_for_budget(n_params, 2, n_in=n_in, n_out=n_out))
    w = np.arange(2, n_params // 2 + 2)
    A, C = np.meshgrid(w, w, indexing="ij")
    counts = (n_in + 1) * A + (A + 1) * C + (C + 1) * n_out
    diff = np.abs(counts - n_params)
    nearest = diff == diff.min()
    assert abs((n_in + 1) * a + (a + 1) * c + (c + 1) * n_out - n_params) == diff.min()
    best_spread = (np.maximum(A, C) / np.minimum(A, C))[nearest].min()
    assert max(a, c) / min(a, c) == best_spread


@given(n_params=st.integers(300, 20000), n_in=st.integers(1, 10), n_out=st.integers(1, 10))
def test_mlp_for_budget_depth_one_is_nearest(n_params, n_in, n_out):
    # one hidden layer: the count moves in steps of n_in + n_out + 1, so the best is
    # the nearest reachable count (found here by brute force), within 1% only for
    # budgets of at least 50 steps
    n = count_params(mlp_for_budget(n_params, 1, n_in=n_in, n_out=n_out))
    step = n_in + n_out + 1
    best = min(abs(mlp_n_params(n_in, (w,), n_out) - n_params)
               for w in range(2, n_params // step + 3))
    assert abs(n - n_params) == best
    if n_params >= 50 * step:
        assert abs(n - n_params) <= 0.01 * n_params


def test_mlp_for_budget_deterministic():
    assert _hidden_widths(mlp_for_budget(5000, 5, n_in=3, n_out=2)) == \
        _hidden_widths(mlp_for_budget(5000, 5, n_in=3, n_out=2))


@pytest.mark.parametrize("kwargs", [
    dict(n_params=5, depth=1, n_in=10),  # even width 2 has 2 * 12 + 1 parameters
    dict(n_params=15, depth=3),  # the smallest, widths (2, 2, 2), has 19
])
def test_mlp_for_budget_too_small(kwargs):
    with pytest.raises(ValueError, match="fits a budget"):
        mlp_for_budget(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_params=0), "n_params"),
    (dict(n_params=571.0), "n_params"),
    (dict(depth=0), "depth"),
    (dict(min_width=1), "min_width"),
    (dict(n_in=2.5), "n_in"),
    (dict(n_out=0), "n_out"),
    (dict(activation="swish"), "activation"),
])
def test_mlp_for_budget_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mlp_for_budget(**kwargs)


# ---------------------------------------------------------------------------
# CNN


def test_cnn_mnist_layouts_agree():
    model = CNN()
    X = torch.rand(3, 1, 28, 28)
    out = model(X)
    assert out.shape == (3, 10)
    torch.testing.assert_close(model(X.reshape(3, 784)), out, rtol=0, atol=0)
    torch.testing.assert_close(model(X[:, 0]), out, rtol=0, atol=0)
    # a non-contiguous flat batch (a transposed view) is accepted too
    flat_t = X.reshape(3, 784).T.contiguous().T
    assert not flat_t.is_contiguous()
    torch.testing.assert_close(model(flat_t), out, rtol=0, atol=0)


def test_cnn_count_by_hand():
    model = CNN(1, 28, channels=(16, 32), n_out=10)
    assert count_params(model) == _conv_count(1, 16, 3) + _conv_count(16, 32, 3) + 33 * 10 \
        == 160 + 4640 + 330


def test_cnn_cifar_shapes():
    model = CNN(in_channels=3, image_size=32, channels=(8, 8, 8), hidden=(12,))
    X = torch.rand(2, 3, 32, 32)
    out = model(X)
    assert out.shape == (2, 10)
    torch.testing.assert_close(model(X.reshape(2, -1)), out, rtol=0, atol=0)
    assert count_params(model) == (_conv_count(3, 8, 3) + 2 * _conv_count(8, 8, 3)
                                   + 9 * 12 + 13 * 10)


def test_cnn_without_global_pool():
    # 28 -> 14 -> 7 -> 3 after three pools; the flattened map feeds the head
    model = CNN(channels=(4, 4, 4), global_pool=False, n_out=5)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 5)
    assert count_params(model) == (_conv_count(1, 4, 3) + 2 * _conv_count(4, 4, 3)
                                   + (4 * 3 * 3 + 1) * 5)


@pytest.mark.parametrize("n_params", [3000, 20000])
@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("in_channels, image_size", [(1, 28), (3, 32)])
def test_cnn_for_budget_is_nearest(n_params, depth, in_channels, image_size):
    model = cnn_for_budget(n_params, depth, in_channels=in_channels, image_size=image_size)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth
    c = convs[0].out_channels
    assert all(m.out_channels == c for m in convs)
    n = count_params(model)
    # no other equal-width net of this depth is nearer (counted on real modules)
    for other in (c - 1, c + 1):
        if other >= 1:
            alt = CNN(in_channels, image_size, channels=(other,) * depth)
            assert abs(n - n_params) <= abs(count_params(alt) - n_params)
    assert model(torch.rand(2, in_channels, image_size, image_size)).shape == (2, 10)


def test_cnn_for_budget_relative_error_small_for_moderate_budgets():
    for depth in (1, 2, 3):
        n = count_params(cnn_for_budget(20000, depth))
        assert abs(n - 20000) <= 0.05 * 20000


# ---------------------------------------------------------------------------
# RowRNN


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_row_rnn_reads_rows(cell):
    model = RowRNN(hidden_size=8, n_layers=2, cell=cell)
    X = torch.rand(3, 1, 28, 28)
    out = model(X)
    assert out.shape == (3, 10)
    # independent computation: the recurrent layer run on the rows, then the head
    seq, _ = model.rnn(X[:, 0])
    torch.testing.assert_close(out, model.head(seq[:, -1]), rtol=0, atol=0)
    torch.testing.assert_close(model(X.reshape(3, 784)), out, rtol=0, atol=0)
    torch.testing.assert_close(model(X[:, 0]), out, rtol=0, atol=0)


def test_row_rnn_cifar_concatenates_channels_per_row():
    model = RowRNN(row_size=32, n_rows=32, in_channels=3, hidden_size=6, n_out=4)
    X = torch.rand(2, 3, 32, 32)
    out = model(X)
    assert out.shape == (2, 4)
    steps = torch.cat([X[:, 0], X[:, 1], X[:, 2]], dim=2)  # (n, 32 rows, 3 * 32)
    seq, _ = model.rnn(steps)
    torch.testing.assert_close(out, model.head(seq[:, -1]), rtol=0, atol=0)
    torch.testing.assert_close(model(X.reshape(2, -1)), out, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# zoo lookup


@pytest.mark.parametrize("name, params, cls", [
    ("mlp", dict(n_in=3, hidden=(4,), n_out=2), MLP),
    ("mlp_budget", dict(n_params=571, depth=2), MLP),
    ("cnn", dict(channels=(4,)), CNN),
    ("cnn_budget", dict(n_params=3000, depth=2), CNN),
    ("rnn", dict(hidden_size=5), RowRNN),
])
def test_make_module(name, params, cls):
    module = make_module(name, **params)
    assert isinstance(module, cls)
    assert resolve_module(name) is MODEL_ZOO[name]


def test_make_module_matches_direct_construction():
    seed_everything(0)
    a = make_module("mlp", n_in=3, hidden=(4,), n_out=2)
    seed_everything(0)
    b = MLP(3, (4,), 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_resolve_module_passes_through_non_names():
    instance = MLP(2, (3,), 1)
    assert resolve_module(MLP) is MLP
    assert resolve_module(instance) is instance
    assert isinstance(make_module(MLP, n_in=2, hidden=(3,)), MLP)


@pytest.mark.parametrize("name", ["resnet", "MLP", ""])
def test_unknown_model_name(name):
    with pytest.raises(ValueError, match="Unknown model") as info:
        make_module(name)
    assert "'mlp'" in str(info.value)  # the message lists the choices
    with pytest.raises(ValueError, match="Unknown model"):
        resolve_module(name)


@pytest.mark.parametrize("build, match", [
    (lambda: MLP(n_in=0), "n_in"),
    (lambda: MLP(n_out=-1), "n_out"),
    (lambda: MLP(hidden=(3, 0)), "hidden width"),
    (lambda: MLP(hidden=(2.5,)), "hidden width"),
    (lambda: MLP(activation="swish"), "Unknown activation"),
    (lambda: MLP(activation=3), "activation"),
    (lambda: CNN(channels=()), "at least one"),
    (lambda: CNN(channels=(4, 0)), "channel count"),
    (lambda: CNN(kernel_size=0), "kernel_size"),
    (lambda: CNN(hidden=(0,)), "hidden width"),
    (lambda: CNN(in_channels=0), "in_channels"),
    (lambda: CNN(n_out=0), "n_out"),
    (lambda: cnn_for_budget(0, 2), "n_params"),
    (lambda: cnn_for_budget(1000, 0), "depth"),
    (lambda: cnn_for_budget(1000, 2, kernel_size=0), "kernel_size"),
    (lambda: RowRNN(cell="transformer"), "cell"),
    (lambda: RowRNN(hidden_size=0), "hidden_size"),
    (lambda: RowRNN(n_rows=0), "n_rows"),
])
def test_invalid_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_count_params_trainable_only():
    model = MLP(2, (3,), 1)
    model.net[1].weight.requires_grad_(False)
    assert count_params(model) == mlp_n_params(2, (3,), 1) - 6
    assert count_params(model, trainable_only=False) == mlp_n_params(2, (3,), 1)
