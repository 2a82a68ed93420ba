"""A PyTorch reference of CBAM that mirrors seed code 1, written for npcbam's parity checks.

It is used only to generate the stored fixtures (``make_fixtures.py``) and by the live parity
test (``tests/test_parity_live.py``); npcbam itself never imports PyTorch. The semantics follow
seed code 1 exactly: global max and average pooling (``AdaptiveMaxPool2d(1)``,
``AdaptiveAvgPool2d(1)``) through one shared MLP of two bias-free 1×1 convolutions with a ReLU
between them; then the channel-wise maximum (``torch.max(dim=1)``) and mean, concatenated in the
order (max, mean), through a bias-free k×k convolution with padding ``k // 2``. The output is
``spatial_gate * (channel_gate * x)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from helpers import relative_error
from torch import nn


class TorchCBAM(nn.Module):
    """CBAM as in seed code 1; parameter names ``mlp.0.weight``, ``mlp.2.weight``,
    ``conv.weight``.

    Parameters
    ----------
    channels : int
        C, the number of input channels.
    reduction : int
        r; the shared MLP's hidden width is ``C // r``.
    kernel_size : int
        k, odd; the spatial convolution is padded by ``k // 2``.
    """

    def __init__(self, channels: int, reduction: int, kernel_size: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.global_max = nn.AdaptiveMaxPool2d(1)
        self.global_avg = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, kernel_size=1, bias=False),
        )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """M_c(x), shape (N, C, 1, 1): sigmoid of the shared MLP on max- plus avg-pooled x."""
        return torch.sigmoid(self.mlp(self.global_max(x)) + self.mlp(self.global_avg(x)))

    def spatial_gate(self, refined: torch.Tensor) -> torch.Tensor:
        """M_s(refined), shape (N, 1, H, W): sigmoid of the conv of [max over C; mean over C]."""
        channel_max, _ = torch.max(refined, dim=1, keepdim=True)
        channel_mean = torch.mean(refined, dim=1, keepdim=True)
        return torch.sigmoid(self.conv(torch.cat([channel_max, channel_mean], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        refined = self.channel_gate(x) * x
        return self.spatial_gate(refined) * refined


def _as_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    """A torch copy of ``array`` in ``dtype`` (a fresh C-ordered copy: any strides work)."""
    return torch.from_numpy(np.array(array, order="C")).to(dtype)


def torch_gradients(
    x: np.ndarray,
    dy: np.ndarray,
    state_dict: Mapping[str, np.ndarray],
    dtype: torch.dtype,
) -> dict[str, np.ndarray]:
    """Forward ``x`` and backward ``dy`` through :class:`TorchCBAM` with torch autograd.

    Parameters
    ----------
    x, dy : ndarray, shape (N, C, H, W)
        Input and upstream gradient (converted to ``dtype``).
    state_dict : mapping of str to ndarray
        ``mlp.0.weight`` (C//r, C, 1, 1), ``mlp.2.weight`` (C, C//r, 1, 1) and
        ``conv.weight`` (1, 2, k, k); the configuration is read from these shapes.
    dtype : torch.dtype
        ``torch.float32`` or ``torch.float64``.

    Returns
    -------
    dict of str to ndarray
        ``y`` and ``dx`` (shape of ``x``), ``refined`` (``channel_gate * x``, the input of the
        spatial step) and ``grad/<name>`` for every parameter, all in ``dtype``.
    """
    hidden, channels = state_dict["mlp.0.weight"].shape[:2]
    kernel_size = state_dict["conv.weight"].shape[-1]
    # any hidden width C // r is recovered by the reduction C // hidden; load_state_dict
    # rejects the shapes if it is not
    module = TorchCBAM(channels, channels // hidden, kernel_size).to(dtype)
    module.load_state_dict({name: _as_tensor(w, dtype) for name, w in state_dict.items()})
    x_t = _as_tensor(x, dtype).requires_grad_()
    refined = module.channel_gate(x_t) * x_t
    y = module.spatial_gate(refined) * refined
    y.backward(_as_tensor(dy, dtype))
    result = {
        "y": y.detach().numpy(),
        "dx": x_t.grad.numpy(),
        "refined": refined.detach().numpy(),
    }
    for name, param in module.named_parameters():
        result[f"grad/{name}"] = param.grad.numpy()
    return result


def _mirror(x: np.ndarray, dy: np.ndarray, state_dict: Mapping[str, np.ndarray]):
    """The same problem with N, C, H, W and the hidden units all reversed.

    CBAM is equivariant under these reversals (batch items are independent, channels and
    hidden units are permuted consistently through the MLP, and a flipped kernel on a flipped
    image gives the flipped output), so only the order of floating-point sums changes.
    """
    flip = (slice(None, None, -1),) * 4
    weights = {
        "mlp.0.weight": state_dict["mlp.0.weight"][::-1, ::-1],  # (hidden, C) both reversed
        "mlp.2.weight": state_dict["mlp.2.weight"][::-1, ::-1],  # (C, hidden) both reversed
        "conv.weight": state_dict["conv.weight"][:, :, ::-1, ::-1],  # kernel flipped
    }
    return x[flip], dy[flip], weights


def float32_rounding_error(
    x: np.ndarray, dy: np.ndarray, state_dict: Mapping[str, np.ndarray]
) -> float:
    """How far torch's float32 results stray from its float64 ones on this problem.

    Two samples of float32 rounding are taken, the problem as given and its mirror image (see
    :func:`_mirror`); the largest relative error over ``y``, ``dx`` and the parameter
    gradients is returned. A large value flags an ill-conditioned problem, typically a
    gradient whose entries all nearly cancel, where any float32 computation, PyTorch's
    included, is inaccurate. ``x``, ``dy`` and the weights should be exact in float32.
    """
    exact = torch_gradients(x, dy, state_dict, torch.float64)
    worst = 0.0
    for mirrored in (False, True):
        problem = _mirror(x, dy, state_dict) if mirrored else (x, dy, state_dict)
        approx = torch_gradients(*problem, torch.float32)
        if mirrored:  # map the results back: the mirror is its own inverse
            approx["y"], approx["dx"], weights = _mirror(
                approx["y"],
                approx["dx"],
                {name: approx[f"grad/{name}"] for name in state_dict},
            )
            approx.update({f"grad/{name}": grad for name, grad in weights.items()})
        for key, value in exact.items():
            if key != "refined":
                worst = max(worst, relative_error(approx[key], value))
    return worst
