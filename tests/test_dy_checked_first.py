"""``Module.checks_dy_first``: a class that says its ``_backward`` refuses a non-finite dy
itself, before any gradient changes, is held to it. For such a class the outermost backward
does not scan dy, so if the class did not keep its word a NaN would reach the gradients (or be
refused later, under another name).

Every class that sets the flag must have a builder here (the test fails on one without), and
each is tried in float32 and float64 with NaN, inf and -inf at positions hypothesis chooses,
including where the input is 0 (there ``inf * x`` is NaN, not inf) and where a ReLU is off.
"""

import importlib
import pkgutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npcbam
from npcbam.nn import (
    BAM,
    CBAM,
    ECA,
    SE,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAttention,
    Conv2d,
    ConvTranspose2d,
    Linear,
    ReLU,
    SpatialAttention,
)
from npcbam.nn.module import Module

# a builder and an input shape for every configuration of every class that sets the flag
BUILDERS = {
    "relu": (ReLU, lambda: ReLU(), (2, 3, 4, 5)),
    "batchnorm2d": (BatchNorm2d, lambda: BatchNorm2d(3), (2, 3, 4, 5)),
    "batchnorm1d": (BatchNorm1d, lambda: BatchNorm1d(3), (4, 3)),
    "conv2d": (Conv2d, lambda: Conv2d(3, 2, 3, padding=1, seed=0), (2, 3, 4, 5)),
    "conv_transpose2d": (
        ConvTranspose2d,
        lambda: ConvTranspose2d(3, 2, 3, stride=2, seed=0),
        (2, 3, 4, 5),
    ),
    "linear": (Linear, lambda: Linear(3, 2, seed=0), (4, 3)),
    "channel": (ChannelAttention, lambda: ChannelAttention(6, 2, seed=0), (2, 6, 4, 5)),
    "channel_lp_lse_split": (
        ChannelAttention,
        lambda: ChannelAttention(
            6, 2, seed=0, pool_types=("lp", "lse", "max"), bias=True, max_ties="split"
        ),
        (2, 6, 4, 5),
    ),
    "spatial": (SpatialAttention, lambda: SpatialAttention(3, seed=0), (2, 6, 4, 5)),
    "spatial_conv_bn": (
        SpatialAttention,
        lambda: SpatialAttention(3, seed=0, descriptor="conv", channels=6, batchnorm=True),
        (2, 6, 4, 5),
    ),
    "se": (SE, lambda: SE(6, 2, seed=0), (2, 6, 4, 5)),
    "eca": (ECA, lambda: ECA(6, seed=0), (2, 6, 4, 5)),
    "bam": (BAM, lambda: BAM(8, 2, seed=0, dilation=1), (2, 8, 6, 6)),
    "cbam": (CBAM, lambda: CBAM(6, 2, 3, seed=0), (2, 6, 4, 5)),
    "cbam_spatial_channel": (
        CBAM,
        lambda: CBAM(6, 2, 3, seed=0, arrangement="spatial-channel", spatial_batchnorm=True),
        (2, 6, 4, 5),
    ),
    "cbam_parallel": (
        CBAM,
        lambda: CBAM(6, 2, 3, seed=0, arrangement="parallel", max_ties="split"),
        (2, 6, 4, 5),
    ),
}


def module_classes():
    """Every subclass of Module that npcbam defines (all its modules imported first)."""
    for info in pkgutil.walk_packages(npcbam.__path__, "npcbam."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, todo = set(), [Module]
    while todo:
        for subclass in todo.pop().__subclasses__():
            if subclass.__module__.startswith("npcbam.") and subclass not in found:
                found.add(subclass)
                todo.append(subclass)
    return found


def test_every_class_that_sets_the_flag_is_tried_here():
    flagged = {cls for cls in module_classes() if cls.checks_dy_first}
    built = {type(build()) for _, build, _ in BUILDERS.values()}
    # a base (ChannelGate, _ConvBase) is tried through the classes built on it; a class of
    # its own (no flagged subclass) must be built here itself
    untried = sorted(
        cls.__name__
        for cls in flagged - built
        if not any(issubclass(other, cls) for other in built) or not cls.__subclasses__()
    )
    assert not untried, f"checks_dy_first set but no builder in this test: {untried}"
    assert built <= flagged  # a builder for a class without the flag tests nothing
    assert ReLU in flagged and CBAM in flagged  # the walk found the classes


def stepped(name, dtype, zero_at):
    """The module after a forward whose input is 0 at flat position ``zero_at``, with
    non-zero gradients, and a finite dy."""
    _, build, shape = BUILDERS[name]
    module = build()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[zero_at % x.size] = 0
    y = module.forward(x)
    for grad in module.grads.values():
        grad += rng.standard_normal(grad.shape)
    return module, rng.standard_normal(y.shape).astype(dtype)


@settings(max_examples=12, deadline=None)
@given(
    position=st.integers(0, 10**6),
    zero_at=st.integers(0, 10**6),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_the_module_refuses_a_non_finite_dy_itself(name, dtype, position, zero_at, bad):
    module, dy = stepped(name, dtype, zero_at)
    # sometimes the bad entry sits exactly where the input is 0
    dy.reshape(-1)[(position if position % 2 else zero_at) % dy.size] = bad
    before = {key: grad.copy() for key, grad in module.grads.items()}
    with pytest.raises(ValueError, match=r"^dy holds 1 non-finite value"):
        module.backward(dy)
    for key, grad in module.grads.items():
        np.testing.assert_array_equal(grad, before[key], err_msg=key)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_finite_dy_still_passes(name):
    module, dy = stepped(name, np.float64, 0)
    dx = module.backward(dy)
    assert np.isfinite(dx).all()
