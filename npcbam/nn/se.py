r"""Squeeze-and-Excitation (SE): channel gates from each channel's global average alone.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks", CVPR 2018. CBAM's paper uses SE as its
baseline: its channel attention with the average pool only *is* SE (Table 1's first row).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_int
from npcbam.nn.channel_attention import hidden_width
from npcbam.nn.init import default_bias, default_weight, require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.gating import GateCache, gate_backward, gate_forward
from npcbam.ops.mlp import SharedMLPCache, shared_mlp_backward, shared_mlp_forward
from npcbam.ops.pooling import AvgPoolCache, global_avg_pool_backward, global_avg_pool_forward


class SECache(NamedTuple):
    pool_cache: AvgPoolCache
    mlp_cache: SharedMLPCache  # fc1, ReLU, fc2 (its relu_cache holds the ReLU's winners)
    logits: np.ndarray  # (N, C), fc2's output
    sigmoid_cache: SigmoidCache
    gate_cache: GateCache


class SE(Module):
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

    Attributes
    ----------
    channel_map : ndarray, shape (N, C, 1, 1)
        The gates :math:`s` of the last forward.

    Notes
    -----
    State-dict keys, names and shapes of timm's ``SEModule`` (``timm/layers/squeeze_excite.py``,
    timm 0.9 and later, checked at commit 0d4c04f of huggingface/pytorch-image-models, with its
    defaults ``bias=True``, ``add_maxpool=False``, no norm layer, ReLU and sigmoid), whose two
    layers are 1×1 convolutions:

    ========== ================
    key        shape
    ========== ================
    fc1.weight (C/r, C, 1, 1)
    fc1.bias   (C/r,)
    fc2.weight (C, C/r, 1, 1)
    fc2.bias   (C,)
    ========== ================

    On the pooled (N, C, 1, 1) map a 1×1 convolution is a dense layer, which is how npcbam
    computes it (:mod:`npcbam.ops.linear`). Input and output: (N, C, H, W), float32 or float64.
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

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, c, _, _ = x.shape
        # the 1x1 convolutions' weights as dense ones: (C/r, C, 1, 1) -> (C/r, C) and
        # (C, C/r, 1, 1) -> (C, C/r)
        w1 = self.param_as("fc1.weight", x.dtype).reshape(self.hidden, c)
        w2 = self.param_as("fc2.weight", x.dtype).reshape(c, self.hidden)
        b1, b2 = self.param_as("fc1.bias", x.dtype), self.param_as("fc2.bias", x.dtype)
        z, pool_cache = global_avg_pool_forward(x)  # squeeze: (N, C); refuses a NaN or inf in x
        logits, mlp_cache = shared_mlp_forward(z, w1, w2, b1, b2)  # excite: (N, C)
        gates, sigmoid_cache = sigmoid_forward(logits)  # (N, C)
        out, gate_cache = gate_forward(x, gates.reshape(n, c, 1, 1))  # scale: (N, C, H, W)
        self._cache = SECache(pool_cache, mlp_cache, logits, sigmoid_cache, gate_cache)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        n, c = cache.pool_cache.x_shape[:2]
        # scale: x's first use; refuses a NaN or inf in dy (found in dgates) before any change
        dx, dgates = gate_backward(dout, cache.gate_cache)  # (N, C, H, W), (N, C, 1, 1)
        dlogits = sigmoid_backward(dgates.reshape(n, c), cache.sigmoid_cache)  # (N, C)
        dz, dw1, dw2, db1, db2 = shared_mlp_backward(dlogits, cache.mlp_cache)
        self.accumulate_grad("fc1.weight", dw1)  # (C/r, C) -> (C/r, C, 1, 1)
        self.accumulate_grad("fc1.bias", db1)
        self.accumulate_grad("fc2.weight", dw2)  # (C, C/r) -> (C, C/r, 1, 1)
        self.accumulate_grad("fc2.bias", db2)
        return global_avg_pool_backward(dz, cache.pool_cache, add_to=dx)  # x's second use: +=

    @property
    def channel_map(self) -> np.ndarray:
        """The gates :math:`s` of the last forward, shape (N, C, 1, 1)."""
        return self._last_cache("channel_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots)."""
        cache = self._last_cache("intermediates")
        return {
            "squeezed": cache.mlp_cache.hidden_cache.x,  # z, (N, C)
            "hidden": cache.mlp_cache.out_cache.x,  # relu(W1 z + b1), (N, C/r)
            "logits": cache.logits,  # (N, C)
            "channel_map": cache.gate_cache.gate,  # s, (N, C, 1, 1)
            "output": cache.gate_cache.x * cache.gate_cache.gate,  # (N, C, H, W)
        }
