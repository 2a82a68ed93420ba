r"""``AttentionClassifier``: a small residual CNN for demos, with selectable attention."""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_int, require_odd_kernel
from npcbam.nn.activation import ReLU
from npcbam.nn.batchnorm import BatchNorm2d
from npcbam.nn.conv import Conv2d
from npcbam.nn.init import require_size, rng_from_seed
from npcbam.nn.linear import Linear
from npcbam.nn.module import Module, check_feature_map
from npcbam.nn.residual import ATTENTIONS, ResidualBlockCBAM, check_hidden_width
from npcbam.nn.sequential import Sequential
from npcbam.ops.pooling import global_avg_pool_backward, global_avg_pool_forward


class AttentionClassifier(Module):
    r"""Stem, residual blocks with attention, global average pooling, and a linear head.

    .. math:: z = W_{\text{head}}\ \mathrm{avg}_{HW}\big(B_K \circ \cdots \circ B_1
              (\mathrm{relu}(\mathrm{BN}(W_{\text{stem}} * x)))\big) + b

    Each :math:`B_k` is a :class:`ResidualBlockCBAM` whose attention is chosen by
    ``attention``; the first block keeps the resolution, each later one halves it. The
    output are class logits, to be fed to :func:`npcbam.ops.loss.softmax_cross_entropy_forward`.

    Parameters
    ----------
    in_channels : int
    num_classes : int
    widths : sequence of int
        Channels of each block (its length is the number of blocks).
    attention : {"cbam", "channel", "spatial", "se", "eca", "bam", "none"}
        The attention of every block (see :func:`~npcbam.nn.residual.make_attention`).
    reduction, kernel_size : int
        Of the attention modules: r of CBAM's MLP, SE and BAM (hidden width ``width // r``;
        SE clamps it to at least 1, the others refuse 0; the default 4 gives 4 and 8 hidden
        units at the default widths) and CBAM's spatial kernel (ECA's kernel is adaptive, 3
        at these widths).
    seed : int, numpy Generator or None
    attention_options : dict, optional
        :class:`~npcbam.nn.cbam.CBAM`'s keyword options for every block (ablations), or SE's,
        ECA's or BAM's (``hidden``; ``eca_kernel_size``; ``gate``, ``dilation``).

    Notes
    -----
    State dict: ``stem.0.weight``, ``stem.1.*``, ``blocks.<k>.*``, ``head.weight``,
    ``head.bias``. Input (N, in_channels, H, W) -> logits (N, num_classes).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths=(16, 32),
        attention: str = "cbam",
        reduction: int = 4,
        kernel_size: int = 7,
        seed=None,
        attention_options=None,
    ) -> None:
        super().__init__()
        if not isinstance(attention, str) or attention not in ATTENTIONS:
            raise ValueError(f"attention={attention!r}; expected one of {ATTENTIONS}")
        if isinstance(widths, str) or not hasattr(widths, "__iter__"):
            raise TypeError(f"widths must be a sequence of block widths, got {widths!r}")
        widths = [require_size(w, f"widths[{i}]") for i, w in enumerate(widths)]
        if not widths:
            raise ValueError("widths must name at least one block")
        for i, width in enumerate(widths):
            check_hidden_width(attention, width, reduction, attention_options, f"widths[{i}]")
        if attention in ("cbam", "spatial"):
            require_odd_kernel(require_size(kernel_size, "kernel_size"))
        self.in_channels = require_size(in_channels, "in_channels")
        self.num_classes = require_int(num_classes, "num_classes", 2, 2**24)
        self.attention = attention
        rng = rng_from_seed(seed)
        self.stem = Sequential(
            Conv2d(in_channels, widths[0], 3, 1, 1, bias=False, seed=rng),
            BatchNorm2d(widths[0]),
            ReLU(),
        )
        blocks, previous = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks.append(
                ResidualBlockCBAM(
                    previous,
                    width,
                    stride,
                    reduction,
                    kernel_size,
                    attention,
                    seed=rng,
                    attention_options=attention_options,
                )
            )
            previous = width
        self.blocks = Sequential(*blocks)
        self.head = Linear(previous, num_classes, seed=rng)
        self.register_child("stem", self.stem)
        self.register_child("blocks", self.blocks)
        self.register_child("head", self.head)

    def check_input(self, x) -> np.ndarray:
        return check_feature_map(x, self.in_channels)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        features = self.blocks.forward(self.stem.forward(x))  # (N, C_K, H_K, W_K)
        pooled, self._cache = global_avg_pool_forward(features)  # (N, C_K)
        return self.head.forward(pooled)  # (N, num_classes)

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        dpooled = self.head.backward(dout)  # (N, C_K)
        dfeatures = global_avg_pool_backward(dpooled, self._cache)  # (N, C_K, H_K, W_K)
        return self.stem.backward(self.blocks.backward(dfeatures))

    def spatial_maps(self) -> dict[str, np.ndarray]:
        """Each block's spatial attention map of the last forward, keyed ``blocks.<k>``:
        (N, 1, H_k, W_k) arrays in (0, 1). Empty without spatial attention."""
        return {
            f"blocks.{k}": block.spatial_map
            for k, block in enumerate(self.blocks.layers)
            if block.spatial_map is not None
        }

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices (N,) for a batch of images, in evaluation mode (mode restored)."""
        with self.evaluating():
            logits = [
                self.forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
            ]
        return np.concatenate(logits).argmax(axis=1)
