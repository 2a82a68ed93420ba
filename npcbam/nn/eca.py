r"""Efficient Channel Attention (ECA): channel gates from a 1-D convolution across channels.

Wang, Wu, Zhu, Li, Zuo and Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020. Where SE sends the pooled channel vector through a bottleneck MLP
(2C²/r weights), ECA slides one kernel of k weights along it: each channel's gate depends on
its k - 1 neighbours only, and there is no dimensionality reduction.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from npcbam._checks import require_odd_kernel
from npcbam.nn.channel_gate import ChannelGate
from npcbam.nn.init import default_weight, require_size, rng_from_seed
from npcbam.ops.conv1d_channels import (
    Conv1dChannelsCache,
    conv1d_channels_backward,
    conv1d_channels_forward,
)


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    r"""ECA's adaptive kernel size: the odd integer nearest above :math:`(\log_2 C + b)/\gamma`.

    .. math:: t = \Big\lfloor \Big|\frac{\log_2 C + b}{\gamma}\Big| \Big\rfloor, \qquad
              k = \begin{cases} t & t \text{ odd} \\ t + 1 & t \text{ even} \end{cases}

    the paper's Eq. (12) (:math:`k = |\log_2(C)/\gamma + b/\gamma|_\text{odd}`, with
    :math:`\gamma = 2`, :math:`b = 1`). With the defaults: k = 1 for C < 8, 3 for
    8 ≤ C < 128 (C = 64: 3), 5 for 128 ≤ C < 2048 (C = 256: 5), 7 from 2048.

    timm's ``EcaModule`` (``timm/layers/eca.py``) computes the same t but takes
    ``max(k, 3)``: for C < 8 it uses k = 3 where this gives 1 (for 3 ≤ C < 8 pass
    ``kernel_size=3`` to match it; for C < 3 a kernel of 3 is longer than the channel vector,
    which :class:`ECA` refuses). The official ``eca_layer`` (BangguWu/ECANet,
    ``models/eca_module.py``) takes k as an argument (default 3) and computes no formula.

    ``math.log2`` is exact at powers of two, where t steps; ``math.log(C, 2)``, which some
    implementations use, gives the same t for every C below :math:`2^{20}` (checked by the
    tests).

    Parameters
    ----------
    channels : int
        C >= 1.
    gamma, b : float
        :math:`\gamma > 0` and :math:`b`, finite.

    Returns
    -------
    int
        k, odd, >= 1.
    """
    channels = require_size(channels, "channels")
    for name, value in (("gamma", gamma), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def check_eca_kernel(kernel_size, channels: int) -> int:
    """An explicit ECA kernel size as an int: odd (the zero padding (k - 1)/2 on each end
    keeps C outputs only for odd k) and at most ``channels``; else an error saying why."""
    k = require_odd_kernel(kernel_size, "kernel_size")
    if k > channels:
        raise ValueError(
            f"kernel_size={k} is larger than channels={channels}: the kernel would be wider "
            f"than the channel vector it slides along, so every gate would mix all {channels} "
            "channels and padding zeros (no longer ECA's local cross-channel interaction), and "
            f"from k = 2C + 1 = {2 * channels + 1} its outer weights would meet only padding "
            f"and never learn; use an odd kernel_size <= {channels}, or kernel_size=None for "
            "the adaptive size"
        )
    return k


class ECA(ChannelGate):
    r"""Efficient Channel Attention.

    .. math::

        v = \mathrm{AvgPool}(F), \qquad
        y_{nc} = \sum_{j=0}^{k-1} w_j\, v_{n,\,c + j - (k-1)/2}, \qquad
        F' = \sigma(y) \odot F

    (zero padding: terms with a channel index outside [0, C) are dropped). The 1-D convolution
    is :func:`npcbam.ops.conv1d_channels.conv1d_channels_forward`: PyTorch's
    ``Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)`` over the (N, 1, C) pooled vector.

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    kernel_size : int or None
        k: odd and at most C. None (default) picks the paper's adaptive size
        :func:`eca_kernel_size` (γ = 2, b = 1).
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation of ``Conv1d``:
        :math:`w \sim \mathcal{U}(\pm 1/\sqrt{k})`.

    Notes
    -----
    State dict: ``conv.weight`` of shape (1, 1, k), the key and shape of the official
    ``eca_layer`` (BangguWu/ECANet, ``models/eca_module.py``) and of timm's ``EcaModule``
    (``timm/layers/eca.py``, default ``use_mlp=False``); neither has a bias. Input and output:
    (N, C, H, W), float32 or float64. The last forward's gates are ``channel_map``,
    (N, C, 1, 1).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, seed=None) -> None:
        super().__init__()
        channels = require_size(channels, "channels")
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels)
        self.channels = channels
        self.kernel_size = check_eca_kernel(kernel_size, channels)
        rng = rng_from_seed(seed)
        self.register_parameter("conv.weight", default_weight((1, 1, self.kernel_size), rng))

    def _excite_forward(self, pooled: np.ndarray) -> tuple[np.ndarray, Conv1dChannelsCache]:
        """The 1-D convolution across channels of the pooled (N, C) vector."""
        kernel = self.param_as("conv.weight", pooled.dtype).reshape(-1)  # (1, 1, k) -> (k,)
        return conv1d_channels_forward(pooled, kernel)  # (N, C)

    def _excite_backward(self, dlogits: np.ndarray, cache: Conv1dChannelsCache) -> np.ndarray:
        dpooled, dkernel = conv1d_channels_backward(dlogits, cache)  # (N, C), (k,)
        self.accumulate_grad("conv.weight", dkernel)  # (k,) -> (1, 1, k)
        return dpooled
