"""``ReLU`` as a layer (no parameters), for containers such as :class:`~npcbam.nn.Sequential`."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_finite, require_float_array
from npcbam.nn.module import Module
from npcbam.ops.activations import relu_backward, relu_forward


class ReLU(Module):
    r"""Element-wise :math:`\mathrm{relu}(x) = \max(x, 0)`; any shape, float32 or float64.

    Backward: :math:`\partial L/\partial x = \partial L/\partial y \cdot [x > 0]`. The mask is
    this layer's ``winners`` (its kink state, read by the gradient checker).
    """

    checks_dy_first = True  # see Module.checks_dy_first

    def check_input(self, x) -> np.ndarray:
        x = require_float_array(x, "x")
        require_finite(x, "x")  # relu would turn a NaN into 0: test every element
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = relu_forward(x)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        require_finite(dout, "dy")  # a NaN in dy would pass through where x > 0
        return relu_backward(dout, self._cache)
