r"""The skeleton SE and ECA share: squeeze, excite, sigmoid, scale.

.. math::

    v = \mathrm{AvgPool}(F) \in \mathbb{R}^{N \times C}, \qquad
    o = \mathrm{excite}(v), \qquad
    F' = \sigma(o) \odot F

The two modules differ only in the excitation (SE: a bottleneck MLP; ECA: a 1-D convolution
across channels), which each subclass supplies as a forward/backward pair.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.gating import GateCache, gate_backward, gate_forward
from npcbam.ops.pooling import AvgPoolCache, global_avg_pool_backward, global_avg_pool_forward


class ChannelGateCache(NamedTuple):
    pool_cache: AvgPoolCache
    excite_cache: tuple  # the subclass's (e.g. an MLP's, whose ReLU cache holds its winners)
    pooled: np.ndarray  # v, (N, C)
    logits: np.ndarray  # o, (N, C)
    sigmoid_cache: SigmoidCache
    gate_cache: GateCache


class ChannelGate(Module):
    """Base of SE and ECA: ``channels`` set by the subclass, which implements
    ``_excite_forward(v) -> (o, cache)`` and ``_excite_backward(do, cache) -> dv`` (adding its
    parameters' gradients), both on (N, C) arrays in the input's dtype."""

    checks_dy_first = True  # see Module.checks_dy_first

    channels: int

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _excite_forward(self, pooled: np.ndarray) -> tuple[np.ndarray, tuple]:
        raise NotImplementedError

    def _excite_backward(self, dlogits: np.ndarray, cache: tuple) -> np.ndarray:
        raise NotImplementedError

    def _forward(self, x: np.ndarray) -> np.ndarray:
        n, c, _, _ = x.shape
        pooled, pool_cache = global_avg_pool_forward(x)  # squeeze: (N, C); refuses NaN or inf
        logits, excite_cache = self._excite_forward(pooled)  # excite: (N, C)
        gates, sigmoid_cache = sigmoid_forward(logits)  # (N, C)
        out, gate_cache = gate_forward(x, gates.reshape(n, c, 1, 1))  # scale: (N, C, H, W)
        self._cache = ChannelGateCache(
            pool_cache, excite_cache, pooled, logits, sigmoid_cache, gate_cache
        )
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        cache = self._cache
        n, c = cache.pooled.shape
        # scale: x's first use; a NaN or inf in dy shows in dgates and is refused here, before
        # any gradient changes. dx: (N, C, H, W), dgates: (N, C, 1, 1)
        dx, dgates = gate_backward(dout, cache.gate_cache, dout_name="dy")
        dlogits = sigmoid_backward(dgates.reshape(n, c), cache.sigmoid_cache)  # (N, C)
        dpooled = self._excite_backward(dlogits, cache.excite_cache)  # (N, C)
        # squeeze: x's second use, added into dx in place (the += of the two uses)
        return global_avg_pool_backward(dpooled, cache.pool_cache, add_to=dx)

    @property
    def channel_map(self) -> np.ndarray:
        """The gates of the last forward, shape (N, C, 1, 1)."""
        return self._last_cache("channel_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots):
        ``pooled`` (N, C), ``logits`` (N, C), ``channel_map`` (N, C, 1, 1), ``output``."""
        cache = self._last_cache("intermediates")
        return {
            "pooled": cache.pooled,
            "logits": cache.logits,
            "channel_map": cache.gate_cache.gate,
            "output": cache.gate_cache.x * cache.gate_cache.gate,
        }
