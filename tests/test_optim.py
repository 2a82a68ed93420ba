"""The optimizers (``npcbam.optim``): PyTorch parity from stored fixtures, hand-checked steps,
use with a real module, and bad input. PyTorch is not needed.

Parity bound. Each fixture (``tests/parity/make_optim_fixtures.py``) holds PyTorch's
parameters after every one of 8 steps. The optimizers mirror PyTorch's operation order,
including its fused multiply-adds, so on the fixtures the result is identical bit for bit
(:func:`test_reproduces_torch_fixture_bit_for_bit`). The tolerance of
:func:`test_matches_torch_fixture` is what stays valid across platforms:
``|ours - torch| <= 4 * eps64 * max(1, |torch|)`` for every entry after every step, four units
in the last place of a number of that size (an absolute 4 * eps64 ~ 8.9e-16 below 1). Two
correct implementations can differ only where a kernel is not correctly rounded, and SGD uses
none: Adam has the platform's ``pow`` in the bias corrections ``beta ** t`` (an ulp at most)
and PyTorch's float64 ``sqrt`` on CPU (in its x86 builds Intel MKL's vector sqrt, an ulp off on
about 1.5 % of the entries). Either changes an Adam *update* by about an ulp of its own size
(the fixtures' Adam updates are below 0.06, while ``max(1, |theta|) >= 1``) and may flip the
last bit of ``theta``; 4 ulps leaves room for a few such flips in 8 steps and nothing else:
any change to the rule (a wrong beta, eps added in the other place, a dropped dampening)
misses it by orders of magnitude, see the mutation tests.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from parity.stored import load_fixture

import npcbam
import npcbam.optim._base as base_module
import npcbam.optim.adam as adam_module
import npcbam.optim.sgd as sgd_module
from npcbam.nn.module import Module
from npcbam.optim import SGD, Adam, fma

FIXTURE_DIR = Path(__file__).resolve().parent / "parity" / "fixtures" / "optim"
FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
EXPECTED_FIXTURES = {
    "sgd_plain",
    "sgd_momentum",
    "sgd_momentum_dampening",
    "sgd_nesterov",
    "sgd_weight_decay",
    "sgd_nesterov_weight_decay",
    "adam_default",
    "adam_weight_decay",
    "adam_amsgrad",
    "adam_unusual_betas",
    "adam_beta1_zero_amsgrad_weight_decay",
}
EPS64 = float(np.finfo(np.float64).eps)
ULPS = 4  # the parity bound, in units of eps64 * max(1, |torch|); see the module docstring


# -- fixtures ---------------------------------------------------------------------------------
def fixture_by_name(name: str) -> dict[str, np.ndarray]:
    return load_fixture(FIXTURE_DIR / f"{name}.npz")


def hyperparameters(fixture: dict[str, np.ndarray]) -> dict:
    """The fixture's configuration as keyword arguments of our optimizer."""
    if str(fixture["optimizer"]) == "SGD":
        return {
            "lr": float(fixture["lr"]),
            "momentum": float(fixture["momentum"]),
            "dampening": float(fixture["dampening"]),
            "weight_decay": float(fixture["weight_decay"]),
            "nesterov": bool(fixture["nesterov"]),
        }
    return {
        "lr": float(fixture["lr"]),
        "betas": (float(fixture["beta1"]), float(fixture["beta2"])),
        "eps": float(fixture["eps"]),
        "weight_decay": float(fixture["weight_decay"]),
        "amsgrad": bool(fixture["amsgrad"]),
    }


def replay(fixture: dict[str, np.ndarray], **overrides) -> dict[str, np.ndarray]:
    """Run our optimizer on the fixture's parameters and gradients (with hyperparameters
    ``overrides`` changed); return the parameters after each step, (steps, *shape) per name."""
    names = [key[len("param/") :] for key in fixture if key.startswith("param/")]
    params = {name: fixture[f"param/{name}"].copy() for name in names}
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    optimizer_class = SGD if str(fixture["optimizer"]) == "SGD" else Adam
    optimizer = optimizer_class((params, grads), **{**hyperparameters(fixture), **overrides})
    trajectory = {name: [] for name in names}
    for step in range(int(fixture["steps"])):
        for name in names:
            grads[name][...] = fixture[f"grad/{name}"][step]
        optimizer.step()
        for name in names:
            trajectory[name].append(params[name].copy())
    return {name: np.stack(values) for name, values in trajectory.items()}


