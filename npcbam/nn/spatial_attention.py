r"""Spatial attention ("where"): which positions matter, from channel-pooled maps and a k×k conv
(options: a learned 1×1-conv descriptor instead of the pooling, BatchNorm before the sigmoid)."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from npcbam._checks import require_bool, require_finite, require_odd_kernel
from npcbam.nn.batchnorm import BatchNorm2d
from npcbam.nn.init import default_bias, default_weight, require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.ops.activations import SigmoidCache, sigmoid_backward, sigmoid_forward
from npcbam.ops.conv import Conv2dCache, conv2d_backward, conv2d_forward
from npcbam.ops.gating import (
    GateCache,
    concat_backward,
    concat_forward,
    gate_backward,
    gate_forward,
)
from npcbam.ops.pooling import (
    channel_avg_pool_backward,
    channel_avg_pool_forward,
    channel_max_pool_backward,
    channel_max_pool_forward,
    check_ties,
)


class SpatialMapCache(NamedTuple):
    descriptor_caches: tuple  # (max, mean, concat) caches, or the 1x1 conv's cache
    pooled: np.ndarray  # (N, 2, H, W) [max; mean] over channels, or (N, 1, H, W) 1x1 conv
    conv_cache: Conv2dCache
    logits: np.ndarray  # (N, 1, H, W), the conv output (after BatchNorm, if any)
    sigmoid_cache: SigmoidCache


class SpatialAttentionCache(NamedTuple):
    map_cache: SpatialMapCache
    gate_cache: GateCache


DESCRIPTORS = ("pool", "conv")
POOL_ORDERS = (("max", "avg"), ("avg", "max"))
# BatchNorm momentum of the spatial gate in the official code (Jongchan/attention-module,
# MODELS/cbam.py: BasicConv's BatchNorm2d(momentum=0.01)); timm keeps PyTorch's 0.1
OFFICIAL_BN_MOMENTUM = 0.01


def check_pool_order(pool_order, name: str = "pool_order") -> tuple[str, str]:
    """``pool_order`` as ("max", "avg") or ("avg", "max"), else ``ValueError`` naming it."""
    order = tuple(pool_order) if isinstance(pool_order, (tuple, list)) else None
    if order not in POOL_ORDERS:
        raise ValueError(
            f"{name}={pool_order!r}; expected ('max', 'avg') (seed code 1, the official code) "
            "or ('avg', 'max') (seed code 2, timm)"
        )
    return order


def check_descriptor(descriptor, name: str = "descriptor") -> str:
    """``descriptor`` if it is one of ``DESCRIPTORS``, else ``ValueError`` naming it."""
    if not isinstance(descriptor, str) or descriptor not in DESCRIPTORS:
        raise ValueError(f"{name}={descriptor!r}; expected one of {DESCRIPTORS}")
    return descriptor


def check_momentum(momentum, name: str) -> float:
    """A BatchNorm momentum in [0, 1], else ``ValueError`` naming ``name``."""
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {momentum!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {momentum!r}")
    return float(momentum)


def check_state_name(value, name: str) -> str:
    """A state-dict name for a layer: a non-empty string, else an error naming ``name``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


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
    descriptor : {"pool", "conv"}
        How the C channels are summarised: max and mean over channels (the paper's choice,
        default), or a learned 1×1 convolution C -> 1 without bias (the paper's alternative,
        state-dict name ``descriptor.weight`` (1, C, 1, 1)); then the k×k convolution has one
        input channel.
    channels : int, optional
        C, required by the "conv" descriptor.
    batchnorm : bool
        Convolution without bias, then ``BatchNorm2d(1)`` (child ``bn_name``), then the sigmoid,
        as the official code and timm do.
    bn_name : str
        State-dict prefix of that BatchNorm.
    bn_momentum : float
        Its running-statistics momentum, in [0, 1]: 0.01 by default, the official code's
        (timm keeps PyTorch's 0.1).
    max_ties : {"first", "split"}
        How the max over channels shares a tie's gradient: all to the first maximal channel
        (default; ``torch.max(dim)`` of the seed and the official code) or evenly among the
        tied channels (``torch.amax``, timm). See :mod:`npcbam.ops.pooling`.

    Attributes
    ----------
    spatial_map : ndarray, shape (N, 1, H, W)
        :math:`M_s` of the last forward.

    Notes
    -----
    Parameter (PyTorch name): ``conv.weight`` (1, 2, k, k) (or (1, 1, k, k) with the "conv"
    descriptor). Input and output: (N, C, H, W), any C (the C given with the "conv"
    descriptor), float32 or float64.
    """

    checks_dy_first = True  # see Module.checks_dy_first

    def __init__(
        self,
        kernel_size: int = 7,
        seed=None,
        *,
        pool_order: tuple[str, str] = ("max", "avg"),
        bias: bool = False,
        conv_name: str = "conv",
        descriptor: str = "pool",
        channels: int | None = None,
        batchnorm: bool = False,
        bn_name: str = "bn",
        bn_momentum: float = OFFICIAL_BN_MOMENTUM,
        max_ties: str = "first",
    ) -> None:
        super().__init__()
        self.kernel_size = require_odd_kernel(require_size(kernel_size, "kernel_size"))
        pool_order = check_pool_order(pool_order)
        descriptor = check_descriptor(descriptor)
        bias, batchnorm = require_bool(bias, "bias"), require_bool(batchnorm, "batchnorm")
        conv_name = check_state_name(conv_name, "conv_name")
        bn_name = check_state_name(bn_name, "bn_name")
        bn_momentum = check_momentum(bn_momentum, "bn_momentum")
        self.max_ties = check_ties(max_ties)
        if descriptor == "conv" and channels is None:
            raise ValueError("descriptor='conv' (a learned 1x1 conv C -> 1) needs channels=C")
        if batchnorm and bias:
            raise ValueError(
                "bias=True with batchnorm=True: BatchNorm subtracts the batch mean, which "
                "removes a conv bias; use one or the other"
            )
        self.max_first = pool_order == ("max", "avg")
        self.descriptor, self.has_bias = descriptor, bias
        self.channels = None if channels is None else require_size(channels, "channels")
        self._weight_name, self._bias_name = f"{conv_name}.weight", f"{conv_name}.bias"
        rng = rng_from_seed(seed)
        in_maps = 2 if descriptor == "pool" else 1
        if descriptor == "conv":
            shape = (1, self.channels, 1, 1)
            self.register_parameter("descriptor.weight", default_weight(shape, rng))
        shape = (1, in_maps, self.kernel_size, self.kernel_size)
        self.register_parameter(self._weight_name, default_weight(shape, rng))
        if bias:
            fan_in = in_maps * self.kernel_size**2
            self.register_parameter(self._bias_name, default_bias(1, fan_in, rng))
        self.bn = BatchNorm2d(1, momentum=bn_momentum) if batchnorm else None
        if self.bn is not None:
            self.register_child(bn_name, self.bn)
        self._map_cache: SpatialMapCache | None = None

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.channels)

    def _describe(self, x: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The (N, 2, H, W) [max; mean] over channels, or the (N, 1, H, W) learned 1x1 conv."""
        if self.descriptor == "conv":
            require_finite(x, "x")
            weight = self.param_as("descriptor.weight", x.dtype)  # (1, C, 1, 1)
            pooled, conv_cache = conv2d_forward(x, weight)  # (N, 1, H, W)
            return pooled, (conv_cache,)
        mx, max_cache = channel_max_pool_forward(x, ties=self.max_ties)  # (N, 1, H, W)
        avg, avg_cache = channel_avg_pool_forward(x)  # (N, 1, H, W)
        require_finite(x, "x", summary=avg)  # a NaN or inf anywhere in x shows in its means
        parts = [mx, avg] if self.max_first else [avg, mx]
        pooled, concat_cache = concat_forward(parts, axis=1)  # (N, 2, H, W)
        return pooled, (max_cache, avg_cache, concat_cache)

    def _describe_backward(self, dpooled: np.ndarray, caches: tuple, add_to: np.ndarray):
        if self.descriptor == "conv":
            dx, dweight, _ = conv2d_backward(dpooled, caches[0])
            self.accumulate_grad("descriptor.weight", dweight)
            add_to += dx
            return
        max_cache, avg_cache, concat_cache = caches
        dparts = concat_backward(dpooled, concat_cache)  # 2 x (N, 1, H, W)
        dmx, davg = dparts if self.max_first else dparts[::-1]
        channel_max_pool_backward(dmx, max_cache, add_to=add_to)  # max over channels
        channel_avg_pool_backward(davg, avg_cache, add_to=add_to)  # mean over channels

    def _kink_cache(self):
        # the map's cache: also current when only map_forward ran (CBAM's parallel arrangement)
        return self._map_cache

    def map_forward(self, x: np.ndarray) -> np.ndarray:
        r"""The spatial map :math:`M_s(x)` alone, (N, 1, H, W); caches what
        :meth:`map_backward` needs (for CBAM's parallel arrangement, which gates elsewhere)."""
        weight = self.param_as(self._weight_name, x.dtype)  # (1, 2 or 1, k, k)
        bias = self.param_as(self._bias_name, x.dtype) if self.has_bias else None  # (1,)
        pooled, descriptor_caches = self._describe(x)
        logits, conv_cache = conv2d_forward(pooled, weight, bias, padding=self.kernel_size // 2)
        if self.bn is not None:
            logits = self.bn.forward(logits)  # (N, 1, H, W), normalised
        spatial_map, sigmoid_cache = sigmoid_forward(logits)  # (N, 1, H, W)
        self._map_cache = SpatialMapCache(
            descriptor_caches, pooled, conv_cache, logits, sigmoid_cache
        )
        return spatial_map

    def map_backward(self, dspatial_map: np.ndarray, add_to: np.ndarray) -> np.ndarray:
        """Backward of :meth:`map_forward`: adds dL/dx into ``add_to`` (and returns it) and
        accumulates the parameters' gradients."""
        cache = self._map_cache
        dlogits = sigmoid_backward(dspatial_map, cache.sigmoid_cache)  # (N, 1, H, W)
        if self.bn is not None:
            dlogits = self.bn.backward(dlogits)
        dpooled, dweight, dbias = conv2d_backward(dlogits, cache.conv_cache)
        self.accumulate_grad(self._weight_name, dweight)
        if self.has_bias:
            self.accumulate_grad(self._bias_name, dbias)
        # dx += the gradients of x's uses by the descriptor, added in place
        self._describe_backward(dpooled, cache.descriptor_caches, add_to)
        return add_to

    def _forward(self, x: np.ndarray) -> np.ndarray:
        spatial_map = self.map_forward(x)  # M_s, (N, 1, H, W)
        out, gate_cache = gate_forward(x, spatial_map)  # (N, C, H, W)
        self._cache = SpatialAttentionCache(self._map_cache, gate_cache)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        self._map_cache = self._cache.map_cache
        # x's use by the gate; a non-finite dy is refused there, before any gradient changes
        dx, dspatial_map = gate_backward(dout, self._cache.gate_cache, dout_name="dy")
        return self.map_backward(dspatial_map, add_to=dx)  # x's uses by the descriptor

    @property
    def spatial_map(self) -> np.ndarray:
        """:math:`M_s` of the last forward, shape (N, 1, H, W)."""
        return self._last_cache("spatial_map").gate_cache.gate

    def intermediates(self) -> dict[str, np.ndarray]:
        """Every named step of the last forward, in order (for tracing and plots)."""
        cache = self._last_cache("intermediates")
        pooled = cache.map_cache.pooled
        steps = {}
        if self.descriptor == "pool":
            steps["max_over_channels"] = pooled[:, :1] if self.max_first else pooled[:, 1:]
            steps["mean_over_channels"] = pooled[:, 1:] if self.max_first else pooled[:, :1]
        else:
            steps["descriptor"] = pooled  # (N, 1, H, W), the learned 1x1 conv
        steps["conv_output"] = cache.map_cache.logits  # (N, 1, H, W)
        steps["spatial_map"] = cache.gate_cache.gate  # (N, 1, H, W)
        steps["output"] = cache.gate_cache.x * cache.gate_cache.gate  # (N, C, H, W)
        return steps
