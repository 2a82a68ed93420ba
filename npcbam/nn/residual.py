r"""``ResidualBlockCBAM``: a ResNet basic block with CBAM on the residual branch (paper, Fig. 3).

The seed's FPN backbone uses this block without defining it; npcbam defines it as the CBAM
paper places the module in a ResNet basic block: after the block's last BatchNorm, before the
shortcut is added.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from npcbam._checks import require_int
from npcbam.nn.activation import ReLU
from npcbam.nn.bam import BAM
from npcbam.nn.batchnorm import BatchNorm2d
from npcbam.nn.cbam import CBAM, check_options
from npcbam.nn.channel_attention import ChannelAttention, hidden_width
from npcbam.nn.conv import Conv2d
from npcbam.nn.eca import ECA
from npcbam.nn.init import require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.se import SE
from npcbam.nn.sequential import Sequential
from npcbam.nn.spatial_attention import SpatialAttention

ATTENTIONS = ("cbam", "channel", "spatial", "se", "eca", "bam", "none")
# the attentions whose hidden width is C // r, refused when 0 (SE clamps it instead, see
# make_attention; ECA has no hidden layer)
REDUCED = ("cbam", "channel", "bam")


def make_attention(kind: str, channels: int, reduction: int, kernel_size: int, rng, options=None):
    """The attention module of a block, and its state-dict prefix: CBAM under ``cbam``;
    channel or spatial attention alone, :class:`~npcbam.nn.SE`, :class:`~npcbam.nn.ECA` or
    :class:`~npcbam.nn.BAM` under ``attention``; or ``(None, None)`` for none.

    ``options`` are :class:`CBAM`'s keyword options (``arrangement``, ``pool_types``,
    ``spatial_descriptor``, ``spatial_batchnorm``, ``mlp_bias``, ``spatial_bn_momentum``,
    ``spatial_pool_order``, ``hidden``, ``max_ties``), checked under these names; channel or
    spatial attention alone takes the ones that concern it. The other modules take:

    * ``"se"``: ``hidden``, SE's hidden width. Default ``max(1, channels // reduction)``: SE
      clamps a width that would be 0 to one unit (as timm's ``SEModule`` keeps at least one
      hidden unit), where CBAM, channel attention and BAM refuse it.
    * ``"eca"``: ``eca_kernel_size``, ECA's kernel k (odd, at most ``channels``). Default
      None, the paper's adaptive size from ``channels`` (:func:`~npcbam.nn.eca.eca_kernel_size`:
      3 for 8 to 127 channels); ``reduction`` and ``kernel_size`` are not used.
    * ``"bam"``: ``gate`` (``"paper"``, the default, or ``"official"``) and ``dilation``
      (default 4); the hidden width is ``channels // reduction``, refused when 0;
      ``kernel_size`` is not used. BAM's paper places it between stages; here, like every other
      choice, it sits on each block's residual branch.
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise TypeError(
            "attention_options must be a dict of CBAM keyword options (name -> value), got "
            f"{options!r}"
        )
    options = check_options(dict(options))
    if kind == "cbam":
        return CBAM(channels, reduction, kernel_size, seed=rng, **options), "cbam"
    if kind == "channel":
        allowed = {
            "pool_types": "pool_types",
            "mlp_bias": "bias",
            "hidden": "hidden",
            "max_ties": "max_ties",
        }
        mapped = _translate(options, allowed, kind)
        return ChannelAttention(channels, reduction, seed=rng, **mapped), "attention"
    if kind == "spatial":
        allowed = {
            "spatial_descriptor": "descriptor",
            "spatial_batchnorm": "batchnorm",
            "spatial_bn_momentum": "bn_momentum",
            "spatial_pool_order": "pool_order",
            "max_ties": "max_ties",
        }
        mapped = _translate(options, allowed, kind)
        if mapped.get("bn_momentum", 0) is None:  # not given: SpatialAttention's default
            del mapped["bn_momentum"]
        if mapped.get("descriptor") == "conv":
            mapped["channels"] = channels
        return SpatialAttention(kernel_size, seed=rng, **mapped), "attention"
    if kind == "se":
        hidden = _translate(options, {"hidden": "hidden"}, kind).get("hidden")
        if hidden is None:
            hidden = max(1, channels // reduction)  # clamped, not refused (see above)
        return SE(channels, reduction, seed=rng, hidden=hidden), "attention"
    if kind == "eca":
        mapped = _translate(options, {"eca_kernel_size": "kernel_size"}, kind)
        return ECA(channels, seed=rng, **mapped), "attention"
    if kind == "bam":
        mapped = _translate(options, {"gate": "gate", "dilation": "dilation"}, kind)
        return BAM(channels, reduction, seed=rng, **mapped), "attention"
    if kind == "none":
        if options:
            raise ValueError(f"attention='none' takes no options, got {sorted(options)}")
        return None, None
    raise ValueError(f"attention={kind!r}; expected one of {ATTENTIONS}")


def _translate(options: dict, allowed: dict, kind: str) -> dict:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"attention={kind!r} does not take option(s) {unknown}; it takes {sorted(allowed)}"
        )
    return {allowed[name]: value for name, value in options.items()}


def check_hidden_width(
    attention: str, channels: int, reduction, options, channels_name="out_channels"
):
    """With CBAM, channel attention or BAM and no explicit ``hidden`` option:
    ``channels // reduction`` must be >= 1; the error names ``channels_name`` and ``reduction``
    as the caller spells them."""
    require_int(reduction, "reduction", 1)
    explicit = isinstance(options, Mapping) and options.get("hidden") is not None
    if attention in REDUCED and not explicit:
        hidden_width(channels, reduction, (channels_name, "reduction"))


