"""PyTorch references of SE and ECA, written for npcbam's parity checks.

Used only to write the stored fixtures (``make_family_fixtures.py``) and by the live parity
test (``tests/test_parity_family_live.py``); npcbam never imports PyTorch.

- :class:`TorchSE`: squeeze-and-excitation as timm's ``SEModule`` computes it with its
  defaults: the mean over H×W, a biased 1×1 convolution ``fc1`` to the hidden width, ReLU, a
  biased 1×1 convolution ``fc2`` back to C, sigmoid, and the input scaled by the gates.
- :class:`TorchECA`: efficient channel attention as the official ``eca_layer`` computes it:
  the mean over H×W seen as a one-channel sequence of length C, a bias-free
  ``Conv1d(1, 1, k, padding=(k - 1) // 2)`` named ``conv``, sigmoid, and the input scaled.

The helpers draw a random state in float32-exact values (:func:`random_state`), run a module
with autograd and collect what the fixtures store (:func:`torch_family_results`), and measure
how far a problem is from SE's ReLU kink (:func:`kink_margin`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


class TorchSE(nn.Module):
    """SE with state-dict keys ``fc1.weight`` (hidden, C, 1, 1), ``fc1.bias``, ``fc2.weight``
    (C, hidden, 1, 1), ``fc2.bias``.

    Parameters
    ----------
    channels, reduction : int
        C and r; the hidden width is ``C // r`` unless ``hidden`` is given.
    hidden : int, optional
        The hidden width.
    """

    def __init__(self, channels: int, reduction: int = 16, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        gates = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))  # (N, C, 1, 1)
        return x * gates


def paper_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's Eq. (12): t = int(|(log2 C + b) / gamma|), made odd by adding 1 when even."""
    t = int(abs((math.log(channels, 2) + b) / gamma))
    return t + 1 - t % 2


class TorchECA(nn.Module):
    """ECA with one state-dict key, ``conv.weight`` (1, 1, k).

    Parameters
    ----------
    channels : int
        C.
    kernel_size : int, optional
        k (odd); the paper's adaptive size (:func:`paper_kernel_size`) when omitted.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = kernel_size or paper_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        sequence = x.mean(dim=(2, 3)).reshape(n, 1, c)  # one channel, C steps
        gates = torch.sigmoid(self.conv(sequence)).reshape(n, c, 1, 1)
        return x * gates


MODULES = {"SE": TorchSE, "ECA": TorchECA}


def build(name: str, config: Mapping[str, int]) -> nn.Module:
    """A fresh float64 reference, named as the npcbam class (``"SE"`` or ``"ECA"``)."""
    return MODULES[name](**config).to(torch.float64)


def random_state(module: nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights normal with standard deviation 1/sqrt(fan_in), biases ``0.5 N(0, 1)``, all
    exactly representable in float32 (returned as float64), in the module's key order."""
    state = {}
    for key, tensor in module.state_dict().items():
        shape = tuple(tensor.shape)
        if key.endswith("bias"):
            value = 0.5 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        state[key] = value.astype(np.float32).astype(np.float64)
    return state


def _as_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(array, order="C")).to(dtype)


def load(name: str, config: Mapping[str, int], state: Mapping[str, np.ndarray], dtype):
    """A reference in ``dtype`` holding ``state``."""
    module = build(name, config).to(dtype)
    module.load_state_dict({key: _as_tensor(value, dtype) for key, value in state.items()})
    return module


def torch_family_results(
    name: str,
    config: Mapping[str, int],
    state: Mapping[str, np.ndarray],
    x: np.ndarray,
    dy: np.ndarray,
    dtype: torch.dtype,
) -> dict[str, np.ndarray]:
    """One forward of ``x`` and backward of ``dy`` with autograd: ``y``, ``dx`` and
    ``grad/<key>`` for every parameter, all in ``dtype``."""
    module = load(name, config, state, dtype)
    x_t = _as_tensor(x, dtype).requires_grad_()
    y = module(x_t)
    y.backward(_as_tensor(dy, dtype))
    results = {"y": y.detach().numpy(), "dx": x_t.grad.numpy()}
    for key, param in module.named_parameters():
        results[f"grad/{key}"] = param.grad.numpy()
    return results


def kink_margin(
    name: str, config: Mapping[str, int], state: Mapping[str, np.ndarray], x: np.ndarray
) -> float:
    """The smallest |input| of SE's ReLU (fc1's output), in float64; ``inf`` for ECA, which
    has no kink."""
    if name != "SE":
        return math.inf
    module = load(name, config, state, torch.float64)
    with torch.no_grad():
        pre = module.fc1(_as_tensor(x, torch.float64).mean(dim=(2, 3), keepdim=True))
    return float(pre.abs().min())
