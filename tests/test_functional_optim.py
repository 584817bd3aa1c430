"""Tests for hw1sk.functional_optim: stacked functional optimizers vs torch.optim."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from hw1sk.functional_optim import (
    FunctionalAdam,
    FunctionalAdamW,
    FunctionalRMSprop,
    FunctionalSGD,
    functional_optimizer,
)

N_SEEDS = 3
N_STEPS = 50
RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

CONFIGS = [
    (torch.optim.Adam, {}),
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.Adam, {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6}),
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (torch.optim.AdamW, {}),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.1}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01}),
    (torch.optim.RMSprop, {"lr": 0.01}),
    (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    (torch.optim.RMSprop, {"lr": 0.01, "centered": True}),
    (torch.optim.RMSprop, {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "momentum": 0.9,
                           "centered": True, "weight_decay": 0.01}),
]


def _config_id(config):
    cls, kwargs = config
    return cls.__name__ + "".join(f"-{k}={v}" for k, v in kwargs.items())


class _Problem:
    """Three differently initialised MLPs, stacked, on fixed data."""

    def __init__(self, dtype, device="cpu"):
        self.models = []
        for seed in range(N_SEEDS):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(
                torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
            self.models.append(model.to(device=device, dtype=dtype))
        gen = torch.Generator().manual_seed(123)
        self.x = torch.randn(16, 3, generator=gen, dtype=dtype).to(device)
        self.y = torch.randn(16, 2, generator=gen, dtype=dtype).to(device)
        base = copy.deepcopy(self.models[0]).to("meta")

        def loss(params, x, y):
            return ((functional_call(base, params, (x,)) - y) ** 2).mean()

        self._grad = vmap(grad(loss), in_dims=(0, None, None))

    def stacked(self):
        params, _ = stack_module_state(self.models)
        return params

    def grads(self, params):
        return self._grad(params, self.x, self.y)

    def reference_step(self, optimizers, grads, active):
        """Step each seed's torch optimizer on the same gradients (if active)."""
        for i, (model, opt) in enumerate(zip(self.models, optimizers)):
            if not active[i]:
                continue
            for name, p in model.named_parameters():
                p.grad = grads[name][i].clone()
            opt.step()


def _rel_dev(actual, expected):
    """max |actual - expected| / max |expected| (0 when both are 0)."""
    scale = expected.abs().max().item()
    diff = (actual.to(expected.dtype) - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def _max_deviation(problem, optimizers, params, state):
    """Largest relative deviation of params and state buffers from torch's."""
    worst = 0.0
    for i, (model, opt) in enumerate(zip(problem.models, optimizers)):
        for name, p in model.named_parameters():
            worst = max(worst, _rel_dev(params[name][i], p.detach()))
            for key, value in opt.state[p].items():
                if key == "step":
                    assert state["step"][i].item() == value.item()
                else:
                    worst = max(worst, _rel_dev(state[key][name][i], value))
    return worst


def _run(cls, kwargs, dtype, device="cpu", masks=None, n_steps=N_STEPS):
    """Run functional and torch side by side; return the max deviation seen."""
    problem = _Problem(dtype, device)
    optimizers = [cls(m.parameters(), foreach=False, **kwargs) for m in problem.models]
    fopt = functional_optimizer(cls, **kwargs)
    params = problem.stacked()
    state = fopt.init(params)
    worst = 0.0
    for t in range(n_steps):
        mask = None if masks is None else masks[t].to(device)
        grads = problem.grads(params)
        params, state = fopt.step(params, grads, state, mask=mask)
        active = [True] * N_SEEDS if mask is None else mask.tolist()
        problem.reference_step(optimizers, grads, active)
        worst = max(worst, _max_deviation(problem, optimizers, params, state))
    return worst


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_matches_torch_optim(config, dtype, device):
    cls, kwargs = config
    worst = _run(cls, kwargs, dtype, device)
    print(f"{_config_id(config)} {dtype} {device}: max relative deviation {worst:.3g}")
    assert worst <= RTOL[dtype]


def _masks():
    """Seed 1 frozen at the start and in the middle, seed 2 for a while."""
    masks = torch.ones(N_STEPS, N_SEEDS, dtype=torch.bool)
    masks[:5, 1] = False
    masks[20:30, 1] = False
    masks[35:, 2] = False
    return masks


MASK_CONFIGS = [
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (torch.optim.AdamW, {"lr": 0.01}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True}),
]