def bound_ratio(ours: np.ndarray, torch_values: np.ndarray) -> float:
    """max over entries of ``|ours - torch| / (ULPS * eps64 * max(1, |torch|))``: at most 1
    within the parity bound."""
    scale = ULPS * EPS64 * np.maximum(1.0, np.abs(torch_values))
    return float((np.abs(ours - torch_values) / scale).max())


def worst_ratio(fixture, trajectory) -> tuple[float, str]:
    ratios = {
        name: bound_ratio(ours, fixture[f"expected/{name}"]) for name, ours in trajectory.items()
    }
    worst = max(ratios, key=ratios.get)
    return ratios[worst], worst


def test_fixture_folder_holds_every_configuration():
    assert {path.stem for path in FIXTURES} == EXPECTED_FIXTURES, (
        f"fixtures in {FIXTURE_DIR}: {sorted(path.stem for path in FIXTURES)}; run "
        "`python tests/parity/make_optim_fixtures.py` (needs torch) to regenerate them"
    )


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture_is_well_formed(path):
    fixture = load_fixture(path)
    steps = int(fixture["steps"])
    assert steps >= 6
    names = [key[len("param/") :] for key in fixture if key.startswith("param/")]
    assert len({fixture[f"param/{name}"].shape for name in names}) == len(names) >= 3
    for name in names:
        shape = fixture[f"param/{name}"].shape
        assert fixture[f"grad/{name}"].shape == fixture[f"expected/{name}"].shape == (steps, *shape)
        assert fixture[f"expected/{name}"].dtype == np.float64
    assert str(fixture["optimizer"]) in {"SGD", "Adam"}
    assert "foreach=False" in str(fixture["torch_path"])


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_matches_torch_fixture(path):
    fixture = load_fixture(path)
    ratio, name = worst_ratio(fixture, replay(fixture))
    assert ratio <= 1.0, (
        f"{path.stem} (torch {fixture['torch_version']}): {name} is off by {ratio:.3g} times "
        f"the bound {ULPS} * eps64 * max(1, |torch|)"
    )


def platform_pow_agrees(fixture) -> bool:
    """Whether this platform's ``pow`` gives the bias corrections PyTorch computed (Adam)."""
    if str(fixture["optimizer"]) != "Adam":
        return True
    beta1, beta2 = float(fixture["beta1"]), float(fixture["beta2"])
    ours = [
        (1.0 - beta1 ** float(t), (1.0 - beta2 ** float(t)) ** 0.5)
        for t in range(1, int(fixture["steps"]) + 1)
    ]
    return np.array_equal(np.array(ours), fixture["bias_corrections"])


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_reproduces_torch_fixture_bit_for_bit(path):
    """Same operations in the same order with the same roundings: the same bits. (Wherever
    PyTorch's sqrt was an ulp off in the fixtures, the rounding of the parameter absorbed it.)"""
    fixture = load_fixture(path)
    if not platform_pow_agrees(fixture):
        pytest.skip("this platform's pow rounds beta**t differently from the fixture's")
    for name, ours in replay(fixture).items():
        np.testing.assert_array_equal(ours, fixture[f"expected/{name}"], err_msg=name)


# -- the fixture tests can fail --------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("adam_default", {"betas": (0.9 + 1e-6, 0.999)}),
        ("adam_default", {"betas": (0.9, 0.998)}),
        ("adam_default", {"lr": 1e-3 * (1 + 1e-9)}),
        ("adam_weight_decay", {"weight_decay": 0.0}),
        ("adam_amsgrad", {"amsgrad": False}),  # the gradients make the running max matter
        ("adam_unusual_betas", {"eps": 1e-4}),
        ("sgd_plain", {"lr": 0.1 * (1 + 1e-12)}),
        ("sgd_momentum", {"momentum": 0.89}),
        ("sgd_momentum_dampening", {"dampening": 0.0}),
        ("sgd_nesterov", {"nesterov": False}),
        ("sgd_weight_decay", {"weight_decay": 0.0}),
    ],
)
def test_wrong_hyperparameter_misses_the_fixture(name, overrides):
    fixture = fixture_by_name(name)
    ratio, _ = worst_ratio(fixture, replay(fixture, **overrides))
    assert ratio > 10.0


