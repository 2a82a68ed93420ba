"""PyTorch references of BAM and of its two new pieces, written for npcbam's parity checks.

Used only to write the stored fixtures (``make_bam_fixtures.py``) and by the live parity test
(``tests/test_parity_bam_live.py``); npcbam never imports PyTorch.

- :class:`TorchBAM`: the Bottleneck Attention Module with the submodule names of the official
  ``MODELS/bam.py`` (Jongchan/attention-module): ``channel_att.gate_c`` (flatten, Linear
  ``gate_c_fc_0``, BatchNorm1d ``gate_c_bn_1``, ReLU, Linear ``gate_c_fc_final``) and
  ``spatial_att.gate_s`` (1×1 conv ``gate_s_conv_reduce0``, BatchNorm2d, ReLU, twice a 3×3
  conv dilated by 4 with padding 4 ``gate_s_conv_di_{i}`` with BatchNorm2d and ReLU, 1×1 conv
  ``gate_s_conv_final``). With ``gate="official"`` it computes the official arithmetic,
  ``x * (1 + sigmoid(M_c * M_s))`` with the channel pool ``avg_pool2d(x, H, stride=H)``
  (global on the square inputs it is used on here); the official file's line assigning the
  undefined name ``gate_activation`` is left out, as it must be for the module to run. With
  ``gate="paper"`` it computes the paper's ``x * (1 + sigmoid(M_c + M_s))`` with the mean
  over H×W.
- ``Conv2d`` (dilated) and ``BatchNorm1d``: PyTorch's own layers.

The helpers draw a random state in float32-exact values (:func:`random_state`, BatchNorm
statistics included), run a module with autograd and collect what the fixtures store
(:func:`torch_results`, which can also model rounding for :mod:`parity.conditioning`), and
measure how far a problem is from BAM's ReLU kinks and from a steep training-mode BatchNorm
(:func:`margins`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parity.conditioning import rounded
from parity.torch_official import _as_tensor  # floats in a dtype, integers as int64

MODES = ("train", "eval")


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class ChannelBranch(nn.Module):
    """M_c: the pooled (N, C) vector through FC, BatchNorm1d, ReLU, FC, as an (N, C, 1, 1)
    map. ``square_window`` pools as the official code does (an H×H window, stride H)."""

    def __init__(self, channels: int, hidden: int, square_window: bool) -> None:
        super().__init__()
        self.square_window = square_window
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", Flatten())
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(channels, hidden))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(hidden))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.square_window:
            pooled = F.avg_pool2d(x, x.shape[2], stride=x.shape[2])
        else:
            pooled = x.mean(dim=(2, 3))
        return self.gate_c(pooled)[:, :, None, None]


class SpatialBranch(nn.Module):
    """M_s: 1×1 reduce, two dilated 3×3 convolutions, 1×1 to one channel, as (N, 1, H, W)."""

    def __init__(self, channels: int, hidden: int, dilation: int) -> None:
        super().__init__()
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(channels, hidden, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(hidden))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(2):
            conv = nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation)
            self.gate_s.add_module(f"gate_s_conv_di_{i}", conv)
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(hidden))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x)


class TorchBAM(nn.Module):
    """BAM, paper or official form (see the module docstring).

    Parameters
    ----------
    channels, reduction : int
        C and r; the hidden width is ``C // r``.
    gate : {"paper", "official"}
    dilation : int
    """

    def __init__(
        self, channels: int, reduction: int = 16, gate: str = "paper", dilation: int = 4
    ) -> None:
        super().__init__()
        hidden = channels // reduction
        self.official = gate == "official"
        self.channel_att = ChannelBranch(channels, hidden, square_window=self.official)
        self.spatial_att = SpatialBranch(channels, hidden, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_map, spatial_map = self.channel_att(x), self.spatial_att(x)
        if self.official:
            return x * (1 + torch.sigmoid(channel_map * spatial_map))
        return x + x * torch.sigmoid(channel_map + spatial_map)


def build(name: str, config: Mapping) -> nn.Module:
    """A fresh float64 reference: ``"BAM"``, ``"Conv2d"`` or ``"BatchNorm1d"`` with the npcbam
    constructor's arguments."""
    if name == "BAM":
        module = TorchBAM(**config)
    elif name == "Conv2d":
        module = nn.Conv2d(**config)
    elif name == "BatchNorm1d":
        module = nn.BatchNorm1d(**config)
    else:
        raise ValueError(f"no reference named {name!r}")
    return module.to(torch.float64)


def is_batchnorm(layer: nn.Module) -> bool:
    return isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d))


