"""Tests of hw1sk.batched_modules: the stacked pass gives each copy its own values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hw1sk import batched_modules
from hw1sk.batched_modules import BatchedNetwork, batched_loss, batched_loss_and_grad
from hw1sk.models import MLP


def per_copy_gradients(copies, X, y, criterion):
    """Each copy's gradient of its own loss, flat, by ordinary autograd."""
    rows = []
    for module in copies:
        module.zero_grad()
        criterion(module(X), y).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in module.parameters()]))
    return torch.stack(rows)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("criterion", [nn.MSELoss(), nn.CrossEntropyLoss()],
                         ids=["mse", "cross_entropy"])
def test_closed_form_loss_gradient_is_autograds(criterion, shared):
    torch.manual_seed(0)
    base = torch.randn(3, 4, 20, dtype=torch.float64, requires_grad=True)
    out = base.transpose(1, 2)  # (seeds, batch, 4), samples last in memory as the pass has it
    shape = (20,) if shared else (3, 20)
    if isinstance(criterion, nn.MSELoss):
        y = torch.randn(*shape, 4, dtype=torch.float64)
    else:
        y = torch.randint(0, 4, shape)
    losses = batched_loss(criterion, out, y, shared)
    expected, = torch.autograd.grad(losses.sum(), out)
    got_losses, got_grad = batched_loss_and_grad(criterion, out, y, shared)
    assert got_grad.shape == out.shape
    torch.testing.assert_close(got_losses, losses.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(got_grad, expected, rtol=1e-12, atol=1e-15)


def test_closed_form_is_none_for_other_criteria():
    out = torch.randn(2, 5, 3)
    labels = torch.zeros(5, dtype=torch.long)
    assert batched_loss_and_grad(nn.CrossEntropyLoss(label_smoothing=0.1), out, labels,
                                 True) is None
    assert batched_loss_and_grad(nn.CrossEntropyLoss(weight=torch.ones(3)), out, labels,
                                 True) is None
    assert batched_loss_and_grad(nn.CrossEntropyLoss(ignore_index=0), out, labels,
                                 True) is None
    assert batched_loss_and_grad(nn.MSELoss(reduction="sum"), out, torch.zeros(5, 3),
                                 True) is None
    assert batched_loss_and_grad(nn.L1Loss(), out, torch.zeros(5, 3), True) is None


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_gradients_with_a_one_input_layer_are_each_copys(activation):
    """A 1-12-13-14-1 network: its one-input first layer is an elementwise outer product."""
    torch.manual_seed(0)
    copies = [MLP(1, (12, 13, 14), 1, activation=activation).double() for _ in range(3)]
    X = torch.randn(40, 1, dtype=torch.float64)
    y = torch.randn(40, 1, dtype=torch.float64)
    net = BatchedNetwork(copies[0])
    expected = per_copy_gradients(copies, X, y, nn.MSELoss())
    flat = net.stack_parameters(copies)
    for _ in range(2):  # the second step runs on the reused buffers
        leaves = net.leaves(flat)
        out = net.forward(leaves, X, shared=True)
        losses, grad_out = batched_loss_and_grad(nn.MSELoss(), out, y, True)
        grads = torch.autograd.grad(out, leaves, grad_out)
        got = torch.cat([g.reshape(3, -1) for g in grads], 1)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    idx = torch.stack([torch.randperm(40)[:30] for _ in copies])
    leaves = net.leaves(flat)
    out = net.forward(leaves, net.gather(X, idx), shared=False)
    loss = batched_loss(nn.MSELoss(), out, y[idx], False)
    grads = torch.autograd.grad(loss.sum(), leaves)
    got = torch.cat([g.reshape(3, -1) for g in grads], 1)
    for s, module in enumerate(copies):
        expected_s = per_copy_gradients([module], X[idx[s]], y[idx[s]], nn.MSELoss())[0]
        torch.testing.assert_close(got[s], expected_s, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("images", [False, True])
def test_gather_is_fancy_indexing_with_or_without_a_buffer(images):
    torch.manual_seed(0)
    if images:
        from hw1sk.models import CNN

        module, X = CNN(in_channels=1, image_size=8), torch.randn(30, 1, 8, 8)
    else:
        module, X = MLP(5, (4,), 2), torch.randn(30, 5)
    net = BatchedNetwork(module)
    idx = torch.stack([torch.randperm(30)[:7] for _ in range(3)])
    expected = X[idx.t()] if images else X[idx]
    assert torch.equal(net.gather(X, idx), expected)
    buf = X.new_empty((idx.numel(), *X.shape[1:]))
    got = net.gather(X, idx, out=buf)
    assert torch.equal(got, expected) and got.data_ptr() == buf.data_ptr()


@pytest.mark.parametrize("rows_first", [False, True])
@pytest.mark.parametrize("n_out", [1, 3])
def test_one_hidden_relu_layer_of_one_input_is_each_copys(n_out, rows_first, monkeypatch):
    """``Linear(1, H) - ReLU - Linear(H, O)``: on a shared batch by the sorted
    pass (``_SortedOneInputReLU``; its second step starts from the first's
    boundaries), on a batch per copy from the ReLU's mask (``_OneInputReLU``,
    in both layouts of its products, ``_samples_as_rows``: Intel's and
    AMD's): outputs and every gradient, the input's included, are each
    copy's own."""
    monkeypatch.setattr(batched_modules, "_samples_as_rows", lambda: rows_first)
    torch.manual_seed(0)
    copies = [MLP(1, (9,), n_out).double() for _ in range(3)]
    net = BatchedNetwork(copies[0])
    assert net.one_input_relu
    X = torch.randn(40, 1, dtype=torch.float64)
    y = torch.randn(40, n_out, dtype=torch.float64)
    flat = net.stack_parameters(copies)
    expected = per_copy_gradients(copies, X, y, nn.MSELoss())
    for _ in range(2):  # the second step runs on the reused mask buffer
        leaves = net.leaves(flat)
        out = net.forward(leaves, X, shared=True)
        for s, module in enumerate(copies):
            torch.testing.assert_close(out[s], module(X), rtol=1e-12, atol=1e-14)
        losses, grad_out = batched_loss_and_grad(nn.MSELoss(), out, y, True)
        grads = torch.autograd.grad(out, leaves, grad_out)
        got = torch.cat([g.reshape(3, -1) for g in grads], 1)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    idx = torch.stack([torch.randperm(40)[:30] for _ in copies])
    xb = net.gather(X, idx).requires_grad_()
    leaves = net.leaves(flat)
    loss = batched_loss(nn.MSELoss(), net.forward(leaves, xb, shared=False), y[idx], False)
    *grads, grad_x = torch.autograd.grad(loss.sum(), leaves + [xb])
    got = torch.cat([g.reshape(3, -1) for g in grads], 1)
    for s, module in enumerate(copies):
        xs = X[idx[s]].clone().requires_grad_()
        module.zero_grad()
        nn.MSELoss()(module(xs), y[idx[s]]).backward()
        own = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
        torch.testing.assert_close(got[s], own, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad_x[s], xs.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_boundaries_are_exactly_where_the_mask_turns(dtype):
    """``_relu_boundaries`` gives, for every unit, the range of sorted samples
    where ``fl(a x) > -b``: with repeated samples, thresholds exactly on a
    sample, zero and non-finite weights, from no start, a wrong start or the
    right one."""
    torch.manual_seed(1)
    S, H, B = 3, 40, 60
    x = torch.randn(S, B, dtype=dtype)
    x[:, 10:20] = x[:, :1]  # ten equal samples
    xs = x.sort(-1).values
    a = torch.randn(S, H, dtype=dtype)
    nb = torch.randn(S, H, dtype=dtype)
    nb[:, :10] = a[:, :10] * xs[:, 5:15]  # on a sample: fl(a x) = -b, off there
    nb[0, 10] = a[0, 10] * xs[0, 0]  # on the repeated value
    a[:, 11:14] = 0
    nb[:, 11], nb[:, 12], nb[:, 13] = 1.0, -1.0, 0.0
    a[1, 14], nb[2, 15], a[0, 16] = float("nan"), float("inf"), float("-inf")
    a[:, 17:20] = torch.tensor([1e-30, -1e-30, 1e30], dtype=dtype)  # -b / a overflows
    mask = a.unsqueeze(-1) * xs.unsqueeze(1) > nb.unsqueeze(-1)  # (S, H, B)
    finite = torch.isfinite(a) & torch.isfinite(nb)
    starts = [None, torch.randint(0, B + 1, (S, H)), torch.zeros(S, H, dtype=torch.long)]
    for start in starts:
        k = batched_modules._relu_boundaries(a, nb, xs, start)
        positions = torch.arange(B)
        suffix = positions >= k.unsqueeze(-1)
        implied = torch.where((a >= 0).unsqueeze(-1), suffix, ~suffix)
        assert torch.equal(implied[finite], mask[finite])
        assert torch.equal(k[~finite], torch.full_like(k[~finite], B))
        starts[2] = k  # the right start, last
    assert torch.equal(batched_modules._relu_boundaries(a, nb, xs, k), k)


def test_sorted_pass_makes_outputs_of_a_non_finite_parameter_nan():
    """A non-finite parameter makes NaN every output it enters, even through a unit
    that is off (``inf * 0``), so a diverged copy is never seen as finite; the
    other copies and outputs are exact."""
    torch.manual_seed(2)
    copies = [MLP(1, (7,), 2).double() for _ in range(4)]
    with torch.no_grad():
        list(copies[1].parameters())[0][3, 0] = float("nan")  # a first-layer weight
        list(copies[2].parameters())[2][1, 6] = float("inf")  # a weight of output 1
        list(copies[3].parameters())[1][0] = float("-inf")  # a first-layer bias
    net = BatchedNetwork(copies[0])
    x = torch.randn(25, 1, dtype=torch.float64)
    with torch.no_grad():
        out = net.forward(net.stack_parameters(copies), x, shared=True)
        torch.testing.assert_close(out[0], copies[0](x), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(out[2, :, 0], copies[2](x)[:, 0], rtol=1e-12, atol=1e-14)
    assert torch.isnan(out[1]).all() and torch.isnan(out[3]).all()
    assert torch.isnan(out[2, :, 1]).all()


def test_one_input_relu_pair_only_for_that_network():
    """Deeper, tanh, or several-input networks take the layer-by-layer pass."""
    assert BatchedNetwork(MLP(1, (9,), 2)).one_input_relu
    assert BatchedNetwork(MLP(1, (9, 4), 1)).one_input_relu is False
    assert BatchedNetwork(MLP(1, (9,), 1, activation="tanh")).one_input_relu is False
    assert BatchedNetwork(MLP(2, (9,), 1)).one_input_relu is False
    no_bias = nn.Sequential(nn.Linear(1, 9, bias=False), nn.ReLU(), nn.Linear(9, 1))
    assert BatchedNetwork(no_bias).one_input_relu is False
