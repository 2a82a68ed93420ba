r"""Batch normalisation over (N, H, W) for each channel (``BatchNorm2d``).

In training mode the statistics are those of the batch itself, so every output depends on every
input of its channel: the backward carries two extra terms, one through the mean and one through
the variance. In evaluation mode the statistics are constants and the layer is a per-channel
affine map.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_op_array, require_shape


class BatchNormCache(NamedTuple):
    x_hat: np.ndarray  # (N, C, H, W), the normalised input
    inv_std: np.ndarray  # (C,), 1 / sqrt(var + eps)
    gamma: np.ndarray  # (C,)
    batch_statistics: bool  # True: mean and var were computed from x (training mode)


@quiet_floats
def batch_statistics(x: np.ndarray, keep_centred: bool = False):
    r"""Per-channel mean and *biased* variance over the batch and both spatial axes.

    .. math:: \mu_c = \frac{1}{M}\sum_{n,i,j} x_{ncij}, \qquad
              \sigma^2_c = \frac{1}{M}\sum_{n,i,j} (x_{ncij} - \mu_c)^2, \qquad M = N H W

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)

    keep_centred : bool
        Also return :math:`x - \mu`, which the variance is computed from, for
        :func:`batchnorm2d_forward`'s ``centred`` (a pass over x saved).

    Returns
    -------
    mean, var : ndarray, shape (C,) each
    centred : ndarray, shape (N, C, H, W), only with ``keep_centred``

    Checks: ``x`` float32 or float64, (N, C, H, W), no empty axis; a NaN or inf in ``x`` (found
    in ``var``, at no extra pass) or a variance beyond the dtype's range (float32 values
    spread by more than about 1e19) raises ``ValueError``.
    """
    x = require_op_array(x, "x", 4, "(N, C, H, W)")
    mean = x.mean(axis=(0, 2, 3))  # (C,)
    centred = x - mean[:, None, None]  # (N, C, H, W)
    var = np.einsum("ncij,ncij->c", centred, centred) / (x.size // x.shape[1])  # (C,)
    require_finite_result("batch_statistics", var, {"x": x})  # NaN wherever mean is not finite
    return (mean, var, centred) if keep_centred else (mean, var)


@quiet_floats
def batchnorm2d_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    batch_stats: bool,
    centred: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache]:
    r"""Normalise each channel with ``mean`` and ``var``, then scale and shift.

    .. math:: \hat x_{ncij} = \frac{x_{ncij} - \mu_c}{\sqrt{\sigma^2_c + \epsilon}}, \qquad
              y_{ncij} = \gamma_c \hat x_{ncij} + \beta_c

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gamma, beta : ndarray, shape (C,), the scale (``weight``) and shift (``bias``)
    mean, var : ndarray, shape (C,): the batch's own (:func:`batch_statistics`, training) or
        the running statistics (evaluation)
    eps : float, added to the variance
    batch_stats : bool
        Whether ``mean`` and ``var`` were computed from ``x``; if so, the backward
        differentiates through them.
    centred : ndarray, shape (N, C, H, W), optional
        :math:`x - \mu` if the caller has it (:func:`batch_statistics` with ``keep_centred``):
        it becomes :math:`\hat x` in place, instead of a new array from ``x``.

    Returns
    -------
    out : ndarray, shape (N, C, H, W)
    cache : BatchNormCache

    Checks: ``x`` float32 or float64, (N, C, H, W), no empty axis; ``gamma``, ``beta``,
    ``mean``, ``var`` of shape (C,); a NaN or inf reaching the output, or an output that
    overflows, raises ``ValueError`` (one pass over the output).
    """
    x = require_op_array(x, "x", 4, "(N, C, H, W)")
    channels = x.shape[1:2]
    for name, value in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
        require_shape(value, channels, name, "one value per channel of x:")
    inv_std = 1.0 / np.sqrt(var + eps)  # (C,)
    x_hat = x - mean[:, None, None] if centred is None else centred  # (N, C, H, W)
    x_hat *= inv_std[:, None, None]  # in place, as below: no temporary arrays
    out = x_hat * gamma[:, None, None]
    out += beta[:, None, None]
    inputs = {"x": x, "gamma": gamma, "beta": beta, "mean": mean, "var": var}
    require_finite_result("batchnorm2d_forward", out, inputs)
    return out, BatchNormCache(x_hat, inv_std, gamma, batch_stats)


@quiet_floats
def batchnorm2d_backward(
    dout: np.ndarray, cache: BatchNormCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Gradients of :func:`batchnorm2d_forward`.

    .. math::

        \frac{\partial L}{\partial \gamma_c} = \sum_{n,i,j} \delta_{ncij} \hat x_{ncij}, \qquad
        \frac{\partial L}{\partial \beta_c} = \sum_{n,i,j} \delta_{ncij}, \qquad
        g = \gamma_c\, \delta

    With constant statistics (evaluation) :math:`\partial L / \partial x = g / \sqrt{\sigma^2_c
    + \epsilon}`. With batch statistics, :math:`x` also moves :math:`\mu_c` and
    :math:`\sigma^2_c`; summing the three paths gives

    .. math:: \frac{\partial L}{\partial x_{ncij}} = \frac{1}{\sqrt{\sigma^2_c + \epsilon}}
              \Big(g_{ncij} - \frac{1}{M}\sum g_{c} - \hat x_{ncij}\,
              \frac{1}{M}\sum g_{c} \hat x_{c}\Big)

    (sums over n, i, j of channel c; :math:`M = NHW`).

    Parameters
    ----------
    dout : ndarray, shape (N, C, H, W), :math:`\delta`
    cache : BatchNormCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dgamma, dbeta : ndarray, shape (C,)

    Checks: ``dout`` has the shape of ``x``; the gradients are checked finite (a NaN or inf in
    ``dout``, found in ``dbeta``, or an overflow raises ``ValueError``).
    """
    x_hat, inv_std = cache.x_hat, cache.inv_std
    require_shape(dout, x_hat.shape, "dout", "the output's shape")
    dbeta = dout.sum(axis=(0, 2, 3))  # (C,)
    dgamma = np.einsum("ncij,ncij->c", dout, x_hat)  # (C,)
    gain = cache.gamma * inv_std  # (C,): x̄ = gain · (δ - the two mean terms)
    dx = dout * gain[:, None, None]  # g / sqrt(var + eps), (N, C, H, W)
    if cache.batch_statistics:
        # the mean of g is gamma * dbeta / M, the mean of g * x_hat is gamma * dgamma / M;
        # both terms are scaled by 1 / sqrt(var + eps) here, and subtracted in place (two
        # passes over x̄ instead of four new arrays)
        m = dout.size // dout.shape[1]
        mean_g = cache.gamma * dbeta / m  # (C,)
        mean_g_xhat = cache.gamma * dgamma / m  # (C,)
        dx -= x_hat * (mean_g_xhat * inv_std)[:, None, None]
        dx -= (mean_g * inv_std)[:, None, None]
    inputs = {"dout": dout, "gamma": cache.gamma}
    require_finite_result("batchnorm2d_backward", dbeta, inputs)  # dout's NaN or inf show here
    require_finite_result("batchnorm2d_backward", dgamma, inputs)
    require_finite_result("batchnorm2d_backward", dx, inputs)
    return dx, dgamma, dbeta
