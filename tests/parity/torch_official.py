"""A PyTorch version of the CBAM module of the authors' code, written for npcbam's parity checks.

The official implementation (github.com/Jongchan/attention-module, ``MODELS/cbam.py``) is
rewritten here from its documented behaviour, with the same module tree and therefore the same
``state_dict`` keys:

- :class:`ChannelGate`: for each pool type, a global pooling over the whole H × W map to
  (N, C, 1, 1), then one shared ``mlp = Sequential(Flatten, Linear(C, C // r), ReLU,
  Linear(C // r, C))`` (keys ``mlp.1.*`` and ``mlp.3.*``); the MLP outputs are summed, passed
  through a sigmoid and multiply the input. The pool types are ``"avg"`` and ``"max"``
  (``avg_pool2d`` / ``max_pool2d`` with a window and stride equal to the map), ``"lp"``
  (``lp_pool2d`` with p = 2 over the map: the square root of the sum of squares) and
  ``"lse"`` (log-sum-exp over the map, computed as ``max + log(sum(exp(x - max)))``).
- :class:`SpatialGate`: :class:`ChannelPool` concatenates the max and the mean over channels
  (in that order), then :class:`BasicConv` (a bias-free 7×7 convolution 2 -> 1, padding 3,
  then ``BatchNorm2d(1, eps=1e-5, momentum=0.01)``, no ReLU; keys ``spatial.conv.weight``
  and ``spatial.bn.*``), then a sigmoid that multiplies the input.
- :class:`CBAM` ``(gate_channels, reduction_ratio=16, pool_types=("avg", "max"),
  no_spatial=False)``: ``ChannelGate``, then ``SpatialGate`` unless ``no_spatial``.

The helpers run the module with autograd and collect what the fixtures store
(:func:`torch_official_results`), measure how far a problem is from a kink
(:func:`kink_margin`) and compare two sets of results (:func:`official_errors`). Used only by
``make_official_fixtures.py`` and ``tests/test_parity_official_live.py``; npcbam never imports
PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from helpers import relative_error
from torch import nn

from parity.torch_networks import random_state

__all__ = [
    "CBAM",
    "MODES",
    "POOL_TYPES",
    "BasicConv",
    "ChannelGate",
    "ChannelPool",
    "Flatten",
    "SpatialGate",
    "build",
    "kink_margin",
    "load",
    "official_errors",
    "random_state",
    "torch_official_results",
]

POOL_TYPES = ("avg", "max", "lp", "lse")
MODES = ("train", "eval")


class Flatten(nn.Module):
    """(N, C, 1, 1) -> (N, C): the first, parameter-free entry of the shared MLP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


