r"""The shared MLP of channel attention: dense C -> C/r, ReLU, dense C/r -> C.

Seed code 1 has no biases; seed code 2 (and the official CBAM) has them: both are optional.

One call is one *use* of the MLP. Channel attention uses it twice (on the average- and on the
max-pooled vector) with the same weights, so the weight gradients of the two calls must be
**added**: forgetting one branch is the classic bug the gradient checker is built to catch.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam.ops.activations import ReluCache, relu_backward, relu_forward
from npcbam.ops.linear import LinearCache, linear_backward, linear_forward


class SharedMLPCache(NamedTuple):
    hidden_cache: LinearCache  # first dense layer, C -> C/r
    relu_cache: ReluCache
    out_cache: LinearCache  # second dense layer, C/r -> C


def shared_mlp_forward(
    v: np.ndarray,
    w_hidden: np.ndarray,
    w_out: np.ndarray,
    b_hidden: np.ndarray | None = None,
    b_out: np.ndarray | None = None,
) -> tuple[np.ndarray, SharedMLPCache]:
    r"""One pass of a pooled descriptor through the shared MLP.

    .. math:: \mathrm{MLP}(v) = W_1\, \mathrm{relu}(W_0 v + b_0) + b_1, \qquad
              W_0 \in \mathbb{R}^{C/r \times C},\; W_1 \in \mathbb{R}^{C \times C/r}

    (:math:`b_0 = b_1 = 0` when the biases are omitted, as in seed code 1).

    Parameters
    ----------
    v : ndarray, shape (N, C)
    w_hidden : ndarray, shape (C/r, C), :math:`W_0` (the seed's ``mlp.0.weight`` without its
        trailing 1×1)
    w_out : ndarray, shape (C, C/r), :math:`W_1` (``mlp.2.weight``)
    b_hidden : ndarray, shape (C/r,), optional, :math:`b_0`
    b_out : ndarray, shape (C,), optional, :math:`b_1`

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : SharedMLPCache
    """
    pre, hidden_cache = linear_forward(v, w_hidden, b_hidden)  # (N, C/r)
    hidden, relu_cache = relu_forward(pre)  # (N, C/r)
    out, out_cache = linear_forward(hidden, w_out, b_out)  # (N, C)
    return out, SharedMLPCache(hidden_cache, relu_cache, out_cache)


def shared_mlp_backward(dout: np.ndarray, cache: SharedMLPCache) -> tuple[np.ndarray, ...]:
    r"""Backward of one MLP pass, the forward read bottom-up.

    .. math::

        \frac{\partial L}{\partial W_1} = \delta^\top h, \quad
        \frac{\partial L}{\partial h} = \delta W_1, \quad
        \frac{\partial L}{\partial p} = \frac{\partial L}{\partial h} \odot [p > 0], \quad
        \frac{\partial L}{\partial W_0} = \Big(\frac{\partial L}{\partial p}\Big)^{\!\top} v,
        \quad \frac{\partial L}{\partial v} = \frac{\partial L}{\partial p} W_0, \quad
        \frac{\partial L}{\partial b_1} = \sum_n \delta_n, \quad
        \frac{\partial L}{\partial b_0} = \sum_n \Big(\frac{\partial L}{\partial p}\Big)_n

    with :math:`p = W_0 v` (pre-activation), :math:`h = \mathrm{relu}(p)`, :math:`\delta` the
    upstream gradient. These are the gradients of *this* use only: the caller adds the two uses.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
    cache : SharedMLPCache

    Returns
    -------
    dv : ndarray, shape (N, C)
    dw_hidden : ndarray, shape (C/r, C)
    dw_out : ndarray, shape (C, C/r)
    db_hidden : ndarray, shape (C/r,), or None when the forward had no biases
    db_out : ndarray, shape (C,), or None when the forward had no biases
    """
    dhidden, dw_out, db_out = linear_backward(dout, cache.out_cache)
    dpre = relu_backward(dhidden, cache.relu_cache)
    dv, dw_hidden, db_hidden = linear_backward(dpre, cache.hidden_cache)
    return dv, dw_hidden, dw_out, db_hidden, db_out
