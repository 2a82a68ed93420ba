r"""CBAM: channel attention, then spatial attention, applied in sequence (seed code 1), and the
paper's design space as options."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_bool, require_int
from npcbam.nn.channel_attention import ChannelAttention, check_pool_types, hidden_width
from npcbam.nn.init import require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.spatial_attention import (
    OFFICIAL_BN_MOMENTUM,
    SpatialAttention,
    check_descriptor,
    check_momentum,
    check_pool_order,
)
from npcbam.ops.gating import gate_backward, gate_forward
from npcbam.ops.pooling import check_ties

ARRANGEMENTS = ("channel-spatial", "spatial-channel", "parallel")


def check_arrangement(arrangement, name: str = "arrangement") -> str:
    if not isinstance(arrangement, str) or arrangement not in ARRANGEMENTS:
        raise ValueError(f"{name}={arrangement!r}; expected one of {ARRANGEMENTS}")
    return arrangement


def _check_optional(check):
    """``check`` applied unless the value is None (an option's "not given")."""
    return lambda value, name: None if value is None else check(value, name)


# CBAM's keyword options and the check of each (value, name) -> the value as CBAM uses it; the
# blocks and networks that pass these options on check them here, under the same names
OPTION_CHECKS = {
    "arrangement": check_arrangement,
    "pool_types": check_pool_types,
    "spatial_descriptor": check_descriptor,
    "spatial_batchnorm": require_bool,
    "mlp_bias": require_bool,
    "spatial_bn_momentum": _check_optional(check_momentum),
    "spatial_pool_order": check_pool_order,
    "hidden": _check_optional(require_size),
    "max_ties": lambda value, name: check_ties(value),
}


def check_options(options: dict) -> dict:
    """CBAM's keyword ``options``, each checked under its own name (unknown names are left to
    the caller, which says what it accepts); ``spatial_bn_momentum`` needs
    ``spatial_batchnorm=True``."""
    checked = {
        name: OPTION_CHECKS[name](value, name) if name in OPTION_CHECKS else value
        for name, value in options.items()
    }
    if checked.get("spatial_bn_momentum") is not None and not checked.get("spatial_batchnorm"):
        raise ValueError(
            f"spatial_bn_momentum={checked['spatial_bn_momentum']!r} needs "
            "spatial_batchnorm=True (without it there is no spatial BatchNorm)"
        )
    return checked


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
        Spatial convolution (no bias) -> BatchNorm2d -> sigmoid, as the official code and timm.
    mlp_bias : bool
        Biases in the shared MLP's two layers.
    spatial_bn_momentum : float, optional
        The spatial BatchNorm's running-statistics momentum in [0, 1] (only with
        ``spatial_batchnorm``). Default 0.01, the official code's (as :class:`OfficialCBAM`);
        timm's ``CbamModule`` keeps PyTorch's 0.1.
    spatial_pool_order : ("max", "avg") or ("avg", "max")
        Channel order of the pooled maps fed to the spatial convolution: (max, mean) in seed
        code 1 and the official code (default), (mean, max) in timm.
    hidden : int, optional
        The shared MLP's hidden width, overriding ``channels // reduction``; for timm's
        ``CbamModule``, whose width is ``C / 16`` rounded to a multiple of a divisor (with
        ``rd_channels`` given, that number), pass timm's width here.
    max_ties : {"first", "split"}
        How both max poolings (over H×W and over channels) share a tie's gradient: all to the
        first maximum (default; ``AdaptiveMaxPool2d`` and ``torch.max(dim)`` of the seed and
        the official code) or evenly among the tied maxima (``torch.amax``, current timm).
        Away from exact ties both give the same gradients.

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

    # the first module backward calls refuses a non-finite dy (the parallel arrangement's
    # _backward, itself) before any gradient changes; see Module.checks_dy_first
    checks_dy_first = True

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
        spatial_bn_momentum: float | None = None,
        spatial_pool_order: tuple[str, str] = ("max", "avg"),
        hidden: int | None = None,
        max_ties: str = "first",
    ):
        super().__init__()
        channels = require_size(channels, "channels")
        reduction = require_int(reduction, "reduction", 1)
        kernel_size = require_size(kernel_size, "kernel_size")
        options = check_options(
            {
                "arrangement": arrangement,
                "pool_types": pool_types,
                "spatial_descriptor": spatial_descriptor,
                "spatial_batchnorm": spatial_batchnorm,
                "mlp_bias": mlp_bias,
                "spatial_bn_momentum": spatial_bn_momentum,
                "spatial_pool_order": spatial_pool_order,
                "hidden": hidden,
                "max_ties": max_ties,
            }
        )
        if options["hidden"] is None:
            hidden = hidden_width(channels, reduction)
        rng = rng_from_seed(seed)
        self.arrangement = options["arrangement"]
        self.channel_attention = ChannelAttention(
            channels,
            reduction,
            seed=rng,
            hidden=hidden,
            pool_types=options["pool_types"],
            bias=options["mlp_bias"],
            max_ties=options["max_ties"],
        )
        momentum = options["spatial_bn_momentum"]
        self.spatial_attention = SpatialAttention(
            kernel_size,
            seed=rng,
            pool_order=options["spatial_pool_order"],
            descriptor=options["spatial_descriptor"],
            channels=channels if options["spatial_descriptor"] == "conv" else None,
            batchnorm=options["spatial_batchnorm"],
            bn_momentum=OFFICIAL_BN_MOMENTUM if momentum is None else momentum,
            max_ties=options["max_ties"],
        )
        self.channels, self.reduction = channels, reduction
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
        # a non-finite dy is refused here, before any gradient changes
        drefined, dspatial_map = gate_backward(dout, spatial_gate, dout_name="dy")
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
