"""npcbam's optimizers against torch.optim on random problems (skipped when torch is absent).

Hypothesis draws the optimizer, its hyperparameters, one to three parameter tensors (0-D to
3-D), 1 to 8 steps of gradients with a random scale each, and a learning rate that changes
halfway (as a schedule would). After every step each parameter must satisfy the bound of
``tests/test_optim.py``: ``|ours - torch| <= 4 * eps64 * max(1, |torch|)``. SGD is mirrored
bit for bit; Adam differs only where PyTorch's float64 ``sqrt`` (Intel MKL on CPU) is off by an
ulp, which moves an update by about eps64 times its size. With ``lr <= 0.1`` an Adam update is
at most about ``sqrt(8) * lr < 0.3`` in 8 steps (the bias-corrected ratio
``|m_hat| / sqrt(v_hat)`` is at most ``sqrt(t)``), far inside the bound's scale of 1.

PyTorch runs with ``foreach=False`` (the single-tensor path the optimizers mirror); each test
also checks that its default for CPU tensors (``foreach=None``) gives the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npcbam.optim import SGD, Adam

torch = pytest.importorskip("torch")

EPS64 = float(np.finfo(np.float64).eps)
ULPS = 4


def unit_interval(high: float) -> st.SearchStrategy[float]:
    return st.floats(0.0, high, allow_nan=False, allow_infinity=False)


def zero_or(strategy: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    """Exactly zero (PyTorch skips the term) or a drawn value."""
    return st.one_of(st.just(0.0), strategy)


@st.composite
def sgd_configs(draw) -> dict:
    momentum = draw(zero_or(unit_interval(0.99)))
    nesterov = momentum > 0 and draw(st.booleans())
    return {
        "lr": draw(unit_interval(0.5)),
        "momentum": momentum,
        "dampening": 0.0 if nesterov else draw(zero_or(unit_interval(1.0))),
        "weight_decay": draw(zero_or(unit_interval(0.1))),
        "nesterov": nesterov,
    }


@st.composite
def adam_configs(draw) -> dict:
    return {
        "lr": draw(unit_interval(0.1)),
        "betas": (draw(unit_interval(0.99)), draw(unit_interval(0.9999))),
        "eps": draw(st.floats(1e-10, 1e-2)),
        "weight_decay": draw(zero_or(unit_interval(0.1))),
        "amsgrad": draw(st.booleans()),
    }


@st.composite
def problems(draw) -> dict:
    """Parameter shapes, a step count, a data seed and the learning rate's factor halfway."""
    shape = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
    return {
        "shapes": draw(st.lists(shape, min_size=1, max_size=3)),
        "steps": draw(st.integers(1, 8)),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "lr_factor": draw(st.sampled_from([1.0, 0.5, 0.1, 0.0])),
    }


def compare(kind: str, config: dict, problem: dict) -> None:
    rng = np.random.default_rng(problem["seed"])
    start = {f"p{i}": rng.standard_normal(shape) for i, shape in enumerate(problem["shapes"])}
    params = {name: value.copy() for name, value in start.items()}
    grads = {name: np.zeros_like(value) for name, value in start.items()}
    ours = (SGD if kind == "SGD" else Adam)((params, grads), **config)

    torch_class = getattr(torch.optim, kind)
    tensors, optimizers = [], []
    for foreach in (False, None):
        tensors.append({name: torch.tensor(v, requires_grad=True) for name, v in start.items()})
        optimizers.append(torch_class(list(tensors[-1].values()), foreach=foreach, **config))
    reference, default = tensors

    halfway = problem["steps"] // 2
    for step in range(problem["steps"]):
        if step == halfway:
            ours.lr = config["lr"] * problem["lr_factor"]
            for optimizer in optimizers:
                optimizer.param_groups[0]["lr"] = ours.lr
        scale = 10.0 ** rng.uniform(-2.0, 1.0)
        for name, value in start.items():
            grads[name][...] = scale * rng.standard_normal(value.shape)
            for table in tensors:
                table[name].grad = torch.tensor(grads[name])
        ours.step()
        for optimizer in optimizers:
            optimizer.step()
        for name, value in params.items():
            expected = reference[name].detach().numpy()
            assert np.array_equal(default[name].detach().numpy(), expected)
            error = np.abs(value - expected)
            bound = ULPS * EPS64 * np.maximum(1.0, np.abs(expected))
            assert np.all(error <= bound), (
                f"{kind}{config}, step {step + 1}, {name}: off by "
                f"{(error / bound).max():.3g} times the bound; problem {problem}"
            )


@given(config=sgd_configs(), problem=problems())
def test_sgd_matches_torch(config, problem):
    compare("SGD", config, problem)


@given(config=adam_configs(), problem=problems())
def test_adam_matches_torch(config, problem):
    compare("Adam", config, problem)
