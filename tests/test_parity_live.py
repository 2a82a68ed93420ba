"""npcbam against PyTorch autograd on random configurations (skipped when torch is absent).

The reference is ``tests/parity/torch_reference.py``. Shapes, reduction, kernel size and a data
seed come from hypothesis; weights use npcbam's PyTorch-default initialisation. The error of a
tensor is ``max|npcbam - torch| / max|torch|``.

Two kinds of random problem are set aside (``assume``), both judged from PyTorch alone: data
near a kink (a near-tie of a max, a ReLU input near zero), where rounding may pick another
winner; and, for the float32 comparison only, ill-conditioned problems, where a gradient
nearly cancels and PyTorch's own float32 result is off its float64 one by more than a tenth of
the tolerance (about 6% of draws): there two correct float32 implementations can differ by
more than 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import kink_margin, relative_error
from hypothesis import assume, given
from hypothesis import strategies as st

import npcbam

torch = pytest.importorskip("torch")

from parity.torch_reference import (  # noqa: E402 (needs torch)
    float32_rounding_error,
    torch_gradients,
)

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
# a float32 rounding difference must not flip an argmax or a ReLU (inputs are of order 1)
MIN_KINK_MARGIN = 1e-4
# the float32 comparison needs a problem that float32 can resolve well below its tolerance:
# PyTorch's own float32 error (vs float64) must stay under a tenth of it
MAX_FLOAT32_ROUNDING_ERROR = 1e-6


@st.composite
def cbam_cases(draw):
    """(shape, reduction, kernel_size, seed) with N in 1..3, C in 1..12, C // r >= 1,
    H, W in 1..8 and an odd k in {1, 3, 5, 7}."""
    channels = draw(st.integers(1, 12))
    shape = (
        draw(st.integers(1, 3)),
        channels,
        draw(st.integers(1, 8)),
        draw(st.integers(1, 8)),
    )
    reduction = draw(st.integers(1, channels))
    kernel_size = draw(st.sampled_from([1, 3, 5, 7]))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, reduction, kernel_size, seed


def assert_matches(module, x, dy, expected, description):
    """Run npcbam on ``x``, ``dy`` (fresh gradients) and compare with PyTorch's ``expected``."""
    dtype = x.dtype.type
    module.zero_grad()
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == dtype and dx.dtype == dtype
    errors = {"y": relative_error(y, expected["y"]), "dx": relative_error(dx, expected["dx"])}
    for name, grad in module.grads.items():
        errors[f"grad/{name}"] = relative_error(grad, expected[f"grad/{name}"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE[dtype], (
        f"{np.dtype(dtype).name}, {description}: relative error of {worst} is "
        f"{errors[worst]:.3g} > {TOLERANCE[dtype]:g}; all: {errors}"
    )


@given(case=cbam_cases())
def test_npcbam_matches_torch_autograd(case):
    shape, reduction, kernel_size, seed = case
    description = f"shape {shape}, r={reduction}, k={kernel_size}, seed={seed}"
    rng = np.random.default_rng(seed)
    module = npcbam.CBAM(shape[1], reduction, kernel_size, seed=rng)  # PyTorch-default init
    # data exact in float32, so that both dtypes solve the very same problem
    weights = {name: w.astype(np.float32) for name, w in module.state_dict().items()}
    module.load_state_dict(weights)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)

    expected = torch_gradients(x, dy, weights, torch.float64)
    margin = kink_margin(x.astype(np.float64), expected["refined"], weights["mlp.0.weight"])
    assume(margin > MIN_KINK_MARGIN)
    assert_matches(module, x.astype(np.float64), dy.astype(np.float64), expected, description)

    assume(float32_rounding_error(x, dy, weights) <= MAX_FLOAT32_ROUNDING_ERROR)
    expected = torch_gradients(x, dy, weights, torch.float32)
    assert_matches(module, x, dy, expected, description)
