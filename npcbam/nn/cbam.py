r"""CBAM: channel attention, then spatial attention, applied in sequence (seed code 1), and the
paper's design space as options."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_finite
from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.spatial_attention import SpatialAttention
from npcbam.ops.gating import gate_backward, gate_forward

ARRANGEMENTS = ("channel-spatial", "spatial-channel", "parallel")


class CBAM(Module):
    r"""Convolutional Block Attention Module (Woo et al., ECCV 2018), seed code 1 semantics by
    default, and the paper's design space through keyword options.

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
    arrangement : {"channel-spatial", "spatial-channel", "parallel"}
        The order of the two gates. "channel-spatial" is the paper's and the seed's;
        "spatial-channel" applies spatial attention first; "parallel" is npcbam's definition
        (the paper gives no formula): :math:`F'' = M_s(F) \odot M_c(F) \odot F`, both maps
        computed from :math:`F`.
    pool_types : sequence of {"avg", "max", "lp", "lse"}
        The global poolings of channel attention, each through the shared MLP, outputs summed
        (default avg and max, the paper's).
    spatial_descriptor : {"pool", "conv"}
        Max and mean over channels (default), or a learned 1×1 convolution C -> 1.
    spatial_batchnorm : bool
        Spatial convolution (no bias) -> BatchNorm2d -> sigmoid, as the official code.
    mlp_bias : bool
        Biases in the shared MLP's two layers.

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

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        seed=None,
        *,
        arrangement: str = "channel-spatial",
        pool_types=("avg", "max"),
        spatial_descriptor: str = "pool",
        spatial_batchnorm: bool = False,
        mlp_bias: bool = False,
    ):
        super().__init__()
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"arrangement={arrangement!r}; expected one of {ARRANGEMENTS}")
        self.arrangement = arrangement
        rng = np.random.default_rng(seed)
        self.channel_attention = ChannelAttention(
            channels, reduction, seed=rng, pool_types=pool_types, bias=mlp_bias
        )
        self.spatial_attention = SpatialAttention(
            kernel_size,
            seed=rng,
            descriptor=spatial_descriptor,
            channels=channels if spatial_descriptor == "conv" else None,
            batchnorm=spatial_batchnorm,
        )
        self.channels, self.reduction = int(channels), int(reduction)
        self.kernel_size = self.spatial_attention.kernel_size
        # the seed's CBAM holds mlp.* and conv.* directly: no prefix on either child's names
        self.register_child("", self.channel_attention, path="channel_attention")
        self.register_child("", self.spatial_attention, path="spatial_attention")

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self.arrangement == "channel-spatial":
            refined = self.channel_attention.forward(x)  # F' = M_c(F) * F
            return self.spatial_attention.forward(refined)  # F'' = M_s(F') * F'
        if self.arrangement == "spatial-channel":
            refined = self.spatial_attention.forward(x)  # F' = M_s(F) * F
            return self.channel_attention.forward(refined)  # F'' = M_c(F') * F'
        # parallel: both maps from F, then F'' = M_s(F) * (M_c(F) * F)
        channel_map = self.channel_attention.map_forward(x)  # (N, C, 1, 1)
        spatial_map = self.spatial_attention.map_forward(x)  # (N, 1, H, W)
        refined, channel_gate = gate_forward(x, channel_map)  # M_c(F) * F
        out, spatial_gate = gate_forward(refined, spatial_map)  # M_s(F) * M_c(F) * F
        self._cache = (channel_gate, spatial_gate)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        if self.arrangement == "channel-spatial":
            drefined = self.spatial_attention.backward(dout)  # dL/dF'
            return self.channel_attention.backward(drefined)  # dL/dF
        if self.arrangement == "spatial-channel":
            drefined = self.channel_attention.backward(dout)  # dL/dF'
            return self.spatial_attention.backward(drefined)  # dL/dF
        channel_gate, spatial_gate = self._cache
        drefined, dspatial_map = gate_backward(dout, spatial_gate)
        require_finite(dout, "dy", summary=dspatial_map)  # before any gradient is accumulated
        dx, dchannel_map = gate_backward(drefined, channel_gate)  # F's use by the gates
        # F's other two uses: the inputs of both maps; their gradients are added into dx
        self.channel_attention.map_backward(dchannel_map, add_to=dx)
        return self.spatial_attention.map_backward(dspatial_map, add_to=dx)

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, shape (N, C, 1, 1)."""
        if self.arrangement == "parallel":
            return self._last_cache("channel_map")[0].gate
        return self.channel_attention.channel_map

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s` of the last forward, shape (N, 1, H, W)."""
        if self.arrangement == "parallel":
            return self._last_cache("spatial_map")[1].gate
        return self.spatial_attention.spatial_map

    def intermediates(self) -> dict[str, np.ndarray]:
        """The pipeline, step by step, for the last forward (names prefixed by module), from
        ``"input"`` to the output, in the order of the arrangement."""
        if self.arrangement == "parallel":
            channel_gate, spatial_gate = self._last_cache("intermediates")
            return {
                "input": channel_gate.x,  # F
                "channel.channel_map": channel_gate.gate,  # M_c(F)
                "spatial.spatial_map": spatial_gate.gate,  # M_s(F)
                "output": spatial_gate.x * spatial_gate.gate,  # M_s(F) * M_c(F) * F
            }
        first, second = (
            [("channel", self.channel_attention), ("spatial", self.spatial_attention)]
            if self.arrangement == "channel-spatial"
            else [("spatial", self.spatial_attention), ("channel", self.channel_attention)]
        )
        steps = {"input": first[1]._last_cache("intermediates").gate_cache.x}
        for name, module in (first, second):
            steps.update({f"{name}.{k}": v for k, v in module.intermediates().items()})
        return steps
