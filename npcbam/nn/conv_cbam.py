r"""``ConvCBAM``: seed code 2, a 3×3 convolution followed by CBAM with a residual sum."""

from __future__ import annotations

import numbers

import numpy as np

from npcbam.nn.channel_attention import ChannelAttention
from npcbam.nn.conv import Conv2d
from npcbam.nn.init import MAX_SIZE, require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.spatial_attention import SpatialAttention


class ConvCBAM(Module):
    r"""Seed code 2: a 3×3 convolution, CBAM on its output, and a residual sum.

    .. math::

        X &= W * x + b \quad (3\times 3,\ \text{padding } 1) \\
        F_c &= \sigma\big(\mathrm{MLP}(\mathrm{avg}_{HW} X) + \mathrm{MLP}(\max_{HW} X)\big)
              \odot X \\
        F_s &= \sigma\big(f^{7\times 7}([\mathrm{mean}_c F_c;\, \max_c F_c])\big) \odot F_c \\
        y &= X + F_s

    with :math:`\mathrm{MLP}(v) = W_2\,\mathrm{relu}(W_1 v + b_1) + b_2` (two ``Linear`` layers
    with biases, hidden width ``int(out_channels * r)``) and a biased 2→1 convolution on the
    pooled maps in the order (mean, max). Backward: the sum hands :math:`\partial L/\partial y`
    to both terms, so :math:`\partial L/\partial X = \partial L/\partial y +
    \mathrm{CBAM}^\top(\partial L/\partial y)`, then the convolution's backward.

    Parameters
    ----------
    in_channels, out_channels : int
    r : float
        Hidden width ratio, > 0; ``int(out_channels * r)`` must be >= 1.
    seed : int, numpy Generator or None

    Notes
    -----
    State dict (the seed's keys): ``conv1.weight`` (out, in, 3, 3), ``conv1.bias`` (out,),
    ``shared_mlp_cbam_1.weight`` (h, out), ``shared_mlp_cbam_1.bias`` (h,),
    ``shared_mlp_cbam_2.weight`` (out, h), ``shared_mlp_cbam_2.bias`` (out,),
    ``conv_cbam.weight`` (1, 2, 7, 7), ``conv_cbam.bias`` (1,). Input (N, in, H, W) -> output
    (N, out, H, W).

    **Departure from the seed.** The seed repeats the spatial map over the *input* channel
    count ``C`` (``Fs.repeat((1, C, 1, 1))``) and then relies on broadcasting, so (checked
    with PyTorch 2.13):

    * ``in_channels == out_channels``: it runs and computes what npcbam computes;
    * ``in_channels == 1``: the map is not repeated and broadcasts over the ``out_channels``
      channels: again npcbam's result;
    * ``out_channels == 1`` (``in_channels > 1``): it runs, but returns (N, in_channels, H, W):
      ``in_channels`` identical copies of npcbam's (N, 1, H, W) output;
    * otherwise it fails (a size mismatch in ``torch.mul``).

    npcbam gates all ``out_channels`` channels and returns (N, out_channels, H, W) in every
    case.
    """

    def __init__(self, in_channels: int, out_channels: int, r: float = 0.5, seed=None) -> None:
        super().__init__()
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r < np.inf:
            raise ValueError(f"r must be a positive finite number, got {r!r}")
        out_channels = require_size(out_channels, "out_channels")
        if out_channels * r > MAX_SIZE:  # before int(): a huge r would overflow it
            raise ValueError(
                f"r={r!r} gives a hidden width out_channels * r = {out_channels * r:.6g} above "
                f"{MAX_SIZE}; use r <= {MAX_SIZE / out_channels:g}"
            )
        hidden = int(out_channels * r)
        if hidden < 1:
            raise ValueError(
                f"int(out_channels * r) = int({out_channels} * {r}) = {hidden}: the shared MLP "
                f"would have no hidden units; use r >= {1 / out_channels:g}"
            )
        self.in_channels = require_size(in_channels, "in_channels")
        self.out_channels, self.r = out_channels, float(r)
        rng = rng_from_seed(seed)
        self.conv1 = Conv2d(in_channels, out_channels, 3, 1, 1, bias=True, seed=rng)
        self.channel_attention = ChannelAttention(
            out_channels,
            hidden=hidden,
            bias=True,
            layer_names=("shared_mlp_cbam_1", "shared_mlp_cbam_2"),
            conv_shaped=False,
            seed=rng,
        )
        self.spatial_attention = SpatialAttention(
            7, pool_order=("avg", "max"), bias=True, conv_name="conv_cbam", seed=rng
        )
        self.register_child("conv1", self.conv1)
        self.register_child("", self.channel_attention, path="channel_attention")
        self.register_child("", self.spatial_attention, path="spatial_attention")

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.in_channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        features = self.conv1.forward(x)  # X, (N, out, H, W)
        refined = self.channel_attention.forward(features)  # F_c
        gated = self.spatial_attention.forward(refined)  # F_s
        return features + gated  # y = X + F_s

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        drefined = self.spatial_attention.backward(dout)  # through F_s
        dfeatures = self.channel_attention.backward(drefined)  # through F_c
        dfeatures += dout  # X's second use: the residual sum
        return self.conv1.backward(dfeatures)

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, shape (N, out, 1, 1)."""
        return self.channel_attention.channel_map

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s` of the last forward, shape (N, 1, H, W)."""
        return self.spatial_attention.spatial_map