def test_eps_outside_the_bias_correction_misses_the_fixture(monkeypatch):
    """Kingma & Ba's "efficient" form adds eps to sqrt(v) before the bias correction,
    theta -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps): not PyTorch's rule."""

    def efficient_update(self, state, param, grad):
        if not state:
            state["m"], state["v"] = np.zeros_like(param), np.zeros_like(param)
        state["m"][...] = self.beta1 * state["m"] + (1 - self.beta1) * grad
        state["v"][...] = self.beta2 * state["v"] + (1 - self.beta2) * grad**2
        t = self.steps
        step_size = self.lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        param -= step_size * state["m"] / (np.sqrt(state["v"]) + self.eps)

    fixture = fixture_by_name("adam_unusual_betas")
    monkeypatch.setattr(Adam, "_update", efficient_update)
    assert worst_ratio(fixture, replay(fixture))[0] > 10.0


@pytest.mark.parametrize("name", ["sgd_momentum_dampening", "adam_unusual_betas"])
def test_two_roundings_instead_of_fma_lose_the_bits(monkeypatch, name):
    """``a * b + c`` rounded twice is within the bound but not PyTorch's bits: the
    bit-for-bit test is what sees the fused multiply-adds."""
    fixture = fixture_by_name(name)

    def two_roundings(a, b, c):
        return np.asarray(np.asarray(a) * b + c)

    monkeypatch.setattr(sgd_module, "fma", two_roundings)
    monkeypatch.setattr(adam_module, "fma", two_roundings)
    trajectory = replay(fixture)
    assert worst_ratio(fixture, trajectory)[0] <= 1.0
    assert any(
        not np.array_equal(ours, fixture[f"expected/{key}"]) for key, ours in trajectory.items()
    )


# -- fma ---------------------------------------------------------------------------------------
def exact_fma(a: float, b: float, c: float) -> float:
    """a * b + c computed exactly in rationals, rounded once (Python's int division rounds
    correctly)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


finite = st.floats(
    min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False, allow_subnormal=False
).filter(lambda v: v == 0 or abs(v) > 1e-100)


@given(a=finite, b=finite, c=finite)
def test_fma_is_correctly_rounded(a, b, c):
    assert fma(a, b, c) == exact_fma(a, b, c)


def test_fma_on_hard_cases():
    """Products whose low half decides the rounding of a sum: halfway cases, cancellation."""
    rng = np.random.default_rng(0)
    ulp = 2.0**-52
    cases = [
        (1 + 2**-27, 1 + 2**-27, -1.0),  # the product's tail is all that is left
        (1 + ulp, 1 - ulp, -1.0),  # -ulp^2: rounding twice gives 0
        (1 + 2**-26, 1 + 2**-27, 2**-53),  # near a halfway point of 1 + ...
        (3.0, 1 / 3, -1.0),
        (0.1, 10.0, -1.0),
        (1 + 2**-30, 1 + 2**-23, 2.0**-53 - 2.0**-106),
        (0.0, 5.0, -0.0),
        (-0.0, 5.0, 0.0),
    ]
    a = rng.standard_normal(5000) * 2.0 ** rng.integers(-30, 30, 5000)
    b = rng.standard_normal(5000)
    cases += [(x, y, -x * y) for x, y in zip(a, b)]  # c cancels the rounded product
    cases += [(x, y, np.nextafter(-x * y, 0.0)) for x, y in zip(a[:500], b[:500])]
    for x, y, z in cases:
        assert fma(x, y, z) == exact_fma(x, y, z), (x, y, z)


def test_fma_broadcasts_and_returns_arrays():
    rng = np.random.default_rng(1)
    b, c = rng.standard_normal((3, 4)), rng.standard_normal(4)
    out = fma(0.1, b, c)
    assert out.shape == (3, 4) and out.dtype == np.float64
    expected = [[exact_fma(0.1, b[i, j], c[j]) for j in range(4)] for i in range(3)]
    np.testing.assert_array_equal(out, expected)
    zero_d = fma(2.0, np.array(3.0), np.array(1.0))
    assert isinstance(zero_d, np.ndarray) and zero_d.shape == () and zero_d == 7.0


def test_fma_falls_back_on_overflow_without_warnings():
    """Veltkamp's split overflows for |a| > ~1e299: the two-rounding result is returned."""
    assert fma(1e305, 1.0, 1.0) == 1e305
    assert fma(1e300, 1e10, 0.0) == np.inf


