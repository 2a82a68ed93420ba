r"""Spatial attention ("where"): which positions matter, from channel-pooled maps and a k×k conv."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_finite, require_odd_kernel
from npcbam.nn.init import default_bias, default_weight
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.conv import Conv2dCache, conv2d_backward, conv2d_forward
from npcbam.ops.gating import (
    ConcatCache,
    GateCache,
    concat_backward,
    concat_forward,
    gate_backward,
    gate_forward,
)
from npcbam.ops.pooling import (
    AvgPoolCache,
    MaxPoolCache,
    channel_avg_pool_backward,
    channel_avg_pool_forward,
    channel_max_pool_backward,
    channel_max_pool_forward,
)


class SpatialAttentionCache(NamedTuple):
    max_cache: MaxPoolCache
    avg_cache: AvgPoolCache
    concat_cache: ConcatCache
    pooled: np.ndarray  # (N, 2, H, W), [max; mean] over channels
    conv_cache: Conv2dCache
    logits: np.ndarray  # (N, 1, H, W), the conv output
    sigmoid_cache: SigmoidCache
    gate_cache: GateCache


class SpatialAttention(Module):
    r"""Spatial attention module (SAM) of CBAM, seed code 1 semantics.

    .. math::

        M_s(F) = \sigma\big(f^{k\times k}([\,\max_c F \,;\, \operatorname{mean}_c F\,])\big),
        \qquad F'' = M_s(F) \odot F

    with :math:`f^{k\times k}` a 2→1 channel convolution, padding :math:`k // 2`, no bias by
    default, and the pooled maps concatenated in the order (max, mean) of seed code 1 unless
    ``pool_order`` says otherwise.

    Parameters
    ----------
    kernel_size : int
        k, odd (so that padding k // 2 keeps H×W).
    seed : int, numpy Generator or None
        Source of the PyTorch-default initialisation.
    pool_order : ("max", "avg") or ("avg", "max")
        Channel order of the pooled maps fed to the convolution (code 1: max first; code 2:
        mean first).
    bias : bool
        Give the convolution a bias (seed code 2; code 1 has none).
    conv_name : str
        State-dict name of the convolution (``"conv"`` for code 1).

    Attributes
    ----------
    spatial_map : ndarray, shape (N, 1, H, W)
        :math:`M_s` of the last forward.

    Notes
    -----
    Parameter (PyTorch name): ``conv.weight`` (1, 2, k, k). Input and output: (N, C, H, W),
    any C, float32 or float64.
    """

    def __init__(
        self,
        kernel_size: int = 7,
        seed=None,
        *,
        pool_order: tuple[str, str] = ("max", "avg"),
        bias: bool = False,
        conv_name: str = "conv",
    ) -> None:
        super().__init__()
        self.kernel_size = require_odd_kernel(kernel_size)
        if tuple(pool_order) not in (("max", "avg"), ("avg", "max")):
            raise ValueError(
                f"pool_order={pool_order!r}; expected ('max', 'avg') (seed code 1) or "
                "('avg', 'max') (seed code 2)"
            )
        self.max_first = tuple(pool_order) == ("max", "avg")
        self.has_bias = bool(bias)
        self._weight_name, self._bias_name = f"{conv_name}.weight", f"{conv_name}.bias"
        rng = np.random.default_rng(seed)
        shape = (1, 2, self.kernel_size, self.kernel_size)
        self.register_parameter(self._weight_name, default_weight(shape, rng))
        if bias:
            self.register_parameter(self._bias_name, default_bias(1, 2 * self.kernel_size**2, rng))

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        weight = self.param_as(self._weight_name, x.dtype)  # (1, 2, k, k)
        bias = self.param_as(self._bias_name, x.dtype) if self.has_bias else None  # (1,)
        mx, max_cache = channel_max_pool_forward(x)  # (N, 1, H, W)
        avg, avg_cache = channel_avg_pool_forward(x)  # (N, 1, H, W)
        require_finite(x, "x", summary=avg)  # a NaN or inf anywhere in x shows in its means
        parts = [mx, avg] if self.max_first else [avg, mx]
        pooled, concat_cache = concat_forward(parts, axis=1)  # (N, 2, H, W)
        logits, conv_cache = conv2d_forward(pooled, weight, bias, padding=self.kernel_size // 2)
        spatial_map, sigmoid_cache = sigmoid_forward(logits)  # (N, 1, H, W)
        out, gate_cache = gate_forward(x, spatial_map)  # (N, C, H, W)
        self._cache = SpatialAttentionCache(
            max_cache,
            avg_cache,
            concat_cache,
            pooled,
            conv_cache,
            logits,
            sigmoid_cache,
            gate_cache,
        )
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        dx, dspatial_map = gate_backward(dout, cache.gate_cache)  # x's first use: the gate
        require_finite(dout, "dy", summary=dspatial_map)  # before any gradient is accumulated
        dlogits = sigmoid_backward(dspatial_map, cache.sigmoid_cache)  # (N, 1, H, W)
        dpooled, dweight, dbias = conv2d_backward(dlogits, cache.conv_cache)  # (N, 2, H, W)
        self.accumulate_grad(self._weight_name, dweight)
        if self.has_bias:
            self.accumulate_grad(self._bias_name, dbias)
        dparts = concat_backward(dpooled, cache.concat_cache)  # 2 x (N, 1, H, W)
        dmx, davg = dparts if self.max_first else dparts[::-1]
        # dx += the gradients of x's second and third uses, added in place
        channel_max_pool_backward(dmx, cache.max_cache, add_to=dx)  # max over channels
        channel_avg_pool_backward(davg, cache.avg_cache, add_to=dx)  # mean over channels
        return dx

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s` of the last forward, shape (N, 1, H, W)."""
        return self._last_cache("spatial_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots)."""
        cache = self._last_cache("intermediates")
        return {
            "max_over_channels": cache.pooled[:, :1] if self.max_first else cache.pooled[:, 1:],
            "mean_over_channels": cache.pooled[:, 1:] if self.max_first else cache.pooled[:, :1],
            "conv_output": cache.logits,  # (N, 1, H, W)
            "spatial_map": cache.gate_cache.gate,  # (N, 1, H, W)
            "output": cache.gate_cache.x * cache.gate_cache.gate,  # (N, C, H, W)
        }
