r"""Squeeze-and-Excitation (SE): channel gates from each channel's global average alone.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018. CBAM's paper uses SE as its
baseline: its channel attention with the average pool only *is* SE (Table 1's first row).
"""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_int
from npcbam.nn.channel_attention import hidden_width
from npcbam.nn.channel_gate import ChannelGate
from npcbam.nn.init import default_bias, default_weight, require_size, rng_from_seed
from npcbam.ops.mlp import SharedMLPCache, shared_mlp_backward, shared_mlp_forward


class SE(ChannelGate):
    r"""Squeeze-and-Excitation block.

    .. math::

        z = \mathrm{AvgPool}(F), \qquad
        s = \sigma\big(W_2\, \mathrm{relu}(W_1 z + b_1) + b_2\big), \qquad
        F' = s \odot F

    *Squeeze*: one number per channel, its mean over H×W. *Excite*: a bottleneck MLP
    C → C/r → C with biases, then a sigmoid, gives one gate per channel. *Scale*: every channel
    of the input is multiplied by its gate.

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    reduction : int
        r; the hidden width is ``C // r``, which must be at least 1 (C < r is refused with a
        ``ValueError``, not clamped).
    seed : int, numpy Generator or None
        Source of PyTorch's default initialisation (weights and biases
        :math:`\mathcal{U}(\pm 1/\sqrt{\text{fan\_in}})`).
    hidden : int, optional
        The hidden width, overriding ``C // r``: e.g. timm's width, which is
        ``make_divisible(C / 16, 8)`` (``C / 16`` rounded to a multiple of 8, at least 8), so
        8 for C = 64 where ``C // 16`` is 4; pass ``hidden=8`` to load such a state dict.

    Notes
    -----
    State-dict keys, names and shapes of timm's ``SEModule`` (``timm/layers/squeeze_excite.py``,
    timm 0.9 and later, checked at commit 0d4c04f of huggingface/pytorch-image-models, with its
    defaults ``bias=True``, ``add_maxpool=False``, no norm layer, ReLU and sigmoid), whose two
    layers are 1×1 convolutions:

    ``fc1.weight`` (C/r, C, 1, 1), ``fc1.bias`` (C/r,), ``fc2.weight`` (C, C/r, 1, 1),
    ``fc2.bias`` (C,).

    On the pooled (N, C, 1, 1) map a 1×1 convolution is a dense layer, which is how npcbam
    computes it (:mod:`npcbam.ops.linear`). Input and output: (N, C, H, W), float32 or float64.
    The last forward's gates are ``channel_map``, (N, C, 1, 1).
    """

    def __init__(
        self, channels: int, reduction: int = 16, seed=None, *, hidden: int | None = None
    ) -> None:
        super().__init__()
        channels = require_size(channels, "channels")
        reduction = require_int(reduction, "reduction", 1)
        if hidden is None:
            hidden = hidden_width(channels, reduction)  # C // r, refused when 0
        hidden = require_size(hidden, "hidden")
        self.channels, self.reduction, self.hidden = channels, reduction, hidden
        rng = rng_from_seed(seed)
        # PyTorch order: fc1's weight and bias, then fc2's
        self.register_parameter("fc1.weight", default_weight((hidden, channels, 1, 1), rng))
        self.register_parameter("fc1.bias", default_bias(hidden, channels, rng))
        self.register_parameter("fc2.weight", default_weight((channels, hidden, 1, 1), rng))
        self.register_parameter("fc2.bias", default_bias(channels, hidden, rng))

    def _excite_forward(self, pooled: np.ndarray) -> tuple[np.ndarray, SharedMLPCache]:
        """fc1, ReLU, fc2 on the squeezed (N, C) vector: the MLP of
        :func:`npcbam.ops.mlp.shared_mlp_forward`, used once."""
        dtype, c = pooled.dtype, self.channels
        # the 1x1 convolutions' weights as dense ones: (C/r, C, 1, 1) -> (C/r, C) and
        # (C, C/r, 1, 1) -> (C, C/r)
        w1 = self.param_as("fc1.weight", dtype).reshape(self.hidden, c)
        w2 = self.param_as("fc2.weight", dtype).reshape(c, self.hidden)
        b1, b2 = self.param_as("fc1.bias", dtype), self.param_as("fc2.bias", dtype)
        return shared_mlp_forward(pooled, w1, w2, b1, b2)  # (N, C)

    def _excite_backward(self, dlogits: np.ndarray, cache: SharedMLPCache) -> np.ndarray:
        dpooled, dw1, dw2, db1, db2 = shared_mlp_backward(dlogits, cache)
        self.accumulate_grad("fc1.weight", dw1)  # (C/r, C) -> (C/r, C, 1, 1)
        self.accumulate_grad("fc1.bias", db1)
        self.accumulate_grad("fc2.weight", dw2)  # (C, C/r) -> (C, C/r, 1, 1)
        self.accumulate_grad("fc2.bias", db2)
        return dpooled  # (N, C)

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order: ``pooled`` (N, C), ``hidden``
        (N, C/r, after the ReLU), ``logits`` (N, C), ``channel_map`` (N, C, 1, 1),
        ``output``."""
        steps = super().intermediates()
        hidden = self._cache.excite_cache.out_cache.x  # relu(W1 z + b1), (N, C/r)
        return {"pooled": steps.pop("pooled"), "hidden": hidden, **steps}