# -- hand-checked steps (formulas written out independently) ----------------------------------
def pair(*shapes, seed=0):
    """A (params, grads) pair of dicts with seeded values, and a copy of the parameters."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(shape) for i, shape in enumerate(shapes)}
    grads = {name: rng.standard_normal(value.shape) for name, value in params.items()}
    return params, grads, {name: value.copy() for name, value in params.items()}


CLOSE = {"rtol": 1e-13, "atol": 1e-15}  # a few roundings apart


def test_sgd_plain_step():
    params, grads, start = pair((3, 4), (5,))
    SGD((params, grads), lr=0.1).step()
    for name in params:
        np.testing.assert_allclose(params[name], start[name] - 0.1 * grads[name], **CLOSE)


def test_sgd_first_momentum_step_is_plain_sgd():
    """The buffer starts as the gradient (no dampening), so step 1 ignores momentum."""
    plain_params, grads, _ = pair((3, 4), (5,))
    momentum_params = {name: value.copy() for name, value in plain_params.items()}
    SGD((plain_params, grads), lr=0.1).step()
    SGD((momentum_params, grads), lr=0.1, momentum=0.9, dampening=0.5).step()
    for name in plain_params:
        np.testing.assert_array_equal(momentum_params[name], plain_params[name])


def test_sgd_second_momentum_step():
    params, grads, start = pair((2, 3))
    g1 = grads["p0"].copy()
    g2 = np.random.default_rng(5).standard_normal(g1.shape)
    opt = SGD((params, grads), lr=0.1, momentum=0.9, dampening=0.25, weight_decay=0.01)
    opt.step()
    d1 = g1 + 0.01 * start["p0"]
    p1 = start["p0"] - 0.1 * d1
    np.testing.assert_allclose(params["p0"], p1, **CLOSE)
    grads["p0"][...] = g2
    opt.step()
    buf = 0.9 * d1 + 0.75 * (g2 + 0.01 * p1)
    np.testing.assert_allclose(opt.state["p0"]["momentum_buffer"], buf, **CLOSE)
    np.testing.assert_allclose(params["p0"], p1 - 0.1 * buf, **CLOSE)


def test_sgd_nesterov_steps():
    params, grads, start = pair((4,))
    g = grads["p0"].copy()
    opt = SGD((params, grads), lr=0.1, momentum=0.9, nesterov=True)
    opt.step()  # buffer g; step along g + 0.9 g
    np.testing.assert_allclose(params["p0"], start["p0"] - 0.1 * 1.9 * g, **CLOSE)
    opt.step()  # same gradient: buffer 1.9 g; step along g + 0.9 * 1.9 g
    np.testing.assert_allclose(params["p0"], start["p0"] - 0.1 * (1.9 + 2.71) * g, **CLOSE)


def test_sgd_weight_decay_alone_shrinks_parameters():
    params, grads, start = pair((6,))
    for grad in grads.values():
        grad.fill(0.0)
    opt = SGD((params, grads), lr=0.5, weight_decay=0.2)
    for _ in range(3):
        opt.step()
    np.testing.assert_allclose(params["p0"], start["p0"] * 0.9**3, **CLOSE)


def test_adam_first_step_moves_by_lr_times_sign():
    """m1 = (1-b1) g and v1 = (1-b2) g^2 correct to g and g^2: the step is -lr g/(|g| + eps)."""
    params, grads, start = pair((3, 4), (7,))
    Adam((params, grads), lr=0.01, eps=1e-8).step()
    for name, g in grads.items():
        step = params[name] - start[name]
        np.testing.assert_allclose(step, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
        assert np.all(np.abs(step + 0.01 * np.sign(g)) <= 0.01 * 1e-8 / np.abs(g) + 2e-15)


def test_adam_two_steps_from_the_paper():
    params, grads, start = pair((5,), seed=3)
    g1 = grads["p0"].copy()
    g2 = np.random.default_rng(4).standard_normal(5)
    lr, b1, b2, eps, wd = 0.05, 0.8, 0.95, 1e-6, 0.1
    opt = Adam((params, grads), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    opt.step()
    grads["p0"][...] = g2
    opt.step()
    theta = start["p0"].copy()
    m = v = np.zeros(5)
    for t, g in enumerate([g1, g2], start=1):
        g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(params["p0"], theta, **CLOSE)
    np.testing.assert_allclose(opt.state["p0"]["exp_avg"], m, **CLOSE)
    np.testing.assert_allclose(opt.state["p0"]["exp_avg_sq"], v, **CLOSE)


def test_adam_zero_gradient_leaves_parameters_unchanged():
    params, grads, start = pair((3, 3))
    grads["p0"].fill(0.0)
    Adam((params, grads), lr=0.1).step()
    np.testing.assert_array_equal(params["p0"], start["p0"])


def test_adam_is_invariant_to_power_of_two_gradient_scales():
    """With eps = 0, multiplying every gradient by 2^k scales m by 2^k and sqrt(v) by 2^k
    exactly: the steps are identical to the bit."""
    params_a, grads_a, _ = pair((4, 5), seed=7)
    params_b = {name: value.copy() for name, value in params_a.items()}
    grads_b = {name: 8.0 * value for name, value in grads_a.items()}
    opt_a = Adam((params_a, grads_a), lr=0.01, eps=0.0)
    opt_b = Adam((params_b, grads_b), lr=0.01, eps=0.0)
    for _ in range(4):
        opt_a.step()
        opt_b.step()
    np.testing.assert_array_equal(params_a["p0"], params_b["p0"])


def test_amsgrad_equals_adam_while_the_second_moment_grows():
    """max(v_max, v) = v when every gradient is larger than the last: AMSGrad changes nothing."""
    params_a, grads_a, _ = pair((6,), seed=8)
    params_b = {name: value.copy() for name, value in params_a.items()}
    grads_b = {name: value.copy() for name, value in grads_a.items()}
    opt_a = Adam((params_a, grads_a), lr=0.01)
    opt_b = Adam((params_b, grads_b), lr=0.01, amsgrad=True)
    for _ in range(5):
        opt_a.step()
        opt_b.step()
        for grads in (grads_a, grads_b):
            grads["p0"] *= 2.0
    np.testing.assert_array_equal(params_a["p0"], params_b["p0"])


def test_adam_large_first_beta_weight_uses_the_other_lerp_branch():
    """beta1 = 0 gives m_t = g_t exactly (lerp anchored at its end for weights >= 1/2)."""
    params, grads, _ = pair((8,), seed=9)
    opt = Adam((params, grads), lr=0.01, betas=(0.0, 0.9))
    opt.step()
    np.testing.assert_array_equal(opt.state["p0"]["exp_avg"], grads["p0"])


def test_lr_can_be_changed_between_steps():
    params, grads, start = pair((5,))
    opt = SGD((params, grads), lr=0.1)
    opt.lr = 0.0
    opt.step()
    np.testing.assert_array_equal(params["p0"], start["p0"])
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(params["p0"], start["p0"] - 0.5 * grads["p0"], **CLOSE)
    assert opt.lr == 0.5
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -0\.1"):
        opt.lr = -0.1
    assert opt.lr == 0.5


def test_gradients_are_only_read():
    """Weight decay is added to a copy: the gradient buffers are the same after a step."""
    for optimizer_class in (SGD, Adam):
        params, grads, _ = pair((3, 2), (4,))
        before = {name: value.copy() for name, value in grads.items()}
        opt = optimizer_class((params, grads), lr=0.1, weight_decay=0.5)
        opt.step()
        opt.step()
        for name in grads:
            np.testing.assert_array_equal(grads[name], before[name])


# -- with a real module -----------------------------------------------------------------------
def cbam_problem(seed=0):
    """A CBAM, an input and a reachable target: a second CBAM's output on that input."""
    rng = np.random.default_rng(seed)
    module = npcbam.CBAM(4, reduction=2, kernel_size=3, seed=rng)
    teacher = npcbam.CBAM(4, reduction=2, kernel_size=3, seed=rng)
    x = rng.standard_normal((2, 4, 5, 5))
    return module, x, teacher(x)


