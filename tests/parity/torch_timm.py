"""A PyTorch CBAM in timm's layout, written for npcbam's tie and option checks (needs torch).

timm's ``CbamModule`` (``timm/layers/cbam.py``) differs from seed code 1 in what this module
reproduces: the spatial gate concatenates (mean, max) over channels (code 1: (max, mean)); the
shared MLP's hidden width is given explicitly (timm rounds ``C / 16`` to a multiple of a
divisor, or takes ``rd_channels``); and its maxima are ``amax``, whose backward shares a tie's
gradient evenly among the tied entries. ``ties="first"`` uses ``AdaptiveMaxPool2d`` and
``torch.max(dim)`` instead, which send it to the first maximum. timm's spatial BatchNorm is
left out (npcbam's option for it is tested elsewhere). Parameter names follow npcbam's CBAM
(``mlp.0.weight``, ``mlp.2.weight``, ``conv.weight``) so a state dict loads into both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

TIES = ("first", "split")


class TorchTimmCBAM(nn.Module):
    """Channel gate sigma(MLP(mean) + MLP(max)), then spatial gate sigma(conv([mean; max]))."""

    def __init__(self, channels: int, hidden: int, kernel_size: int, ties: str) -> None:
        super().__init__()
        if ties not in TIES:
            raise ValueError(f"ties={ties!r}; expected one of {TIES}")
        self.ties = ties
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def spatial_max(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, 1, 1)
        if self.ties == "split":
            return x.amax(dim=(2, 3), keepdim=True)
        return nn.functional.adaptive_max_pool2d(x, 1)

    def channel_max(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, 1, H, W)
        if self.ties == "split":
            return x.amax(dim=1, keepdim=True)
        return torch.max(x, dim=1, keepdim=True)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(self.spatial_max(x)))
        refined = gate * x
        pooled = torch.cat([refined.mean(1, keepdim=True), self.channel_max(refined)], dim=1)
        return torch.sigmoid(self.conv(pooled)) * refined


def torch_timm_results(
    x: np.ndarray, dy: np.ndarray, state: Mapping[str, np.ndarray], ties: str
) -> dict[str, np.ndarray]:
    """``y``, ``dx`` and ``grad/<name>`` of :class:`TorchTimmCBAM` in float64 with autograd."""
    hidden, channels = state["mlp.0.weight"].shape[:2]
    module = TorchTimmCBAM(channels, hidden, state["conv.weight"].shape[-1], ties).double()
    module.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in state.items()})
    inputs = torch.from_numpy(np.array(x)).requires_grad_(True)
    out = module(inputs)
    out.backward(torch.from_numpy(np.array(dy)))
    results = {"y": out.detach().numpy(), "dx": inputs.grad.numpy()}
    for name, param in module.named_parameters():
        results[f"grad/{name}"] = param.grad.numpy()
    return results
