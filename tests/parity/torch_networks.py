"""PyTorch references of the seed's three networks, written for npcbam's parity checks.

Used only to write the stored network fixtures (``make_network_fixtures.py``) and by the live
network parity test (``tests/test_parity_networks_live.py``); npcbam never imports PyTorch.

- :class:`TorchConvCBAM` is seed code 2: a biased 3×3 convolution, then CBAM with a biased
  ``Linear`` shared MLP of hidden width ``int(out_channels * r)``, the channel pools
  concatenated in the order (mean, max), a biased 7×7 spatial convolution, and a residual sum
  with the convolution's output.
- :class:`TorchResidualBlockCBAM` is the residual block the seed's backbone uses without
  defining it: conv-BN-ReLU-conv-BN, code-1 CBAM (:class:`~parity.torch_reference.TorchCBAM`),
  plus a shortcut, then ReLU.
- :class:`TorchResnetFPN4CBAM` is the seed's ``ResnetFPN4_CBAM`` built from
  :class:`TorchResidualBlockCBAM`: four stages and four transposed-convolution branches whose
  outputs are concatenated, (N, c, H, W) -> (N, 10c, H, W) for H and W divisible by 8.

The helpers run a network with autograd and collect everything the fixtures store
(:func:`torch_network_results`), draw a random state in float32-exact values
(:func:`random_state`), measure how far a problem is from a kink (:func:`kink_margin`), and
compare two sets of results (:func:`network_errors`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from helpers import relative_error
from torch import nn

from parity.torch_reference import TorchCBAM


class TorchConvCBAM(nn.Module):
    """Seed code 2: ``conv1`` (3×3, padding 1, bias), then CBAM on its output, plus that output.

    State-dict keys: ``conv1.{weight,bias}``, ``shared_mlp_cbam_1.{weight,bias}``
    (``Linear(out, int(out * r))``), ``shared_mlp_cbam_2.{weight,bias}``
    (``Linear(int(out * r), out)``), ``conv_cbam.{weight,bias}`` (2 -> 1, 7×7, padding 3).

    One departure from the seed: it repeats the spatial map over the *input* channel count
    (``Fs.repeat((1, C, 1, 1))`` with ``C`` read from ``x`` before ``conv1``), which fails
    whenever ``in_channels != out_channels``. The map is meant to gate every channel of ``Fc``,
    which has ``out_channels``; here it is broadcast over them. Where the seed runs
    (``in_channels == out_channels``) the two are the same computation.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of ``conv1`` (and of the output).
    r : float
        Ratio of the shared MLP's hidden width, ``int(out_channels * r)``.
    """

    def __init__(self, in_channels: int, out_channels: int, r: float = 0.5) -> None:
        super().__init__()
        hidden = int(out_channels * r)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.shared_mlp_cbam_1 = nn.Linear(out_channels, hidden)
        self.shared_mlp_cbam_2 = nn.Linear(hidden, out_channels)
        self.conv_cbam = nn.Conv2d(2, 1, kernel_size=7, stride=1, padding=3)
        self.relu = nn.ReLU()

    def shared_mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        """The shared MLP on pooled features (N, out): Linear, ReLU, Linear."""
        return self.shared_mlp_cbam_2(self.relu(self.shared_mlp_cbam_1(pooled)))

    def channel_gate(self, features: torch.Tensor) -> torch.Tensor:
        """M_c, shape (N, out, 1, 1): sigmoid of the shared MLP on the global mean plus on the
        global max of ``features`` (the seed's nested reductions over W, then H)."""
        pooled_avg = features.mean(dim=-1).mean(dim=-1)
        pooled_max = features.max(dim=-1)[0].max(dim=-1)[0]
        gate = torch.sigmoid(self.shared_mlp(pooled_avg) + self.shared_mlp(pooled_max))
        return gate[:, :, None, None]

    def spatial_gate(self, refined: torch.Tensor) -> torch.Tensor:
        """M_s, shape (N, 1, H, W): sigmoid of ``conv_cbam`` on [mean over C; max over C]."""
        channel_avg = refined.mean(dim=1, keepdim=True)
        channel_max = refined.max(dim=1, keepdim=True)[0]
        return torch.sigmoid(self.conv_cbam(torch.cat((channel_avg, channel_max), dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv1(x)
        refined = features * self.channel_gate(features)  # Fc
        return features + refined * self.spatial_gate(refined)  # x + Fs (broadcast over out)


class TorchResidualBlockCBAM(nn.Module):
    """A residual block with code-1 CBAM before the sum.

    ``relu(cbam(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))`` with bias-free 3×3
    convolutions (``conv1`` has the stride) and BatchNorm2d. The shortcut is the identity
    when ``in_channels == out_channels`` and ``stride == 1``, else a bias-free 1×1
    convolution with the stride followed by BatchNorm2d.

    State-dict keys: ``conv1.weight``, ``bn1.*``, ``conv2.weight``, ``bn2.*``,
    ``cbam.mlp.0.weight``, ``cbam.mlp.2.weight``, ``cbam.conv.weight`` and, for the projection
    shortcut only, ``shortcut.0.weight`` and ``shortcut.1.*``, where ``*`` is ``weight``,
    ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Stride of ``conv1`` and of the projection shortcut.
    reduction, kernel_size : int
        CBAM's hidden width is ``out_channels // reduction``; its spatial kernel is
        ``kernel_size`` (odd, padded by ``kernel_size // 2``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        reduction: int = 16,
        kernel_size: int = 7,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.cbam = TorchCBAM(out_channels, reduction, kernel_size)
        self.relu = nn.ReLU()
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.cbam(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class TorchResnetFPN4CBAM(nn.Module):
    """The seed's ``ResnetFPN4_CBAM`` with :class:`TorchResidualBlockCBAM` as its block.

    Four stages ``block1`` .. ``block4``, each ``Sequential(conv 3×3 with bias, BatchNorm2d,
    residual block(s))``: c -> c (stride 1, one block), c -> c (stride 2, two blocks),
    c -> 2c (stride 2, two blocks), 2c -> 4c (stride 2, two blocks); the residual blocks keep
    their channels and stride 1. Four biased transposed convolutions ``up1`` .. ``up4`` bring
    each stage's output back to H × W with 2c, 2c, 2c and 4c channels; the output is their
    concatenation, (N, 10c, H, W). State-dict keys as in the seed: ``block1.0.weight``,
    ``block1.0.bias``, ``block1.1.*``, ``block1.2.<residual block key>``, ..., ``up4.bias``.

    Parameters
    ----------
    num_channels : int
        c, the input's channel count.
    reduction, kernel_size : int
        Passed to every residual block's CBAM.
    """

    def __init__(self, num_channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        c = num_channels

        def stage(in_channels, out_channels, stride, blocks):
            return nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(out_channels),
                *[
                    TorchResidualBlockCBAM(
                        out_channels, out_channels, reduction=reduction, kernel_size=kernel_size
                    )
                    for _ in range(blocks)
                ],
            )

        self.block1 = stage(c, c, 1, 1)
        self.block2 = stage(c, c, 2, 2)
        self.block3 = stage(c, 2 * c, 2, 2)
        self.block4 = stage(2 * c, 4 * c, 2, 2)
        self.up1 = nn.ConvTranspose2d(c, 2 * c, kernel_size=3, stride=1, padding=1)
        self.up2 = nn.ConvTranspose2d(
            c, 2 * c, kernel_size=3, stride=2, padding=1, output_padding=(1, 1)
        )
        self.up3 = nn.ConvTranspose2d(
            2 * c, 2 * c, kernel_size=3, stride=4, padding=1, output_padding=(3, 3)
        )
        self.up4 = nn.ConvTranspose2d(
            4 * c, 4 * c, kernel_size=5, stride=8, padding=1, output_padding=(5, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block1(x)
        up_1 = self.up1(x)
        x = self.block2(x)
        up_2 = self.up2(x)
        x = self.block3(x)
        up_3 = self.up3(x)
        x = self.block4(x)
        up_4 = self.up4(x)
        return torch.cat((up_1, up_2, up_3, up_4), 1)


NETWORKS = {
    "ConvCBAM": TorchConvCBAM,
    "ResidualBlockCBAM": TorchResidualBlockCBAM,
    "ResnetFPN4CBAM": TorchResnetFPN4CBAM,
}
MODES = ("train", "eval")


def build(network: str, config: Mapping[str, float]) -> nn.Module:
    """A fresh float64 torch network named as in :data:`NETWORKS` (the npcbam class name)."""
    return NETWORKS[network](**config).to(torch.float64)


def _float32_exact(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float32, held in float64: the same numbers in either dtype."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def random_state(module: nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A random full state dict for ``module`` (parameters and buffers, in its key order).

    Convolution and linear weights are normal with standard deviation 1/sqrt(fan_in) (for a
    transposed convolution the fan-in of one output pixel, ``in_channels`` times the kernel
    taps that reach it); biases ``0.1 N(0, 1)``. BatchNorm: weight ``1 + 0.1 N(0, 1)``, bias
    and running mean ``0.1 N(0, 1)``, running variance uniform on [0.5, 1.5],
    ``num_batches_tracked`` a random int64. Every float is exactly representable in float32
    (returned as float64), so float32 and float64 runs solve the same problem.
    """
    state = {}
    for prefix, sub in module.named_modules():
        entries = [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]
        for name, tensor in entries:
            key = f"{prefix}.{name}" if prefix else name
            shape = tuple(tensor.shape)
            if isinstance(sub, nn.BatchNorm2d) and name == "weight":
                value = 1 + 0.1 * rng.standard_normal(shape)
            elif isinstance(sub, nn.BatchNorm2d) and name == "running_var":
                value = rng.uniform(0.5, 1.5, shape)
            elif name == "num_batches_tracked":
                value = rng.integers(0, 1000, dtype=np.int64)
            elif name in ("bias", "running_mean"):
                value = 0.1 * rng.standard_normal(shape)
            elif isinstance(sub, nn.ConvTranspose2d):
                taps = math.prod(math.ceil(k / s) for k, s in zip(sub.kernel_size, sub.stride))
                value = rng.standard_normal(shape) / math.sqrt(sub.in_channels * taps)
            elif isinstance(sub, (nn.Conv2d, nn.Linear)):
                value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
            else:
                raise TypeError(f"no random initialisation for {key} of {type(sub).__name__}")
            state[key] = np.array(value) if name == "num_batches_tracked" else _float32_exact(value)
    return {key: state[key] for key in module.state_dict()}


def _as_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    """A torch copy of ``array``: floats in ``dtype``, integers as int64."""
    array = np.array(array, order="C")
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(array).to(dtype)


def load(
    network: str, config: Mapping[str, float], state: Mapping[str, np.ndarray], dtype, mode: str
) -> nn.Module:
    """A torch network in ``dtype`` holding ``state``, in ``mode`` ("train" or "eval")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    module = build(network, config).to(dtype)
    module.load_state_dict({key: _as_tensor(value, dtype) for key, value in state.items()})
    return module.train(mode == "train")


def torch_network_results(
    network: str,
    config: Mapping[str, float],
    mode: str,
    state: Mapping[str, np.ndarray],
    x: np.ndarray,
    dy: np.ndarray,
    dtype: torch.dtype,
) -> dict[str, np.ndarray]:
    """One forward of ``x`` and backward of ``dy`` through a network with autograd.

    Parameters
    ----------
    network : str
        ``"ConvCBAM"``, ``"ResidualBlockCBAM"`` or ``"ResnetFPN4CBAM"``.
    config : mapping
        The constructor's keyword arguments.
    mode : str
        ``"train"`` (BatchNorm uses batch statistics and updates its running ones, momentum
        0.1, unbiased variance) or ``"eval"`` (BatchNorm uses the running statistics).
    state : mapping of str to ndarray
        The full state dict, buffers included.
    x, dy : ndarray
        Input and upstream gradient, converted to ``dtype``.
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64``.

    Returns
    -------
    dict of str to ndarray
        ``y``, ``dx``, ``grad/<name>`` for every parameter and ``after/<name>`` for every
        buffer after the forward, all in ``dtype`` except ``num_batches_tracked`` (int64).
    """
    module = load(network, config, state, dtype, mode)
    x_t = _as_tensor(x, dtype).requires_grad_()
    y = module(x_t)
    y.backward(_as_tensor(dy, dtype))
    result = {"y": y.detach().numpy(), "dx": x_t.grad.numpy()}
    for name, param in module.named_parameters():
        result[f"grad/{name}"] = param.grad.numpy()
    for name, buffer in module.named_buffers():
        result[f"after/{name}"] = buffer.detach().numpy().copy()
    return result


def _top2_gap(values: torch.Tensor, dim) -> float:
    """Smallest gap between the largest and the second-largest entry along ``dim`` (a dim or
    a tuple of trailing dims, flattened): the margin of a max from switching winner."""
    if isinstance(dim, tuple):
        values, dim = values.flatten(start_dim=dim[0]), dim[0]
    if values.shape[dim] < 2:
        return math.inf
    top = values.topk(2, dim=dim).values
    return float((top.select(dim, 0) - top.select(dim, 1)).min())


def kink_margin(
    network: str,
    config: Mapping[str, float],
    mode: str,
    state: Mapping[str, np.ndarray],
    x: np.ndarray,
) -> float:
    """How far a problem is from every kink of the network, in float64.

    The smallest of: |input| of every ReLU (the residual blocks' and the shared MLPs'), and
    the top-2 gap of every max (each CBAM's global max over H × W of its input and its max over
    channels of the channel-gated map). Activations are of order 1, so a margin well above
    float32 rounding means no rounding difference can switch a winner or a ReLU mask.
    """
    module = load(network, config, state, torch.float64, mode)
    margins = [math.inf]

    def relu_hook(_module, inputs):
        margins.append(float(inputs[0].abs().min()))

    def cbam_hook(sub, inputs):
        (features,) = inputs
        margins.append(_top2_gap(features, (2, 3)))
        margins.append(_top2_gap(features * sub.channel_gate(features), 1))

    def conv_cbam_hook(sub, inputs):
        features = sub.conv1(inputs[0])
        margins.append(_top2_gap(features, (2, 3)))
        margins.append(_top2_gap(features * sub.channel_gate(features), 1))

    for sub in module.modules():
        if isinstance(sub, nn.ReLU):
            sub.register_forward_pre_hook(relu_hook)
        elif isinstance(sub, TorchCBAM):
            sub.register_forward_pre_hook(cbam_hook)
        elif isinstance(sub, TorchConvCBAM):
            sub.register_forward_pre_hook(conv_cbam_hook)
    with torch.no_grad():
        module(_as_tensor(x, torch.float64))
    return min(margins)


def vanishing_gradient_scale(network: str, mode: str, key: str) -> str | None:
    """For a gradient that is zero in exact arithmetic, the key whose scale measures its error.

    In train mode a bias added right before BatchNorm is removed again by the batch mean, so
    its gradient is zero up to rounding: the stage convolutions ``block<i>.0`` of
    ``ResnetFPN4CBAM``. A relative error against a rounding-level value means nothing; such a
    gradient's error is divided by the largest gradient of the same layer's weight instead.
    Returns that weight's ``grad/...`` key, or None for every other key.
    """
    parts = key.split(".")
    if (
        network == "ResnetFPN4CBAM"
        and mode == "train"
        and len(parts) == 3
        and parts[0] in {f"grad/block{i}" for i in range(1, 5)}
        and parts[1:] == ["0", "bias"]
    ):
        return f"{parts[0]}.0.weight"
    return None


def network_errors(
    network: str,
    mode: str,
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
) -> dict[str, float]:
    """The error of every entry of ``expected`` (results as :func:`torch_network_results`
    returns them) in ``actual``: the normwise relative error
    ``max|actual - expected| / max|expected|`` (:func:`helpers.relative_error`), with the
    scale of :func:`vanishing_gradient_scale` where it applies; integers (the
    ``num_batches_tracked`` counters) give 0 if equal, else inf."""
    errors = {}
    for key, value in expected.items():
        value = np.asarray(value)
        scale_key = vanishing_gradient_scale(network, mode, key)
        if np.issubdtype(value.dtype, np.integer):
            errors[key] = 0.0 if np.array_equal(actual[key], value) else math.inf
        elif scale_key is not None:
            scale = np.abs(np.asarray(expected[scale_key], np.float64)).max()
            diff = np.abs(np.asarray(actual[key], np.float64) - value).max()
            errors[key] = float(diff / scale)
        else:
            errors[key] = relative_error(actual[key], value)
    return errors