def loss_and_backward(module, x, target) -> float:
    """0.5 * ||module(x) - target||^2; its parameter gradients are added to module.grads."""
    diff = module(x) - target
    module.backward(diff)
    return 0.5 * float(np.sum(diff**2))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda m: SGD(m, lr=0.01, momentum=0.9),
        lambda m: SGD(m, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda m: Adam(m, lr=0.01),
        lambda m: Adam(m, lr=0.05, weight_decay=1e-3, amsgrad=True),
    ],
)
def test_training_a_cbam_lowers_the_loss(make_optimizer):
    module, x, target = cbam_problem()
    optimizer = make_optimizer(module)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        losses.append(loss_and_backward(module, x, target))
        optimizer.step()
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_module_and_dict_pair_give_the_same_step(optimizer_class):
    """Built from a module, an optimizer reads module.grads and updates module.parameters()
    in place: exactly as one built from copies of those dicts."""
    module, x, target = cbam_problem(seed=1)
    loss_and_backward(module, x, target)
    params = {name: value.copy() for name, value in module.parameters().items()}
    grads = {name: value.copy() for name, value in module.grads.items()}
    live = module.parameters()
    before = module.state_dict()
    from_module = optimizer_class(module, lr=0.01, weight_decay=0.01)
    from_pair = optimizer_class((params, grads), lr=0.01, weight_decay=0.01)
    for _ in range(3):
        from_module.step()
        from_pair.step()
    assert set(from_module.state) == set(module.state_dict()) == set(params)
    for name, value in module.parameters().items():
        assert value is live[name]  # updated in place
        np.testing.assert_array_equal(value, params[name])
        assert not np.array_equal(value, before[name])


