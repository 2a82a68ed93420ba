r"""``OfficialCBAM``: weight-compatible with the CBAM of the authors' code.

The official implementation (github.com/Jongchan/attention-module, ``MODELS/cbam.py``) differs
from the seed's code 1 in four ways, each an option of npcbam's attention modules:

* the shared MLP is two ``Linear`` layers **with biases** (keys ``ChannelGate.mlp.1.*`` and
  ``ChannelGate.mlp.3.*``; indices 0 and 2 are a ``Flatten`` and a ``ReLU``);
* the pool types are configurable (``"avg"``, ``"max"``, ``"lp"``, ``"lse"``), each pooled
  vector through the MLP, the outputs summed;
* the spatial gate is convolution (no bias) → ``BatchNorm2d`` (eps 1e-5, momentum 0.01) →
  sigmoid (keys ``SpatialGate.spatial.conv.weight``, ``SpatialGate.spatial.bn.*``);
* ``no_spatial=True`` drops the spatial gate.

The channel pool order of the spatial gate is (max, mean), the kernel 7×7, as in code 1.
"""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_bool
from npcbam.nn.channel_attention import ChannelAttention, check_pool_types, hidden_width
from npcbam.nn.init import rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.spatial_attention import OFFICIAL_BN_MOMENTUM, SpatialAttention


class OfficialCBAM(Module):
    r"""CBAM with the official module's parameters, buffers and state-dict keys.

    .. math::

        M_c(F) = \sigma\Big(\sum_{p \in \text{pool\_types}} W_1\,\mathrm{relu}(W_0\,
        \mathrm{pool}_p(F) + b_0) + b_1\Big), \qquad
        M_s(F') = \sigma\big(\mathrm{BN}(f^{7\times 7}([\max_c F';\ \mathrm{mean}_c F']))\big)

    :math:`F' = M_c(F) \odot F`, :math:`F'' = M_s(F') \odot F'` (or :math:`F''  = F'` with
    ``no_spatial``). In training mode the spatial BatchNorm normalises with the batch
    statistics of the (N, 1, H, W) conv output, and the backward goes through them.

    Parameters
    ----------
    gate_channels : int
        C.
    reduction_ratio : int
        r; hidden width ``C // r`` (>= 1).
    pool_types : sequence of {"avg", "max", "lp", "lse"}
    no_spatial : bool
    seed : int, numpy Generator or None

    Notes
    -----
    State dict: ``ChannelGate.mlp.1.weight`` (C/r, C), ``ChannelGate.mlp.1.bias`` (C/r,),
    ``ChannelGate.mlp.3.weight`` (C, C/r), ``ChannelGate.mlp.3.bias`` (C,),
    ``SpatialGate.spatial.conv.weight`` (1, 2, 7, 7), ``SpatialGate.spatial.bn.weight``,
    ``.bias``, ``.running_mean``, ``.running_var`` (1,) and ``.num_batches_tracked``.
    The official ResNet initialises the spatial BatchNorm's weight to 0 (then the 7×7 conv
    gets exactly zero gradient at the first step: correct, and a classic source of confusion);
    this module keeps PyTorch's default of 1, as the official module itself does.
    """

    def __init__(
        self,
        gate_channels: int,
        reduction_ratio: int = 16,
        pool_types=("avg", "max"),
        no_spatial: bool = False,
        seed=None,
    ) -> None:
        super().__init__()
        hidden = hidden_width(gate_channels, reduction_ratio, ("gate_channels", "reduction_ratio"))
        pool_types = check_pool_types(pool_types)
        no_spatial = require_bool(no_spatial, "no_spatial")
        rng = rng_from_seed(seed)
        self.channels = int(gate_channels)
        self.channel_gate = ChannelAttention(
            self.channels,
            seed=rng,
            hidden=hidden,
            bias=True,
            layer_names=("mlp.1", "mlp.3"),
            conv_shaped=False,
            pool_types=pool_types,
        )
        self.register_child("ChannelGate", self.channel_gate)
        self.spatial_gate = None
        if not no_spatial:
            self.spatial_gate = SpatialAttention(
                7,
                seed=rng,
                conv_name="spatial.conv",
                batchnorm=True,
                bn_name="spatial.bn",
                bn_momentum=OFFICIAL_BN_MOMENTUM,
            )
            self.register_child("SpatialGate", self.spatial_gate)

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        refined = self.channel_gate.forward(x)  # F' = M_c(F) * F
        if self.spatial_gate is None:
            return refined
        return self.spatial_gate.forward(refined)  # F'' = M_s(F') * F'

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        if self.spatial_gate is not None:
            dout = self.spatial_gate.backward(dout)  # dL/dF'
        return self.channel_gate.backward(dout)  # dL/dF

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, (N, C, 1, 1)."""
        return self.channel_gate.channel_map

    @property
    def spatial_map(self) -> np.ndarray | None:
        """:math:`M_s` of the last forward, (N, 1, H, W); None with ``no_spatial``."""
        return None if self.spatial_gate is None else self.spatial_gate.spatial_map
