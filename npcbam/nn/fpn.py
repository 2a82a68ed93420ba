r"""``ResnetFPN4CBAM``: the seed's CBAM residual backbone with a four-level FPN-style head."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_odd_kernel
from npcbam.nn.batchnorm import BatchNorm2d
from npcbam.nn.conv import Conv2d, ConvTranspose2d
from npcbam.nn.init import require_size, rng_from_seed
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.residual import ResidualBlockCBAM, check_hidden_width
from npcbam.nn.sequential import Sequential
from npcbam.ops.gating import concat_backward, concat_forward


class ResnetFPN4CBAM(Module):
    r"""The seed's ``ResnetFPN4_CBAM`` with :class:`ResidualBlockCBAM` as its block.

    Four stages at scales 1, 1/2, 1/4, 1/8 (c, c, 2c, 4c channels); each stage's output is
    brought back to full resolution by a transposed convolution, and the four maps are
    concatenated:

    .. math::

        x_1 = B_1(x),\ x_2 = B_2(x_1),\ x_3 = B_3(x_2),\ x_4 = B_4(x_3), \qquad
        y = [\,U_1 x_1;\ U_2 x_2;\ U_3 x_3;\ U_4 x_4\,]

    :math:`B_k` = strided 3×3 conv → BatchNorm → one or two residual CBAM blocks; :math:`U_k`
    = ``ConvTranspose2d`` (2c, 2c, 2c, 4c output channels; strides 1, 2, 4, 8). Backward: each
    :math:`x_k` (k < 4) is used twice (by :math:`U_k` and by :math:`B_{k+1}`), so its gradient
    is the **sum** :math:`U_k^\top g_k + B_{k+1}^\top(\cdot)`, read from the deepest stage up.

    Parameters
    ----------
    num_channels : int
        c.
    reduction, kernel_size : int
        Of every block's CBAM (hidden width ``c // reduction`` >= 1).
    seed : int, numpy Generator or None

    Notes
    -----
    State dict: the seed's keys, ``block1.0.weight`` ... ``block4.3.*`` and ``up1.weight`` ...
    ``up4.bias``. Input (N, c, H, W) with H and W divisible by 8; output (N, 10c, H, W).
    """

    def __init__(
        self, num_channels: int, reduction: int = 16, kernel_size: int = 7, seed=None
    ) -> None:
        super().__init__()
        c = self.num_channels = require_size(num_channels, "num_channels")
        check_hidden_width("cbam", c, reduction, None, "num_channels")
        require_odd_kernel(require_size(kernel_size, "kernel_size"))
        rng = rng_from_seed(seed)

        def stage(c_in: int, c_out: int, stride: int, n_blocks: int) -> Sequential:
            layers = [Conv2d(c_in, c_out, 3, stride, 1, seed=rng), BatchNorm2d(c_out)]
            for _ in range(n_blocks):
                layers.append(
                    ResidualBlockCBAM(
                        c_out, c_out, reduction=reduction, kernel_size=kernel_size, seed=rng
                    )
                )
            return Sequential(*layers)

        self.block1 = stage(c, c, 1, 1)
        self.block2 = stage(c, c, 2, 2)
        self.block3 = stage(c, 2 * c, 2, 2)
        self.block4 = stage(2 * c, 4 * c, 2, 2)
        self.up1 = ConvTranspose2d(c, 2 * c, 3, stride=1, padding=1, seed=rng)
        self.up2 = ConvTranspose2d(c, 2 * c, 3, stride=2, padding=1, output_padding=1, seed=rng)
        self.up3 = ConvTranspose2d(2 * c, 2 * c, 3, stride=4, padding=1, output_padding=3, seed=rng)
        self.up4 = ConvTranspose2d(4 * c, 4 * c, 5, stride=8, padding=1, output_padding=5, seed=rng)
        self.blocks = [self.block1, self.block2, self.block3, self.block4]
        self.ups = [self.up1, self.up2, self.up3, self.up4]
        for index, block in enumerate(self.blocks, start=1):
            self.register_child(f"block{index}", block)
        for index, up in enumerate(self.ups, start=1):
            self.register_child(f"up{index}", up)

    def check_input(self, x) -> np.ndarray:
        x = check_feature_map(x, self.num_channels)
        n, _, h, w = x.shape
        if h % 8 or w % 8:
            raise ValueError(
                f"x has spatial size {h}x{w} (shape {x.shape}); ResnetFPN4CBAM needs H and W "
                "divisible by 8 (three stride-2 stages, then upsampling by 8 back to H x W)"
            )
        if self.training and n * (h // 8) * (w // 8) < 2:
            raise ValueError(
                f"x has shape {x.shape}: the deepest stage sees N*(H/8)*(W/8) = 1 value per "
                "channel, and BatchNorm in training mode needs more; use N >= 2, a larger "
                "image, or eval()"
            )
        return x

    def _forward(self, x: np.ndarray) -> np.ndarray:
        upsampled = []
        for block, up in zip(self.blocks, self.ups):
            x = block.forward(x)  # x_k: (N, c, H, W), (N, c, H/2, W/2), (N, 2c, H/4, ...), ...
            upsampled.append(up.forward(x))  # U_k x_k: (N, 2c or 4c, H, W)
        out, self._cache = concat_forward(upsampled, axis=1)  # (N, 10c, H, W)
        return out

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dupsampled = concat_backward(dout, self._cache)  # 4 x (N, ., H, W)
        dx = None  # the gradient arriving at x_4 from deeper stages: none
        for block, up, dup in zip(self.blocks[::-1], self.ups[::-1], dupsampled[::-1]):
            dx_k = up.backward(dup)  # x_k's use by U_k ...
            if dx is not None:
                dx_k += dx  # ... plus its use by B_{k+1}
            dx = block.backward(dx_k)  # the gradient at B_k's input
        return dx

    def spatial_maps(self) -> dict[str, np.ndarray]:
        """Every block's CBAM spatial map of the last forward, keyed by module path."""
        return {
            path: module.spatial_map
            for path, module in self.named_modules()
            if isinstance(module, ResidualBlockCBAM)
        }
