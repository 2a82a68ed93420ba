"""``npcbam.SE`` and ``npcbam.ECA`` against PyTorch autograd, live (skipped when torch is
absent).

The references are ``tests/parity/torch_family.py``. Hypothesis draws a configuration (SE: C,
r and sometimes an explicit hidden width; ECA: C and an odd kernel up to C, or the adaptive
size), a shape and a data seed, with a random state: ``y``, ``dx`` and every parameter gradient
must be within 1e-10 of PyTorch's in float64 (``max|npcbam - torch| / max|torch|``). Draws
within 1e-8 of SE's ReLU kink are set aside. Then state dicts of default-initialised PyTorch
modules (float32 tensors, as ``state_dict()`` gives them) load into npcbam and give the same
results, and timm's ECA kernel of 3 where the paper's rule gives 1 (3 <= C < 8) is checked
with an explicit ``kernel_size=3``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from parity.stored import errors_against, run_module

import npcbam

torch = pytest.importorskip("torch")

from parity.torch_family import (  # noqa: E402 (needs torch)
    TorchECA,
    TorchSE,
    build,
    kink_margin,
    paper_kernel_size,
    random_state,
    torch_family_results,
)

TOLERANCE = 1e-10  # float64
MIN_KINK_MARGIN = 1e-8


@st.composite
def family_cases(draw):
    """("SE" or "ECA", constructor arguments, shape (N, C, H, W), seed)."""
    name = draw(st.sampled_from(["SE", "ECA"]))
    channels = draw(st.integers(1, 24))
    if name == "SE":
        config = {"channels": channels, "reduction": draw(st.integers(1, channels))}
        if draw(st.booleans()):
            config["hidden"] = draw(st.integers(1, 9))
    else:
        config = {"channels": channels}
        kernel = draw(st.sampled_from([None, 1, 3, 5, 7, 9]))
        if kernel is not None and kernel <= channels:
            config["kernel_size"] = kernel
    shape = (draw(st.integers(1, 3)), channels, draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return name, config, shape, draw(st.integers(0, 2**32 - 1))


def results_of(module, x: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    return run_module(module, {"x": x, "dy": dy})


def assert_close(expected: dict, results: dict, description: str) -> None:
    errors = errors_against(expected, results)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (
        f"{description}: error of {worst} is {errors[worst]:.3g} > {TOLERANCE:g}; all: {errors}"
    )


@given(case=family_cases())
def test_npcbam_matches_torch_on_random_configurations(case):
    name, config, shape, seed = case
    rng = np.random.default_rng(seed)
    state = random_state(build(name, config), rng)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    assume(kink_margin(name, config, state, x) > MIN_KINK_MARGIN)
    expected = torch_family_results(name, config, state, x, dy, torch.float64)
    module = getattr(npcbam, name)(**config)
    module.load_state_dict(state)
    assert_close(expected, results_of(module, x, dy), f"{name}({config}), x {shape}, seed={seed}")


@pytest.mark.parametrize(
    ("reference", "module"),
    [
        (lambda: TorchSE(32, 8), lambda: npcbam.SE(32, 8)),
        (lambda: TorchSE(16, hidden=8), lambda: npcbam.SE(16, hidden=8)),  # timm's width
        (lambda: TorchECA(64), lambda: npcbam.ECA(64)),
        (lambda: TorchECA(256), lambda: npcbam.ECA(256)),
    ],
    ids=["SE", "SE hidden 8", "ECA C=64", "ECA C=256"],
)
def test_torch_state_dict_loads_into_npcbam(reference, module):
    """A default-initialised PyTorch module's ``{k: v.numpy()}``: same keys in the same order,
    same values, and the same output and gradients (in float64)."""
    torch.manual_seed(0)
    reference = reference()
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    ours = module()
    ours.load_state_dict(state)
    assert list(ours.state_dict()) == list(state)
    for key, value in state.items():
        assert np.array_equal(ours.state_dict()[key], value), key
    rng = np.random.default_rng(1)
    shape = (2, ours.channels, 5, 4)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    reference = reference.double()
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = reference(x_t)
    y_t.backward(torch.from_numpy(dy))
    expected = {"y": y_t.detach().numpy(), "dx": x_t.grad.numpy()}
    expected.update({f"grad/{k}": p.grad.numpy() for k, p in reference.named_parameters()})
    assert_close(expected, results_of(ours, x, dy), type(ours).__name__)


@pytest.mark.parametrize("channels", range(3, 8))
def test_timm_kernel_of_3_where_the_paper_gives_1(channels):
    """For 3 <= C < 8 the paper's rule gives k = 1 and timm's 3; ``ECA(C, kernel_size=3)``
    matches a reference built with timm's kernel, and the adaptive ECA has k = 1, as the
    reference's own rule says."""
    assert paper_kernel_size(channels) == 1 == npcbam.ECA(channels).kernel_size
    config = {"channels": channels, "kernel_size": 3}
    rng = np.random.default_rng(channels)
    state = random_state(build("ECA", config), rng)
    shape = (2, channels, 3, 2)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    expected = torch_family_results("ECA", config, state, x, dy, torch.float64)
    module = npcbam.ECA(channels, kernel_size=3)
    module.load_state_dict(state)
    assert_close(expected, results_of(module, x, dy), f"ECA({channels}, kernel_size=3)")