@pytest.mark.parametrize("config", MASK_CONFIGS, ids=_config_id)
def test_mask_matches_torch_skipping_steps(config):
    # A masked seed's torch optimizer simply does not step; the step counter
    # (bias correction, SGD's first-step buffer) must not advance either.
    cls, kwargs = config
    worst = _run(cls, kwargs, torch.float64, masks=_masks())
    assert worst <= RTOL[torch.float64]


def _tree_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tree_equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def _tree_clone(a):
    if isinstance(a, dict):
        return {k: _tree_clone(v) for k, v in a.items()}
    return a.clone()


@pytest.mark.parametrize("config", MASK_CONFIGS, ids=_config_id)
def test_masked_seed_frozen_others_unaffected(config):
    cls, kwargs = config
    problem = _Problem(torch.float64)
    fopt = functional_optimizer(cls, **kwargs)
    params = problem.stacked()
    state = fopt.init(params)
    free_params, free_state = params, state
    mask = torch.tensor([True, False, True])
    for t in range(10):
        grads = problem.grads(params)
        grads = {k: g.clone() for k, g in grads.items()}
        for g in grads.values():
            g[1] = float("nan")  # a diverged seed: its gradient must not leak
        before_p, before_s = _tree_clone(params), _tree_clone(state)
        params, state = fopt.step(params, grads, state, mask=mask)
        for name in params:
            assert torch.equal(params[name][1], before_p[name][1])
        assert state["step"][1] == 0
        for key in fopt.buffers():
            for name in params:
                assert torch.equal(state[key][name][1], before_s[key][name][1])
        free_params, free_state = fopt.step(free_params, problem.grads(free_params),
                                            free_state)
        for name in params:
            assert torch.equal(params[name][[0, 2]], free_params[name][[0, 2]])
        for key in fopt.buffers():
            for name in params:
                assert torch.equal(state[key][name][[0, 2]], free_state[key][name][[0, 2]])
    assert state["step"].tolist() == [10.0, 0.0, 10.0]


@pytest.mark.parametrize("config", MASK_CONFIGS, ids=_config_id)
def test_step_is_pure(config):
    cls, kwargs = config
    problem = _Problem(torch.float32)
    fopt = functional_optimizer(cls, **kwargs)
    params = problem.stacked()  # requires_grad=True, as stack_module_state gives
    state = fopt.init(params)
    for _ in range(2):  # non-zero state buffers
        params, state = fopt.step(params, problem.grads(params), state)
    grads = problem.grads(params)
    mask = torch.tensor([True, False, True])
    copies = [_tree_clone(x) for x in (params, grads, state)]
    for m in (None, mask):
        new_params, new_state = fopt.step(params, grads, state, mask=m)
        for original, copied in zip((params, grads, state), copies):
            assert _tree_equal(original, copied)
        assert not any(torch.equal(new_params[k], params[k]) for k in params)
        assert all(not p.requires_grad for p in new_params.values())
        assert set(new_state) == set(state)


def test_large_and_unequal_step_counts_adam():
    # Each seed at its own step count, past the bias-correction table's end.
    problem = _Problem(torch.float64)
    kwargs = {"lr": 0.01, "betas": (0.9, 0.999)}
    optimizers = [torch.optim.Adam(m.parameters(), foreach=False, **kwargs)
                  for m in problem.models]
    fopt = functional_optimizer(torch.optim.Adam, **kwargs)
    params = problem.stacked()
    state = fopt.init(params)
    active = [True] * N_SEEDS
    for t in range(5):
        if t == 2:
            counts = [999.0, 39_999.0, 1e6]
            state["step"] = torch.tensor(counts, dtype=state["step"].dtype)
            for opt, count in zip(optimizers, counts):
                for s in opt.state.values():
                    s["step"].fill_(count)
        grads = problem.grads(params)
        params, state = fopt.step(params, grads, state)
        problem.reference_step(optimizers, grads, active)
        assert _max_deviation(problem, optimizers, params, state) == 0.0


def test_beta_close_to_one_falls_back_to_pow():
    worst = _run(torch.optim.Adam, {"lr": 0.01, "betas": (0.9, 1 - 1e-7)},
                 torch.float64, n_steps=20)
    assert worst <= 1e-12


