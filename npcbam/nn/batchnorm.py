r"""``BatchNorm2d``: per-channel normalisation with running statistics for evaluation."""

from __future__ import annotations

import numbers

import numpy as np

from npcbam._checks import require_finite, require_int
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward


class BatchNorm2d(Module):
    r"""Batch normalisation over (N, H, W) for each of C channels, ``torch.nn.BatchNorm2d``.

    .. math:: y_{ncij} = \gamma_c\, \frac{x_{ncij} - \mu_c}{\sqrt{\sigma^2_c + \epsilon}}
              + \beta_c

    **Training mode** uses the batch's own mean and *biased* variance (:math:`M = NHW` values
    per channel) and differentiates through them; it also updates the running statistics

    .. math:: \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu, \qquad
              \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\frac{M}{M - 1}\,\sigma^2

    (the *unbiased* variance, as PyTorch does) and counts ``num_batches_tracked``.
    **Evaluation mode** normalises with :math:`\hat\mu, \hat\sigma^2`: a fixed affine map.

    Parameters
    ----------
    num_features : int
        C.
    eps : float
        Added to the variance (PyTorch's default 1e-5).
    momentum : float
        m in [0, 1] (PyTorch's default 0.1).

    Notes
    -----
    State dict: parameters ``weight`` (C,) = :math:`\gamma` (initially 1) and ``bias`` (C,) =
    :math:`\beta` (initially 0); buffers ``running_mean`` (C,) (0), ``running_var`` (C,) (1)
    and ``num_batches_tracked`` (a 0-d int64). Buffers receive no gradient. Training mode
    needs more than one value per channel (M > 1), as in PyTorch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = require_int(num_features, "num_features", 1)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < np.inf:
            raise ValueError(f"eps must be a positive finite number, got {eps!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.register_parameter("weight", np.ones(num_features))
        self.register_parameter("bias", np.zeros(num_features))
        self.register_buffer("running_mean", np.zeros(num_features))
        self.register_buffer(
            "running_var", np.ones(num_features), minimum=0.0, meaning="a variance is >= 0"
        )
        self.register_buffer(
            "num_batches_tracked", np.array(0, dtype=np.int64), minimum=0, meaning="a count is >= 0"
        )

    def check_input(self, x) -> np.ndarray:
        x = check_feature_map(x, self.num_features)
        values_per_channel = x.size // x.shape[1]
        if self.training and values_per_channel < 2:
            raise ValueError(
                f"BatchNorm2d in training mode needs more than one value per channel, got x of "
                f"shape {x.shape} (N*H*W = {values_per_channel}); use a larger batch or eval()"
            )
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # a NaN or inf in x is found by the ops: batch_statistics (in its variance, before the
        # running statistics move) or batchnorm2d_forward (in its output)
        gamma, beta = self.param_as("weight", x.dtype), self.param_as("bias", x.dtype)
        if self.training:
            mean, var = batch_statistics(x)  # (C,) each, var biased
            m, count = self.momentum, x.size // x.shape[1]
            running_mean, running_var = self._buffers["running_mean"], self._buffers["running_var"]
            running_mean *= 1.0 - m
            running_mean += m * mean
            running_var *= 1.0 - m
            running_var += m * var * (count / (count - 1))  # unbiased
            self._buffers["num_batches_tracked"] += 1
        else:
            mean = self._buffers["running_mean"].astype(x.dtype, copy=False)
            var = self._buffers["running_var"].astype(x.dtype, copy=False)
        out, self._cache = batchnorm2d_forward(x, gamma, beta, mean, var, self.eps, self.training)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        require_finite(dout, "dy")
        dx, dgamma, dbeta = batchnorm2d_backward(dout, self._cache)
        self.accumulate_grad("weight", dgamma)
        self.accumulate_grad("bias", dbeta)
        return dx
