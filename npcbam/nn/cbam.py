r"""CBAM: channel attention, then spatial attention, applied in sequence (seed code 1)."""

from __future__ import annotations

import numpy as np

from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.spatial_attention import SpatialAttention


class CBAM(Module):
    r"""Convolutional Block Attention Module (Woo et al., ECCV 2018), seed code 1 semantics.

    .. math::

        F' = M_c(F) \odot F, \qquad F'' = M_s(F') \odot F'

    so the output is ``spatial_map * (channel_map * x)``. Backward runs the two modules in
    reverse: :math:`\partial L/\partial F' = \texttt{SAM.backward}(\partial L/\partial F'')`, then
    :math:`\partial L/\partial F = \texttt{CAM.backward}(\partial L/\partial F')`.

    Parameters
    ----------
    channels : int
        C, the number of input channels (>= 1).
    reduction : int
        r, the shared MLP's reduction ratio; the hidden width ``C // r`` must be >= 1.
    kernel_size : int
        k of the spatial convolution; odd, padding ``k // 2``.
    seed : int, numpy Generator or None
        Source of the PyTorch-default initialisation (drawn in the order ``mlp.0.weight``,
        ``mlp.2.weight``, ``conv.weight``).

    Attributes
    ----------
    channel_attention : ChannelAttention
    spatial_attention : SpatialAttention
    channel_map : ndarray, shape (N, C, 1, 1)
        :math:`M_c` of the last forward.
    spatial_map : ndarray, shape (N, 1, H, W)
        :math:`M_s` of the last forward.

    Notes
    -----
    State dict (the seed's PyTorch keys and shapes): ``mlp.0.weight`` (C//r, C, 1, 1),
    ``mlp.2.weight`` (C, C//r, 1, 1), ``conv.weight`` (1, 2, k, k); no biases.

    Examples
    --------
    >>> import numpy as np, npcbam
    >>> m = npcbam.CBAM(16, reduction=4, seed=0)
    >>> x = np.random.default_rng(1).standard_normal((2, 16, 8, 8))
    >>> y = m(x)
    >>> dx = m.backward(np.ones_like(y))
    >>> y.shape, dx.shape, m.spatial_map.shape
    ((2, 16, 8, 8), (2, 16, 8, 8), (2, 1, 8, 8))
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, seed=None):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.channel_attention = ChannelAttention(channels, reduction, seed=rng)
        self.spatial_attention = SpatialAttention(kernel_size, seed=rng)
        self.channels, self.reduction = int(channels), int(reduction)
        self.kernel_size = self.spatial_attention.kernel_size
        # the seed's CBAM holds mlp.* and conv.* directly: no prefix on either child's names
        self.register_child("", self.channel_attention, path="channel_attention")
        self.register_child("", self.spatial_attention, path="spatial_attention")

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        refined = self.channel_attention.forward(x)  # F' = M_c(F) * F
        return self.spatial_attention.forward(refined)  # F'' = M_s(F') * F'

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        drefined = self.spatial_attention.backward(dout)  # dL/dF'
        return self.channel_attention.backward(drefined)  # dL/dF

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, shape (N, C, 1, 1)."""
        return self.channel_attention.channel_map

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s` of the last forward, shape (N, 1, H, W)."""
        return self.spatial_attention.spatial_map

    def intermediates(self) -> dict[str, np.ndarray]:
        """The seed's pipeline, step by step, for the last forward (names prefixed by module)."""
        steps = {"input": self.channel_attention._last_cache("intermediates").gate_cache.x}
        steps.update({f"channel.{k}": v for k, v in self.channel_attention.intermediates().items()})
        steps.update({f"spatial.{k}": v for k, v in self.spatial_attention.intermediates().items()})
        return steps