def random_state(module: nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every state entry, exactly representable in float32 (held in float64), in the module's
    key order: weights normal with standard deviation 1/sqrt(fan_in), biases ``0.5 N(0, 1)``;
    BatchNorm weights ``1 + 0.3 N(0, 1)``, biases ``0.3 N(0, 1)``, running means
    ``0.2 N(0, 1)``, running variances ``U(0.5, 1.5)``, ``num_batches_tracked`` an int64 in
    [0, 100)."""
    norms = {name for name, layer in module.named_modules() if is_batchnorm(layer)}
    state = {}
    for key, tensor in module.state_dict().items():
        owner, _, field = key.rpartition(".")
        shape = tuple(tensor.shape)
        if field == "num_batches_tracked":
            state[key] = np.array(rng.integers(0, 100), dtype=np.int64)
            continue
        if owner in norms and field == "running_var":
            value = rng.uniform(0.5, 1.5, shape)
        elif owner in norms:
            offset, scale = {"weight": (1, 0.3), "bias": (0, 0.3), "running_mean": (0, 0.2)}[field]
            value = offset + scale * rng.standard_normal(shape)
        elif field == "bias":
            value = 0.5 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        state[key] = value.astype(np.float32).astype(np.float64)
    return state


def load(name: str, config: Mapping, state: Mapping, dtype, mode: str) -> nn.Module:
    """A reference in ``dtype`` holding ``state``, in ``mode`` ("train" or "eval")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    module = build(name, config).to(dtype)
    module.load_state_dict({key: _as_tensor(value, dtype) for key, value in state.items()})
    return module.train(mode == "train")


def torch_results(name, config, mode, state, x, dy, dtype, rounding=None) -> dict[str, np.ndarray]:
    """One forward of ``x`` and backward of ``dy`` with autograd: ``y``, ``dx``,
    ``grad/<key>`` for every parameter and ``after/<key>`` for every buffer after the forward
    (training mode: the running statistics moved with momentum 0.1 towards the batch mean and
    unbiased variance, the batch counted), in ``dtype`` (``num_batches_tracked`` int64).

    With ``rounding = (u, rng)``, a model of computing in a precision of unit roundoff u
    (:mod:`parity.conditioning`): every input (the state's floating entries, ``x``, ``dy``)
    and every layer's output and output gradient (each leaf module's, through hooks) is moved
    by a random relative amount of at most u before it is used."""
    if rounding is not None:
        unit, rng = rounding
        state = {key: rounded(value, unit, rng) for key, value in state.items()}
        x, dy = rounded(x, unit, rng), rounded(dy, unit, rng)
    module = load(name, config, state, dtype, mode)
    if rounding is not None:
        for layer in module.modules():
            if not any(True for _ in layer.children()):  # a leaf: conv, BatchNorm, ReLU, ...
                layer.register_forward_hook(_rounding_hook(*rounding))
    x_t = _as_tensor(x, dtype).requires_grad_()
    y = module(x_t)
    y.backward(_as_tensor(dy, dtype))
    results = {"y": y.detach().numpy(), "dx": x_t.grad.numpy()}
    for key, param in module.named_parameters():
        results[f"grad/{key}"] = param.grad.numpy()
    for key, buffer in module.named_buffers():
        results[f"after/{key}"] = buffer.detach().numpy().copy()
    return results


def _rounding_hook(unit: float, rng: np.random.Generator):
    """A forward hook that rounds a layer's output, and the gradient that later reaches it,
    in :func:`torch_results`'s model of rounding."""

    def moved(tensor: torch.Tensor) -> torch.Tensor:
        factor = 1 + unit * rng.uniform(-1, 1, tuple(tensor.shape))
        return tensor * torch.from_numpy(factor).to(tensor.dtype)

    def hook(layer, inputs, output):
        output = moved(output)
        output.register_hook(moved)  # the output gradient, in the backward
        return output

    return hook


def margins(name: str, config: Mapping, state: Mapping, x: np.ndarray, mode: str):
    """(the smallest |input| of a ReLU, the smallest batch standard deviation of a
    training-mode BatchNorm) at ``x``, in float64; ``inf`` where there is none. BAM's ReLUs
    each follow a BatchNorm, whose outputs are read with forward hooks."""
    module = load(name, config, state, torch.float64, mode)
    relu, spread = [math.inf], [math.inf]

    def record(layer, inputs, output):
        relu.append(float(output.abs().min()))
        if layer.training:
            dims = [0, *range(2, inputs[0].dim())]  # all but the features'
            std = inputs[0].var(dim=dims, unbiased=False).add(layer.eps).sqrt()
            spread.append(float(std.min()))

    if name == "BAM":
        for layer in module.modules():
            if is_batchnorm(layer):
                layer.register_forward_hook(record)
    elif name == "BatchNorm1d" and mode == "train":
        spread.append(float(np.sqrt(x.var(axis=0) + module.eps).min()))
    with torch.no_grad():
        module(_as_tensor(x, torch.float64))
    return min(relu), min(spread)
