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


def default_weight(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw a float64 weight of ``shape`` ``(out, in, *kernel)`` like PyTorch's default init."""
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def default_bias(size: int, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a float64 bias of ``size`` entries like PyTorch: U(+-1/sqrt(fan_in)) of its weight."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=size)
