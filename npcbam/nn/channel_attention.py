r"""Channel attention ("what"): which channels matter, from their global average and maximum
(and, as options, L2 and log-sum-exp pooling)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_bool, require_finite, require_int
from npcbam.nn.init import default_bias, default_weight, require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.gating import GateCache, gate_backward, gate_forward
from npcbam.ops.mlp import SharedMLPCache, shared_mlp_backward, shared_mlp_forward
from npcbam.ops.pooling import (
    check_ties,
    global_avg_pool_backward,
    global_avg_pool_forward,
    global_max_pool_backward,
    global_max_pool_forward,
)
from npcbam.ops.smooth_pooling import (
    global_lp_pool_backward,
    global_lp_pool_forward,
    global_lse_pool_backward,
    global_lse_pool_forward,
)

POOL_TYPES = ("avg", "max", "lp", "lse")


def pool_ops(kind: str):
    """The (forward, backward) pair of a global pooling over H×W, by name.

    Looked up when called, so that a test can replace one of them (a planted bug)."""
    return {
        "avg": (global_avg_pool_forward, global_avg_pool_backward),
        "max": (global_max_pool_forward, global_max_pool_backward),
        "lp": (global_lp_pool_forward, global_lp_pool_backward),
        "lse": (global_lse_pool_forward, global_lse_pool_backward),
    }[kind]


def check_pool_types(pool_types, name: str = "pool_types") -> tuple[str, ...]:
    """``pool_types`` as a tuple: non-empty, known names, no repeats; else ``ValueError``."""
    if isinstance(pool_types, str):
        pool_types = (pool_types,)
    try:
        pool_types = tuple(pool_types)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of names from {POOL_TYPES}, got {pool_types!r}"
        ) from None
    unknown = [kind for kind in pool_types if not isinstance(kind, str) or kind not in POOL_TYPES]
    if not pool_types or unknown or len(set(pool_types)) != len(pool_types):
        raise ValueError(
            f"{name}={pool_types!r}; expected a non-empty combination without repeats of "
            f"{POOL_TYPES}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return pool_types


def check_layer_names(layer_names, count: int, name: str = "layer_names") -> tuple[str, ...]:
    """``layer_names`` as a tuple of ``count`` distinct non-empty strings, else an error."""
    if isinstance(layer_names, str) or not isinstance(layer_names, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of {count} strings, got {layer_names!r}")
    names = tuple(layer_names)
    if len(names) != count or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{name}={names!r}; expected {count} non-empty strings")
    if len(set(names)) != count:
        raise ValueError(f"{name}={names!r} repeats a name; each layer needs its own")
    return names


class ChannelMapCache(NamedTuple):
    pool_caches: tuple  # one per pool type
    mlp_caches: tuple[SharedMLPCache, ...]  # one use of the shared MLP per pool type
    logits: np.ndarray  # (N, C), the sum of the MLP outputs
    sigmoid_cache: SigmoidCache


class ChannelAttentionCache(NamedTuple):
    map_cache: ChannelMapCache
    gate_cache: GateCache


def hidden_width(channels: int, reduction: int, names=("channels", "reduction")) -> int:
    """The shared MLP's hidden width ``channels // reduction`` (seed code 1), checked >= 1;
    ``names`` are the two arguments as the caller spells them."""
    channels_name, reduction_name = names
    channels = require_size(channels, channels_name)
    reduction = require_int(reduction, reduction_name, 1)
    if channels // reduction == 0:
        raise ValueError(
            f"{channels_name} // {reduction_name} = {channels} // {reduction} = 0: the shared "
            f"MLP would have no hidden units; use {reduction_name} <= {channels} (or more "
            "channels)"
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
        The hidden width, overriding ``C // r`` (seed code 2 uses ``int(C * r)`` with r < 1;
        timm rounds ``C / 16`` to the nearest multiple of a divisor).
    bias : bool
        Give both MLP layers a bias (seed code 2; code 1 has none).
    layer_names : (str, str)
        State-dict names of the two layers (``("mlp.0", "mlp.2")`` for code 1).
    conv_shaped : bool
        Store the weights as 1×1 convolutions (C/r, C, 1, 1) (code 1) or as Linear weights
        (C/r, C) (code 2).
    pool_types : sequence of {"avg", "max", "lp", "lse"}
        The global poolings whose MLP outputs are summed (the paper's: avg and max). "lp" is
        L2 pooling, "lse" log-sum-exp (:mod:`npcbam.ops.smooth_pooling`), as in the official
        code.
    max_ties : {"first", "split"}
        How the global max pooling's backward shares a tie's gradient: all to the first
        maximum (default; ``AdaptiveMaxPool2d`` and ``max_pool2d`` of the seed and the official
        code) or evenly among the tied maxima (``torch.amax``, timm). See
        :mod:`npcbam.ops.pooling`.

    Attributes
    ----------
    channel_map : ndarray, shape (N, C, 1, 1)
        :math:`M_c` of the last forward.

    Notes
    -----
    Parameters (PyTorch names): ``mlp.0.weight`` (C/r, C, 1, 1), ``mlp.2.weight`` (C, C/r, 1, 1).
    Input and output: (N, C, H, W), float32 or float64.
    """

    checks_dy_first = True  # see Module.checks_dy_first

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
        pool_types=("avg", "max"),
        max_ties: str = "first",
    ) -> None:
        super().__init__()
        self.pool_types = check_pool_types(pool_types)
        self.max_ties = check_ties(max_ties)
        self._map_cache: ChannelMapCache | None = None
        channels = require_size(channels, "channels")
        reduction = require_int(reduction, "reduction", 1)
        if hidden is None:
            hidden = hidden_width(channels, reduction)
        hidden = require_size(hidden, "hidden")
        bias, conv_shaped = require_bool(bias, "bias"), require_bool(conv_shaped, "conv_shaped")
        layer_names = check_layer_names(layer_names, 2)
        self.channels, self.reduction = channels, reduction
        self.hidden, self.has_bias = hidden, bias
        # (W0, b0, W1, b1) names, e.g. ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", ...)
        self._names = tuple(f"{name}.{kind}" for name in layer_names for kind in ("weight", "bias"))
        rng = rng_from_seed(seed)
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

    def _kink_cache(self):
        # the map's cache: also current when only map_forward ran (CBAM's parallel arrangement)
        return self._map_cache

    def map_forward(self, x: np.ndarray) -> np.ndarray:
        r"""The channel map :math:`M_c(x)` alone, (N, C, 1, 1); caches what
        :meth:`map_backward` needs (for CBAM's parallel arrangement, which gates elsewhere)."""
        n, c, _, _ = x.shape
        weights = self._mlp_weights(x.dtype)  # W0, W1, b0, b1
        if self.pool_types[0] != "avg":
            require_finite(x, "x")  # before a max or an exp meets a NaN or inf
        logits, pool_caches, mlp_caches = 0.0, [], []
        for kind in self.pool_types:
            pool_forward = pool_ops(kind)[0]
            if kind == "max":
                pooled, pool_cache = pool_forward(x, ties=self.max_ties)  # (N, C)
            else:
                pooled, pool_cache = pool_forward(x)  # (N, C)
            if kind == "avg" and not pool_caches:
                require_finite(x, "x", summary=pooled)  # a NaN or inf in x shows in its means
            out, mlp_cache = shared_mlp_forward(pooled, *weights)  # (N, C), shared weights
            logits = logits + out  # (N, C): the MLP outputs are summed
            pool_caches.append(pool_cache)
            mlp_caches.append(mlp_cache)
        gate, sigmoid_cache = sigmoid_forward(logits)  # (N, C)
        self._map_cache = ChannelMapCache(
            tuple(pool_caches), tuple(mlp_caches), logits, sigmoid_cache
        )
        return gate.reshape(n, c, 1, 1)  # (N, C) -> (N, C, 1, 1)

    def map_backward(self, dchannel_map: np.ndarray, add_to: np.ndarray) -> np.ndarray:
        """Backward of :meth:`map_forward`: adds dL/dx into ``add_to`` (and returns it) and
        accumulates the shared MLP's gradients."""
        cache = self._map_cache
        n, c = cache.logits.shape
        dgate = dchannel_map.reshape(n, c)  # (N, C, 1, 1) -> (N, C)
        dlogits = sigmoid_backward(dgate, cache.sigmoid_cache)  # (N, C)
        # logits = sum over pool types of MLP(pool(x)): a sum hands the same gradient to each
        dpooled = []
        for mlp_cache in cache.mlp_caches:
            dv, *grads = shared_mlp_backward(dlogits, mlp_cache)
            self._accumulate_mlp(grads)  # one more use of the shared weights: added
            dpooled.append(dv)
        # dx += the gradient of each pooling's use of x, added in place
        for kind, dv, pool_cache in zip(self.pool_types, dpooled, cache.pool_caches):
            pool_ops(kind)[1](dv, pool_cache, add_to=add_to)
        return add_to

    def _forward(self, x: np.ndarray) -> np.ndarray:
        channel_map = self.map_forward(x)  # M_c, (N, C, 1, 1)
        out, gate_cache = gate_forward(x, channel_map)  # (N, C, H, W)
        self._cache = ChannelAttentionCache(self._map_cache, gate_cache)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        self._map_cache = self._cache.map_cache
        # x's use by the gate; a non-finite dy is refused there, before any gradient changes
        dx, dchannel_map = gate_backward(dout, self._cache.gate_cache, dout_name="dy")
        return self.map_backward(dchannel_map, add_to=dx)  # x's uses by the poolings

    @property
    def channel_map(self) -> np.ndarray:
        """:math:`M_c` of the last forward, shape (N, C, 1, 1)."""
        return self._last_cache("channel_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots)."""
        cache = self._last_cache("intermediates")
        steps = {}
        for kind, mlp_cache in zip(self.pool_types, cache.map_cache.mlp_caches):
            steps[f"{kind}_pooled"] = mlp_cache.hidden_cache.x  # (N, C)
        for kind, mlp_cache in zip(self.pool_types, cache.map_cache.mlp_caches):
            steps[f"hidden_{kind}"] = mlp_cache.out_cache.x  # (N, C/r), after ReLU
        steps["logits"] = cache.map_cache.logits  # (N, C)
        steps["channel_map"] = cache.gate_cache.gate  # (N, C, 1, 1)
        steps["output"] = cache.gate_cache.x * cache.gate_cache.gate  # (N, C, H, W)
        return steps
