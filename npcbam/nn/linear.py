r"""``Linear``: a dense layer with PyTorch's names, shapes and default initialisation."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_finite, require_float_array, require_int, require_ndim
from npcbam.nn.init import default_bias, default_weight
from npcbam.nn.module import Module
from npcbam.ops.linear import linear_backward, linear_forward


class Linear(Module):
    r"""Dense layer :math:`y = x W^\top + b`, ``torch.nn.Linear``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation :math:`\mathcal U(\pm 1/\sqrt{D_{in}})`.

    Notes
    -----
    State dict: ``weight`` (out, in), ``bias`` (out,). Input (N, in), output (N, out).
    Backward: :math:`\partial L/\partial x = \delta W`, :math:`\partial L/\partial W =
    \delta^\top x`, :math:`\partial L/\partial b = \sum_n \delta_n` (:mod:`npcbam.ops.linear`).
    """

    checks_dy_first = True  # see Module.checks_dy_first

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed=None):
        super().__init__()
        self.in_features = require_int(in_features, "in_features", 1)
        self.out_features = require_int(out_features, "out_features", 1)
        rng = np.random.default_rng(seed)
        self.register_parameter("weight", default_weight((out_features, in_features), rng))
        if bias:
            self.register_parameter("bias", default_bias(out_features, in_features, rng))
        self.has_bias = bool(bias)

    def check_input(self, x) -> np.ndarray:
        x = require_float_array(x, "x")
        require_ndim(x, 2, "x", "(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x has {x.shape[1]} features (shape {x.shape}); this layer was built for "
                f"{self.in_features}"
            )
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # a NaN or inf in x is found by the op, in its small output
        bias = self.param_as("bias", x.dtype) if self.has_bias else None
        out, self._cache = linear_forward(x, self.param_as("weight", x.dtype), bias)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        require_finite(dout, "dy")
        dx, dweight, dbias = linear_backward(dout, self._cache)
        self.accumulate_grad("weight", dweight)
        if self.has_bias:
            self.accumulate_grad("bias", dbias)
        return dx