def test_unsupported_optimizer_class():
    with pytest.raises(TypeError, match="LBFGS.*supported: torch.optim.Adam"):
        functional_optimizer(torch.optim.LBFGS, lr=0.1)
    with pytest.raises(TypeError, match="No functional version"):
        functional_optimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)]))


@pytest.mark.parametrize("cls, option", [
    (torch.optim.Adam, "amsgrad"),
    (torch.optim.AdamW, "amsgrad"),
    (torch.optim.SGD, "maximize"),
    (torch.optim.RMSprop, "differentiable"),
])
def test_unsupported_option_value(cls, option):
    with pytest.raises(ValueError, match=f"{option}=True is not supported"):
        functional_optimizer(cls, **{option: True})
    functional_optimizer(cls, **{option: False})  # the default is fine


def test_unknown_option_and_ignored_options():
    with pytest.raises(TypeError, match="Adam.*momentum"):
        functional_optimizer(torch.optim.Adam, momentum=0.9)
    with pytest.raises(TypeError, match="SGD.*betas"):
        functional_optimizer(torch.optim.SGD, betas=(0.9, 0.99))
    opt = functional_optimizer(torch.optim.Adam, lr=0.1, foreach=False, fused=None,
                               capturable=False)
    assert isinstance(opt, FunctionalAdam) and opt.lr == 0.1


