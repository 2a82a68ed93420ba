r"""Channel attention ("what"): which channels matter, from their global average and maximum."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_finite, require_int
from npcbam.nn.init import default_weight
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.gating import GateCache, gate_backward, gate_forward
from npcbam.ops.mlp import SharedMLPCache, shared_mlp_backward, shared_mlp_forward
from npcbam.ops.pooling import (
    AvgPoolCache,
    MaxPoolCache,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)


class ChannelAttentionCache(NamedTuple):
    avg_cache: AvgPoolCache
    max_cache: MaxPoolCache
    mlp_avg_cache: SharedMLPCache
    mlp_max_cache: SharedMLPCache
    logits: np.ndarray  # (N, C), MLP(avg) + MLP(max)
    sigmoid_cache: SigmoidCache
    gate_cache: GateCache


def hidden_width(channels: int, reduction: int) -> int:
    """The shared MLP's hidden width ``channels // reduction`` (seed code 1), checked >= 1."""
    channels = require_int(channels, "channels", 1)
    reduction = require_int(reduction, "reduction", 1)
    if channels // reduction == 0:
        raise ValueError(
            f"channels // reduction = {channels} // {reduction} = 0: the shared MLP would have "
            f"no hidden units; use reduction <= {channels} (or more channels)"
        )
    return channels // reduction


class ChannelAttention(Module):
    r"""Channel attention module (CAM) of CBAM, seed code 1 semantics.

    .. math::

        M_c(F) = \sigma\big(\mathrm{MLP}(\mathrm{AvgPool}(F)) + \mathrm{MLP}(\mathrm{MaxPool}(F))
        \big), \qquad F' = M_c(F) \odot F

    with one shared :math:`\mathrm{MLP}(v) = W_1\,\mathrm{relu}(W_0 v)`, no biases.

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    reduction : int
        r; the hidden width is ``C // r`` and must be at least 1.
    seed : int, numpy Generator or None
        Source of the PyTorch-default initialisation.

    Attributes
    ----------
    channel_map : ndarray, shape (N, C, 1, 1)
        :math:`M_c` of the last forward.

    Notes
    -----
    Parameters (PyTorch names): ``mlp.0.weight`` (C/r, C, 1, 1), ``mlp.2.weight`` (C, C/r, 1, 1).
    Input and output: (N, C, H, W), float32 or float64.
    """

    def __init__(self, channels: int, reduction: int = 16, seed=None) -> None:
        super().__init__()
        hidden = hidden_width(channels, reduction)
        self.channels, self.reduction = int(channels), int(reduction)
        rng = np.random.default_rng(seed)
        self.register_parameter("mlp.0.weight", default_weight((hidden, channels, 1, 1), rng))
        self.register_parameter("mlp.2.weight", default_weight((channels, hidden, 1, 1), rng))

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _mlp_weights(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        hidden = self._params["mlp.0.weight"].shape[0]
        w_hidden = self.param_as("mlp.0.weight", dtype).reshape(hidden, self.channels)
        w_out = self.param_as("mlp.2.weight", dtype).reshape(self.channels, hidden)
        return w_hidden, w_out  # (C/r, C, 1, 1) -> (C/r, C) and (C, C/r, 1, 1) -> (C, C/r)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, c, _, _ = x.shape
        w_hidden, w_out = self._mlp_weights(x.dtype)
        avg, avg_cache = global_avg_pool_forward(x)  # (N, C)
        require_finite(x, "x", summary=avg)  # a NaN or inf anywhere in x shows in its means
        mx, max_cache = global_max_pool_forward(x)  # (N, C)
        out_avg, mlp_avg_cache = shared_mlp_forward(avg, w_hidden, w_out)  # (N, C)
        out_max, mlp_max_cache = shared_mlp_forward(mx, w_hidden, w_out)  # (N, C), same weights
        logits = out_avg + out_max  # (N, C)
        gate, sigmoid_cache = sigmoid_forward(logits)  # (N, C)
        channel_map = gate.reshape(n, c, 1, 1)  # (N, C) -> (N, C, 1, 1)
        out, gate_cache = gate_forward(x, channel_map)  # (N, C, H, W)
        self._cache = ChannelAttentionCache(
            avg_cache, max_cache, mlp_avg_cache, mlp_max_cache, logits, sigmoid_cache, gate_cache
        )
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        n, c = cache.logits.shape
        dx, dchannel_map = gate_backward(dout, cache.gate_cache)  # x's first use: the gate
        require_finite(dout, "dy", summary=dchannel_map)  # before any gradient is accumulated
        dgate = dchannel_map.reshape(n, c)  # (N, C, 1, 1) -> (N, C)
        dlogits = sigmoid_backward(dgate, cache.sigmoid_cache)  # (N, C)
        # logits = out_avg + out_max: a sum hands the same gradient to both of its terms
        davg, dw_hidden, dw_out = shared_mlp_backward(dlogits, cache.mlp_avg_cache)
        self.accumulate_grad("mlp.0.weight", dw_hidden)  # first use of the shared weights
        self.accumulate_grad("mlp.2.weight", dw_out)
        dmax, dw_hidden, dw_out = shared_mlp_backward(dlogits, cache.mlp_max_cache)
        self.accumulate_grad("mlp.0.weight", dw_hidden)  # second use: added, never overwritten
        self.accumulate_grad("mlp.2.weight", dw_out)
        # dx += the gradients of x's second and third uses, added in place
        global_avg_pool_backward(davg, cache.avg_cache, add_to=dx)  # average pool
        global_max_pool_backward(dmax, cache.max_cache, add_to=dx)  # max pool
        return dx

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, shape (N, C, 1, 1)."""
        return self._last_cache("channel_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots)."""
        cache = self._last_cache("intermediates")
        return {
            "avg_pooled": cache.mlp_avg_cache.hidden_cache.x,  # (N, C)
            "max_pooled": cache.mlp_max_cache.hidden_cache.x,  # (N, C)
            "hidden_avg": cache.mlp_avg_cache.out_cache.x,  # (N, C/r), after ReLU
            "hidden_max": cache.mlp_max_cache.out_cache.x,  # (N, C/r), after ReLU
            "logits": cache.logits,  # (N, C)
            "channel_map": cache.gate_cache.gate,  # (N, C, 1, 1)
            "output": cache.gate_cache.x * cache.gate_cache.gate,  # (N, C, H, W)
        }