def logsumexp_2d(x: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over each channel's H × W values, (N, C, H, W) -> (N, C, 1), shifted by the
    channel's maximum so that no exponent is positive."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    peak = flat.max(dim=2, keepdim=True).values
    return peak + (flat - peak).exp().sum(dim=2, keepdim=True).log()


def global_pool(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """One global pooling of the channel gate; the MLP's Flatten accepts (N, C, 1, 1) and
    (N, C, 1) alike."""
    window = (x.shape[2], x.shape[3])
    if pool_type == "avg":
        return F.avg_pool2d(x, window, stride=window)
    if pool_type == "max":
        return F.max_pool2d(x, window, stride=window)
    if pool_type == "lp":
        return F.lp_pool2d(x, 2, window, stride=window)
    if pool_type == "lse":
        return logsumexp_2d(x)
    raise ValueError(f"pool type {pool_type!r}; expected one of {POOL_TYPES}")


class ChannelGate(nn.Module):
    """Channel attention: ``x * sigmoid(sum over pool types of mlp(pool(x)))``."""

    def __init__(self, gate_channels: int, reduction_ratio: int = 16, pool_types=("avg", "max")):
        super().__init__()
        self.gate_channels = gate_channels
        self.mlp = nn.Sequential(
            Flatten(),
            nn.Linear(gate_channels, gate_channels // reduction_ratio),
            nn.ReLU(),
            nn.Linear(gate_channels // reduction_ratio, gate_channels),
        )
        self.pool_types = tuple(pool_types)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = None
        for pool_type in self.pool_types:
            out = self.mlp(global_pool(x, pool_type))  # (N, C), the same weights every time
            logits = out if logits is None else logits + out
        return x * torch.sigmoid(logits)[:, :, None, None]


class ChannelPool(nn.Module):
    """(N, C, H, W) -> (N, 2, H, W): [max over channels; mean over channels]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)), dim=1)


class BasicConv(nn.Module):
    """Convolution, then (optionally) BatchNorm and ReLU; the spatial gate uses it with a
    bias-free convolution, BatchNorm (eps 1e-5, momentum 0.01) and no ReLU."""

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        relu: bool = True,
        bn: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=bias
        )
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class SpatialGate(nn.Module):
    """Spatial attention: ``x * sigmoid(bn(conv7x7([max_c x; mean_c x])))``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(
            2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, relu=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    """The official CBAM: ``ChannelGate``, then ``SpatialGate`` unless ``no_spatial``."""

    def __init__(
        self,
        gate_channels: int,
        reduction_ratio: int = 16,
        pool_types=("avg", "max"),
        no_spatial: bool = False,
    ):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ChannelGate(x)
        if not self.no_spatial:
            out = self.SpatialGate(out)
        return out


def _config(config: Mapping) -> dict:
    """Constructor arguments with ``pool_types`` as a tuple of str and ``no_spatial`` a bool
    (fixtures store them as NumPy arrays)."""
    return {
        "gate_channels": int(config["gate_channels"]),
        "reduction_ratio": int(config["reduction_ratio"]),
        "pool_types": tuple(str(kind) for kind in np.atleast_1d(config["pool_types"])),
        "no_spatial": bool(config["no_spatial"]),
    }


def build(config: Mapping) -> CBAM:
    """A fresh float64 :class:`CBAM` (PyTorch's default initialisation)."""
    return CBAM(**_config(config)).to(torch.float64)


def _as_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    """A torch copy of ``array``: floats in ``dtype``, integers as int64."""
    array = np.array(array, order="C")
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(array).to(dtype)


def load(config: Mapping, state: Mapping[str, np.ndarray], dtype, mode: str) -> CBAM:
    """A :class:`CBAM` in ``dtype`` holding ``state``, in ``mode`` ("train" or "eval")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    module = build(config).to(dtype)
    module.load_state_dict({key: _as_tensor(value, dtype) for key, value in state.items()})
    return module.train(mode == "train")


def torch_official_results(
    config: Mapping,
    mode: str,
    state: Mapping[str, np.ndarray],
    x: np.ndarray,
    dy: np.ndarray,
    dtype: torch.dtype,
) -> dict[str, np.ndarray]:
    """One forward of ``x`` and backward of ``dy`` with autograd.

    Returns ``y``, ``dx``, ``grad/<name>`` for every parameter and ``after/<name>`` for every
    buffer after the forward (in train mode the spatial BatchNorm updates its running
    statistics with momentum 0.01 and the unbiased batch variance, and counts the batch), all
    in ``dtype`` except ``num_batches_tracked`` (int64).
    """
    module = load(config, state, dtype, mode)
    x_t = _as_tensor(x, dtype).requires_grad_()
    y = module(x_t)
    y.backward(_as_tensor(dy, dtype))
    result = {"y": y.detach().numpy(), "dx": x_t.grad.numpy()}
    for name, param in module.named_parameters():
        result[f"grad/{name}"] = param.grad.numpy()
    for name, buffer in module.named_buffers():
        result[f"after/{name}"] = buffer.detach().numpy().copy()
    return result


def _top2_gap(values: torch.Tensor, start_dim: int, end_dim: int) -> float:
    """Smallest gap between the two largest entries over the flattened dims
    ``start_dim..end_dim`` (inf with a single entry)."""
    values = values.flatten(start_dim, end_dim)
    if values.shape[start_dim] < 2:
        return math.inf
    top = values.topk(2, dim=start_dim).values
    return float((top.select(start_dim, 0) - top.select(start_dim, 1)).min())


def kink_margin(config: Mapping, state: Mapping[str, np.ndarray], x: np.ndarray) -> float:
    """How far a problem is from every kink of the module, in float64 (the same in both modes:
    the kinks all come before the BatchNorm).

    The smallest of: |input| of the shared MLP's ReLU in every pooled branch, the top-2 gap of
    the global max over H × W (with "max" pooling), the smallest channel L2 norm (with "lp"
    pooling: the norm's kink is at 0) and the top-2 gap of the max over channels of the
    channel-gated map (with the spatial gate).
    """
    module = load(config, state, torch.float64, "eval")
    pool_types = module.ChannelGate.pool_types
    x_t = _as_tensor(x, torch.float64)
    margins = [math.inf]
    if "max" in pool_types:
        margins.append(_top2_gap(x_t, 2, 3))
    if "lp" in pool_types:
        margins.append(float(x_t.flatten(2).norm(dim=2).min()))
    hook = module.ChannelGate.mlp[2].register_forward_pre_hook(
        lambda _module, inputs: margins.append(float(inputs[0].abs().min()))
    )
    with torch.no_grad():
        refined = module.ChannelGate(x_t)
    hook.remove()
    if not module.no_spatial:
        margins.append(_top2_gap(refined, 1, 1))
    return min(margins)


def official_errors(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]
) -> dict[str, float]:
    """The error of each result against ``expected``: ``max|actual - expected| /
    max|expected|`` (:func:`helpers.relative_error`); ``num_batches_tracked`` must be equal
    (0 if so, inf if not)."""
    if set(actual) != set(expected):
        raise ValueError(f"different results: {sorted(set(actual) ^ set(expected))}")
    errors = {}
    for key, value in expected.items():
        if key.endswith("num_batches_tracked"):
            errors[key] = 0.0 if np.array_equal(actual[key], value) else math.inf
        else:
            errors[key] = relative_error(actual[key], value)
    return errors