def test_zero_grad_zeroes_the_module_buffers_in_place():
    module, x, target = cbam_problem()
    loss_and_backward(module, x, target)
    buffers = module.grads
    assert all(np.abs(g).max() > 0 for g in buffers.values())
    Adam(module).zero_grad()
    for name, grad in module.grads.items():
        assert grad is buffers[name]
        assert not grad.any()


class ScaleWithBuffer(Module):
    """A one-parameter module with a non-parameter buffer (as BatchNorm's running stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("weight", np.array([1.0, 2.0, 3.0]))
        self.running_mean = np.array([0.5, 0.5, 0.5])


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_only_parameters_are_touched(optimizer_class):
    module = ScaleWithBuffer()
    module.accumulate_grad("weight", np.array([1.0, -1.0, 0.5]))
    optimizer = optimizer_class(module, lr=0.1, weight_decay=0.1)
    optimizer.step()
    assert set(optimizer.params) == {"weight"}
    np.testing.assert_array_equal(module.running_mean, [0.5, 0.5, 0.5])
    assert not np.array_equal(module.parameters()["weight"], [1.0, 2.0, 3.0])


def test_replaced_module_parameters_are_refused():
    module = ScaleWithBuffer()
    optimizer = SGD(module, lr=0.1)
    module.register_parameter("weight", np.array([4.0, 5.0, 6.0]))  # new arrays
    with pytest.raises(RuntimeError, match="were replaced after the optimizer was built"):
        optimizer.step()


# -- bad input ---------------------------------------------------------------------------------
def good_pair():
    return {"w": np.zeros((2, 3)), "b": np.zeros(3)}, {"w": np.ones((2, 3)), "b": np.ones(3)}


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: SGD(p, lr=-0.1), ValueError, r"lr must be >= 0, got -0\.1"),
        (lambda p: SGD(p, lr=float("nan")), ValueError, r"lr must be finite, got nan"),
        (lambda p: SGD(p, lr="0.1"), TypeError, r"lr must be a real number, got '0\.1'"),
        (lambda p: SGD(p, lr=True), TypeError, r"lr must be a real number, got True"),
        (lambda p: SGD(p, lr=0.1, momentum=-0.5), ValueError, r"momentum must be >= 0, got -0\.5"),
        (
            lambda p: SGD(p, lr=0.1, weight_decay=-1e-4),
            ValueError,
            r"weight_decay must be >= 0, got -0\.0001",
        ),
        (
            lambda p: SGD(p, lr=0.1, nesterov=True),
            ValueError,
            r"nesterov=True needs momentum > 0 and dampening == 0, got momentum=0\.0",
        ),
        (
            lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            ValueError,
            r"got momentum=0\.9, dampening=0\.1",
        ),
        (lambda p: SGD(p, lr=0.1, nesterov=1), TypeError, r"nesterov must be a bool, got 1"),
        (lambda p: Adam(p, lr=-1e-3), ValueError, r"lr must be >= 0, got -0\.001"),
        (
            lambda p: Adam(p, betas=(1.0, 0.999)),
            ValueError,
            r"betas\[0\] must be in \[0, 1\), got 1\.0",
        ),
        (
            lambda p: Adam(p, betas=(0.9, -0.1)),
            ValueError,
            r"betas\[1\] must be in \[0, 1\), got -0\.1",
        ),
        (lambda p: Adam(p, betas=0.9), TypeError, r"betas must be a pair \(beta1, beta2\)"),
        (lambda p: Adam(p, eps=-1e-8), ValueError, r"eps must be >= 0, got -1e-08"),
        (lambda p: Adam(p, weight_decay=-0.1), ValueError, r"weight_decay must be >= 0"),
        (lambda p: Adam(p, amsgrad="yes"), TypeError, r"amsgrad must be a bool, got 'yes'"),
    ],
)
def test_bad_hyperparameters_are_named(make, error, message):
    params, grads = good_pair()
    with pytest.raises(error, match=message):
        make((params, grads))
    assert not params["w"].any() and not params["b"].any()


def test_bad_parameter_sets_are_named():
    params, grads = good_pair()
    cases = [
        (([params, grads, grads]), TypeError, "a pair (params_dict, grads_dict)"),
        ((params,), TypeError, "an npcbam Module or a pair"),
        (({}, {}), ValueError, "empty parameter set"),
        ((params, {"w": grads["w"]}), ValueError, "no gradient for ['b'], no parameter for []"),
        (
            (params, {**grads, "extra": np.ones(2)}),
            ValueError,
            "no gradient for [], no parameter for ['extra']",
        ),
        ((params, {**grads, "b": np.ones(4)}), ValueError, "gradient 'b' has shape (4,); its"),
        (({**params, "b": [0.0, 0.0]}, grads), TypeError, "parameter 'b' is a list"),
        (
            ({**params, "b": np.zeros(3, np.float32)}, grads),
            TypeError,
            "parameter 'b' has dtype float32; expected float64",
        ),
        ((params, {**grads, "b": params["b"]}), ValueError, "share memory"),
        ((params, {**grads, "b": params["w"][0]}), ValueError, "share memory"),
    ]
    for arg, error, message in cases:
        for optimizer_class in (SGD, Adam):
            with pytest.raises(error, match=re.escape(message)):
                optimizer_class(arg, lr=0.1)
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="parameter 'b' is read-only"):
        SGD(({**params, "b": read_only}, grads), lr=0.1)


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_non_finite_gradient_is_refused_and_nothing_changes(optimizer_class):
    params, grads, start = pair((3, 3), (4,))
    extra = {"momentum": 0.9} if optimizer_class is SGD else {"amsgrad": True}
    optimizer = optimizer_class((params, grads), lr=0.1, **extra)
    optimizer.step()
    after_one = {name: value.copy() for name, value in params.items()}
    state = {name: {k: v.copy() for k, v in s.items()} for name, s in optimizer.state.items()}
    grads["p1"][2] = np.nan
    grads["p1"][3] = np.inf
    message = r"gradient 'p1' holds 2 non-finite value\(s\) \(first at index \(2,\): nan\)"
    with pytest.raises(ValueError, match=message):
        optimizer.step()
    assert optimizer.steps == 1
    for name in params:
        np.testing.assert_array_equal(params[name], after_one[name])
        for key, value in optimizer.state[name].items():
            np.testing.assert_array_equal(value, state[name][key])
    assert not np.array_equal(after_one["p0"], start["p0"])


def test_repr_names_the_hyperparameters():
    params, grads = good_pair()
    assert repr(SGD((params, grads), lr=0.1, momentum=0.9)) == (
        "SGD(2 parameters, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)"
    )
    assert repr(Adam((params, grads))) == (
        "Adam(2 parameters, lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, "
        "amsgrad=False)"
    )


def test_public_names():
    assert base_module.fma is fma
    assert {"SGD", "Adam"} <= set(npcbam.optim.__all__)