def test_invalid_hyperparameters_like_torch():
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        functional_optimizer(torch.optim.SGD, nesterov=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        functional_optimizer(torch.optim.RMSprop, lr=-1.0)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        functional_optimizer(torch.optim.Adam, betas=(0.9, 1.0))


def test_functional_instance_passes_through():
    opt = FunctionalSGD(lr=0.1)
    assert functional_optimizer(opt) is opt
    with pytest.raises(TypeError, match="cannot be applied"):
        functional_optimizer(opt, lr=0.2)


@pytest.mark.parametrize("torch_cls, functional_cls", [
    (torch.optim.Adam, FunctionalAdam),
    (torch.optim.AdamW, FunctionalAdamW),
    (torch.optim.SGD, FunctionalSGD),
    (torch.optim.RMSprop, FunctionalRMSprop),
])
def test_defaults_match_torch(torch_cls, functional_cls):
    ours = inspect.signature(functional_cls).parameters
    theirs = inspect.signature(torch_cls).parameters
    for name, param in ours.items():
        assert param.default == theirs[name].default, name
    assert repr(functional_cls()).startswith(functional_cls.__name__ + "(lr=")


def test_step_input_checks():
    opt = FunctionalAdam()
    params = {"w": torch.zeros(3, 2), "b": torch.zeros(3)}
    state = opt.init(params)
    grads = {"w": torch.ones(3, 2), "b": torch.ones(3)}
    with pytest.raises(ValueError, match="same leading"):
        opt.init({"w": torch.zeros(3, 2), "b": torch.zeros(2)})
    with pytest.raises(ValueError, match="keys of params; missing \\['b'\\]"):
        opt.step(params, {"w": grads["w"]}, state)
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape \\(3,\\)"):
        opt.step(params, grads, state, mask=torch.ones(3))
    with pytest.raises(ValueError, match="state lacks \\['exp_avg', 'exp_avg_sq'\\]"):
        opt.step(params, grads, {"step": state["step"]})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_step_in_place_gives_the_values_of_step(config, dtype):
    cls, kwargs = config
    problem = _Problem(dtype)
    if cls in (torch.optim.Adam, torch.optim.AdamW):  # the fused kernel is tested below
        kwargs = {**kwargs, "fused": False}
    fopt = functional_optimizer(cls, **kwargs)
    pure = problem.stacked()
    pure_state = fopt.init(pure)
    inplace = {k: v.clone() for k, v in pure.items()}
    inplace_state = fopt.init(inplace)
    masks = torch.ones(12, N_SEEDS, dtype=torch.bool)
    masks[4:7, 1] = False  # a frozen seed: the values of step() are copied in
    for t in range(12):
        grads = problem.grads(pure)
        pure, pure_state = fopt.step(pure, grads, pure_state, mask=masks[t])
        tensors = dict(inplace)
        inplace, inplace_state = fopt.step_(inplace, grads, inplace_state, mask=masks[t])
        assert all(inplace[k] is tensors[k] for k in tensors)  # updated, not replaced
        for name in pure:
            torch.testing.assert_close(inplace[name], pure[name], rtol=0, atol=0)
            for key in fopt.buffers():
                torch.testing.assert_close(inplace_state[key][name], pure_state[key][name],
                                           rtol=0, atol=0)
        torch.testing.assert_close(inplace_state["step"], pure_state["step"], rtol=0, atol=0)


ADAM_CONFIGS = [c for c in CONFIGS if c[0] in (torch.optim.Adam, torch.optim.AdamW)]
# Per step, from the same state, the fused kernel against torch's single-tensor Adam
# (measured worst: 1.2e-7 in float32, 2.2e-16 in float64, relative to each tensor's max).
FUSED_PER_STEP_RTOL = {torch.float64: 1e-14, torch.float32: 1e-6}


def _counting_kernels(monkeypatch):
    """Wrap torch's fused Adam kernels; the dict counts their calls."""
    calls = {}
    for name in ("_fused_adam_", "_fused_adamw_"):
        original = getattr(torch, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    return calls


def _copy_torch_state(problem, optimizers, params, state):
    """Set the stacked params and buffers to each seed's torch values."""
    with torch.no_grad():
        for i, (model, opt) in enumerate(zip(problem.models, optimizers)):
            for name, p in model.named_parameters():
                params[name][i].copy_(p)
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key][name][i].copy_(opt.state[p][key])


def _run_in_place(cls, kwargs, dtype, reference, per_step, masks=None):
    """``step_`` against torch (``reference``: its keyword arguments); the max deviation.

    ``per_step``: each step starts from torch's values (one step's deviation).
    """
    problem = _Problem(dtype)
    optimizers = [cls(m.parameters(), **reference, **kwargs) for m in problem.models]
    fopt = functional_optimizer(cls, **kwargs)
    params = {k: v.detach().clone() for k, v in problem.stacked().items()}
    state = fopt.init(params)
    worst = 0.0
    for t in range(N_STEPS):
        mask = None if masks is None else masks[t]
        grads = problem.grads(params)
        fopt.step_(params, grads, state, mask=mask)
        problem.reference_step(optimizers, grads, [True] * N_SEEDS if mask is None
                               else mask.tolist())
        worst = max(worst, _max_deviation(problem, optimizers, params, state))
        if per_step:
            _copy_torch_state(problem, optimizers, params, state)
    return worst


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=_config_id)
def test_fused_step_is_torch_fused_and_close_to_default(config, dtype, monkeypatch):
    cls, kwargs = config
    calls = _counting_kernels(monkeypatch)
    # the kernel runs on the stacked tensors, torch's on each seed's: the same
    # arithmetic, but an element can fall in a vector lane in one and in the scalar
    # tail in the other, so the values agree to a few ulps, not bit-for-bit
    for reference in ({"fused": True}, {"foreach": False}):
        one_step = _run_in_place(cls, kwargs, dtype, reference, per_step=True)
        print(f"{_config_id(config)} {dtype} against {reference}: one step {one_step:.3g}")
        assert one_step <= FUSED_PER_STEP_RTOL[dtype]
    kernel = "_fused_adamw_" if (cls is torch.optim.AdamW
                                 or kwargs.get("decoupled_weight_decay")) else "_fused_adam_"
    assert calls[kernel] >= 2 * N_STEPS  # ours and torch's fused=True
    # 50 steps against torch's default: within the single-tensor path's tolerance, also
    # with masked seeds (the kernel on the rows of the others while their step counts
    # agree, the single-tensor path once they do not)
    calls.clear()
    for masks in (None, _masks()):
        assert _run_in_place(cls, kwargs, dtype, {"foreach": False}, per_step=False,
                             masks=masks) <= RTOL[dtype]
    # the masked run: steps 0-4 and 20-29 (seed 1 masked), not where its count lags
    assert calls[kernel] == N_STEPS + 15


def test_fused_step_leaves_gradients_unchanged():
    problem = _Problem(torch.float32)
    fopt = functional_optimizer(torch.optim.Adam, lr=0.01, weight_decay=0.1)
    params = {k: v.detach().clone() for k, v in problem.stacked().items()}
    state = fopt.init(params)
    grads = problem.grads(params)
    copies = _tree_clone(grads)
    fopt.step_(params, grads, state)
    assert _tree_equal(grads, copies)
    assert state["step"].tolist() == [1.0] * N_SEEDS