class ResidualBlockCBAM(Module):
    r"""ResNet basic block with CBAM before the residual addition.

    .. math::

        F = \mathrm{BN}_2(W_2 * \mathrm{relu}(\mathrm{BN}_1(W_1 * x))), \qquad
        y = \mathrm{relu}\big(\mathrm{CBAM}(F) + S(x)\big)

    with :math:`W_1` a 3×3 convolution (stride s, padding 1), :math:`W_2` a 3×3 convolution
    (padding 1), neither with bias, and the shortcut :math:`S` the identity when
    ``in_channels == out_channels`` and ``stride == 1``, otherwise a 1×1 convolution (stride s,
    no bias) followed by BatchNorm.

    Backward: :math:`g = \partial L/\partial y \cdot [y > 0]` reaches both terms of the sum;
    the residual branch is read bottom-up (CBAM, BN₂, conv₂, ReLU, BN₁, conv₁) and the
    shortcut's input gradient is **added** to it: :math:`x` is used twice.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        Of ``conv1`` and of the shortcut convolution.
    reduction : int
        The reduction ratio r of CBAM's MLP, SE and BAM (hidden width ``out_channels // r``,
        >= 1; SE clamps it to >= 1).
    kernel_size : int
        CBAM's spatial kernel (odd).
    attention : {"cbam", "channel", "spatial", "se", "eca", "bam", "none"}
        npcbam's addition for ablations: which attention sits on the residual branch
        (default CBAM, the seed's block).
    attention_options : dict, optional
        Keyword options of :class:`CBAM` (arrangement, pool types, spatial descriptor, ...),
        or of SE, ECA or BAM, see :func:`make_attention`.
    seed : int, numpy Generator or None

    Notes
    -----
    State dict: ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``, ``cbam.mlp.0.weight``,
    ``cbam.mlp.2.weight``, ``cbam.conv.weight`` and, with a projection shortcut,
    ``shortcut.0.weight`` and ``shortcut.1.*`` (BatchNorm: ``weight``, ``bias``,
    ``running_mean``, ``running_var``, ``num_batches_tracked``). With ``attention="channel"``,
    ``"spatial"``, ``"se"``, ``"eca"`` or ``"bam"`` the attention's keys start with
    ``attention.``.
    Input (N, in, H, W) -> output (N, out, Ho, Wo), :math:`H_o = \lfloor (H - 1)/s \rfloor + 1`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        reduction: int = 16,
        kernel_size: int = 7,
        attention: str = "cbam",
        seed=None,
        attention_options=None,
    ) -> None:
        super().__init__()
        self.in_channels = require_size(in_channels, "in_channels")
        self.out_channels = require_size(out_channels, "out_channels")
        self.stride = require_size(stride, "stride")
        if not isinstance(attention, str) or attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}; expected one of {ATTENTIONS}")
        check_hidden_width(attention, out_channels, reduction, attention_options)
        rng = rng_from_seed(seed)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, seed=rng)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, seed=rng)
        self.bn2 = BatchNorm2d(out_channels)
        self.attention, prefix = make_attention(
            attention, out_channels, reduction, kernel_size, rng, attention_options
        )
        self.attention_kind = attention
        self.relu_out = ReLU()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Sequential(
                Conv2d(in_channels, out_channels, 1, stride, 0, bias=False, seed=rng),
                BatchNorm2d(out_channels),
            )
        for name, child in [
            ("conv1", self.conv1),
            ("bn1", self.bn1),
            ("relu1", self.relu1),
            ("conv2", self.conv2),
            ("bn2", self.bn2),
            (prefix, self.attention),
            ("shortcut", self.shortcut),
            ("relu_out", self.relu_out),
        ]:
            if child is not None:
                self.register_child(name, child)

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.in_channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        out = self.conv1.forward(x)  # (N, out, Ho, Wo)
        out = self.bn1.forward(out)
        out = self.relu1.forward(out)
        out = self.conv2.forward(out)
        out = self.bn2.forward(out)  # F, the residual branch
        if self.attention is not None:
            out = self.attention.forward(out)  # CBAM(F)
        skip = x if self.shortcut is None else self.shortcut.forward(x)  # S(x)
        return self.relu_out.forward(out + skip)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dsum = self.relu_out.backward(dout)  # reaches both terms of CBAM(F) + S(x)
        dbranch = dsum
        if self.attention is not None:
            dbranch = self.attention.backward(dbranch)
        dbranch = self.bn2.backward(dbranch)
        dbranch = self.conv2.backward(dbranch)
        dbranch = self.relu1.backward(dbranch)
        dbranch = self.bn1.backward(dbranch)
        dx = self.conv1.backward(dbranch)  # x's first use: the residual branch
        dx += dsum if self.shortcut is None else self.shortcut.backward(dsum)  # second use
        return dx

    @property
    def spatial_map(self) -> np.ndarray | None:
        """The block's CBAM spatial map :math:`M_s` of the last forward, (N, 1, Ho, Wo); None
        without spatial attention, and for BAM (its :math:`M_s` is a logit, not a map in
        (0, 1); read it from the block's ``attention``)."""
        if self.attention_kind in ("cbam", "spatial"):
            return self.attention.spatial_map
        return None

    @property
    def channel_map(self) -> np.ndarray | None:
        """The block's channel map :math:`M_c` of the last forward, (N, out, 1, 1), gates in
        (0, 1) (SE's and ECA's too); None without channel attention, and for BAM, whose
        :math:`M_c` is a logit added to its spatial map before one sigmoid (read it from the
        block's ``attention``)."""
        if self.attention_kind in ("cbam", "channel", "se", "eca"):
            return self.attention.channel_map
        return None
