r"""PyTorch's default initialisation of convolution and linear weights, drawn with NumPy.

``torch.nn.Conv2d`` and ``torch.nn.Linear`` initialise their weights with
``kaiming_uniform_(w, a=sqrt(5))`` (PyTorch documentation, ``reset_parameters``). With gain
:math:`\sqrt{2 / (1 + a^2)} = \sqrt{1/3}` the bound :math:`\text{gain}\sqrt{3/\text{fan\_in}}`
simplifies to

.. math:: W \sim \mathcal{U}\!\left(-\frac{1}{\sqrt{\text{fan\_in}}},
          \frac{1}{\sqrt{\text{fan\_in}}}\right), \qquad
          \text{fan\_in} = C_\text{in} \cdot k_h \cdot k_w .

Biases (not used by CBAM code 1) get the same bound, with the fan_in of their weight.
"""

from __future__ import annotations

import math

import numpy as np

from npcbam._checks import require_int


def default_weight(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw a float64 weight of ``shape`` ``(out, in, *kernel)`` like PyTorch's default init."""
    check_parameter_shape(shape, "a weight")
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def default_bias(size: int, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a float64 bias of ``size`` entries like PyTorch: U(+-1/sqrt(fan_in)) of its weight."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=size)


# Limits on what a constructor allocates: far above any CNN in use (widths up to a few
# thousand channels), far below what would exhaust memory or overflow NumPy's shapes, so an
# absurd argument (channels=2**70) gets an error naming it instead of NumPy's internal one.
MAX_SIZE = 2**16  # a channel count, hidden width or kernel size
MAX_PARAMETER_VALUES = 2**27  # one parameter tensor: 1 GiB in float64


def require_size(value, name: str, minimum: int = 1) -> int:
    """A size argument (channels, hidden width, kernel size, stride) as an int in
    [``minimum``, ``MAX_SIZE``]; the error names ``name``, the user's spelling."""
    return require_int(value, name, minimum, MAX_SIZE)


def rng_from_seed(seed, name: str = "seed") -> np.random.Generator:
    """The generator a constructor draws from: ``seed`` None (fresh entropy), a non-negative
    integer, or a NumPy ``Generator`` (used as is, so that a container's children draw in
    turn from one stream), ``SeedSequence`` or ``BitGenerator``; else an error naming ``name``."""
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(seed)
    if seed is not None:
        require_int(seed, name, 0)
    return np.random.default_rng(seed)


def check_parameter_shape(shape: tuple[int, ...], name: str) -> None:
    """Refuse a parameter of more than ``MAX_PARAMETER_VALUES`` values, naming it."""
    values = math.prod(shape)
    if values > MAX_PARAMETER_VALUES:
        raise ValueError(
            f"{name} would have shape {shape}, {values:.3g} values ({8 * values / 2**30:.3g} "
            f"GiB in float64); npcbam refuses parameters of more than {MAX_PARAMETER_VALUES} "
            "values: use smaller sizes"
        )
