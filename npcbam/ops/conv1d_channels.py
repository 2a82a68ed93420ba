r"""A 1-D convolution across the channel axis: ECA's replacement for SE's MLP.

ECA (Wang et al., CVPR 2020) turns the pooled channel descriptor :math:`v` of shape (N, C)
into logits by sliding one small kernel of k weights along the channels, so that each channel
looks only at its k - 1 neighbours. As in PyTorch's ``Conv1d(1, 1, k, padding=(k - 1) // 2,
bias=False)`` on a (N, 1, C) tensor, it is a cross-correlation (the kernel is not flipped) with
(k - 1)/2 zeros on each end, so the output keeps C entries:

.. math:: y_{nc} = \sum_{j=0}^{k-1} w_j\, v^{\text{pad}}_{n,\,c+j}, \qquad
          v^{\text{pad}}_{n,\,c+p} = v_{nc}, \quad p = \frac{k-1}{2} .

It is the 2-D convolution of :func:`npcbam.ops.conv.conv2d_forward` with a (1, k) kernel over a
one-channel (N, 1, 1, C) map and padding (0, p); the tests check the two against each other.
The backward mirrors the forward: the kernel's gradient correlates the padded input with
:math:`\bar y`, and the input's gradient adds :math:`w_j \bar y` back onto the k shifted
windows (overlapping windows: ``+=``), the adjoint of unfolding them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npcbam._checks import (
    quiet_floats,
    require_finite_result,
    require_odd_kernel,
    require_op_array,
    require_shape,
)


class Conv1dChannelsCache(NamedTuple):
    v: np.ndarray  # (N, C), the input (its windows are a view, remade by the backward)
    weight: np.ndarray  # (k,)


def channel_windows(v: np.ndarray, kernel_size: int) -> np.ndarray:
    r"""The k-wide window of every channel, zero-padded by (k - 1)/2 at both ends:
    :math:`\text{windows}_{ncj} = v^{\text{pad}}_{n,\,c+j}`, shape (N, C, k), a read-only
    view of one padded copy of ``v``."""
    padding = (kernel_size - 1) // 2
    padded = np.pad(v, ((0, 0), (padding, padding)))  # (N, C) -> (N, C + k - 1)
    return sliding_window_view(padded, kernel_size, axis=1)  # (N, C, k), no copy


@quiet_floats
def conv1d_channels_forward(
    v: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, Conv1dChannelsCache]:
    r"""Correlate every row of ``v`` with the kernel ``weight``, zero padding (k - 1)/2.

    .. math:: y_{nc} = \sum_{j=0}^{k-1} w_j\, v_{n,\,c + j - p}
              \quad (v_{n,i} = 0 \text{ for } i < 0 \text{ or } i \ge C),
              \qquad p = \frac{k-1}{2}

    Parameters
    ----------
    v : ndarray, shape (N, C)
        The pooled channel descriptors, one row per image.
    weight : ndarray, shape (k,)
        The kernel, k odd (PyTorch's ``Conv1d(1, 1, k).weight`` of shape (1, 1, k), flattened).

    Returns
    -------
    out : ndarray, shape (N, C)
    cache : Conv1dChannelsCache

    Checks: ``v`` and ``weight`` float32 or float64 with the shapes above and no empty axis,
    k odd (else ``TypeError`` / ``ValueError`` naming the argument); a NaN or inf in either, or
    an output that overflows, raises ``ValueError``, found in the (N, C) output.
    """
    v = require_op_array(v, "v", 2, "(N, C)")
    weight = require_op_array(weight, "weight", 1, "(k,)")
    kernel_size = require_odd_kernel(weight.shape[0], "the kernel size (weight's length)")
    windows = channel_windows(v, kernel_size)  # (N, C, k)
    out = windows @ weight  # (N, C, k) @ (k,) -> (N, C)
    require_finite_result("conv1d_channels_forward", out, {"v": v, "weight": weight})
    return out, Conv1dChannelsCache(v, weight)


@quiet_floats
def conv1d_channels_backward(
    dout: np.ndarray, cache: Conv1dChannelsCache
) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of :func:`conv1d_channels_forward`.

    .. math::

        \bar w_j = \sum_{n, c} \bar y_{nc}\, v_{n,\,c + j - p}, \qquad
        \bar v_{ni} = \sum_{j} w_j\, \bar y_{n,\,i - j + p}

    (terms with an index outside [0, C) dropped). The second sum is a correlation of
    :math:`\bar y` with the *flipped* kernel, same padding: the gradient of a "same"
    convolution is a "same" convolution.

    Parameters
    ----------
    dout : ndarray, shape (N, C)
        :math:`\bar y`.
    cache : Conv1dChannelsCache

    Returns
    -------
    dv : ndarray, shape (N, C)
    dweight : ndarray, shape (k,)

    Checks: ``dout`` has the output's shape; ``dweight`` (k values, every entry of ``dout``
    meets it) and ``dv`` are checked finite (a NaN or inf in ``dout``, or an overflow, raises
    ``ValueError``).
    """
    v, weight = cache
    n, c = v.shape
    kernel_size = weight.shape[0]
    padding = (kernel_size - 1) // 2
    require_shape(dout, (n, c), "dout", "the output's shape")
    windows = channel_windows(v, kernel_size)  # (N, C, k), as in the forward
    # out = windows @ weight: each weight's gradient sums dout times what it multiplied
    dweight = np.tensordot(dout, windows, axes=([0, 1], [0, 1]))  # (N, C) . (N, C, k) -> (k,)
    # ... and each window entry's gradient, added back where the window was read from
    dpadded = np.zeros((n, c + 2 * padding), dtype=dout.dtype)  # (N, C + k - 1)
    for j in range(kernel_size):
        # tap j read v_pad[:, j : j + C]; neighbouring taps overlap, so this must be +=
        dpadded[:, j : j + c] += weight[j] * dout
    dv = dpadded[:, padding : padding + c]  # crop the padding: (N, C + k - 1) -> (N, C)
    inputs = {"dout": dout, "v": v, "weight": weight}
    require_finite_result("conv1d_channels_backward", dweight, inputs)  # dout's NaN shows here
    require_finite_result("conv1d_channels_backward", dv, inputs)
    return np.ascontiguousarray(dv), dweight