def _in_place_trajectory(fopt, masks=None, counts=None):
    """Params and state after 12 in-place steps (``counts``: the initial step counts)."""
    problem = _Problem(torch.float64)
    params = {k: v.detach().clone() for k, v in problem.stacked().items()}
    state = fopt.init(params)
    for t in range(12):
        if t == 0 and counts is not None:
            state["step"] = torch.tensor(counts, dtype=state["step"].dtype)
        fopt.step_(params, problem.grads(params), state,
                   mask=None if masks is None else masks[t])
    return params, state


@pytest.mark.parametrize("case", ["no-kernel", "kernel-refuses", "unequal-steps",
                                  "fused=False"])
def test_fused_falls_back_to_the_single_tensor_path(case, monkeypatch):
    # where the kernel is missing, refuses the device or does not apply, step_ gives
    # the single-tensor values bit-for-bit (and the kernel is not called)
    counts, kwargs = None, {"lr": 0.01, "weight_decay": 0.1}
    expected = _in_place_trajectory(functional_optimizer(torch.optim.Adam, fused=False,
                                                         **kwargs))
    if case == "unequal-steps":
        counts = [3.0, 7.0, 3.0]
        expected = _in_place_trajectory(functional_optimizer(
            torch.optim.Adam, fused=False, **kwargs), counts=counts)
    calls = _counting_kernels(monkeypatch)
    if case == "no-kernel":  # a torch without it
        monkeypatch.delattr(torch, "_fused_adam_")
    if case == "kernel-refuses":  # a torch whose kernel has no CPU implementation
        def refuse(*args, **kw):
            raise NotImplementedError("Could not run 'aten::_fused_adam_' on 'CPU'")
        monkeypatch.setattr(torch, "_fused_adam_", refuse)
    fopt = functional_optimizer(torch.optim.Adam, fused=(False if case == "fused=False"
                                                         else None), **kwargs)
    (params, state), (params_ref, state_ref) = _in_place_trajectory(fopt, counts=counts), expected
    assert _tree_equal(params, params_ref) and _tree_equal(state, state_ref)
    assert calls == {}


def test_fused_masked_step_runs_on_the_other_seeds_rows(monkeypatch):
    # a masked seed keeps its parameters and state bit-for-bit (its NaN gradient
    # never read); the others get what the single-tensor path gives, to an ulp
    kwargs = {"lr": 0.01, "weight_decay": 0.1}
    problem = _Problem(torch.float64)
    masks = torch.ones(12, N_SEEDS, dtype=torch.bool)
    masks[:, 1] = False
    calls = _counting_kernels(monkeypatch)
    runs = {}
    for fused in (None, False):
        fopt = functional_optimizer(torch.optim.Adam, fused=fused, **kwargs)
        params = {k: v.detach().clone() for k, v in problem.stacked().items()}
        start = _tree_clone(params)
        state = fopt.init(params)
        for t in range(12):
            grads = _tree_clone(problem.grads(params))
            for g in grads.values():
                g[1] = float("nan")
            fopt.step_(params, grads, state, mask=masks[t])
        runs[fused] = params, state
        for name in params:
            assert torch.equal(params[name][1], start[name][1])
            for key in fopt.buffers():
                assert not state[key][name][1].any()
        assert state["step"].tolist() == [12.0, 0.0, 12.0]
    assert calls == {"_fused_adam_": 12}
    (params, state), (params_ref, state_ref) = runs[None], runs[False]
    for name in params:
        assert _rel_dev(params[name], params_ref[name]) <= RTOL[torch.float64]
        for key in ("exp_avg", "exp_avg_sq"):
            assert _rel_dev(state[key][name], state_ref[key][name]) <= RTOL[torch.float64]


def test_fused_option():
    assert functional_optimizer(torch.optim.Adam, fused=False).fused is False
    assert functional_optimizer(torch.optim.AdamW, fused=True).fused is True
    assert functional_optimizer(torch.optim.Adam).fused is None
    assert "fused=None" in repr(FunctionalAdamW())
    sgd = functional_optimizer(torch.optim.SGD, lr=0.1, fused=True)  # ignored there
    assert isinstance(sgd, FunctionalSGD)
