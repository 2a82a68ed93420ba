r"""BAM, the Bottleneck Attention Module: a channel and a spatial branch computed side by side
from the same input, combined into one (N, C, H, W) map, applied as a residual gate.

Park, Woo, Lee and Kweon, "BAM: Bottleneck Attention Module", BMVC 2018: CBAM's sibling by
the same authors, placed at the bottlenecks of a network (between stages) rather than in every
block. Its new operations here are the dilated convolution (:mod:`npcbam.ops.im2col`) and
batch normalisation over vectors (:class:`~npcbam.nn.BatchNorm1d`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam.nn.activation import ReLU
from npcbam.nn.batchnorm import BatchNorm1d, BatchNorm2d
from npcbam.nn.channel_attention import hidden_width
from npcbam.nn.conv import Conv2d
from npcbam.nn.init import require_size, rng_from_seed
from npcbam.nn.linear import Linear
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.sequential import Sequential
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.broadcast import (
    BroadcastCache,
    broadcast_add_backward,
    broadcast_add_forward,
    broadcast_multiply_backward,
    broadcast_multiply_forward,
)
from npcbam.ops.gating import GateCache, gate_backward, gate_forward
from npcbam.ops.pooling import AvgPoolCache, global_avg_pool_backward, global_avg_pool_forward

# how the two maps meet, by gate form: (forward, backward) of t = M_c + M_s or M_c * M_s
COMBINE = {
    "paper": (broadcast_add_forward, broadcast_add_backward),
    "official": (broadcast_multiply_forward, broadcast_multiply_backward),
}


def check_gate(gate) -> str:
    """``gate`` if it is ``"paper"`` or ``"official"``, else ``ValueError`` naming it."""
    if not isinstance(gate, str) or gate not in COMBINE:
        raise ValueError(
            f"gate={gate!r}; expected 'paper' (1 + sigmoid(M_c + M_s), the paper's Eq. 1) or "
            "'official' (1 + sigmoid(M_c * M_s), the official code)"
        )
    return gate


class NamedSequential(Sequential):
    """A :class:`~npcbam.nn.Sequential` whose layers have names instead of indices: the state
    dict of a ``torch.nn.Sequential`` filled with ``add_module(name, layer)``.

    Parameters
    ----------
    layers : dict of str -> Module
        In order; each name is the layer's state-dict prefix (layers without state, such as
        ReLU, are named too, as in PyTorch).
    """

    def __init__(self, layers: dict[str, Module]) -> None:
        Module.__init__(self)  # Sequential's numbering is replaced by the names
        for name, layer in layers.items():
            self.register_child(name, layer)
        self.layers = list(layers.values())


def channel_mlp(channels: int, hidden: int, rng) -> NamedSequential:
    """M_c after the pooling: FC C -> C/r, BatchNorm1d, ReLU, FC C/r -> C (with biases), under
    the official ``ChannelGate.gate_c`` names (one hidden layer)."""
    return NamedSequential(
        {
            "gate_c_fc_0": Linear(channels, hidden, seed=rng),
            "gate_c_bn_1": BatchNorm1d(hidden),
            "gate_c_relu_1": ReLU(),
            "gate_c_fc_final": Linear(hidden, channels, seed=rng),
        }
    )


def spatial_convs(channels: int, hidden: int, dilation: int, rng) -> NamedSequential:
    """M_s: 1×1 conv C -> C/r, BatchNorm2d, ReLU, twice (3×3 conv dilated by ``dilation``,
    padding ``dilation``, BatchNorm2d, ReLU), 1×1 conv C/r -> 1 (all convs with biases), under
    the official ``SpatialGate.gate_s`` names."""
    layers = {
        "gate_s_conv_reduce0": Conv2d(channels, hidden, 1, seed=rng),
        "gate_s_bn_reduce0": BatchNorm2d(hidden),
        "gate_s_relu_reduce0": ReLU(),
    }
    for i in range(2):
        layers[f"gate_s_conv_di_{i}"] = Conv2d(
            hidden, hidden, 3, padding=dilation, dilation=dilation, seed=rng
        )
        layers[f"gate_s_bn_di_{i}"] = BatchNorm2d(hidden)
        layers[f"gate_s_relu_di_{i}"] = ReLU()
    layers["gate_s_conv_final"] = Conv2d(hidden, 1, 1, seed=rng)
    return NamedSequential(layers)


class BAMCache(NamedTuple):
    pool_cache: AvgPoolCache
    pooled: np.ndarray  # the squeezed F, (N, C)
    channel_map: np.ndarray  # M_c(F), (N, C, 1, 1)
    spatial_map: np.ndarray  # M_s(F), (N, 1, H, W)
    combine_cache: BroadcastCache  # t = M_c + M_s (paper) or M_c * M_s (official)
    sigmoid_cache: SigmoidCache  # sigma(t), (N, C, H, W)
    gate_cache: GateCache  # F * sigma(t)


class BAM(Module):
    r"""Bottleneck Attention Module.

    .. math::

        M_c(F) = \mathrm{FC}_{C/r \to C}\big(\mathrm{relu}(\mathrm{BN}(
                 \mathrm{FC}_{C \to C/r}(\mathrm{AvgPool}(F))))\big)
                 \in \mathbb{R}^{N \times C \times 1 \times 1}

        M_s(F) = f^{1\times 1}_{C/r \to 1}\big(g_2(g_1(\mathrm{relu}(\mathrm{BN}(
                 f^{1\times 1}_{C \to C/r}(F))))\big)\big)
                 \in \mathbb{R}^{N \times 1 \times H \times W}, \qquad
        g_k = \mathrm{relu} \circ \mathrm{BN} \circ f^{3\times 3,\,d}

        F' = F + F \odot \sigma(t), \qquad
        t = \begin{cases} M_c(F) + M_s(F) & \text{gate="paper"} \\
                          M_c(F) \odot M_s(F) & \text{gate="official"} \end{cases}

    Both maps are broadcast to (N, C, H, W) before they meet; :math:`f^{3\times 3,\,d}` is a
    3×3 convolution dilated by d (padding d, so H×W is kept), the BN of :math:`M_c` is over
    the (N, C/r) hidden vector (:class:`~npcbam.nn.BatchNorm1d`), those of :math:`M_s` over
    (N, H, W) per channel. :math:`F' = F \odot (1 + \sigma(t))`: the attention can at most
    double a feature and never removes it.

    The backward reads the forward bottom-up. :math:`F` is used four times (the identity, the
    gate, :math:`M_c`'s input and :math:`M_s`'s input), so four terms add up in
    :math:`\bar F`:

    .. math::

        \bar F = \bar F' + \bar F' \odot \sigma(t)
                 + \bar F\big|_{M_s}(\bar M_s) + \bar F\big|_{M_c}(\bar M_c), \qquad
        \bar t = \bar F' \odot F \odot \sigma(t)(1 - \sigma(t))

    and each map's gradient is :math:`\bar t` summed over the axes it was broadcast along:
    paper, :math:`\bar M_c = \sum_{i,j} \bar t`, :math:`\bar M_s = \sum_c \bar t`; official,
    :math:`\bar M_c = \sum_{i,j} \bar t \odot M_s`, :math:`\bar M_s = \sum_c \bar t \odot M_c`.

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    reduction : int
        r (the official default 16); the hidden width is ``C // r``, which must be at least 1
        (C < r is refused with a ``ValueError``, not clamped).
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation of the Linear and Conv2d layers (drawn in
        state-dict order); the BatchNorms start at weight 1, bias 0, running mean 0 and
        variance 1.
    gate : {"paper", "official"}
        How the maps combine: the paper's sum :math:`1 + \sigma(M_c + M_s)` (default; Eq. 1 of
        the paper) or the official code's product :math:`1 + \sigma(M_c \odot M_s)`
        (``MODELS/bam.py`` of Jongchan/attention-module). They are different functions of the
        same parameters: with the product, a channel whose :math:`M_c` is near 0 ignores the
        spatial map (its gate is about :math:`\sigma(0) = 1/2` everywhere), and the spatial
        map's sign flips with that of :math:`M_c`.
    dilation : int
        d of the two 3×3 convolutions (and their padding), 4 in the paper and the code.

    Attributes
    ----------
    channel_map : ndarray, shape (N, C, 1, 1)
        :math:`M_c(F)` of the last forward (before the sigmoid: BAM's maps are logits).
    spatial_map : ndarray, shape (N, 1, H, W)
        :math:`M_s(F)` of the last forward.
    attention : ndarray, shape (N, C, H, W)
        :math:`\sigma(t)` of the last forward (the output is :math:`F \odot (1 + \sigma(t))`).

    Notes
    -----
    **State dict** (both gate forms; the keys of the official ``BAM`` module):
    ``channel_att.gate_c.gate_c_fc_0.{weight (C/r, C), bias}``,
    ``channel_att.gate_c.gate_c_bn_1.*`` (a BatchNorm1d of C/r: ``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``),
    ``channel_att.gate_c.gate_c_fc_final.{weight (C, C/r), bias}``,
    ``spatial_att.gate_s.gate_s_conv_reduce0.{weight (C/r, C, 1, 1), bias}``,
    ``spatial_att.gate_s.gate_s_bn_reduce0.*``,
    ``spatial_att.gate_s.gate_s_conv_di_{0,1}.{weight (C/r, C/r, 3, 3), bias}``,
    ``spatial_att.gate_s.gate_s_bn_di_{0,1}.*``,
    ``spatial_att.gate_s.gate_s_conv_final.{weight (1, C/r, 1, 1), bias}``. All BatchNorms
    have PyTorch's eps 1e-5 and momentum 0.1, as in the official code. In training mode the
    biases of ``gate_c_fc_0``, ``gate_s_conv_reduce0`` and ``gate_s_conv_di_{0,1}`` get exactly
    zero gradient: the BatchNorm after each subtracts the batch mean, which removes them.

    **The official code's bugs, not inherited.** As published, ``MODELS/bam.py`` does not run:
    ``ChannelGate.__init__`` assigns ``self.gate_activation = gate_activation``, a name defined
    nowhere (the repository's issue 27); the line does nothing else and is simply absent here.
    Its channel pooling is ``avg_pool2d(x, H, stride=H)``: an H×H window, which is the global
    average only for square inputs (for H < W ≤ 2H - 1 it averages the first H columns only;
    W < H fails, W ≥ 2H gives several values per channel and a shape error). This module takes
    the global average over H×W, as the paper says, so it equals the official code on square
    inputs and is defined on all others.

    Training mode needs N > 1 (the BatchNorm over the (N, C/r) vector), as in PyTorch. Input
    and output (N, C, H, W), float32 or float64; any H, W (the dilated convolutions are padded
    to keep them).
    """

    checks_dy_first = True  # see Module.checks_dy_first

    def __init__(
        self, channels: int, reduction: int = 16, seed=None, *, gate: str = "paper", dilation=4
    ) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction)  # C // r, refused when 0
        self.gate = check_gate(gate)
        self.dilation = require_size(dilation, "dilation")
        self.channels, self.reduction, self.hidden = int(channels), int(reduction), hidden
        rng = rng_from_seed(seed)
        self.channel_mlp = channel_mlp(self.channels, hidden, rng)
        self.register_child("channel_att.gate_c", self.channel_mlp, path="channel_att")
        self.spatial_convs = spatial_convs(self.channels, hidden, self.dilation, rng)
        self.register_child("spatial_att.gate_s", self.spatial_convs, path="spatial_att")
        self._combine_forward, self._combine_backward = COMBINE[self.gate]

    def check_input(self, x) -> np.ndarray:
        x = check_feature_map(x, self.channels)
        if self.training and x.shape[0] < 2:
            raise ValueError(
                f"BAM in training mode needs a batch of more than one image, got x of shape "
                f"{x.shape}: M_c's BatchNorm1d normalises each hidden unit over the batch; use "
                "a larger batch or eval()"
            )
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, c, _, _ = x.shape
        # M_c: squeeze, then FC -> BN -> ReLU -> FC
        pooled, pool_cache = global_avg_pool_forward(x)  # (N, C); refuses NaN or inf
        channel_logits = self.channel_mlp.forward(pooled)  # (N, C)
        channel_map = channel_logits.reshape(n, c, 1, 1)  # (N, C) -> (N, C, 1, 1)
        # M_s: 1x1 reduce -> two dilated 3x3 -> 1x1 to one channel, from the same F
        spatial_map = self.spatial_convs.forward(x)  # (N, 1, H, W)
        # both broadcast to (N, C, H, W): t = M_c + M_s (paper) or M_c * M_s (official)
        combined, combine_cache = self._combine_forward(channel_map, spatial_map)
        attention, sigmoid_cache = sigmoid_forward(combined)  # sigma(t), (N, C, H, W)
        gated, gate_cache = gate_forward(x, attention)  # F * sigma(t)
        out = x + gated  # F' = F + F * sigma(t)
        self._cache = BAMCache(
            pool_cache, pooled, channel_map, spatial_map, combine_cache, sigmoid_cache, gate_cache
        )
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        n, c = cache.channel_map.shape[:2]
        dx = dout.copy()  # out = F + gated: F's first use, the identity
        dgated = dout
        # a non-finite dy is refused here, before any gradient changes
        dx_gate, dattention = gate_backward(dgated, cache.gate_cache, dout_name="dy")
        dx += dx_gate  # F's second use, the gate
        dcombined = sigmoid_backward(dattention, cache.sigmoid_cache)  # (N, C, H, W)
        # each map's gradient summed over the axes it was broadcast along
        dchannel_map, dspatial_map = self._combine_backward(dcombined, cache.combine_cache)
        dx += self.spatial_convs.backward(dspatial_map)  # F's third use, M_s's input
        dchannel_logits = dchannel_map.reshape(n, c)  # (N, C, 1, 1) -> (N, C)
        dpooled = self.channel_mlp.backward(dchannel_logits)  # (N, C)
        # F's fourth use, M_c's input, added into dx in place
        return global_avg_pool_backward(dpooled, cache.pool_cache, add_to=dx)

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c(F)` of the last forward, shape (N, C, 1, 1) (a logit, before the
        sigmoid)."""
        return self._last_cache("channel_map").channel_map

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s(F)` of the last forward, shape (N, 1, H, W) (a logit, before the
        sigmoid)."""
        return self._last_cache("spatial_map").spatial_map

    @property
    def attention(self) -> np.ndarray:
        r""":math:`\sigma(t)` of the last forward, shape (N, C, H, W)."""
        return self._last_cache("attention").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots): ``pooled``
        (N, C), ``channel_map`` (N, C, 1, 1), ``spatial_map`` (N, 1, H, W), ``combined``
        (N, C, H, W, the sum or product t), ``attention`` (sigma(t)), ``output``."""
        cache = self._last_cache("intermediates")
        x, attention = cache.gate_cache.x, cache.gate_cache.gate
        a, b = cache.combine_cache.a, cache.combine_cache.b
        return {
            "pooled": cache.pooled,
            "channel_map": cache.channel_map,
            "spatial_map": cache.spatial_map,
            "combined": a + b if self.gate == "paper" else a * b,
            "attention": attention,
            "output": x + x * attention,
        }
