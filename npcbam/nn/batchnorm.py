r"""Batch normalisation layers: ``BatchNorm2d`` over feature maps, ``BatchNorm1d`` over vectors.

Both normalise each feature (a channel of a map, an entry of a vector) with statistics over
the batch and share everything but the input's layout: a vector batch (N, D) is the map batch
(N, D, 1, 1), so ``BatchNorm1d`` runs the same ops of :mod:`npcbam.ops.norm` on that view.
"""

from __future__ import annotations

import numbers

import numpy as np

from npcbam._checks import require_finite, require_float_array, require_int, require_ndim
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.norm import batch_statistics, batchnorm2d_backward, batchnorm2d_forward


class _BatchNorm(Module):
    r"""What both batch normalisations share: parameters, buffers, the running-statistics
    update and the op pair, on the (N, C, H, W) view :meth:`_as_maps` gives of the input.

    .. math:: y = \gamma\, \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    per feature, with the batch's mean and *biased* variance over its M values in training
    mode (differentiated through), the running statistics in evaluation mode. Training also
    updates

    .. math:: \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu, \qquad
              \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\frac{M}{M - 1}\,\sigma^2

    (the *unbiased* variance, as PyTorch does) and counts ``num_batches_tracked``.
    """

    checks_dy_first = True  # see Module.checks_dy_first

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

    def _as_maps(self, x: np.ndarray) -> np.ndarray:
        """The input as an (N, C, H, W) array (a view)."""
        raise NotImplementedError

    def _require_batch(self, x: np.ndarray, feature: str, values: str) -> None:
        """Training mode needs more than one value per feature (M > 1), as in PyTorch;
        ``feature`` names a feature ("channel") and ``values`` spells M for the message."""
        count = x.size // x.shape[1]
        if self.training and count < 2:
            raise ValueError(
                f"{type(self).__name__} in training mode needs more than one value per "
                f"{feature}, got x of shape {x.shape} ({values} = {count}); use a larger batch "
                "or eval()"
            )

    def _forward(self, x: np.ndarray) -> np.ndarray:
        # a NaN or inf in x is found by the ops: batch_statistics (in its variance, before the
        # running statistics move) or batchnorm2d_forward (in its output)
        maps = self._as_maps(x)  # (N, C, H, W)
        gamma, beta = self.param_as("weight", x.dtype), self.param_as("bias", x.dtype)
        centred = None
        if self.training:
            # (C,) each, var biased; x - mean, which the normalisation starts from
            mean, var, centred = batch_statistics(maps, keep_centred=True)
            m, count = self.momentum, maps.size // maps.shape[1]
            running_mean, running_var = self._buffers["running_mean"], self._buffers["running_var"]
            running_mean *= 1.0 - m
            running_mean += m * mean
            running_var *= 1.0 - m
            running_var += m * var * (count / (count - 1))  # unbiased
            self._buffers["num_batches_tracked"] += 1
        else:
            mean = self._buffers["running_mean"].astype(x.dtype, copy=False)
            var = self._buffers["running_var"].astype(x.dtype, copy=False)
        out, self._cache = batchnorm2d_forward(
            maps, gamma, beta, mean, var, self.eps, self.training, centred
        )
        return out.reshape(x.shape)  # (N, C, H, W) -> the input's layout

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        require_finite(dout, "dy")
        dmaps = self._as_maps(dout)  # (N, C, H, W)
        dx, dgamma, dbeta = batchnorm2d_backward(dmaps, self._cache)
        self.accumulate_grad("weight", dgamma)
        self.accumulate_grad("bias", dbeta)
        return dx.reshape(dout.shape)  # (N, C, H, W) -> the input's layout


class BatchNorm2d(_BatchNorm):
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

    def check_input(self, x) -> np.ndarray:
        x = check_feature_map(x, self.num_features)
        self._require_batch(x, "channel", "N*H*W")
        return x

    def _as_maps(self, x: np.ndarray) -> np.ndarray:
        return x  # already (N, C, H, W)


class BatchNorm1d(_BatchNorm):
    r"""Batch normalisation of D features over a batch of vectors, ``torch.nn.BatchNorm1d`` on
    (N, D) inputs.

    .. math:: y_{nd} = \gamma_d\, \frac{x_{nd} - \mu_d}{\sqrt{\sigma^2_d + \epsilon}}
              + \beta_d, \qquad
              \mu_d = \frac1N \sum_n x_{nd}, \quad
              \sigma^2_d = \frac1N \sum_n (x_{nd} - \mu_d)^2

    in training mode (the statistics of the batch, differentiated through; :math:`M = N`
    values per feature, N > 1 required, as in PyTorch), with the running statistics in
    evaluation mode; the running statistics move as in :class:`BatchNorm2d`. BAM's channel
    branch normalises its hidden (N, C/r) vector with it.

    The computation is :class:`BatchNorm2d`'s on the (N, D, 1, 1) view of the input (one pixel
    per map, so the sums over n, i, j are sums over n), whose backward is

    .. math:: \bar x_{nd} = \frac{\gamma_d}{\sqrt{\sigma^2_d + \epsilon}}
              \Big(\bar y_{nd} - \frac1N \sum_m \bar y_{md}
              - \hat x_{nd}\, \frac1N \sum_m \bar y_{md}\, \hat x_{md}\Big)

    in training mode and :math:`\bar x_{nd} = \gamma_d \bar y_{nd} / \sqrt{\hat\sigma^2_d +
    \epsilon}` in evaluation mode.

    Parameters
    ----------
    num_features : int
        D.
    eps : float
        Added to the variance (PyTorch's default 1e-5).
    momentum : float
        m in [0, 1] (PyTorch's default 0.1).

    Notes
    -----
    State dict as PyTorch's: ``weight`` (D,) (1), ``bias`` (D,) (0), ``running_mean`` (D,)
    (0), ``running_var`` (D,) (1), ``num_batches_tracked`` (0-d int64). Input and output
    (N, D), float32 or float64 (PyTorch's (N, D, L) form is not supported).
    """

    def check_input(self, x) -> np.ndarray:
        x = require_float_array(x, "x")
        require_ndim(x, 2, "x", "(N, D)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"x has {x.shape[1]} features (shape {x.shape}); this layer was built for "
                f"{self.num_features}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"x has shape {x.shape}; every dimension must be at least 1")
        self._require_batch(x, "feature", "N")
        return x

    def _as_maps(self, x: np.ndarray) -> np.ndarray:
        n, d = x.shape
        return x.reshape(n, d, 1, 1)  # (N, D) -> (N, D, 1, 1)
