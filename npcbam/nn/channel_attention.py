r"""Channel attention ("what"): which channels matter, from their global average and maximum."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_finite, require_int
from npcbam.nn.init import default_bias, default_weight
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

    with one shared :math:`\mathrm{MLP}(v) = W_1\,\mathrm{relu}(W_0 v + b_0) + b_1` (no
    biases by default, as in seed code 1).

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    reduction : int
        r; the hidden width is ``C // r`` and must be at least 1.
    seed : int, numpy Generator or None
        Source of the PyTorch-default initialisation.
    hidden : int, optional
        The hidden width, overriding ``C // r`` (seed code 2 uses ``int(C * r)`` with r < 1).
    bias : bool
        Give both MLP layers a bias (seed code 2; code 1 has none).
    layer_names : (str, str)
        State-dict names of the two layers (``("mlp.0", "mlp.2")`` for code 1).
    conv_shaped : bool
        Store the weights as 1×1 convolutions (C/r, C, 1, 1) (code 1) or as Linear weights
        (C/r, C) (code 2).

    Attributes
    ----------
    channel_map : ndarray, shape (N, C, 1, 1)
        :math:`M_c` of the last forward.

    Notes
    -----
    Parameters (PyTorch names): ``mlp.0.weight`` (C/r, C, 1, 1), ``mlp.2.weight`` (C, C/r, 1, 1).
    Input and output: (N, C, H, W), float32 or float64.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        seed=None,
        *,
        hidden: int | None = None,
        bias: bool = False,
        layer_names: tuple[str, str] = ("mlp.0", "mlp.2"),
        conv_shaped: bool = True,
    ) -> None:
        super().__init__()
        if hidden is None:
            hidden = hidden_width(channels, reduction)
        hidden = require_int(hidden, "hidden", 1)
        self.channels, self.reduction = require_int(channels, "channels", 1), int(reduction)
        self.hidden, self.has_bias = hidden, bool(bias)
        # (W0, b0, W1, b1) names, e.g. ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", ...)
        self._names = tuple(f"{name}.{kind}" for name in layer_names for kind in ("weight", "bias"))
        rng = np.random.default_rng(seed)
        tail = (1, 1) if conv_shaped else ()  # 1x1 convolutions (code 1) or Linear (code 2)
        # PyTorch order: each layer's weight, then its bias, first layer first
        self.register_parameter(self._names[0], default_weight((hidden, channels, *tail), rng))
        if bias:
            self.register_parameter(self._names[1], default_bias(hidden, channels, rng))
        self.register_parameter(self._names[2], default_weight((channels, hidden, *tail), rng))
        if bias:
            self.register_parameter(self._names[3], default_bias(channels, hidden, rng))

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _mlp_weights(self, dtype) -> tuple[np.ndarray, ...]:
        """W0, W1, b0, b1 in ``dtype`` (the biases None when absent)."""
        w_hidden_name, b_hidden_name, w_out_name, b_out_name = self._names
        # (C/r, C, 1, 1) -> (C/r, C) and (C, C/r, 1, 1) -> (C, C/r); Linear weights unchanged
        w_hidden = self.param_as(w_hidden_name, dtype).reshape(self.hidden, self.channels)
        w_out = self.param_as(w_out_name, dtype).reshape(self.channels, self.hidden)
        b_hidden = self.param_as(b_hidden_name, dtype) if self.has_bias else None
        b_out = self.param_as(b_out_name, dtype) if self.has_bias else None
        return w_hidden, w_out, b_hidden, b_out

    def _accumulate_mlp(self, grads: tuple[np.ndarray | None, ...]) -> None:
        """Add one use's (dW0, dW1, db0, db1) to the gradient buffers."""
        w_hidden_name, b_hidden_name, w_out_name, b_out_name = self._names
        dw_hidden, dw_out, db_hidden, db_out = grads
        self.accumulate_grad(w_hidden_name, dw_hidden)
        self.accumulate_grad(w_out_name, dw_out)
        if self.has_bias:
            self.accumulate_grad(b_hidden_name, db_hidden)
            self.accumulate_grad(b_out_name, db_out)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, c, _, _ = x.shape
        weights = self._mlp_weights(x.dtype)  # W0, W1, b0, b1
        avg, avg_cache = global_avg_pool_forward(x)  # (N, C)
        require_finite(x, "x", summary=avg)  # a NaN or inf anywhere in x shows in its means
        mx, max_cache = global_max_pool_forward(x)  # (N, C)
        out_avg, mlp_avg_cache = shared_mlp_forward(avg, *weights)  # (N, C)
        out_max, mlp_max_cache = shared_mlp_forward(mx, *weights)  # (N, C), same weights
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
        davg, *grads = shared_mlp_backward(dlogits, cache.mlp_avg_cache)
        self._accumulate_mlp(grads)  # first use of the shared weights
        dmax, *grads = shared_mlp_backward(dlogits, cache.mlp_max_cache)
        self._accumulate_mlp(grads)  # second use: added, never overwritten
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
